"""llmbrain: study a large language model like a brain.

The pipeline reads in one direction, one module per stage::

    text -> activations -> volumes -> networks -> pruning plan -> pruned model -> report
    corpus  recording      volumes    networks    pruning         pruning/evaluation  report

Figures live in :mod:`llmbrain.plotting` and the HTML report in
:mod:`llmbrain.report` (imported on use, as they load matplotlib).
"""

from .corpus import load_corpus, tokenize_windows
from .evaluation import evaluate_zeroshot, measure_efficiency, perplexity
from .interventions import ablate, amplify, matched_random
from .models import get_adapter, load_model, register_adapter
from .networks import FunctionalNetworks, NetworkRecurrence, compare_runs, load_networks, \
    save_networks
from .pipeline import run_pipeline
from .pruning import PruningPlan, load_pruned, make_plan, prune_model, save_pruned, score_neurons
from .recording import open_activations, record
from .volumes import LLMVolumes, VolumeLayout, from_volumes, to_volumes

from ._version import __version__

__all__ = [
    "FunctionalNetworks",
    "LLMVolumes",
    "NetworkRecurrence",
    "PruningPlan",
    "VolumeLayout",
    "ablate",
    "amplify",
    "compare_runs",
    "evaluate_zeroshot",
    "from_volumes",
    "get_adapter",
    "load_corpus",
    "load_model",
    "load_networks",
    "load_pruned",
    "make_plan",
    "matched_random",
    "measure_efficiency",
    "open_activations",
    "perplexity",
    "prune_model",
    "record",
    "register_adapter",
    "run_pipeline",
    "save_networks",
    "save_pruned",
    "score_neurons",
    "to_volumes",
    "tokenize_windows",
]
