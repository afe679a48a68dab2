"""The methods block of a report: what was run, on what, how, and with which software."""

from __future__ import annotations

import platform
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

__all__ = ["Methods", "package_versions"]

_PACKAGES = ("llmbrain", "torch", "transformers", "numpy", "scipy", "scikit-learn", "nilearn",
             "xarray", "zarr", "pandas", "matplotlib")


def package_versions(packages=_PACKAGES) -> dict[str, str]:
    """Versions of Python and of the packages llmbrain's results depend on.

    Read from the installed distributions' metadata, so nothing is imported.
    """
    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    if versions.get("llmbrain") == "not installed":
        from .._version import __version__
        versions["llmbrain"] = __version__
    return versions


def current_command() -> str:
    """The command line of this process, or "" inside a notebook or an interpreter."""
    argv = list(sys.argv)
    if not argv or not argv[0] or "ipykernel" in argv[0] or argv[0] == "-c":
        return ""
    program = Path(argv[0]).name
    if program == "__main__.py":
        program = f"python -m {Path(argv[0]).parent.name}"
    elif program.endswith(".py"):
        program = f"python {argv[0]}"
    return " ".join([program, *(shlex.quote(a) for a in argv[1:])])


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_text(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


@dataclass
class Methods:
    """What a report's results come from, in the words of a methods section.

    Every field is optional text or numbers; the report lists the fields that
    are set, in this order.

    Parameters
    ----------
    model : str
        Model name and where it came from.
    corpus : str
        Recorded text.
    n_tokens : int
        Tokens recorded.
    window : int
        Tokens per window (each starting with the BOS token).
    evaluation : str
        Evaluation data (and how it is kept apart from the recorded text).
    evaluation_size : str or int
        Its size, e.g. ``"24 windows of 128 tokens"``.
    decomposition : dict
        Network settings: method, components, runs, threshold, scope...
    pruning : dict
        Criteria, sparsity, allocation, protected layers...
    interventions : dict
        Targets, controls per target, scale of amplification...
    seeds : int or dict
        Seeds of every random step.
    device : str
    command : str
        The exact command that produced the results (default: this
        process' command line; empty in a notebook).
    versions : dict
        Package versions (default :func:`package_versions`).
    notes : dict
        Anything else, shown last.

    Examples
    --------
    >>> from llmbrain.report import Methods
    >>> methods = Methods(model="SmolLM2-135M-Instruct", n_tokens=8192, window=256,
    ...                   decomposition={"method": "canica", "n_components": 10},
    ...                   seeds=0, command="llmbrain run --out report")
    >>> dict(methods.items())["Decomposition"]
    'method=canica, n_components=10'
    """

    model: str | None = None
    corpus: str | None = None
    n_tokens: int | None = None
    window: int | None = None
    evaluation: str | None = None
    evaluation_size: str | int | None = None
    decomposition: Mapping | None = None
    pruning: Mapping | None = None
    interventions: Mapping | None = None
    seeds: int | Mapping | None = None
    device: str | None = None
    command: str | None = field(default_factory=current_command)
    versions: Mapping | None = field(default_factory=package_versions)
    notes: Mapping | None = None

    _LABELS = {"model": "Model", "corpus": "Corpus", "n_tokens": "Tokens recorded",
               "window": "Window (tokens)", "evaluation": "Evaluation data",
               "evaluation_size": "Evaluation size", "decomposition": "Decomposition",
               "pruning": "Pruning", "interventions": "Interventions", "seeds": "Seeds",
               "device": "Device", "command": "Command", "versions": "Versions"}

    def items(self):
        """``(label, text)`` of every field that is set, in order (notes last)."""
        for name, label in self._LABELS.items():
            text = _text(getattr(self, name))
            if text:
                yield label, text
        for key, value in (self.notes or {}).items():
            text = _text(value)
            if text:
                yield str(key), text
