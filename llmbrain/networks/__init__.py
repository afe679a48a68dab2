"""Functional networks: activations -> ICA maps -> key neurons."""

from ._maps import KEY_NEURON_THRESHOLD, key_neurons, network_masks, threshold_for_count
from .decomposition import FunctionalNetworks
from .from_model import RECIPE_COMPONENTS, find_networks, scaled_components
from .io import load_networks, save_networks
from .online import OnlineNetworks
from .recurrence import NetworkRecurrence, compare_runs, match_components
from .synthetic import planted_networks

__all__ = [
    "KEY_NEURON_THRESHOLD",
    "FunctionalNetworks",
    "RECIPE_COMPONENTS",
    "NetworkRecurrence",
    "OnlineNetworks",
    "compare_runs",
    "find_networks",
    "key_neurons",
    "load_networks",
    "match_components",
    "network_masks",
    "planted_networks",
    "save_networks",
    "scaled_components",
    "threshold_for_count",
]
