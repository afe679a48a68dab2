"""Functional networks: activations -> ICA maps -> key neurons."""

from .decomposition import FunctionalNetworks
from .io import load_networks, save_networks
from .recurrence import NetworkRecurrence, compare_runs, match_components
from .synthetic import planted_networks

__all__ = [
    "FunctionalNetworks",
    "NetworkRecurrence",
    "compare_runs",
    "load_networks",
    "match_components",
    "planted_networks",
    "save_networks",
]
