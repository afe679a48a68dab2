"""Can what functional networks know improve on each neuron's loss sensitivity?

Every figure is on *validation* text (never the test split): the plans are
scored by perplexity on the first ``--val-windows`` windows of 128 tokens of
WikiText-2 validation, with calibration on C4 train, the first 3 and last 2
layers kept and progressive bias compensation, as in
``benchmarks/results/network-criteria.md``.

Per prunable layer, the per-token loss contributions of the neurons,
``c_tj = (x_tj - mean_j) * dL/dx_tj`` (x: the input of the down projection),
give the Gram matrix ``G = C^T C``: its diagonal is the ``fisher`` criterion,
and ``1_S^T G 1_S`` is the second-order loss increase of removing the set S,
whose off-diagonal terms are the interactions of neurons that act together.
The variants:

* ``fisher``: the diagonal, one neuron at a time;
* ``gram``: greedy removal minimising ``1_S^T G 1_S`` (``gram-half``: the
  off-diagonal halved);
* ``loss-networks-K``: the diagonal plus the off-diagonal of the K leading
  eigenvectors of G ("loss networks"); ``loss-weight-K``: a neuron's weight in
  those networks alone, ``sum_k lambda_k u_jk**2``;
* ``first-order``: ``-sum_t c_tj`` added to ``G / 2``;
* ``flap`` for reference.

It also measures how well Fisher on odd calibration windows predicts Fisher on
even ones (Spearman over neurons, mean over prunable layers), alone and pooled
over each neuron's functional networks (FastICA maps of up and act, as the
``networks`` criterion fits them), against FLAP's and Wanda-sp's statistics.

``benchmarks/results/network-criteria.md`` discusses the figures (about 20
minutes on a 2-core CPU; ``benchmarks/results/network-criteria/`` has them)::

    python benchmarks/bench_network_criteria.py --out benchmarks/results/network-criteria
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pruning import (DATA, add_calibration_arguments, calibrate,  # noqa: E402
                           prefix, validation_text)

PROTECT_FIRST, PROTECT_LAST = 3, 2


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_calibration_arguments(parser)
    parser.add_argument("--validation", default=str(DATA / "calibration" /
                                                    "wikitext2_raw_valid_doclevel"))
    parser.add_argument("--val-windows", type=int, default=32)
    parser.add_argument("--sparsities", default="0.2,0.5")
    parser.add_argument("--loss-networks", default="8,32",
                        help="leading eigenvectors of G kept (comma-separated)")
    parser.add_argument("--network-components", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default="bench_results/network-criteria")
    return parser.parse_args(argv)


def loss_contributions(model, windows, means, batch_size):
    """Per layer, the Gram matrix of the loss contributions and their sum over tokens
    (float64), and each window's diagonal of the Gram matrix (windows x layers x neurons)."""
    from llmbrain.models import get_adapter

    adapter = get_adapter(model)
    n_layers = adapter.n_layers(model)
    inputs = {}

    def keep(layer):
        def hook(_module, args):
            inputs[layer] = args[0]
        return hook

    handles = [adapter.down_proj(model, layer).register_forward_pre_hook(keep(layer))
               for layer in range(n_layers)]
    ids = torch.as_tensor(np.asarray(windows), dtype=torch.long)
    embed = model.get_input_embeddings()
    width = adapter.neurons_per_layer(model)[0]
    gram = np.zeros((n_layers, width, width))
    total = np.zeros((n_layers, width))
    per_window = np.zeros((len(ids), n_layers, width))
    mu = [torch.as_tensor(means[layer], dtype=torch.float32) for layer in range(n_layers)]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for start in range(0, len(ids), batch_size):
            batch = ids[start:start + batch_size]
            with torch.enable_grad():
                embedded = embed(batch).detach().requires_grad_(True)
                loss = model(inputs_embeds=embedded, labels=batch, use_cache=False).loss
                grads = torch.autograd.grad(loss * batch.shape[0] * (batch.shape[1] - 1),
                                            [inputs[layer] for layer in range(n_layers)])
            for layer, grad in enumerate(grads):
                c = (inputs[layer].detach() - mu[layer]) * grad
                flat = c.reshape(-1, width)
                gram[layer] += (flat.T @ flat).double().numpy()
                total[layer] += flat.sum(0).double().numpy()
                per_window[start:start + len(batch), layer] = (c ** 2).sum(1).double().numpy()
    finally:
        for handle in handles:
            handle.remove()
    return gram, total, per_window


def greedy_removal(quadratic, count):
    """Remove ``count`` neurons one by one, each time the one whose removal adds least to
    ``1_S^T Q 1_S``; returns them in order."""
    added = np.zeros(quadratic.shape[0])
    diagonal = np.diag(quadratic).copy()
    alive = np.ones(quadratic.shape[0], bool)
    removed = []
    for _ in range(count):
        cost = np.where(alive, diagonal + 2 * added, np.inf)
        j = int(np.argmin(cost))
        removed.append(j)
        alive[j] = False
        added += quadratic[:, j]
    return np.array(removed, dtype=int)


def main(argv=None) -> int:
    args = parse_args(argv)
    import llmbrain
    from llmbrain.evaluation import perplexity
    from llmbrain.networks import find_networks
    from llmbrain.pruning import PruningPlan, prune_model, score_neurons

    command = "python " + shlex.join(["benchmarks/bench_network_criteria.py", *sys.argv[1:]])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    def log(message):
        print(f"[{time.perf_counter() - start:7.0f} s] {message}", flush=True)

    model, tokenizer = llmbrain.load_model("default")
    model.eval()
    windows, stats, compensation = calibrate(model, tokenizer, args)
    n_layers, width = stats.sizes["layer"], stats.sizes["neuron"]
    means = stats["mean"].values
    gram, total, per_window = loss_contributions(model, windows.input_ids, means, args.batch_size)
    log(f"loss contributions over {stats.attrs['n_tokens']:,} tokens")
    prunable = list(range(PROTECT_FIRST, n_layers - PROTECT_LAST))
    val = prefix(validation_text(args.validation), args.val_windows)

    def evaluate(removed):
        keep = {layer: np.setdiff1d(np.arange(width), removed.get(layer, [])).astype(int)
                for layer in range(n_layers)}
        plan = PruningPlan(keep=keep, n_neurons={layer: width for layer in range(n_layers)})
        pruned = copy.deepcopy(model)
        prune_model(pruned, plan, "progressive", calibration=compensation)
        return perplexity(pruned, tokenizer, val, window=128, max_windows=args.val_windows,
                          batch_size=16, progress=False)

    def budget(sparsity):
        return int(round(sparsity * n_layers * width))

    def uniform_counts(sparsity):
        base, extra = divmod(budget(sparsity), len(prunable))
        return {layer: base + (i < extra) for i, layer in enumerate(prunable)}

    def lowest(scores, sparsity, allocation):
        """Remove the lowest scores: a uniform count per layer, or one ranking of all."""
        if allocation == "uniform":
            return {layer: np.argsort(scores[layer])[:count]
                    for layer, count in uniform_counts(sparsity).items()}
        values = np.stack([scores[layer] for layer in prunable])
        if allocation == "adaptive":
            values = (values - values.mean(1, keepdims=True)) / values.std(1, keepdims=True)
        order = np.argsort(values.ravel())[:budget(sparsity)]
        return {layer: order[order // width == i] % width for i, layer in enumerate(prunable)}

    def greedy(quadratic, linear, sparsity, allocation):
        """Greedy removal under ``linear + 1_S^T Q 1_S``, per layer or over all layers."""
        if allocation == "uniform":
            return {layer: greedy_removal(quadratic[layer] + np.diag(linear[layer]), count)
                    for layer, count in uniform_counts(sparsity).items()}
        state = {layer: (np.zeros(width), np.ones(width, bool), []) for layer in prunable}

        def cheapest(layer):
            added, alive, _ = state[layer]
            cost = np.where(alive, linear[layer] + np.diag(quadratic[layer]) + 2 * added,
                            np.inf)
            j = int(np.argmin(cost))
            return cost[j], j

        best = {layer: cheapest(layer) for layer in prunable}
        for _ in range(budget(sparsity)):
            layer = min(best, key=lambda k: best[k][0])
            j = best[layer][1]
            added, alive, removed = state[layer]
            removed.append(j)
            alive[j] = False
            added += quadratic[layer][:, j]
            best[layer] = cheapest(layer)
        return {layer: np.array(state[layer][2], dtype=int) for layer in prunable}

    fisher = np.stack([np.diag(g) for g in gram])
    flap = score_neurons(model, "flap", calibration=stats).values
    zero = np.zeros((n_layers, width))
    eigen = {}
    for layer in prunable:
        values, vectors = np.linalg.eigh(gram[layer])
        eigen[layer] = values[::-1], vectors[:, ::-1]

    def loss_networks(k, with_diagonal):
        out = {}
        for layer in prunable:
            values, vectors = eigen[layer]
            low = (vectors[:, :k] * values[:k]) @ vectors[:, :k].T
            if with_diagonal:
                np.fill_diagonal(low, 0)
                low += np.diag(np.diag(gram[layer]))
            out[layer] = low
        return out

    rows = []

    def run(variant, sparsity, allocation, removed):
        rows.append({"variant": variant, "sparsity": sparsity, "allocation": allocation,
                     "validation_perplexity": evaluate(removed)})
        log(f"{sparsity:.0%} {variant:28s} {allocation:9s} {rows[-1]['validation_perplexity']:.2f}")

    for sparsity in [float(s) for s in args.sparsities.split(",")]:
        for allocation in ("uniform", "adaptive"):
            run("flap", sparsity, allocation, lowest(flap, sparsity, allocation))
        for allocation in ("uniform", "global", "adaptive"):
            run("fisher", sparsity, allocation, lowest(fisher, sparsity, allocation))
        for allocation in ("uniform", "global"):
            run("gram", sparsity, allocation, greedy(gram, zero, sparsity, allocation))
            half = {layer: (gram[layer] + np.diag(np.diag(gram[layer]))) / 2
                    for layer in prunable}
            run("gram-half", sparsity, allocation, greedy(half, zero, sparsity, allocation))
            for k in [int(k) for k in args.loss_networks.split(",")]:
                run(f"loss-networks-{k}", sparsity, allocation,
                    greedy(loss_networks(k, True), zero, sparsity, allocation))
            run("first-order", sparsity, allocation,
                greedy({layer: gram[layer] / 2 for layer in prunable}, -total, sparsity,
                       allocation))
        k = int(args.loss_networks.split(",")[0])
        weight = fisher.copy()
        for layer in prunable:
            values, vectors = eigen[layer]
            weight[layer] = (vectors[:, :k] ** 2) @ values[:k]
        run(f"loss-weight-{k}", sparsity, "uniform", lowest(weight, sparsity, "uniform"))
    table = pd.DataFrame(rows)
    table.to_csv(out / "validation.csv", index=False)

    # reliability: Fisher on odd windows against Fisher on even ones
    networks = find_networks(model, tokenizer, windows, n_components=args.network_components,
                             n_runs=2, tokens_per_run=args.calibration_tokens // 4, window=256,
                             batch_size=args.batch_size, random_state=0, verbose=0)
    log("networks fitted")
    odd, even = per_window[0::2].sum(0), per_window[1::2].sum(0)
    wanda = score_neurons(model, "wanda-sp", calibration=stats).values
    membership = np.concatenate(
        [np.nan_to_num(np.abs(run.maps_z_.transpose("layer", "neuron", ...).values))
         .reshape(n_layers, width, -1) ** 2 for run in networks.runs_], axis=-1)
    pooled = np.zeros_like(odd)
    for layer in prunable:
        weights = membership[layer][:, membership[layer].sum(0) > 0]
        network_mean = (weights * np.log(odd[layer])[:, None]).sum(0) / weights.sum(0)
        pooled[layer] = (weights * network_mean).sum(1) / weights.sum(1)

    def agreement(scores):
        return float(np.mean([spearmanr(scores[layer], even[layer])[0] for layer in prunable]))

    reliability = {
        "Fisher, odd windows": agreement(odd),
        "FLAP, all windows": agreement(flap),
        "Wanda-sp, all windows": agreement(wanda),
        "Fisher pooled over the neuron's networks": agreement(np.exp(pooled)),
        "Fisher and its network pool (geometric mean)":
            agreement(np.exp(0.5 * np.log(odd) + 0.5 * pooled)),
    }
    by_layer = {layer: float(spearmanr(odd[layer], even[layer])[0]) for layer in prunable}

    lines = ["# Network criteria on the loss sensitivity, SmolLM2-135M-Instruct (validation)", "",
             f"Command: `{command}`", "",
             f"Calibration: {stats.attrs['n_tokens']:,} C4 tokens; validation: the first "
             f"{args.val_windows} windows of 128 tokens of WikiText-2 validation; layers "
             f"0-{PROTECT_FIRST - 1} and {n_layers - PROTECT_LAST}-{n_layers - 1} kept; "
             f"progressive bias compensation on {compensation.size:,} calibration tokens; "
             f"{time.perf_counter() - start:.0f} s in all.", "",
             "| sparsity | scores | allocation | validation perplexity |", "|---:|---|---|---:|"]
    for _, row in table.iterrows():
        lines.append(f"| {row['sparsity']:.0%} | {row['variant']} | {row['allocation']} | "
                     f"{row['validation_perplexity']:.2f} |")
    lines += ["", "Fisher on the even calibration windows predicted by (Spearman over neurons, "
              f"mean over layers {prunable[0]}-{prunable[-1]}):", ""]
    lines += [f"- {name}: {value:.3f}" for name, value in reliability.items()]
    lines += ["", "Fisher odd against even, per layer: "
              + ", ".join(f"{layer} {value:.2f}" for layer, value in by_layer.items())]
    (out / "network-criteria.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
