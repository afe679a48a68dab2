"""Benchmark recording: throughput against the bare forward pass, and peak memory.

Throughput: the same token windows are run (a) through the model's base
(no language-model head, no hooks) and (b) through ``llmbrain.record`` into a
fresh store on disk; the ratio of tokens/s is printed. Both are measured in one
run, alternating, and the best of ``--repeats`` is kept for each.

Memory: ``llmbrain.record`` runs in a child process for each token count in
``--memory-tokens`` and its peak resident memory (ru_maxrss) is printed: it
must not grow with the number of tokens.

Usage::

    python benchmarks/bench_recording.py --tokens 8192 --memory-tokens 10000 100000
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--memory-tokens", type=int, nargs="*", default=[])
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


if __name__ == "__main__":
    main()
