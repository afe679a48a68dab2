"""The ``llmbrain`` command line: one verb per pipeline stage.

Each verb lives in its own module, which defines ``register(subparsers)`` and
``run(args) -> int``; every verb is also one Python call.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

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


def main(argv=None) -> int:
    """Entry point of the ``llmbrain`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("Interrupted. A recording resumes where it stopped when run again.",
              file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError, OSError,
            ModuleNotFoundError, RuntimeError) as err:
        if args.verbose:
            raise
        print(f"llmbrain {args.verb}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
