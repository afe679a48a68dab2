"""Numbers written for people: index lists as ranges."""

from __future__ import annotations


def format_ranges(values) -> str:
    """``[0, 1, 2, 5]`` as ``"0-2, 5"``, at most five ranges."""
    values = sorted(values)
    runs = []
    for value in values:
        if runs and value == runs[-1][1] + 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:5])
    return text + (f" and {len(runs) - 5} more ranges" if len(runs) > 5 else "")
