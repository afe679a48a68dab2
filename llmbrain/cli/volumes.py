"""``llmbrain volumes``: export a store as NIfTI images."""

from __future__ import annotations

from ._common import parse_int_list, parse_positive


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "volumes", help="export a store as 4-D NIfTI images with mask and layer labels",
        description="Write img.nii.gz (neurons as x-y slices, layers as z, tokens as time), "
                    "mask.nii.gz, labels.nii.gz and layout.json.")
    parser.add_argument("store", help="store folder")
    parser.add_argument("--out", "-o", required=True, help="output folder")
    parser.add_argument("--layers", type=parse_int_list, help="layers to export (default: all)")
    parser.add_argument("--max-tokens", type=parse_positive, help="export only the first tokens")
    parser.add_argument("--hook", help="the hook point to export, for a store of several")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing volumes folder")
    parser.set_defaults(func=run)


def run(args) -> int:
    from .._outputs import check_output
    from ..recording import open_activations
    from ..volumes import save_volumes, to_volumes

    check_output(args.out, "volumes", overwrite=args.overwrite, inputs=[args.store])
    data = open_activations(args.store, hook=args.hook)["activations"]
    if "hook" in data.dims:
        raise ValueError(f"{args.store} holds the hooks {data['hook'].values.tolist()}: choose "
                         "one with --hook.")
    if args.layers is not None:
        missing = sorted(set(args.layers) - set(data["layer"].values.tolist()))
        if missing:
            raise ValueError(f"The store has no layer(s) {missing}; it holds "
                             f"{data['layer'].values.tolist()}.")
        data = data.sel(layer=args.layers)
    if args.max_tokens is not None:
        data = data.isel(token=slice(0, args.max_tokens))
    folder = save_volumes(to_volumes(data), args.out)
    print(f"Wrote {folder}/img.nii.gz ({data.sizes['token']} tokens, {data.sizes['layer']} "
          f"layers, {data.sizes['neuron']} neurons) with mask.nii.gz and labels.nii.gz.")
    return 0
