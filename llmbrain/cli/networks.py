"""``llmbrain networks``: activations -> functional networks and key neurons."""

from __future__ import annotations

import argparse
import time

from ._common import (add_batch_size_argument, add_corpus_argument, add_hook_argument,
                      add_layers_argument, add_model_arguments, add_n_components_argument,
                      add_overwrite_argument, add_random_state_argument, add_runs_argument,
                      add_threshold_argument, add_verb, add_window_argument, parse_positive)


def register(subparsers) -> None:
    parser = add_verb(
        subparsers, "networks",
        help="find functional networks (ICA maps) and key neurons, in a store or while a "
             "model runs",
        description="Decompose recorded activations into functional networks with CanICA "
                    "(neurons = voxels, tokens = time points), z-score the maps and keep the "
                    "neurons with |z| above a threshold as key neurons. With --runs N the "
                    "tokens are split into N disjoint runs whose networks are matched.\n\n"
                    "With --online, the published recipe (the up and act outputs of each "
                    "layer, z-scored, PCA then FastICA per layer) is fitted from a sketch of "
                    "each layer's correlations, updated batch by batch: while a model runs "
                    "over a corpus when no store is given (nothing is written but the "
                    "networks), or streaming the store.",
        examples=["llmbrain networks activations.zarr --n-components 20 --scope all --runs 4 "
                  "--out networks",
                  "llmbrain networks --online --model default --corpus corpus.txt --runs 2 "
                  "--tokens-per-run 4096 --out networks"])
    parser.add_argument("store", nargs="?",
                        help="activation store written by `llmbrain record` (omit it with "
                             "--online to record a model instead)")
    add_n_components_argument(parser, None, " (per unit: per layer with --scope layer; "
                                            "default: 20, with --online the recipe's count "
                                            "scaled to the layer's width)")
    parser.add_argument("--method", choices=["canica", "fastica", "dictlearning"],
                        help="decomposition (default: canica, with --online fastica)")
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
    add_layers_argument(parser, " (default: all)")
    add_threshold_argument(parser)
    parser.add_argument("--target-count", type=int,
                        help="tune the threshold to keep this many key neurons instead")
    parser.add_argument("--groups", type=int, default=4,
                        help="token groups ('subjects') of CanICA")
    parser.add_argument("--max-memory-gb", type=float,
                        help="memory for one group of tokens; larger stores are streamed")
    parser.add_argument("--restarts", type=parse_positive,
                        help="FastICA restarts (default: 10, with --online the recipe's 1)")
    parser.add_argument("--fun", choices=["logcosh", "cube", "exp"],
                        help="FastICA contrast (default: logcosh, with --online the recipe's "
                             "cube)")
    add_runs_argument(parser, 1)
    parser.add_argument("--cutoff", type=float, default=0.5,
                        help="matched |r| for a network to recur in a run")
    add_random_state_argument(parser, "the decomposition")
    parser.add_argument("--out", "-o", default="networks", help="output folder (Zarr + NIfTI)")
    add_overwrite_argument(parser, "a networks folder")
    online = parser.add_argument_group(
        "online networks", "one streamed pass: a sketch per layer and run, no activation kept")
    online.add_argument("--online", action="store_true",
                        help="fit the recipe from streamed sketches, from a model (no store "
                             "given) or from the store")
    online.add_argument("--sketch-size", type=parse_sketch_size, default=512, metavar="N",
                        help="columns of each layer's correlation sketch, or 'exact' for the "
                             "whole correlation matrix")
    online.add_argument("--tokens-per-run", type=parse_positive, metavar="N",
                        help="tokens of each run (default: 4096 from a model, the store split "
                             "into --runs equal parts)")
    add_model_arguments(online)
    add_corpus_argument(online, " (from a model)")
    add_hook_argument(online, None, "; the voxels, several hook points decomposed together "
                                    "(default up,act: the recipe's)")
    add_window_argument(online, None, " (recording from a model; default 256)")
    add_batch_size_argument(online)
    parser.set_defaults(func=run)


def parse_sketch_size(text: str) -> int | None:
    """A positive number of columns, or 'exact' (None)."""
    return None if text == "exact" else parse_positive(text)


def run(args) -> int:
    from .._outputs import check_output
    from ..networks import save_networks

    _check_modes(args)
    check_output(args.out, "networks", overwrite=args.overwrite,
                 inputs=[args.store] if args.store else [])
    start = time.perf_counter()
    fitted = _fit_online(args) if args.online else _fit_store(args)
    if fitted is None:                  # another process of a torchrun group
        return 0
    seconds = time.perf_counter() - start
    summary = fitted.summary()
    if hasattr(fitted, "runs_"):
        summary = fitted.runs_[0].summary() + "\n" + summary
    folder = save_networks(fitted, args.out)
    print(summary)
    print(f"Fitted in {seconds:.1f} s; saved to {folder}.")
    return 0


def _check_modes(args) -> None:
    """Refuse flags of the other mode before anything is read or loaded."""
    if args.store is None and not args.online:
        raise ValueError("Give a store recorded by `llmbrain record`, or --online to find the "
                         "networks while a model runs over a corpus.")
    if args.window is not None and (args.store is not None or not args.online):
        raise ValueError("--window is the tokens per window of a recording (--online without "
                         "a store); the layers per window of --scope window are "
                         "--layer-window.")
    if args.online:
        wrong = [flag for flag, bad in (
            ("--method " + str(args.method), args.method not in (None, "fastica")),
            ("--backend nilearn", args.backend != "torch"),
            ("--scope " + args.scope, args.scope != "layer"),
            ("--target-count", args.target_count is not None),
            ("--max-memory-gb", args.max_memory_gb is not None)) if bad]
        if wrong:
            raise ValueError(f"--online fits the recipe (FastICA per layer, --threshold): "
                             f"{', '.join(wrong)} needs a store without --online.")
    elif args.hook is not None or args.tokens_per_run is not None:
        raise ValueError("--hook and --tokens-per-run are for --online; a store's hook points "
                         "and tokens are its own.")


def _fit_store(args):
    from ..networks import FunctionalNetworks, NetworkRecurrence

    estimator = FunctionalNetworks(
        n_components=args.n_components or 20, method=args.method or "canica",
        backend=args.backend, scope=args.scope, window=args.layer_window,
        stride=args.layer_stride, layers=args.layers, threshold=args.threshold,
        target_count=args.target_count, n_groups=args.groups, max_memory_gb=args.max_memory_gb,
        n_init=args.restarts or 10, fun=args.fun or "logcosh", random_state=args.random_state,
        device=args.device, verbose=args.progress)
    if args.runs > 1:
        return NetworkRecurrence(estimator, n_runs=args.runs, cutoff=args.cutoff,
                                 verbose=args.progress).fit(args.store)
    return estimator.fit(args.store)


def _fit_online(args):
    from .. import distributed as processes
    from ..corpus import load_corpus
    from ..models import load_model
    from ..networks import OnlineNetworks, find_networks
    from ..recording import open_activations

    recipe = dict(n_components=args.n_components or "scaled", n_runs=args.runs,
                  sketch_size=args.sketch_size, fun=args.fun or "cube",
                  n_init=args.restarts or 1, threshold=args.threshold,
                  random_state=args.random_state, device=args.device, verbose=args.progress)
    if args.store is not None:
        store = open_activations(args.store)
        if args.layers is not None:
            store = store.sel(layer=args.layers)
        return OnlineNetworks(tokens_per_run=args.tokens_per_run, **recipe).fit(store).networks_
    documents = load_corpus(args.corpus)
    processes.init_from_environment()  # under torchrun: the processes share the batches
    model, tokenizer = load_model(args.model, device=processes.local_device(args.device),
                                  dtype=args.dtype)
    recipe.pop("device")
    networks = find_networks(model, tokenizer, documents, hook=tuple(args.hook or ("up", "act")),
                             tokens_per_run=args.tokens_per_run or 4096,
                             window=args.window or 256, batch_size=args.batch_size,
                             layers=args.layers, online=True, **recipe)
    return networks if processes.rank() == 0 else None
