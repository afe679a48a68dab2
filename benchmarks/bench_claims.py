"""The published claims about functional networks, tested on one model, each with its null.

Three claims of arXiv 2502.20408 / 2508.05239, each measured against a control:

(a) **Networks recur across disjoint text samples.** Networks are fitted on two
    disjoint samples of calibration text and matched one to one (Hungarian
    algorithm on the absolute spatial correlation of their maps). The matched
    ``|r|`` is compared with a null in which the neurons of the second run's
    maps are shuffled within each layer (same values, no correspondence), as a
    function of the number of tokens per run.
(b) **Ablating a network's key neurons hurts far more than ablating a matched
    random set.** Every network of a whole-model decomposition is ablated
    (its key neurons set to zero) and so are ``n_controls`` random neuron sets
    with the same number of neurons in every layer; the change of held-out
    perplexity of the network is compared with the controls' (ratio,
    permutation p-value).
(c) **Pruning that keeps the networks beats the same sparsity without them.**
    The network criterion (keep the strongest ``|z|``) against the same plan
    that removes the strongest ``|z|`` first, and against random scores
    (several seeds), all with the same plan options.

Calibration and network text: C4 (train). Held-out text: WikiText-2 test, a
fixed prefix. Writes ``claims.csv`` (every measurement), ``ablation.csv`` (each
network against its controls, :func:`llmbrain.interventions.summarize_interventions`)
and ``claims.txt`` (the figures with their nulls and the command) to ``--out``.

The committed run (``benchmarks/results/claims``, about 10 minutes on 2 CPU cores)::

    python benchmarks/bench_claims.py --tokens-per-run 512,1024,2048,4096 --n-controls 10 \
        --max-windows 16 --whole-model-components 10 --networks-tokens 8192 \
        --sparsities 0.2,0.5 --random-seeds 3 --out benchmarks/results/claims

Quick check::

    python benchmarks/bench_claims.py --tokens-per-run 256,512 --networks-tokens 2048 \\
        --n-controls 3 --max-windows 4 --sparsities 0.2 --random-seeds 1 --out /tmp/claims
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--calibration", default=str(DATA / "calibration" / "c4" /
                                                     "c4_en_train_first1000.jsonl"))
    parser.add_argument("--heldout", default=str(DATA / "wikitext2_raw" /
                                                 "test.hf_rows_newline_joined.txt"))
    parser.add_argument("--parts", default="recurrence,ablation,pruning")
    parser.add_argument("--tokens-per-run", default="256,512,1024,2048,4096",
                        help="(a) run sizes")
    parser.add_argument("--n-components", type=int, default=16,
                        help="(a, c) networks per layer")
    parser.add_argument("--pruning-components", type=int, default=64,
                        help="(c) networks per layer (64: chosen on validation text by "
                             "bench_pruning)")
    parser.add_argument("--n-shuffles", type=int, default=5, help="(a) null draws")
    parser.add_argument("--networks-tokens", type=int, default=8192,
                        help="(b, c) tokens the networks are fitted on")
    parser.add_argument("--whole-model-components", type=int, default=20,
                        help="(b) networks over all layers")
    parser.add_argument("--n-controls", type=int, default=10, help="(b) random controls")
    parser.add_argument("--max-windows", type=int, default=32,
                        help="held-out windows of 128 tokens")
    parser.add_argument("--sparsities", default="0.2,0.5", help="(c)")
    parser.add_argument("--random-seeds", type=int, default=3, help="(c) seeds of random")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/claims")
    return parser.parse_args(argv)


def record_calibration(model, tokenizer, args, n_tokens, hook="mlp"):
    from llmbrain import record
    from llmbrain.corpus import load_corpus

    return record(model, tokenizer, load_corpus(args.calibration), None, hook=hook,
                  window=256, dtype="float32", max_tokens=n_tokens, progress=False)


def shuffled(maps, rng):
    """The same maps with the neurons of every layer permuted (the null)."""
    values = maps.values.copy()
    for layer in range(values.shape[1]):
        values[:, layer] = values[:, layer][:, rng.permutation(values.shape[2])]
    return maps.copy(data=values)


def part_recurrence(model, tokenizer, args, rows, lines):
    from llmbrain.networks import FunctionalNetworks, match_components

    sizes = [int(s) for s in args.tokens_per_run.split(",")]
    acts = record_calibration(model, tokenizer, args, 2 * max(sizes))
    rng = np.random.default_rng(0)
    lines.append("(a) recurrence: mean matched |r| of per-layer networks of two disjoint runs "
                 f"({args.n_components} per layer), against neurons shuffled within layers")
    for size in sizes:
        runs = []
        for r in range(2):
            block = acts.isel(token=slice(r * max(sizes), r * max(sizes) + size))
            runs.append(FunctionalNetworks(args.n_components, method="fastica", fun="cube",
                                           scope="layer", n_init=1, max_iter=300,
                                           random_state=r, verbose=0).fit(block))
        _, r_real = match_components(runs[0].maps_z_, runs[1].maps_z_)
        null = [np.abs(match_components(runs[0].maps_z_, shuffled(runs[1].maps_z_, rng))[1])
                for _ in range(args.n_shuffles)]
        null = np.concatenate(null)
        real = np.abs(r_real)
        p99 = float(np.quantile(null, 0.99))
        for metric, value in [("matched_abs_r", real.mean()), ("null_matched_abs_r", null.mean()),
                              ("null_matched_abs_r_p99", p99),
                              ("fraction_above_null_p99", float((real > p99).mean()))]:
            rows.append({"claim": "recurrence", "tokens_per_run": size, "metric": metric,
                         "value": float(value), "n": int(real.size)})
        lines.append(f"  {size:6d} tokens/run: |r| {real.mean():.3f} (null {null.mean():.3f}, "
                     f"99th pct {p99:.3f}); {np.mean(real > p99):.0%} of "
                     f"{real.size} networks above the null's 99th percentile")


def heldout_text(args) -> str:
    from llmbrain.evaluation import load_wikitext2

    return load_wikitext2(args.heldout)


def part_ablation(model, tokenizer, args, rows, lines):
    from llmbrain.interventions import intervene_on_networks, summarize_interventions
    from llmbrain.networks import FunctionalNetworks

    acts = record_calibration(model, tokenizer, args, args.networks_tokens)
    networks = FunctionalNetworks(args.whole_model_components, scope="all", n_init=3,
                                  random_state=0, verbose=0).fit(acts)
    effects = intervene_on_networks(model, tokenizer, networks, heldout_text(args),
                                    n_controls=args.n_controls, modes=("ablate",),
                                    max_windows=args.max_windows, random_state=0,
                                    dataset="wikitext2-test", progress=True)
    summary = summarize_interventions(effects)
    summary.to_csv(Path(args.out) / "ablation.csv", index=False)
    ratio = summary["change_ratio"].to_numpy(dtype=float)
    p = summary["p_value"].to_numpy(dtype=float)
    lines.append(f"(b) ablation: {len(summary)} whole-model networks ({args.networks_tokens} "
                 f"tokens, {args.whole_model_components} components), each against "
                 f"{args.n_controls} random sets matched per layer, held-out perplexity")
    lines.append(f"  change of the network / mean change of its controls: median "
                 f"{np.nanmedian(ratio):.2f}, range {np.nanmin(ratio):.2f}-{np.nanmax(ratio):.2f}; "
                 f"{int((p <= 1 / (args.n_controls + 1) + 1e-12).sum())} of {len(p)} networks hurt "
                 f"more than every control (p = {1 / (args.n_controls + 1):.3f})")
    for _, row in summary.iterrows():
        rows.append({"claim": "ablation", "target": row["target"], "metric": "change_ratio",
                     "value": float(row["change_ratio"]), "p_value": float(row["p_value"])})


def part_pruning(model, tokenizer, args, rows, lines):
    from llmbrain.corpus import load_corpus, tokenize_windows
    from llmbrain.evaluation import perplexity
    from llmbrain.networks import find_networks
    from llmbrain.pruning import PlanOptions, network_scores, prune

    windows = tokenize_windows(load_corpus(args.calibration), tokenizer, 256,
                               max_tokens=args.networks_tokens)
    fitted = find_networks(model, tokenizer, windows, n_components=args.pruning_components,
                           n_runs=2, tokens_per_run=args.networks_tokens // 2, verbose=0)
    scores = network_scores(fitted)
    options = PlanOptions("global", 3, 2, "progressive")
    text = heldout_text(args)
    lines.append(f"(c) pruning with the networks kept vs without them ({options.describe()}), "
                 "held-out perplexity")
    for sparsity in [float(s) for s in args.sparsities.split(",")]:
        measured = {}
        for label, criterion, score, seed in (
                [("keep networks", "networks", scores, 0),
                 ("remove networks first", "networks", -scores, 0)]
                + [(f"random {seed}", "random", None, seed) for seed in range(args.random_seeds)]):
            pruned, _ = prune(model, criterion, sparsity, options=options, scores=score,
                              calibration_windows=windows, seed=seed)
            ppl = perplexity(pruned, tokenizer, text, window=128, max_windows=args.max_windows,
                             progress=False)
            measured[label] = ppl
            rows.append({"claim": "pruning", "sparsity": sparsity, "target": label,
                         "metric": "perplexity", "value": ppl, "seed": seed})
            del pruned
        randoms = [v for k, v in measured.items() if k.startswith("random")]
        lines.append(f"  sparsity {sparsity:.0%}: keep networks {measured['keep networks']:.1f}, "
                     f"remove them first {measured['remove networks first']:.1f}, random "
                     f"{np.mean(randoms):.1f} ± {np.std(randoms):.1f} ({len(randoms)} seeds)")


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    print(command, flush=True)
    from llmbrain import load_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_model(args.model, device=args.device)
    rows, lines = [], []
    parts = {"recurrence": part_recurrence, "ablation": part_ablation, "pruning": part_pruning}
    for name in args.parts.split(","):
        start = time.perf_counter()
        parts[name](model, tokenizer, args, rows, lines)
        lines.append(f"  ({time.perf_counter() - start:.0f} s)")
        print("\n".join(lines), flush=True)
        pd.DataFrame(rows).to_csv(out / "claims.csv", index=False)
    text = "\n".join([f"Model: {args.model}", *lines, f"Command: {command}"])
    (out / "claims.txt").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
