"""Save and load structurally pruned models.

A pruned model is saved like any Hugging Face model (``config.json``,
safetensors weights, tokenizer files). How to load it back:

* always: :func:`load_pruned` (or :func:`llmbrain.load_model`), which
  rebuilds each MLP with its recorded width, and adds the output-projection
  biases created by bias compensation, before loading the weights;
* when every layer has the same width, ``AutoModelForCausalLM.from_pretrained``
  loads it too, with the same logits: the config's MLP width is updated, and
  the biases added by bias compensation are declared in the config where the
  architecture has a switch for MLP biases (``mlp_bias`` in Llama and
  Granite; the other projections get zero biases) or already has them
  (GPT-2, GPT-NeoX, OPT, Phi).

A checkpoint that plain transformers would load wrongly (layers of different
widths, or a compensation bias the architecture cannot declare) is saved with
``model_type`` set to ``"<type> pruned by llmbrain: ..."``: transformers then
refuses it with a message that names :func:`llmbrain.load_model`, which reads
it as usual.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from .._atomic import atomic_write
from .._outputs import write_output
from .adapters import get_adapter

__all__ = ["CONFIG_KEY", "PLAN_FILE", "load_pruned", "new_projection", "resize_mlps",
           "save_pruned"]

#: Entry of ``model.config`` that records a pruned model's per-layer widths.
CONFIG_KEY = "llmbrain_pruning"


def new_projection(like: nn.Module, n_in: int, n_out: int, bias: bool, conv1d: bool) -> nn.Module:
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
            setattr(mlp, name, new_projection(old, n_in, rows, old.bias is not None, adapter.conv1d))
        old = getattr(mlp, adapter.down)
        n_out = old.weight.shape[1] if adapter.conv1d else old.weight.shape[0]
        setattr(mlp, adapter.down,
                new_projection(old, n, n_out, old.bias is not None or add_bias, adapter.conv1d))
    return model


#: Name of the plan file :func:`save_pruned` writes next to the weights.
PLAN_FILE = "pruning_plan.json"


_REFUSED = "{} pruned by llmbrain: load it with llmbrain.load_model"


def _zero_biases(model: nn.Module) -> dict:
    """Zero biases for the MLP projections that lack one, by state-dict name."""
    adapter = get_adapter(model)
    names = {id(module): name for name, module in model.named_modules()}
    zeros = {}
    for layer in range(adapter.n_layers(model)):
        for module in adapter.up_projs(model, layer) + [adapter.down_proj(model, layer)]:
            if module.bias is None:
                rows = module.weight.shape[1 if adapter.conv1d else 0]
                zeros[f"{names[id(module)]}.bias"] = torch.zeros(
                    rows, dtype=module.weight.dtype, device=module.weight.device)
    return zeros


def _checkpoint_plan(model: nn.Module) -> tuple[dict | None, dict]:
    """``(state_dict or None, config.json changes)`` that make plain transformers
    load the checkpoint exactly, or refuse it."""
    info = getattr(model.config, CONFIG_KEY, None) or {}
    sizes = info.get("neurons_per_layer") or []
    if info.get("down_bias_layers") and len(set(sizes)) == 1:
        attr = get_adapter(model).bias_attr
        if attr is not None:
            state = {**model.state_dict(), **_zero_biases(model)}
            return state, {attr: True}
    if len(set(sizes)) > 1 or info.get("down_bias_layers"):
        model_type = model.config.model_type
        return None, {"model_type": _REFUSED.format(model_type),
                      CONFIG_KEY: {**info, "model_type": model_type}}
    return None, {}


def _read_config(folder: Path):
    """The model config of ``folder``, also when plain transformers is refused."""
    from transformers import CONFIG_MAPPING, AutoConfig

    raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    model_type = (raw.get(CONFIG_KEY) or {}).get("model_type")
    if model_type and raw.get("model_type") != model_type:
        return CONFIG_MAPPING[model_type].from_dict({**raw, "model_type": model_type})
    return AutoConfig.from_pretrained(folder)


def save_pruned(model: nn.Module, tokenizer, folder: str | os.PathLike, *,
                plan=None, overwrite: bool = False) -> Path:
    """Save a (pruned) model and its tokenizer, atomically.

    Everything is written to a temporary folder next to ``folder`` that is
    then renamed, so an interrupted save leaves no half-written model. See
    the module docstring for how the checkpoint loads.

    Parameters
    ----------
    model : transformers.PreTrainedModel
    tokenizer : transformers.PreTrainedTokenizerBase or None
    folder : path
    plan : PruningPlan, optional
        Also written, as ``pruning_plan.json``.
    overwrite : bool, default=False
        Replace an existing folder, if it holds a pruned model saved by llmbrain.

    Returns
    -------
    pathlib.Path
        ``folder``.

    Raises
    ------
    FileExistsError
        If ``folder`` exists and ``overwrite`` is False, or it holds anything
        but a pruned model saved by llmbrain.
    """
    folder = Path(folder).expanduser()
    state, changes = _checkpoint_plan(model)
    with write_output(folder, "pruned-model", overwrite=overwrite) as tmp:
        model.save_pretrained(tmp, **({"state_dict": state} if state is not None else {}))
        if changes:
            config = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
            atomic_write(tmp / "config.json", json.dumps({**config, **changes}, indent=2))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if plan is not None:
            plan.save(tmp / PLAN_FILE)
    return folder


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder} holds no .safetensors weights; save the model with "
                                "save_pruned.")
    state = {}
    for file in files:
        try:
            state.update(load_file(file))
        except Exception as err:  # safetensors raises its own error types
            raise ValueError(f"The weights file {file} is damaged or cut short "
                             f"({type(err).__name__}: {err}); save the model again.") from None
    return state


def _to_model_names(model: nn.Module, state: dict[str, torch.Tensor]) -> dict:
    """Undo the renamings ``save_pretrained`` applies to some architectures'
    weight names (e.g. GPT-NeoX's ``lm_head`` saved as ``embed_out``)."""
    own = model.state_dict()
    if set(state) <= set(own):
        return state
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # transformers without weight conversions
        return state
    saved_names = revert_weight_conversion(model, dict(own))
    by_id = {id(tensor): name for name, tensor in own.items()}
    rename = {saved: by_id[id(tensor)] for saved, tensor in saved_names.items()
              if id(tensor) in by_id}
    return {rename.get(name, name): tensor for name, tensor in state.items()}


def load_pruned(folder: str | os.PathLike, *, dtype: torch.dtype = torch.float32,
                device: str | torch.device = "cpu", **model_kwargs):
    """Load a model saved by :func:`save_pruned`, with its per-layer widths.

    Parameters
    ----------
    folder : path
    dtype : torch.dtype, default=torch.float32
    device : str or torch.device, default="cpu"
    **model_kwargs
        Passed to ``AutoModelForCausalLM.from_config`` (e.g.
        ``attn_implementation="eager"``).

    Returns
    -------
    model : transformers.PreTrainedModel
        In evaluation mode.
    tokenizer : transformers.PreTrainedTokenizerBase or None
        None when the folder has no tokenizer.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} holds no config.json; give a folder written by "
                                "save_pruned.")
    config = _read_config(folder)
    info = getattr(config, CONFIG_KEY, None) or {}
    model = AutoModelForCausalLM.from_config(config, **model_kwargs)
    if info.get("neurons_per_layer"):
        resize_mlps(model, info["neurons_per_layer"], info.get("down_bias_layers", ()))
    state = _to_model_names(model, _read_weights(folder))
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"{folder} has weights that its config does not describe "
                         f"({result.unexpected_keys[:5]}): the checkpoint and its config.json "
                         "disagree, so it was changed after it was saved. Save the model "
                         "again with save_pruned.")
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {id(params[k]) for k in state if k in params}
    untied = [k for k in result.missing_keys if k not in params or id(params[k]) not in loaded]
    if untied:
        raise ValueError(f"{folder} lacks weights for {untied[:5]}; the folder is incomplete.")
    model = model.to(device=device, dtype=dtype).eval()
    tokenizer = None
    if any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        tokenizer = AutoTokenizer.from_pretrained(folder, config=config)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
