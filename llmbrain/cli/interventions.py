"""``llmbrain interventions``: networks -> their effect on perplexity, against random controls."""

from __future__ import annotations

from pathlib import Path

from ._common import (add_batch_size_argument, add_max_windows_argument, add_model_arguments,
                      add_random_state_argument, add_verb, add_window_argument, parse_choices,
                      parse_int_list, parse_positive)

_MODES = ("ablate", "amplify")


def parse_modes(text: str) -> list[str]:
    """Parse ``"ablate,amplify"`` into ``["ablate", "amplify"]``."""
    return parse_choices(text, _MODES, "intervention")


def register(subparsers) -> None:
    parser = add_verb(
        subparsers, "interventions",
        help="ablate/amplify each network, against matched random neurons",
        description="Measure the perplexity of a text with each functional network ablated "
                    "(its key neurons set to 0) or amplified, and with random neurons of the "
                    "same count in every layer (drawn outside the network). Writes a results "
                    "table (CSV, one row per measurement) and prints, per network, its change "
                    "against the controls' changes: their ratio, the controls' 95% prediction "
                    "interval and the permutation p-value.",
        examples=["llmbrain interventions networks --model default --text held-out.txt "
                  "--n-controls 10 --out interventions.csv"])
    parser.add_argument("networks", metavar="NETWORKS_DIR",
                        help="folder written by `llmbrain networks` (with --runs, the reference "
                             "run's networks are tested)")
    add_model_arguments(parser)
    parser.add_argument("--text", default="default",
                        help="held-out text (.txt, .jsonl with 'text', PubMedQA .json) the "
                             "networks were not found on, or 'default' (the built-in corpus, "
                             "CPython's documentation: not held out if the networks were found "
                             "on it)")
    parser.add_argument("--components", type=parse_int_list, metavar="LIST",
                        help="networks to test, e.g. 0,3,5-7 (default: every network with key "
                             "neurons)")
    parser.add_argument("--n-controls", type=parse_positive, default=10, metavar="N",
                        help="random controls per network and intervention (10 or more to "
                             "judge a network)")
    parser.add_argument("--modes", type=parse_modes, default="ablate,amplify", metavar="LIST",
                        help="interventions: ablate (set the neurons to 0), amplify (multiply "
                             "them by --scale), or both")
    parser.add_argument("--scale", type=float, default=3.0,
                        help="factor of the amplify intervention")
    add_window_argument(parser, 128, " (perplexity)")
    add_max_windows_argument(parser, 32)
    add_batch_size_argument(parser)
    add_random_state_argument(parser, "the random controls")
    parser.add_argument("--out", "-o", default="interventions.csv",
                        help="results table (CSV)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..corpus import load_corpus
    from ..evaluation import load_text
    from ..evaluation.results import save_results
    from ..interventions import intervene_on_networks, summarize_interventions
    from ..models import load_model
    from ..networks import load_networks

    out = Path(args.out)
    if out.suffix.lower() != ".csv":
        raise ValueError(f"--out {out} should be a .csv file (the results table).")
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a .csv file.")
    networks = load_networks(args.networks)
    text = ("\n\n".join(load_corpus("default")) if args.text == "default"
            else load_text(args.text))
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    results = intervene_on_networks(
        model, tokenizer, networks, text, components=args.components,
        n_controls=args.n_controls, modes=args.modes, scale=args.scale, window=args.window,
        max_windows=args.max_windows, batch_size=args.batch_size,
        random_state=args.random_state, model_name=str(args.model),
        dataset="built-in corpus" if args.text == "default" else Path(args.text).stem,
        progress=args.progress)
    save_results(results, out)
    summary = summarize_interventions(results)
    baseline = summary["baseline"].iloc[0]
    print(f"Perplexity of the unmodified model: {baseline:.3f} (on {results['n'].iloc[0]} "
          f"windows of {args.window} tokens).")
    print(f"{'intervention':<13}{'target':<12}{'perplexity':>11}{'change':>10}{'controls':>10}"
          f"{'ratio':>8}  {'95% interval of controls':<25}{'p':>6}")
    for row in summary.itertuples():
        interval = f"{row.controls_low:+.3f} to {row.controls_high:+.3f}"
        print(f"{row.intervention:<13}{row.target:<12}{row.value:>11.3f}{row.change:>+10.3f}"
              f"{row.controls_mean_change:>+10.3f}{row.change_ratio:>8.2f}  {interval:<25}"
              f"{row.p_value:>6.3f}")
    print(f"change: perplexity minus the unmodified model's; controls: mean change of "
          f"{args.n_controls} random neuron sets of the same count per layer; p: one-sided "
          f"permutation p-value (at least {1 / (args.n_controls + 1):.3f}).")
    print(f"Wrote {len(results)} rows to {out}.")
    return 0
