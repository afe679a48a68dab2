"""Recording: text -> activations (a Zarr store that xarray opens)."""

from .hooks import HOOK_POINTS
from .recorder import record
from .store import IncompleteStoreError, open_activations

__all__ = ["HOOK_POINTS", "IncompleteStoreError", "open_activations", "record"]
