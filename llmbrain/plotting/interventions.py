"""Effects of ablating or amplifying networks, compared with matched random neurons."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._inputs import check_columns
from ._style import GREY, OKABE_ITO, finish, label_all_panels, log_axis, new_figure, plot_style

__all__ = ["plot_intervention_effects"]

_COLUMNS = ("network", "intervention", "condition", "metric", "value")
_CONDITIONS = {"network": (OKABE_ITO["blue"], "o", -0.17, "Network neurons"),
               "random": (GREY, "s", 0.17, "Matched random neurons")}
_ERRORBARS = {"sd": "s.d.", "sem": "s.e.m.", "ci95": "95% CI"}


def _ordered(values, preferred=(), sort=True):
    values = list(pd.unique(values))
    first = [v for v in preferred if v in values]
    rest = [v for v in values if v not in first]
    if sort:
        try:
            rest = sorted(rest)
        except TypeError:
            pass
    return first + rest


def _spread(x: np.ndarray, errorbar: str) -> float:
    if len(x) < 2:
        return np.nan
    sd = float(np.std(x, ddof=1))
    if errorbar == "sd":
        return sd
    sem = sd / np.sqrt(len(x))
    return sem if errorbar == "sem" else 1.96 * sem


def _from_results(df: pd.DataFrame):
    """Intervention rows of a results table (``target`` as ``network``) and the baseline."""
    from ..evaluation.results import results_table

    table = results_table(df)
    plain = table[(table["intervention"] == "") & (table["criterion"] == "dense")]
    baseline = plain.groupby("metric")["value"].mean().to_dict()
    rows = table[table["intervention"] != ""].rename(columns={"target": "network"})
    if rows.empty:
        raise ValueError("The results table has no intervention rows (the column 'intervention' "
                         "is empty everywhere).")
    return rows, baseline


def plot_intervention_effects(df, *, metrics=None, baseline=None, errorbar="sd",
                              log_perplexity=True, output_file=None):
    """Plot the effect of ablating/amplifying each network next to matched random controls.

    Parameters
    ----------
    df : pandas.DataFrame
        A results table (:mod:`llmbrain.evaluation.results`): its rows with
        an ``intervention`` are drawn by ``target``, and the unmodified
        model's rows (criterion ``"dense"``, no intervention) give the
        baseline. Or any table with columns ``network`` (or ``target``),
        ``intervention`` (e.g. ``"ablate"``, ``"amplify"``), ``condition``
        (``"network"`` or ``"random"``), ``metric``, ``value`` and
        optionally ``seed``. Several rows of one (network, intervention,
        condition, metric), e.g. random controls with different seeds, are
        drawn as faint points plus their mean ± ``errorbar``.
    metrics : list of str, optional
        Metrics to draw, one row of panels each; default all in ``df``.
    baseline : float or dict of str to float, optional
        Value of each metric for the unmodified model, drawn as a dashed line
        (default: from the results table, when it has one).
    errorbar : {"sd", "sem", "ci95"}
        Spread shown around means of repeated measurements.
    log_perplexity : bool
        Use a log y axis for metrics whose name contains "perplexity".
    output_file : str or Path, optional
        Save the figure there (``.png``, ``.pdf`` or ``.svg``).

    Returns
    -------
    matplotlib.figure.Figure
        One panel per (metric, intervention).
    """
    if isinstance(df, pd.DataFrame) and "target" in df.columns and "network" not in df.columns:
        df, found = _from_results(df)
        baseline = found if baseline is None and found else baseline
    df = check_columns(df, "df", _COLUMNS, optional=("seed",))
    if errorbar not in _ERRORBARS:
        raise ValueError(f"errorbar must be one of {list(_ERRORBARS)}; got {errorbar!r}.")
    unknown = set(df["condition"]) - set(_CONDITIONS)
    if unknown:
        raise ValueError("condition must be 'network' or 'random'; found "
                         f"{sorted(map(str, unknown))}.")
    metrics = _ordered(df["metric"], sort=False) if metrics is None else list(metrics)
    missing = [m for m in metrics if m not in set(df["metric"])]
    if missing:
        raise ValueError(f"metrics {missing} are not in df (it has {_ordered(df['metric'])}).")
    interventions = _ordered(df["intervention"], ("ablate", "amplify"))
    networks = _ordered(df["network"])
    if baseline is not None and not isinstance(baseline, dict):
        if len(metrics) != 1:
            raise ValueError("baseline must be a dict metric -> value when several metrics are "
                             "drawn.")
        baseline = {metrics[0]: baseline}
    x = {n: i for i, n in enumerate(networks)}
    with plot_style():
        fig = new_figure((min(1.6 + 0.55 * len(networks), 8) * len(interventions) + 0.6,
                          2.8 * len(metrics) + 1.1))
        axes = fig.subplots(len(metrics), len(interventions), squeeze=False, sharex=True,
                            sharey="row")
        for r, metric in enumerate(metrics):
            for c, intervention in enumerate(interventions):
                ax = axes[r, c]
                part = df[(df["metric"] == metric) & (df["intervention"] == intervention)]
                for condition, (color, marker, offset, label) in _CONDITIONS.items():
                    sub = part[part["condition"] == condition]
                    if sub.empty:
                        continue
                    for network, group in sub.groupby("network", sort=False):
                        vals = group["value"].to_numpy(dtype=float)
                        pos = x[network] + offset
                        if len(vals) > 1:
                            jitter = np.linspace(-0.06, 0.06, len(vals))
                            ax.scatter(pos + jitter, vals, s=8, color=color, alpha=0.35,
                                       linewidths=0, zorder=2)
                        ax.errorbar(pos, np.mean(vals), yerr=_spread(vals, errorbar),
                                    fmt=marker, color=color, markersize=6, capsize=3,
                                    markeredgecolor="white", markeredgewidth=0.6, zorder=3,
                                    label=label)
                if baseline and metric in baseline:
                    ax.axhline(baseline[metric], color="black", linestyle="--", linewidth=0.9,
                               label="Unmodified model", zorder=1)
                values = part["value"].to_numpy(dtype=float)
                if log_perplexity and "perplexity" in str(metric).lower() and (values > 0).all():
                    log_axis(ax, values)
                ax.set_title(f"{str(intervention).capitalize()}")
                ax.set_xticks(range(len(networks)), [str(n) for n in networks])
                ax.set_xlim(-0.6, len(networks) - 0.4)
                if c == 0:
                    ax.set_ylabel(str(metric).replace("_", " ").capitalize())
                if r == len(metrics) - 1:
                    ax.set_xlabel("Network")
        label_all_panels(axes)
        handles = {}
        for ax in axes.flat:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(lab, h)
        fig.legend(handles.values(), handles.keys(), loc="outside lower center",
                   ncols=len(handles), title=f"Mean ± {_ERRORBARS[errorbar]} over repeats")
        fig.suptitle("Effect of intervening on each network vs matched random neurons")
    return finish(fig, output_file)
