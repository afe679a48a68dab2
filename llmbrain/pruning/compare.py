"""Compare pruning criteria: prune with each, evaluate each, one results table.

:func:`compare_pruning` is the pruning-and-evaluation stage that the
pipeline, the benchmarks and the tutorials share: for every criterion,
sparsity and seed it prunes a copy of the model with
:func:`~llmbrain.pruning.prune` (scores are computed once per criterion and
seed) and evaluates it with a function of the caller's choice (usually a
:func:`functools.partial` of :func:`~llmbrain.evaluation.evaluate_model`), adding the pruning
settings as columns of the results table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import pandas as pd
from tqdm.auto import tqdm

from ..evaluation.results import results_table
from .criteria import check_criterion, score_neurons
from .recipes import PUBLISHED, PlanOptions, prune

__all__ = ["compare_pruning"]


def compare_pruning(model, criteria: Sequence[str], sparsities: Sequence[float],
                    evaluate: Callable, *, options=None, seeds: Mapping[str, Sequence[int]]
                    | None = None, calibration=None, calibration_windows=None, networks=None,
                    keep_models: Sequence[tuple[str, float]] = (), progress: bool = True):
    """Prune ``model`` by each criterion at each sparsity and evaluate every result.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        The dense model (left unchanged).
    criteria : sequence of str
        Names of :data:`llmbrain.pruning.CRITERIA`.
    sparsities : sequence of float
    evaluate : callable
        ``evaluate(model, **keys) -> results table`` (rows for one model);
        ``keys`` are the pruning columns (criterion, sparsity, allocation,
        protected_layers, bias_compensation, seed) to put in every row, e.g.
        ``functools.partial(evaluate_model, tokenizer=..., model_name=...,
        text=...)`` called as ``evaluate(model, **keys)``.
    options : PlanOptions or dict of str to PlanOptions, optional
        The same options for every criterion (fair comparison), or one per
        criterion; default: each criterion's published options
        (:data:`llmbrain.pruning.PUBLISHED`).
    seeds : dict of str to sequence of int, optional
        Seeds per criterion (e.g. ``{"random": [0, 1, 2]}``); default ``[0]``.
    calibration, calibration_windows, networks
        Passed to :func:`~llmbrain.pruning.prune`.
    keep_models : sequence of (criterion, sparsity)
        Pruned models to return, of the criterion's first seed (the others
        are freed after evaluation).
    progress : bool, default=True

    Returns
    -------
    results : pandas.DataFrame
        The results table of every pruned model.
    plans : dict of (criterion, sparsity, seed) to PruningPlan
    models : dict of (criterion, sparsity) to model
        The models named in ``keep_models``.
    """
    criteria = [check_criterion(c) for c in criteria]
    if isinstance(options, PlanOptions) or options is None:
        options = {c: options or PUBLISHED.get(c, PlanOptions()) for c in criteria}
    missing = [c for c in criteria if c not in options]
    if missing:
        raise ValueError(f"options give no PlanOptions for {missing}.")
    seeds = dict(seeds or {})
    tables, plans, models = [], {}, {}
    jobs = [(c, seed) for c in criteria for seed in seeds.get(c, [0])]
    bar = tqdm(total=len(jobs) * len(sparsities), desc="pruning", unit="model",
               disable=not progress)
    for criterion, seed in jobs:
        scores = score_neurons(model, criterion, calibration=calibration, networks=networks,
                               seed=seed)
        opts = options[criterion]
        for sparsity in sparsities:
            pruned, plan = prune(model, criterion, sparsity, options=opts, scores=scores,
                                 calibration=calibration,
                                 calibration_windows=calibration_windows, seed=seed)
            plans[(criterion, float(sparsity), seed)] = plan
            keys = {"criterion": criterion, "sparsity": float(sparsity),
                    "allocation": opts.allocation,
                    "protected_layers": plan.metadata["protected_layers"],
                    "bias_compensation": "" if opts.bias_compensation == "none"
                    else opts.bias_compensation, "seed": seed}
            tables.append(evaluate(pruned, **keys))
            first_seed = seed == seeds.get(criterion, [0])[0]
            if (criterion, sparsity) in set(map(tuple, keep_models)) and first_seed:
                models[(criterion, float(sparsity))] = pruned
            del pruned
            bar.update()
    bar.close()
    return results_table(pd.concat(tables, ignore_index=True)), plans, models
