"""Hook points: where in a model activations are read.

=============  ==============================================================
hook           what is recorded, per decoder layer
=============  ==============================================================
``mlp``        the MLP neurons: input of the down projection (default)
``up``         output of the up projection (gated MLPs) or of the first MLP
               projection before its activation function (GPT-2, OPT, ...)
``gate``       output of the gate projection (gated MLPs only)
``act``        output of the activation function
``residual``   the residual stream: the decoder layer's output hidden states
``attention``  per-head attention outputs: input of the attention output
               projection (heads × head dimension)
=============  ==============================================================
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..models.adapters import ArchitectureAdapter

__all__ = ["HOOK_POINTS", "MLP_HOOKS", "attach_hooks"]

HOOK_POINTS = ("mlp", "up", "gate", "act", "residual", "attention")
#: Hook points of the same width (the MLP's), which can be recorded together.
MLP_HOOKS = ("mlp", "up", "gate", "act")


def _first(x):
    return x[0] if isinstance(x, tuple) else x


def _hook_target(adapter: ArchitectureAdapter, model: nn.Module, layer: int, hook: str):
    """Return ``(module, pre, select)``: hook ``module`` (as a forward
    pre-hook when ``pre``) and read ``select(tensor)``."""
    identity = lambda x: x  # noqa: E731
    if hook == "mlp":
        return adapter.down_proj(model, layer), True, identity
    if hook in ("up", "gate"):
        if hook == "gate" and not adapter.gated:
            raise ValueError(f"hook='gate' needs a gated MLP; {adapter.name} has none. "
                             "Use hook='up' or 'act'.")
        projs = adapter.up_projs(model, layer)
        if adapter.fused_gate_up:
            half = 0 if hook == "gate" else 1
            return projs[0], False, lambda x: x.chunk(2, dim=-1)[half]
        index = 0 if (hook == "gate" or not adapter.gated) else 1
        return projs[index], False, identity
    if hook == "act":
        module = adapter.act_module(model, layer)
        if module is None:
            raise ValueError(f"{adapter.name} applies its activation function without a module; "
                             "hook='act' is not available. Use hook='mlp'.")
        return module, False, identity
    if hook == "residual":
        return adapter.decoder_layers(model)[layer], False, identity
    if hook == "attention":
        return adapter.attention_out_proj(model, layer), True, identity
    raise ValueError(f"Unknown hook {hook!r}; choose one of {', '.join(HOOK_POINTS)}.")


def attach_hooks(model: nn.Module, adapter: ArchitectureAdapter, layers, hook: str,
                 sink: Callable[[int, torch.Tensor], None]) -> list:
    """Call ``sink(position, tensor)`` with the activations of each layer.

    ``position`` is the index of the layer inside ``layers``; ``tensor`` has
    shape ``(batch, tokens, features)``. Returns the hook handles; remove them
    with ``handle.remove()``.
    """
    handles = []
    for position, layer in enumerate(layers):
        module, pre, select = _hook_target(adapter, model, layer, hook)
        if pre:
            def pre_hook(_module, args, position=position, select=select):
                sink(position, select(_first(args)))
            handles.append(module.register_forward_pre_hook(pre_hook))
        else:
            def post_hook(_module, _args, output, position=position, select=select):
                sink(position, select(_first(output)))
            handles.append(module.register_forward_hook(post_hook))
    return handles
