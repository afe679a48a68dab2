"""``llmbrain prune``: model -> structurally pruned model."""

from __future__ import annotations

import time
from pathlib import Path

from ._common import (add_batch_size_argument, add_model_arguments, add_overwrite_argument,
                      add_random_state_argument, add_threshold_argument, add_verb,
                      add_window_argument, parse_int_list)

_BIAS_CHOICES = ("auto", "yes", "no")
#: llmbrain.pruning.CRITERIA and ALLOCATIONS, named here so that --help needs no torch
#: (a test checks that they agree).
CRITERIA = ("networks", "contextual", "magnitude", "wanda-sp", "flap", "random")
ALLOCATIONS = ("uniform", "global", "adaptive")


def register(subparsers) -> None:
    parser = add_verb(
        subparsers, "prune",
        help="remove MLP neurons, keeping the important ones (e.g. functional networks)",
        description="Score the MLP neurons of a model with a criterion, choose the neurons each "
                    "layer keeps, rebuild the MLPs without the others and save the smaller model "
                    "(load it back with llmbrain.load_model).",
        examples=["llmbrain prune --model default --criterion flap --sparsity 0.3 "
                  "--calibration corpus.txt --out pruned",
                  "llmbrain prune --criterion networks --fill contextual --networks networks "
                  "--out pruned"])
    add_model_arguments(parser)
    parser.add_argument("--criterion", default="flap", choices=CRITERIA,
                        help="importance criterion")
    parser.add_argument("--sparsity", type=float, default=0.3,
                        help="fraction of the prunable MLP neurons to remove")
    parser.add_argument("--allocation", default="uniform", choices=ALLOCATIONS,
                        help="how removals spread over layers")
    parser.add_argument("--calibration", default="default",
                        help="calibration corpus for contextual/wanda-sp/flap and bias "
                             "compensation: text/JSONL file, folder of .txt, or 'default'")
    parser.add_argument("--calibration-tokens", type=int, default=8192,
                        help="calibration tokens to use")
    add_window_argument(parser, 256, " (calibration)")
    add_batch_size_argument(parser)
    parser.add_argument("--networks",
                        help="functional networks for --criterion networks: a Zarr store or "
                             ".nc file (or a folder holding one) with 'key_neurons' and/or "
                             "'maps_z' / 'max_abs_z' (layer, neuron)")
    add_threshold_argument(parser, " (used when --networks holds z maps only)")
    parser.add_argument("--fill", choices=[c for c in CRITERIA if c != "networks"],
                        help="with --criterion networks: rank the non-key neurons by this "
                             "criterion instead of their |z|")
    parser.add_argument("--protect-layers", type=parse_int_list, default=[],
                        help="layers kept whole, e.g. 0,29 (default: none)")
    parser.add_argument("--protect-first-last", action="store_true",
                        help="keep the first and last layers whole")
    parser.add_argument("--min-keep", type=int, default=1,
                        help="least neurons any layer keeps")
    parser.add_argument("--bias-compensation", default="auto", choices=_BIAS_CHOICES,
                        help="add the removed neurons' mean contribution to the output bias "
                             "(auto: only with flap)")
    add_random_state_argument(parser, "the random criterion")
    parser.add_argument("--out", "-o", required=True, help="folder of the pruned model")
    add_overwrite_argument(parser, "a pruned-model folder")
    parser.set_defaults(func=run)


def open_networks(path):
    """Open saved functional networks (Zarr store or NetCDF file) as a Dataset."""
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No networks at {path}.")
    if path.is_dir() and not any((path / name).exists() for name in ("zarr.json", ".zgroup")):
        found = sorted(path.glob("*.zarr")) + sorted(path.glob("*.nc"))
        if len(found) != 1:
            raise ValueError(f"{path} should hold exactly one .zarr store or .nc file with the "
                             f"networks; found {[f.name for f in found]}.")
        path = found[0]
    ds = xr.open_zarr(path) if path.is_dir() else xr.open_dataset(path)
    names = {"key_neurons", "maps_z", "max_abs_z"} & set(ds.data_vars)
    if not names:
        raise ValueError(f"{path} holds none of 'key_neurons', 'maps_z', 'max_abs_z' "
                         f"(it has {sorted(ds.data_vars)}).")
    ds = ds[sorted(names)].load()
    if "key_neurons" in ds:
        ds["key_neurons"] = ds["key_neurons"].astype(bool)
    return ds


def run(args) -> int:
    from .._outputs import check_output
    from ..corpus import load_corpus
    from ..evaluation import count_parameters
    from ..models import load_model
    from ..pruning import (collect_calibration_stats, make_plan, prune_model,
                           save_pruned, score_neurons)

    out = Path(args.out)
    if args.criterion == "networks" and not args.networks:
        raise ValueError("--criterion networks needs --networks FOLDER.")
    if not 0 <= args.sparsity < 1:
        raise ValueError(f"--sparsity is the fraction of neurons to remove, in [0, 1); got "
                         f"{args.sparsity}.")
    inputs = [p for p in (args.model, args.networks, args.calibration)
              if p and Path(p).expanduser().exists()]
    check_output(out, "pruned-model", overwrite=args.overwrite, inputs=inputs)
    networks = open_networks(args.networks) if args.networks else None
    bias = (args.bias_compensation == "yes"
            or (args.bias_compensation == "auto" and args.criterion == "flap"))
    calibrated = ("contextual", "wanda-sp", "flap")
    calibration = None
    if args.criterion in calibrated or args.fill in calibrated or bias:
        calibration = load_corpus(args.calibration)
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    stats = None
    if calibration is not None:
        stats = collect_calibration_stats(model, tokenizer, calibration, window=args.window,
                                          batch_size=args.batch_size,
                                          max_tokens=args.calibration_tokens,
                                          progress=args.progress)
    scores = score_neurons(model, args.criterion, calibration=stats, networks=networks,
                           threshold=args.threshold, fill=args.fill, seed=args.random_state)
    plan = make_plan(scores, args.sparsity, args.allocation,
                     protect_layers=args.protect_layers,
                     protect_first=int(args.protect_first_last),
                     protect_last=int(args.protect_first_last), min_keep=args.min_keep)
    before = count_parameters(model)["n_params"]
    start = time.perf_counter()
    prune_model(model, plan, bias_compensation=stats if bias else None,
                progress=args.progress)
    after = count_parameters(model)["n_params"]
    save_pruned(model, tokenizer, out, plan=plan, overwrite=args.overwrite)
    kept = plan.n_kept()
    print(f"Pruned {args.model} with criterion '{args.criterion}', allocation "
          f"'{args.allocation}': {plan.achieved_sparsity:.1%} of the planned neurons removed "
          f"(kept per layer: min {min(kept.values())}, max {max(kept.values())}).")
    print(f"Parameters: {before:,} -> {after:,} ({1 - after / before:.1%} fewer), pruned "
          f"in {time.perf_counter() - start:.1f} s. Saved to {out} "
          f"(load with llmbrain.pruning.load_pruned).")
    return 0
