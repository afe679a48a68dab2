"""``llmbrain record``: text -> activations."""

from __future__ import annotations

import time

from ._common import (add_batch_size_argument, add_corpus_argument, add_hook_argument,
                      add_layers_argument, add_max_tokens_argument, add_model_arguments,
                      add_overwrite_argument, add_verb, add_window_argument, format_bytes,
                      parse_int_list, parse_positive)


def register(subparsers) -> None:
    parser = add_verb(
        subparsers, "record", help="record a model's activations over a corpus into a Zarr store",
        description="Record the activations of a causal LM over a corpus into a Zarr store "
                    "(dims token, layer, neuron). An interrupted recording resumes, and "
                    "missing or damaged chunks are recorded again, when the same command is "
                    "run again.",
        examples=["llmbrain record --model default --corpus notes.txt --out activations.zarr "
                  "--layers 0-11"])
    add_model_arguments(parser)
    add_corpus_argument(parser)
    parser.add_argument("--text-field", default="text", help="JSONL/dataset text field")
    parser.add_argument("--encoding", default="utf-8", help="encoding of the corpus files")
    parser.add_argument("--out", "-o", default="activations.zarr", help="store folder")
    add_hook_argument(parser, "mlp", "; several MLP hooks are recorded in one pass, e.g. up,act")
    add_layers_argument(parser)
    parser.add_argument("--neurons", type=parse_int_list, help="e.g. 0-255 (default: all)")
    add_window_argument(parser, 256, " (recording)")
    add_batch_size_argument(parser)
    add_max_tokens_argument(parser, " (default: the whole corpus)")
    parser.add_argument("--store-dtype", default="float16", choices=["float16", "float32"],
                        help="type of the stored activations")
    parser.add_argument("--token-stride", type=parse_positive, default=1, metavar="K",
                        help="keep one token in K of each window (the last of every K), for "
                             "when the disk is the limit")
    parser.add_argument("--neuron-fraction", type=float, metavar="F",
                        help="keep this fraction of the neurons of every layer, drawn at "
                             "random (the same in every layer)")
    add_overwrite_argument(parser, "a store")
    parser.add_argument("--verify", action="store_true",
                        help="compare every recorded chunk with its checksum; before resuming, "
                             "so that those that differ are recorded again")
    parser.set_defaults(func=run)


def run(args) -> int:
    from .. import distributed as processes
    from .._outputs import check_output, output_kind
    from ..corpus import load_corpus
    from ..models import load_model
    from ..recording import record

    # everything that needs no model is checked first
    if args.max_tokens is not None and args.max_tokens < args.window:
        raise ValueError(f"--max-tokens {args.max_tokens} is less than one window of "
                         f"{args.window} tokens (--window).")
    if args.neuron_fraction is not None and not 0 < args.neuron_fraction <= 1:
        raise ValueError(f"--neuron-fraction must be in (0, 1], got {args.neuron_fraction}.")
    if output_kind(args.out) != "activations":
        check_output(args.out, "activations", overwrite=True)
    documents = load_corpus(args.corpus, text_field=args.text_field, encoding=args.encoding)
    # under torchrun / accelerate launch the processes share the work, one GPU each
    processes.init_from_environment()
    model, tokenizer = load_model(args.model, device=processes.local_device(args.device),
                                  dtype=args.dtype)
    start = time.perf_counter()
    hook = args.hook[0] if len(args.hook) == 1 else args.hook
    ds = record(model, tokenizer, documents, args.out, hook=hook, layers=args.layers,
                neurons=args.neurons, window=args.window, batch_size=args.batch_size,
                dtype=args.store_dtype, max_tokens=args.max_tokens,
                token_stride=args.token_stride, neuron_fraction=args.neuron_fraction,
                overwrite=args.overwrite, verify=args.verify, progress=args.progress)
    if processes.rank() != 0:
        return 0
    seconds = time.perf_counter() - start
    size = ds["activations"].nbytes
    hooks = ds.attrs.get("hooks") or [ds.attrs["hook"]]
    print(f"Recorded {ds.sizes['token']:,} tokens x {ds.sizes['layer']} layers x "
          f"{ds.sizes['neuron']:,} neurons ({format_bytes(size)}) from {ds.attrs['model']} "
          f"at hook{'s' if len(hooks) > 1 else ''} {', '.join(map(repr, hooks))} into "
          f"{args.out} in {seconds:.1f} s.")
    return 0
