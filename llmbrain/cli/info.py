"""``llmbrain info``: describe an activation store."""

from __future__ import annotations

from ._common import add_verb, format_bytes


def register(subparsers) -> None:
    parser = add_verb(subparsers, "info", help="describe an activation store",
                      description="Describe a store written by `llmbrain record` and check that "
                                  "its chunks are all there; exits with 1 if the store is "
                                  "damaged.",
                      examples=["llmbrain info activations.zarr --verify"])
    parser.add_argument("store", help="store folder")
    parser.add_argument("--verify", action="store_true",
                        help="compare every recorded chunk with its checksum; reads the whole "
                             "store")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..recording.store import describe_damage, open_store, tokens_per_window

    ds, damage = open_store(args.store, allow_incomplete=True, verify=args.verify)
    attrs = ds.attrs
    layers = ds["layer"].values
    status = "complete" if attrs["complete"] else "INCOMPLETE (run the record command again)"
    if damage:
        status = "DAMAGED: " + describe_damage(args.store, damage)
    elif args.verify:
        status += ", every chunk matches its checksum"
    hooks = attrs.get("hooks") or [attrs["hook"]]
    rows = [
        ("store", args.store),
        ("status", status),
        ("model", f"{attrs['model']} ({attrs['architecture']}, fingerprint "
                  f"{attrs['model_fingerprint']})"),
        ("hook" + ("s" if len(hooks) > 1 else ""), ", ".join(hooks)),
        ("tokens", f"{ds.sizes['token']:,} of {attrs['n_tokens_planned']:,}"),
        ("windows", f"{ds.sizes['token'] // tokens_per_window(attrs):,} x "
                    f"{attrs['window_length']} tokens"
                    + (f", one token in {attrs['token_stride']} kept"
                       if int(attrs.get("token_stride", 1)) > 1 else "")),
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
    return 1 if damage else 0
