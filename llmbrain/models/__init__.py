"""Models: loading, the cache of converted models, architecture adapters, and
addressing their MLP neurons.

Names are imported from their module on first use, so that listing or
clearing the cache (:mod:`llmbrain.models.cache`) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

#: Public name -> the module that defines it.
_EXPORTS = {
    "ArchitectureAdapter": "adapters",
    "get_adapter": "adapters",
    "load_adapter": "adapters",
    "register_adapter": "adapters",
    "supported_architectures": "adapters",
    "CachedModel": "cache",
    "cache_dir": "cache",
    "cached_models": "cache",
    "clear_cache": "cache",
    "DEFAULT_MODEL": "loading",
    "check_device": "loading",
    "default_model_path": "loading",
    "load_model": "loading",
    "model_fingerprint": "loading",
    "neuron_indices": "neurons",
    "neuron_values": "neurons",
}

__all__ = sorted(_EXPORTS, key=lambda name: (not name[0].isupper(), name))


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from .adapters import (ArchitectureAdapter, get_adapter, load_adapter, register_adapter,
                           supported_architectures)
    from .cache import CachedModel, cache_dir, cached_models, clear_cache
    from .loading import (DEFAULT_MODEL, check_device, default_model_path, load_model,
                          model_fingerprint)
    from .neurons import neuron_indices, neuron_values
