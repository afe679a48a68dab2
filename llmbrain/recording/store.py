"""The activation store: a Zarr folder that xarray opens as a Dataset.

Layout (``FORMAT_VERSION`` 1), one hook point::

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
        progress.json            windows written so far, ``complete`` flag,
                                 bytes per chunk, checksum algorithm
        checksums.crc32c         CRC-32C of every chunk (uint32, little-endian)

Several hook points recorded in one pass (they must have the same width,
e.g. ``hook=("up", "act")``) add a ``hook`` dimension::

        activations   (token, hook, layer, neuron), chunks of
                      (tokens_per_chunk, 1, 1, n_neurons)
        hook          (hook,)    str     hook point names

and the attribute ``hooks`` (list) instead of ``hook``;
``open_activations(path, hook="act")`` returns the 3-D layout of one hook.

The group attributes record the model (name and fingerprint), hook point(s),
dtype, window length, corpus fingerprint, token count and whether the store
is complete. Chunks are written whole; a chunk's checksum is recorded after
the chunk, and ``progress.json`` is replaced atomically after the chunks it
counts, so a store interrupted at any moment resumes from its last counted
batch and loses nothing. A chunk that goes missing or is cut short later is
found when the store is opened (sizes are always checked, checksums with
``verify=True``) and re-recorded by running the same recording again. The
fill value is NaN, so a chunk never written can never read as zeros.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import google_crc32c
import numpy as np
import xarray as xr
import zarr

from .._atomic import atomic_write
from .._outputs import output_kind

__all__ = ["FORMAT_VERSION", "DamagedStoreError", "IncompleteStoreError", "open_activations"]

FORMAT_VERSION = 1
_PROGRESS = "progress.json"
_CHECKSUMS = "checksums.crc32c"
#: Attributes that must agree for a recording to be resumed.
IDENTITY_KEYS = ("model_fingerprint", "hook", "hooks", "dtype", "window_length",
                 "corpus_fingerprint", "layers", "neurons_selected", "n_tokens")
_RESUME = ("Run the same `llmbrain record` command (or llmbrain.record call) again: it "
           "re-records what is missing and keeps the rest.")


class IncompleteStoreError(RuntimeError):
    """A store whose recording has not finished."""


class DamagedStoreError(IncompleteStoreError):
    """A store with chunks (or a progress record) missing, cut short or altered
    since they were recorded."""


# -- progress ---------------------------------------------------------------------
def read_progress(path: Path) -> dict:
    """The progress record of the store at ``path``.

    Raises
    ------
    DamagedStoreError
        If it is missing or cannot be read.
    """
    file = Path(path) / _PROGRESS
    if not file.is_file():
        raise DamagedStoreError(f"The progress record {file} is missing. {_RESUME}")
    try:
        progress = json.loads(file.read_text(encoding="utf-8"))
        int(progress["windows_written"]), bool(progress["complete"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise DamagedStoreError(f"The progress record {file} is damaged ({err}). {_RESUME}") \
            from None
    return progress


def write_progress(path: Path, windows_written: int, *, complete: bool = False,
                   chunk_bytes: int | None = None) -> None:
    """Replace the progress record (atomically); with ``complete``, also mark the
    group attributes."""
    path = Path(path)
    if chunk_bytes is None:
        chunk_bytes = _chunk_bytes(zarr.open_array(path / "activations", mode="r"))
    if complete:
        zarr.open_group(path, mode="r+").attrs["complete"] = True
    atomic_write(path / _PROGRESS, json.dumps({
        "windows_written": int(windows_written), "complete": bool(complete),
        "chunk_bytes": int(chunk_bytes), "checksums": _CHECKSUMS}))


def _chunk_bytes(array) -> int:
    return int(np.prod(array.chunks)) * array.dtype.itemsize


# -- layout -----------------------------------------------------------------------
def activation_dims(hooks) -> tuple[str, ...]:
    """Dimensions of ``activations`` for the recorded hook points."""
    return ("token", "layer", "neuron") if len(hooks) == 1 else \
        ("token", "hook", "layer", "neuron")


def layout_coords(*, n_tokens: int, hooks, layers, neurons, per_token: dict) -> dict:
    """The coordinates of a store, as ``{name: (dim, values)}``."""
    coords = {"token": ("token", np.arange(n_tokens, dtype=np.int64))}
    if len(hooks) > 1:
        coords["hook"] = ("hook", np.asarray(hooks, dtype=str))
    coords["layer"] = ("layer", np.asarray(layers, dtype=np.int32))
    coords["neuron"] = ("neuron", np.asarray(neurons, dtype=np.int32))
    coords.update({name: ("token", values) for name, values in per_token.items()})
    return coords


def create_store(path: Path, *, hooks, tokens_per_chunk: int, dtype: str, coords: dict,
                 attrs: dict) -> None:
    """Create an empty store at ``path`` (atomically: it appears whole).

    ``coords`` comes from :func:`layout_coords`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.creating-"))
    try:
        group = zarr.open_group(tmp, mode="w", zarr_format=3)
        dims = activation_dims(hooks)
        shape = tuple(len(coords[dim][1]) for dim in dims)
        chunks = (tokens_per_chunk,) + (1,) * (len(dims) - 2) + (shape[-1],)
        data = group.create_array("activations", shape=shape, dtype=dtype, chunks=chunks,
                                  compressors=None, fill_value=np.nan, dimension_names=dims)
        data.attrs["coordinates"] = "document position token_id token_text"
        for name, (dim, values) in coords.items():
            _coord(group, name, values, dim)
        group.attrs.update({**attrs, "llmbrain_format": FORMAT_VERSION,
                            "llmbrain_output": "activations", "complete": False})
        (tmp / _CHECKSUMS).write_bytes(b"")
        write_progress(tmp, 0, chunk_bytes=_chunk_bytes(data))
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _coord(group: zarr.Group, name: str, values: np.ndarray, dim: str) -> None:
    dtype = str if values.dtype.kind in "UOT" else values.dtype
    array = group.create_array(name, shape=values.shape, dtype=dtype,
                               chunks=(min(len(values), 1 << 20),) if len(values) else (1,),
                               dimension_names=[dim])
    array[...] = values


def store_attrs(path: Path) -> dict:
    return dict(zarr.open_group(path, mode="r").attrs)


# -- checksums and verification -----------------------------------------------------
def chunk_checksums(values: np.ndarray, n_tokens: int, tokens_per_chunk: int) -> np.ndarray:
    """CRC-32C of the chunks one batch writes.

    ``values`` has shape ``(..., tokens, neurons)`` (one chunk per leading
    index); a chunk shorter than ``tokens_per_chunk`` is padded with the fill
    value, as Zarr writes it.
    """
    flat = values.reshape(-1, *values.shape[-2:])
    pad = b""
    if n_tokens < tokens_per_chunk:
        pad = np.full((tokens_per_chunk - n_tokens, flat.shape[-1]), np.nan,
                      dtype=values.dtype).tobytes()
    sums = np.empty(len(flat), dtype="<u4")
    for i, chunk in enumerate(flat):
        crc = google_crc32c.value(chunk[:n_tokens].tobytes())
        sums[i] = google_crc32c.extend(crc, pad) if pad else crc
    return sums


def write_checksums(path: Path, chunk_row: int, sums: np.ndarray) -> None:
    """Record the checksums of the chunks of token-chunk ``chunk_row``."""
    fd = os.open(Path(path) / _CHECKSUMS, os.O_WRONLY | os.O_CREAT, 0o666)
    try:
        os.lseek(fd, chunk_row * sums.nbytes, os.SEEK_SET)
        os.write(fd, sums.astype("<u4").tobytes())
    finally:
        os.close(fd)


def find_damage(path: Path, n_chunk_rows: int, *, checksums: bool = False) -> dict:
    """Chunks of the first ``n_chunk_rows`` token-chunks that are missing, cut
    short or (with ``checksums``) altered.

    Returns
    -------
    dict
        ``{token_chunk: [(chunk index, reason), ...]}``.
    """
    path = Path(path)
    array = zarr.open_array(path / "activations", mode="r")
    size = _chunk_bytes(array)
    others = list(np.ndindex(*array.cdata_shape[1:]))
    recorded = None  # stores of earlier versions have no checksums: sizes only
    if checksums and (path / _CHECKSUMS).is_file():
        raw = np.frombuffer((path / _CHECKSUMS).read_bytes(), dtype="<u4")
        recorded = raw[:len(raw) - len(raw) % len(others)].reshape(-1, len(others))
    damage: dict = {}
    for row in range(n_chunk_rows):
        for j, rest in enumerate(others):
            index = (row, *rest)
            file = path / "activations" / array.metadata.encode_chunk_key(index)
            try:
                actual = file.stat().st_size
            except FileNotFoundError:
                reason = "missing"
            else:
                reason = None if actual == size else f"{actual} of {size} bytes"
            if reason is None and recorded is not None:
                if row >= len(recorded):
                    reason = "no checksum recorded"
                elif google_crc32c.value(file.read_bytes()) != int(recorded[row, j]):
                    reason = "checksum differs"
            if reason:
                damage.setdefault(row, []).append((index, reason))
    return damage


def describe_damage(path: Path, damage: dict) -> str:
    """One message naming the damaged chunks (the first few) and the remedy."""
    items = [(index, reason) for row in sorted(damage) for index, reason in damage[row]]
    shown = [f"chunk {'/'.join(map(str, index))} ({reason})" for index, reason in items[:4]]
    more = f" and {len(items) - 4} more" if len(items) > 4 else ""
    return (f"The store {path} is damaged: {len(items)} chunk(s) are missing, cut short or "
            f"altered since they were recorded: {', '.join(shown)}{more}. {_RESUME}")


# -- opening ------------------------------------------------------------------------
def open_activations(path, *, allow_incomplete: bool = False, hook: str | None = None,
                     verify: bool = False) -> xr.Dataset:
    """Open a recorded activation store lazily.

    Also available as ``xr.open_dataset(path, engine="llmbrain")`` with the
    same keyword arguments.

    Parameters
    ----------
    path : str or path
        Folder written by :func:`llmbrain.record`.
    allow_incomplete : bool, default=False
        Open a store whose recording has not finished; only the tokens
        recorded so far are returned.
    hook : str, optional
        With a store of several hook points, return the 3-D layout
        (token, layer, neuron) of this one.
    verify : bool, default=False
        Also compare every chunk with its recorded checksum (reads the whole
        store). The sizes of the chunks are always checked.

    Returns
    -------
    xarray.Dataset
        Data variable ``activations`` (token, layer, neuron), or (token, hook,
        layer, neuron) for several hook points, with per-token coordinates
        ``document``, ``position``, ``token_id`` and ``token_text``;
        attributes describe the recording. Values are read from disk only
        when used: ``ds.activations.sel(layer=3).values`` reads one layer.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not an activation store.
    IncompleteStoreError
        If the recording has not finished and ``allow_incomplete`` is False.
    DamagedStoreError
        If recorded chunks are missing, cut short or (with ``verify``)
        altered, or the progress record is unreadable: the same recording
        run again repairs it.
    """
    ds, damage = open_store(path, allow_incomplete=allow_incomplete, verify=verify)
    if damage:
        raise DamagedStoreError(describe_damage(path, damage))
    return select_hook(ds, hook, path)


def open_store(path, *, allow_incomplete: bool = False, verify: bool = False):
    """:func:`open_activations` without the damage check: ``(dataset, damage)``,
    ``damage`` as :func:`find_damage` gives it."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"No activation store at {path}.")
    if output_kind(path) != "activations":
        raise FileNotFoundError(f"{path} is no llmbrain activation store.")
    progress = read_progress(path)
    with warnings.catch_warnings():  # progress.json and the checksums are ours, not Zarr nodes
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr")
        ds = xr.open_zarr(path, consolidated=False, chunks=None)
    window = int(ds.attrs["window_length"])
    n_written = min(int(progress["windows_written"]) * window, ds.sizes["token"])
    if not progress["complete"]:
        if not allow_incomplete:
            raise IncompleteStoreError(
                f"The store {path} is incomplete: {n_written} of {ds.sizes['token']} tokens were "
                "recorded. Resume the recording by running the same `llmbrain record` command "
                "(or llmbrain.record call) again, or open it with allow_incomplete=True.")
        ds = ds.isel(token=slice(0, n_written))
    chunk = ds["activations"].encoding["chunks"][0]
    damage = find_damage(path, -(-n_written // chunk), checksums=verify)
    ds.attrs["complete"] = bool(progress["complete"])
    ds.attrs["n_tokens_planned"] = int(ds.attrs["n_tokens"])
    ds.attrs["n_tokens"] = int(ds.sizes["token"])
    return ds, damage


def select_hook(ds: xr.Dataset, hook: str | None, source=None) -> xr.Dataset:
    """The 3-D layout of one hook point of a multi-hook dataset."""
    if hook is None:
        return ds
    if "hook" not in ds.dims:
        if hook != ds.attrs.get("hook"):
            raise ValueError(f"{source or 'The dataset'} holds hook {ds.attrs.get('hook')!r} "
                             f"only, not {hook!r}.")
        return ds
    hooks = [str(h) for h in ds["hook"].values]
    if hook not in hooks:
        raise ValueError(f"{source or 'The dataset'} holds hooks {hooks}, not {hook!r}.")
    selected = ds.sel(hook=hook, drop=True)
    selected.attrs = {k: v for k, v in ds.attrs.items() if k != "hooks"}
    selected.attrs["hook"] = hook
    return selected
