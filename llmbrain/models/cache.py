"""The cache of converted models: each GGUF file dequantised once, kept as safetensors.

A GGUF model is dequantised on its first load (about 30 s for SmolLM2-135M)
and kept as a plain ``save_pretrained`` folder under ``cache_dir()/models``,
so that later loads take seconds. Entries are keyed by the GGUF file's
*content*, not its name: a copy or a link under another name finds the entry
already there. The key hashes the file's size and a sample of its bytes (the
first and last MiB, which hold the header and tensor index, and 16 blocks of
64 KiB in between), so computing it reads about 3 MiB, whatever the file's
size.

Each entry holds ``llmbrain-cache.json``: its name (the stem of the first
GGUF file converted into it), the GGUF files it was loaded from, their size,
and when it was made and last used. :func:`cached_models` lists the entries
and :func:`clear_cache` removes them (``llmbrain cache list`` / ``llmbrain
cache clear``).

Each entry has a lock file beside it (``.<key>.lock``): processes that load
the same GGUF file at once, such as the ranks of a ``torchrun`` job, convert
it once (the others wait, then read the entry), and :func:`clear_cache` does
not remove an entry while it is read. This module does not import torch.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import filelock

from .._atomic import atomic_folder, atomic_write

__all__ = ["CachedModel", "cache_dir", "cached_models", "clear_cache", "disk_usage", "gguf_key"]

#: Name of the file that describes a cache entry.
INFO_FILE = "llmbrain-cache.json"
_MIB = 1 << 20
_BLOCK = 64 << 10
_N_BLOCKS = 16


def cache_dir() -> Path:
    """Folder where llmbrain caches converted models.

    ``$LLMBRAIN_CACHE`` if set, else ``$XDG_CACHE_HOME/llmbrain``, else
    ``~/.cache/llmbrain``.
    """
    if os.environ.get("LLMBRAIN_CACHE"):
        return Path(os.environ["LLMBRAIN_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "llmbrain"


def _models_dir() -> Path:
    return cache_dir() / "models"


def gguf_key(path) -> str:
    """Content key of a GGUF file: the same for every copy or link of it.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    str
        16 hexadecimal digits of a SHA-256 over the file's size, its first and
        last MiB and 16 evenly spaced blocks of 64 KiB (the whole file when it
        is smaller than that sample).
    """
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(f"gguf:{size}:".encode())
    with open(path, "rb") as f:
        if size <= 2 * _MIB + _N_BLOCKS * _BLOCK:
            digest.update(f.read())
        else:
            digest.update(f.read(_MIB))
            step = (size - 2 * _MIB) // (_N_BLOCKS + 1)
            for k in range(1, _N_BLOCKS + 1):
                f.seek(_MIB + k * step)
                digest.update(f.read(_BLOCK))
            f.seek(size - _MIB)
            digest.update(f.read(_MIB))
    return digest.hexdigest()[:16]


def _legacy_folder(path: Path) -> Path:
    """Where llmbrain 0.1 cached ``path`` (keyed by its name, size and time)."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return _models_dir() / f"{path.stem}-{key.hexdigest()[:12]}"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def locked_entry(path):
    """Yield the cache folder of the GGUF file ``path`` (whether it exists or
    not), holding its lock for the block.

    Processes that load the same GGUF file at once (every rank of a
    ``torchrun`` job, two notebooks) then convert it once: the first one
    converts and writes the entry while the others wait, then read it. A
    cache where no lock file can be made (read-only) is used without a lock.
    An entry that llmbrain 0.1 left for this very file (keyed by its name) is
    taken over on the way, by hard links (no copy, no second conversion).
    """
    path = Path(path)
    folder = _models_dir() / gguf_key(path)
    with _locked(folder, f"convert {path.name} into {folder}"):
        if not (folder / "config.json").is_file():
            legacy = _legacy_folder(path)
            if (legacy / "config.json").is_file():
                try:
                    _adopt(legacy, folder, path)
                except OSError:
                    pass  # the entry is converted again instead
        yield folder


def _lock_file(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.lock"


@contextlib.contextmanager
def _locked(folder: Path, doing: str):
    """Hold the lock of the entry ``folder`` (waiting, with a message, while another
    process does); without a lock where none can be made."""
    lock = filelock.FileLock(_lock_file(folder))
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            print(f"llmbrain: waiting for another process to {doing} ...", file=sys.stderr,
                  flush=True)
            lock.acquire()
    except OSError:
        lock = None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def _adopt(legacy: Path, folder: Path, source: Path) -> None:
    with atomic_folder(folder) as tmp:
        for item in legacy.iterdir():
            if item.is_file():
                try:
                    os.link(item, tmp / item.name)
                except OSError:
                    shutil.copy2(item, tmp / item.name)
        write_info(tmp, source, name=source.stem)


def write_info(folder, source, *, name: str) -> None:
    """Describe a new cache entry converted from the GGUF file ``source``."""
    source = Path(source)
    info = {"name": name, "key": gguf_key(source), "sources": [str(source.resolve())],
            "gguf_bytes": source.stat().st_size, "created": _now(), "last_used": _now()}
    atomic_write(Path(folder) / INFO_FILE, json.dumps(info, indent=1).encode())


def record_use(folder, source) -> None:
    """Note that the entry in ``folder`` was loaded from ``source`` now (best effort)."""
    file = Path(folder) / INFO_FILE
    try:
        info = json.loads(file.read_text())
        sources = [s for s in info.get("sources", []) if s != str(Path(source).resolve())]
        info["sources"] = [str(Path(source).resolve())] + sources
        info["last_used"] = _now()
        atomic_write(file, json.dumps(info, indent=1).encode())
    except (OSError, ValueError):
        pass  # a read-only or foreign cache only loses its bookkeeping


@dataclass(frozen=True)
class CachedModel:
    """One entry of the model cache.

    Attributes
    ----------
    name : str
        Stem of the GGUF file first converted into it (or, for an entry of
        llmbrain 0.1, its folder name).
    key : str
        Content key of the GGUF file (:func:`gguf_key`); the folder's name.
    path : pathlib.Path
        The entry's folder (a ``save_pretrained`` folder).
    sources : tuple of str
        GGUF files loaded through it, most recent first.
    size : int
        Bytes on disk.
    created, last_used : datetime.datetime or None
    legacy : bool
        Written by llmbrain 0.1, keyed by file name rather than content.
    """

    name: str
    key: str
    path: Path
    sources: tuple
    size: int
    created: datetime.datetime | None
    last_used: datetime.datetime | None
    legacy: bool = False


def _date(text) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def disk_usage(entries) -> int:
    """Bytes that ``entries`` take on disk together (files shared by hard links count once)."""
    seen = {}
    for entry in entries:
        for f in Path(entry.path).rglob("*"):
            if f.is_file():
                stat = f.stat()
                seen[(stat.st_dev, stat.st_ino)] = stat.st_size
    return sum(seen.values())


def _matches(entry: CachedModel, name: str) -> bool:
    return name in (entry.name, entry.key, entry.path.name) or any(
        name in (source, Path(source).name, Path(source).stem) for source in entry.sources)


def cached_models(name: str | None = None) -> list[CachedModel]:
    """The entries of the model cache, oldest first.

    Parameters
    ----------
    name : str, optional
        Only the entries of this name, key, or GGUF file (its path, file
        name or stem).

    Returns
    -------
    list of CachedModel
        Folders being written (their names start with a dot) are left out.

    Raises
    ------
    ValueError
        If ``name`` matches no entry (the message lists the names there are).
    """
    entries = _entries()
    if name is None:
        return entries
    chosen = [e for e in entries if _matches(e, str(name))]
    if not chosen:
        names = ", ".join(e.name for e in entries) or "none"
        raise ValueError(f"No cached model named {name!r} in {_models_dir()}; the cache holds: "
                         f"{names}.")
    return chosen


def _entries() -> list[CachedModel]:
    root = _models_dir()
    if not root.is_dir():
        return []
    entries = []
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        try:
            info = json.loads((folder / INFO_FILE).read_text())
        except (OSError, ValueError):
            info = None
        if info is None and not (folder / "config.json").is_file():
            continue  # not ours
        mtime = datetime.datetime.fromtimestamp(folder.stat().st_mtime, datetime.timezone.utc)
        if info is None:
            entries.append(CachedModel(folder.name, folder.name, folder, (), _size(folder),
                                       mtime, None, legacy=True))
        else:
            entries.append(CachedModel(
                str(info.get("name", folder.name)), folder.name, folder,
                tuple(info.get("sources", ())), _size(folder),
                _date(info.get("created")) or mtime, _date(info.get("last_used"))))
    return sorted(entries, key=lambda e: e.created.timestamp() if e.created else 0.0)


def clear_cache(name: str | None = None) -> list[CachedModel]:
    """Remove cached models; they are converted again on their next load.

    Parameters
    ----------
    name : str, optional
        Remove only the entries of this name, key, or GGUF file (its path,
        file name or stem); default all entries.

    Returns
    -------
    list of CachedModel
        The entries removed.

    Raises
    ------
    ValueError
        If ``name`` matches no entry (the message lists the names there are).
    """
    chosen = cached_models(name)
    for entry in chosen:
        with _locked(entry.path, f"finish with {entry.path}"):   # not while it is read
            # moved aside first, so that no reader ever finds half a folder
            trash = Path(tempfile.mkdtemp(dir=entry.path.parent,
                                          prefix=f".{entry.path.name}.old-"))
            os.replace(entry.path, trash / entry.path.name)
            shutil.rmtree(trash, ignore_errors=True)
            _lock_file(entry.path).unlink(missing_ok=True)
    return chosen
