"""``llmbrain evaluate``: model -> numbers (perplexity, zero-shot accuracy,
domain scores, size and speed)."""

from __future__ import annotations

import sys
from pathlib import Path

from ._common import (add_batch_size_argument, add_max_windows_argument, add_model_arguments,
                      add_verb, add_window_argument, parse_positive)

#: llmbrain.evaluation.ZEROSHOT_TASKS, named here so that --help needs no torch (a test
#: checks that they agree).
ZEROSHOT_TASKS = ("boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge",
                  "openbookqa")


def register(subparsers) -> None:
    parser = add_verb(
        subparsers, "evaluate",
        help="perplexity, zero-shot accuracy and efficiency of a (pruned) model",
        description="Evaluate a model: WikiText-2 perplexity in non-overlapping windows, "
                    "zero-shot accuracy (acc / acc_norm as lm-evaluation-harness) on local "
                    "task files, domain perplexity / accuracy, and forward throughput. "
                    "Writes one CSV row per measurement.",
        examples=["llmbrain evaluate --model pruned --wikitext wiki.test.raw "
                  "--zeroshot-root data --tasks piqa,arc_easy --limit 200 --out scores.csv"])
    add_model_arguments(parser, positional=True)
    parser.add_argument("--wikitext", help="WikiText-2 test text file (HF rows newline-joined "
                                           "or wiki.test.raw)")
    add_window_argument(parser, None, " (perplexity); repeat for several (default: 128)",
                        action="append")
    add_max_windows_argument(parser, None)
    parser.add_argument("--zeroshot-root", help="folder with the zero-shot task files")
    parser.add_argument("--tasks", default=",".join(ZEROSHOT_TASKS),
                        help="comma-separated zero-shot tasks (default: all seven)")
    parser.add_argument("--limit", type=parse_positive, metavar="N",
                        help="first N items of each task (default: all)")
    parser.add_argument("--domain-text", action="append", default=[],
                        help="domain text file for perplexity (.txt, .jsonl with 'text', "
                             "PubMedQA .json); repeatable")
    parser.add_argument("--domain-mc", action="append", default=[],
                        help="domain multiple-choice file (MMLU .csv, MedQA .jsonl); repeatable")
    parser.add_argument("--efficiency", action="store_true",
                        help="also measure parameters, weight memory and tokens/s")
    add_batch_size_argument(parser)
    parser.add_argument("--out", "-o", help="CSV file for the results (written after every "
                                            "measurement, so an error loses nothing)")
    parser.set_defaults(func=run)


def run(args) -> int:
    import pandas as pd

    from .._atomic import atomic_write
    from ..models import load_model

    if args.model_positional is not None:  # `llmbrain evaluate MODEL`, as older versions took
        if args.model not in ("default", args.model_positional):
            raise ValueError(f"Two models given: {args.model_positional} and --model "
                             f"{args.model}; give one, with --model.")
        args.model = args.model_positional
    if not (args.wikitext or args.zeroshot_root or args.domain_text or args.domain_mc
            or args.efficiency):
        raise ValueError("Nothing to evaluate: give --wikitext, --zeroshot-root, --domain-text, "
                         "--domain-mc and/or --efficiency.")
    for flag, paths in (("--wikitext", [args.wikitext]), ("--zeroshot-root", [args.zeroshot_root]),
                        ("--domain-text", args.domain_text), ("--domain-mc", args.domain_mc)):
        for path in paths:
            if path and not Path(path).expanduser().exists():
                raise FileNotFoundError(f"{flag} {path}: no such file or folder.")
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    rows = []

    def add(kind, name, metric, value, n=None, stderr=None):
        rows.append({"model": str(args.model), "kind": kind, "name": name, "metric": metric,
                     "value": value, "n": n, "stderr": stderr})
        print(f"{kind:>10} {name:<28} {metric:<16} {value:.4f}" if isinstance(value, float)
              else f"{kind:>10} {name:<28} {metric:<16} {value}")
        if args.out:  # every result is on disk as soon as it is known
            atomic_write(args.out, pd.DataFrame(rows).to_csv(index=False))

    try:
        _evaluate(args, model, tokenizer, add)
    except BaseException:
        if rows and args.out:
            print(f"Kept the {len(rows)} rows measured before the error in {args.out}.",
                  file=sys.stderr)
        raise
    if args.out:
        print(f"Wrote {len(rows)} rows to {args.out}.")
    return 0


def _evaluate(args, model, tokenizer, add) -> None:
    from ..evaluation import (
        domain_accuracy,
        domain_perplexity,
        evaluate_zeroshot,
        load_wikitext2,
        measure_efficiency,
        perplexity,
        summarize_zeroshot,
    )

    if args.wikitext:
        text = load_wikitext2(args.wikitext)
        for window in args.window or [128]:
            ppl, details = perplexity(model, tokenizer, text, window=window,
                                      batch_size=args.batch_size, max_windows=args.max_windows,
                                      progress=args.progress, return_details=True)
            add("perplexity", f"wikitext2-{window}", "perplexity", ppl, details["n_windows"])
    if args.zeroshot_root:
        table = evaluate_zeroshot(model, tokenizer, args.zeroshot_root, args.tasks,
                                  limit=args.limit, batch_size=args.batch_size,
                                  progress=args.progress)
        for task, row in table.iterrows():
            add("zeroshot", task, "acc", row["acc"], row["n"], row["acc_stderr"])
            add("zeroshot", task, "acc_norm", row["acc_norm"], row["n"], row["acc_norm_stderr"])
        for metric, value in summarize_zeroshot(table).items():
            if metric != "n_tasks":
                add("zeroshot", "average", metric, value, len(table))
    if args.domain_text:
        table = domain_perplexity(model, tokenizer, args.domain_text, window=(args.window or
                                  [128])[0], batch_size=args.batch_size,
                                  max_windows=args.max_windows, progress=args.progress)
        for name, row in table.iterrows():
            add("domain", name, "perplexity", row["perplexity"], row["n_windows"])
    if args.domain_mc:
        table = domain_accuracy(model, tokenizer, args.domain_mc, limit=args.limit,
                                batch_size=args.batch_size, progress=args.progress)
        for name, row in table.iterrows():
            add("domain", name, "acc", row["acc"], row["n"], row["acc_stderr"])
    if args.efficiency:
        for metric, value in measure_efficiency(model, tokenizer).items():
            if metric in ("n_params", "n_mlp_params", "n_neurons", "weight_bytes",
                          "tokens_per_s", "seconds_per_batch") and value is not None:
                add("efficiency", "forward", metric, value)
