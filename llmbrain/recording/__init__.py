"""Recording: text -> activations (a Zarr store that xarray opens, or memory)."""

from .._outputs import OutputLockedError
from .hooks import HOOK_POINTS, MLP_HOOKS
from .recorder import record
from .sinks import ActivationSink, MemorySink, RecordingLayout, SplitSink, ZarrSink
from .store import DamagedStoreError, IncompleteStoreError, open_activations

__all__ = ["HOOK_POINTS", "MLP_HOOKS", "ActivationSink", "DamagedStoreError",
           "IncompleteStoreError", "MemorySink", "OutputLockedError", "RecordingLayout", "SplitSink",
           "ZarrSink", "open_activations", "record"]
