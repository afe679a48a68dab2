"""Zero-shot multiple-choice accuracy, scored as lm-evaluation-harness does.

For each item, every choice's continuation is scored by its summed
log-likelihood given its context; ``acc`` is 1 when the argmax is the gold
choice, ``acc_norm`` when the argmax of log-likelihood divided by the length
of the choice string in characters is. Standard errors are those of a mean
(sample standard deviation over items divided by the square root of n).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .loglikelihood import loglikelihoods
from .tasks import LM_EVAL_METRICS, ZEROSHOT_TASKS, MultipleChoiceItem, load_task

__all__ = ["evaluate_zeroshot", "score_items", "summarize_zeroshot"]


def _stderr(values: np.ndarray) -> float:
    if len(values) < 2:
        return float("nan")
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


def score_items(model, tokenizer, items: Sequence[MultipleChoiceItem], *, batch_size: int = 16,
                device=None, progress: bool = True, desc: str = "scoring",
                return_per_item: bool = False):
    """Accuracy of ``model`` on multiple-choice ``items``.

    Parameters
    ----------
    model : transformers.PreTrainedModel
    tokenizer : transformers.PreTrainedTokenizerBase
    items : sequence of MultipleChoiceItem
    batch_size : int, default=16
        Sequences per forward pass.
    device : str or torch.device, optional
    progress : bool, default=True
    desc : str
        Label of the progress bar.
    return_per_item : bool, default=False
        Also return a DataFrame with one row per item (gold, predictions and
        the log-likelihood of every choice).

    Returns
    -------
    scores : dict
        ``acc``, ``acc_norm``, ``acc_stderr``, ``acc_norm_stderr``, ``n``.
    per_item : pandas.DataFrame
        Only when ``return_per_item`` is True.
    """
    items = list(items)
    if not items:
        raise ValueError("No items to score.")
    requests = [(c, k) for item in items for c, k in zip(item.contexts, item.continuations)]
    lls = loglikelihoods(model, tokenizer, requests, batch_size=batch_size, device=device,
                         progress=progress, desc=desc)[:, 0]
    acc, acc_norm, rows, start = [], [], [], 0
    for item in items:
        n = len(item.choices)
        ll = lls[start:start + n]
        start += n
        lengths = np.array([float(len(c)) for c in item.choices])
        pred, pred_norm = int(np.argmax(ll)), int(np.argmax(ll / lengths))
        acc.append(float(pred == item.gold))
        acc_norm.append(float(pred_norm == item.gold))
        rows.append({"gold": item.gold, "pred": pred, "pred_norm": pred_norm,
                     "loglikelihoods": ll.tolist()})
    acc, acc_norm = np.array(acc), np.array(acc_norm)
    scores = {"acc": float(acc.mean()), "acc_stderr": _stderr(acc),
              "acc_norm": float(acc_norm.mean()), "acc_norm_stderr": _stderr(acc_norm),
              "n": len(items)}
    if return_per_item:
        return scores, pd.DataFrame(rows)
    return scores


def evaluate_zeroshot(model, tokenizer, root: str | os.PathLike,
                      tasks: Sequence[str] = ZEROSHOT_TASKS, *, limit: int | None = None,
                      batch_size: int = 16, device=None, progress: bool = True) -> pd.DataFrame:
    """Zero-shot accuracy on several tasks read from local files.

    Parameters
    ----------
    model : transformers.PreTrainedModel
    tokenizer : transformers.PreTrainedTokenizerBase
    root : str or path-like
        Data root with the layout of :data:`llmbrain.evaluation.TASK_FILES`.
    tasks : sequence of str, default=ZEROSHOT_TASKS
        Task names.
    limit : int, optional
        Score only the first ``limit`` items of each task.
    batch_size : int, default=16
    device : str or torch.device, optional
    progress : bool, default=True

    Returns
    -------
    results : pandas.DataFrame
        One row per task (index ``task``): ``acc``, ``acc_stderr``,
        ``acc_norm``, ``acc_norm_stderr``, ``n``, and ``metric``, the
        metric lm-evaluation-harness reports as the task's main one
        (``acc_norm`` where it reports it, else ``acc``), with its value in
        ``score``. ``acc_norm`` is computed for every task with lm-eval's
        formula, although lm-eval lists only ``acc`` for BoolQ and
        WinoGrande (for WinoGrande both continuations are the same string,
        so ``acc_norm`` normalises by the length of the two contexts).
    """
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in ZEROSHOT_TASKS]
    if unknown:
        raise ValueError(f"Unknown task(s) {unknown}; choose from {', '.join(ZEROSHOT_TASKS)}.")
    rows = []
    for task in tasks:
        items = load_task(task, root, limit=limit)
        scores = score_items(model, tokenizer, items, batch_size=batch_size, device=device,
                             progress=progress, desc=task)
        metric = "acc_norm" if "acc_norm" in LM_EVAL_METRICS[task] else "acc"
        rows.append({"task": task, **scores, "metric": metric, "score": scores[metric]})
    return pd.DataFrame(rows).set_index("task")


def summarize_zeroshot(results: pd.DataFrame) -> dict:
    """Averages over tasks of a :func:`evaluate_zeroshot` table.

    Returns
    -------
    summary : dict
        ``mean_acc`` (mean of ``acc``), ``mean_acc_norm`` (mean of
        ``acc_norm``) and ``mean_score`` (mean of each task's lm-eval main
        metric, ``score``), plus ``n_tasks``.
    """
    return {"mean_acc": float(results["acc"].mean()),
            "mean_acc_norm": float(results["acc_norm"].mean()),
            "mean_score": float(results["score"].mean()), "n_tasks": int(len(results))}
