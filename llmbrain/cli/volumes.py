"""``llmbrain volumes``: export a store as NIfTI images."""

from __future__ import annotations

from ._common import (add_hook_argument, add_layers_argument, add_max_tokens_argument,
                      add_overwrite_argument, add_verb)


def register(subparsers) -> None:
    parser = add_verb(
        subparsers, "volumes", help="export a store as 4-D NIfTI images with mask and layer labels",
        description="Write img.nii.gz (neurons as x-y slices, layers as z, tokens as time), "
                    "mask.nii.gz, labels.nii.gz and layout.json.",
        examples=["llmbrain volumes activations.zarr --out volumes --max-tokens 4096"])
    parser.add_argument("store", help="store folder")
    parser.add_argument("--out", "-o", required=True, help="output folder")
    add_layers_argument(parser, " (default: all in the store)")
    add_max_tokens_argument(parser)
    add_hook_argument(parser, None, "; the one to export from a store of several (default: the "
                                    "store's only one)")
    add_overwrite_argument(parser, "a volumes folder")
    parser.set_defaults(func=run)


def run(args) -> int:
    from .._outputs import check_output
    from ..recording import open_activations
    from ..volumes import save_volumes, to_volumes

    check_output(args.out, "volumes", overwrite=args.overwrite, inputs=[args.store])
    if args.hook is not None and len(args.hook) > 1:
        raise ValueError(f"--hook {','.join(args.hook)}: volumes hold one hook point; export "
                         "them one at a time.")
    data = open_activations(args.store, hook=args.hook and args.hook[0])["activations"]
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
