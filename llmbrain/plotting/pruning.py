"""Pruning results: quality against sparsity, and the neurons each layer keeps."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.ticker import PercentFormatter

from ._inputs import check_columns
from ._style import (criterion_color, figure_and_axes, finish, log_axis, marker_for, new_figure,
                     plot_style)

__all__ = ["plot_kept_neurons", "plot_pruning_curves"]

_PANELS = {"perplexity": "Perplexity (log scale)", "avg_accuracy": "Average zero-shot accuracy"}


def plot_pruning_curves(df, *, axes=None, errorbar="sd", output_file=None):
    """Plot perplexity and average accuracy against sparsity, one line per criterion.

    Parameters
    ----------
    df : pandas.DataFrame
        Columns ``criterion``, ``sparsity`` and at least one of
        ``perplexity``, ``avg_accuracy``. The unpruned model is the row(s)
        with criterion ``"dense"`` (sparsity 0), drawn as a horizontal line.
        Repeated rows of one (criterion, sparsity), e.g. seeds, are drawn as
        their mean ± ``errorbar``.
    axes : sequence of matplotlib.axes.Axes, optional
        One axes per drawn metric (perplexity first).
    errorbar : {"sd", "sem"}
        Spread shown for repeated rows.
    output_file : str or Path, optional
        Save the figure there (``.png``, ``.pdf`` or ``.svg``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    df = check_columns(df, "df", ("criterion", "sparsity"), optional=tuple(_PANELS))
    metrics = [m for m in _PANELS if m in df.columns]
    if not metrics:
        raise ValueError("df needs a 'perplexity' and/or an 'avg_accuracy' column; "
                         f"it has {list(df.columns)}.")
    if errorbar not in ("sd", "sem"):
        raise ValueError(f"errorbar must be 'sd' or 'sem'; got {errorbar!r}.")
    sparsity = pd.to_numeric(df["sparsity"], errors="raise")
    if ((sparsity < 0) | (sparsity > 100)).any():
        raise ValueError("sparsity must be a fraction in [0, 1] or a percentage in [0, 100].")
    fraction = sparsity.max() <= 1
    is_dense = df["criterion"].astype(str).str.lower() == "dense"
    criteria = list(pd.unique(df.loc[~is_dense, "criterion"]))
    with plot_style():
        if axes is None:
            fig = new_figure((4.2 * len(metrics) + 1.8, 3.4))
            axes = list(fig.subplots(1, len(metrics), squeeze=False)[0])
        else:
            axes = list(np.ravel(axes))
            if len(axes) != len(metrics):
                raise ValueError(f"axes must hold {len(metrics)} axes (one per metric {metrics}); "
                                 f"got {len(axes)}.")
            fig = axes[0].figure
        for ax, metric in zip(axes, metrics):
            for criterion in criteria:
                sub = df[df["criterion"] == criterion].groupby("sparsity")[metric]
                mean, count = sub.mean(), sub.count()
                spread = sub.std(ddof=1)
                if errorbar == "sem":
                    spread = spread / np.sqrt(count)
                ax.errorbar(mean.index, mean.values,
                            yerr=spread.values if (count > 1).any() else None,
                            color=criterion_color(criterion), marker=marker_for(criterion), markersize=4.5,
                            linewidth=1.5, capsize=2.5, label=str(criterion))
            dense = df.loc[is_dense, metric].dropna()
            if len(dense):
                ax.axhline(float(dense.mean()), color=criterion_color("dense"), linestyle="--",
                           linewidth=1.0, label="dense")
            if metric == "perplexity":
                log_axis(ax, df[metric])
            ax.set_ylabel(_PANELS[metric])
            ax.set_xlabel("Sparsity (MLP neurons removed)")
            ax.xaxis.set_major_formatter(PercentFormatter(xmax=1 if fraction else 100, decimals=0))
            if metric == "avg_accuracy" and df[metric].max() <= 1:
                ax.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))
            ax.grid(True, color="#e6e6e6", linewidth=0.6)
            ax.set_axisbelow(True)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right upper", title="Criterion")
    return finish(fig, output_file)


def _counts_from_plan_like(obj) -> tuple[pd.Series, dict | None]:
    """Kept counts (indexed by layer) and neuron counts of a plan or a dict layer -> indices."""
    keep = getattr(obj, "keep", obj)
    if not isinstance(keep, Mapping) or not keep:
        raise TypeError("Expected a dict layer -> kept neuron indices, or a pruning plan.")
    counts = {int(layer): int(np.asarray(idx).size) for layer, idx in keep.items()}
    n_neurons = getattr(obj, "n_neurons", None)
    return pd.Series(counts).sort_index(), dict(n_neurons) if n_neurons else None


def _as_counts(kept, label) -> tuple[pd.DataFrame, dict | None]:
    """(criterion × layer) table of kept counts, and per-layer neuron counts if known."""
    if isinstance(kept, xr.DataArray):
        if set(kept.dims) != {"criterion", "layer"}:
            raise ValueError(f"kept must have dims (criterion, layer); got {tuple(kept.dims)}.")
        return kept.transpose("criterion", "layer").to_pandas(), None
    if isinstance(kept, pd.DataFrame):
        if {"criterion", "layer"} <= set(kept.columns):
            value = [c for c in ("kept", "n_kept", "count") if c in kept.columns]
            if not value:
                raise ValueError("A long-format kept table needs a 'kept' column next to "
                                 "'criterion' and 'layer'.")
            return kept.pivot_table(index="criterion", columns="layer", values=value[0],
                                    sort=False), None
        return kept, None
    if isinstance(kept, Mapping) and kept and all(isinstance(k, str) for k in kept):
        rows, sizes = {}, None
        for name, plan in kept.items():
            rows[name], sizes = _counts_from_plan_like(plan)[0], _counts_from_plan_like(plan)[1] or sizes
        return pd.DataFrame(rows).T, sizes
    try:
        counts, sizes = _counts_from_plan_like(kept)
    except TypeError:
        raise TypeError("kept must be a DataFrame / DataArray (criterion, layer) of counts, a dict "
                        "layer -> kept indices, a pruning plan, or a dict criterion -> plan; got "
                        f"{type(kept).__name__}.") from None
    name = label or getattr(kept, "criterion", None) or "plan"
    return pd.DataFrame({name: counts}).T, sizes


def plot_kept_neurons(kept, *, n_neurons=None, label=None, ax=None, output_file=None):
    """Plot the number of neurons each layer keeps, one line per criterion.

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
        Neurons per layer before pruning, drawn as a reference line; taken
        from the plans when they carry it.
    label : str, optional
        Name of a single plan / dict of indices in the legend.
    ax : matplotlib.axes.Axes, optional
        Axes to draw in.
    output_file : str or Path, optional
        Save the figure there (``.png``, ``.pdf`` or ``.svg``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    counts, sizes = _as_counts(kept, label)
    if counts.empty:
        raise ValueError("kept holds no counts.")
    counts = counts.reindex(sorted(counts.columns), axis=1)
    layers = np.asarray(counts.columns, dtype=int)
    n_neurons = n_neurons if n_neurons is not None else sizes
    with plot_style():
        fig, ax = figure_and_axes(ax, (min(3.0 + 0.18 * len(layers), 12), 3.4))
        for criterion, row in counts.iterrows():
            ax.plot(layers, row.to_numpy(dtype=float), color=criterion_color(criterion),
                    marker=marker_for(criterion), markersize=4, linewidth=1.4, label=str(criterion))
        if n_neurons is not None:
            total = ([n_neurons.get(int(l), np.nan) for l in layers] if isinstance(n_neurons, Mapping)
                     else [n_neurons] * len(layers))
            ax.plot(layers, total, color=criterion_color("dense"), linestyle="--", linewidth=1.0,
                    label="dense (all neurons)")
        ax.set_xlabel("Layer")
        ax.set_ylabel("Kept MLP neurons (count)")
        ax.set_ylim(bottom=0)
        ax.set_title("Neurons kept per layer")
        ax.grid(True, color="#e6e6e6", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), title="Criterion")
    return finish(fig, output_file)
