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

A new architecture is one call to :func:`register_adapter` (from the command
line: ``--adapter FILE.json``, read by :func:`load_adapter`). An adapter is
checked when it is registered, and against the model the first time
:func:`get_adapter` serves it, so a wrong name is reported before any work.
Mixture-of-experts MLPs are refused: llmbrain handles one MLP per layer.
"""

from __future__ import annotations

import dataclasses
import json
import re
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "ArchitectureAdapter",
    "get_adapter",
    "load_adapter",
    "register_adapter",
    "supported_architectures",
]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Config attributes that count the experts of a mixture-of-experts MLP.
_EXPERT_ATTRS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")


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
    width_attr : str
        Config attribute holding the MLP width (``intermediate_size``;
        ``n_inner`` in GPT-2, ``ffn_dim`` in OPT); pruning writes the new
        width there.
    bias_attr : str or None
        Config attribute that gives every MLP projection a bias (``mlp_bias``
        in Llama and Granite), or None if there is none. With it, a model
        pruned with bias compensation saves as a checkpoint that plain
        transformers loads exactly.
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
    width_attr: str = "intermediate_size"
    bias_attr: str | None = None

    # -- checks -----------------------------------------------------------
    def check(self) -> None:
        """Check the fields that need no model.

        Raises
        ------
        ValueError
            Naming the field that is wrong and what it should be.
        """
        def fail(message):
            raise ValueError(f"Adapter {self.name!r}: {message}")

        if not isinstance(self.name, str) or not self.name:
            raise ValueError("An adapter needs a name (a non-empty string).")
        if isinstance(self.model_types, str) or not self.model_types or not all(
                isinstance(t, str) and t for t in self.model_types):
            fail(f"model_types must be a tuple of config.model_type strings, e.g. "
                 f"('{self.model_types if isinstance(self.model_types, str) else 'llama'}',); "
                 f"got {self.model_types!r}.")
        for what, path, empty_ok in (("layers", self.layers, False), ("mlp", self.mlp, True),
                                     ("attn_out", self.attn_out, False)):
            if not isinstance(path, str) or (path == "" and not empty_ok) or (
                    path and not all(_NAME.match(p) or p.isdigit() for p in path.split("."))):
                fail(f"{what} must be a dotted path of attribute names such as 'model.layers'; "
                     f"got {path!r}.")
        if isinstance(self.up, str) or not self.up:
            fail(f"up must be a tuple of module names, e.g. ('gate_proj', 'up_proj'); got "
                 f"{self.up!r}.")
        for what, name in [("up", n) for n in self.up] + [("down", self.down),
                                                          ("width_attr", self.width_attr)] + \
                [(w, n) for w, n in (("act", self.act), ("bias_attr", self.bias_attr))
                 if n is not None]:
            if not isinstance(name, str) or not _NAME.match(name):
                fail(f"{what} must name one attribute (no dots), got {name!r}.")
        expected = 1 if (self.fused_gate_up or not self.gated) else 2
        if len(self.up) != expected:
            what = ("a fused gate/up MLP" if self.fused_gate_up else
                    "a gated MLP" if self.gated else "an MLP that is not gated")
            fail(f"{what} has {expected} input projection(s) in up, got {len(self.up)}: "
                 f"{self.up}.")
        if self.fused_gate_up and not self.gated:
            fail("fused_gate_up=True needs gated=True.")

    def check_model(self, model: nn.Module) -> None:
        """Check that ``model`` has the modules this adapter names.

        Raises
        ------
        ValueError
            If a module is missing, the widths disagree, or the MLPs are a
            mixture of experts.
        """
        kind = type(model).__name__
        config = getattr(model, "config", None)
        experts = [(a, getattr(config, a, None)) for a in _EXPERT_ATTRS]
        experts = [(a, n) for a, n in experts if isinstance(n, int) and n > 1]
        if experts:
            raise ValueError(f"{kind} has mixture-of-experts MLPs (config.{experts[0][0]}="
                             f"{experts[0][1]}); llmbrain records, ablates and prunes one dense "
                             "MLP per layer and does not support expert MLPs.")

        def fail(message):
            raise ValueError(f"The adapter {self.name!r} does not fit this {kind}: {message}. "
                             "Correct the adapter and register it again.")

        def child(root, path, where):
            try:
                return _get_path(root, path)
            except AttributeError:
                names = ", ".join(name for name, _ in root.named_children())
                fail(f"{where} has no module {path!r} (it has: {names or 'no submodules'})")

        layers = child(model, self.layers, "the model")
        if not isinstance(layers, (nn.ModuleList, nn.Sequential)) or len(layers) == 0:
            fail(f"{self.layers!r} is a {type(layers).__name__}, not a list of decoder blocks")
        if not hasattr(model.config, self.width_attr):
            fail(f"its config has no attribute {self.width_attr!r} (width_attr)")
        for index, block in enumerate(layers):
            where = f"decoder block {index}"
            mlp = child(block, self.mlp, where) if self.mlp else block
            if hasattr(mlp, "experts"):
                raise ValueError(f"{kind} has mixture-of-experts MLPs ({where} holds "
                                 "'experts'); llmbrain supports one dense MLP per layer only.")
            where = f"the MLP of {where}"
            projections = [child(mlp, name, where) for name in (*self.up, self.down)]
            if self.act is not None:
                child(mlp, self.act, where)
            child(block, self.attn_out, f"decoder block {index}")
            for name, module in zip((*self.up, self.down), projections):
                weight = getattr(module, "weight", None)
                if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
                    fail(f"{where}: {name!r} is a {type(module).__name__} without a 2-D weight")
            n = self.n_neurons(model, index)
            rows = [w.shape[0] for w in self.up_weights(model, index)]
            if any(r != n for r in rows):
                fail(f"{where}: the input projections give {rows} neurons but {self.down!r} "
                     f"takes {n} (check up, down, conv1d and fused_gate_up)")

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
_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def register_adapter(adapter: ArchitectureAdapter) -> ArchitectureAdapter:
    """Register ``adapter`` for every ``model_type`` it names.

    The fields are checked now; the modules they name are checked against
    the model the first time :func:`get_adapter` serves it.

    Raises
    ------
    ValueError
        If a field is wrong (the message names it).

    Examples
    --------
    >>> from llmbrain.models import ArchitectureAdapter, register_adapter
    >>> register_adapter(ArchitectureAdapter(  # doctest: +SKIP
    ...     name="mymodel", model_types=("mymodel",), layers="model.layers",
    ...     mlp="mlp", up=("w1", "w3"), down="w2", act="act", gated=True))
    """
    if not isinstance(adapter, ArchitectureAdapter):
        raise TypeError(f"register_adapter expects an ArchitectureAdapter, got "
                        f"{type(adapter).__name__}.")
    if not adapter.model_types:
        raise ValueError(f"Adapter {adapter.name!r} names no model_types to serve.")
    adapter.check()
    for model_type in adapter.model_types:
        _REGISTRY[model_type] = adapter
    return adapter


def supported_architectures() -> list[str]:
    """The ``config.model_type`` values that have an adapter."""
    return sorted(_REGISTRY)


def load_adapter(path) -> ArchitectureAdapter:
    """Read an adapter from a JSON file whose keys are the fields of
    :class:`ArchitectureAdapter`, e.g.
    ``{"name": "mymodel", "model_types": ["mymodel"], "layers": "model.layers",
    "mlp": "mlp", "up": ["gate_proj", "up_proj"], "down": "down_proj",
    "act": "act_fn", "gated": true}``.

    Raises
    ------
    ValueError
        If the file is no JSON object or names unknown fields.
    """
    path = Path(path).expanduser()
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"No adapter file at {path}.") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"The adapter file {path} is not valid JSON ({err}).") from None
    fields = {f.name for f in dataclasses.fields(ArchitectureAdapter)}
    if not isinstance(spec, dict) or set(spec) - fields:
        unknown = sorted(set(spec) - fields) if isinstance(spec, dict) else spec
        raise ValueError(f"The adapter file {path} must hold one JSON object with the fields "
                         f"{sorted(fields)}; unknown: {unknown}.")
    spec = {key: tuple(value) if isinstance(value, list) else value
            for key, value in spec.items()}
    try:
        return ArchitectureAdapter(**spec)
    except TypeError as err:
        raise ValueError(f"The adapter file {path} lacks fields: {err}.") from None


def get_adapter(model_or_config) -> ArchitectureAdapter:
    """Return the adapter for a model (or its config).

    Given a model, the adapter is checked against it the first time
    (:meth:`ArchitectureAdapter.check_model`).

    Raises
    ------
    ValueError
        If the architecture has no registered adapter (the message lists the
        supported ones and says how to register a new one), or the adapter
        does not fit the model.
    """
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type in _REGISTRY:
        adapter = _REGISTRY[model_type]
        if isinstance(model_or_config, nn.Module) and _CHECKED.get(model_or_config) is not adapter:
            adapter.check_model(model_or_config)
            _CHECKED[model_or_config] = adapter
        return adapter
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
    name="llama", model_types=("llama", "granite", "smollm3"), bias_attr="mlp_bias",
    **_LLAMA_STYLE,
))
register_adapter(ArchitectureAdapter(
    name="llama-style", model_types=(
        "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo", "olmo2",
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
    width_attr="n_inner",
))
register_adapter(ArchitectureAdapter(
    name="gpt_neox", model_types=("gpt_neox",), layers="gpt_neox.layers", mlp="mlp",
    up=("dense_h_to_4h",), down="dense_4h_to_h", act="act", attn_out="attention.dense",
))
register_adapter(ArchitectureAdapter(
    name="opt", model_types=("opt",), layers="model.decoder.layers", mlp="",
    up=("fc1",), down="fc2", act="activation_fn", attn_out="self_attn.out_proj",
    width_attr="ffn_dim",
))
register_adapter(ArchitectureAdapter(
    name="phi", model_types=("phi",), layers="model.layers", mlp="mlp",
    up=("fc1",), down="fc2", act="activation_fn", attn_out="self_attn.dense",
))
