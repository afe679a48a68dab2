"""Structural pruning of MLP neurons: criteria, plans, application, saving."""

from .calibration import (STATISTICS, calibration_stats_from_activations,
                          collect_calibration_stats, layer_statistic)
from .criteria import CRITERIA, check_criterion, network_scores, score_neurons
from .io import load_pruned, save_pruned
from .plan import ALLOCATIONS, PruningPlan, make_plan
from .recipes import BIAS_COMPENSATIONS, PUBLISHED, PlanOptions, prune
from .structural import prune_layer, prune_model, resize_mlps

__all__ = [
    "ALLOCATIONS",
    "BIAS_COMPENSATIONS",
    "CRITERIA",
    "PUBLISHED",
    "PlanOptions",
    "PruningPlan",
    "STATISTICS",
    "calibration_stats_from_activations",
    "check_criterion",
    "collect_calibration_stats",
    "layer_statistic",
    "load_pruned",
    "make_plan",
    "network_scores",
    "prune",
    "prune_layer",
    "prune_model",
    "resize_mlps",
    "save_pruned",
    "score_neurons",
]
