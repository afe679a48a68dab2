"""Where the chunks of a store lie on disk, and how they are written durably.

A store's ``activations`` array is cut along ``token`` into *rows* (one per
batch of windows); a row holds one chunk per (hook,) layer, each
``tokens_per_chunk × n_neurons`` values. A chunk is either its own file (the
default) or a part of its row's *shard* (Zarr v3 sharding codec: the chunks of
a row one after the other, then an index of their offsets and sizes and the
CRC-32C of that index), which keeps the number of files down.

Chunks are written as raw bytes straight from the host buffer (the store is
uncompressed, so the bytes on disk are the little-endian values): no encoding
step, no copy. Where the file system allows it and the chunk is aligned, the
write bypasses the page cache (``O_DIRECT``): the disk reads the buffer
itself, the memory is not copied once more, and a store larger than the
memory does not push everything else out of the cache. Every chunk file is
``fsync``-ed, and so are the folders that name it, before the chunk is counted
anywhere.
"""

from __future__ import annotations

import errno
import mmap
import os
from pathlib import Path

import google_crc32c
import numpy as np
import zarr

__all__ = ["ALIGNMENT", "ChunkLayout", "aligned", "crc32c", "fsync_folder", "host_buffer",
           "open_for_writing", "write_all"]

#: Alignment (bytes) of the memory, offsets and sizes of writes that bypass the page cache.
ALIGNMENT = 4096
_DIRECT = getattr(os, "O_DIRECT", 0)


def aligned(values: np.ndarray) -> bool:
    """Whether ``values`` can be written bypassing the page cache."""
    return bool(_DIRECT) and values.ctypes.data % ALIGNMENT == 0 and \
        values.nbytes % ALIGNMENT == 0


def host_buffer(shape, dtype: str, pin: bool):
    """A page-aligned host tensor (pinned for fast copies from a GPU when ``pin``)."""
    import torch

    if pin:
        return torch.empty(shape, dtype=getattr(torch, dtype), pin_memory=True)
    n_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    memory = mmap.mmap(-1, max(n_bytes, 1))  # anonymous mapping: page-aligned, zero pages
    return torch.from_numpy(np.frombuffer(memory, dtype=dtype, count=int(np.prod(shape)))
                            .reshape(shape))


def open_for_writing(file: Path, *, direct: bool, truncate: bool = True) -> tuple[int, bool]:
    """Open ``file`` for writing, bypassing the page cache if ``direct`` and the
    file system allows it; returns ``(fd, direct)``."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else 0)
    if direct and _DIRECT:
        try:
            return os.open(file, flags | _DIRECT, 0o666), True
        except OSError as err:  # EINVAL: a file system without O_DIRECT (tmpfs, ...)
            if err.errno != errno.EINVAL:
                raise
    return os.open(file, flags, 0o666), False


def crc32c(values: np.ndarray, crc: int | None = None) -> int:
    """CRC-32C of the bytes of a C-contiguous array (extending ``crc``), without a copy."""
    view = values.view()
    view.flags.writeable = False  # google_crc32c takes read-only buffers only
    return google_crc32c.value(view) if crc is None else google_crc32c.extend(crc, view)


def write_all(fd: int, parts, offset: int = 0) -> int:
    """Write the buffers ``parts`` at ``offset`` of the file ``fd`` (all of them:
    a large write may be cut short by the system). Returns the end offset."""
    for part in parts:
        view = memoryview(part).cast("B")
        while view.nbytes:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n
    return offset


def fsync_folder(folder: Path) -> None:
    """Make the names in ``folder`` durable (a new file is not, until its folder is)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ChunkLayout:
    """The chunks of the ``activations`` array of the store at ``path``.

    Chunk ``j`` of a row is the ``j``-th (hook,) layer in C order, i.e. the
    ``j``-th ``(tokens, neurons)`` slab of a ``(hooks, layers, tokens,
    neurons)`` host buffer.
    """

    def __init__(self, path):
        self.root = Path(path) / "activations"
        array = zarr.open_array(self.root, mode="r")
        self.dtype = array.dtype
        self.tokens_per_chunk = int(array.chunks[0])
        self.n_neurons = int(array.chunks[-1])
        self.chunk_bytes = int(np.prod(array.chunks)) * array.dtype.itemsize
        self.sharded = array.shards is not None
        self.others = list(np.ndindex(*array.cdata_shape[1:]))  # chunk grid of a row
        self.n_rows = int(array.cdata_shape[0])
        self._encode = array.metadata.encode_chunk_key
        self._pads: dict[int, np.ndarray] = {}

    @property
    def per_row(self) -> int:
        """Chunks per row."""
        return len(self.others)

    @property
    def file_bytes(self) -> int:
        """Size of a complete chunk file (or shard file)."""
        if self.sharded:
            return self.per_row * self.chunk_bytes + len(self.shard_index())
        return self.chunk_bytes

    def file(self, row: int, j: int = 0) -> Path:
        """The file holding chunk ``j`` of ``row``."""
        index = (row,) + ((0,) * len(self.others[0]) if self.sharded else self.others[j])
        return self.root / self._encode(index)

    def offset(self, j: int) -> int:
        """Where chunk ``j`` starts in its file."""
        return j * self.chunk_bytes if self.sharded else 0

    def files(self, row: int) -> list[tuple[Path, list[int]]]:
        """The files of ``row``, each with the chunks it holds."""
        if self.sharded:
            return [(self.file(row), list(range(self.per_row)))]
        return [(self.file(row, j), [j]) for j in range(self.per_row)]

    def chunk_index(self, row: int, j: int) -> tuple:
        return (row, *self.others[j])

    def shard_index(self) -> bytes:
        """The index that ends a shard: (offset, size) of every chunk, then its CRC-32C."""
        starts = np.arange(self.per_row, dtype="<u8") * self.chunk_bytes
        index = np.stack([starts, np.full_like(starts, self.chunk_bytes)], axis=1).tobytes()
        return index + np.uint32(google_crc32c.value(index)).astype("<u4").tobytes()

    def pad(self, n_tokens: int) -> np.ndarray:
        """The fill values (NaN) that complete a chunk of ``n_tokens`` tokens, as Zarr
        writes a chunk cut short by the end of the array."""
        missing = self.tokens_per_chunk - n_tokens
        if missing not in self._pads:
            self._pads[missing] = np.full((missing, self.n_neurons), np.nan, dtype=self.dtype)
        return self._pads[missing]

    def folders(self, row: int, files: bool = True) -> list[Path]:
        """The folders naming the files of ``row`` (with ``files``) and those folders,
        deepest first, up to the array's."""
        folders: list[Path] = []
        for file, _ in self.files(row):
            for parent in list(file.parents)[0 if files else 1:]:
                if parent not in folders:
                    folders.append(parent)
                if parent == self.root:
                    break
        return sorted(folders, key=lambda p: len(p.parts), reverse=True)
