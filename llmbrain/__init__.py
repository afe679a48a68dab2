"""llmbrain: study a large language model like a brain.

The pipeline reads in one direction, one module per stage::

    text -> activations -> volumes -> networks -> pruning plan -> pruned model -> report
    corpus  recording      volumes    networks    pruning         pruning/evaluation  report

Figures live in :mod:`llmbrain.plotting` and the HTML report in
:mod:`llmbrain.report`. The names below are imported from their stage on first
use, so that ``import llmbrain`` (and the command line's ``--help``) does not
load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__

#: Public name -> the module of its stage, imported when the name is first used.
_EXPORTS = {
    "load_corpus": "corpus",
    "tokenize_windows": "corpus",
    "evaluate_zeroshot": "evaluation",
    "measure_efficiency": "evaluation",
    "perplexity": "evaluation",
    "ablate": "interventions",
    "amplify": "interventions",
    "matched_random": "interventions",
    "intervene_on_networks": "interventions",
    "get_adapter": "models",
    "load_model": "models",
    "register_adapter": "models",
    "FunctionalNetworks": "networks",
    "NetworkRecurrence": "networks",
    "OnlineNetworks": "networks",
    "compare_runs": "networks",
    "load_networks": "networks",
    "save_networks": "networks",
    "run_pipeline": "pipeline",
    "PruningPlan": "pruning",
    "load_pruned": "pruning",
    "make_plan": "pruning",
    "prune_model": "pruning",
    "save_pruned": "pruning",
    "score_neurons": "pruning",
    "open_activations": "recording",
    "record": "recording",
    "LLMVolumes": "volumes",
    "VolumeLayout": "volumes",
    "from_volumes": "volumes",
    "to_volumes": "volumes",
}

#: Submodules reachable as attributes (``llmbrain.models``) without importing them first.
_SUBMODULES = ("cli", "corpus", "datasets", "evaluation", "interventions", "models", "networks",
               "pipeline", "plotting", "pruning", "recording", "report", "volumes")

__all__ = sorted(_EXPORTS, key=lambda name: (not name[0].isupper(), name))


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))


if TYPE_CHECKING:  # what static tools see; at run time the names come from __getattr__
    from .corpus import load_corpus, tokenize_windows
    from .evaluation import evaluate_zeroshot, measure_efficiency, perplexity
    from .interventions import ablate, amplify, intervene_on_networks, matched_random
    from .models import get_adapter, load_model, register_adapter
    from .networks import (FunctionalNetworks, NetworkRecurrence, OnlineNetworks, compare_runs,
                           load_networks, save_networks)
    from .pipeline import run_pipeline
    from .pruning import (PruningPlan, load_pruned, make_plan, prune_model, save_pruned,
                          score_neurons)
    from .recording import open_activations, record
    from .volumes import LLMVolumes, VolumeLayout, from_volumes, to_volumes
