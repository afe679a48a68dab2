"""Structural pruning: rebuild MLP projections without the removed neurons.

:func:`prune_model` replaces, in each planned layer, the input projections
(rows of ``gate``/``up``/``c_fc``/``fc1``, both halves of Phi-3's fused
``gate_up_proj``, with their biases) and the output projection (columns of
``down_proj``/``c_proj``/``fc2``) by smaller modules of the same type, so the
parameter count really drops. Removing a neuron this way gives exactly the
logits of zero-ablating it; with bias compensation, exactly those of
mean-ablating it.

The new per-layer sizes are written to ``model.config``: the model's
intermediate size when every layer has the same width, and always the entry
``llmbrain_pruning = {"neurons_per_layer": [...], "down_bias_layers": [...]}``
that :func:`~llmbrain.pruning.load_pruned` uses to rebuild the shapes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers.pytorch_utils import Conv1D

from ..interventions import _layer_vectors
from ..models.adapters import ArchitectureAdapter, get_adapter
from .plan import PruningPlan

__all__ = ["prune_model", "resize_mlps"]

CONFIG_KEY = "llmbrain_pruning"


def _projection(like: nn.Module, n_in: int, n_out: int, bias: bool, conv1d: bool) -> nn.Module:
    """An uninitialised projection of ``like``'s type, device and dtype."""
    weight = like.weight
    with torch.device("meta"):
        module = Conv1D(n_out, n_in) if conv1d else nn.Linear(n_in, n_out, bias=bias)
    shape = (n_in, n_out) if conv1d else (n_out, n_in)
    module.weight = nn.Parameter(torch.empty(shape, dtype=weight.dtype, device=weight.device),
                                 requires_grad=weight.requires_grad)
    if bias:
        module.bias = nn.Parameter(torch.zeros(n_out, dtype=weight.dtype, device=weight.device),
                                   requires_grad=weight.requires_grad)
    else:
        module.bias = None
    return module


def _slice_up(module: nn.Module, keep: torch.Tensor, n: int, adapter: ArchitectureAdapter):
    rows = torch.cat([keep, keep + n]) if adapter.fused_gate_up else keep
    weight = module.weight
    n_in = weight.shape[0] if adapter.conv1d else weight.shape[1]
    new = _projection(module, n_in, rows.numel(), module.bias is not None, adapter.conv1d)
    with torch.no_grad():
        new.weight.copy_(weight[:, rows] if adapter.conv1d else weight[rows])
        if module.bias is not None:
            new.bias.copy_(module.bias[rows])
    return new


def _slice_down(module: nn.Module, keep: torch.Tensor, removed: torch.Tensor,
                mean: np.ndarray | None, adapter: ArchitectureAdapter):
    weight = module.weight
    n_out = weight.shape[1] if adapter.conv1d else weight.shape[0]
    has_bias = module.bias is not None or mean is not None
    new = _projection(module, keep.numel(), n_out, has_bias, adapter.conv1d)
    with torch.no_grad():
        new.weight.copy_(weight[keep] if adapter.conv1d else weight[:, keep])
        if has_bias:
            bias = torch.zeros(n_out, dtype=torch.float64, device=weight.device)
            if module.bias is not None:
                bias += module.bias.to(torch.float64)
            if mean is not None and removed.numel():
                columns = weight[removed].T if adapter.conv1d else weight[:, removed]
                values = torch.as_tensor(mean[removed.cpu().numpy()], dtype=torch.float64,
                                         device=weight.device)
                bias += columns.to(torch.float64) @ values
            new.bias.copy_(bias.to(weight.dtype))
    return new


def _record_config(model: nn.Module, adapter: ArchitectureAdapter, down_bias_layers) -> None:
    config = model.config
    sizes = adapter.neurons_per_layer(model)
    info = dict(getattr(config, CONFIG_KEY, None) or {})
    info["neurons_per_layer"] = sizes
    biased = sorted(set(info.get("down_bias_layers", [])) | set(down_bias_layers))
    info["down_bias_layers"] = biased
    setattr(config, CONFIG_KEY, info)
    if len(set(sizes)) == 1:
        setattr(config, adapter.width_attr, sizes[0])


def prune_model(model: nn.Module, plan: PruningPlan, bias_compensation=None, *,
                progress: bool = False) -> nn.Module:
    """Remove the neurons a plan drops, in place, shrinking the weights.

    Parameters
    ----------
    model : transformers.PreTrainedModel
    plan : PruningPlan
        Checked against ``model`` before any weight changes.
    bias_compensation : CalibrationStats, xarray.DataArray or dict, optional
        Mean input of every neuron (e.g. :class:`CalibrationStats` of a
        calibration corpus). When given, each removed neuron's mean
        contribution ``W_down[:, removed] @ mean[removed]`` is added to the
        output projection's bias (created if the model has none), as in FLAP.
    progress : bool, default=False
        Show a tqdm bar over layers.

    Returns
    -------
    model
        The same object, pruned.

    Raises
    ------
    ValueError
        If the plan or the means do not fit the model; the model is then
        unchanged.
    """
    if not isinstance(plan, PruningPlan):
        raise TypeError(f"plan must be a PruningPlan (see make_plan), not {type(plan).__name__}.")
    adapter = get_adapter(model)
    plan.validate(model)
    means = None
    if bias_compensation is not None:
        means = _layer_vectors(bias_compensation, model, plan.layers, "bias_compensation")
    sizes = adapter.neurons_per_layer(model)
    info = getattr(model.config, CONFIG_KEY, None)
    if not info:  # remember the widths before the first pruning
        setattr(model.config, CONFIG_KEY, {"original_neurons_per_layer": sizes})
    biased = []
    for layer in tqdm(plan.layers, desc="pruning", unit="layer", disable=not progress):
        n = sizes[layer]
        keep_np = plan.keep[layer]
        mean = None if means is None else means[layer]
        if keep_np.size == n:
            continue
        device = adapter.down_weight(model, layer).device
        keep = torch.as_tensor(keep_np, dtype=torch.long, device=device)
        removed = torch.as_tensor(plan.removed(layer), dtype=torch.long, device=device)
        mlp = adapter.mlp_module(model, layer)
        for name in adapter.up:
            setattr(mlp, name, _slice_up(getattr(mlp, name), keep, n, adapter))
        down = getattr(mlp, adapter.down)
        if mean is not None and down.bias is None:
            biased.append(layer)
        setattr(mlp, adapter.down, _slice_down(down, keep, removed, mean, adapter))
    _record_config(model, adapter, biased)
    return model


def resize_mlps(model: nn.Module, neurons_per_layer, down_bias_layers=()) -> nn.Module:
    """Give every MLP the recorded widths (uninitialised weights).

    Used to rebuild a pruned model's structure before loading its weights.
    """
    adapter = get_adapter(model)
    if len(neurons_per_layer) != adapter.n_layers(model):
        raise ValueError(f"The pruning record has {len(neurons_per_layer)} layers, the model "
                         f"{adapter.n_layers(model)}.")
    for layer, n in enumerate(neurons_per_layer):
        n = int(n)
        mlp = adapter.mlp_module(model, layer)
        add_bias = layer in set(down_bias_layers)
        if adapter.n_neurons(model, layer) == n and not add_bias:
            continue
        rows = 2 * n if adapter.fused_gate_up else n
        for name in adapter.up:
            old = getattr(mlp, name)
            n_in = old.weight.shape[0] if adapter.conv1d else old.weight.shape[1]
            setattr(mlp, name, _projection(old, n_in, rows, old.bias is not None, adapter.conv1d))
        old = getattr(mlp, adapter.down)
        n_out = old.weight.shape[1] if adapter.conv1d else old.weight.shape[0]
        setattr(mlp, adapter.down,
                _projection(old, n, n_out, old.bias is not None or add_bias, adapter.conv1d))
    return model
