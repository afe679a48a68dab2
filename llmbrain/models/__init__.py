"""Models: loading and architecture adapters."""

from .adapters import (ArchitectureAdapter, get_adapter, load_adapter, register_adapter,
                       supported_architectures)
from .loading import (DEFAULT_MODEL, cache_dir, check_device, default_model_path, load_model,
                      model_fingerprint)

__all__ = [
    "DEFAULT_MODEL",
    "ArchitectureAdapter",
    "cache_dir",
    "check_device",
    "default_model_path",
    "get_adapter",
    "load_adapter",
    "load_model",
    "model_fingerprint",
    "register_adapter",
    "supported_architectures",
]
