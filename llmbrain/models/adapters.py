"""Architecture adapters: where the neurons of a causal language model live.

Every stage of llmbrain (recording, interventions, pruning) reaches a model's
MLP neurons only through an :class:`ArchitectureAdapter`. An adapter names,
for one family of Hugging Face models, the list of decoder blocks and, inside
each block, the modules that make and consume the MLP neurons:

* *input projections* produce one row per neuron (``gate_proj`` and
  ``up_proj`` in Llama-style gated MLPs, ``c_fc`` in GPT-2, ``fc1`` in OPT);
* the *output projection* consumes one column per neuron (``down_proj``,
  ``c_proj``, ``fc2``). The input of this module is what llmbrain calls *the
  neurons* of a layer.

A new architecture is one call to :func:`register_adapter`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = [
    "ArchitectureAdapter",
    "get_adapter",
    "register_adapter",
    "supported_architectures",
]


def _get_path(root: nn.Module, path: str) -> nn.Module:
    module = root
    for part in path.split("."):
        module = getattr(module, part)
    return module


@dataclass(frozen=True)
class ArchitectureAdapter:
    """Names the MLP of one architecture family.

    Parameters
    ----------
    name : str
        Human-readable name of the family, e.g. ``"llama"``.
    layers : str
        Dotted path from the ``*ForCausalLM`` model to the ``ModuleList`` of
        decoder blocks, e.g. ``"model.layers"``.
    mlp : str
        Dotted path from a decoder block to the module that holds the MLP's
        projections (``""`` when the projections sit on the block itself, as
        in OPT).
    up : tuple of str
        Names (inside ``mlp``) of the input projections, whose output rows are
        neurons. For Phi-3's fused ``gate_up_proj`` this is the one fused module
        and ``fused_gate_up`` is True.
    down : str
        Name (inside ``mlp``) of the output projection whose input columns are
        neurons.
    act : str or None
        Name (inside ``mlp``) of the activation-function module, if the model
        applies it through a module.
    gated : bool
        Whether the MLP is gated: ``down(act(gate(x)) * up(x))``. The first
        entry of ``up`` is then the gate.
    conv1d : bool
        Whether projections are GPT-2 ``Conv1D`` modules (weight stored as
        ``(in_features, out_features)``).
    fused_gate_up : bool
        Whether gate and up projections are one module whose output is
        ``[gate, up]`` concatenated (Phi-3).
    attn_out : str
        Dotted path from a decoder block to the attention output projection;
        its input holds the per-head attention outputs.
    model_types : tuple of str
        ``config.model_type`` values this adapter serves.
    """

    name: str
    layers: str
    mlp: str
    up: tuple[str, ...]
    down: str
    act: str | None
    gated: bool = False
    conv1d: bool = False
    fused_gate_up: bool = False
    attn_out: str = "self_attn.o_proj"
    model_types: tuple[str, ...] = field(default_factory=tuple)

    # -- navigation -------------------------------------------------------
    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        """Return the ``ModuleList`` of decoder blocks of ``model``."""
        return _get_path(model, self.layers)

    def n_layers(self, model: nn.Module) -> int:
        """Number of decoder blocks."""
        return len(self.decoder_layers(model))

    def mlp_module(self, model: nn.Module, layer: int) -> nn.Module:
        """Module holding the MLP projections of decoder block ``layer``."""
        block = self.decoder_layers(model)[layer]
        return _get_path(block, self.mlp) if self.mlp else block

    def down_proj(self, model: nn.Module, layer: int) -> nn.Module:
        """Output projection of layer ``layer``; its input is the neurons."""
        return getattr(self.mlp_module(model, layer), self.down)

    def up_projs(self, model: nn.Module, layer: int) -> list[nn.Module]:
        """Input projections of layer ``layer`` (gate first when gated)."""
        mlp = self.mlp_module(model, layer)
        return [getattr(mlp, name) for name in self.up]

    def act_module(self, model: nn.Module, layer: int) -> nn.Module | None:
        """Activation-function module of layer ``layer``, if there is one."""
        if self.act is None:
            return None
        return getattr(self.mlp_module(model, layer), self.act, None)

    def attention_out_proj(self, model: nn.Module, layer: int) -> nn.Module:
        """Attention output projection of layer ``layer``."""
        return _get_path(self.decoder_layers(model)[layer], self.attn_out)

    def n_neurons(self, model: nn.Module, layer: int) -> int:
        """Number of MLP neurons in layer ``layer`` (it may differ per layer
        once a model has been pruned)."""
        down = self.down_proj(model, layer)
        weight = down.weight
        return int(weight.shape[0] if self.conv1d else weight.shape[1])

    def neurons_per_layer(self, model: nn.Module) -> list[int]:
        """Number of MLP neurons of every layer."""
        return [self.n_neurons(model, i) for i in range(self.n_layers(model))]

    # -- weights seen as (neuron, hidden) matrices --------------------------
    def down_weight(self, model: nn.Module, layer: int) -> torch.Tensor:
        """Output-projection weight as ``(hidden, neuron)`` (a view)."""
        weight = self.down_proj(model, layer).weight
        return weight.T if self.conv1d else weight

    def up_weights(self, model: nn.Module, layer: int) -> list[torch.Tensor]:
        """Input-projection weights as ``(neuron, hidden)`` views, gate
        first; a fused gate/up projection is split into its two halves."""
        weights = []
        for module in self.up_projs(model, layer):
            weight = module.weight.T if self.conv1d else module.weight
            if self.fused_gate_up:
                weights.extend(weight.chunk(2, dim=0))
            else:
                weights.append(weight)
        return weights


_REGISTRY: dict[str, ArchitectureAdapter] = {}


def register_adapter(adapter: ArchitectureAdapter) -> ArchitectureAdapter:
    """Register ``adapter`` for every ``model_type`` it names.

    Examples
    --------
    >>> from llmbrain.models import ArchitectureAdapter, register_adapter
    >>> register_adapter(ArchitectureAdapter(  # doctest: +SKIP
    ...     name="mymodel", model_types=("mymodel",), layers="model.layers",
    ...     mlp="mlp", up=("w1", "w3"), down="w2", act="act", gated=True))
    """
    if not adapter.model_types:
        raise ValueError(f"Adapter {adapter.name!r} names no model_types to serve.")
    for model_type in adapter.model_types:
        _REGISTRY[model_type] = adapter
    return adapter


def supported_architectures() -> list[str]:
    """The ``config.model_type`` values that have an adapter."""
    return sorted(_REGISTRY)


def get_adapter(model_or_config) -> ArchitectureAdapter:
    """Return the adapter for a model (or its config).

    Raises
    ------
    ValueError
        If the architecture has no registered adapter; the message lists the
        supported ones and says how to register a new one.
    """
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type in _REGISTRY:
        return _REGISTRY[model_type]
    raise ValueError(
        f"llmbrain has no adapter for model_type={model_type!r}. Supported: "
        f"{', '.join(supported_architectures())}. To add one, describe where its "
        "MLP lives with llmbrain.models.register_adapter(ArchitectureAdapter("
        "name=..., model_types=(...,), layers='model.layers', mlp='mlp', "
        "up=('gate_proj', 'up_proj'), down='down_proj', act='act_fn', gated=True))."
    )


_LLAMA_STYLE = dict(
    layers="model.layers", mlp="mlp", up=("gate_proj", "up_proj"), down="down_proj",
    act="act_fn", gated=True,
)

register_adapter(ArchitectureAdapter(
    name="llama", model_types=(
        "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text",
        "granite", "olmo", "olmo2", "smollm3",
    ), **_LLAMA_STYLE,
))
register_adapter(ArchitectureAdapter(
    name="phi3", model_types=("phi3",), layers="model.layers", mlp="mlp",
    up=("gate_up_proj",), down="down_proj", act="activation_fn", gated=True,
    fused_gate_up=True,
))
register_adapter(ArchitectureAdapter(
    name="gpt2", model_types=("gpt2",), layers="transformer.h", mlp="mlp",
    up=("c_fc",), down="c_proj", act="act", conv1d=True, attn_out="attn.c_proj",
))
register_adapter(ArchitectureAdapter(
    name="gpt_neox", model_types=("gpt_neox",), layers="gpt_neox.layers", mlp="mlp",
    up=("dense_h_to_4h",), down="dense_4h_to_h", act="act", attn_out="attention.dense",
))
register_adapter(ArchitectureAdapter(
    name="opt", model_types=("opt",), layers="model.decoder.layers", mlp="",
    up=("fc1",), down="fc2", act="activation_fn", attn_out="self_attn.out_proj",
))
register_adapter(ArchitectureAdapter(
    name="phi", model_types=("phi",), layers="model.layers", mlp="mlp",
    up=("fc1",), down="fc2", act="activation_fn", attn_out="self_attn.dense",
))
