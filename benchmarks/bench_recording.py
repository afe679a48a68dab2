"""Benchmark recording: throughput against the bare forward pass and the disk, and peak memory.

Throughput: the same token windows are run (a) through the model's base
(no language-model head, no hooks) and (b) through ``llmbrain.record`` into a
fresh store on disk; the ratio of tokens/s is printed. Both are measured in one
run, alternating, and the best of ``--repeats`` is kept for each.

Disk: ``--store-gb`` writes that many GB (a) as one file, sequentially, then
``fsync`` (what the disk can do, like ``dd conv=fsync``) and (b) as a store,
by feeding a ``ZarrSink`` synthetic blocks of the model's layout (the store's
writing alone, without any forward pass: chunks, checksums, ``fsync``,
progress record); the ratio of the two is printed. They alternate,
``--repeats`` times each.

Memory: ``llmbrain.record`` runs in a child process for each token count in
``--memory-tokens`` and its peak resident memory (ru_maxrss) is printed: it
must not grow with the number of tokens.

Usage::

    python benchmarks/bench_recording.py --tokens 8192 --memory-tokens 10000 100000
    python benchmarks/bench_recording.py --tokens 0 --store-gb 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def disk_bandwidth(folder, n_bytes: int, *, direct: bool = False,
                   block: int = 64 << 20) -> float:
    """Bytes/s of writing ``n_bytes`` of random data sequentially into one new file
    in ``folder`` in blocks of ``block`` bytes, then ``fsync`` (``dd bs=64M
    conv=fsync``); with ``direct``, bypassing the page cache (``dd
    oflag=direct``). The file is removed afterwards."""
    import mmap

    memory = mmap.mmap(-1, block)  # page-aligned, as O_DIRECT needs
    data = np.frombuffer(memory, dtype=np.uint8)
    data[:] = np.frombuffer(np.random.default_rng(0).bytes(block), dtype=np.uint8)
    n_bytes = -(-n_bytes // 4096) * 4096
    fd, name = tempfile.mkstemp(dir=folder, prefix="disk-", suffix=".bin")
    os.close(fd)
    fd = os.open(name, os.O_WRONLY | (os.O_DIRECT if direct else 0))
    try:
        start = time.perf_counter()
        written = 0
        while written < n_bytes:
            view = memoryview(data[:min(block, n_bytes - written)])
            while view.nbytes:
                n = os.write(fd, view)
                view, written = view[n:], written + n
        os.fsync(fd)
        seconds = time.perf_counter() - start
    finally:
        os.close(fd)
        os.unlink(name)
    return n_bytes / seconds


def batch_bytes(*, n_layers: int, n_neurons: int, tokens_per_batch: int,
                dtype: str = "float16", **_) -> int:
    return n_layers * tokens_per_batch * n_neurons * np.dtype(dtype).itemsize


def store_batches(n_bytes: int, **layout) -> int:
    """Batches of :func:`store_bandwidth` for about ``n_bytes``: at least 2, so that
    writing one overlaps the hand-over of the next as in a recording."""
    return max(2, round(n_bytes / batch_bytes(**layout)))


def store_bandwidth(folder, n_bytes: int, *, n_layers: int, n_neurons: int,
                    tokens_per_batch: int, dtype: str = "float16", sharded: bool = False,
                    writers: int | None = None, device: str = "cpu") -> float:
    """Bytes/s of a ``ZarrSink`` writing about ``n_bytes`` of synthetic blocks
    (random values) into a new store in ``folder``; nothing else runs meanwhile.

    The blocks reach the sink as the recorder hands them over: on the CPU in
    the host buffers the sink offers (filled with random values once, before
    the clock starts), on a GPU as device tensors that the sink copies to
    the host. Timed from the first batch until ``finish`` returns (every
    chunk on disk, checksums and progress record written)."""
    from llmbrain.recording import RecordingLayout, ZarrSink
    from llmbrain.recording.store import create_store, layout_coords

    itemsize = np.dtype(dtype).itemsize
    n_batches = store_batches(n_bytes, n_layers=n_layers, n_neurons=n_neurons,
                              tokens_per_batch=tokens_per_batch, dtype=dtype)
    n_tokens = n_batches * tokens_per_batch
    coords = layout_coords(n_tokens=n_tokens, hooks=("mlp",), layers=range(n_layers),
                           neurons=range(n_neurons), per_token={})
    layout = RecordingLayout(
        hooks=("mlp",), layers=list(range(n_layers)), neurons=list(range(n_neurons)),
        dtype=dtype, window=tokens_per_batch, batch_windows=1, n_windows=n_batches,
        coords=coords, attrs={"window_length": tokens_per_batch, "batch_windows": 1,
                              "n_tokens": n_tokens}, device=torch.device(device),
        token_stride=1, devices=(torch.device(device),) * n_layers)
    block = torch.randn((1, n_layers, tokens_per_batch, n_neurons), device=device,
                        dtype=getattr(torch, dtype))
    blocks = tuple(block[:, i] for i in range(n_layers))
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        path = Path(tmp) / "synthetic.zarr"
        create_store(path, hooks=("mlp",), tokens_per_chunk=tokens_per_batch, dtype=dtype,
                     coords=coords, attrs=layout.attrs, sharded=sharded)
        sink = ZarrSink(path, writers=writers)
        sink.start(layout)
        for host in list(sink.free.queue):
            host.copy_(block)
        start = time.perf_counter()
        for batch in range(n_batches):
            given = sink.buffer(block.device, tuple(block.shape))
            sink.write(blocks if given is None else tuple(given[:, i] for i in range(n_layers)),
                       batch)
        sink.finish()
        seconds = time.perf_counter() - start
    return n_batches * block.numel() * itemsize / seconds


def disk_and_store(folder, n_bytes: int, repeats: int, **layout) -> dict:
    """Alternate :func:`disk_bandwidth` (through the page cache and bypassing it)
    and :func:`store_bandwidth`, ``repeats`` times.

    ``ratio``: the store's best run over the disk's best run of either kind;
    ``paired_ratio``: the median over the repeats of the store's run over the
    better of the two disk runs just before it (on a disk that others use
    too, runs close in time see the same load)."""
    runs: dict = {"disk": [], "disk_direct": [], "store": []}
    n_bytes = store_batches(n_bytes, **layout) * batch_bytes(**layout)  # the store's bytes
    for _ in range(repeats):
        runs["disk"].append(disk_bandwidth(folder, n_bytes))
        runs["disk_direct"].append(disk_bandwidth(folder, n_bytes, direct=True))
        runs["store"].append(store_bandwidth(folder, n_bytes, **layout))
    runs["disk_best"] = max(runs["disk"] + runs["disk_direct"])
    runs["ratio"] = max(runs["store"]) / runs["disk_best"]
    runs["paired_ratio"] = float(np.median([s / max(d, dd) for s, d, dd in zip(
        runs["store"], runs["disk"], runs["disk_direct"])]))
    return runs


def _gbps(values) -> str:
    return ", ".join(f"{v / 1e9:.3f}" for v in values)


def _windows(tokenizer, n_tokens, window):
    from llmbrain.corpus import load_corpus, tokenize_windows

    windows = tokenize_windows(load_corpus("default"), tokenizer, window, max_tokens=n_tokens)
    if windows.n_tokens < n_tokens:  # the built-in corpus is ~110k tokens: repeat it
        reps = -(-n_tokens // windows.n_tokens)
        docs = load_corpus("default") * reps
        windows = tokenize_windows(docs, tokenizer, window, max_tokens=n_tokens)
    return windows


def bare_forward(model, input_ids, batch_size, device):
    base = model.base_model
    start = time.perf_counter()
    with torch.inference_mode():
        for begin in range(0, len(input_ids), batch_size):
            batch = torch.as_tensor(input_ids[begin:begin + batch_size], dtype=torch.long,
                                    device=device)
            base(input_ids=batch, use_cache=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def throughput(args):
    import llmbrain

    model, tokenizer = llmbrain.load_model(args.model, device=args.device)
    device = next(model.parameters()).device
    windows = _windows(tokenizer, args.tokens, args.window)
    n = windows.n_tokens
    bare_forward(model, windows.input_ids[:args.batch_size], args.batch_size, device)  # warm-up
    bare, rec = [], []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for repeat in range(args.repeats):
            bare.append(bare_forward(model, windows.input_ids, args.batch_size, device))
            store = Path(tmp) / f"bench-{repeat}.zarr"
            start = time.perf_counter()
            llmbrain.record(model, tokenizer, windows, store, window=args.window,
                            batch_size=args.batch_size, progress=False)
            rec.append(time.perf_counter() - start)
    bare_tps, rec_tps = n / min(bare), n / min(rec)
    print(f"device: {device}, threads: {torch.get_num_threads()}, tokens: {n:,} "
          f"({len(windows)} windows x {args.window}), batch {args.batch_size}")
    print(f"bare forward (no lm_head, no hooks): {bare_tps:,.0f} tokens/s  (runs: "
          f"{', '.join(f'{n / t:,.0f}' for t in bare)})")
    print(f"llmbrain.record (all layers to Zarr): {rec_tps:,.0f} tokens/s  (runs: "
          f"{', '.join(f'{n / t:,.0f}' for t in rec)})")
    print(f"ratio record / bare: {rec_tps / bare_tps:.3f}")


def memory_child(args):
    import llmbrain

    model, tokenizer = llmbrain.load_model(args.model, device=args.device)
    windows = _windows(tokenizer, args.child_tokens, args.window)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        start = time.perf_counter()
        ds = llmbrain.record(model, tokenizer, windows, Path(tmp) / "mem.zarr",
                             window=args.window, batch_size=args.batch_size, progress=False)
        seconds = time.perf_counter() - start
        size = ds["activations"].nbytes
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"tokens": windows.n_tokens, "peak_rss": peak, "store_bytes": size,
                      "seconds": seconds}))


def memory(args):
    for n_tokens in args.memory_tokens:
        cmd = [sys.executable, __file__, "--child-tokens", str(n_tokens), "--model", args.model,
               "--device", args.device, "--window", str(args.window),
               "--batch-size", str(args.batch_size)] + (["--tmp", args.tmp] if args.tmp else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        print(f"memory: {result['tokens']:>9,} tokens -> store {result['store_bytes'] / 1e9:6.2f}"
              f" GB, peak RSS {result['peak_rss'] / 1e9:.2f} GB, {result['seconds']:.0f} s "
              f"({result['tokens'] / result['seconds']:,.0f} tokens/s)")


def disk(args):
    import llmbrain

    model, _ = llmbrain.load_model(args.model)
    adapter = llmbrain.models.get_adapter(model)
    n_layers, n_neurons = adapter.n_layers(model), adapter.neurons_per_layer(model)[0]
    del model
    folder = args.tmp or tempfile.gettempdir()
    result = disk_and_store(folder, int(args.store_gb * 1e9), args.repeats, n_layers=n_layers,
                            n_neurons=n_neurons, tokens_per_batch=args.batch_size * args.window,
                            sharded=args.sharded, writers=args.writers)
    print(f"disk, sequential write of {args.store_gb:g} GB in {folder}, 64 MB blocks + fsync: "
          f"{max(result['disk']) / 1e9:.3f} GB/s (runs: {_gbps(result['disk'])}); bypassing "
          f"the page cache (O_DIRECT): {max(result['disk_direct']) / 1e9:.3f} GB/s (runs: "
          f"{_gbps(result['disk_direct'])})")
    print(f"store writing (ZarrSink, synthetic blocks of {n_layers} layers x {n_neurons} "
          f"neurons x {args.batch_size * args.window} tokens, float16"
          f"{', sharded' if args.sharded else ''}): {max(result['store']) / 1e9:.3f} GB/s  "
          f"(runs: {_gbps(result['store'])})")
    print(f"ratio store / disk: {result['ratio']:.2f} (best runs, the disk's best of both "
          f"kinds); {result['paired_ratio']:.2f} (median of the runs paired in time)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--memory-tokens", type=int, nargs="*", default=[])
    parser.add_argument("--store-gb", type=float, default=0,
                        help="GB written to measure the disk and the store's writing")
    parser.add_argument("--sharded", action="store_true", help="sharded store (--store-gb)")
    parser.add_argument("--writers", type=int, help="writer threads of the store (--store-gb)")
    parser.add_argument("--tmp", help="folder for the temporary stores")
    parser.add_argument("--child-tokens", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_tokens:
        memory_child(args)
        return
    print("command: python " + shlex.join([sys.argv[0]] + sys.argv[1:]))
    if args.tokens:
        throughput(args)
    if args.memory_tokens:
        memory(args)
    if args.store_gb:
        disk(args)


if __name__ == "__main__":
    main()
