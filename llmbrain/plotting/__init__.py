"""Figures of llmbrain results: network maps, layer slices, key neurons, time courses,
recurrence, interventions and pruning.

Every function takes plain xarray / pandas inputs (results as the tidy table of
:mod:`llmbrain.evaluation.results`), returns a :class:`matplotlib.figure.Figure`,
and saves it when given ``output_file`` (``.png``, ``.pdf`` or ``.svg``).
Networks and layers are numbered from 0, as in the data; a network has the
same colour in every figure (:func:`network_color`), and key neurons are
those with ``|z| > threshold``, the estimators' rule.
"""

from ._style import (DIVERGING_CMAP, NETWORK_PALETTE, OKABE_ITO, SEQUENTIAL_CMAP, criterion_color,
                     network_color, network_colors, plot_style, savefig)
from .interventions import plot_intervention_effects
from .maps import plot_network_atlas, plot_network_map, plot_networks
from .masks import plot_key_neurons
from .pruning import plot_kept_neurons, plot_pruning_curves
from .recurrence import plot_recurrence
from .slices import plot_layer_slices
from .timecourses import plot_timecourses

__all__ = [
    "DIVERGING_CMAP",
    "NETWORK_PALETTE",
    "OKABE_ITO",
    "SEQUENTIAL_CMAP",
    "criterion_color",
    "network_color",
    "network_colors",
    "plot_intervention_effects",
    "plot_key_neurons",
    "plot_kept_neurons",
    "plot_layer_slices",
    "plot_network_atlas",
    "plot_network_map",
    "plot_networks",
    "plot_pruning_curves",
    "plot_recurrence",
    "plot_style",
    "plot_timecourses",
    "savefig",
]
