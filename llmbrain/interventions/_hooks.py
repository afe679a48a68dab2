"""Ablate and amplify MLP neurons with forward pre-hooks, and draw matched random controls."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import torch
import xarray as xr
from torch import nn

from ..models.adapters import get_adapter
from ..models.neurons import neuron_indices, neuron_values

__all__ = ["ablate", "amplify", "matched_random"]


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


def _on_layer(values: np.ndarray, model, layer: int) -> torch.Tensor:
    """``values`` where the layer's neurons are computed, in their type, so that
    no forward pass copies them there (a layer offloaded by accelerate, whose
    weights wait on the meta device, has them on the CPU)."""
    weight = get_adapter(model).down_proj(model, layer).weight
    values = torch.from_numpy(values)
    if weight.is_meta:
        return values
    floating = values.is_floating_point() and weight.is_floating_point()
    return values.to(weight.device, weight.dtype if floating else None)


def _masks(model, index: dict[int, np.ndarray]) -> dict[int, torch.Tensor]:
    adapter = get_adapter(model)
    masks = {}
    for layer, idx in index.items():
        if idx.size == 0:
            continue
        mask = np.zeros(adapter.n_neurons(model, layer), dtype=bool)
        mask[idx] = True
        masks[layer] = _on_layer(mask, model, layer)
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
    means : xarray.DataArray, dict or xarray.Dataset, optional
        Mean input of every neuron of the ablated layers (required for
        ``mode="mean"``), e.g. calibration statistics from
        :func:`llmbrain.pruning.collect_calibration_stats`.

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
        vectors = neuron_values(means, model, list(masks), "means")
    transforms = {}
    for layer, mask in masks.items():
        if mode == "zero":
            def transform(x, mask=mask):
                return x.masked_fill(mask.to(x.device), 0.0)
        else:
            mean = _on_layer(vectors[layer], model, layer)

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
        offsets = neuron_values(add, model, list(masks), "add")
        constant = 0.0
    transforms = {}
    for layer, mask in masks.items():
        offset = None if offsets[layer] is None else _on_layer(offsets[layer], model, layer)

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
