"""The neuroimaging view of a model: one slice per layer, as the NIfTI volumes lay neurons out.

:func:`llmbrain.to_volumes` puts the neurons of a layer on a 2-D grid (neuron
``j`` at voxel ``(j // ny, j % ny)``) and stacks layers along *z*. This view
draws those slices side by side, labelled with their model layer, with
voxel-index axes and no anatomy: no brain template, no left/right
annotation, no millimetres. Neighbouring voxels are unrelated neurons, which
is also why nilearn's spatial smoothing must stay off (``smoothing_fwhm=None``)
on these images.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr
import matplotlib as mpl

from ._inputs import above_threshold, select_component
from ._style import (DIVERGING_CMAP, SEQUENTIAL_CMAP, finish, label_all_panels, new_figure,
                     plot_style)

__all__ = ["plot_layer_slices"]

_STATS = {"mean_abs": "mean |activation|", "mean": "mean activation", "std": "s.d. of activation"}


def _reduce_tokens(data: xr.DataArray, stat: str, exclude_bos: bool) -> tuple[xr.DataArray, str]:
    note = ""
    if exclude_bos:
        if "position" not in data.coords:
            raise ValueError("Cannot find the BOS tokens: the activations have no 'position' "
                             "coordinate. Pass exclude_bos=False, or activations read from a "
                             "store (llmbrain.open_activations).")
        keep = np.asarray(data["position"].values) != 0
        if not keep.any():
            raise ValueError("Every token is at position 0 (a BOS token); nothing is left to show.")
        data = data.isel(token=np.flatnonzero(keep))
        note = ", first token of each window (BOS) left out"
    values = data.astype(np.float32)
    if stat == "mean_abs":
        reduced = np.abs(values).mean("token")
    elif stat == "mean":
        reduced = values.mean("token")
    else:
        reduced = values.std("token")
    return reduced, f"{_STATS[stat]} over {data.sizes['token']:,} tokens{note}"


def _as_layer_maps(data, component, layout, stat, exclude_bos):
    """(layer, neuron) values, model layer indices, neuron indices and a description."""
    from ..volumes import LLMVolumes, VolumeLayout

    description = ""
    if isinstance(data, LLMVolumes):
        data, layout = data.img, data.layout
    if hasattr(data, "dataobj"):  # a NIfTI image
        if not isinstance(layout, VolumeLayout):
            raise TypeError("A NIfTI image needs its layout (layout=volumes.layout).")
        image = np.asarray(data.dataobj, dtype=np.float32)
        if image.ndim == 4:
            if component is None:
                raise ValueError(f"The image holds {image.shape[3]} volumes; choose one with "
                                 "component= (an index), or pass the activations as a "
                                 "DataArray to average over tokens.")
            image = image[..., int(component)]
            description = f"volume {int(component)}"
        data = xr.DataArray(layout.from_voxels(image), dims=("layer", "neuron"),
                            coords={"layer": list(layout.layers), "neuron": list(layout.neurons)})
    if isinstance(data, xr.Dataset):
        if "activations" not in data:
            raise ValueError("A Dataset must hold 'activations' (token, layer, neuron).")
        data = data["activations"]
    if not isinstance(data, xr.DataArray):
        raise TypeError("data must be activations or maps as an xarray.DataArray, LLMVolumes, or "
                        f"a NIfTI image with its layout; got {type(data).__name__}.")
    dims = set(data.dims)
    if dims == {"token", "layer", "neuron"}:
        data, description = _reduce_tokens(data.transpose("token", "layer", "neuron"), stat,
                                           exclude_bos)
    elif dims == {"component", "layer", "neuron"}:
        if component is None:
            raise ValueError("data holds several maps (dim 'component'); choose one with "
                             "component=.")
        data = select_component(data.transpose("component", "layer", "neuron"), component, "data")
        description = f"network {component}"
    elif dims != {"layer", "neuron"}:
        raise ValueError("data must have dims (token, layer, neuron), (component, layer, neuron) "
                         f"or (layer, neuron); got {tuple(data.dims)}.")
    data = data.transpose("layer", "neuron")
    layers = [int(v) for v in (data["layer"].values if "layer" in data.coords
                               else range(data.sizes["layer"]))]
    neurons = tuple(int(v) for v in (data["neuron"].values if "neuron" in data.coords
                                     else range(data.sizes["neuron"])))
    return np.asarray(data.values, dtype=float), layers, neurons, description


def plot_layer_slices(data, *, component=None, layout=None, layers=None, stat="mean_abs",
                      exclude_bos=True, threshold=None, ncols=None, cmap=None, vmax=None,
                      title=None, output_file=None):
    """Draw every layer as a slice of the NIfTI volume, side by side.

    Parameters
    ----------
    data : xarray.DataArray or Dataset, LLMVolumes or NIfTI image
        Activations (token, layer, neuron), reduced over tokens by ``stat``;
        maps (component, layer, neuron) with ``component``; one map
        (layer, neuron); or the volumes of :func:`llmbrain.to_volumes` (a
        4-D image needs ``component``, the index of the volume).
    component : int or coordinate value, optional
        Which map or volume to draw.
    layout : llmbrain.volumes.VolumeLayout, optional
        Layout of a NIfTI image given alone.
    layers : sequence of int, optional
        Model layers to draw (default all).
    stat : {"mean_abs", "mean", "std"}
        Reduction over tokens of activations.
    exclude_bos : bool, default=True
        Leave out the first token of every window (the BOS token, whose
        activations are far larger than any other and would set the colour
        scale alone). Needs the ``position`` coordinate of a store.
    threshold : float, optional
        Show only voxels with ``|value| > threshold`` (key neurons of a
        z-scored map).
    ncols : int, optional
        Slices per row (default about the square root of the count).
    cmap : str, optional
        Default: diverging, centred at 0, for signed values; sequential for
        non-negative ones.
    vmax : float, optional
        Upper colour limit (symmetric for signed values). Default the 99th
        percentile of ``|values|`` for activations, their maximum for maps.
    title : str, optional
    output_file : str or Path, optional
        Save the figure there (``.png``, ``.pdf`` or ``.svg``).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from llmbrain.plotting import plot_layer_slices
    >>> maps = xr.DataArray(np.random.default_rng(0).normal(size=(4, 96)),
    ...                     dims=("layer", "neuron"))
    >>> fig = plot_layer_slices(maps, threshold=2.0)
    """
    from ..volumes import VolumeLayout

    if stat not in _STATS:
        raise ValueError(f"stat must be one of {list(_STATS)}; got {stat!r}.")
    values, all_layers, neurons, description = _as_layer_maps(data, component, layout, stat,
                                                              exclude_bos)
    if layers is not None:
        missing = [layer for layer in layers if layer not in all_layers]
        if missing:
            raise ValueError(f"layers {missing} are not in the data (it has {all_layers}).")
        rows = [all_layers.index(layer) for layer in layers]
        values, all_layers = values[rows], list(layers)
    if threshold is not None:
        values = np.where(above_threshold(values, threshold), values, np.nan)
    grid = VolumeLayout(tuple(all_layers), neurons)
    volume = grid.to_voxels(values.astype(np.float32)).astype(float)  # (nx, ny, n_layers)
    volume[~grid.mask] = np.nan
    finite = np.abs(values[np.isfinite(values)])
    signed = bool((values[np.isfinite(values)] < 0).any())
    if vmax is None:
        if not finite.size:
            vmax = 1.0
        elif description.startswith(tuple(_STATS.values())):  # activations: robust limit
            vmax = float(np.percentile(finite, 99))
        else:
            vmax = float(finite.max())
        vmax = vmax or 1.0
    norm = mpl.colors.Normalize(-vmax if signed else 0.0, vmax)
    colormap = mpl.colormaps[cmap or (DIVERGING_CMAP if signed else SEQUENTIAL_CMAP)]
    colormap = colormap.with_extremes(bad="#f2f2f2")
    n = len(all_layers)
    ncols = ncols or max(1, min(n, math.ceil(math.sqrt(n * 1.6))))
    nrows = math.ceil(n / ncols)
    nx, ny, _ = grid.shape
    panel = 1.55
    with plot_style():
        fig = new_figure((min(panel * ncols * max(nx / ny, 0.6) + 1.4, 17), panel * nrows + 0.9))
        axes = fig.subplots(nrows, ncols, squeeze=False)
        image = None
        for k, ax in enumerate(axes.flat):
            if k >= n:
                ax.set_visible(False)
                continue
            image = ax.imshow(volume[:, :, k].T, origin="lower", cmap=colormap, norm=norm,
                              interpolation="nearest", aspect="equal")
            ax.set_title(f"layer {all_layers[k]}", fontsize=8, pad=2)
            ax.set_xticks([0, nx - 1])
            ax.set_yticks([0, ny - 1])
            ax.tick_params(labelsize=6, length=2, pad=1)
            for spine in ax.spines.values():
                spine.set_visible(False)
        label_all_panels(axes)
        reduced = description.startswith(tuple(_STATS.values()))
        fig.colorbar(image, ax=axes, shrink=0.8, label=_STATS[stat] if reduced else "value",
                     extend="max" if finite.size and finite.max() > vmax else "neither")
        fig.supxlabel(f"voxel x (neuron // {ny})", fontsize=8)
        fig.supylabel(f"voxel y (neuron % {ny})", fontsize=8)
        heading = title or f"Layers as slices: {description or 'map'}"
        if threshold is not None:
            heading += f" (|value| > {threshold:g})"
        fig.suptitle(heading, fontsize=10)
    return finish(fig, output_file)
