"""Sinks: where the recorder sends the activations of every batch.

The recorder runs the model, gathers each batch's activations into one block
on the model's device and hands it to a sink; it knows nothing about what the
sink does with it. A sink implements three calls:

``start(layout)``
    once, before the first batch, with the :class:`RecordingLayout`;
``write(block, first_window)``
    after each forward pass. ``block`` has shape
    ``(n_hooks, n_layers, n_tokens, n_neurons)``, lies on the model's device
    and is reused for the next batch (copy what you keep); it holds the
    windows ``first_window, first_window + 1, ...``, ``n_tokens / window`` of
    them;
``finish()`` / ``abort()``
    after the last batch, or instead when the recording fails.

:class:`ZarrSink` writes a store on disk (in a background thread, so the next
forward pass runs meanwhile) and :class:`MemorySink` fills an in-memory
Dataset of the same layout. Anything else with these calls (an online
estimator updating its state, say) can be given to the recorder too.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr
import zarr

from .store import (FORMAT_VERSION, activation_dims, chunk_checksums, write_checksums,
                    write_progress)

__all__ = ["ActivationSink", "MemorySink", "RecordingLayout", "ZarrSink"]


@dataclass(frozen=True)
class RecordingLayout:
    """What a sink receives: hook points, layers, neurons and tokens.

    Attributes
    ----------
    hooks : tuple of str
    layers, neurons : list of int
    dtype : str
        Storage type ("float16" or "float32"); blocks arrive in it.
    window : int
        Tokens per window.
    batch_windows : int
        Windows per batch (the last batch may hold fewer).
    n_windows : int
    coords : dict
        ``{name: (dim, values)}`` of the dataset (see
        :func:`~llmbrain.recording.store.layout_coords`).
    attrs : dict
        Attributes describing the recording.
    device : torch.device
        Where blocks lie.
    """

    hooks: tuple
    layers: list
    neurons: list
    dtype: str
    window: int
    batch_windows: int
    n_windows: int
    coords: dict
    attrs: dict
    device: torch.device

    @property
    def n_tokens(self) -> int:
        return self.n_windows * self.window


class ActivationSink:
    """Base class of sinks (see the module docstring)."""

    def start(self, layout: RecordingLayout) -> None:
        self.layout = layout

    def write(self, block: torch.Tensor, first_window: int) -> None:
        raise NotImplementedError

    def finish(self):
        """Called after the last batch; the return value is the recorder's."""
        return None

    def abort(self) -> None:
        """Called instead of :meth:`finish` when the recording fails."""


class MemorySink(ActivationSink):
    """Collect the activations in memory and return them as an xarray.Dataset
    with the layout of a store (no disk)."""

    def start(self, layout: RecordingLayout) -> None:
        super().start(layout)
        shape = (layout.n_tokens, len(layout.hooks), len(layout.layers), len(layout.neurons))
        self.data = torch.empty(shape, dtype=getattr(torch, layout.dtype))

    def write(self, block: torch.Tensor, first_window: int) -> None:
        start = first_window * self.layout.window
        self.data[start:start + block.shape[2]].copy_(block.permute(2, 0, 1, 3))

    def finish(self) -> xr.Dataset:
        layout = self.layout
        values = self.data.numpy()
        if len(layout.hooks) == 1:
            values = values[:, 0]
        ds = xr.Dataset({"activations": (activation_dims(layout.hooks), values)},
                        coords=dict(layout.coords))
        ds.attrs.update({**layout.attrs, "llmbrain_format": FORMAT_VERSION, "complete": True,
                         "n_tokens_planned": layout.n_tokens, "n_tokens": layout.n_tokens})
        return ds


class ZarrSink(ActivationSink):
    """Write the activations into an existing store (see
    :mod:`llmbrain.recording.store`), in a background thread.

    Parameters
    ----------
    path : path
        The store, created beforehand.
    windows_written : int
        Windows already counted in its progress record. Batches before this
        point are repairs: their chunks and checksums are rewritten, the
        progress record is left alone.
    """

    def __init__(self, path, windows_written: int = 0):
        self.path = Path(path)
        self.windows_written = int(windows_written)

    def start(self, layout: RecordingLayout) -> None:
        super().start(layout)
        self.array = zarr.open_group(self.path, mode="r+")["activations"]
        self.on_cuda = layout.device.type == "cuda"
        shape = (len(layout.hooks), len(layout.layers), layout.batch_windows * layout.window,
                 len(layout.neurons))
        self.free: queue.Queue = queue.Queue()
        for _ in range(2):  # double buffering: one is copied into while the other is written
            self.free.put(torch.empty(shape, dtype=getattr(torch, layout.dtype),
                                      pin_memory=self.on_cuda))
        self.jobs: queue.Queue = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._work, daemon=True)
        self.thread.start()

    def write(self, block: torch.Tensor, first_window: int) -> None:
        if self.error is not None:
            raise self.error
        n = block.shape[2]
        host = self.free.get()
        host[:, :, :n].copy_(block, non_blocking=self.on_cuda)
        if self.on_cuda:
            torch.cuda.current_stream().synchronize()
        self.jobs.put((host, first_window, n))

    def _work(self) -> None:
        while (job := self.jobs.get()) is not None:
            host, first_window, n = job
            try:
                if self.error is None:
                    self._write_batch(host.numpy(), first_window, n)
            except BaseException as err:  # re-raised in the recording thread
                self.error = err
            self.free.put(host)

    def _write_batch(self, values: np.ndarray, first_window: int, n: int) -> None:
        layout, array = self.layout, self.array
        start = first_window * layout.window
        single = len(layout.hooks) == 1
        for h in range(values.shape[0]):
            for layer in range(values.shape[1]):
                if single:
                    array[start:start + n, layer, :] = values[h, layer, :n]
                else:
                    array[start:start + n, h, layer, :] = values[h, layer, :n]
        row = start // array.chunks[0]
        write_checksums(self.path, row, chunk_checksums(values[:, :, :n], n, array.chunks[0]))
        end = first_window + n // layout.window
        if end > self.windows_written:  # not a repair: count it
            self.windows_written = end
            write_progress(self.path, end, chunk_bytes=self._chunk_bytes())

    def _chunk_bytes(self) -> int:
        return int(np.prod(self.array.chunks)) * self.array.dtype.itemsize

    def _close(self) -> None:
        self.jobs.put(None)
        self.thread.join()

    def finish(self) -> None:
        self._close()
        if self.error is not None:
            raise self.error
        write_progress(self.path, self.layout.n_windows, complete=True,
                       chunk_bytes=self._chunk_bytes())

    def abort(self) -> None:
        """Write the batches already handed over, then stop."""
        self._close()
