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

A store recorded with ``sharded=True`` keeps each row of chunks (all hooks
and layers of one batch) in one file, a Zarr v3 shard; Zarr and xarray read it
the same way. With ``token_stride=k`` only the last token of every group of
``k`` in a window is kept (``position`` tells which) and the attribute
``token_stride`` records ``k``; a neuron subset is in the ``neuron``
coordinate.

The group attributes record the model (name and fingerprint), hook point(s),
dtype, window length, corpus fingerprint, token count and whether the store
is complete. Chunks are written whole and ``fsync``-ed; a chunk's checksum is
recorded after the chunk is on disk, and ``progress.json`` is replaced
atomically after the chunks it counts, so a store interrupted at any moment
resumes from its last counted batch and loses nothing. Processes recording
one store together (:func:`llmbrain.record` under ``torchrun``) each append
the batches they have written to their own journal,
``progress.rank<N>.jsonl``; the journals are merged into the checksums and
the progress record when the recording ends, or when it is run again after an
interruption. A chunk that goes missing or is cut short later is
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

import numpy as np
import xarray as xr
import zarr

from .._atomic import atomic_write
from .._outputs import output_kind
from ._chunks import ChunkLayout, crc32c

__all__ = ["FORMAT_VERSION", "DamagedStoreError", "IncompleteStoreError", "open_activations"]

FORMAT_VERSION = 1
_PROGRESS = "progress.json"
_CHECKSUMS = "checksums.crc32c"
_JOURNAL = "progress.rank{}.jsonl"
#: Attributes that must agree for a recording to be resumed.
IDENTITY_KEYS = ("model_fingerprint", "hook", "hooks", "dtype", "window_length",
                 "corpus_fingerprint", "layers", "neurons_selected", "n_tokens", "token_stride")
#: Values of identity attributes that stores of earlier versions do not have.
IDENTITY_DEFAULTS = {"token_stride": 1}
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
                 attrs: dict, sharded: bool = False) -> None:
    """Create an empty store at ``path`` (atomically: it appears whole).

    ``coords`` comes from :func:`layout_coords`; with ``sharded``, each row of
    chunks (all hooks and layers of ``tokens_per_chunk`` tokens) is one file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.creating-"))
    try:
        group = zarr.open_group(tmp, mode="w", zarr_format=3)
        dims = activation_dims(hooks)
        shape = tuple(len(coords[dim][1]) for dim in dims)
        chunks = (tokens_per_chunk,) + (1,) * (len(dims) - 2) + (shape[-1],)
        shards = (tokens_per_chunk,) + shape[1:] if sharded else None
        data = group.create_array("activations", shape=shape, dtype=dtype, chunks=chunks,
                                  shards=shards, compressors=None, fill_value=np.nan,
                                  dimension_names=dims)
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


def tokens_per_window(attrs: dict) -> int:
    """Tokens a store keeps of each window (fewer than the window with a token stride)."""
    return int(attrs["window_length"]) // int(attrs.get("token_stride", 1))


# -- checksums and verification -----------------------------------------------------
def write_checksums(path: Path, chunk_row: int, sums) -> None:
    """Record (durably) the checksums of the chunks of token-chunk ``chunk_row``."""
    sums = np.asarray(sums, dtype="<u4")
    fd = os.open(Path(path) / _CHECKSUMS, os.O_WRONLY | os.O_CREAT, 0o666)
    try:
        os.pwrite(fd, sums.tobytes(), chunk_row * sums.nbytes)
        os.fsync(fd)
    finally:
        os.close(fd)


def append_journal(path: Path, rank: int, first_window: int, n_windows: int, sums) -> None:
    """Record (durably) in process ``rank``'s journal that the batch of windows
    ``first_window .. first_window + n_windows - 1`` is on disk, with its checksums."""
    line = json.dumps({"first_window": int(first_window), "n_windows": int(n_windows),
                       "checksums": [int(v) for v in sums]}) + "\n"
    fd = os.open(Path(path) / _JOURNAL.format(int(rank)),
                 os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def merge_journals(path: Path) -> bool:
    """Fold the journals of processes that recorded the store together into its
    checksums and progress record, then remove them.

    The progress record then counts every window up to the first batch no
    journal holds. A line cut short by a crash is ignored (its batch is
    recorded again). Returns whether there was anything to merge.
    """
    path = Path(path)
    journals = sorted(path.glob(_JOURNAL.format("*")))
    if not journals:
        return False
    attrs = store_attrs(path)
    batch = int(attrs["batch_windows"])
    per_row = ChunkLayout(path).per_row
    written: dict[int, int] = {}
    for journal in journals:
        for line in journal.read_bytes().splitlines():
            try:
                entry = json.loads(line)
                first, n, sums = entry["first_window"], entry["n_windows"], entry["checksums"]
            except (ValueError, KeyError, TypeError):
                continue  # cut short by a crash
            if len(sums) == per_row:
                write_checksums(path, int(first) // batch, sums)
                written[int(first)] = int(n)
    try:
        done = int(read_progress(path)["windows_written"])
    except DamagedStoreError:
        done = None  # rebuilt from the checksums by the next recording
    if done is not None:
        while done in written:
            done += written[done]
        n_windows = int(attrs["n_tokens"]) // tokens_per_window(attrs)
        write_progress(path, done, complete=done >= n_windows)
    for journal in journals:
        journal.unlink()
    return True


def find_damage(path: Path, n_chunk_rows: int, *, checksums: bool = False) -> dict:
    """Chunks of the first ``n_chunk_rows`` token-chunks that are missing, cut
    short or (with ``checksums``) altered.

    Returns
    -------
    dict
        ``{token_chunk: [(chunk index, reason), ...]}``.
    """
    path = Path(path)
    layout = ChunkLayout(path)
    recorded = None  # stores of earlier versions have no checksums: sizes only
    if checksums and (path / _CHECKSUMS).is_file():
        raw = np.frombuffer((path / _CHECKSUMS).read_bytes(), dtype="<u4")
        recorded = raw[:len(raw) - len(raw) % layout.per_row].reshape(-1, layout.per_row)
    damage: dict = {}
    for row in range(n_chunk_rows):
        for file, members in layout.files(row):
            reasons = dict.fromkeys(members, _file_damage(file, layout.file_bytes))
            if not any(reasons.values()) and recorded is not None:
                reasons = _checksum_damage(file, members, layout, recorded, row)
            for j, reason in reasons.items():
                if reason:
                    damage.setdefault(row, []).append((layout.chunk_index(row, j), reason))
    return damage


def _file_damage(file: Path, size: int) -> str | None:
    try:
        actual = file.stat().st_size
    except FileNotFoundError:
        return "missing"
    return None if actual == size else f"{actual} of {size} bytes"


def _checksum_damage(file: Path, members, layout: ChunkLayout, recorded, row) -> dict:
    if row >= len(recorded):
        return dict.fromkeys(members, "no checksum recorded")
    data = np.frombuffer(file.read_bytes(), dtype=np.uint8)  # read-only: no copy
    end = layout.per_row * layout.chunk_bytes
    if layout.sharded and data[end:].tobytes() != layout.shard_index():
        return dict.fromkeys(members, "shard index differs")
    start = layout.offset
    return {j: None if crc32c(data[start(j):start(j) + layout.chunk_bytes])
            == int(recorded[row, j]) else "checksum differs" for j in members}


def describe_damage(path: Path, damage: dict) -> str:
    """One message naming the damaged chunks (the first few) and the remedy."""
    items = [(index, reason) for row in sorted(damage) for index, reason in damage[row]]
    shown = [f"chunk {'/'.join(map(str, index))} ({reason})" for index, reason in items[:4]]
    more = f" and {len(items) - 4} more" if len(items) > 4 else ""
    return (f"The store {path} is damaged: {len(items)} chunk(s) are missing, cut short or "
            f"altered since they were recorded: {', '.join(shown)}{more}. {_RESUME}")


# -- opening ------------------------------------------------------------------------
def open_activations(path, *, allow_incomplete: bool = False, hook: str | None = None,
                     verify: bool = False, chunks=None) -> xr.Dataset:
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
    chunks : dict, int, "auto" or {}, optional
        Back the variables with dask arrays of these chunks (as
        :func:`xarray.open_zarr` takes them; ``{}`` uses the store's own
        chunks, one layer of one batch each), so that computations run chunk
        by chunk, in parallel, on a dask scheduler or cluster, and never need
        the whole store in memory. Needs ``pip install llmbrain[dask]``. By
        default values are read with plain lazy indexing.

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
    ds, damage = open_store(path, allow_incomplete=allow_incomplete, verify=verify,
                            chunks=chunks)
    if damage:
        raise DamagedStoreError(describe_damage(path, damage))
    return select_hook(ds, hook, path)


def open_store(path, *, allow_incomplete: bool = False, verify: bool = False, chunks=None):
    """:func:`open_activations` without the damage check: ``(dataset, damage)``,
    ``damage`` as :func:`find_damage` gives it."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"No activation store at {path}.")
    if output_kind(path) != "activations":
        raise FileNotFoundError(f"{path} is no llmbrain activation store.")
    if chunks is not None:
        try:
            import dask.array  # noqa: F401
        except ImportError:
            raise ImportError("Opening a store with dask chunks needs dask: pip install "
                              "'llmbrain[dask]' (or pip install 'dask[array]').") from None
    progress = read_progress(path)
    with warnings.catch_warnings():  # progress.json and the checksums are ours, not Zarr nodes
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr")
        ds = xr.open_zarr(path, consolidated=False, chunks=chunks)
    n_written = min(int(progress["windows_written"]) * tokens_per_window(ds.attrs),
                    ds.sizes["token"])
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
