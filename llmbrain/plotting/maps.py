"""Spatial maps of functional networks drawn as layer × neuron images.

A network map holds one value per MLP neuron of the model. It is drawn as an
image with one row per layer (early layers at the bottom) and the neurons of
the layer along the x axis. Wide layers have more neurons than a figure has
pixels, so by default neurons are grouped into bins and each bin shows its
neuron of largest |z| (with its sign): strong, sparse neurons stay visible
instead of being averaged away.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr
from matplotlib.colors import BoundaryNorm, ListedColormap
import matplotlib as mpl

from ..networks._maps import KEY_NEURON_THRESHOLD
from ._inputs import (above_threshold, check_dataarray, component_labels, layer_values,
                      select_component)
from ._style import (DIVERGING_CMAP, color_of_label, figure_and_axes, finish, label_all_panels,
                     new_figure, plot_style)

__all__ = ["plot_network_atlas", "plot_network_map", "plot_networks"]

_MAPS_DIMS = [("component", "layer", "neuron")]
_MAX_GRID = 48  # networks drawn at most in a grid
_MAX_COLUMNS = 512  # neuron bins drawn per layer at most (about the pixels of a figure)


def _neuron_bin(n_neurons: int, neuron_bin) -> int:
    if neuron_bin == "auto":
        return max(1, math.ceil(n_neurons / _MAX_COLUMNS))
    if not isinstance(neuron_bin, (int, np.integer)) or neuron_bin < 1:
        raise ValueError(f"neuron_bin must be 'auto' or a positive integer; got {neuron_bin!r}.")
    return int(neuron_bin)


def _pick_by_magnitude(values: np.ndarray, key: np.ndarray, size: int) -> np.ndarray:
    """Per bin of ``size`` neurons (last axis), the entry of ``values`` where |key| is largest."""
    if size == 1:
        return values
    n = values.shape[-1]
    pad = (-n) % size
    values = np.concatenate([values, np.full(values.shape[:-1] + (pad,), np.nan)], axis=-1)
    key = np.concatenate([np.abs(key), np.full(key.shape[:-1] + (pad,), -np.inf)], axis=-1)
    key = np.where(np.isnan(key), -np.inf, key)
    shape = values.shape[:-1] + (values.shape[-1] // size, size)
    values, key = values.reshape(shape), key.reshape(shape)
    idx = np.argmax(key, axis=-1)[..., None]
    return np.take_along_axis(values, idx, axis=-1)[..., 0]


def _layer_ticks(ax, layers: np.ndarray) -> None:
    step = max(1, math.ceil(len(layers) / 12))
    pos = np.arange(0, len(layers), step)
    ax.set_yticks(pos, [str(layers[p]) for p in pos])


def _draw_map(ax, values2d: np.ndarray, layers, n_neurons, bin_size, *, cmap, norm):
    img = ax.imshow(values2d, aspect="auto", origin="lower", interpolation="nearest",
                    cmap=cmap, norm=norm, extent=(0, n_neurons, -0.5, len(layers) - 0.5))
    _layer_ticks(ax, layers)
    ax.set_facecolor("white")
    return img


def _xlabel(bin_size: int) -> str:
    if bin_size == 1:
        return "Neuron index"
    return f"Neuron index (bins of {bin_size}, largest |z| shown)"


def _diverging(threshold):
    return mpl.colormaps[DIVERGING_CMAP].with_extremes(bad="#f0f0f0" if threshold else "white")


def _check_threshold(threshold):
    if threshold is not None and (not np.isscalar(threshold) or not threshold >= 0):
        raise ValueError(f"threshold must be None or a non-negative number; got {threshold!r}.")


def plot_network_map(maps_z, component, threshold=None, *, ax=None, neuron_bin="auto",
                     vmax=None, colorbar=True, title=None, output_file=None):
    """Plot one network's spatial map as a layer × neuron image.

    Parameters
    ----------
    maps_z : xarray.DataArray, dims (component, layer, neuron)
        z-scored network maps (a DataArray of dims (layer, neuron), one map,
        is accepted too; ``component`` is then ignored).
    component : int or coordinate value
        Which network to draw (a value of the ``component`` coordinate).
    threshold : float, optional
        Only key neurons, ``|z| > threshold`` (the estimators' rule), are
        coloured; the others are drawn in light grey.
    ax : matplotlib.axes.Axes, optional
        Axes to draw in; a new figure is made otherwise.
    neuron_bin : "auto" or int
        Neurons per image column; each column shows its neuron of largest
        |z|. ``"auto"`` keeps at most 512 columns.
    vmax : float, optional
        Colour limit (symmetric around 0). Default: the map's largest |z|.
    colorbar : bool
        Whether to add a colour bar.
    title : str, optional
        Axes title; default ``"Network <component>"``.
    output_file : str or Path, optional
        Save the figure there (``.png``, ``.pdf`` or ``.svg``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    if isinstance(maps_z, xr.DataArray) and set(maps_z.dims) == {"layer", "neuron"}:
        one = maps_z.transpose("layer", "neuron")
    else:
        maps_z = check_dataarray(maps_z, "maps_z", _MAPS_DIMS)
        one = select_component(maps_z, component, "maps_z")
    _check_threshold(threshold)
    values = np.asarray(one.values, dtype=float)
    if threshold:
        values = np.where(above_threshold(values, threshold), values, np.nan)
    bin_size = _neuron_bin(values.shape[1], neuron_bin)
    shown = _pick_by_magnitude(values, values, bin_size)
    if vmax is None:
        finite = np.abs(values[np.isfinite(values)])
        vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    with plot_style():
        fig, ax = figure_and_axes(ax, (6.4, 3.6))
        img = _draw_map(ax, shown, layer_values(one), values.shape[1], bin_size,
                        cmap=_diverging(threshold), norm=mpl.colors.Normalize(-vmax, vmax))
        ax.set_xlabel(_xlabel(bin_size))
        ax.set_ylabel("Layer")
        label = title if title is not None else f"Network {component}"
        if threshold:
            label += f" (|z| > {threshold:g})"
        ax.set_title(label)
        if colorbar:
            cbar = fig.colorbar(img, ax=ax, label="z-score", shrink=0.9)
            if threshold and threshold < vmax:
                for level in (-threshold, threshold):
                    cbar.ax.axhline(level, color="black", linewidth=0.8)
    return finish(fig, output_file)


def plot_networks(maps_z, threshold=None, *, kind="grid", components=None, ncols=None,
                  neuron_bin="auto", vmax=None, output_file=None):
    """Plot all networks at once: a grid of small maps or a max-|z| atlas.

    Parameters
    ----------
    maps_z : xarray.DataArray, dims (component, layer, neuron)
        z-scored network maps.
    threshold : float, optional
        Only key neurons, ``|z| > threshold``, are coloured. For
        ``kind="atlas"`` the default is 3.6, the |z| commonly used to select
        key neurons.
    kind : {"grid", "atlas"}
        ``"grid"``: one small map per network sharing one colour bar.
        ``"atlas"``: see :func:`plot_network_atlas`.
    components : list, optional
        Networks to draw (values of the ``component`` coordinate); default all.
    ncols : int, optional
        Columns of the grid; default about the square root of the count.
    neuron_bin, vmax, output_file
        As in :func:`plot_network_map`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    maps_z = check_dataarray(maps_z, "maps_z", _MAPS_DIMS)
    if components is not None:
        maps_z = xr.concat([select_component(maps_z, c, "maps_z") for c in components],
                           dim="component")
    if kind == "atlas":
        return plot_network_atlas(maps_z, KEY_NEURON_THRESHOLD if threshold is None else threshold,
                                  neuron_bin=neuron_bin, output_file=output_file)
    if kind != "grid":
        raise ValueError(f"kind must be 'grid' or 'atlas'; got {kind!r}.")
    if maps_z.sizes["component"] > _MAX_GRID:
        raise ValueError(f"maps_z has {maps_z.sizes['component']} networks, too many for a grid "
                         f"(at most {_MAX_GRID}); choose some with components=[...] or draw "
                         "them all with kind='atlas'.")
    _check_threshold(threshold)
    values = np.asarray(maps_z.values, dtype=float)
    if threshold:
        values = np.where(above_threshold(values, threshold), values, np.nan)
    n_comp, n_layers, n_neurons = values.shape
    bin_size = _neuron_bin(n_neurons, neuron_bin)
    if vmax is None:
        finite = np.abs(values[np.isfinite(values)])
        vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    ncols = ncols or min(n_comp, max(1, math.ceil(math.sqrt(n_comp * 1.5))))
    nrows = math.ceil(n_comp / ncols)
    labels = component_labels(maps_z)
    layers = layer_values(maps_z)
    norm = mpl.colors.Normalize(-vmax, vmax)
    cmap = _diverging(threshold)
    with plot_style():
        fig = new_figure((min(2.6 * ncols + 1.2, 16), 1.9 * nrows + 0.6))
        axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
        img = None
        for i, ax in enumerate(axes.flat):
            if i >= n_comp:
                ax.set_visible(False)
                continue
            shown = _pick_by_magnitude(values[i], values[i], bin_size)
            img = _draw_map(ax, shown, layers, n_neurons, bin_size, cmap=cmap, norm=norm)
            ax.set_title(f"Network {labels[i]}", fontsize=9)
            if i % ncols == 0:
                ax.set_ylabel("Layer")
            if i // ncols == nrows - 1 or i + ncols >= n_comp:
                ax.set_xlabel("Neuron index")
        label_all_panels(axes)
        fig.colorbar(img, ax=axes, label="z-score", shrink=0.8)
        title = "Network maps"
        if threshold:
            title += f" (|z| > {threshold:g})"
        if bin_size > 1:
            title += f"; neurons in bins of {bin_size}, largest |z| shown"
        fig.suptitle(title)
    return finish(fig, output_file)


def plot_network_atlas(maps_z, threshold=KEY_NEURON_THRESHOLD, *, ax=None, neuron_bin="auto",
                       output_file=None):
    """Plot a max-|z| atlas: each neuron coloured by the network where its |z| is largest.

    Parameters
    ----------
    maps_z : xarray.DataArray, dims (component, layer, neuron)
        z-scored network maps.
    threshold : float
        Only neurons with ``|z| > threshold`` in some network (key neurons)
        are coloured (default 3.6).
    ax : matplotlib.axes.Axes, optional
        Axes to draw in.
    neuron_bin : "auto" or int
        Neurons per column; a column shows its neuron of largest |z|.
    output_file : str or Path, optional
        Save the figure there.

    Returns
    -------
    matplotlib.figure.Figure
    """
    maps_z = check_dataarray(maps_z, "maps_z", _MAPS_DIMS)
    _check_threshold(threshold)
    values = np.abs(np.asarray(maps_z.values, dtype=float))
    values = np.where(np.isnan(values), -np.inf, values)
    strength = values.max(axis=0)
    network = values.argmax(axis=0).astype(float)
    network[~above_threshold(strength, threshold or 0)] = np.nan
    strength = np.where(np.isnan(network), np.nan, strength)
    n_comp, _, n_neurons = values.shape
    bin_size = _neuron_bin(n_neurons, neuron_bin)
    shown = _pick_by_magnitude(network, strength, bin_size)
    labels = component_labels(maps_z)
    cmap = ListedColormap([color_of_label(label, i) for i, label in enumerate(labels)])
    cmap = cmap.with_extremes(bad="white")
    norm = BoundaryNorm(np.arange(n_comp + 1) - 0.5, n_comp)
    with plot_style():
        fig, ax = figure_and_axes(ax, (6.4, 3.6))
        img = _draw_map(ax, shown, layer_values(maps_z), n_neurons, bin_size, cmap=cmap, norm=norm)
        ax.set_xlabel("Neuron index" if bin_size == 1
                      else f"Neuron index (bins of {bin_size}, strongest neuron shown)")
        ax.set_ylabel("Layer")
        n_kept = int(np.isfinite(network).sum())
        ax.set_title(f"Network atlas: {n_kept:,} key neurons (|z| > {threshold:g})")
        cbar = fig.colorbar(img, ax=ax, label="Network", shrink=0.9)
        step = max(1, math.ceil(n_comp / 20))
        ticks = np.arange(0, n_comp, step)
        cbar.set_ticks(ticks, labels=[labels[t] for t in ticks])
        cbar.ax.tick_params(length=0)
    return finish(fig, output_file)
