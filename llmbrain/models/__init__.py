"""Models: loading and architecture adapters."""

from .adapters import ArchitectureAdapter, get_adapter, register_adapter, supported_architectures
from .loading import DEFAULT_MODEL, cache_dir, default_model_path, load_model, model_fingerprint

__all__ = [
    "DEFAULT_MODEL",
    "ArchitectureAdapter",
    "cache_dir",
    "default_model_path",
    "get_adapter",
    "load_model",
    "model_fingerprint",
    "register_adapter",
    "supported_architectures",
]
