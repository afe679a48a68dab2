"""``llmbrain run``: the whole pipeline, from text to report."""

from __future__ import annotations

from ._common import add_model_arguments


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run", help="run the whole pipeline and write an HTML report",
        description="Record the MLP neurons, find functional networks and their recurrence, "
                    "ablate/amplify networks against random controls, prune by several criteria, "
                    "evaluate on held-out documents, and write a report folder (index.html, "
                    "networks as NIfTI, the model pruned by the functional-network criterion).")
    add_model_arguments(parser)
    parser.add_argument("--corpus", default="default",
                        help="corpus (every fifth document is held out for evaluation)")
    parser.add_argument("--out", "-o", default="llmbrain-report", help="report folder")
    parser.add_argument("--tokens", type=int, default=8192, help="tokens to record")
    parser.add_argument("--components", type=int, default=10, help="networks per run")
    parser.add_argument("--runs", type=int, default=3, help="disjoint token blocks")
    parser.add_argument("--threshold", type=float, default=3.6, help="key-neuron |z| threshold")
    parser.add_argument("--sparsity", type=float, default=0.3, help="fraction of MLP neurons "
                        "to remove")
    parser.add_argument("--eval-windows", type=int, default=24,
                        help="held-out windows of 128 tokens for perplexity")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true",
                        help="record again, replacing the recording in the report folder")
    parser.set_defaults(func=run)


def run(args) -> int:
    from .._outputs import check_output, mark_output, output_kind
    from ..models import check_device
    from ..pipeline import run_pipeline

    check_device(args.device)
    if output_kind(args.out) != "report":  # never write into a folder that is not ours
        check_output(args.out, "report", overwrite=True)
        mark_output(args.out, "report")
    run_pipeline(args.model, args.corpus, args.out, n_tokens=args.tokens,
                 n_components=args.components, n_runs=args.runs, threshold=args.threshold,
                 sparsity=args.sparsity, eval_windows=args.eval_windows, device=args.device,
                 seed=args.seed, overwrite=args.overwrite)
    return 0
