"""``llmbrain record``: text -> activations."""

from __future__ import annotations

import time

from ._common import add_model_arguments, format_bytes, parse_int_list


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "record", help="record a model's activations over a corpus into a Zarr store",
        description="Record the activations of a causal LM over a corpus into a Zarr store "
                    "(dims token, layer, neuron). An interrupted recording resumes when the "
                    "same command is run again.")
    add_model_arguments(parser)
    parser.add_argument("--corpus", default="default",
                        help="text file, JSONL file, folder of .txt files, hf:NAME[:CONFIG], or "
                             "'default' (CPython's documentation; default: %(default)s)")
    parser.add_argument("--text-field", default="text", help="JSONL/dataset text field")
    parser.add_argument("--out", "-o", default="activations.zarr",
                        help="store folder (default: %(default)s)")
    parser.add_argument("--hook", default="mlp",
                        choices=["mlp", "up", "gate", "act", "residual", "attention"],
                        help="where to read activations (default: %(default)s = MLP neurons)")
    parser.add_argument("--layers", type=parse_int_list, help="e.g. 0,1,2 or 0-11 (default: all)")
    parser.add_argument("--neurons", type=parse_int_list, help="e.g. 0-255 (default: all)")
    parser.add_argument("--window", type=int, default=256, help="tokens per window")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--max-tokens", type=int, help="record at most this many tokens")
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    parser.add_argument("--overwrite", action="store_true", help="replace an existing store")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..models import load_model
    from ..recording import record

    model, tokenizer = load_model(args.model, device=args.device)
    start = time.perf_counter()
    ds = record(model, tokenizer, args.corpus, args.out, hook=args.hook, layers=args.layers,
                neurons=args.neurons, window=args.window, batch_size=args.batch_size,
                dtype=args.dtype, max_tokens=args.max_tokens, overwrite=args.overwrite,
                text_field=args.text_field)
    seconds = time.perf_counter() - start
    size = ds["activations"].nbytes
    print(f"Recorded {ds.sizes['token']:,} tokens x {ds.sizes['layer']} layers x "
          f"{ds.sizes['neuron']:,} neurons ({format_bytes(size)}) from {ds.attrs['model']} "
          f"at hook '{ds.attrs['hook']}' into {args.out} in {seconds:.1f} s.")
    return 0
