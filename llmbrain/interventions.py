"""Interventions on MLP neurons: ablate, amplify, and matched random controls.

The *neurons* of a layer are the input of its MLP output projection
(``down_proj``, ``c_proj``, ``fc2``...). Every intervention here is a forward
pre-hook on that projection, registered by a context manager and removed on
exit, also when the body raises.

A set of neurons is given either as

* a boolean :class:`xarray.DataArray` with dims ``("layer", "neuron")``
  (coords ``layer`` = model layer indices; the ``neuron`` dim must span all
  neurons of those layers), or
* a dict ``{layer: indices}`` where ``indices`` is an array of neuron
  indices or a boolean array as long as the layer.

Examples
--------
>>> from llmbrain.interventions import ablate, matched_random
>>> with ablate(model, key_neurons):  # doctest: +SKIP
...     logits = model(input_ids).logits
>>> with ablate(model, matched_random(key_neurons, seed=0)):  # doctest: +SKIP
...     control = model(input_ids).logits
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import torch
import xarray as xr
from torch import nn

from .models.adapters import get_adapter

__all__ = ["ablate", "amplify", "matched_random", "neuron_indices"]


def _indices_from_bool(values: np.ndarray, n: int | None, layer: int) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"The neuron mask of layer {layer} has shape {values.shape}; "
                         "give one boolean value per neuron (a 1-D array).")
    if n is not None and values.shape[0] != n:
        raise ValueError(f"The neuron mask of layer {layer} has {values.shape[0]} entries but "
                         f"the layer has {n} neurons: the mask was made for another model.")
    return np.flatnonzero(values).astype(np.int64)


def neuron_indices(neurons, model: nn.Module | None = None) -> dict[int, np.ndarray]:
    """Turn a set of neurons into ``{layer: sorted neuron indices}``.

    Parameters
    ----------
    neurons : xarray.DataArray or dict
        Boolean DataArray with dims ``("layer", "neuron")``, or a dict from
        layer index to neuron indices (or to a boolean array per neuron).
    model : transformers.PreTrainedModel, optional
        When given, the neurons are checked against it: every layer must
        exist and every index must be below the layer's neuron count.

    Returns
    -------
    dict of int to numpy.ndarray
        Sorted, unique int64 indices per layer (layers with no neuron are
        kept, with an empty array).

    Raises
    ------
    ValueError
        If the mask is malformed or does not fit ``model``.
    """
    sizes = None
    if model is not None:
        sizes = get_adapter(model).neurons_per_layer(model)
    result: dict[int, np.ndarray] = {}
    if isinstance(neurons, xr.DataArray):
        if set(neurons.dims) != {"layer", "neuron"}:
            raise ValueError(f"A neuron mask DataArray needs dims ('layer', 'neuron'); got "
                             f"{neurons.dims}. Reduce extra dims first, e.g. mask.any('run').")
        if neurons.dtype != bool:
            raise ValueError(f"A neuron mask DataArray must be boolean, not {neurons.dtype}; "
                             "use e.g. (abs(z) > 3.6) to make one.")
        neurons = neurons.transpose("layer", "neuron")
        if "neuron" in neurons.coords:
            ids = np.asarray(neurons["neuron"].values)
            if not np.array_equal(ids, np.arange(ids.size)):
                raise ValueError("The 'neuron' coordinate of the mask must be 0, 1, ..., n-1 "
                                 "(all neurons of each layer, in order).")
        layers = (neurons["layer"].values if "layer" in neurons.coords
                  else np.arange(neurons.sizes["layer"]))
        items = [(int(layer), neurons.values[i]) for i, layer in enumerate(layers)]
    elif isinstance(neurons, Mapping):
        items = [(int(layer), value) for layer, value in neurons.items()]
    else:
        raise TypeError(f"Neurons must be a boolean xarray.DataArray (layer, neuron) or a dict "
                        f"layer -> indices, not {type(neurons).__name__}.")
    for layer, value in items:
        if sizes is not None and not 0 <= layer < len(sizes):
            raise ValueError(f"The neurons name layer {layer}, but the model has layers "
                             f"0..{len(sizes) - 1}: the mask was made for another model.")
        n = sizes[layer] if sizes is not None else None
        value = np.asarray(value)
        if value.dtype == bool:
            idx = _indices_from_bool(value, n, layer)
        elif value.size == 0 or np.issubdtype(value.dtype, np.integer):
            idx = np.unique(value.astype(np.int64).ravel())
        else:
            raise ValueError(f"The neurons of layer {layer} must be integer indices or a boolean "
                             f"mask, not {value.dtype} values.")
        if idx.size and idx[0] < 0:
            raise ValueError(f"Layer {layer} has a negative neuron index ({idx[0]}).")
        if n is not None and idx.size and idx[-1] >= n:
            raise ValueError(f"Layer {layer} has {n} neurons but the neurons include index "
                             f"{idx[-1]}: the mask was made for another model.")
        result[layer] = idx
    return result


def _layer_vectors(values, model: nn.Module, layers, what: str) -> dict[int, np.ndarray]:
    """Per-layer float vectors (one value per neuron) from a DataArray, dict,
    or an object with a ``mean`` mapping (calibration statistics)."""
    sizes = get_adapter(model).neurons_per_layer(model)
    if isinstance(values, xr.Dataset) and "mean" in values:  # calibration statistics
        widths = values["n_neurons"] if "n_neurons" in values.coords else None
        values = {int(layer): values["mean"].sel(layer=layer).values[
            :(int(widths.sel(layer=layer)) if widths is not None else None)]
            for layer in values["layer"].values}
    out = {}
    for layer in layers:
        if isinstance(values, xr.DataArray):
            if "layer" not in values.dims or "neuron" not in values.dims:
                raise ValueError(f"{what} DataArray needs dims ('layer', 'neuron').")
            if layer not in values["layer"].values:
                raise ValueError(f"{what} has no values for layer {layer}.")
            vec = np.asarray(values.sel(layer=layer).values, dtype=np.float64)
        elif isinstance(values, Mapping):
            if layer not in values:
                raise ValueError(f"{what} has no values for layer {layer}.")
            vec = np.asarray(values[layer], dtype=np.float64)
        else:
            raise TypeError(f"{what} must be a DataArray (layer, neuron), a dict layer -> array, "
                            f"or calibration statistics, not {type(values).__name__}.")
        if vec.shape != (sizes[layer],):
            raise ValueError(f"{what} for layer {layer} has shape {vec.shape}; the layer has "
                             f"{sizes[layer]} neurons.")
        out[layer] = vec
    return out


@contextlib.contextmanager
def _pre_hooks(model: nn.Module, transforms: dict[int, Callable]) -> Iterator[nn.Module]:
    adapter = get_adapter(model)
    handles = []
    try:
        for layer, transform in transforms.items():
            def hook(module, args, transform=transform):
                return (transform(args[0]),) + tuple(args[1:])
            handles.append(adapter.down_proj(model, layer).register_forward_pre_hook(hook))
        yield model
    finally:
        for handle in handles:
            handle.remove()


def _masks(model, index: dict[int, np.ndarray]) -> dict[int, torch.Tensor]:
    adapter = get_adapter(model)
    masks = {}
    for layer, idx in index.items():
        if idx.size == 0:
            continue
        mask = torch.zeros(adapter.n_neurons(model, layer), dtype=torch.bool)
        mask[torch.from_numpy(idx)] = True
        masks[layer] = mask
    return masks


def ablate(model: nn.Module, neurons, mode: str = "zero", means=None):
    """Context manager that silences MLP neurons.

    Parameters
    ----------
    model : transformers.PreTrainedModel
    neurons : xarray.DataArray or dict
        The neurons to ablate (see :func:`neuron_indices`).
    mode : {"zero", "mean"}, default="zero"
        Set the neurons to 0, or to their mean activation ``means``.
    means : xarray.DataArray, dict or CalibrationStats, optional
        Mean input of every neuron of the ablated layers (required for
        ``mode="mean"``), e.g. :class:`llmbrain.pruning.CalibrationStats`.

    Returns
    -------
    context manager
        Yields ``model``; the hooks are removed on exit.

    Raises
    ------
    ValueError
        If the neurons or means do not fit the model; nothing is hooked then.
    """
    if mode not in ("zero", "mean"):
        raise ValueError(f"mode must be 'zero' or 'mean', not {mode!r}.")
    index = neuron_indices(neurons, model)
    masks = _masks(model, index)
    if mode == "mean":
        if means is None:
            raise ValueError("mode='mean' needs means: the mean input of each neuron, e.g. from "
                             "llmbrain.pruning.collect_calibration_stats.")
        vectors = _layer_vectors(means, model, list(masks), "means")
    transforms = {}
    for layer, mask in masks.items():
        if mode == "zero":
            def transform(x, mask=mask):
                return x.masked_fill(mask.to(x.device), 0.0)
        else:
            mean = torch.from_numpy(vectors[layer])

            def transform(x, mask=mask, mean=mean):
                return torch.where(mask.to(x.device), mean.to(x.device, x.dtype), x)
        transforms[layer] = transform
    return _pre_hooks(model, transforms)


def amplify(model: nn.Module, neurons, scale: float | None = None, add=None):
    """Context manager that strengthens (or weakens) MLP neurons.

    Each selected neuron's value ``x`` becomes ``scale * x + add``.

    Parameters
    ----------
    model : transformers.PreTrainedModel
    neurons : xarray.DataArray or dict
        The neurons to change (see :func:`neuron_indices`).
    scale : float, optional
        Multiplier; 2.0 when neither ``scale`` nor ``add`` is given, else 1.0.
    add : float, xarray.DataArray or dict, optional
        Offset added after scaling: one number, or one value per neuron.

    Returns
    -------
    context manager
        Yields ``model``; the hooks are removed on exit.
    """
    if scale is None:
        scale = 2.0 if add is None else 1.0
    scale = float(scale)
    index = neuron_indices(neurons, model)
    masks = _masks(model, index)
    if add is None or np.isscalar(add):
        offsets = {layer: None for layer in masks}
        constant = 0.0 if add is None else float(add)
    else:
        offsets = _layer_vectors(add, model, list(masks), "add")
        constant = 0.0
    transforms = {}
    for layer, mask in masks.items():
        offset = None if offsets[layer] is None else torch.from_numpy(offsets[layer])

        def transform(x, mask=mask, offset=offset):
            new = x * scale + (constant if offset is None else offset.to(x.device, x.dtype))
            return torch.where(mask.to(x.device), new, x)
        transforms[layer] = transform
    return _pre_hooks(model, transforms)


def matched_random(neurons, seed: int | None = 0, n_neurons=None, exclude: bool = False):
    """Random neurons with the same count in every layer as ``neurons``.

    The control set of an ablation: it removes as many neurons from each
    layer as the original set, chosen uniformly at random.

    Parameters
    ----------
    neurons : xarray.DataArray or dict
        Boolean mask (layer, neuron) or dict layer -> indices.
    seed : int or None, default=0
        Seed of the random generator.
    n_neurons : int or dict, optional
        Neuron count of each layer; needed when ``neurons`` is a dict (a
        DataArray carries it).
    exclude : bool, default=False
        Draw only among neurons that are not in ``neurons``.

    Returns
    -------
    xarray.DataArray or dict
        Same type (and coords) as ``neurons``.
    """
    rng = np.random.default_rng(seed)
    index = neuron_indices(neurons)
    if isinstance(neurons, xr.DataArray):
        sizes = {layer: neurons.sizes["neuron"] for layer in index}
    elif n_neurons is None:
        raise ValueError("matched_random needs n_neurons (an int or dict layer -> count) when "
                         "the neurons are a dict of indices.")
    elif isinstance(n_neurons, Mapping):
        sizes = {layer: int(n_neurons[layer]) for layer in index}
    else:
        sizes = {layer: int(n_neurons) for layer in index}
    drawn = {}
    for layer, idx in index.items():
        pool = np.arange(sizes[layer])
        if exclude:
            pool = np.setdiff1d(pool, idx)
        if idx.size > pool.size:
            raise ValueError(f"Layer {layer} has {idx.size} selected neurons but only {pool.size}"
                             " to draw from; use exclude=False.")
        drawn[layer] = np.sort(rng.choice(pool, size=idx.size, replace=False)).astype(np.int64)
    if isinstance(neurons, xr.DataArray):
        mask = np.zeros((neurons.sizes["layer"], neurons.sizes["neuron"]), dtype=bool)
        for i, layer in enumerate(index):
            mask[i, drawn[layer]] = True
        out = neurons.transpose("layer", "neuron").copy(data=mask)
        out.attrs = {**neurons.attrs, "matched_random_seed": -1 if seed is None else seed}
        return out
    return drawn
