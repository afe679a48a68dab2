"""Statistics of a report: interventions against their controls, speed-ups with their spread."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..evaluation.results import (against_controls, higher_is_better, results_table,
                                  summarize_seeds)

__all__ = ["compare_to_controls", "speedups", "standard_error"]


def standard_error(row) -> float:
    """Standard error of a row of :func:`summarize_seeds`: over seeds when there are several,
    else the row's own ``stderr`` (NaN when unknown)."""
    if row["n_seeds"] > 1 and np.isfinite(row["sd"]):
        return float(row["sd"] / np.sqrt(row["n_seeds"]))
    return float(row["stderr"]) if np.isfinite(row["stderr"]) else np.nan


def compare_to_controls(results, *, min_controls: int = 10, confidence: float = 0.95
                        ) -> pd.DataFrame:
    """Each intervention on a target against its matched random controls.

    Parameters
    ----------
    results : pandas.DataFrame
        A results table whose intervention rows have ``condition``
        ``"network"`` (the target) or ``"random"`` (a control of the same
        size per layer, one seed each).
    min_controls : int, default=10
        Controls needed before the target is judged against them.
    confidence : float, default=0.95
        Coverage of the prediction interval.

    Returns
    -------
    pandas.DataFrame
        One row per model (``model``, ``criterion``, ``sparsity``) and
        (intervention, target, dataset, metric):
        ``target_value`` (mean over the target's rows), ``controls_mean``,
        ``controls_low`` / ``controls_high`` (the ``confidence`` prediction
        interval of one more control, Student's t over the controls),
        ``n_controls``, ``ratio`` (target / controls mean), ``p_value`` (the
        one-sided permutation p-value in the direction of harm,
        ``(1 + #controls at least as harmful) / (1 + n)``; its smallest
        possible value is ``1 / (n + 1)``) and ``beyond_controls`` (the
        target lies outside the prediction interval on the harmful side).
        The last two are NaN / False with fewer than ``min_controls``
        controls.
    """
    table = results_table(results)
    table = table[table["intervention"] != ""]
    rows = []
    keys = ["intervention", "target", "dataset", "metric"]
    models = ["model", "criterion", "sparsity", "allocation", "protected_layers",
              "bias_compensation", "calibration"]   # never pool a dense and a pruned model
    for full_key, group in table.groupby(models + keys, sort=False):
        model, key = dict(zip(models[:3], full_key[:3])), full_key[len(models):]
        target = group[group["condition"] == "network"]["value"].to_numpy(dtype=float)
        controls = group[group["condition"] == "random"]["value"].to_numpy(dtype=float)
        if not target.size:
            continue
        value, n = float(target.mean()), int(controls.size)
        row = dict(**model, **dict(zip(keys, key)), target_value=value, n_controls=n, controls_mean=np.nan,
                   controls_low=np.nan, controls_high=np.nan, ratio=np.nan, p_value=np.nan,
                   beyond_controls=False)
        if n:
            mean = float(controls.mean())
            row.update(controls_mean=mean, ratio=value / mean if mean else np.nan)
            low, high, p_value = against_controls(value, controls, key[3],
                                                  confidence=confidence)
            row.update(controls_low=low, controls_high=high)
            if n >= max(min_controls, 2):
                row["p_value"] = p_value
                row["beyond_controls"] = bool(value < low if higher_is_better(key[3])
                                              else value > high)
        rows.append(row)
    return pd.DataFrame(rows, columns=models[:3] + keys + ["target_value", "controls_mean", "controls_low",
                                              "controls_high", "n_controls", "ratio", "p_value",
                                              "beyond_controls"])


def speedups(results, *, reference: str = "dense", metric: str = "tokens_per_s",
             noise: float = 2.0) -> pd.DataFrame:
    """Speed of every model relative to the dense one, with its spread.

    Parameters
    ----------
    results : pandas.DataFrame
        A results table with ``tokens_per_s`` rows whose ``stderr`` and ``n``
        give the spread over timing repeats (or several seeds).
    reference : str, default="dense"
        Criterion of the reference model.
    metric : str, default="tokens_per_s"
    noise : float, default=2.0
        A speed-up within ``noise`` standard errors of 1 is flagged.

    Returns
    -------
    pandas.DataFrame
        ``criterion``, ``sparsity``, ``allocation``, ``tokens_per_s``,
        ``speedup``, ``speedup_stderr`` and ``within_noise``; the speed-up
        is NaN where the spread of either model is unknown (a speed-up is
        only shown with its spread).
    """
    table = results_table(results)
    table = table[(table["metric"] == metric) & (table["intervention"] == "")]
    columns = ["criterion", "sparsity", "allocation", "tokens_per_s", "speedup",
               "speedup_stderr", "within_noise"]
    if table.empty:
        return pd.DataFrame(columns=columns)
    summary = summarize_seeds(table)
    summary["se"] = [standard_error(row) for _, row in summary.iterrows()]
    base = summary[summary["criterion"] == reference]
    if base.empty:
        raise ValueError(f"No {metric} row for the reference model (criterion {reference!r}).")
    b, b_se = float(base["mean"].mean()), float(base["se"].mean())
    rows = []
    for _, row in summary.iterrows():
        if row["criterion"] == reference:
            continue
        ratio = row["mean"] / b
        se = ratio * np.hypot(row["se"] / row["mean"], b_se / b)
        known = np.isfinite(se)
        rows.append({"criterion": row["criterion"], "sparsity": row["sparsity"],
                     "allocation": row["allocation"], "tokens_per_s": row["mean"],
                     "speedup": ratio if known else np.nan,
                     "speedup_stderr": se if known else np.nan,
                     "within_noise": bool(known and abs(ratio - 1) < noise * se)})
    return pd.DataFrame(rows, columns=columns)
