"""``llmbrain run``: the whole pipeline, from text to report."""

from __future__ import annotations

from ._common import (add_batch_size_argument, add_corpus_argument, add_model_arguments,
                      add_n_components_argument, add_overwrite_argument, add_random_state_argument,
                      add_runs_argument, add_threshold_argument, add_verb, add_window_argument,
                      parse_positive)


def register(subparsers) -> None:
    parser = add_verb(
        subparsers, "run", help="run the whole pipeline and write an HTML report",
        description="Record the MLP neurons, find functional networks and their recurrence, "
                    "ablate/amplify networks against random controls, prune by several criteria, "
                    "evaluate on held-out documents, and write a report folder (index.html, "
                    "networks as NIfTI, the model pruned by the loss-networks criterion).",
        examples=["llmbrain run --out llmbrain-report",
                  "llmbrain run --model model.gguf --corpus notes.txt --tokens 32768 "
                  "--n-components 20 --out report"])
    add_model_arguments(parser)
    add_corpus_argument(parser, "; every fifth document is held out for evaluation")
    parser.add_argument("--out", "-o", default="llmbrain-report", help="report folder")
    parser.add_argument("--tokens", type=parse_positive, default=8192, metavar="N",
                        help="tokens to record")
    add_window_argument(parser, 256, " (recording)")
    add_batch_size_argument(parser)
    add_n_components_argument(parser, 10, " (per run)")
    add_runs_argument(parser, 3)
    add_threshold_argument(parser)
    parser.add_argument("--sparsity", type=float, default=0.3,
                        help="fraction of the MLP neurons to remove (protected layers count)")
    parser.add_argument("--eval-windows", type=parse_positive, default=24, metavar="N",
                        help="held-out windows of 128 tokens for perplexity")
    add_random_state_argument(parser)
    add_overwrite_argument(parser, "the recording in the report folder: record again")
    parser.set_defaults(func=run)


def run(args) -> int:
    from .._outputs import check_output, mark_output, output_kind
    from ..pipeline import run_pipeline

    if output_kind(args.out) != "report":  # never write into a folder that is not ours
        check_output(args.out, "report", overwrite=True)
        mark_output(args.out, "report")
    model = args.model
    if args.dtype != "float32":
        from ..models import load_model

        model = load_model(args.model, device=args.device, dtype=args.dtype)
    run_pipeline(model, args.corpus, args.out, n_tokens=args.tokens, window=args.window,
                 batch_size=args.batch_size, n_components=args.n_components, n_runs=args.runs,
                 threshold=args.threshold, sparsity=args.sparsity, eval_windows=args.eval_windows,
                 device=args.device, seed=args.random_state, overwrite=args.overwrite,
                 progress=args.progress)
    return 0
