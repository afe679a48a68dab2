"""Several processes of a ``torch.distributed`` group recording one store together.

The first process plans the recording (under the store's lock) and creates
the store; every process then runs its share of the batches (process ``r`` of
``N`` the batches ``r, r + N, ...``) and writes their chunks, recording each
finished batch in its own journal; at the end the first process merges the
journals into the checksums and the progress record. Batches are the same as
in a single process, so the store is the same, bit for bit.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from .. import distributed as _processes
from .._atomic import replace_folder
from .._outputs import output_lock
from ._resume import prepare_store
from .sinks import RecordingLayout, ZarrSink
from .store import merge_journals

__all__ = ["record_together"]


def record_together(run, path: Path, layout: dict, store: dict, progress: bool) -> None:
    """Record into ``path`` with every process of the group: the first plans and
    creates the store, each writes its share of the batches and keeps a
    journal, and the first merges the journals at the end (also after a
    failure, so that the same call resumes).

    ``run(starts, layout, sink, progress)`` records the batches beginning at
    the windows ``starts``.
    """
    rank, world = _processes.rank(), _processes.world_size()
    with output_lock(path, "recording into") if rank == 0 else contextlib.nullcontext():
        plan = None
        if rank == 0:
            try:
                plan = prepare_store(path, layout, store)
            except BaseException as err:
                _processes.broadcast_object({"error": f"{type(err).__name__}: {err}"})
                raise
        plan = _processes.broadcast_object(plan)
        if plan is not None and "error" in plan:
            raise RuntimeError(f"The recording could not start in process 0: {plan['error']}")
        if plan is None:  # complete already
            return
        error = None
        try:
            run(plan["starts"][rank::world],
                RecordingLayout(batch_windows=plan["batch"], shared=True, **layout),
                ZarrSink(plan["path"], plan["done"], journal=rank), progress)
        except BaseException as err:  # the others still wait for this process below
            error = err
        failed = _processes.all_reduce(int(error is not None), op="max")
        if rank == 0:
            merge_journals(plan["path"])
            if not failed and plan["path"] != path:
                replace_folder(plan["path"], path)
        _processes.barrier()
    if error is not None:
        raise error
    if failed:
        raise RuntimeError(f"Another process recording {path} failed (see its error). What was "
                           "written is kept: run the same command again to resume.")
