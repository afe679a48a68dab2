"""Structural pruning of MLP neurons: criteria, plans, application, saving."""

from ..models.pruned import load_pruned, resize_mlps, save_pruned
from .calibration import (STATISTICS, calibration_stats_from_activations,
                          collect_calibration_stats, layer_statistic)
from .compare import compare_pruning
from .criteria import (CALIBRATED_CRITERIA, CRITERIA, GRADIENT_CRITERIA, LOSS_NETWORKS,
                       check_criterion, network_scores, score_neurons, sensitivity_options)
from .plan import ALLOCATIONS, PruningPlan, make_plan
from .recipes import BIAS_COMPENSATIONS, PUBLISHED, PlanOptions, prune
from .sensitivity import collect_loss_sensitivity, loss_network_importance
from .structural import prune_layer, prune_model

__all__ = [
    "ALLOCATIONS",
    "BIAS_COMPENSATIONS",
    "CALIBRATED_CRITERIA",
    "CRITERIA",
    "GRADIENT_CRITERIA",
    "LOSS_NETWORKS",
    "PUBLISHED",
    "PlanOptions",
    "PruningPlan",
    "STATISTICS",
    "calibration_stats_from_activations",
    "check_criterion",
    "collect_calibration_stats",
    "collect_loss_sensitivity",
    "compare_pruning",
    "layer_statistic",
    "load_pruned",
    "loss_network_importance",
    "make_plan",
    "network_scores",
    "prune",
    "prune_layer",
    "prune_model",
    "resize_mlps",
    "save_pruned",
    "score_neurons",
    "sensitivity_options",
]
