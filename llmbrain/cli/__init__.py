"""The ``llmbrain`` command line: one verb per pipeline stage.

Each verb lives in its own module, which defines ``register(subparsers)`` and
``run(args) -> int``; every verb is also one Python call. Modules import
torch, transformers, xarray and the stages only inside ``run``, so that
``llmbrain --help`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

from ._common import HelpFormatter, cli_message, verbosity_parser

__all__ = ["build_parser", "main"]

#: The verbs, in the order of the pipeline (then the tools).
VERBS = ("record", "info", "volumes", "networks", "interventions", "prune", "evaluate", "run",
         "cache")


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``llmbrain`` command, with one sub-parser per verb."""
    from .._version import __version__

    parser = argparse.ArgumentParser(
        prog="llmbrain", formatter_class=HelpFormatter, parents=[verbosity_parser(False)],
        description="Study a large language model like a brain: record its neurons, find "
                    "functional networks, test them against random neurons, and prune the "
                    "model while keeping them.",
        epilog="examples:\n"
               "  llmbrain run --out llmbrain-report      # the whole pipeline, with a report\n"
               "  llmbrain record --out activations.zarr  # one stage at a time\n"
               "  llmbrain networks activations.zarr --out networks\n\n"
               "Run 'llmbrain VERB --help' for the options of a verb.")
    parser.add_argument("--version", action="version", version=f"llmbrain {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", title="verbs")
    for verb in VERBS:
        importlib.import_module(f".{verb}", __name__).register(subparsers)
    return parser


def _run(args) -> int:
    if getattr(args, "device", None) is not None:
        from ..models import check_device

        args.device = str(check_device(args.device))  # 'auto' -> what this machine has
    if getattr(args, "adapter", None):
        from ..models import load_adapter, register_adapter

        register_adapter(load_adapter(args.adapter))
    if args.progress or not hasattr(args, "model"):
        return int(args.func(args) or 0)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # its bars while loading a model
    try:
        return int(args.func(args) or 0)
    finally:
        transformers_logging.enable_progress_bar()


def main(argv=None) -> int:
    """Entry point of the ``llmbrain`` command.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default: the command line's).

    Returns
    -------
    int
        The exit status: 0 on success, 1 on an error (printed as one line),
        2 on a usage error, 130 when interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    args.progress = not args.quiet
    with warnings.catch_warnings():
        if not args.verbose:  # warnings as one line, in the words of the command line
            warnings.showwarning = lambda message, *_, **__: print(
                f"llmbrain {args.verb}: warning: {cli_message(str(message))}", file=sys.stderr)
        try:
            return _run(args)
        except KeyboardInterrupt:
            print("Interrupted. A recording resumes where it stopped when run again.",
                  file=sys.stderr)
            return 130
        except (ValueError, OSError, ImportError, RuntimeError) as err:
            if args.verbose:
                raise
            print(f"llmbrain {args.verb}: error: {cli_message(str(err))}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
