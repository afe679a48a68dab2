"""Sinks: where the recorder sends the activations of every batch.

The recorder runs the model, gathers each batch's activations, layer by layer,
on the device where the layer runs, and hands them to a sink; it knows
nothing about what the sink does with them. A sink implements four calls:

``start(layout)``
    once, before the first batch, with the :class:`RecordingLayout`;
``write(blocks, first_window)``
    after each forward pass. ``blocks`` is a tuple with one tensor per
    recorded layer: ``blocks[i]`` holds the activations of layer
    ``layout.layers[i]``, shape ``(n_hooks, n_tokens, n_neurons)``, in
    ``layout.dtype``, on ``layout.devices[i]`` (the device the layer runs
    on: on a model split over several GPUs, the layers' blocks lie on
    different GPUs). The tensors are reused for the next batch: copy what you
    keep. The batch holds the windows ``first_window, first_window + 1, ...``,
    ``n_tokens // layout.tokens_per_window`` of them; with a token stride,
    only the positions ``layout.positions`` of each window;
``finish()`` / ``abort()``
    after the last batch, or instead when the recording fails.

and may implement a fifth, ``buffer(device, shape)``: before each batch the
recorder asks for a tensor of ``shape`` ``(n_hooks, n_layers_there, tokens,
neurons)`` on each ``device`` holding recorded layers, to gather them into;
a sink that returns one (instead of None) receives views of it in the next
``write`` and may keep it, which spares a copy.

A sink whose ``layerwise`` is True receives each layer as soon as the
forward pass has produced all its hook points, instead of whole batches:
``write_layer(position, block, first_window)`` with ``block`` of shape
``(n_hooks, n_tokens, n_neurons)`` (reused for the next layer: copy what you
keep), then ``write(None, first_window)`` once the batch is done. The
recorder then holds one layer's activations instead of all of them (on a
7B model, a batch of 16k tokens of two hook points is 46 GB of float32 for
all layers, 1.4 GB for one), and the sink reads them while they are fresh.

The recorder refuses a batch holding inf or NaN before handing it over, at
the cost of one more pass over the batch; a sink whose ``checks_finite`` is
True checks what it uses itself (an online estimator can read it from the
sums it takes anyway), and the recorder then leaves the check to it.

When several processes record together (see :func:`llmbrain.record` under
``torchrun``; ``layout.shared``), each process's sink receives that process's
batches only; an estimator combines its sums in ``finish`` with
:func:`llmbrain.distributed.all_reduce`.

:class:`ZarrSink` writes a store on disk (by a pool of writer threads, so the
next forward pass runs meanwhile), :class:`MemorySink` fills an in-memory
Dataset of the same layout, and :class:`SplitSink` shares one recording
between sinks by hook point. Anything else with these calls (an online
estimator updating its state, say) can be given to the recorder too.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from ._chunks import (ChunkLayout, aligned, crc32c, fsync_folder, host_buffer,
                      open_for_writing, write_all)
from .store import (FORMAT_VERSION, activation_dims, append_journal, write_checksums,
                    write_progress)

__all__ = ["ActivationSink", "MemorySink", "RecordingLayout", "SplitSink", "ZarrSink"]


def refuse_non_finite(block: torch.Tensor, hooks, layers, dtype: str, first_token: int) -> None:
    """Refuse a batch ``(hooks, layers, tokens, neurons)`` holding inf or NaN: they
    are never stored."""
    low, high = torch.aminmax(block)
    if bool(torch.isfinite(low)) and bool(torch.isfinite(high)):
        return
    bad = (~torch.isfinite(block)).flatten(2).any(-1).nonzero().tolist()
    h, position = bad[0]
    raise non_finite_error(layers[position], hooks[h] if len(hooks) > 1 else None, dtype,
                           first_token)


def non_finite_error(layer: int, hook: str | None, dtype: str, first_token: int) -> ValueError:
    """The error for inf or NaN activations at ``layer`` (and ``hook``)."""
    where = f"layer {layer}" + (f", hook {hook!r}" if hook is not None else "")
    if dtype == "float16":
        return ValueError(
            f"Activations at {where} (tokens from {first_token}) exceed float16's range "
            "(±65,504) or are not finite, and float16 would store them as inf/NaN. Record with "
            "dtype='float32' (and overwrite=True to replace this store). Nothing of this batch "
            "was written.")
    return ValueError(f"The model produced inf or NaN activations at {where} (tokens from "
                      f"{first_token}); nothing of this batch was written. Check the model "
                      "weights and their dtype.")


@dataclass(frozen=True)
class RecordingLayout:
    """What a sink receives: hook points, layers, neurons and tokens.

    Attributes
    ----------
    hooks : tuple of str
        Hook points, in the order of the blocks' first axis.
    layers : list of int
        Recorded layers, in the order of the blocks.
    neurons : list of int
        Neuron indices kept in every layer.
    dtype : str
        Storage type ("float16" or "float32"); blocks arrive in it.
    window : int
        Tokens per window run through the model.
    batch_windows : int
        Windows per batch (the last batch may hold fewer).
    n_windows : int
    coords : dict
        ``{name: (dim, values)}`` of the dataset (see
        :func:`~llmbrain.recording.store.layout_coords`).
    attrs : dict
        Attributes describing the recording.
    device : torch.device
        Where the input ids go (the device of the model's embeddings).
    token_stride : int
        Every ``token_stride``-th token of a window is kept (see
        ``positions``).
    devices : tuple of torch.device
        Device of each recorded layer's block.
    shared : bool
        Whether the batches are shared out among the processes of a group
        (``torchrun``): each process's sink then receives its own batches
        only, and an estimator adds its sums over the processes in
        ``finish``.
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
    token_stride: int
    devices: tuple
    shared: bool = False

    @property
    def positions(self) -> range:
        """Positions kept in each window: the last of every ``token_stride``."""
        return range(self.token_stride - 1, self.window, self.token_stride)

    @property
    def tokens_per_window(self) -> int:
        return len(self.positions)

    @property
    def n_tokens(self) -> int:
        """Tokens kept over the whole recording."""
        return self.n_windows * self.tokens_per_window


class ActivationSink:
    """Base class of sinks (see the module docstring)."""

    #: True: the sink refuses non-finite values itself (the recorder does not check).
    checks_finite = False
    #: True: the sink takes one layer at a time (:meth:`write_layer`).
    layerwise = False

    def start(self, layout: RecordingLayout) -> None:
        self.layout = layout

    def write(self, blocks: tuple | None, first_window: int) -> None:
        raise NotImplementedError

    def write_layer(self, position: int, block: torch.Tensor, first_window: int) -> None:
        """Layerwise sinks: the activations of ``layout.layers[position]``."""
        raise NotImplementedError

    def buffer(self, device: torch.device, shape: tuple) -> torch.Tensor | None:
        """Optional: where the recorder gathers the next batch's layers that run
        on ``device``; None lets the recorder use its own buffer."""
        return None

    def finish(self):
        """Called after the last batch; the return value is the recorder's."""
        return None

    def abort(self) -> None:
        """Called instead of :meth:`finish` when the recording fails."""


class MemorySink(ActivationSink):
    """Collect the activations in memory and return them as an xarray.Dataset
    with the layout of a store (no disk)."""

    def start(self, layout: RecordingLayout) -> None:
        if layout.shared:
            raise ValueError("A MemorySink would hold this process's batches only, the "
                             "others' left empty: record into a store, or with "
                             "distributed=False.")
        super().start(layout)
        shape = (layout.n_tokens, len(layout.hooks), len(layout.layers), len(layout.neurons))
        self.data = torch.empty(shape, dtype=getattr(torch, layout.dtype))

    def write(self, blocks: tuple, first_window: int) -> None:
        start = first_window * self.layout.tokens_per_window
        for i, block in enumerate(blocks):
            self.data[start:start + block.shape[1], :, i].copy_(block.permute(1, 0, 2))

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


class SplitSink(ActivationSink):
    """Share one recording between sinks, each receiving the hook points it names.

    Parameters
    ----------
    parts : sequence of (hooks, sink)
        ``hooks`` (str or tuple of str) are hook points of the recording;
        ``sink`` receives their blocks (views, in the order given) and a
        layout of those hook points only. A hook point may go to several sinks.

    ``finish()`` returns the list of the sinks' results, in the order of ``parts``.

    Examples
    --------
    One pass that fits online networks on the up and act outputs and measures
    the MLP's input::

        record(model, tokenizer, corpus, hook=("up", "act", "mlp"), sink=SplitSink(
            [(("up", "act"), networks.sink()), ("mlp", moments_sink)]))
    """

    def __init__(self, parts) -> None:
        self.parts = [((hooks,) if isinstance(hooks, str) else tuple(hooks), sink)
                      for hooks, sink in parts]
        if not self.parts:
            raise ValueError("SplitSink needs at least one (hooks, sink) part.")

    def start(self, layout: RecordingLayout) -> None:
        super().start(layout)
        self._select = []
        for hooks, sink in self.parts:
            missing = [hook for hook in hooks if hook not in layout.hooks]
            if missing:
                raise ValueError(f"The recording holds the hook points {list(layout.hooks)}, "
                                 f"not {missing}: record them too (hook="
                                 f"{tuple(layout.hooks) + tuple(missing)}).")
            index = [layout.hooks.index(hook) for hook in hooks]
            contiguous = index == list(range(index[0], index[0] + len(index)))
            self._select.append(slice(index[0], index[-1] + 1) if contiguous else index)
            coords = {name: value for name, value in layout.coords.items() if name != "hook"}
            if len(hooks) > 1:
                coords["hook"] = ("hook", np.asarray(hooks, dtype=str))
            attrs = {key: value for key, value in layout.attrs.items()
                     if key not in ("hook", "hooks")}
            attrs.update({"hook": hooks[0]} if len(hooks) == 1 else {"hooks": list(hooks)})
            sink.start(dataclasses.replace(layout, hooks=hooks, coords=coords, attrs=attrs))

    def write(self, blocks: tuple, first_window: int) -> None:
        for (_, sink), select in zip(self.parts, self._select):
            sink.write(tuple(block[select] for block in blocks), first_window)

    @property
    def checks_finite(self) -> bool:
        return all(sink.checks_finite for _, sink in self.parts)

    def finish(self) -> list:
        return [sink.finish() for _, sink in self.parts]

    def abort(self) -> None:
        for _, sink in self.parts:
            sink.abort()


class ZarrSink(ActivationSink):
    """Write the activations into an existing store (see
    :mod:`llmbrain.recording.store`), in the background.

    Each batch lands in a page-aligned host buffer laid out (hook, layer,
    token, neuron), so that every chunk is one contiguous slab: on the CPU
    the recorder gathers it there directly (see :meth:`buffer`), from GPUs
    it is copied once, into pinned memory. A pool of writer threads then
    writes the chunks side by side, straight from the buffer, and
    ``fsync``-s them.
    Batches are committed in order: only when all chunks of a batch are on
    disk are their checksums recorded and the batch counted in the progress
    record. Meanwhile the next batches are computed and written.

    Parameters
    ----------
    path : path
        The store, created beforehand.
    windows_written : int
        Windows already counted in its progress record. Batches before this
        point are repairs: their chunks and checksums are rewritten, the
        progress record is left alone.
    writers : int, optional
        Writer threads (default: 6 per CPU core, at most 16). Disks that
        serve many requests at once (NVMe, network file systems) are
        fastest with several.
    buffers : int, optional
        Host buffers of one batch each: while one is written the next batch
        is gathered into another. Default: 3 (the disk stays busy across the
        end of a batch), or 2 when a batch takes more than 1 GiB.
    bypass_cache : bool, default=True
        Write chunks whose size is a multiple of 4 KiB with ``O_DIRECT``,
        bypassing the page cache, where the file system allows it (others
        are written through the cache).
    journal : int, optional
        Rank of this process when several record the store together: its
        batches are then recorded in its own journal
        (``progress.rank<N>.jsonl``) instead of the shared checksums and
        progress record, and merged by
        :func:`~llmbrain.recording.store.merge_journals`.
    """

    def __init__(self, path, windows_written: int = 0, *, writers: int | None = None,
                 buffers: int | None = None, bypass_cache: bool = True,
                 journal: int | None = None):
        self.path = Path(path)
        self.bypass_cache = bool(bypass_cache)
        self.windows_written = int(windows_written)
        self.writers = int(writers or min(16, 6 * (os.cpu_count() or 1)))
        self.buffers = buffers
        self.journal = journal
        if self.writers < 1 or (buffers is not None and int(buffers) < 1):
            raise ValueError(f"writers and buffers must be at least 1, got {writers}, {buffers}.")

    def start(self, layout: RecordingLayout) -> None:
        super().start(layout)
        self.chunks = ChunkLayout(self.path)
        shape = (len(layout.hooks), len(layout.layers), layout.batch_windows *
                 layout.tokens_per_window, len(layout.neurons))
        if (self.chunks.per_row != shape[0] * shape[1] or self.chunks.tokens_per_chunk != shape[2]
                or self.chunks.n_neurons != shape[3]):
            raise ValueError(f"The store {self.path} does not have the layout of this recording.")
        self.gpus = sorted({d for d in layout.devices if d.type == "cuda"}, key=str)
        self.free: queue.Queue = queue.Queue()
        row_bytes = int(np.prod(shape)) * np.dtype(layout.dtype).itemsize
        for _ in range(int(self.buffers or (3 if row_bytes <= 1 << 30 else 2))):
            self.free.put(host_buffer(shape, layout.dtype, pin=bool(self.gpus)))
        self.given = None  # the host buffer handed out by buffer(), filled by the recorder
        self.direct = self.bypass_cache
        self.pool = ThreadPoolExecutor(self.writers, thread_name_prefix="llmbrain-writer")
        self.pending: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.committer = threading.Thread(target=self._commit_batches, daemon=True)
        self.committer.start()

    def buffer(self, device: torch.device, shape: tuple) -> torch.Tensor | None:
        """On the CPU, the recorder gathers each batch straight into a free host
        buffer (no copy)."""
        if self.gpus or self.error is not None or self.given is not None:
            return None
        host = self.free.get()
        if tuple(host.shape) != tuple(shape) or device != host.device:
            self.free.put(host)
            return None
        self.given = host
        return host

    def write(self, blocks: tuple, first_window: int) -> None:
        if self.error is not None:
            raise self.error
        n = blocks[0].shape[1]
        host, self.given = self.given, None
        if host is None:
            host = self.free.get()
            for i, block in enumerate(blocks):
                for h in range(block.shape[0]):  # contiguous on both sides: one direct copy
                    host[h, i, :n].copy_(block[h], non_blocking=block.is_cuda)
            for gpu in self.gpus:
                torch.cuda.synchronize(gpu)
        self._submit(host, first_window, n)

    def _submit(self, host: torch.Tensor, first_window: int, n: int) -> None:
        chunks = self.chunks
        row = first_window // self.layout.batch_windows
        slabs = host.numpy().reshape(-1, *host.shape[2:])  # (hook · layer, token, neuron)
        shard = None
        try:
            if chunks.sharded:
                file = chunks.file(row)
                file.parent.mkdir(parents=True, exist_ok=True)
                wanted = self.direct and n == slabs.shape[1] and aligned(slabs[0])
                shard, direct = open_for_writing(file, direct=wanted)
                self.direct = self.direct and direct == wanted  # refused: use the cache
            futures = [self.pool.submit(self._write_chunk, row, j, slabs[j, :n], shard)
                       for j in range(chunks.per_row)]
        except BaseException:
            if shard is not None:
                os.close(shard)
            self.free.put(host)
            raise
        self.pending.put((futures, host, first_window, n, shard))

    def _write_chunk(self, row: int, j: int, values: np.ndarray, shard: int | None) -> int:
        """Write chunk ``j`` of ``row`` (a shard's part, or its own file); its CRC-32C."""
        chunks = self.chunks
        parts = [values]
        if len(values) < chunks.tokens_per_chunk:  # the array's end: padded, as Zarr does
            parts.append(chunks.pad(len(values)))
        crc = None
        for part in parts:
            crc = crc32c(part, crc)
        if shard is not None:
            write_all(shard, parts, chunks.offset(j))
            return crc
        file = chunks.file(row, j)
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, direct = open_for_writing(file, direct=self.direct and len(parts) == 1
                                      and aligned(values))
        if self.direct and not direct and len(parts) == 1 and aligned(values):
            self.direct = False  # the file system refuses: write through the cache from now on
        try:
            write_all(fd, parts)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_folder(file.parent)  # its name: chunks of a row lie in different folders
        return crc

    def _commit_batches(self) -> None:
        """Count each batch, in order, once all its chunks are on disk."""
        while (item := self.pending.get()) is not None:
            futures, host, first_window, n, shard = item
            wait(futures)  # the buffer is reused only when no writer reads it
            try:
                sums = [future.result() for future in futures]
                if self.error is None:
                    self._commit(first_window, n, sums, shard)
            except BaseException as err:  # re-raised in the recording thread
                if self.error is None:
                    self.error = err
            finally:
                if shard is not None:
                    os.close(shard)
                self.free.put(host)

    def _commit(self, first_window: int, n: int, sums: list, shard: int | None) -> None:
        chunks, layout = self.chunks, self.layout
        row = first_window // layout.batch_windows
        if shard is not None:  # the index, through the cache: its size is not aligned
            fd = os.open(chunks.file(row), os.O_WRONLY)
            try:
                write_all(fd, [chunks.shard_index()], chunks.per_row * chunks.chunk_bytes)
                os.fsync(fd)
            finally:
                os.close(fd)
        for folder in chunks.folders(row, files=chunks.sharded):
            fsync_folder(folder)
        n_windows = n // layout.tokens_per_window
        if self.journal is not None:
            append_journal(self.path, self.journal, first_window, n_windows, sums)
            return
        write_checksums(self.path, row, sums)
        end = first_window + n_windows
        if end > self.windows_written:  # not a repair: count it
            self.windows_written = end
            write_progress(self.path, end, chunk_bytes=chunks.chunk_bytes)

    def _close(self) -> None:
        self.pending.put(None)
        self.committer.join()
        self.pool.shutdown(wait=True)

    def finish(self) -> None:
        self._close()
        if self.error is not None:
            raise self.error
        if self.journal is None:
            write_progress(self.path, self.layout.n_windows, complete=True,
                           chunk_bytes=self.chunks.chunk_bytes)

    def abort(self) -> None:
        """Write the batches already handed over, then stop."""
        self._close()
