"""``llmbrain networks``: activations -> functional networks and key neurons."""

from __future__ import annotations

import argparse
import time

from ._common import (add_device_argument, add_layers_argument, add_n_components_argument,
                      add_overwrite_argument, add_random_state_argument, add_runs_argument,
                      add_threshold_argument, add_verb, parse_positive)


def register(subparsers) -> None:
    parser = add_verb(
        subparsers, "networks",
        help="find functional networks (ICA maps) and key neurons in a store",
        description="Decompose recorded activations into functional networks with CanICA "
                    "(neurons = voxels, tokens = time points), z-score the maps and keep the "
                    "neurons with |z| above a threshold as key neurons. With --runs N the "
                    "tokens are split into N disjoint runs whose networks are matched.",
        examples=["llmbrain networks activations.zarr --n-components 20 --scope all --runs 4 "
                  "--out networks"])
    parser.add_argument("store", help="activation store written by `llmbrain record`")
    add_n_components_argument(parser, 20, " (per unit: per layer with --scope layer)")
    parser.add_argument("--method", default="canica", choices=["canica", "fastica", "dictlearning"],
                        help="decomposition")
    parser.add_argument("--backend", default="torch", choices=["torch", "nilearn"],
                        help="torch (CPU or GPU, streams large stores) or nilearn's estimators")
    parser.add_argument("--scope", default="layer", choices=["layer", "all", "window"],
                        help="decompose each layer alone, all layers together, or sliding "
                             "windows of layers (--layer-window)")
    parser.add_argument("--layer-window", type=parse_positive, metavar="LAYERS",
                        help="layers per window (--scope window)")
    parser.add_argument("--layer-stride", type=parse_positive, metavar="LAYERS",
                        help="layers between windows (default: --layer-window)")
    parser.add_argument("--stride", type=parse_positive, dest="layer_stride",
                        default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument("--window", action=_Renamed, nargs=0, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)
    add_layers_argument(parser, " (default: all in the store)")
    add_threshold_argument(parser)
    parser.add_argument("--target-count", type=int,
                        help="tune the threshold to keep this many key neurons instead")
    parser.add_argument("--groups", type=int, default=4,
                        help="token groups ('subjects') of CanICA")
    parser.add_argument("--max-memory-gb", type=float,
                        help="memory for one group of tokens; larger stores are streamed")
    parser.add_argument("--restarts", type=int, default=10, help="FastICA restarts")
    parser.add_argument("--fun", default="logcosh", choices=["logcosh", "cube", "exp"],
                        help="FastICA contrast")
    add_runs_argument(parser, 1)
    parser.add_argument("--cutoff", type=float, default=0.5,
                        help="matched |r| for a network to recur in a run")
    add_device_argument(parser)
    add_random_state_argument(parser, "the decomposition")
    parser.add_argument("--out", "-o", default="networks", help="output folder (Zarr + NIfTI)")
    add_overwrite_argument(parser, "a networks folder")
    parser.set_defaults(func=run)


class _Renamed(argparse.Action):
    """``networks --window``: tokens per window in every other verb, so here it is
    refused with the new name of the layers-per-window flag."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error("--window is now --layer-window (layers per window with --scope window); "
                     "--window means tokens per window in every verb")


def run(args) -> int:
    from .._outputs import check_output
    from ..networks import FunctionalNetworks, NetworkRecurrence, save_networks

    check_output(args.out, "networks", overwrite=args.overwrite, inputs=[args.store])
    params = dict(n_components=args.n_components, method=args.method, backend=args.backend,
                  scope=args.scope, window=args.layer_window, stride=args.layer_stride,
                  layers=args.layers, threshold=args.threshold, target_count=args.target_count,
                  n_groups=args.groups, max_memory_gb=args.max_memory_gb,
                  n_init=args.restarts, fun=args.fun, random_state=args.random_state,
                  device=args.device, verbose=args.progress)
    start = time.perf_counter()
    if args.runs > 1:
        fitted = NetworkRecurrence(FunctionalNetworks(**params), n_runs=args.runs,
                                   cutoff=args.cutoff, verbose=args.progress).fit(args.store)
        summary = fitted.runs_[0].summary() + "\n" + fitted.summary()
    else:
        fitted = FunctionalNetworks(**params).fit(args.store)
        summary = fitted.summary()
    seconds = time.perf_counter() - start
    folder = save_networks(fitted, args.out)
    print(summary)
    print(f"Fitted in {seconds:.1f} s; saved to {folder}.")
    return 0
