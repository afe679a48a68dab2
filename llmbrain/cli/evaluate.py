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
                    "Writes llmbrain's results table (one CSV row per measurement; "
                    "llmbrain.evaluation.results.read_results reads it).",
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


def _model_columns(name: str) -> dict:
    """Columns that identify the model: its name, and how it was pruned when its folder
    holds the pruning plan that ``llmbrain prune`` saved."""
    from ..pruning import PruningPlan

    columns = {"model": name, "criterion": "dense"}
    plan_file = Path(name).expanduser() / "pruning_plan.json"
    if plan_file.is_file():
        plan = PruningPlan.load(plan_file)
        options = plan.metadata.get("options", {})
        columns.update(criterion=plan.criterion, sparsity=round(plan.achieved_sparsity, 4),
                       allocation=plan.allocation,
                       protected_layers=plan.metadata.get("protected_layers", ""),
                       bias_compensation=options.get("bias_compensation", "none"))
    return columns


def run(args) -> int:
    from ..evaluation.results import results_table, save_results
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
    model_columns = _model_columns(str(args.model))
    rows = []

    def add(dataset, protocol, metric, value, n=None, stderr=None):
        rows.append({**model_columns, "dataset": dataset, "protocol": protocol,
                     "metric": metric, "value": value, "n": n, "stderr": stderr})
        shown = f"{value:.4f}" if isinstance(value, float) else f"{value}"
        print(f"{dataset:<28} {protocol:<24} {metric:<18} {shown}")
        if args.out:  # every result is on disk as soon as it is known
            save_results(results_table(rows), args.out)

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
        perplexity_protocol,
        summarize_zeroshot,
    )

    protocol = perplexity_protocol(model)
    if args.wikitext:
        text = load_wikitext2(args.wikitext)
        for window in args.window or [128]:
            ppl, details = perplexity(model, tokenizer, text, window=window,
                                      batch_size=args.batch_size, max_windows=args.max_windows,
                                      progress=args.progress, return_details=True)
            add("wikitext2", f"{protocol} window={window}", "perplexity", ppl,
                details["n_windows"], details.get("stderr"))
    if args.zeroshot_root:
        table = evaluate_zeroshot(model, tokenizer, args.zeroshot_root, args.tasks,
                                  limit=args.limit, batch_size=args.batch_size,
                                  progress=args.progress)
        for task, row in table.iterrows():
            add(task, "0-shot", "acc", row["acc"], row["n"], row["acc_stderr"])
            add(task, "0-shot", "acc_norm", row["acc_norm"], row["n"], row["acc_norm_stderr"])
        summary = summarize_zeroshot(table)
        for metric in ("acc", "acc_norm"):
            add("zero-shot mean", f"0-shot, {len(table)} tasks", metric,
                summary[f"mean_{metric}"], int(table["n"].sum()))
    if args.domain_text:
        window = (args.window or [128])[0]
        table = domain_perplexity(model, tokenizer, args.domain_text, window=window,
                                  batch_size=args.batch_size, max_windows=args.max_windows,
                                  progress=args.progress)
        for name, row in table.iterrows():
            add(name, f"{protocol} window={window}", "perplexity", row["perplexity"],
                row["n_windows"])
    if args.domain_mc:
        table = domain_accuracy(model, tokenizer, args.domain_mc, limit=args.limit,
                                batch_size=args.batch_size, progress=args.progress)
        for name, row in table.iterrows():
            add(name, "0-shot", "acc", row["acc"], row["n"], row["acc_stderr"])
    if args.efficiency:
        for metric, value in measure_efficiency(model, tokenizer).items():
            if value is None:
                continue
            if metric in ("n_params", "n_mlp_params", "n_neurons", "weight_bytes"):
                add("", "", metric, value)
            elif metric in ("tokens_per_s", "seconds_per_batch"):
                add("random-tokens", "forward", metric, value)
