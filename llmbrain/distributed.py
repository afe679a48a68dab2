"""Work shared by several processes through ``torch.distributed``.

Launch a script with ``torchrun --nproc_per_node N script.py`` (or
``accelerate launch``) and initialise the process group in it
(:func:`init_from_environment` does so from the launcher's variables); then
:func:`llmbrain.record` splits its batches of windows over the processes, and
estimators that accumulate sums over tokens combine them with
:func:`all_reduce`. Every function here also works in a single process, where
it does nothing (or returns its input), so the same code runs both ways.
"""

from __future__ import annotations

import os
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["all_reduce", "barrier", "broadcast_object", "init_from_environment",
           "is_distributed", "local_device", "rank", "world_size"]

_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


def is_distributed() -> bool:
    """Whether this process belongs to a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes in the group (1 outside a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def barrier() -> None:
    """Wait until every process of the group gets here."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj=None, src: int = 0):
    """Rank ``src``'s ``obj`` (anything picklable), on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def init_from_environment(backend: str | None = None, timeout_s: float = 1800) -> bool:
    """Join the process group that ``torchrun`` or ``accelerate launch`` set up.

    Does nothing when the process was not started by such a launcher
    (``WORLD_SIZE`` unset or 1) or the group is already initialised. With
    NCCL, the process's GPU (``LOCAL_RANK``) becomes its current CUDA device,
    where its collective calls run.

    Parameters
    ----------
    backend : str, optional
        ``"nccl"`` or ``"gloo"``; by default NCCL when this machine has GPUs,
        else gloo.
    timeout_s : float, default=1800
        How long a process waits for the others at a collective call.

    Returns
    -------
    bool
        Whether this process now belongs to a group of several processes.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if "nccl" in backend:
            # each process its own GPU: NCCL refuses two processes on one
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return is_distributed()


def local_device(device) -> torch.device:
    """``device``, with a bare ``"cuda"`` made this process's GPU (``LOCAL_RANK``)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and is_distributed():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank())))
    return device


def _communication_device(tensor: torch.Tensor) -> torch.device:
    backend = str(dist.get_backend())
    if "gloo" in backend and "nccl" in backend:  # a group with both: each device its own
        return tensor.device
    if "nccl" in backend:   # a tensor on a GPU stays there; others go to this process's
        return tensor.device if tensor.is_cuda else torch.device(
            "cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _reduce_tensor(tensor: torch.Tensor, op) -> torch.Tensor:
    work = tensor.detach().to(_communication_device(tensor)).clone()
    dist.all_reduce(work, op=op)
    return work.to(tensor.device)


def all_reduce(value, op: str = "sum"):
    """Combine ``value`` over the processes of the group.

    Parameters
    ----------
    value : tensor, ndarray, number, or a dict / list / tuple of them
        This process's part, e.g. ``{"n": n_tokens, "sum": s1, "sum_sq": s2}``
        for running moments (sums combine exactly by adding them; means and
        variances follow from the sums).
    op : {"sum", "max", "min"}, default="sum"

    Returns
    -------
    The combined value, of the same structure, types and devices as
    ``value`` (new objects; ``value`` is not modified). Outside a process
    group, ``value`` itself.
    """
    if op not in _OPS:
        raise ValueError(f"op must be one of {', '.join(_OPS)}, got {op!r}.")
    if not is_distributed():
        return value
    return _reduce(value, _OPS[op])


def _reduce(value, op):
    if isinstance(value, dict):
        return {key: _reduce(item, op) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_reduce(item, op) for item in value)
    if isinstance(value, torch.Tensor):
        return _reduce_tensor(value, op)
    if isinstance(value, np.ndarray):
        return _reduce_tensor(torch.from_numpy(np.ascontiguousarray(value)), op).numpy()
    if isinstance(value, (bool, np.bool_)):
        raise TypeError("all_reduce does not combine booleans; send them as 0 / 1.")
    if isinstance(value, (int, np.integer)):
        return int(_reduce_tensor(torch.tensor(int(value), dtype=torch.int64), op))
    if isinstance(value, (float, np.floating)):
        return float(_reduce_tensor(torch.tensor(float(value), dtype=torch.float64), op))
    raise TypeError(f"all_reduce combines tensors, arrays, numbers and dicts / lists of them; "
                    f"got {type(value).__name__}.")
