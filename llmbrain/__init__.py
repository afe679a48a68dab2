"""llmbrain: study a large language model like a brain.

The pipeline reads in one direction::

    text -> activations -> volumes -> networks -> pruning plan -> pruned model -> report
"""

from .corpus import load_corpus, tokenize_windows
from .models import get_adapter, load_model, register_adapter
from .recording import open_activations, record
from .volumes import LLMVolumes, VolumeLayout, from_volumes, to_volumes

__version__ = "0.1.0"

__all__ = [
    "LLMVolumes",
    "VolumeLayout",
    "from_volumes",
    "get_adapter",
    "load_corpus",
    "load_model",
    "open_activations",
    "record",
    "register_adapter",
    "to_volumes",
    "tokenize_windows",
]
