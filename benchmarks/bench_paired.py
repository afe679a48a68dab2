"""Paired test-perplexity comparison of pruning criteria, window by window.

The perplexities of ``bench_pruning.py`` carry standard errors of about 2.7%
each, computed for each model alone; two pruned models scored on the *same*
windows differ far less from window to window than the windows differ from
each other, so the difference of their mean NLL has a much smaller standard
error. For every criterion and sparsity this script prunes SmolLM2 with the
plan options that did best for that criterion on validation text (read from
the ``selection.csv`` of earlier ``bench_pruning.py`` runs: nothing is chosen
here, and nothing on the test split), scores the same test windows, and
prints, against a reference criterion, the ratio of perplexities with its
paired standard error and 95% interval (delta method over windows:
``exp(mean_w d_w)`` with ``d_w`` the difference of window w's mean NLL; each
window has the same number of tokens, so this is the perplexity ratio).

Writes ``paired.csv`` (every window's NLL per model) and ``paired.md`` (the
table, with the command) to ``--out``. The committed run (about 20 minutes on a
2-core CPU)::

    python benchmarks/bench_paired.py --reference loss-networks \\
        --criteria fisher,flap,wanda-sp --sparsities 0.2,0.5 \\
        --selection benchmarks/results/pruning-40k/selection.csv,\\
benchmarks/results/pruning-40k-fisher/selection.csv,\\
benchmarks/results/pruning-40k-loss-networks/selection.csv \\
        --out benchmarks/results/pruning-paired
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pruning import (DATA, add_calibration_arguments, calibrate,  # noqa: E402
                           chosen_options, prefix)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", default="loss-networks")
    parser.add_argument("--criteria", default="fisher,flap,wanda-sp")
    parser.add_argument("--sparsities", default="0.2,0.5")
    parser.add_argument("--selection", required=True,
                        help="selection.csv files of bench_pruning.py runs (comma-separated)")
    add_calibration_arguments(parser)
    parser.add_argument("--wikitext", default=str(DATA / "wikitext2_raw" /
                                                  "test.hf_rows_newline_joined.txt"))
    parser.add_argument("--test-windows", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default="bench_results/pruning-paired")
    return parser.parse_args(argv)


def paired_ratio(nll: np.ndarray, reference: np.ndarray) -> dict:
    """Perplexity ratio of two models scored on the same windows, with its paired error."""
    d = nll - reference
    mean, se = d.mean(), d.std(ddof=1) / np.sqrt(d.size)
    return {"ratio": float(np.exp(mean)), "ratio_se": float(np.exp(mean) * se),
            "low": float(np.exp(mean - 1.96 * se)), "high": float(np.exp(mean + 1.96 * se)),
            "windows_worse": float(np.mean(d > 0))}


def main(argv=None) -> int:
    args = parse_args(argv)
    import llmbrain
    from llmbrain.evaluation import load_wikitext2, perplexity
    from llmbrain.pruning import prune

    command = "python " + shlex.join(["benchmarks/bench_paired.py", *sys.argv[1:]])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    criteria = [args.reference] + [c for c in args.criteria.split(",") if c != args.reference]
    sparsities = [float(s) for s in args.sparsities.split(",")]
    selection = pd.concat([pd.read_csv(path, keep_default_na=False)
                           for path in args.selection.split(",")], ignore_index=True)
    plans = {(c, s): chosen_options(selection, c, s) for c in criteria for s in sparsities}

    model, tokenizer = llmbrain.load_model("default")
    model.eval()
    _, stats, compensation = calibrate(model, tokenizer, args, criteria)
    text = prefix(load_wikitext2(args.wikitext), args.test_windows)

    def score(m):
        return perplexity(m, tokenizer, text, window=128, max_windows=args.test_windows,
                          batch_size=args.batch_size, progress=False, return_details=True)

    dense_ppl, dense = score(model)
    nll = {"dense": np.asarray(dense["window_nll"])}
    rows = []
    for sparsity in sparsities:
        for criterion in criteria:
            options = plans[(criterion, sparsity)]
            pruned, _ = prune(model, criterion, sparsity, options=options, calibration=stats,
                              calibration_windows=compensation)
            ppl, details = score(pruned)
            nll[f"{criterion}@{sparsity:g}"] = np.asarray(details["window_nll"])
            rows.append({"sparsity": sparsity, "criterion": criterion,
                         "plan options": options.describe(), "test_perplexity": ppl,
                         "stderr": details["stderr"]})
            print(f"[{time.perf_counter() - start:6.0f} s] {sparsity:.0%} {criterion}: "
                  f"{ppl:.2f}", flush=True)
            del pruned
    for row in rows:
        row.update(paired_ratio(nll[f"{row['criterion']}@{row['sparsity']:g}"],
                                nll[f"{args.reference}@{row['sparsity']:g}"]))
    table = pd.DataFrame(rows)
    pd.DataFrame(nll).rename_axis("window").to_csv(out / "paired.csv")
    lines = [f"# Paired test perplexities against {args.reference}, SmolLM2-135M-Instruct", "",
             f"Command: `{command}`", "",
             f"Test: the first {details['n_windows']} windows of 128 tokens of WikiText-2 test "
             f"({details['n_tokens']:,} predicted tokens, protocol {details['protocol']}; dense "
             f"{dense_ppl:.2f}). Calibration: {stats.attrs['n_tokens']:,} C4 tokens; "
             "progressive bias compensation on "
             f"{len(compensation) * 256:,} of them. Each criterion with the plan options that "
             "did best for it on WikiText-2 validation (`--selection`). Ratio: the criterion's "
             f"perplexity over {args.reference}'s on the same windows (above 1: "
             f"{args.reference} is better), with its paired standard error and 95% interval; "
             "'windows worse': the share of windows whose NLL is higher than under "
             f"{args.reference}. {time.perf_counter() - start:.0f} s in all.", "",
             "| sparsity | criterion | plan options | test perplexity ± se | ratio ± paired se "
             "| 95% interval | windows worse |",
             "|---:|---|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['sparsity']:.0%} | {row['criterion']} | {row['plan options']} | "
                     f"{row['test_perplexity']:.2f} ± {row['stderr']:.2f} | "
                     f"{row['ratio']:.4f} ± {row['ratio_se']:.4f} | "
                     f"{row['low']:.3f}–{row['high']:.3f} | {row['windows_worse']:.2f} |")
    (out / "paired.md").write_text("\n".join(lines) + "\n")
    table.to_csv(out / "paired-summary.csv", index=False)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
