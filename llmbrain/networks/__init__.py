"""Functional networks: activations -> ICA maps -> key neurons."""

from ._maps import KEY_NEURON_THRESHOLD, key_neurons, network_masks, threshold_for_count
from .decomposition import FunctionalNetworks
from .io import load_networks, save_networks
from .recurrence import NetworkRecurrence, compare_runs, match_components
from .synthetic import planted_networks

__all__ = [
    "KEY_NEURON_THRESHOLD",
    "FunctionalNetworks",
    "NetworkRecurrence",
    "compare_runs",
    "key_neurons",
    "load_networks",
    "match_components",
    "network_masks",
    "planted_networks",
    "save_networks",
    "threshold_for_count",
]
