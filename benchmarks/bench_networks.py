"""Benchmark of llmbrain.networks: agreement with nilearn, speed, and scale.

Parts (``--parts``, comma-separated):

* ``compare``: the same activations decomposed by the torch backend and by
  nilearn's CanICA (end to end, including building the NIfTI images): mean
  matched |r| of the maps (bar: >= 0.9) and the speed-up of torch over nilearn
  (bar: >= 2x on CPU at 10k tokens x 46,080 voxels, >= 20x on a GPU).
* ``stream``: a store on disk at least ``--stream-factor`` times larger than the
  memory allowed to the streaming path (``max_memory_gb``) is decomposed; the
  peak resident memory added during the fit is reported.
* ``big``: a 7B-shaped layout (``--big-layers`` x ``--big-neurons``, synthetic
  data) decomposed on ``--device``.

Data for ``compare``: ``--store PATH`` (a recorded store), ``--record N``
(record N tokens of the default model's corpus first), or synthetic planted
networks (default) of ``--tokens`` x ``--layers`` x ``--neurons``.

Examples::

    python benchmarks/bench_networks.py --parts compare --tokens 10000
    python benchmarks/bench_networks.py --parts compare --record 10000 --device cuda
    python benchmarks/bench_networks.py --parts stream,big --device cuda --big-tokens 16000
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from scipy.optimize import linear_sum_assignment


def matched_abs_r(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    a = (a - a.mean(1, keepdims=True)) / a.std(1, keepdims=True)
    b = (b - b.mean(1, keepdims=True)) / b.std(1, keepdims=True)
    r = np.abs(a @ b.T) / a.shape[1]
    rows, cols = linear_sum_assignment(-r)
    return r[rows, cols]


class PeakRSS:
    """Sample this process's resident memory in a thread; report the peak increase."""

    def __init__(self, interval: float = 0.01):
        self.interval = interval

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        self.base = self.peak = self.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def added_gb(self) -> float:
        return (self.peak - self.base) / 1e9


def synthetic(n_tokens: int, n_layers: int, n_neurons: int, n_networks: int = 20,
              network_size: int = 200, noise: float = 1.0, seed: int = 0,
              device: str = "cpu", chunk: int = 1024) -> np.ndarray:
    """Planted sparse networks (float16, tokens x layers x neurons), generated in torch."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    n_vox = n_layers * n_neurons
    maps = torch.zeros(n_networks, n_vox)
    for i in range(n_networks):
        idx = torch.randperm(n_vox, generator=gen)[:network_size]
        maps[i, idx] = torch.rand(network_size, generator=gen) + 1.0
    maps = maps.to(device)
    out = np.empty((n_tokens, n_layers, n_neurons), dtype=np.float16)
    gdev = torch.Generator(device=device).manual_seed(seed + 1)
    lap = torch.distributions.Laplace(0.0, 1.0)
    for start in range(0, n_tokens, chunk):
        t = min(chunk, n_tokens - start)
        courses = lap.sample((t, n_networks)).to(device) * 3
        courses *= (torch.rand(t, n_networks, generator=gdev, device=device) < 0.3)
        x = courses @ maps + noise * torch.randn(t, n_vox, generator=gdev, device=device)
        out[start:start + t] = x.to(torch.float16).cpu().numpy().reshape(t, n_layers, n_neurons)
    return out


def as_dataarray(values: np.ndarray) -> xr.DataArray:
    n_tokens, n_layers, n_neurons = values.shape
    return xr.DataArray(values, dims=("token", "layer", "neuron"),
                        coords={"layer": np.arange(n_layers), "neuron": np.arange(n_neurons),
                                "document": ("token", np.arange(n_tokens) // 256),
                                "position": ("token", np.arange(n_tokens) % 256)})


def write_store(path: Path, values_fn, n_tokens: int, n_layers: int, n_neurons: int,
                chunk: int = 2048) -> Path:
    """A synthetic activation store on disk, written chunk by chunk."""
    from llmbrain.recording.store import create_store, mark_progress

    coords = {"document": np.arange(n_tokens, dtype=np.int32) // 256,
              "position": np.arange(n_tokens, dtype=np.int32) % 256,
              "token_id": np.zeros(n_tokens, dtype=np.int32),
              "token_text": np.array([""] * n_tokens)}
    group = create_store(path, n_tokens=n_tokens, layers=list(range(n_layers)),
                         neurons=list(range(n_neurons)), dtype="float16",
                         tokens_per_chunk=chunk, coords=coords,
                         attrs={"model": "synthetic", "hook": "mlp", "window_length": 256,
                                "n_tokens": n_tokens, "dtype": "float16"})
    array = group["activations"]
    for start in range(0, n_tokens, chunk):
        t = min(chunk, n_tokens - start)
        array[start:start + t] = values_fn(start, t)
    mark_progress(path, n_tokens // 256, complete=True)
    return path


def record_store(n_tokens: int, folder: Path) -> Path:
    import llmbrain

    model, tok = llmbrain.load_model("default")
    path = folder / "bench_record.zarr"
    llmbrain.record(model, tok, "default", path, max_tokens=n_tokens, overwrite=True)
    return path


def part_compare(args, data: xr.DataArray) -> None:
    from llmbrain.networks import FunctionalNetworks
    from llmbrain.volumes import to_volumes

    n_tokens, n_layers, n_neurons = data.shape
    print(f"[compare] {n_tokens} tokens x {n_layers * n_neurons} voxels, k={args.components}, "
          f"{args.groups} groups, {args.restarts} restarts, fun={args.fun}")
    common = dict(n_components=args.components, scope="all", n_groups=args.groups,
                  n_init=args.restarts, random_state=args.seed, verbose=0)
    times = {}
    for device in args.device.split(","):
        if device.startswith("cuda"):
            # warm-up: CUDA context and kernels (not counted)
            FunctionalNetworks(**{**common, "n_init": 1}, fun=args.fun,
                               device=device).fit(data.isel(token=slice(0, 512)))
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch_est = FunctionalNetworks(**common, fun=args.fun, device=device).fit(data)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times[device] = time.perf_counter() - start
        print(f"  torch ({device}): {times[device]:.2f} s end to end from host memory")
    if args.skip_nilearn:
        return
    start = time.perf_counter()
    for g in np.array_split(np.arange(n_tokens), args.groups):
        to_volumes(data.isel(token=slice(int(g[0]), int(g[-1]) + 1)))
    t_images = time.perf_counter() - start
    start = time.perf_counter()
    nilearn_est = FunctionalNetworks(**common, backend="nilearn").fit(data)
    t_nilearn = time.perf_counter() - start
    r = matched_abs_r(torch_est.components_.values, nilearn_est.components_.values)
    agree = float((torch_est.key_neurons_ == nilearn_est.key_neurons_).mean())
    print(f"  nilearn CanICA (cpu), end to end: {t_nilearn:.2f} s "
          f"(of which building the images ~{t_images:.2f} s)")
    for device, seconds in times.items():
        print(f"  speed-up torch ({device}) over nilearn: {t_nilearn / seconds:.1f}x")
    print(f"  agreement: matched |r| mean {r.mean():.3f}, median {np.median(r):.3f}, "
          f"min {r.min():.3f}; key-neuron masks agree on {100 * agree:.2f}% of neurons "
          f"(threshold {torch_est.threshold_})")
    if args.stability:
        # the noise floor of the comparison: each backend against itself with another seed
        other = {**common, "random_state": args.seed + 1}
        torch_b = FunctionalNetworks(**other, fun=args.fun, device=device).fit(data)
        nilearn_b = FunctionalNetworks(**other, backend="nilearn").fit(data)
        r_t = matched_abs_r(torch_est.components_.values, torch_b.components_.values)
        r_n = matched_abs_r(nilearn_est.components_.values, nilearn_b.components_.values)
        r_x = matched_abs_r(torch_b.components_.values, nilearn_b.components_.values)
        print(f"  stability (seed {args.seed} vs {args.seed + 1}): torch-torch mean |r| "
              f"{r_t.mean():.3f} (min {r_t.min():.3f}); nilearn-nilearn {r_n.mean():.3f} "
              f"(min {r_n.min():.3f}); torch-nilearn at seed {args.seed + 1}: {r_x.mean():.3f}")


def part_stream(args, folder: Path) -> None:
    from llmbrain.networks import FunctionalNetworks

    device = args.device.split(",")[0]
    n_vox = args.stream_layers * args.stream_neurons
    store_gb = args.stream_tokens * n_vox * 2 / 1e9
    memory_gb = store_gb / args.stream_factor
    gen = torch.Generator().manual_seed(args.seed)
    maps = torch.zeros(args.components, n_vox)
    for i in range(args.components):
        maps[i, torch.randperm(n_vox, generator=gen)[:max(10, n_vox // 200)]] = 2.0

    def values(start, t):
        g = torch.Generator().manual_seed(args.seed + start)
        courses = torch.randn(t, args.components, generator=g) ** 3
        x = courses @ maps + torch.randn(t, n_vox, generator=g)
        return x.to(torch.float16).numpy().reshape(t, args.stream_layers, args.stream_neurons)

    path = write_store(folder / "stream.zarr", values, args.stream_tokens, args.stream_layers,
                       args.stream_neurons)
    print(f"[stream] store {args.stream_tokens} tokens x {n_vox} voxels = {store_gb:.3f} GB "
          f"(float16) on disk; max_memory_gb={memory_gb:.3f} ({args.stream_factor:g}x smaller)")
    est = FunctionalNetworks(args.components, scope="all", max_memory_gb=memory_gb,
                             n_init=args.restarts, device=device, verbose=0,
                             random_state=args.seed)
    # warm-up on a few tokens: libraries' one-time buffers are not the streaming path's
    from llmbrain import open_activations

    warm = open_activations(path)["activations"].isel(token=slice(0, 256)).load()
    FunctionalNetworks(args.components, scope="all", n_init=1, device=device,
                       verbose=0).fit(warm)
    del warm
    start = time.perf_counter()
    with PeakRSS() as mem:
        est.fit(path)
    seconds = time.perf_counter() - start
    r = matched_abs_r(est.components_.values, maps.numpy())
    print(f"  {est.fit_info_['units'][0]['n_groups']} groups streamed in {seconds:.2f} s; "
          f"peak resident memory added during fit {mem.added_gb:.3f} GB "
          f"({mem.added_gb / store_gb:.2f}x the store); planted maps recovered with matched "
          f"|r| mean {r.mean():.3f}, min {r.min():.3f}")


def part_big(args) -> None:
    from llmbrain.networks import FunctionalNetworks

    args.device = args.device.split(",")[0]
    n_vox = args.big_layers * args.big_neurons
    gen_device = args.device if args.device.startswith("cuda") else "cpu"
    start = time.perf_counter()
    values = synthetic(args.big_tokens, args.big_layers, args.big_neurons,
                       n_networks=args.big_components, network_size=max(50, n_vox // 500),
                       seed=args.seed, device=gen_device)
    print(f"[big] {args.big_tokens} tokens x {args.big_layers} layers x {args.big_neurons} "
          f"neurons = {n_vox} voxels ({values.nbytes / 1e9:.2f} GB float16 in host memory, "
          f"generated in {time.perf_counter() - start:.1f} s), k={args.big_components}, "
          f"scope={args.big_scope}")
    data = as_dataarray(values)
    est = FunctionalNetworks(args.big_components, scope=args.big_scope, n_groups=args.groups,
                             n_init=args.restarts, device=args.device, verbose=0,
                             random_state=args.seed)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    est.fit(data)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    extra = ""
    if args.device.startswith("cuda"):
        extra = f", peak GPU memory {torch.cuda.max_memory_allocated() / 1e9:.2f} GB"
    print(f"  fit on {args.device}: {seconds:.2f} s (host-to-device copies included){extra}; "
          f"{int(est.key_neurons_.sum())} key neurons at |z| > {est.threshold_}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="compare,stream,big")
    parser.add_argument("--store", help="recorded activation store for 'compare'")
    parser.add_argument("--record", type=int, help="record this many tokens for 'compare'")
    parser.add_argument("--tokens", type=int, default=2000, help="synthetic tokens for 'compare'")
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--neurons", type=int, default=1536)
    parser.add_argument("--components", type=int, default=20)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--fun", default="cube", help="FastICA contrast of the torch backend "
                        "(nilearn's CanICA uses cube)")
    parser.add_argument("--device", default="cpu",
                        help="torch device(s); 'compare' times each of a comma-separated list, "
                             "'stream' and 'big' use the first")
    parser.add_argument("--skip-nilearn", action="store_true")
    parser.add_argument("--stability", action="store_true",
                        help="also refit both backends with another seed (agreement noise floor)")
    parser.add_argument("--stream-tokens", type=int, default=6000)
    parser.add_argument("--stream-layers", type=int, default=4)
    parser.add_argument("--stream-neurons", type=int, default=1536)
    parser.add_argument("--stream-factor", type=float, default=4.0)
    parser.add_argument("--big-tokens", type=int, default=1000)
    parser.add_argument("--big-layers", type=int, default=32)
    parser.add_argument("--big-neurons", type=int, default=11008)
    parser.add_argument("--big-components", type=int, default=64)
    parser.add_argument("--big-scope", default="all", choices=["all", "layer"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--workdir", help="folder for temporary stores (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print("command: python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]))
    print(f"torch {torch.__version__}, device(s) {args.device}, {torch.get_num_threads()} CPU "
          "threads" + (f", GPU {torch.cuda.get_device_name()}" if "cuda" in args.device else ""))
    parts = set(args.parts.split(","))
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp)
        if "compare" in parts:
            if args.store or args.record:
                from llmbrain import open_activations

                path = args.store or record_store(args.record, folder)
                data = open_activations(path)["activations"].astype(np.float32).load()
                print(f"data: store {path} ({data.attrs.get('model', '')})")
            else:
                data = as_dataarray(synthetic(args.tokens, args.layers, args.neurons,
                                              n_networks=args.components, seed=args.seed))
                print("data: synthetic planted networks")
            part_compare(args, data)
            del data
        if "stream" in parts:
            part_stream(args, folder)
        if "big" in parts:
            part_big(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
