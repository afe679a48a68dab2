"""The ``llmbrain`` command line: one verb per pipeline stage.

Each verb lives in its own module, which defines ``register(subparsers)`` and
``run(args) -> int``; every verb is also one Python call.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

__all__ = ["main"]

_VERBS = ("record", "info", "volumes", "networks", "prune", "evaluate", "run")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="llmbrain",
        description="Study a large language model like a brain: record its neurons, find "
                    "functional networks, prune it while keeping them.")
    parser.add_argument("--version", action="version", version=f"llmbrain {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug messages")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in _VERBS:
        try:
            module = importlib.import_module(f".{verb}", __name__)
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{verb}":
                raise
            continue
        module.register(subparsers)
    return parser


def _run(args) -> int:
    if getattr(args, "adapter", None):
        from ..models import load_adapter, register_adapter

        register_adapter(load_adapter(args.adapter))
    return int(args.func(args) or 0)


def main(argv=None) -> int:
    """Entry point of the ``llmbrain`` command."""
    from ._common import cli_message

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
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
