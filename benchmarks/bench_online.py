"""Online networks against the offline fit of the same tokens (SmolLM2).

``find_networks(..., online=True)`` fits each layer from a sketch of its
correlations updated while the model runs; the offline fit records the runs
into memory and decomposes the activations themselves. Both see the same
tokens (the same windows, split into the same runs) and start FastICA from the
same seeds, so they differ only by the sketch. FastICA itself depends on its
start: the offline fit with another seed measures how far two fits of the
*same* data differ, the floor that any agreement is measured against.

For each setting the script prints, over all runs and layers: the matched
``|r|`` of the networks (Hungarian matching per layer, as
:func:`llmbrain.networks.compare_runs`), its median and the fraction of
networks at ``|r| >= 0.95``; the correlation of the neurons' pruning scores
(:func:`llmbrain.pruning.network_scores`); and the overlap (Jaccard) of the
neurons kept at 20% and 50% sparsity when the top scores are kept over the
whole model; and, for the online fits, how well each sketch gives the layers'
principal maps (cosines of the principal angles to those of the exact
correlation matrix), the part of the fit that the sketch approximates. Results go to ``benchmarks/results/online/`` (a CSV and a text
that starts with the command).

Usage::

    nice -n 10 python benchmarks/bench_online.py                # CPU, ~10 minutes
    python benchmarks/bench_online.py --device cuda
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results" / "online"


def agreement(reference, other) -> dict:
    from llmbrain.networks import match_components
    from llmbrain.pruning import network_scores

    r = np.concatenate([np.abs(match_components(a.maps_z_, b.maps_z_)[1])
                        for a, b in zip(reference.runs_, other.runs_)])
    s_ref, s_other = (network_scores(n).values.ravel() for n in (reference, other))
    row = {"mean_abs_r": float(np.nanmean(r)), "median_abs_r": float(np.nanmedian(r)),
           "frac_r_095": float(np.mean(r >= 0.95)),
           "score_corr": float(np.corrcoef(s_ref, s_other)[0, 1])}
    for sparsity in (0.2, 0.5):
        keep = int(round((1 - sparsity) * s_ref.size))
        a, b = (set(np.argsort(-s)[:keep].tolist()) for s in (s_ref, s_other))
        row[f"kept_jaccard_{int(sparsity * 100)}"] = len(a & b) / len(a | b)
    return row


def _cos(row: dict, which: str, width: int) -> str:
    value = row.get(f"subspace_cos_{which}")
    return f"{value:>{width}.4f}" if value is not None else " " * width


def principal_maps(estimator) -> list:
    """The principal maps of every run and layer, from an online estimator's sketches."""
    k = estimator.n_components_
    return [sketch.principal_maps(k)[0].cpu() for run in estimator._sketches for sketch in run]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n-runs", type=int, default=2)
    parser.add_argument("--tokens-per-run", type=int, default=4096)
    parser.add_argument("--sketch-sizes", default="256,512,exact")
    parser.add_argument("--n-init", default="1,10", help="FastICA restarts to compare")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    command = "python " + shlex.join([sys.argv[0]] + (sys.argv[1:] if argv is None else argv))
    print(command, flush=True)
    warnings.filterwarnings("ignore", message="FastICA did not converge")
    import llmbrain
    from llmbrain.networks import OnlineNetworks, find_networks

    model, tokenizer = llmbrain.load_model("default", device=args.device)
    common = dict(n_runs=args.n_runs, tokens_per_run=args.tokens_per_run, verbose=0)
    sizes = args.sketch_sizes.split(",")
    if "exact" not in sizes:
        sizes.append("exact")      # the reference of the principal maps
    rows, exact_maps = [], None
    for n_init in (int(v) for v in args.n_init.split(",")):
        fits = {}
        for label, kwargs in [("offline", {}), ("offline, seed 1", {"random_state": 1})] + [
                (f"online, sketch {size}", {"online": True, "sketch_size": None
                                            if size == "exact" else int(size)})
                for size in sizes]:
            start = time.perf_counter()
            if kwargs.get("online"):
                estimator = OnlineNetworks(n_init=n_init, n_runs=args.n_runs, verbose=0,
                                           sketch_size=kwargs["sketch_size"])
                llmbrain.record(model, tokenizer, "default", None, hook=estimator.hooks,
                                max_tokens=args.n_runs * args.tokens_per_run, progress=False,
                                sink=estimator.sink())
                fits[label] = estimator.networks_
                maps = principal_maps(estimator)
            else:
                fits[label] = find_networks(model, tokenizer, n_init=n_init, **common, **kwargs)
                maps = None
            seconds = time.perf_counter() - start
            if label == "online, sketch exact":
                exact_maps = maps
            row = {"n_init": n_init, "fit": label, "seconds": seconds, "_maps": maps,
                   **(agreement(fits["offline"], fits[label]) if label != "offline" else {})}
            rows.append(row)
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()},
                  flush=True)
    for row in rows:               # the principal maps of each sketch against the exact ones
        maps = row.pop("_maps")
        if maps is not None:
            cosines = np.concatenate([torch.linalg.svdvals(a.double() @ b.double().T).numpy()
                                      for a, b in zip(maps, exact_maps)])
            row["subspace_cos_mean"], row["subspace_cos_min"] = cosines.mean(), cosines.min()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(out / "online.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerows(rows)
    n_layers = len(fits["offline"].runs_[0].layers_)
    lines = [f"command: {command}",
             f"model: SmolLM2-135M-Instruct, {n_layers} layers, hooks up+act, "
             f"{args.n_runs} runs x {args.tokens_per_run} tokens of the built-in corpus, "
             f"{torch.__version__} on {args.device}",
             "each fit against the offline fit (seed 0) of the same tokens; 'offline, seed 1' "
             "is the offline fit again with other FastICA seeds (how much FastICA alone moves); "
             "PCA cos: cosines of the principal angles between each sketch's principal maps "
             "and the exact ones (mean and min over runs, layers and maps)",
             "", f"{'n_init':>6}  {'fit':<22} {'mean|r|':>8} {'median':>7} {'>=.95':>6} "
             f"{'scores r':>8} {'kept J20':>8} {'kept J50':>8} {'PCA cos':>8} {'min':>6} "
             f"{'seconds':>8}"]
    for row in rows:
        if row["fit"] == "offline":
            lines.append(f"{row['n_init']:>6}  {row['fit']:<22} {'':>8} {'':>7} {'':>6} {'':>8} "
                         f"{'':>8} {'':>8} {'':>8} {'':>6} {row['seconds']:>8.1f}")
            continue
        lines.append(f"{row['n_init']:>6}  {row['fit']:<22} {row['mean_abs_r']:>8.3f} "
                     f"{row['median_abs_r']:>7.3f} {row['frac_r_095']:>6.2f} "
                     f"{row['score_corr']:>8.3f} {row['kept_jaccard_20']:>8.3f} "
                     f"{row['kept_jaccard_50']:>8.3f} {_cos(row, 'mean', 8)} {_cos(row, 'min', 6)} "
                     f"{row['seconds']:>8.1f}")
    text = "\n".join(lines) + "\n"
    (out / "online.txt").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
