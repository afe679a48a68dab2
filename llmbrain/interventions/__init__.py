"""Interventions on MLP neurons: ablate, amplify, matched random controls, and the
stage that tests functional networks against them.

The *neurons* of a layer are the input of its MLP output projection
(``down_proj``, ``c_proj``, ``fc2``...). Every intervention is a forward
pre-hook on that projection, registered by a context manager and removed on
exit, also when the body raises.

A set of neurons is given either as

* a boolean :class:`xarray.DataArray` with dims ``("layer", "neuron")``
  (coords ``layer`` = model layer indices; the ``neuron`` dim must span all
  neurons of those layers), or
* a dict ``{layer: indices}`` where ``indices`` is an array of neuron
  indices or a boolean array as long as the layer.

:func:`intervene_on_networks` measures held-out perplexity with each network
ablated or amplified and with random neurons of the same count per layer,
into a results table (:mod:`llmbrain.evaluation.results`);
:func:`summarize_interventions` sets each network against its controls.

Examples
--------
>>> from llmbrain.interventions import ablate, matched_random
>>> with ablate(model, key_neurons):  # doctest: +SKIP
...     logits = model(input_ids).logits
>>> with ablate(model, matched_random(key_neurons, seed=0)):  # doctest: +SKIP
...     control = model(input_ids).logits
"""

from ..models.neurons import neuron_indices  # noqa: F401  (its former home)
from ._hooks import ablate, amplify, matched_random
from ._networks import intervene_on_networks, largest_networks, summarize_interventions

__all__ = [
    "ablate",
    "amplify",
    "intervene_on_networks",
    "largest_networks",
    "matched_random",
    "summarize_interventions",
]
