"""Where a recording into a store starts: a new store, a resumed or repaired one,
or a replacement recorded beside the store it replaces."""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._atomic import replace_folder
from .._outputs import output_kind
from .store import (IDENTITY_DEFAULTS, IDENTITY_KEYS, DamagedStoreError, create_store,
                    find_damage, merge_journals, read_progress, store_attrs, write_progress)

__all__ = ["StorePlan", "check_disk", "plan_store", "prepare_store"]


@dataclass
class StorePlan:
    """Where and what to record into a store on disk."""

    path: Path                      # folder the chunks go to
    new: bool = True                # create it first
    done: int = 0                   # windows counted as recorded
    repair: list = field(default_factory=list)   # first windows of batches to record again
    complete: bool = False
    batch_windows: int | None = None


def plan_store(path: Path, attrs: dict, n_windows: int, *, resume: bool, overwrite: bool,
               verify: bool) -> StorePlan:
    """What to record into the store at ``path``: all of it, what is missing, or nothing."""
    ours = output_kind(path) == "activations"
    if overwrite and ours:  # record beside it; it is replaced once the new one is complete
        work = path.parent / f".{path.name}.replacement"
        return _existing(work, attrs, n_windows, resume=True, verify=verify, replace=True)
    if not ours:  # absent, or an empty folder
        return StorePlan(path)
    return _existing(path, attrs, n_windows, resume=resume, verify=verify, replace=False)


def _existing(path: Path, attrs: dict, n_windows: int, *, resume: bool, verify: bool,
              replace: bool) -> StorePlan:
    if output_kind(path) != "activations":
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise FileExistsError(f"{path} is in the way of the new store: remove it.")
        return StorePlan(path)
    existing = store_attrs(path)
    differences = [f"{key}: store has {_identity(existing, key)!r}, this recording "
                   f"{_identity(attrs, key)!r}" for key in IDENTITY_KEYS
                   if _identity(existing, key) != _identity(attrs, key)]
    if differences:
        if replace:  # an unfinished replacement of other settings: start it again
            return StorePlan(path)
        raise FileExistsError(
            f"The store {path} was recorded with other settings, so this recording cannot "
            f"continue it ({'; '.join(differences)}). Choose another path, or pass "
            "overwrite=True to replace it.")
    batch = int(existing["batch_windows"])
    merge_journals(path)  # batches written by the processes of an interrupted parallel run
    try:
        progress = read_progress(path)
    except DamagedStoreError:
        progress = _recover_progress(path, n_windows, batch)
    done, complete = int(progress["windows_written"]), bool(progress["complete"])
    if not complete and not resume:
        raise FileExistsError(f"{path} holds an interrupted recording. Pass resume=True to "
                              "continue it or overwrite=True to start again.")
    damage = find_damage(path, -(-done // batch), checksums=verify)
    if damage:
        warnings.warn(f"{path}: {sum(map(len, damage.values()))} chunk(s) were missing, cut "
                      "short or altered; they are recorded again.", stacklevel=4)
    return StorePlan(path, new=False, done=done, complete=complete,
                     repair=[row * batch for row in sorted(damage)], batch_windows=batch)


def _identity(attrs: dict, key: str):
    return attrs.get(key, IDENTITY_DEFAULTS.get(key))


def _recover_progress(path: Path, n_windows: int, batch: int) -> dict:
    """Rebuild a damaged progress record from the chunks that check out."""
    rows = -(-n_windows // batch)
    damage = find_damage(path, rows, checksums=True)
    good = min(damage) if damage else rows
    done = min(good * batch, n_windows)
    write_progress(path, done, complete=done == n_windows)
    warnings.warn(f"The progress record of {path} was damaged; {done} windows whose chunks "
                  "match their checksums are kept and the recording continues from there.",
                  stacklevel=5)
    return read_progress(path)


def check_disk(path: Path, n_bytes: int) -> None:
    """Refuse to start if ``path``'s folder is not writable or lacks ``n_bytes``."""
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = parent / f".{path.name}.write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"Cannot write the store at {path}: {err}. Choose a writable "
                              "folder.") from err
    free = shutil.disk_usage(parent).free
    if n_bytes > free:
        raise OSError(f"The store at {path} needs {n_bytes / 1e9:.2f} GB more but the disk has "
                      f"only {free / 1e9:.2f} GB free: free some space, record fewer tokens "
                      "(max_tokens) or layers, or use dtype='float16'.")


def prepare_store(path: Path, layout: dict, store: dict) -> dict | None:
    """Plan the recording into ``path`` and create the store if it is new; None
    when the store is already complete (a finished replacement is put in place)."""
    attrs, n_windows = layout["attrs"], layout["n_windows"]
    plan = plan_store(path, attrs, n_windows, resume=store["resume"],
                      overwrite=store["overwrite"], verify=store["verify"])
    if plan.complete and not plan.repair:
        if plan.path != path:  # a replacement finished before it could take its place
            replace_folder(plan.path, path)
        return None
    batch = plan.batch_windows or store["batch_size"]
    starts = plan.repair + list(range(plan.done, n_windows, batch))
    tokens = batch * attrs["n_tokens"] // n_windows
    row_bytes = tokens * len(layout["hooks"]) * len(layout["layers"]) * \
        len(layout["neurons"]) * np.dtype(layout["dtype"]).itemsize
    check_disk(plan.path, len(starts) * row_bytes)
    if plan.new:
        if plan.path.exists():  # an empty folder, or our own unfinished replacement
            shutil.rmtree(plan.path)
        create_store(plan.path, hooks=layout["hooks"], tokens_per_chunk=tokens,
                     dtype=layout["dtype"], coords=layout["coords"], attrs=attrs,
                     sharded=store["sharded"])
    return {"path": plan.path, "done": plan.done, "starts": starts, "batch": batch}
