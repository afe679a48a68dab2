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
that :func:`~llmbrain.models.pruned.load_pruned` uses to rebuild the shapes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..models.adapters import ArchitectureAdapter, get_adapter
from ..models.layerwise import LayerwiseRunner
from ..models.neurons import neuron_values
from ..models.pruned import CONFIG_KEY, new_projection
from .plan import PruningPlan

__all__ = ["prune_layer", "prune_model", "record_config", "remember_widths"]

def _slice_up(module: nn.Module, keep: torch.Tensor, n: int, adapter: ArchitectureAdapter):
    rows = torch.cat([keep, keep + n]) if adapter.fused_gate_up else keep
    weight = module.weight
    n_in = weight.shape[0] if adapter.conv1d else weight.shape[1]
    new = new_projection(module, n_in, rows.numel(), module.bias is not None, adapter.conv1d)
    with torch.no_grad():
        new.weight.copy_(weight[:, rows] if adapter.conv1d else weight[rows])
        if module.bias is not None:
            new.bias.copy_(module.bias[rows])
    return new


def _slice_down(module: nn.Module, keep: torch.Tensor, adapter: ArchitectureAdapter,
                weight: torch.Tensor | None = None, bias: torch.Tensor | None = None):
    """The output projection restricted to the kept neurons.

    ``weight`` (hidden, kept), when given, replaces the kept columns (a
    compensated weight); ``bias`` (hidden,) is added to the module's bias (one
    is created when the module has none).
    """
    old = module.weight
    n_out = old.shape[1] if adapter.conv1d else old.shape[0]
    has_bias = module.bias is not None or bias is not None
    new = new_projection(module, keep.numel(), n_out, has_bias, adapter.conv1d)
    with torch.no_grad():
        if weight is None:
            weight = old[keep].T if adapter.conv1d else old[:, keep]
        new.weight.copy_(weight.T if adapter.conv1d else weight)
        if has_bias:
            total = torch.zeros(n_out, dtype=torch.float64, device=old.device)
            if module.bias is not None:
                total += module.bias.to(torch.float64)
            if bias is not None:
                total += bias.to(total.device, torch.float64)
            new.bias.copy_(total.to(old.dtype))
    return new


def prune_layer(model: nn.Module, layer: int, keep, *, weight: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> bool:
    """Remove the neurons of one MLP layer that ``keep`` leaves out, in place.

    Parameters
    ----------
    model : transformers.PreTrainedModel
    layer : int
    keep : array-like of int
        Sorted indices of the neurons kept.
    weight : torch.Tensor of shape (hidden, n_kept), optional
        New output-projection columns of the kept neurons (compensation that
        rewrites them); default: the current columns.
    bias : torch.Tensor of shape (hidden,), optional
        Added to the output projection's bias (created if absent).

    Returns
    -------
    bool
        Whether a bias was created on an output projection that had none.
    """
    adapter = get_adapter(model)
    n = adapter.n_neurons(model, layer)
    device = adapter.down_weight(model, layer).device
    keep = torch.as_tensor(np.asarray(keep), dtype=torch.long, device=device)
    mlp = adapter.mlp_module(model, layer)
    for name in adapter.up:
        setattr(mlp, name, _slice_up(getattr(mlp, name), keep, n, adapter))
    down = getattr(mlp, adapter.down)
    created = bias is not None and down.bias is None
    setattr(mlp, adapter.down, _slice_down(down, keep, adapter, weight, bias))
    return created


def record_config(model: nn.Module, down_bias_layers=()) -> None:
    """Write the current MLP widths (and the layers given a down bias) to the config."""
    config = model.config
    adapter = get_adapter(model)
    sizes = adapter.neurons_per_layer(model)
    info = dict(getattr(config, CONFIG_KEY, None) or {})
    info["neurons_per_layer"] = sizes
    biased = sorted(set(info.get("down_bias_layers", [])) | set(down_bias_layers))
    info["down_bias_layers"] = biased
    setattr(config, CONFIG_KEY, info)
    if len(set(sizes)) == 1:
        setattr(config, adapter.width_attr, sizes[0])


def prune_model(model: nn.Module, plan: PruningPlan, bias_compensation=None, *,
                calibration=None, batch_size: int = 8, progress: bool = False) -> nn.Module:
    """Remove the neurons a plan drops, in place, shrinking the weights.

    Parameters
    ----------
    model : transformers.PreTrainedModel
    plan : PruningPlan
        Checked against ``model`` before any weight changes.
    bias_compensation : None, "progressive", xarray.Dataset, xarray.DataArray or dict
        Add each removed neuron's mean contribution ``W_down[:, removed] @
        mean[removed]`` to the output projection's bias (created if the model
        has none), as FLAP does. The means are

        * given (statistics of the dense model from
          :func:`~llmbrain.pruning.collect_calibration_stats`, or a
          ``(layer, neuron)`` DataArray or ``{layer: means}`` dict): every layer is
          compensated with the dense model's means;
        * ``"progressive"``: measured on the model as it is being pruned, over
          the ``calibration`` tokens: layer ``l``'s means are taken after
          layers ``0..l-1`` were pruned and compensated, so each bias corrects
          what the layer really receives in the pruned model (the published
          network-pruning recipe takes its means on the pruned model too).
    calibration : TokenWindows or 2-D integer array, optional
        Calibration windows of equal length for ``bias_compensation=
        "progressive"`` (e.g. :func:`llmbrain.corpus.tokenize_windows`).
    batch_size : int, default=8
        Windows per layer call with ``"progressive"``.
    progress : bool, default=False
        Show a tqdm bar over layers.

    Returns
    -------
    model
        The same object, pruned.

    Raises
    ------
    ValueError
        If the plan, the means or the calibration windows do not fit the
        model; the model is then unchanged.
    """
    if not isinstance(plan, PruningPlan):
        raise TypeError(f"plan must be a PruningPlan (see make_plan), not {type(plan).__name__}.")
    adapter = get_adapter(model)
    plan.validate(model)
    progressive = isinstance(bias_compensation, str)
    if progressive and bias_compensation != "progressive":
        raise ValueError(f"bias_compensation={bias_compensation!r} is not understood: give "
                         "'progressive' or the means (e.g. calibration statistics).")
    means, runner = None, None
    if progressive:
        runner = _calibration_runner(model, calibration, batch_size)
    elif bias_compensation is not None:
        means = neuron_values(bias_compensation, model, plan.layers, "bias_compensation")
    remember_widths(model)
    pruned = [layer for layer in plan.layers if plan.keep[layer].size < plan.n_neurons[layer]]
    last = max(pruned, default=-1)
    biased = []
    bar = tqdm(total=len(pruned), desc="pruning", unit="layer", disable=not progress)
    for layer in range(last + 1):
        if layer in pruned:
            removed = plan.removed(layer)
            down = adapter.down_weight(model, layer).detach()
            mean = None
            if runner is not None:
                mean = _down_input_mean(model, runner, layer)[removed]
            elif means is not None:
                mean = torch.as_tensor(means[layer][removed], dtype=torch.float64)
            bias = None
            if mean is not None:
                bias = down[:, removed].to(torch.float64) @ mean.to(down.device, torch.float64)
            if prune_layer(model, layer, plan.keep[layer], bias=bias):
                biased.append(layer)
            bar.update()
        if runner is not None and layer < last:
            runner.run(layer)
    bar.close()
    record_config(model, biased)
    return model


def _calibration_runner(model: nn.Module, calibration, batch_size: int) -> LayerwiseRunner:
    ids = getattr(calibration, "input_ids", calibration)  # TokenWindows or an array
    if ids is None:
        raise ValueError("bias_compensation='progressive' measures the means on calibration "
                         "text: pass calibration=tokenize_windows(texts, tokenizer, 256).")
    ids = torch.as_tensor(np.asarray(ids))
    if ids.ndim != 2 or ids.dtype.is_floating_point:
        raise ValueError("calibration must be windows of token ids of equal length (a 2-D "
                         f"integer array or TokenWindows), not an array of shape {tuple(ids.shape)}.")
    return LayerwiseRunner(model, ids, batch_size=batch_size)


def _down_input_mean(model: nn.Module, runner: LayerwiseRunner, layer: int) -> torch.Tensor:
    """Mean input of ``layer``'s output projection over the runner's tokens (float64)."""
    total = {}

    def hook(_module, args):
        x = args[0].reshape(-1, args[0].shape[-1]).to(torch.float64)
        total["sum"] = x.sum(0) + total.get("sum", 0)
        total["n"] = x.shape[0] + total.get("n", 0)

    handle = get_adapter(model).down_proj(model, layer).register_forward_pre_hook(hook)
    try:
        runner.run(layer, update=False)
    finally:
        handle.remove()
    return (total["sum"] / total["n"]).cpu()


def remember_widths(model: nn.Module) -> None:
    """Record the MLP widths before the first pruning in ``model.config``."""
    if not getattr(model.config, CONFIG_KEY, None):
        setattr(model.config, CONFIG_KEY,
                {"original_neurons_per_layer": get_adapter(model).neurons_per_layer(model)})
