"""The online sketch's test matrix: accuracy of the principal maps and cost per block.

Records SmolLM2's up and act values for a few layers over the built-in corpus
(``--tokens`` tokens), takes each layer's exact top principal maps (the exact
correlation matrix, as ``sketch_size=None``) and sketches the same tokens with
each design of the test matrix, ``--seeds`` seeds each:

* ``kronecker``: the default, a Kronecker product of two small Gaussian
  matrices with orthonormal columns per hook point, Nyström shifted;
* ``kronecker, no shift``: the same without the shift of the Nyström
  approximation;
* ``kronecker over both hooks``: one Kronecker product over all the layer's
  voxels (the sketch built for one group, fed (tokens, voxels) blocks), so
  that a neuron's up and act values share a row of one factor;
* ``dense``: a dense Gaussian matrix with orthonormal columns (the factors'
  sizes refused), Nyström shifted;
* ``kronecker, Gaussian columns`` and ``dense, Gaussian columns``: the same
  without orthonormalising the columns, and ``kronecker, Gaussian columns, no
  shift`` without the shift either.

For each design it prints the cosines of the principal angles between the
sketched and the exact top maps (mean over layers and seeds, the worst case,
and how many layer-seed cases fall below 0.99), and the milliseconds of one
sketch update of a block of ``--block`` tokens (median of runs taken in
alternation with the other designs, in this process). Results go to
``benchmarks/results/online/sketch.{csv,txt}``.

Usage::

    nice -n 10 python benchmarks/bench_sketch.py          # CPU, ~12 minutes
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results" / "online"
DESIGNS = ("kronecker", "kronecker, no shift", "kronecker over both hooks", "dense",
           "kronecker, Gaussian columns", "dense, Gaussian columns",
           "kronecker, Gaussian columns, no shift")


def sketch(design: str, n_voxels: int, size: int, seed: int):
    """An empty sketch of ``design`` and the block layout it takes: 3 (hooks, tokens,
    neurons) or 2 (tokens, voxels)."""
    from llmbrain.networks import _sketch

    _sketch._test_matrix.cache_clear()
    _sketch._MIN_FACTOR_COLUMNS = 10 ** 9 if design.startswith("dense") else 8
    _sketch._SHIFT = 0.0 if design.endswith("no shift") else 0.1
    _sketch._ORTHONORMAL = "Gaussian columns" not in design
    if design == "kronecker over both hooks":
        return _sketch.CorrelationSketch(n_voxels, size, device="cpu", seed=seed, groups=1), 2
    return _sketch.CorrelationSketch(n_voxels, size, device="cpu", seed=seed, groups=2), 3


def feed(sketcher, layout: int, blocks: torch.Tensor, block: int) -> None:
    """``blocks``: (hooks, tokens, neurons)."""
    for start in range(0, blocks.shape[1], block):
        part = blocks[:, start:start + block]
        sketcher.update(part if layout == 3 else part.transpose(0, 1).reshape(part.shape[1], -1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", default="1,8,15,22,29")
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--block", type=int, default=2048, help="tokens per sketch update")
    parser.add_argument("--size", type=int, default=512, help="columns of the sketch")
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    command = "python " + shlex.join([sys.argv[0]] + (sys.argv[1:] if argv is None else argv))
    print(command, flush=True)
    import llmbrain
    from llmbrain.networks import scaled_components
    from llmbrain.networks._sketch import CorrelationSketch

    layers = [int(v) for v in args.layers.split(",")]
    model, tokenizer = llmbrain.load_model("default", dtype=torch.float32)
    data = llmbrain.record(model, tokenizer, "default", None, hook=["up", "act"], layers=layers,
                           max_tokens=args.tokens, dtype="float32", progress=False)
    values = torch.from_numpy(np.ascontiguousarray(
        data["activations"].transpose("layer", "hook", "token", "neuron").values))
    n_hooks, n_tokens, width = values.shape[1:]
    n_voxels = n_hooks * width
    k = scaled_components(n_voxels)
    rows, cases = [], {design: [] for design in DESIGNS}
    for position, layer in enumerate(layers):
        blocks = values[position]
        exact = CorrelationSketch(n_voxels, None, device="cpu")
        feed(exact, 3, blocks, args.block)
        reference = exact.principal_maps(k)[0].double()
        for seed in range(args.seeds):
            for design in DESIGNS:
                sketcher, layout = sketch(design, n_voxels, args.size, seed)
                feed(sketcher, layout, blocks, args.block)
                maps = sketcher.principal_maps(k)[0].double()
                cosines = torch.linalg.svdvals(reference @ maps.T)
                cases[design].append((float(cosines.mean()), float(cosines.min())))
        print(f"layer {layer}: done", flush=True)
    timings = {design: [] for design in DESIGNS}
    block = values[0][:, :args.block].contiguous()
    for _ in range(7):                       # in alternation: the machine's load hits all alike
        for design in DESIGNS:
            sketcher, layout = sketch(design, n_voxels, args.size, 0)
            part = block if layout == 3 else block.transpose(0, 1).reshape(args.block, -1)
            sketcher.update(part)            # warm-up: buffers, factors on the device
            start = time.perf_counter()
            sketcher.update(part)
            timings[design].append(1e3 * (time.perf_counter() - start))
    for design in DESIGNS:
        mean, worst = np.array(cases[design]).T
        rows.append({"design": design, "cases": len(mean), "cos_mean": float(mean.mean()),
                     "cos_min": float(worst.min()), "cases_below_099": int((worst < 0.99).sum()),
                     "update_ms": float(np.median(timings[design]))})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "sketch.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"command: {command}",
             f"model: SmolLM2-135M-Instruct, layers {args.layers}, hooks up+act ({n_voxels:,} "
             f"voxels), {n_tokens:,} tokens of the built-in corpus in blocks of {args.block}, "
             f"sketch of {args.size} columns, {k} principal maps, {args.seeds} seeds per design, "
             f"torch {torch.__version__} ({torch.get_num_threads()} threads) on cpu",
             "cos: cosines of the principal angles between the sketch's top maps and the exact "
             "ones (mean over layer-seed cases; worst case; cases whose smallest cosine is "
             "below 0.99); update: ms of one sketch update of a block (median of 7, designs "
             "in alternation)",
             "",
             f"{'design':38s} {'cases':>5s} {'cos mean':>9s} {'worst':>7s} {'<0.99':>6s} "
             f"{'update ms':>10s}"]
    lines += [f"{r['design']:38s} {r['cases']:5d} {r['cos_mean']:9.5f} {r['cos_min']:7.4f} "
              f"{r['cases_below_099']:6d} {r['update_ms']:10.1f}" for r in rows]
    text = "\n".join(lines) + "\n"
    (out / "sketch.txt").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
