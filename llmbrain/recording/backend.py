"""The xarray backend of activation stores: ``xr.open_dataset(path, engine="llmbrain")``.

It opens a store with the rules of :func:`llmbrain.open_activations` (the
same function): an incomplete or damaged store is refused, and
``allow_incomplete=True`` returns only the tokens recorded so far, never the
unwritten ones. Registered through the ``xarray.backends`` entry point.
"""

from __future__ import annotations

import os
from pathlib import Path

from xarray.backends import BackendEntrypoint

from .store import open_activations

__all__ = ["ActivationStoreBackend"]


class ActivationStoreBackend(BackendEntrypoint):
    """Open llmbrain activation stores in xarray."""

    description = "llmbrain activation stores (Zarr), opened only when complete"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "allow_incomplete", "hook",
                               "verify")

    def open_dataset(self, filename_or_obj, *, drop_variables=None, allow_incomplete=False,
                     hook=None, verify=False):
        ds = open_activations(filename_or_obj, allow_incomplete=allow_incomplete, hook=hook,
                              verify=verify)
        return ds.drop_vars(drop_variables or [], errors="ignore")

    def guess_can_open(self, filename_or_obj) -> bool:
        if not isinstance(filename_or_obj, (str, os.PathLike)):
            return False
        from .._outputs import output_kind

        return output_kind(Path(filename_or_obj)) == "activations"
