"""Save and load structurally pruned models.

A pruned model is saved like any Hugging Face model (``config.json``,
safetensors weights, tokenizer files). How to load it back:

* always: :func:`load_pruned` (``model, tokenizer = load_pruned(folder)``),
  which rebuilds each MLP with its recorded width, and adds the
  output-projection biases created by bias compensation, before loading the
  weights;
* when every layer has the same width and no bias was added to a model that
  had none, ``AutoModelForCausalLM.from_pretrained(folder)`` works too, since
  the config's intermediate size was updated.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .._atomic import atomic_folder
from .structural import CONFIG_KEY, resize_mlps

__all__ = ["PLAN_FILE", "load_pruned", "save_pruned"]

#: Name of the plan file :func:`save_pruned` writes next to the weights.
PLAN_FILE = "pruning_plan.json"


def save_pruned(model: nn.Module, tokenizer, folder: str | os.PathLike, *,
                plan=None, overwrite: bool = False) -> Path:
    """Save a (pruned) model and its tokenizer, atomically.

    Everything is written to a temporary folder next to ``folder`` that is
    then renamed, so an interrupted save leaves no half-written model.

    Parameters
    ----------
    model : transformers.PreTrainedModel
    tokenizer : transformers.PreTrainedTokenizerBase or None
    folder : path
    plan : PruningPlan, optional
        Also written, as ``pruning_plan.json``.
    overwrite : bool, default=False
        Replace an existing folder.

    Returns
    -------
    pathlib.Path
        ``folder``.
    """
    folder = Path(folder)
    with atomic_folder(folder, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
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
        state.update(load_file(file))
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
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} holds no config.json; give a folder written by "
                                "save_pruned.")
    config = AutoConfig.from_pretrained(folder)
    info = getattr(config, CONFIG_KEY, None) or {}
    model = AutoModelForCausalLM.from_config(config, **model_kwargs)
    if info.get("neurons_per_layer"):
        resize_mlps(model, info["neurons_per_layer"], info.get("down_bias_layers", ()))
    state = _to_model_names(model, _read_weights(folder))
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"{folder} has weights the rebuilt model lacks: "
                         f"{result.unexpected_keys[:5]}...; was it saved by save_pruned?")
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {id(params[k]) for k in state if k in params}
    untied = [k for k in result.missing_keys if k not in params or id(params[k]) not in loaded]
    if untied:
        raise ValueError(f"{folder} lacks weights for {untied[:5]}; the folder is incomplete.")
    model = model.to(device=device, dtype=dtype).eval()
    tokenizer = None
    if any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        tokenizer = AutoTokenizer.from_pretrained(folder)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
