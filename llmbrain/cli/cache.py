"""``llmbrain cache``: list and clear the models converted from GGUF files."""

from __future__ import annotations

import sys

from ._common import VERBOSITY, HelpFormatter, add_verb, format_bytes


def register(subparsers) -> None:
    parser = add_verb(
        subparsers, "cache", help="list or clear the cached conversions of GGUF models",
        description="A GGUF model is dequantised on its first load and kept as a safetensors "
                    "folder in the cache ($LLMBRAIN_CACHE, else $XDG_CACHE_HOME/llmbrain, else "
                    "~/.cache/llmbrain), keyed by the file's content: a copy of the file under "
                    "another name uses the same entry. 'llmbrain cache' alone lists the entries.",
        examples=["llmbrain cache list", "llmbrain cache clear SmolLM2-135M-Instruct.Q4_1 --yes",
                  "llmbrain cache dir"])
    actions = parser.add_subparsers(dest="action", metavar="ACTION", title="actions")
    common = {"formatter_class": HelpFormatter, "parents": [VERBOSITY]}
    actions.add_parser("list", help="list the cached models: name, size, dates, source (the "
                                    "default action)", **common)
    actions.add_parser("dir", help="print the cache folder", **common)
    clear = actions.add_parser("clear", help="remove cached models (all, or one by name)",
                               description="Remove cached models; they are converted again on "
                                           "their next load.", **common)
    clear.add_argument("name", nargs="?", metavar="NAME",
                       help="entry to remove: its name, key, or the GGUF file it was made from "
                            "(default: every entry)")
    clear.add_argument("--yes", "-y", action="store_true",
                       help="remove without asking (needed when not run in a terminal)")
    parser.set_defaults(func=run, action="list")


def _date(value) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M") if value else "-"


def run(args) -> int:
    from ..models.cache import cache_dir, cached_models, clear_cache, disk_usage

    if args.action == "dir":
        print(cache_dir())
        return 0
    if args.action == "list":
        entries = cached_models()
        if not entries:
            print(f"No cached model in {cache_dir() / 'models'}.")
            return 0
        width = max(len("name"), *(len(e.name) for e in entries))
        print(f"{'name':<{width}}  {'size':>9}  {'created':<16}  {'last used':<16}  source")
        for e in entries:
            source = e.sources[0] if e.sources else ("(llmbrain 0.1 entry)" if e.legacy else "-")
            more = f" (+{len(e.sources) - 1} other name(s))" if len(e.sources) > 1 else ""
            print(f"{e.name:<{width}}  {format_bytes(e.size):>9}  {_date(e.created):<16}  "
                  f"{_date(e.last_used):<16}  {source}{more}")
        print(f"{len(entries)} model(s), {format_bytes(disk_usage(entries))} in "
              f"{cache_dir() / 'models'}.")
        return 0
    chosen = cached_models(args.name)  # with a name that matches nothing: the names there are
    if not chosen:
        print(f"No cached model in {cache_dir() / 'models'}.")
        return 0
    what = (f"{len(chosen)} cached model(s) ({', '.join(e.name for e in chosen)}; "
            f"{format_bytes(disk_usage(chosen))})")
    if not args.yes:
        if not sys.stdin.isatty():
            raise ValueError(f"Removing {what} needs confirmation: add --yes.")
        answer = input(f"Remove {what}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("Nothing removed.")
            return 1
    removed = clear_cache(args.name)
    print(f"Removed {len(removed)} cached model(s) from {cache_dir() / 'models'}: "
          f"{', '.join(e.name for e in removed)}.")
    return 0
