"""The evaluation stage: one model, every measurement, one results table.

:func:`evaluate_model` measures a model (dense or pruned) and returns the rows
of the project's results table (:mod:`llmbrain.evaluation.results`):
perplexity on a text, zero-shot accuracy on the multiple-choice tasks and
their mean, and parameters and speed, each with its standard error and the
protocol it was measured with. The benchmarks, the pipeline and
``llmbrain evaluate`` all call it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import pandas as pd

from .efficiency import measure_efficiency
from .perplexity import perplexity
from .results import results_table
from .zeroshot import evaluate_zeroshot

__all__ = ["evaluate_model"]


def evaluate_model(model, tokenizer, *, model_name: str, text: str | None = None,
                   dataset: str = "text", window: int = 128, max_windows: int | None = None,
                   bos: bool | None = None, zeroshot_root: str | os.PathLike | None = None,
                   tasks: Sequence[str] = (), limit: int | None = None,
                   efficiency: bool = False, speed_batch: int = 4, speed_seq_len: int = 128,
                   speed_repeats: int = 7, batch_size: int = 8, device=None,
                   progress: bool = True, **keys) -> pd.DataFrame:
    """Measure one model and return the rows of a results table.

    Parameters
    ----------
    model : transformers.PreTrainedModel
    tokenizer : transformers.PreTrainedTokenizerBase
    model_name : str
        The base model's name (``model`` column).
    text : str, optional
        Text to measure perplexity on (see :func:`perplexity`).
    dataset : str, default="text"
        Name of that text in the table (e.g. ``"wikitext2-test"``).
    window, max_windows, bos
        Perplexity windows (see :func:`perplexity`); the protocol column
        says which was used, e.g. ``"stream window=128"``.
    zeroshot_root : path, optional
        Data root of the zero-shot tasks (see :func:`evaluate_zeroshot`).
    tasks : sequence of str, default=()
        Zero-shot tasks; each gives ``acc`` and ``acc_norm`` rows, and
        ``dataset="zero-shot mean"`` rows hold their means.
    limit : int, optional
        First items of each task.
    efficiency : bool, default=False
        Also measure parameters (``n_params``, ``n_mlp_params``) and forward
        throughput (``tokens_per_s`` with the spread of its repeats).
    speed_batch, speed_seq_len, speed_repeats : int
        Throughput input and repeats.
    batch_size : int, default=8
    device : optional
    progress : bool, default=True
    **keys
        Constant columns of every row: ``criterion``, ``sparsity``,
        ``allocation``, ``protected_layers``, ``bias_compensation``,
        ``calibration``, ``seed``...

    Returns
    -------
    pandas.DataFrame
        A validated results table.
    """
    rows = []
    if text is not None:
        ppl, details = perplexity(model, tokenizer, text, window=window, max_windows=max_windows,
                                  bos=bos, batch_size=batch_size, device=device,
                                  progress=progress, return_details=True)
        rows.append({"dataset": dataset, "protocol": f"{details['protocol']} window={window}",
                     "metric": "perplexity", "value": ppl, "stderr": details["stderr"],
                     "n": details["n_tokens"]})
    if tasks:
        if zeroshot_root is None:
            raise ValueError("Zero-shot tasks need zeroshot_root= (the folder of the task files).")
        table = evaluate_zeroshot(model, tokenizer, zeroshot_root, tasks, limit=limit,
                                  batch_size=batch_size, device=device, progress=progress)
        for metric in ("acc", "acc_norm"):
            for task, row in table.iterrows():
                rows.append({"dataset": task, "protocol": "0-shot", "metric": metric,
                             "value": row[metric], "stderr": row[f"{metric}_stderr"],
                             "n": int(row["n"])})
            errors = table[f"{metric}_stderr"].to_numpy(dtype=float)
            rows.append({"dataset": "zero-shot mean", "protocol": f"0-shot, {len(table)} tasks",
                         "metric": metric, "value": float(table[metric].mean()),
                         "stderr": math.sqrt(float((errors ** 2).sum())) / len(table),
                         "n": int(table["n"].sum())})
    if efficiency:
        speed = measure_efficiency(model, tokenizer, batch_size=speed_batch,
                                   seq_len=speed_seq_len, repeats=speed_repeats, device=device)
        protocol = f"batch={speed_batch}x{speed_seq_len} on {speed['device']}"
        rows += [{"dataset": "", "protocol": "", "metric": "n_params",
                  "value": speed["n_params"]},
                 {"dataset": "", "protocol": "", "metric": "n_mlp_params",
                  "value": speed["n_mlp_params"]},
                 {"dataset": "random-tokens", "protocol": protocol, "metric": "tokens_per_s",
                  "value": speed["tokens_per_s"], "stderr": speed["tokens_per_s_stderr"],
                  "n": speed_repeats}]
    if not rows:
        raise ValueError("Nothing to measure: give text=, tasks= or efficiency=True.")
    return results_table(rows, model=model_name, **keys)
