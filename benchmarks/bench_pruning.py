"""Compare MLP-pruning criteria honestly: plan options chosen on validation text,
perplexity and zero-shot accuracy measured on the test split.

Every criterion (the functional-network recipe, loss networks, Fisher, FLAP,
Wanda-sp, contextual, magnitude, random) is run twice on the test data:

* with the plan options it was published with (``llmbrain.pruning.PUBLISHED``);
* with the plan options that did best for it on *validation* text, chosen
  from one grid that every criterion gets (allocation x protected layers x
  bias compensation), so that no criterion wins by its plan alone.

The number of networks per layer of the ``networks`` criterion is chosen on
the same validation text. Nothing is chosen on the test split.

Data (never the test split for any choice):

* calibration: the first C4 training documents (statistics, networks, bias
  compensation);
* validation: the first ``--val-windows`` windows of WikiText-2 *validation*;
* test: the first ``--test-windows`` windows of WikiText-2 *test* (128 tokens
  each, FLAP / LLM-Pruner protocol), and zero-shot tasks scored as
  lm-evaluation-harness does (``--limit`` items each) for the dense model and
  each criterion's best options at the lowest sparsity;
* random: ``--random-seeds`` seeds, reported as mean and spread.

Writes to ``--out``: ``results.csv`` (llmbrain's results table: validation
and test rows), ``selection.csv`` (the validation grid), ``pruning.md`` (the
tables for people, with the command) and ``pruning-curve.png``.

The committed CPU run (``benchmarks/results/pruning``; about 40 minutes on 2 cores, the
number of networks and the protected layers having been chosen on validation before)::

    python benchmarks/bench_pruning.py --sparsities 0.2,0.5 \
        --criteria networks,flap,wanda-sp,contextual,random --network-components 64 \
        --protections first3-last2 --val-windows 32 --test-windows 128 --tasks arc_easy \
        --limit 300 --out benchmarks/results/pruning

Everything, with its defaults (hours on a CPU; minutes on a GPU)::

    python benchmarks/bench_pruning.py --device cuda --out benchmarks/results/pruning-gpu

The recipe's own plan for random and magnitude (the "same plan options"
comparison), reusing the validation grid of the 40k run (about 15 minutes)::

    python benchmarks/bench_pruning.py --criteria random,magnitude \
        --selection benchmarks/results/pruning-40k/selection.csv --same-plan-as networks \
        --test-plans same --test-windows 320 --tasks '' \
        --out benchmarks/results/pruning-40k-same-plan

Quick check::

    python benchmarks/bench_pruning.py --sparsities 0.2 --val-windows 8 --test-windows 8 \\
        --limit 20 --grid published --out /tmp/bench-pruning
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
CRITERIA = ("networks", "loss-networks", "fisher", "flap", "wanda-sp", "contextual", "magnitude",
            "random")
PROTECTIONS = {"none": (0, 0), "first3-last2": (3, 2)}


def add_calibration_arguments(parser) -> None:
    """The calibration text's options, the same in every pruning benchmark."""
    parser.add_argument("--calibration", default=str(DATA / "calibration" / "c4" /
                                                     "c4_en_train_first1000.jsonl"))
    parser.add_argument("--calibration-tokens", type=int, default=16384)
    parser.add_argument("--compensation-tokens", type=int, default=4096,
                        help="calibration tokens the progressive bias compensation runs on")


def calibrate(model, tokenizer, args, criteria=()):
    """Calibration windows of 256 tokens, their statistics (with what ``criteria`` need)
    and the first windows, on which progressive bias compensation runs."""
    from llmbrain.corpus import load_corpus, tokenize_windows
    from llmbrain.pruning import collect_calibration_stats, sensitivity_options

    windows = tokenize_windows(load_corpus(args.calibration), tokenizer, 256,
                               max_tokens=args.calibration_tokens)
    stats = collect_calibration_stats(model, tokenizer, windows, window=256,
                                      batch_size=args.batch_size, progress=False,
                                      **sensitivity_options(criteria))
    return windows, stats, windows.input_ids[:max(1, args.compensation_tokens // 256)]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="model for llmbrain.load_model")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--sparsities", default="0.1,0.2,0.3,0.5",
                        help="comma-separated sparsities")
    parser.add_argument("--criteria", default=",".join(CRITERIA))
    parser.add_argument("--grid", default="full", choices=("full", "published"),
                        help="plan options tried on validation: the full grid, or only each "
                             "criterion's published options")
    parser.add_argument("--protections", default="none,first3-last2",
                        help="protected layers tried in the grid: "
                             + ", ".join(PROTECTIONS))
    add_calibration_arguments(parser)
    parser.add_argument("--network-components", default="scaled,64",
                        help="networks per layer tried on validation (comma-separated; "
                             "'scaled' follows llmbrain.networks.scaled_components)")
    parser.add_argument("--network-runs", type=int, default=2)
    parser.add_argument("--network-tokens", type=int, default=4096, help="tokens per run")
    parser.add_argument("--validation", default=str(DATA / "calibration" /
                                                    "wikitext2_raw_valid_doclevel"),
                        help="WikiText-2 validation (a Hugging Face dataset folder or a text "
                             "file)")
    parser.add_argument("--val-windows", type=int, default=64)
    parser.add_argument("--wikitext", default=str(DATA / "wikitext2_raw" /
                                                  "test.hf_rows_newline_joined.txt"))
    parser.add_argument("--test-windows", type=int, default=320)
    parser.add_argument("--zeroshot-root", default=str(DATA))
    parser.add_argument("--tasks", default="boolq,piqa,hellaswag,winogrande,arc_easy,"
                                           "arc_challenge,openbookqa")
    parser.add_argument("--limit", type=int, default=1000, help="items of each task")
    parser.add_argument("--random-seeds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--same-plan-as", metavar="CRITERION",
                        help="also test every other criterion with the plan options chosen on "
                             "validation for this one (e.g. networks: random and magnitude "
                             "with the recipe's own plan)")
    parser.add_argument("--selection", metavar="SELECTION.CSV",
                        help="the validation grid of an earlier run (its selection.csv) instead "
                             "of running it again")
    parser.add_argument("--test-plans", default="published,validation,same",
                        help="plans tested: published, validation (chosen on validation), "
                             "same (--same-plan-as)")
    parser.add_argument("--out", default="bench_results/pruning")
    return parser.parse_args(argv)


def validation_text(path: str) -> str:
    """WikiText-2 validation as one string (pages joined by blank lines)."""
    path = Path(path)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    try:
        import pyarrow as pa
    except ImportError:
        sys.exit("Reading the WikiText-2 validation dataset folder needs pyarrow "
                 "(pip install pyarrow), or give --validation a text file.")
    arrow = next(path.glob("*.arrow"))
    table = pa.ipc.open_stream(str(arrow)).read_all()
    column = "page" if "page" in table.column_names else "text"
    return "\n\n".join(table.column(column).to_pylist())


def _plain(value):
    """A value of the selection table as PlanOptions takes it (numpy scalars and the
    empty cells of a CSV made plain)."""
    if isinstance(value, np.generic):
        value = value.item()
    return None if value == "" else value


def plan_grid(criterion: str, grid: str, protections):
    from llmbrain.pruning import PUBLISHED, PlanOptions

    if grid == "published":
        return [PUBLISHED[criterion]]
    return [PlanOptions(allocation, first, last, bias)
            for allocation, (first, last), bias in itertools.product(
                ("uniform", "global", "adaptive"), [PROTECTIONS[p] for p in protections],
                ("none", "progressive"))]


def chosen_options(selection: pd.DataFrame, criterion: str, sparsity: float):
    """The plan options that did best for ``criterion`` at ``sparsity`` in a validation grid
    (a ``selection.csv``)."""
    from llmbrain.pruning import PlanOptions

    rows = selection[(selection["criterion"] == criterion)
                     & np.isclose(selection["sparsity"], sparsity)]
    if rows.empty:
        sys.exit(f"The validation grid has no row for {criterion} at {sparsity:.0%}.")
    row = rows.loc[rows["validation_perplexity"].idxmin()]
    return PlanOptions(**{name: _plain(row[name]) for name in PlanOptions.__dataclass_fields__})


def prefix(text: str, windows: int, window: int = 128) -> str:
    """A prefix of ``text`` long enough for its first ``windows`` windows (the
    windows scored are the first ones, so they are the same)."""
    return text[:windows * window * 12]


def figure(results: pd.DataFrame, chosen: pd.DataFrame, test_name: str, path: Path) -> None:
    """Test perplexity against sparsity, one line per criterion with its options chosen on
    validation (which may differ between sparsities)."""
    from llmbrain.plotting import plot_pruning_curves

    keys = list(chosen.columns)
    test = results[(results["dataset"] == test_name) & (results["metric"] == "perplexity")]
    curve = test.merge(chosen, on=keys, how="inner")
    dense = test[test["criterion"] == "dense"]
    curve = pd.concat([dense, curve]).assign(allocation="", protected_layers="",
                                             bias_compensation="")
    fig = plot_pruning_curves(curve, metrics=("perplexity",))
    fig.axes[0].set_title(f"{test_name}\nplan options chosen on validation", fontsize=10)
    fig.savefig(path, dpi=150, bbox_inches="tight")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import llmbrain
    from llmbrain.evaluation import evaluate_model, load_wikitext2
    from llmbrain.evaluation.results import results_table, save_results, summarize_seeds
    from llmbrain.networks import find_networks
    from llmbrain.pruning import PUBLISHED, compare_pruning

    command = "python " + shlex.join(["benchmarks/bench_pruning.py", *sys.argv[1:]])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sparsities = [float(s) for s in args.sparsities.split(",")]
    criteria = args.criteria.split(",")
    start = time.perf_counter()

    def log(message):
        print(f"[{time.perf_counter() - start:7.0f} s] {message}", flush=True)

    model, tokenizer = llmbrain.load_model(args.model, device=args.device)
    model.eval()
    name = str(model.config.name_or_path) if args.model != "default" else "SmolLM2-135M-Instruct"
    windows, stats, compensation = calibrate(model, tokenizer, args, criteria)
    log(f"calibration statistics over {stats.attrs['n_tokens']:,} tokens")

    val_name, test_name = "wikitext2-validation", "wikitext2-test"
    evaluate = partial(evaluate_model, tokenizer=tokenizer, model_name=name, window=128,
                       batch_size=args.batch_size, progress=False, calibration="c4")
    validate = partial(evaluate, text=prefix(validation_text(args.validation), args.val_windows),
                       dataset=val_name, max_windows=args.val_windows)
    test = partial(evaluate, text=prefix(load_wikitext2(args.wikitext), args.test_windows),
                   dataset=test_name, max_windows=args.test_windows)
    tables = [validate(model), test(model)]

    # networks per layer: fit once per choice, chosen on validation with the published plan
    networks, chosen_k = None, None
    if "networks" in criteria:
        fitted, scores = {}, {}
        for k in args.network_components.split(","):
            k_value = k if k == "scaled" else int(k)
            fitted[k] = find_networks(model, tokenizer, windows, n_components=k_value,
                                      n_runs=args.network_runs,
                                      tokens_per_run=args.network_tokens, window=256,
                                      batch_size=args.batch_size, random_state=0, verbose=0)
            table, _, _ = compare_pruning(model, ["networks"], sparsities, validate,
                                          calibration=stats, calibration_windows=compensation,
                                          networks=fitted[k], progress=False)
            scores[k] = table.loc[table["metric"] == "perplexity", "value"].mean()
            log(f"networks with n_components={k}: mean validation perplexity {scores[k]:.2f}")
        chosen_k = min(scores, key=scores.get)
        networks = fitted[chosen_k]
        log(f"chosen n_components={chosen_k}")

    # plan options per criterion and sparsity, chosen on validation
    grid_rows, val_tables = [], []
    for criterion in criteria if args.selection is None else []:
        seeds = {criterion: [0]}
        for options in plan_grid(criterion, args.grid, args.protections.split(",")):
            table, _, _ = compare_pruning(model, [criterion], sparsities, validate, options=options,
                                          seeds=seeds, calibration=stats,
                                          calibration_windows=compensation, networks=networks,
                                          progress=False)
            val_tables.append(table)
            for _, row in table[table["metric"] == "perplexity"].iterrows():
                grid_rows.append({"criterion": criterion, "sparsity": row["sparsity"],
                                  **options.to_dict(), "description": options.describe(),
                                  "validation_perplexity": row["value"]})
        log(f"validation grid of {criterion} done")
    if args.selection is None:
        selection = pd.DataFrame(grid_rows)
    else:
        selection = pd.read_csv(args.selection, keep_default_na=False)
        log(f"validation grid read from {args.selection}")
    selection.to_csv(out / "selection.csv", index=False)
    chosen = partial(chosen_options, selection)

    # test: published options and the options chosen on validation
    plan_of_rows = []
    random_seeds = list(range(args.random_seeds))
    test_plans, same = args.test_plans.split(","), args.same_plan_as
    for criterion in criteria:
        seeds = {"random": random_seeds}
        for sparsity in sparsities:
            runs: dict = {}               # plan options -> the plans they are
            if "published" in test_plans:
                runs.setdefault(PUBLISHED[criterion], []).append("published")
            if "validation" in test_plans:
                runs.setdefault(chosen(criterion, sparsity), []).append("validation")
            if same and "same" in test_plans and criterion != same:
                runs.setdefault(chosen(same, sparsity), []).append(f"as {same}")
            for options, names in runs.items():
                plan = " = ".join(names)
                table, _, _ = compare_pruning(model, [criterion], [sparsity], test,
                                              options=options, seeds=seeds, calibration=stats,
                                              calibration_windows=compensation, networks=networks,
                                              progress=False)
                tables.append(table)
                first = table.iloc[0]
                plan_of_rows.append({"criterion": criterion, "sparsity": sparsity, "plan": plan,
                                     "allocation": first["allocation"],
                                     "protected_layers": first["protected_layers"],
                                     "bias_compensation": first["bias_compensation"],
                                     "description": options.describe()})
        log(f"test of {criterion} done")

    # zero-shot accuracy of the dense model and of each criterion's chosen options
    tasks = [t for t in args.tasks.split(",") if t]
    if tasks:
        zeroshot = partial(evaluate, zeroshot_root=args.zeroshot_root, tasks=tasks,
                           limit=args.limit)
        tables.append(zeroshot(model))
        sparsity = min(sparsities)
        for criterion in criteria:
            options = chosen(criterion, sparsity)
            table, _, _ = compare_pruning(model, [criterion], [sparsity], zeroshot,
                                          options=options, seeds={"random": [0]},
                                          calibration=stats, calibration_windows=compensation,
                                          networks=networks, progress=False)
            tables.append(table)
        log("zero-shot done")

    results = results_table(pd.concat(tables + val_tables, ignore_index=True))
    save_results(results, out / "results.csv")

    # tables for people
    plans = pd.DataFrame(plan_of_rows)
    test_ppl = summarize_seeds(results[(results["dataset"] == test_name)
                                       & (results["metric"] == "perplexity")])
    keys = ["criterion", "sparsity", "allocation", "protected_layers", "bias_compensation"]
    merged = plans.merge(test_ppl, on=keys, how="left")
    dense = float(test_ppl.loc[test_ppl["criterion"] == "dense", "mean"].iloc[0])
    protocol = results.loc[(results["dataset"] == test_name)
                           & (results["criterion"] == "dense"), "protocol"].iloc[0]
    lines = [f"# Pruning criteria on {name}", "",
             f"Command: `{command}`", "",
             f"Calibration: {stats.attrs['n_tokens']:,} C4 tokens. Validation (every choice): "
             + (f"{args.val_windows} windows of 128 tokens of WikiText-2 validation"
                if args.selection is None else f"the grid of {args.selection}")
             + f". Test: {args.test_windows} windows of 128 tokens of WikiText-2 test "
             f"({args.test_windows * 128:,} tokens). Progressive bias compensation on "
             f"{compensation.size:,} calibration tokens. "
             + (f"Networks: {args.network_runs} runs x {args.network_tokens:,} tokens, up and "
                f"act voxels, n_components={chosen_k} (chosen on validation). "
                if networks is not None else "")
             + f"Random: mean ± sd over {len(random_seeds)} seeds. "
             + (f"'as {same}': the plan options chosen on validation for {same}. "
                if same else "")
             + f"Device: {args.device}; {time.perf_counter() - start:.0f} s in all.", "",
             f"Dense test perplexity: {dense:.2f} (protocol: {protocol})", "",
             "| sparsity | criterion | plan | plan options | test perplexity |",
             "|---:|---|---|---|---:|"]
    for _, row in merged.sort_values(["sparsity", "plan", "mean"]).iterrows():
        value = f"{row['mean']:,.1f}"
        if row["n_seeds"] > 1:
            value += f" ± {row['sd']:,.1f}"
        lines.append(f"| {row['sparsity']:.0%} | {row['criterion']} | {row['plan']} | "
                     f"{row['description']} | {value} |")
    if tasks:
        columns = [*tasks, "zero-shot mean"]
        acc = results[(results["metric"] == "acc") & results["dataset"].isin(columns)]
        cell = acc.assign(cell=[f"{v:.3f} ± {e:.3f}" for v, e in zip(acc["value"], acc["stderr"])])
        wide = cell.pivot_table(index=["criterion", "sparsity"], columns="dataset",
                                values="cell", aggfunc="first").reset_index()
        wide = wide.sort_values("zero-shot mean", ascending=False,
                                key=lambda c: c.str.split(" ").str[0].astype(float))
        items = acc[acc["criterion"] == "dense"].set_index("dataset")["n"]
        lines += ["", f"Zero-shot accuracy ± standard error (first {args.limit:,} items of each "
                  "task, " + ", ".join(f"{t} {int(items[t]):,}" for t in tasks)
                  + "; options chosen on validation; the mean's error combines the tasks'):",
                  "", "| criterion | sparsity | " + " | ".join(columns) + " |",
                  "|---|---:|" + "---:|" * len(columns)]
        for _, row in wide.iterrows():
            lines.append(f"| {row['criterion']} | {row['sparsity']:.0%} | "
                         + " | ".join(row[t] for t in columns) + " |")
    (out / "pruning.md").write_text("\n".join(lines) + "\n")
    curve = merged[merged["plan"].str.contains("validation")][keys]
    if not curve.empty:
        figure(results, curve, test_name, out / "pruning-curve.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
