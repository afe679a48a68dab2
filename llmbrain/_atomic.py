"""Write a folder atomically: it appears whole, or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["atomic_folder", "atomic_write", "replace_folder"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_folder(folder, *, overwrite: bool = True):
    """Yield a temporary folder beside ``folder`` that replaces it on success.

    The contents are written into the temporary folder; only when the block
    ends without error is it renamed to ``folder`` (an existing ``folder`` is
    moved aside first and removed afterwards, when ``overwrite``). On error
    the temporary folder is removed and ``folder`` is left as it was.

    Raises
    ------
    FileExistsError
        If ``folder`` exists and ``overwrite`` is False.
    """
    folder = Path(folder).expanduser()
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder} already exists; choose another folder or pass "
                              "overwrite=True.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.partial-"))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes private folders
        yield tmp
        replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_folder(new, folder) -> Path:
    """Put the complete folder ``new`` in the place of ``folder`` (removed, if it
    exists, only once ``new`` is in place)."""
    new, folder = Path(new), Path(folder)
    if folder.exists():
        old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old-"))
        os.replace(folder, old / folder.name)
        os.replace(new, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, folder)
    return folder


def atomic_write(path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename, so that
    ``path`` holds either its old content or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes private files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
