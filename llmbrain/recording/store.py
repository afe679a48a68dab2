"""The activation store: a Zarr folder that xarray opens as a Dataset.

Layout (``FORMAT_VERSION`` 1)::

    STORE.zarr/
        activations   (token, layer, neuron)  float16 | float32, chunks of
                      (tokens_per_chunk, 1, n_neurons): one layer reads fast
        token         (token,)   int64   running index
        layer         (layer,)   int32   model layer indices
        neuron        (neuron,)  int32   neuron indices inside a layer
        document      (token,)   int32   document of each token
        position      (token,)   int32   position of each token in its window
        token_id      (token,)   int32   vocabulary id
        token_text    (token,)   str     decoded text of the token
        progress.json            windows written so far; ``complete`` flag

The group attributes record the model (name and fingerprint), hook point,
dtype, window length, corpus fingerprint, token count and whether the store
is complete. Chunks are written whole, and ``progress.json`` is replaced
atomically after the chunks it counts, so a store interrupted at any moment
resumes from its last counted batch and loses nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from .._atomic import atomic_write

__all__ = ["FORMAT_VERSION", "IncompleteStoreError", "open_activations"]

FORMAT_VERSION = 1
_PROGRESS = "progress.json"
#: Attributes that must agree for a recording to be resumed.
IDENTITY_KEYS = ("model_fingerprint", "hook", "dtype", "window_length", "corpus_fingerprint",
                 "layers", "neurons_selected", "n_tokens")


class IncompleteStoreError(RuntimeError):
    """A store whose recording has not finished."""


def read_progress(path: Path) -> dict:
    file = Path(path) / _PROGRESS
    if not file.is_file():
        raise FileNotFoundError(f"{path} is no llmbrain activation store (no {_PROGRESS}).")
    return json.loads(file.read_text())


def create_store(path: Path, *, n_tokens: int, layers, neurons, dtype: str,
                 tokens_per_chunk: int, coords: dict, attrs: dict) -> zarr.Group:
    """Create an empty store at ``path`` (atomically: it appears whole)."""
    path = Path(path)
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{path.name}.creating-"))
    try:
        group = zarr.open_group(tmp, mode="w", zarr_format=3)
        n_layers, n_neurons = len(layers), len(neurons)
        data = group.create_array(
            "activations", shape=(n_tokens, n_layers, n_neurons), dtype=dtype,
            chunks=(tokens_per_chunk, 1, n_neurons), compressors=None, fill_value=0,
            dimension_names=["token", "layer", "neuron"])
        data.attrs["coordinates"] = "document position token_id token_text"
        _coord(group, "token", np.arange(n_tokens, dtype=np.int64), "token")
        _coord(group, "layer", np.asarray(layers, dtype=np.int32), "layer")
        _coord(group, "neuron", np.asarray(neurons, dtype=np.int32), "neuron")
        for name, values in coords.items():
            _coord(group, name, values, "token")
        group.attrs.update({**attrs, "llmbrain_format": FORMAT_VERSION, "complete": False})
        atomic_write(tmp / _PROGRESS, json.dumps({"windows_written": 0, "complete": False}))
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return zarr.open_group(path, mode="r+")


def _coord(group: zarr.Group, name: str, values: np.ndarray, dim: str) -> None:
    dtype = str if values.dtype.kind in "UOT" else values.dtype
    array = group.create_array(name, shape=values.shape, dtype=dtype,
                               chunks=(min(len(values), 1 << 20),) if len(values) else (1,),
                               dimension_names=[dim])
    array[...] = values


def store_attrs(path: Path) -> dict:
    return dict(zarr.open_group(path, mode="r").attrs)


def mark_progress(path: Path, windows_written: int, complete: bool = False) -> None:
    path = Path(path)
    if complete:
        group = zarr.open_group(path, mode="r+")
        group.attrs["complete"] = True
    atomic_write(path / _PROGRESS, json.dumps({"windows_written": int(windows_written),
                                               "complete": bool(complete)}))


def open_activations(path, *, allow_incomplete: bool = False) -> xr.Dataset:
    """Open a recorded activation store lazily.

    Parameters
    ----------
    path : str or path
        Folder written by :func:`llmbrain.record`.
    allow_incomplete : bool, default=False
        Open a store whose recording has not finished; only the tokens
        recorded so far are returned.

    Returns
    -------
    xarray.Dataset
        Data variable ``activations`` (token, layer, neuron) with per-token
        coordinates ``document``, ``position``, ``token_id`` and
        ``token_text``; attributes describe the recording. Values are read
        from disk only when used: ``ds.activations.sel(layer=3).values`` reads
        one layer.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not an activation store.
    IncompleteStoreError
        If the recording has not finished and ``allow_incomplete`` is False.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"No activation store at {path}.")
    progress = read_progress(path)
    with warnings.catch_warnings():  # progress.json is ours, not a Zarr node
        warnings.filterwarnings("ignore", message=".*progress.json.*")
        ds = xr.open_zarr(path, consolidated=False, chunks=None)
    window = int(ds.attrs["window_length"])
    n_written = progress["windows_written"] * window
    if not progress["complete"]:
        if not allow_incomplete:
            raise IncompleteStoreError(
                f"The store {path} is incomplete: {n_written} of {ds.sizes['token']} tokens were "
                "recorded. Resume the recording by running the same `llmbrain record` command "
                "(or llmbrain.record call) again, or open it with allow_incomplete=True.")
        ds = ds.isel(token=slice(0, n_written))
    ds.attrs["complete"] = bool(progress["complete"])
    ds.attrs["n_tokens_planned"] = int(ds.attrs["n_tokens"])
    ds.attrs["n_tokens"] = int(ds.sizes["token"])
    return ds
