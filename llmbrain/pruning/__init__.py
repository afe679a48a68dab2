"""Structural pruning of MLP neurons: criteria, plans, application, saving."""

from .calibration import CalibrationStats, collect_calibration_stats, token_windows
from .criteria import CRITERIA, network_scores, score_neurons
from .io import load_pruned, save_pruned
from .plan import ALLOCATIONS, PruningPlan, make_plan
from .structural import prune_model, resize_mlps

__all__ = [
    "ALLOCATIONS",
    "CRITERIA",
    "CalibrationStats",
    "PruningPlan",
    "collect_calibration_stats",
    "load_pruned",
    "make_plan",
    "network_scores",
    "prune_model",
    "resize_mlps",
    "save_pruned",
    "score_neurons",
    "token_windows",
]
