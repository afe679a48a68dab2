"""``llmbrain prune``: model -> structurally pruned model."""

from __future__ import annotations

import time
from pathlib import Path

from ._common import (add_batch_size_argument, add_model_arguments, add_overwrite_argument,
                      add_random_state_argument, add_verb, add_window_argument)

#: llmbrain.pruning.CRITERIA, ALLOCATIONS and BIAS_COMPENSATIONS, named here so that --help
#: needs no torch (a test checks that they agree).
CRITERIA = ("networks", "contextual", "magnitude", "wanda-sp", "flap", "fisher", "loss-networks",
            "random")
ALLOCATIONS = ("uniform", "global", "adaptive")
BIAS_COMPENSATIONS = ("none", "dense", "progressive")


def register(subparsers) -> None:
    parser = add_verb(
        subparsers, "prune",
        help="remove MLP neurons, keeping the important ones (e.g. functional networks)",
        description="Score the MLP neurons of a model with a criterion, choose the neurons each "
                    "layer keeps, rebuild the MLPs without the others and save the smaller model "
                    "(load it back with llmbrain.load_model). The plan options (allocation, "
                    "protected layers, bias compensation) default to those the criterion was "
                    "published with; give them to compare criteria on the same plan.",
        examples=["llmbrain prune --model default --criterion flap --sparsity 0.3 "
                  "--calibration corpus.txt --out pruned",
                  "llmbrain prune --criterion networks --networks networks --calibration "
                  "corpus.txt --out pruned",
                  "llmbrain prune --criterion wanda-sp --allocation global --protect-first 3 "
                  "--protect-last 2 --bias-compensation progressive --out pruned"])
    add_model_arguments(parser)
    parser.add_argument("--criterion", default="flap", choices=CRITERIA,
                        help="importance criterion")
    parser.add_argument("--sparsity", type=float, default=0.3,
                        help="fraction of the MLP neurons to remove (protected layers count)")
    parser.add_argument("--allocation", choices=ALLOCATIONS,
                        help="how removals spread over layers (default: the criterion's "
                             "published choice: networks global, flap adaptive, others uniform)")
    parser.add_argument("--protect-first", type=int, metavar="N",
                        help="first N layers kept whole (default: 3 for networks and fisher, "
                             "else 0)")
    parser.add_argument("--protect-last", type=int, metavar="N",
                        help="last N layers kept whole (default: 2 for networks and fisher, "
                             "else 0)")
    parser.add_argument("--bias-compensation", choices=BIAS_COMPENSATIONS,
                        help="fold the removed neurons' mean output into the output bias, with "
                             "means of the dense model (dense) or of the model being pruned "
                             "(progressive); default: progressive for networks and fisher, dense "
                             "for flap, none for the others")
    parser.add_argument("--min-keep", type=int, default=1,
                        help="least neurons any layer keeps")
    parser.add_argument("--calibration", default="default",
                        help="calibration corpus for contextual/wanda-sp/flap/fisher and bias "
                             "compensation: text/JSONL file, folder of .txt, or 'default'")
    parser.add_argument("--calibration-tokens", type=int, default=8192,
                        help="calibration tokens to use")
    add_window_argument(parser, 256, " (calibration)")
    add_batch_size_argument(parser)
    parser.add_argument("--networks",
                        help="functional networks for --criterion networks: a folder written "
                             "by 'llmbrain networks' (or llmbrain.networks.save_networks), or "
                             "a Zarr store / .nc file holding 'maps_z'")
    add_random_state_argument(parser, "the random criterion")
    parser.add_argument("--out", "-o", required=True, help="folder of the pruned model")
    add_overwrite_argument(parser, "a pruned-model folder")
    parser.set_defaults(func=run)


def open_networks(path):
    """Open functional networks for pruning.

    A folder written by :func:`llmbrain.networks.save_networks` gives the fitted
    estimator (every run of a recurrence analysis); a Zarr store or NetCDF file
    (or a folder holding exactly one) gives its ``maps_z`` variable.
    """
    import xarray as xr

    from ..networks import load_networks

    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"No networks at {path}.")
    if (path / "kind.json").is_file():
        return load_networks(path)
    if path.is_dir() and not any((path / name).exists() for name in ("zarr.json", ".zgroup")):
        found = sorted(path.glob("*.zarr")) + sorted(path.glob("*.nc"))
        if len(found) != 1:
            raise ValueError(f"{path} should be a folder written by 'llmbrain networks', or hold "
                             "exactly one .zarr store or .nc file with the networks; found "
                             f"{[f.name for f in found]}.")
        path = found[0]
    ds = xr.open_zarr(path) if path.is_dir() else xr.open_dataset(path)
    if "maps_z" not in ds:
        raise ValueError(f"{path} holds no 'maps_z' (the z-scored network maps); it has "
                         f"{sorted(ds.data_vars)}.")
    return ds[["maps_z"]].load()


def _options(args):
    from ..pruning import PUBLISHED

    published = PUBLISHED[args.criterion]
    changes = {name: getattr(args, name) for name in
               ("allocation", "protect_first", "protect_last", "bias_compensation")
               if getattr(args, name) is not None}
    return published.replace(min_keep=args.min_keep, **changes)


def run(args) -> int:
    from .._outputs import check_output
    from ..corpus import load_corpus, tokenize_windows
    from ..evaluation import count_parameters
    from ..models import get_adapter, load_model
    from ..pruning import (CALIBRATED_CRITERIA, collect_calibration_stats, prune, save_pruned,
                           sensitivity_options)

    out = Path(args.out)
    if args.criterion == "networks" and not args.networks:
        raise ValueError("--criterion networks needs --networks FOLDER (written by "
                         "'llmbrain networks').")
    if not 0 <= args.sparsity < 1:
        raise ValueError(f"--sparsity is the fraction of neurons to remove, in [0, 1); got "
                         f"{args.sparsity}.")
    options = _options(args)
    inputs = [p for p in (args.model, args.networks, args.calibration)
              if p and Path(p).expanduser().exists()]
    check_output(out, "pruned-model", overwrite=args.overwrite, inputs=inputs)
    networks = open_networks(args.networks) if args.networks else None
    calibrated = (args.criterion in CALIBRATED_CRITERIA
                  or options.bias_compensation != "none")
    documents = load_corpus(args.calibration) if calibrated else None
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    n_layers = len(get_adapter(model).neurons_per_layer(model))
    if args.sparsity > 0 and options.protect_first + options.protect_last >= n_layers:
        raise ValueError(f"--protect-first {options.protect_first} and --protect-last "
                         f"{options.protect_last} keep all {n_layers} layers of {args.model}: "
                         "nothing is left to prune. Keep fewer layers.")
    stats = windows = None
    if documents is not None:
        windows = tokenize_windows(documents, tokenizer, args.window,
                                   max_tokens=args.calibration_tokens)
        stats = collect_calibration_stats(
            model, tokenizer, windows, window=args.window, batch_size=args.batch_size,
            progress=args.progress, **sensitivity_options(args.criterion))
    before = count_parameters(model)["n_params"]
    start = time.perf_counter()
    model, plan = prune(model, args.criterion, args.sparsity, options=options,
                        calibration=stats, calibration_windows=windows, networks=networks,
                        seed=args.random_state, inplace=True, progress=args.progress)
    after = count_parameters(model)["n_params"]
    save_pruned(model, tokenizer, out, plan=plan, overwrite=args.overwrite)
    kept = plan.n_kept()
    print(f"Pruned {args.model} with criterion '{args.criterion}' ({options.describe()}): "
          f"{plan.achieved_sparsity:.1%} of the MLP neurons removed (kept per layer: min "
          f"{min(kept.values())}, max {max(kept.values())}).")
    print(f"Parameters: {before:,} -> {after:,} ({1 - after / before:.1%} fewer), pruned "
          f"in {time.perf_counter() - start:.1f} s. Saved to {out} "
          f"(load with llmbrain.pruning.load_pruned).")
    return 0
