"""How many key neurons each network has in each layer."""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from ._inputs import component_labels, layer_values
from ._style import (OKABE_ITO, SEQUENTIAL_CMAP, figure_and_axes, finish, new_figure, plot_style,
                     text_color_on)

__all__ = ["plot_key_neurons"]


def _check_masks(key_masks) -> xr.DataArray:
    if not isinstance(key_masks, xr.DataArray):
        raise TypeError("key_masks must be a boolean xarray.DataArray with dims (layer, neuron) or "
                        f"(component, layer, neuron); got {type(key_masks).__name__}.")
    dims = set(key_masks.dims)
    if dims == {"layer", "neuron"}:
        key_masks = key_masks.transpose("layer", "neuron")
    elif dims == {"component", "layer", "neuron"}:
        key_masks = key_masks.transpose("component", "layer", "neuron")
    else:
        raise ValueError("key_masks must have dims (layer, neuron) or (component, layer, neuron); "
                         f"got {tuple(key_masks.dims)}.")
    if key_masks.dtype != bool:
        raise TypeError(f"key_masks must be boolean, got dtype {key_masks.dtype}. Threshold the "
                        "z-maps first, e.g. abs(maps_z) > 3.6.")
    if 0 in key_masks.shape:
        raise ValueError(f"key_masks is empty (shape {dict(key_masks.sizes)}).")
    return key_masks


def _layer_ticks(ax, layers, axis="y"):
    step = max(1, math.ceil(len(layers) / 15))
    pos = np.arange(0, len(layers), step)
    (ax.set_yticks if axis == "y" else ax.set_xticks)(pos, [str(layers[p]) for p in pos])


def plot_key_neurons(key_masks, *, annotate="auto", output_file=None, ax=None):
    """Plot the number of key neurons per layer, for each network and for their union.

    The union here is over the networks of one run (neurons key in at least
    one network); the union over runs, which pruning keeps, is another mask
    (``NetworkRecurrence.key_neurons_union_``), drawn by passing it alone.

    Parameters
    ----------
    key_masks : xarray.DataArray of bool, dims (layer, neuron) or (component, layer, neuron)
        Key-neuron masks: one mask (e.g. the union kept by pruning), or one
        mask per network.
    annotate : "auto" or bool
        Write the counts in the heatmap cells ("auto": when there are at
        most 400 cells).
    output_file : str or Path, optional
        Save the figure there (``.png``, ``.pdf`` or ``.svg``).
    ax : matplotlib.axes.Axes, optional
        Axes for the bar chart of a single (layer, neuron) mask. Masks per
        network need two panels and always make a new figure.

    Returns
    -------
    matplotlib.figure.Figure
        For one mask: horizontal bars of key neurons per layer. For masks
        per network: a heatmap layer × network of counts, and bars of the
        union per layer sharing its layer axis.
    """
    key_masks = _check_masks(key_masks)
    layers = layer_values(key_masks)
    n_per_layer = key_masks.sizes["neuron"]
    if key_masks.ndim == 2:
        counts = key_masks.values.sum(axis=1)
        with plot_style():
            fig, ax = figure_and_axes(ax, (4.0, max(2.5, 0.14 * len(layers) + 1)))
            _union_bars(ax, counts, layers, n_per_layer)
            ax.set_ylabel("Layer")
            ax.set_title(f"Key neurons: {int(counts.sum()):,} in total")
        return finish(fig, output_file)
    if ax is not None:
        raise ValueError("Masks per network are drawn in two panels; pass ax=None.")
    per_network = key_masks.values.sum(axis=2).T  # (layer, component)
    union = key_masks.values.any(axis=0).sum(axis=1)
    labels = component_labels(key_masks)
    n_comp = len(labels)
    if annotate == "auto":
        annotate = per_network.size <= 400
    with plot_style():
        fig = new_figure((min(2.8 + 0.42 * n_comp, 14) + 2.6, max(3.0, 0.16 * len(layers) + 1.2)))
        ax_map, ax_bar = fig.subplots(1, 2, sharey=True,
                                      gridspec_kw={"width_ratios": [max(n_comp, 3), 3]})
        img = ax_map.imshow(per_network, aspect="auto", origin="lower", cmap=SEQUENTIAL_CMAP,
                            interpolation="nearest", vmin=0)
        step = max(1, int(np.ceil(n_comp / 30)))
        ticks = np.arange(0, n_comp, step)
        short = max(len(s) for s in labels) <= 3
        ax_map.set_xticks(ticks, [labels[t] for t in ticks], rotation=0 if short else 45,
                          ha="center" if short else "right")
        _layer_ticks(ax_map, layers)
        ax_map.set_xlabel("Network")
        ax_map.set_ylabel("Layer")
        ax_map.set_title("Key neurons per layer and network")
        ax_map.spines[:].set_visible(False)
        if annotate:
            for (i, j), v in np.ndenumerate(per_network):
                ax_map.text(j, i, str(int(v)), ha="center", va="center", fontsize=6,
                            color=text_color_on(img.cmap(img.norm(v))))
        fig.colorbar(img, ax=ax_map, label="Key neurons (count)", shrink=0.9, location="left",
                     pad=0.02)
        _union_bars(ax_bar, union, np.arange(len(layers)), n_per_layer, tick_labels=False)
        ax_bar.set_title(f"Union over networks: {int(union.sum()):,}")
        ax_bar.tick_params(labelleft=True)
    return finish(fig, output_file)


def _union_bars(ax, counts, layers, n_per_layer, tick_labels=True):
    pos = np.arange(len(counts))
    ax.barh(pos, counts, color=OKABE_ITO["blue"], height=0.8)
    if tick_labels:
        _layer_ticks(ax, layers)
    ax.set_ylim(-0.5, len(counts) - 0.5)
    ax.set_xlabel("Key neurons (count)")
    top = ax.secondary_xaxis("top", functions=(lambda c: 100 * c / n_per_layer,
                                               lambda p: p * n_per_layer / 100))
    top.set_xlabel(f"% of the layer's {n_per_layer} neurons")
