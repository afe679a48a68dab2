"""``llmbrain info``: describe an activation store."""

from __future__ import annotations

from ._common import format_bytes


def register(subparsers) -> None:
    parser = subparsers.add_parser("info", help="describe an activation store",
                                   description="Describe a store written by `llmbrain record`.")
    parser.add_argument("store", help="store folder")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..recording import open_activations

    ds = open_activations(args.store, allow_incomplete=True)
    attrs = ds.attrs
    layers = ds["layer"].values
    status = "complete" if attrs["complete"] else "INCOMPLETE (run the record command again)"
    rows = [
        ("store", args.store),
        ("status", status),
        ("model", f"{attrs['model']} ({attrs['architecture']}, fingerprint "
                  f"{attrs['model_fingerprint']})"),
        ("hook", attrs["hook"]),
        ("tokens", f"{ds.sizes['token']:,} of {attrs['n_tokens_planned']:,}"),
        ("windows", f"{ds.sizes['token'] // attrs['window_length']:,} x "
                    f"{attrs['window_length']} tokens"),
        ("documents", f"{len(set(ds['document'].values.tolist())):,}"),
        ("layers", f"{len(layers)} ({layers[0]}..{layers[-1]})"),
        ("neurons", f"{ds.sizes['neuron']:,} per layer"),
        ("dtype", attrs["dtype"]),
        ("size", format_bytes(ds["activations"].nbytes)),
        ("corpus", attrs["corpus_fingerprint"]),
        ("created", attrs["created"]),
    ]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:>{width}}  {value}")
    return 0
