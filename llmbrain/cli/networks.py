"""``llmbrain networks``: activations -> functional networks and key neurons."""

from __future__ import annotations

import time

from ._common import parse_int_list


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "networks", help="find functional networks (ICA maps) and key neurons in a store",
        description="Decompose recorded activations into functional networks with CanICA "
                    "(neurons = voxels, tokens = time points), z-score the maps and keep the "
                    "neurons with |z| above a threshold as key neurons. With --runs N the "
                    "tokens are split into N disjoint runs whose networks are matched.")
    parser.add_argument("store", help="activation store written by `llmbrain record`")
    parser.add_argument("--n-components", type=int, default=20,
                        help="networks per unit (per layer with --scope layer; default: %(default)s)")
    parser.add_argument("--method", default="canica", choices=["canica", "fastica", "dictlearning"])
    parser.add_argument("--backend", default="torch", choices=["torch", "nilearn"])
    parser.add_argument("--scope", default="layer", choices=["layer", "all", "window"])
    parser.add_argument("--window", type=int, help="layers per window (--scope window)")
    parser.add_argument("--stride", type=int, help="layers between windows (default: --window)")
    parser.add_argument("--layers", type=parse_int_list, help="e.g. 0-11 (default: all recorded)")
    parser.add_argument("--threshold", type=float, default=3.6,
                        help="|z| above which a neuron belongs to a network (default: %(default)s)")
    parser.add_argument("--target-count", type=int,
                        help="tune the threshold to keep this many key neurons instead")
    parser.add_argument("--groups", type=int, default=4,
                        help="token groups ('subjects') of CanICA (default: %(default)s)")
    parser.add_argument("--max-memory-gb", type=float,
                        help="memory for one group of tokens; larger stores are streamed")
    parser.add_argument("--restarts", type=int, default=10, help="FastICA restarts")
    parser.add_argument("--fun", default="logcosh", choices=["logcosh", "cube", "exp"],
                        help="FastICA contrast (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=1,
                        help="disjoint token runs to fit and match (default: %(default)s)")
    parser.add_argument("--cutoff", type=float, default=0.5,
                        help="matched |r| for a network to recur in a run (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", "-o", default="networks",
                        help="output folder (Zarr + NIfTI; default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing networks folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args) -> int:
    from .._outputs import check_output
    from ..models import check_device
    from ..networks import FunctionalNetworks, NetworkRecurrence, save_networks

    check_output(args.out, "networks", overwrite=args.overwrite, inputs=[args.store])
    check_device(args.device)

    params = dict(n_components=args.n_components, method=args.method, backend=args.backend,
                  scope=args.scope, window=args.window, stride=args.stride, layers=args.layers,
                  threshold=args.threshold, target_count=args.target_count, n_groups=args.groups,
                  max_memory_gb=args.max_memory_gb, n_init=args.restarts, fun=args.fun,
                  random_state=args.seed, device=args.device, verbose=not args.quiet)
    start = time.perf_counter()
    if args.runs > 1:
        fitted = NetworkRecurrence(FunctionalNetworks(**params), n_runs=args.runs,
                                   cutoff=args.cutoff, verbose=not args.quiet).fit(args.store)
        summary = fitted.runs_[0].summary() + "\n" + fitted.summary()
    else:
        fitted = FunctionalNetworks(**params).fit(args.store)
        summary = fitted.summary()
    seconds = time.perf_counter() - start
    folder = save_networks(fitted, args.out)
    print(summary)
    print(f"Fitted in {seconds:.1f} s; saved to {folder}.")
    return 0
