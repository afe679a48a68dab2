"""Pruning results: quality against sparsity, and the neurons each layer keeps."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.ticker import MaxNLocator, PercentFormatter

from ..evaluation.results import from_wide, higher_is_better, results_table, summarize_seeds
from ._style import (criterion_color, finish, label_all_panels, log_axis, marker_for, new_figure,
                     plot_style)

__all__ = ["plot_kept_neurons", "plot_pruning_curves"]

_METRIC_LABELS = {"perplexity": "Perplexity (log scale)", "acc": "Accuracy",
                  "acc_norm": "Accuracy (length-normalised)"}
_ERRORBARS = {"sd": "s.d.", "sem": "s.e.m."}


def _as_results(df) -> pd.DataFrame:
    """A results table; a wide table (one column per metric) is converted first."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"results must be a pandas DataFrame (a results table), got "
                        f"{type(df).__name__}.")
    if {"metric", "value"} <= set(df.columns):
        return results_table(df)
    constants = {} if "model" in df.columns else {"model": "model"}
    return from_wide(df, **constants)


def _curve_label(criterion, allocation, several_allocations) -> str:
    return f"{criterion} ({allocation})" if several_allocations and allocation else str(criterion)


def plot_pruning_curves(results, *, metrics=("perplexity", "acc"), datasets=None, errorbar="sd",
                        axes=None, output_file=None):
    """Plot quality against sparsity, one line per criterion, starting at the dense model.

    Parameters
    ----------
    results : pandas.DataFrame
        A results table (:mod:`llmbrain.evaluation.results`); rows with an
        intervention are ignored. A wide table with columns ``criterion``,
        ``sparsity`` and ``perplexity`` / ``avg_accuracy`` is read too.
        The dense model (criterion ``"dense"``) is each line's first point,
        at sparsity 0, and a dashed reference line.
    metrics : sequence of str, default=("perplexity", "acc")
        Metrics to draw, one panel per (dataset, metric) present.
        Perplexity is drawn on a log scale.
    datasets : sequence of str, optional
        Only these data sets.
    errorbar : {"sd", "sem"}
        Spread drawn over seeds (rows that differ only by ``seed``).
    axes : sequence of matplotlib.axes.Axes, optional
        One axes per panel.
    output_file : str or Path, optional
        Save the figure there (``.png``, ``.pdf`` or ``.svg``).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> from llmbrain.evaluation.results import results_table
    >>> from llmbrain.plotting import plot_pruning_curves
    >>> results = results_table(
    ...     [{"criterion": "dense", "value": 56.1},
    ...      {"criterion": "flap", "sparsity": 0.3, "value": 129.6},
    ...      {"criterion": "networks", "sparsity": 0.3, "value": 1216.0}],
    ...     model="SmolLM2", dataset="wikitext2", metric="perplexity")
    >>> fig = plot_pruning_curves(results)
    """
    table = _as_results(results)
    if errorbar not in _ERRORBARS:
        raise ValueError(f"errorbar must be one of {list(_ERRORBARS)}; got {errorbar!r}.")
    table = table[(table["intervention"] == "") & table["metric"].isin(list(metrics))]
    if datasets is not None:
        table = table[table["dataset"].isin(list(datasets))]
    if table.empty:
        raise ValueError(f"The results hold no rows of metrics {list(metrics)}"
                         + (f" on data sets {list(datasets)}" if datasets is not None else "")
                         + "; choose them with metrics= and datasets=.")
    summary = summarize_seeds(table)
    panels = list(summary[["dataset", "metric"]].drop_duplicates().itertuples(index=False,
                                                                             name=None))
    panels.sort(key=lambda p: list(metrics).index(p[1]))
    if len(panels) > 6:
        raise ValueError(f"{len(panels)} (dataset, metric) panels are too many for one figure; "
                         "choose some with datasets= or metrics=.")
    pruned = summary[summary["criterion"] != "dense"]
    several_allocations = pruned.groupby("criterion")["allocation"].nunique().gt(1).any()
    with plot_style():
        if axes is None:
            fig = new_figure((4.0 * len(panels) + 2.2, 3.5))
            axes = list(fig.subplots(1, len(panels), squeeze=False)[0])
        else:
            axes = list(np.ravel(axes))
            if len(axes) != len(panels):
                raise ValueError(f"axes must hold {len(panels)} axes, one per panel {panels}; "
                                 f"got {len(axes)}.")
            fig = axes[0].figure
        for ax, (dataset, metric) in zip(axes, panels):
            part = summary[(summary["dataset"] == dataset) & (summary["metric"] == metric)]
            dense = part[part["criterion"] == "dense"]
            dense_value = float(dense["mean"].mean()) if len(dense) else None
            curves = part[part["criterion"] != "dense"]
            for (criterion, allocation), curve in curves.groupby(["criterion", "allocation"],
                                                                 sort=False):
                curve = curve.groupby("sparsity").agg(mean=("mean", "mean"), sd=("sd", "mean"),
                                                      n=("n_seeds", "max")).sort_index()
                spread = curve["sd"] / (np.sqrt(curve["n"]) if errorbar == "sem" else 1)
                x, y, err = curve.index.to_numpy(), curve["mean"].to_numpy(), spread.to_numpy()
                if dense_value is not None:
                    x, y, err = np.r_[0.0, x], np.r_[dense_value, y], np.r_[np.nan, err]
                ax.errorbar(x, y, yerr=err if np.isfinite(err).any() else None,
                            color=criterion_color(criterion), marker=marker_for(criterion),
                            markersize=4.5, linewidth=1.5, capsize=2.5,
                            label=_curve_label(criterion, allocation, several_allocations))
            if dense_value is not None:
                ax.axhline(dense_value, color=criterion_color("dense"), linestyle="--",
                           linewidth=1.0, label="dense")
            if metric == "perplexity":
                log_axis(ax, part["mean"])
            elif part["mean"].between(0, 1).all() and metric.startswith("acc"):
                ax.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))
            arrow = "↑" if higher_is_better(metric) else "↓"
            ax.set_ylabel(f"{_METRIC_LABELS.get(metric, metric)} {arrow} better")
            ax.set_xlabel("Sparsity (MLP neurons removed)")
            ax.set_title(dataset or metric)
            levels = np.union1d([0.0], part["sparsity"].unique())
            ax.set_xticks(levels if len(levels) <= 8 else
                          np.linspace(0, levels.max(), 6))
            ax.set_xlim(-0.04 * levels.max(), 1.06 * levels.max())
            ax.xaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))
            ax.grid(True, color="#e6e6e6", linewidth=0.6)
            ax.set_axisbelow(True)
        label_all_panels(axes)
        handles, labels = axes[0].get_legend_handles_labels()
        spread = summary["n_seeds"].gt(1).any()
        fig.legend(handles, labels, loc="outside right upper",
                   title="Criterion" + (f"\n(mean ± {_ERRORBARS[errorbar]} over seeds)"
                                        if spread else ""))
    return finish(fig, output_file)


def _counts_from_plan_like(obj) -> tuple[pd.Series, dict | None, dict | None]:
    """Kept counts (by layer), neuron counts and kept indices of a plan or dict layer -> indices."""
    keep = getattr(obj, "keep", obj)
    if not isinstance(keep, Mapping) or not keep:
        raise TypeError("Expected a dict layer -> kept neuron indices, or a pruning plan.")
    counts = {int(layer): int(np.asarray(idx).size) for layer, idx in keep.items()}
    n_neurons = getattr(obj, "n_neurons", None)
    indices = {int(layer): np.asarray(idx) for layer, idx in keep.items()}
    return pd.Series(counts).sort_index(), dict(n_neurons) if n_neurons else None, indices


def _as_counts(kept, label):
    """(criterion × layer) counts, per-layer neuron counts if known, kept indices if known."""
    if isinstance(kept, xr.DataArray):
        if set(kept.dims) != {"criterion", "layer"}:
            raise ValueError(f"kept must have dims (criterion, layer); got {tuple(kept.dims)}.")
        return kept.transpose("criterion", "layer").to_pandas(), None, None
    if isinstance(kept, pd.DataFrame):
        if {"criterion", "layer"} <= set(kept.columns):
            value = [c for c in ("kept", "n_kept", "count") if c in kept.columns]
            if not value:
                raise ValueError("A long-format kept table needs a 'kept' column next to "
                                 "'criterion' and 'layer'.")
            return kept.pivot_table(index="criterion", columns="layer", values=value[0],
                                    sort=False), None, None
        return kept, None, None
    if isinstance(kept, Mapping) and kept and all(isinstance(k, str) for k in kept):
        rows, sizes, indices = {}, None, {}
        for name, plan in kept.items():
            rows[name], plan_sizes, indices[name] = _counts_from_plan_like(plan)
            sizes = plan_sizes or sizes
        return pd.DataFrame(rows).T, sizes, indices
    try:
        counts, sizes, indices = _counts_from_plan_like(kept)
    except TypeError:
        raise TypeError("kept must be a DataFrame / DataArray (criterion, layer) of counts, a dict "
                        "layer -> kept indices, a pruning plan, or a dict criterion -> plan; got "
                        f"{type(kept).__name__}.") from None
    name = label or getattr(kept, "criterion", None) or "plan"
    return pd.DataFrame({name: counts}).T, sizes, {name: indices}


def _group_identical(counts: pd.DataFrame) -> list[tuple[list[str], np.ndarray]]:
    groups: list[tuple[list[str], np.ndarray]] = []
    for criterion, row in counts.iterrows():
        values = row.to_numpy(dtype=float)
        for names, profile in groups:
            if np.array_equal(profile, values, equal_nan=True):
                names.append(str(criterion))
                break
        else:
            groups.append(([str(criterion)], values))
    return groups


def plot_kept_neurons(kept, *, n_neurons=None, key_neurons=None, label=None, ax=None,
                      output_file=None):
    """Plot what each layer keeps: its share of neurons, and of key neurons.

    Criteria whose plans keep the same number of neurons in every layer
    (e.g. all criteria under uniform allocation) share one line, labelled
    with all their names, so the allocation is what the first panel shows.
    With ``key_neurons``, a second panel shows which share of each layer's
    key neurons every criterion keeps, which is where criteria of one
    allocation differ.

    Parameters
    ----------
    kept : DataFrame, DataArray, dict or pruning plan
        Kept neuron counts as a table criterion × layer (DataFrame with
        criteria as index and layers as columns, a long DataFrame with
        columns ``criterion``, ``layer``, ``kept``, or a DataArray of dims
        (criterion, layer)); or a dict layer -> kept neuron indices; or a
        pruning plan (``.keep``, ``.n_neurons``, ``.criterion``); or a dict
        criterion -> plan.
    n_neurons : int or dict of int to int, optional
        Neurons per layer before pruning; taken from the plans when they
        carry it. With it, the first panel shows percentages.
    key_neurons : xarray.DataArray of bool, dims (layer, neuron), optional
        Key neurons (e.g. the union over runs that the networks criterion
        keeps). Needs plans (kept indices), not counts.
    label : str, optional
        Name of a single plan / dict of indices in the legend.
    ax : matplotlib.axes.Axes, optional
        Axes to draw the first panel in (only without ``key_neurons``).
    output_file : str or Path, optional
        Save the figure there (``.png``, ``.pdf`` or ``.svg``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    counts, sizes, indices = _as_counts(kept, label)
    if counts.empty:
        raise ValueError("kept holds no counts.")
    counts = counts.reindex(sorted(counts.columns), axis=1)
    layers = np.asarray(counts.columns, dtype=int)
    n_neurons = n_neurons if n_neurons is not None else sizes
    if key_neurons is not None:
        if indices is None:
            raise ValueError("key_neurons needs plans (the kept neuron indices), not counts.")
        if not isinstance(key_neurons, xr.DataArray) or set(key_neurons.dims) != {"layer",
                                                                                  "neuron"}:
            raise ValueError("key_neurons must be a boolean DataArray with dims (layer, neuron).")
        if ax is not None:
            raise ValueError("Two panels are drawn with key_neurons; pass ax=None.")
    total = None
    if n_neurons is not None:
        total = np.array([n_neurons.get(int(layer), np.nan) for layer in layers]
                         if isinstance(n_neurons, Mapping) else [n_neurons] * len(layers),
                         dtype=float)
    groups = _group_identical(counts)
    with plot_style():
        n_panels = 1 if key_neurons is None else 2
        if ax is None:
            fig = new_figure((min(3.6 + 0.2 * len(layers), 12) * (1 + 0.75 * (n_panels - 1)),
                              3.5))
            axes = list(fig.subplots(1, n_panels, squeeze=False)[0])
        else:
            fig, axes = ax.figure, [ax]
        first = axes[0]
        for names, profile in groups:
            y = 100 * profile / total if total is not None else profile
            shown = names if len(names) <= 3 else names[:2] + [f"{len(names) - 2} more"]
            first.plot(layers, y, color=criterion_color(names[0]), marker=marker_for(names[0]),
                       markersize=4, linewidth=1.4, label=", ".join(shown))
        if total is not None:
            first.set_ylabel("Neurons kept (% of the layer)")
            first.set_ylim(0, 105)
        else:
            first.set_ylabel("Neurons kept (count)")
            first.set_ylim(bottom=0)
        uniform = len(groups) == 1 and np.ptp(groups[0][1]) == 0
        first.set_title("Neurons kept per layer" + (": the same in every layer and criterion"
                                                    if uniform else ""))
        if key_neurons is not None:
            second = axes[1]
            key = key_neurons.transpose("layer", "neuron")
            key_layers = [int(v) for v in key["layer"].values]
            neuron_ids = key["neuron"].values if "neuron" in key.coords else \
                np.arange(key.sizes["neuron"])
            n_key = key.values.sum(axis=1)
            for name, kept_indices in indices.items():
                share = []
                for row, layer in enumerate(key_layers):
                    ids = neuron_ids[key.values[row]]
                    kept_ids = kept_indices.get(layer, np.array([], dtype=int))
                    share.append(100 * np.isin(ids, kept_ids).sum() / len(ids) if len(ids)
                                 else np.nan)
                second.plot(key_layers, share, color=criterion_color(name),
                            marker=marker_for(name), markersize=4, linewidth=1.2, label=name)
            second.set_ylabel("Key neurons kept (% of the layer's)")
            second.set_ylim(-3, 105)
            second.set_title(f"Key neurons kept per layer ({int(n_key.sum()):,} key neurons)")
            second.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), title="Criterion")
        for a in axes:
            a.set_xlabel("Layer")
            a.xaxis.set_major_locator(MaxNLocator(integer=True))
            a.grid(True, color="#e6e6e6", linewidth=0.6)
            a.set_axisbelow(True)
        first.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0),
                     title="Criteria (identical counts share a line)" if len(groups) < len(counts)
                     else "Criterion")
    return finish(fig, output_file)
