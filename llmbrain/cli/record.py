"""``llmbrain record``: text -> activations."""

from __future__ import annotations

import argparse
import time

from ._common import add_model_arguments, format_bytes, parse_int_list, parse_positive

_HOOKS = ("mlp", "up", "gate", "act", "residual", "attention")


def parse_hooks(text: str) -> list[str]:
    """Parse ``"up,act"`` into ``["up", "act"]``."""
    hooks = [h.strip() for h in text.split(",") if h.strip()]
    unknown = [h for h in hooks if h not in _HOOKS]
    if unknown or not hooks:
        raise argparse.ArgumentTypeError(f"unknown hook {unknown[0] if unknown else text!r}; "
                                          f"choose from {', '.join(_HOOKS)}")
    return hooks


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "record", help="record a model's activations over a corpus into a Zarr store",
        description="Record the activations of a causal LM over a corpus into a Zarr store "
                    "(dims token, layer, neuron). An interrupted recording resumes, and "
                    "missing or damaged chunks are recorded again, when the same command is "
                    "run again.")
    add_model_arguments(parser)
    parser.add_argument("--corpus", default="default",
                        help="text file, JSONL file, folder of .txt files, hf:NAME[:CONFIG], or "
                             "'default' (CPython's documentation; default: %(default)s)")
    parser.add_argument("--text-field", default="text", help="JSONL/dataset text field")
    parser.add_argument("--encoding", default="utf-8",
                        help="encoding of the corpus files (default: %(default)s)")
    parser.add_argument("--out", "-o", default="activations.zarr",
                        help="store folder (default: %(default)s)")
    parser.add_argument("--hook", default=["mlp"], type=parse_hooks,
                        help="where to read activations: " + ", ".join(_HOOKS) + " (default: "
                             "mlp = MLP neurons); several MLP hooks in one pass, e.g. up,act")
    parser.add_argument("--layers", type=parse_int_list, help="e.g. 0,1,2 or 0-11 (default: all)")
    parser.add_argument("--neurons", type=parse_int_list, help="e.g. 0-255 (default: all)")
    parser.add_argument("--window", type=int, default=256, help="tokens per window")
    parser.add_argument("--batch-size", type=parse_positive, default=8,
                        help="windows per forward pass")
    parser.add_argument("--max-tokens", type=parse_positive,
                        help="record at most this many tokens")
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    parser.add_argument("--token-stride", type=parse_positive, default=1, metavar="K",
                        help="keep one token in K of each window (the last of every K), for "
                             "when the disk is the limit (default: every token)")
    parser.add_argument("--neuron-fraction", type=float, metavar="F",
                        help="keep this fraction of the neurons of every layer, drawn at "
                             "random (the same in every layer)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing store (only a store; the new one takes its "
                             "place once complete)")
    parser.add_argument("--verify", action="store_true",
                        help="before resuming, check the recorded chunks against their "
                             "checksums and record again those that differ")
    parser.set_defaults(func=run)


def run(args) -> int:
    from .. import _distributed
    from .._outputs import check_output, output_kind
    from ..corpus import load_corpus
    from ..models import check_device, load_model
    from ..recording import record

    # everything that needs no model is checked first
    if args.window < 2:
        raise ValueError(f"--window must be at least 2 tokens, got {args.window}.")
    if args.max_tokens is not None and args.max_tokens < args.window:
        raise ValueError(f"--max-tokens {args.max_tokens} is less than one window of "
                         f"{args.window} tokens (--window).")
    check_device(args.device)
    if args.neuron_fraction is not None and not 0 < args.neuron_fraction <= 1:
        raise ValueError(f"--neuron-fraction must be in (0, 1], got {args.neuron_fraction}.")
    if output_kind(args.out) != "activations":
        check_output(args.out, "activations", overwrite=True)
    documents = load_corpus(args.corpus, text_field=args.text_field, encoding=args.encoding)
    # under torchrun / accelerate launch the processes share the work, one GPU each
    _distributed.init_from_environment()
    model, tokenizer = load_model(args.model, device=_distributed.local_device(args.device))
    start = time.perf_counter()
    hook = args.hook[0] if len(args.hook) == 1 else args.hook
    ds = record(model, tokenizer, documents, args.out, hook=hook, layers=args.layers,
                neurons=args.neurons, window=args.window, batch_size=args.batch_size,
                dtype=args.dtype, max_tokens=args.max_tokens, token_stride=args.token_stride,
                neuron_fraction=args.neuron_fraction, overwrite=args.overwrite,
                verify=args.verify)
    if _distributed.rank() != 0:
        return 0
    seconds = time.perf_counter() - start
    size = ds["activations"].nbytes
    hooks = ds.attrs.get("hooks") or [ds.attrs["hook"]]
    print(f"Recorded {ds.sizes['token']:,} tokens x {ds.sizes['layer']} layers x "
          f"{ds.sizes['neuron']:,} neurons ({format_bytes(size)}) from {ds.attrs['model']} "
          f"at hook{'s' if len(hooks) > 1 else ''} {', '.join(map(repr, hooks))} into "
          f"{args.out} in {seconds:.1f} s.")
    return 0
