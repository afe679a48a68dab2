"""What llmbrain writes, and the rules for replacing it.

Every folder llmbrain writes carries a small marker that names its kind:
``.llmbrain.json`` (``{"kind": ..., "llmbrain": version, "created": ...}``)
in volume, network, pruned-model and report folders, and the group
attribute ``llmbrain_output`` in activation stores (a Zarr group, where an
extra file would disturb Zarr readers). One rule then protects the user's
data, for every writer and every command-line verb alike:

* a folder is replaced only when asked (``overwrite=True``, ``--overwrite``),
  only when it holds an llmbrain output of the same kind (or is empty), and
  never when it is, or contains, an input of the same call;
* the new result is written into a temporary sibling that takes the folder's
  place only once it is complete (:func:`write_output`).

:func:`output_lock` keeps two processes from writing the same output at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import warnings
from datetime import datetime, timezone
from pathlib import Path

from ._atomic import atomic_folder, atomic_write

__all__ = ["KINDS", "OutputLockedError", "check_output", "mark_output", "output_kind",
           "output_lock", "write_output"]

MARKER = ".llmbrain.json"
#: Output kinds, and how they are called in messages.
KINDS = {
    "activations": "an activation store",
    "volumes": "a volumes folder",
    "networks": "a networks folder",
    "pruned-model": "a pruned-model folder",
    "report": "a report folder",
}


def _read_json(file: Path) -> dict:
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def output_kind(path) -> str | None:
    """The kind of llmbrain output at ``path`` (a key of :data:`KINDS`), or
    None if ``path`` is no llmbrain output.

    Folders written before markers existed are recognised by their files.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        return None
    kind = _read_json(path / MARKER).get("kind")
    if kind in KINDS:
        return kind
    attrs = _read_json(path / "zarr.json").get("attributes", {})
    if attrs.get("llmbrain_output") == "activations" or (
            "llmbrain_format" in attrs and (path / "progress.json").is_file()):
        return "activations"
    if (path / "layout.json").is_file() and (path / "img.nii.gz").is_file():
        return "volumes"
    if _read_json(path / "kind.json").get("kind") in ("networks", "recurrence"):
        return "networks"
    if "llmbrain_pruning" in _read_json(path / "config.json"):
        return "pruned-model"
    if ((path / "index.html").is_file() and (path / "summary.json").is_file()) or \
            output_kind(path / "activations.zarr") == "activations":  # a report under way
        return "report"
    return None


def _same_or_inside(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_output(path, kind: str, *, overwrite: bool = False, inputs=()) -> Path:
    """Check that a new output of ``kind`` may be written at ``path``.

    Parameters
    ----------
    path : str or path
    kind : str
        A key of :data:`KINDS`.
    overwrite : bool, default=False
        Whether an existing output of the same kind may be replaced.
    inputs : sequence of path
        Inputs of the same call: ``path`` must not be one of them nor hold one.

    Returns
    -------
    pathlib.Path
        ``path``, with ``~`` expanded.

    Raises
    ------
    ValueError
        If ``path`` is, or contains, one of ``inputs``.
    FileExistsError
        If ``path`` exists and may not be replaced; the message says why.
    """
    path = Path(path).expanduser()
    name = KINDS[kind]
    target = path.resolve()
    for source in inputs:
        if source is not None and _same_or_inside(Path(source).expanduser().resolve(), target):
            raise ValueError(f"The output {path} would replace the input {source}: choose "
                             "another output folder.")
    if not path.exists() and not path.is_symlink():
        return path
    if not path.is_dir():
        raise FileExistsError(f"{path} exists and is a file, not {name}: choose another "
                              "output folder.")
    found = output_kind(path)
    if found is None and any(path.iterdir()):
        raise FileExistsError(
            f"{path} exists and is not an llmbrain output; llmbrain replaces only its own "
            f"outputs, so it will not write {name} there. Choose another output folder.")
    if found not in (None, kind):
        raise FileExistsError(f"{path} holds {KINDS[found]} of llmbrain, not {name}: choose "
                              "another output folder.")
    if not overwrite:
        raise FileExistsError(f"{path} already exists; choose another output folder, or pass "
                              "overwrite=True to replace it.")
    return path


def mark_output(folder, kind: str) -> Path:
    """Write the marker that says ``folder`` holds an llmbrain output of ``kind``."""
    from . import __version__

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    atomic_write(folder / MARKER, json.dumps({"kind": kind, "llmbrain": __version__,
                                              "created": created}))
    return folder


@contextlib.contextmanager
def write_output(folder, kind: str, *, overwrite: bool = False, inputs=()):
    """Yield a temporary folder that replaces ``folder`` once the block ends.

    ``folder`` is first checked with :func:`check_output`; the temporary
    folder gets the marker of ``kind`` and takes ``folder``'s place only when
    the block ends without error, so the old output stays whole until the new
    one is complete.
    """
    folder = check_output(folder, kind, overwrite=overwrite, inputs=inputs)
    with atomic_folder(folder, overwrite=True) as tmp:
        yield tmp
        mark_output(tmp, kind)


# -- locks --------------------------------------------------------------------------
try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt


class OutputLockedError(RuntimeError):
    """Another process is writing the same output."""


def _try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _holder(file: Path) -> dict:
    try:  # the holder's details start after the first byte (the locked one on Windows)
        with open(file, "rb") as handle:
            handle.seek(1)
            return json.loads(handle.read().decode("utf-8"))
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "another process"
    return (f"process {holder.get('pid')} on {holder.get('host')} (since "
            f"{holder.get('since')})")


@contextlib.contextmanager
def output_lock(path, what: str = "writing"):
    """Hold an exclusive lock on the output ``path`` while the block runs.

    The lock is the file ``.NAME.lock`` beside ``path``; it holds the process
    id, host and start time of its holder, and is removed at the end. The
    operating system releases the lock of a process that dies, so a lock file
    left behind by a crash is taken over (with a warning naming the dead
    holder).

    Raises
    ------
    OutputLockedError
        If another process holds the lock; the message names it.
    """
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    file = path.parent / f".{path.name}.lock"
    while True:
        fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o666)
        if not _try_lock(fd):
            os.close(fd)
            holder = _holder(file)
            raise OutputLockedError(
                f"{path} is locked: {_describe(holder)} is {holder.get('what', 'writing')} it "
                f"(lock file {file}). Wait until it has finished; if it is no longer running, "
                "delete the lock file.")
        try:  # the file may have been removed by its previous holder meanwhile
            same = os.fstat(fd).st_ino == os.stat(file).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    previous = _holder(file)
    if previous:
        warnings.warn(f"Took over the lock of {path} left by {_describe(previous)}, which "
                      "stopped without releasing it.", stacklevel=3)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, b" " + json.dumps(info).encode("utf-8"))
    try:
        yield file
    finally:
        if fcntl is not None:  # removed while still locked, so no one locks a removed file
            file.unlink(missing_ok=True)
            os.close(fd)
        else:  # Windows removes no open file
            os.close(fd)
            with contextlib.suppress(OSError):
                file.unlink()
