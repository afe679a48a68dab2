"""Compare MLP-pruning criteria on one model: perplexity and zero-shot accuracy
versus sparsity.

For every criterion (functional networks, contextual, magnitude, Wanda-SP,
FLAP, random) and every sparsity, the dense model is copied, its MLP neurons
are scored, the lowest-scoring ones are removed (FLAP also adds the removed
neurons' mean output to the bias), and the pruned model is evaluated:

* WikiText-2 test perplexity, non-overlapping 128-token windows (FLAP /
  LLM-Pruner protocol);
* zero-shot accuracy on BoolQ, PIQA, HellaSwag, WinoGrande, ARC-e, ARC-c and
  OpenBookQA, scored as lm-evaluation-harness does (``--limit`` items each);
* parameters and forward throughput.

Calibration text (and the recording the networks are found on) comes from the
calibration corpus (C4 train by default), never from the evaluation text.

Writes ``<out>/bench_pruning.csv`` (one row per model, the dense reference
first), ``<out>/bench_pruning_tasks.csv`` (one row per model and task) and
``<out>/bench_pruning.png``.

Quick check on a CPU::

    python benchmarks/bench_pruning.py --limit 20 --sparsities 0.3 --max-eval-windows 20

Full table on a GPU::

    python benchmarks/bench_pruning.py --device cuda --out results/bench_pruning
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
CRITERIA = ("networks", "networks+contextual", "contextual", "magnitude", "wanda-sp", "flap",
            "random")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="model for load_model")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--sparsities", default="0.1,0.2,0.3,0.5",
                        help="comma-separated MLP sparsities")
    parser.add_argument("--criteria", default=",".join(CRITERIA),
                        help="comma-separated criteria")
    parser.add_argument("--allocation", default="uniform",
                        help="how removals spread over layers (llmbrain.pruning.make_plan)")
    parser.add_argument("--calibration", default=str(DATA / "calibration" / "c4" /
                                                     "c4_en_train_first1000.jsonl"),
                        help="calibration corpus (not the evaluation text)")
    parser.add_argument("--calibration-tokens", type=int, default=16384)
    parser.add_argument("--bias-compensation", default="flap", choices=("flap", "all", "none"),
                        help="add removed neurons' mean output to the bias: for FLAP only "
                             "(as published), for every criterion, or never")
    parser.add_argument("--networks", help="saved networks (llmbrain.networks.save_networks "
                                           "output); found on the calibration corpus if absent")
    parser.add_argument("--network-tokens", type=int, default=8192,
                        help="tokens per networks run (recorded from the calibration corpus)")
    parser.add_argument("--network-runs", type=int, default=2,
                        help="runs on disjoint token samples whose key neurons are united")
    parser.add_argument("--n-components", type=int, default=20)
    parser.add_argument("--threshold", type=float, default=3.6)
    parser.add_argument("--wikitext", default=str(DATA / "wikitext2_raw" /
                                                  "test.hf_rows_newline_joined.txt"))
    parser.add_argument("--window", type=int, default=128, help="perplexity window")
    parser.add_argument("--max-eval-windows", type=int, help="first N perplexity windows")
    parser.add_argument("--zeroshot-root", default=str(DATA))
    parser.add_argument("--tasks", default="boolq,piqa,hellaswag,winogrande,arc_easy,"
                                           "arc_challenge,openbookqa")
    parser.add_argument("--limit", type=int, help="first N items of each task")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--speed-batch", type=int, default=8, help="throughput batch size")
    parser.add_argument("--speed-seq-len", type=int, default=256, help="throughput sequence")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench_results/pruning", help="output folder")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    return parser.parse_args(argv)


def find_networks(model, tokenizer, args):
    """Key neurons (union over runs) and max |z| (max over runs) of the
    functional networks found on the calibration corpus."""
    import xarray as xr

    from llmbrain import record
    from llmbrain.networks import FunctionalNetworks, load_networks

    if args.networks:
        saved = load_networks(args.networks)
        if hasattr(saved, "key_neurons_"):  # a fitted FunctionalNetworks
            return xr.Dataset({"key_neurons": saved.key_neurons_,
                               "max_abs_z": abs(saved.maps_z_).max("component")})
        if isinstance(saved, xr.Dataset) and "key_neurons_union" in saved:
            return xr.Dataset({"key_neurons": saved["key_neurons_union"]})
        if hasattr(saved, "result_"):  # a fitted recurrence analysis
            return xr.Dataset({"key_neurons": saved.result_["key_neurons_union"]})
        return saved
    key, max_abs_z = None, None
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "calibration.zarr"
        ds = record(model, tokenizer, args.calibration, store, window=256,
                    batch_size=args.batch_size // 2 or 1,
                    max_tokens=args.network_tokens * args.network_runs)
        n = ds.sizes["token"] // args.network_runs
        for run in range(args.network_runs):
            estimator = FunctionalNetworks(n_components=args.n_components,
                                           threshold=args.threshold, device=args.device,
                                           random_state=args.seed + run, verbose=0)
            estimator.fit(ds.isel(token=slice(run * n, (run + 1) * n)))
            z = abs(estimator.maps_z_).max("component")
            key = estimator.key_neurons_ if key is None else key | estimator.key_neurons_
            max_abs_z = z if max_abs_z is None else np.maximum(max_abs_z, z)
    return xr.Dataset({"key_neurons": key, "max_abs_z": max_abs_z})


def evaluate(model, tokenizer, text, args):
    from llmbrain.evaluation import (evaluate_zeroshot, measure_efficiency, perplexity,
                                     summarize_zeroshot)

    start = time.perf_counter()
    ppl = perplexity(model, tokenizer, text, window=args.window, batch_size=args.batch_size,
                     max_windows=args.max_eval_windows, device=args.device)
    tasks = evaluate_zeroshot(model, tokenizer, args.zeroshot_root, args.tasks,
                              limit=args.limit, batch_size=args.batch_size, device=args.device)
    efficiency = measure_efficiency(model, tokenizer, batch_size=args.speed_batch,
                                    seq_len=args.speed_seq_len, warmup=1, repeats=3,
                                    device=args.device)
    row = {"wikitext2_ppl": ppl, **summarize_zeroshot(tasks),
           **{f"{task}_{metric}": tasks.loc[task, metric] for task in tasks.index
              for metric in ("acc", "acc_norm")},
           "n_params": efficiency["n_params"], "n_mlp_params": efficiency["n_mlp_params"],
           "tokens_per_s": efficiency["tokens_per_s"],
           "eval_seconds": time.perf_counter() - start}
    return row, tasks


def plot(table: pd.DataFrame, path: Path) -> None:
    """Perplexity and mean accuracy against sparsity, one line per criterion."""
    from llmbrain.plotting import plot_pruning_curves

    curves = table.rename(columns={"wikitext2_ppl": "perplexity", "mean_acc": "avg_accuracy"})
    fig = plot_pruning_curves(curves[["criterion", "sparsity", "perplexity", "avg_accuracy"]],
                              output_file=path)
    fig.suptitle(f"{table['model'].iloc[0]}: MLP pruning criteria")
    fig.savefig(path, dpi=150)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    print(command, flush=True)
    from llmbrain.evaluation import load_wikitext2
    from llmbrain.models import load_model
    from llmbrain.pruning import collect_calibration_stats, make_plan, prune_model, score_neurons

    sparsities = [float(s) for s in args.sparsities.split(",") if s.strip()]
    criteria = [c.strip() for c in args.criteria.split(",") if c.strip()]
    unknown = sorted({c.partition("+")[0] for c in criteria} - set(CRITERIA))
    if unknown:
        raise SystemExit(f"Unknown criteria {unknown}; choose from {', '.join(CRITERIA)}.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_model(args.model, dtype=getattr(torch, args.dtype),
                                  device=args.device)
    text = load_wikitext2(args.wikitext)

    rows, task_rows = [], []

    def save(row, tasks):
        rows.append(row)
        task_rows.append(tasks.reset_index().assign(criterion=row["criterion"],
                                                    sparsity=row["sparsity"]))
        pd.DataFrame(rows).to_csv(out / "bench_pruning.csv", index=False)
        pd.concat(task_rows).to_csv(out / "bench_pruning_tasks.csv", index=False)
        print(f"{row['criterion']:>10} sparsity {row['sparsity']:.2f}: ppl "
              f"{row['wikitext2_ppl']:.2f}, mean acc {row['mean_acc']:.4f}, mean acc_norm "
              f"{row['mean_acc_norm']:.4f}, params {row['n_params']:,}", flush=True)

    base = {"model": str(args.model), "allocation": args.allocation, "limit": args.limit,
            "max_eval_windows": args.max_eval_windows}
    row, tasks = evaluate(model, tokenizer, text, args)
    save({**base, "criterion": "dense", "sparsity": 0.0, "achieved_sparsity": 0.0,
          "bias_compensation": False, "prune_seconds": 0.0, **row}, tasks)

    stats = collect_calibration_stats(model, tokenizer, args.calibration,
                                      max_tokens=args.calibration_tokens,
                                      batch_size=max(1, args.batch_size // 2))
    networks = (find_networks(model, tokenizer, args)
                if any(c.startswith("networks") for c in criteria) else None)
    for criterion in criteria:
        start = time.perf_counter()
        name, _, fill = criterion.partition("+")  # "networks+contextual": fill by contextual
        scores = score_neurons(model, name, calibration=stats, networks=networks,
                               threshold=args.threshold, seed=args.seed, fill=fill or None)
        score_seconds = time.perf_counter() - start
        for sparsity in sparsities:
            start = time.perf_counter()
            plan = make_plan(scores, sparsity, args.allocation)
            pruned = copy.deepcopy(model)
            bias = (args.bias_compensation == "all"
                    or (args.bias_compensation == "flap" and name == "flap"))
            prune_model(pruned, plan, bias_compensation=stats if bias else None)
            prune_seconds = score_seconds + time.perf_counter() - start
            row, tasks = evaluate(pruned, tokenizer, text, args)
            save({**base, "criterion": criterion, "sparsity": sparsity,
                  "achieved_sparsity": plan.achieved_sparsity, "bias_compensation": bias,
                  "prune_seconds": prune_seconds,
                  **row}, tasks)
            del pruned
    table = pd.DataFrame(rows)
    plot(table, out / "bench_pruning.png")
    columns = ["criterion", "sparsity", "wikitext2_ppl", "mean_acc", "mean_acc_norm",
               "n_params", "tokens_per_s"]
    print(table[columns].to_string(index=False))
    print(f"Wrote {out / 'bench_pruning.csv'}, {out / 'bench_pruning_tasks.csv'} and "
          f"{out / 'bench_pruning.png'}.\nCommand: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
