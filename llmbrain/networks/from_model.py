"""Functional networks of a model over a corpus, in one call.

:func:`find_networks` records the hook points it needs in one forward pass
(into memory, never the language-model head) and fits the networks of every
run on its own disjoint sample of the corpus. Its defaults are the published
recipe that feeds pruning (arXiv 2502.20408, 2508.05239, and the authors'
code for Vicuna-7B):

* voxels: the outputs of the up projection and of the activation function
  (``hook=("up", "act")``), two per neuron, decomposed together per layer;
* per layer: each voxel z-scored over the run's tokens, one PCA, FastICA with
  the cube contrast in float64 (300 iterations), each map z-scored;
* components scaled to the layer's width (:func:`scaled_components`: the
  recipe's 128 maps for the 22,016 voxels of a Vicuna-7B layer);
* several runs on disjoint text samples, whose key neurons are united.
"""

from __future__ import annotations

import numbers

import numpy as np
from torch import nn

from ._estimator import check_positive_int
from ._maps import KEY_NEURON_THRESHOLD
from .decomposition import FunctionalNetworks
from .online import OnlineNetworks
from .recurrence import NetworkRecurrence

__all__ = ["RECIPE_COMPONENTS", "find_networks", "scaled_components"]

#: The recipe's components per layer and the voxels of the layer they were chosen for
#: (Vicuna-7B: 11,008 neurons at two hook points).
RECIPE_COMPONENTS = (128, 2 * 11008)


def scaled_components(n_voxels: int, reference: tuple[int, int] = RECIPE_COMPONENTS) -> int:
    """Components for a layer of ``n_voxels`` voxels, in the recipe's proportion.

    Parameters
    ----------
    n_voxels : int
        Voxels of one decomposed layer (neurons times hook points).
    reference : (int, int)
        Components and voxels of the reference setting.

    Returns
    -------
    int
        ``round(components * n_voxels / voxels)``, at least 2.

    Examples
    --------
    >>> scaled_components(2 * 1536)   # SmolLM2-135M, up and act
    18
    """
    if int(n_voxels) < 2:
        raise ValueError(f"A layer needs at least 2 voxels, not {n_voxels}.")
    components, voxels = reference
    return max(2, int(round(components * int(n_voxels) / voxels)))


def find_networks(model: nn.Module, tokenizer, corpus="default", *, hook=("up", "act"),
                  scope: str = "layer", n_components="scaled", n_runs: int = 2,
                  tokens_per_run: int = 4096, window: int = 256, batch_size: int = 8,
                  method: str = "fastica", fun: str = "cube", max_iter: int = 300,
                  n_init: int = 1, layers=None, threshold: float = KEY_NEURON_THRESHOLD,
                  dtype: str | None = None, online: bool = False, sketch_size: int | None = 512,
                  random_state=0, device=None, verbose: int = 1):
    """Record a model over a corpus and find its functional networks.

    Parameters
    ----------
    model : transformers.PreTrainedModel
    tokenizer : transformers.PreTrainedTokenizerBase
    corpus : str, path, list of str or TokenWindows, default="default"
        Anything :func:`llmbrain.record` accepts.
    hook : str or tuple of str, default=("up", "act")
        Hook points whose outputs are the voxels (decomposed jointly per
        unit; a neuron is key if any of its voxels is).
    scope : {"layer", "all", "window"}, default="layer"
        See :class:`FunctionalNetworks`.
    n_components : int or "scaled", default="scaled"
        Networks per unit; ``"scaled"`` follows :func:`scaled_components`
        (per-layer scope).
    n_runs : int, default=2
        Disjoint samples of ``tokens_per_run`` tokens each (consecutive windows
        of the corpus). With 1, a single :class:`FunctionalNetworks` is fitted.
    tokens_per_run : int, default=4096
    window, batch_size : int
        Recording windows and batch.
    method, fun, max_iter, n_init
        FastICA settings of each run (see :class:`FunctionalNetworks`).
    layers : sequence of int, optional
        Layers to record (default: all).
    threshold : float, default=KEY_NEURON_THRESHOLD
        ``|z|`` of the key neurons of each run (pruning solves its own).
    dtype : {"float16", "float32"}, optional
        Type the activations are held in: all of them while the networks are
        fitted offline (default float16, half the memory), one batch at a time
        online (default float32, which the sketches read without a conversion).
    online : bool, default=False
        Fit while the model runs (:class:`OnlineNetworks`): each layer's
        correlations go into a sketch batch by batch and no activation is
        kept, so memory does not grow with the tokens (for large models).
        False records the runs into memory and fits them offline.
    sketch_size : int or None, default=512
        With ``online=True``: columns of the Nyström sketch of each layer
        (None: the exact correlation matrix).
    random_state : int, RandomState or None, default=0
    device : str, optional
        Where the decomposition runs (default: the model's device).
    verbose : int, default=1

    Returns
    -------
    NetworkRecurrence or FunctionalNetworks
        Fitted; :func:`llmbrain.pruning.network_scores` reads either. With
        ``online=True``, the same kinds (the runs are split the same way).
    """
    from ..models.adapters import get_adapter
    from ..recording import record

    check_positive_int("n_runs", n_runs)
    if not isinstance(tokens_per_run, numbers.Integral) or tokens_per_run < window:
        raise ValueError(f"tokens_per_run={tokens_per_run!r} must be at least one window "
                         f"({window} tokens).")
    hooks = (hook,) if isinstance(hook, str) else tuple(hook)
    if n_components == "scaled":
        if scope != "layer":
            raise ValueError("n_components='scaled' scales the components to a layer's width; "
                             "give a number with scope='all' or 'window'.")
        widths = get_adapter(model).neurons_per_layer(model)
        n_components = scaled_components(len(hooks) * int(np.median(widths)))
    device = str(next(model.parameters()).device) if device is None else device
    if online:
        if scope != "layer" or method != "fastica":
            raise ValueError("online=True fits each layer with method='fastica' (the recipe): "
                             f"scope={scope!r} and method={method!r} need online=False.")
        estimator = OnlineNetworks(n_components, hooks=hooks, n_runs=n_runs,
                                   sketch_size=sketch_size, fun=fun, max_iter=max_iter,
                                   n_init=n_init, threshold=threshold,
                                   random_state=random_state, device=device, verbose=verbose)
        estimator = record(model, tokenizer, corpus, None, hook=hooks, layers=layers,
                           window=window, batch_size=batch_size, dtype=dtype or "float32",
                           max_tokens=n_runs * tokens_per_run, progress=bool(verbose),
                           sink=estimator.sink())
        _check_tokens(estimator.n_tokens_seen_, n_runs, tokens_per_run)
        return estimator.networks_
    activations = record(model, tokenizer, corpus, None, hook=hooks[0] if len(hooks) == 1
                         else hooks, layers=layers, window=window, batch_size=batch_size,
                         dtype=dtype or "float16", max_tokens=n_runs * tokens_per_run,
                         progress=bool(verbose))
    _check_tokens(activations.sizes["token"], n_runs, tokens_per_run)
    estimator = FunctionalNetworks(n_components, method=method, fun=fun, scope=scope,
                                   threshold=threshold, max_iter=max_iter, n_init=n_init,
                                   random_state=random_state, device=device,
                                   verbose=max(0, int(verbose) - 1))
    if n_runs == 1:
        return estimator.fit(activations)
    return NetworkRecurrence(estimator, n_runs=n_runs, verbose=verbose).fit(activations)


def _check_tokens(n_tokens: int, n_runs: int, tokens_per_run: int) -> None:
    if n_tokens < n_runs * tokens_per_run:
        raise ValueError(f"The corpus gave {n_tokens} tokens; {n_runs} runs of "
                         f"{tokens_per_run} need {n_runs * tokens_per_run}: give more text, "
                         "fewer runs or fewer tokens per run.")
