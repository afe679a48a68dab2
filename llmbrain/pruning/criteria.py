"""Importance scores of MLP neurons: which neurons a pruned model keeps.

Every criterion returns the same thing: an :class:`xarray.DataArray` of dims
``("layer", "neuron")`` named ``"importance"``, where a higher score means
"keep". Layers with fewer neurons than the widest (a model already pruned
non-uniformly) are padded with NaN, which :func:`~llmbrain.pruning.make_plan`
reads as "no such neuron". How scores become a pruned model (allocation over
layers, protected layers, bias compensation) is the same for every criterion:
see :mod:`llmbrain.pruning.plan` and :func:`~llmbrain.pruning.prune_model`.

Criteria
--------
``"networks"``
    The strongest ``|z|`` of the neuron in the z-scored maps of functional
    networks, over every network, every run on a disjoint text sample and
    every hook point (a neuron recorded at ``up`` and ``act`` is two voxels:
    either may make it key). A neuron is *key* when this exceeds a threshold
    T, so keeping the highest scores keeps the key neurons; with
    ``allocation="global"`` the plan solves the one T over all prunable
    layers whose key set is the kept set, which is the published recipe
    (arXiv 2502.20408, 2508.05239; see :func:`network_scores`).
``"contextual"``
    Mean absolute activation over a (domain) calibration corpus, as in the
    contextual pruning of domain Mini-GPTs (arXiv 2312.12682).
``"magnitude"``
    L2 norm of every weight attached to the neuron: its rows of the input
    projections (gate and up) and its column of the output projection.
``"wanda-sp"``
    Structured Wanda: ``sum_i |W_down[i, j]| * ||X_j||`` where ``||X_j||`` is
    the L2 norm of the neuron's input over calibration tokens (Wanda-sp, as
    compared in the FLAP paper, arXiv 2312.11983).
``"flap"``
    FLAP's fluctuation metric: the variance of the neuron's input over
    calibration tokens times ``||W_down[:, j]||**2``. Pair it with bias
    compensation in :func:`~llmbrain.pruning.prune_model`.
``"fisher"``
    How much the language-modelling loss grows, to second order, when the
    neuron's input is replaced by its calibration mean (what pruning with
    bias compensation does): ``sum_t ((x_tj - mean_j) * dL/dx_tj)**2``, the
    diagonal empirical Fisher of Fisher pruning (arXiv 1801.05787). It needs
    gradients: ``collect_calibration_stats(..., loss_sensitivity=True)``
    (see :mod:`llmbrain.pruning.sensitivity`).
``"loss-networks"``
    Fisher with the interactions of neurons inside the layer's *loss
    networks*, the leading eigenvectors of the Gram matrix of the neurons'
    per-token loss contributions: neurons are removed one at a time, each
    time the one that adds least to the second-order loss of the removed set
    (:func:`~llmbrain.pruning.loss_network_importance`). It needs
    ``collect_calibration_stats(..., loss_sensitivity=True, loss_networks=8)``.
``"random"``
    Uniform random scores (a control).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import xarray as xr
from torch import nn

from ..models.adapters import get_adapter
from .calibration import layer_statistic
from .sensitivity import loss_network_importance

__all__ = ["CALIBRATED_CRITERIA", "CRITERIA", "GRADIENT_CRITERIA", "LOSS_NETWORKS",
           "check_criterion", "network_scores", "score_neurons", "sensitivity_options"]

#: Names accepted by :func:`score_neurons`.
CRITERIA = ("networks", "contextual", "magnitude", "wanda-sp", "flap", "fisher",
            "loss-networks", "random")
#: Criteria that score neurons from calibration statistics.
CALIBRATED_CRITERIA = ("contextual", "wanda-sp", "flap", "fisher", "loss-networks")
#: Criteria whose calibration statistics need gradients of the loss
#: (``collect_calibration_stats(..., loss_sensitivity=True)``).
GRADIENT_CRITERIA = ("fisher", "loss-networks")
#: Loss networks per layer that ``"loss-networks"`` is meant to be given
#: (``collect_calibration_stats(..., loss_networks=LOSS_NETWORKS)``): 8 did better
#: than 32 on WikiText-2 validation (``benchmarks/results/network-criteria.md``).
LOSS_NETWORKS = 8
_STATISTIC = {"contextual": "mean_abs", "wanda-sp": "l2_norm", "flap": "variance",
              "fisher": "fisher", "loss-networks": "fisher"}
_NEEDS_NETWORKS = ("networks",)


def check_criterion(criterion: str) -> str:
    """Return ``criterion`` if it names a criterion, else raise a clear error.

    Call it before any expensive work: a misspelt criterion should fail in
    the first second, not after the recording.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"Unknown criterion {criterion!r}; choose one of "
                         f"{', '.join(CRITERIA)}.")
    return criterion


def sensitivity_options(criteria) -> dict:
    """What :func:`~llmbrain.pruning.collect_calibration_stats` must measure for ``criteria``.

    Parameters
    ----------
    criteria : str or sequence of str
        Criterion names.

    Returns
    -------
    dict
        ``loss_sensitivity`` (a criterion needs gradients of the loss) and
        ``loss_networks`` (:data:`LOSS_NETWORKS` for ``"loss-networks"``, else
        0), to pass on: ``collect_calibration_stats(model, tokenizer, corpus,
        **sensitivity_options(criteria))``.
    """
    criteria = [check_criterion(c) for c in ([criteria] if isinstance(criteria, str)
                                             else criteria)]
    return {"loss_sensitivity": any(c in GRADIENT_CRITERIA for c in criteria),
            "loss_networks": LOSS_NETWORKS if "loss-networks" in criteria else 0}


def _as_scores(per_layer: dict[int, np.ndarray], criterion: str) -> xr.DataArray:
    layers = sorted(per_layer)
    width = max(v.size for v in per_layer.values())
    data = np.full((len(layers), width), np.nan)
    for i, layer in enumerate(layers):
        data[i, :per_layer[layer].size] = per_layer[layer]
    return xr.DataArray(data, dims=("layer", "neuron"),
                        coords={"layer": layers, "neuron": np.arange(width)},
                        name="importance", attrs={"criterion": criterion})


def _maps_of(networks) -> list[xr.DataArray]:
    """The z-scored maps of every run in a networks description."""
    if hasattr(networks, "runs_"):  # a fitted NetworkRecurrence
        return [run.maps_z_ for run in networks.runs_]
    if hasattr(networks, "maps_z_"):  # a fitted FunctionalNetworks
        return [networks.maps_z_]
    if isinstance(networks, xr.Dataset) and "maps_z" in networks:
        return [networks["maps_z"]]
    if isinstance(networks, xr.DataArray):
        return [networks]
    if isinstance(networks, (list, tuple)) and networks:
        return [maps for run in networks for maps in _maps_of(run)]
    raise TypeError("networks must be a fitted FunctionalNetworks or NetworkRecurrence, the "
                    "z-scored maps (a DataArray with dims layer and neuron, or a Dataset with "
                    f"'maps_z'), or a list of these (runs); got {type(networks).__name__}.")


def network_scores(networks) -> xr.DataArray:
    """Each neuron's strongest ``|z|`` over networks, runs and hook points.

    Parameters
    ----------
    networks : FunctionalNetworks, NetworkRecurrence, DataArray, Dataset or list
        Fitted estimators, or z-scored maps with dims ``layer`` and ``neuron``
        plus any others (``component``, ``hook``, ``run``...), which are
        reduced by ``max(|z|)``. A list (runs on disjoint samples) is united.

    Returns
    -------
    xarray.DataArray
        ``(layer, neuron)`` scores named ``"importance"``. A neuron is key at
        threshold T when its score exceeds T: the key set of any T is a set
        of top scores, so :func:`~llmbrain.pruning.make_plan` with
        ``allocation="global"`` finds the T whose key set is the kept set.
    """
    reduced = []
    for maps in _maps_of(networks):
        if "layer" not in maps.dims or "neuron" not in maps.dims:
            raise ValueError(f"Network maps need dims 'layer' and 'neuron'; got {maps.dims}.")
        extra = [d for d in maps.dims if d not in ("layer", "neuron")]
        z = abs(maps).max(extra, skipna=False) if extra else abs(maps)
        z = z.transpose("layer", "neuron").astype(float)
        reduced.append(z.drop_vars([c for c in z.coords if c not in ("layer", "neuron")]))
    scores = (reduced[0] if len(reduced) == 1
              else xr.concat(reduced, "run", join="exact").max("run", skipna=False))
    if bool(scores.isnull().any()):
        bad = [int(layer) for layer in scores["layer"].values[scores.isnull().any("neuron").values]]
        raise ValueError(f"The network maps of layers {bad} hold NaN: their decomposition "
                         "failed; fit the networks again rather than prune from them.")
    scores = scores.rename("importance")
    scores.attrs = {"criterion": "networks", "n_runs": len(reduced)}
    return scores


@torch.no_grad()
def score_neurons(model: nn.Module, criterion: str, *, calibration: xr.Dataset | None = None,
                  networks=None, seed: int | None = 0,
                  layers: Sequence[int] | None = None) -> xr.DataArray:
    """Importance of every MLP neuron under one criterion (higher = keep).

    Parameters
    ----------
    model : transformers.PreTrainedModel
    criterion : {"networks", "contextual", "magnitude", "wanda-sp", "flap", "fisher", \
"loss-networks", "random"}
        See the module documentation.
    calibration : xarray.Dataset, optional
        Needed by "contextual", "wanda-sp", "flap", "fisher" and "loss-networks":
        statistics from :func:`~llmbrain.pruning.collect_calibration_stats`
        (with ``loss_sensitivity=True`` for "fisher", and also
        ``loss_networks=LOSS_NETWORKS`` for "loss-networks").
    networks : FunctionalNetworks, NetworkRecurrence, DataArray, Dataset or list, optional
        Needed by "networks": fitted estimators or their z-scored maps (see
        :func:`network_scores`); a list of runs is united.
    seed : int or None, default=0
        Seed of the "random" criterion.
    layers : sequence of int, optional
        Layers to score (default: all; for "networks", the layers it covers).

    Returns
    -------
    xarray.DataArray
        Dims ``("layer", "neuron")``, named ``"importance"``.

    Examples
    --------
    >>> stats = collect_calibration_stats(model, tokenizer, "c4.jsonl")   # doctest: +SKIP
    >>> scores = score_neurons(model, "flap", calibration=stats)          # doctest: +SKIP
    >>> plan = make_plan(scores, sparsity=0.3, allocation="adaptive")     # doctest: +SKIP
    """
    check_criterion(criterion)
    adapter = get_adapter(model)
    sizes = adapter.neurons_per_layer(model)
    if criterion in _NEEDS_NETWORKS:
        if networks is None:
            raise ValueError("criterion='networks' needs networks=: fitted FunctionalNetworks "
                             "or NetworkRecurrence, or their z-scored maps.")
        scores = network_scores(networks)
        for layer in scores["layer"].values:
            if not 0 <= int(layer) < len(sizes):
                raise ValueError(f"The networks name layer {layer} but the model has layers "
                                 f"0..{len(sizes) - 1}: they were found on another model.")
            if scores.sizes["neuron"] != sizes[int(layer)]:
                raise ValueError(f"The networks have {scores.sizes['neuron']} neurons per layer "
                                 f"but layer {layer} of the model has {sizes[int(layer)]}: they "
                                 "were found on another model.")
        if layers is not None:
            scores = scores.sel(layer=list(layers))
        return scores
    layers = list(range(len(sizes))) if layers is None else [int(layer) for layer in layers]
    stats = {}
    if criterion in CALIBRATED_CRITERIA:
        if not isinstance(calibration, xr.Dataset):
            raise ValueError(f"criterion={criterion!r} needs calibration statistics: "
                             "calibration=collect_calibration_stats(model, tokenizer, corpus).")
        name = _STATISTIC[criterion]
        networks_needed = criterion == "loss-networks"
        if name not in calibration or (networks_needed and "loss_networks" not in calibration):
            what = "the loss networks of every layer" if networks_needed else \
                "the loss sensitivity of every neuron"
            how = "loss_sensitivity=True" + (f", loss_networks={LOSS_NETWORKS}"
                                             if networks_needed else "")
            raise ValueError(f"criterion={criterion!r} needs {what}, which these calibration "
                             f"statistics lack: collect_calibration_stats(..., {how}).")
        for layer in layers:
            stats[layer] = layer_statistic(calibration, name, layer)
            if stats[layer].size != sizes[layer]:
                raise ValueError(f"The calibration statistics of layer {layer} have "
                                 f"{stats[layer].size} neurons, the model {sizes[layer]}: they "
                                 "were collected on another model.")
    rng = np.random.default_rng(seed)
    per_layer = {}
    for layer in layers:
        down = adapter.down_weight(model, layer).detach().to(torch.float64).cpu()
        if criterion in ("contextual", "fisher"):
            score = stats[layer]
        elif criterion == "loss-networks":
            row = calibration.sel(layer=layer)
            score = loss_network_importance(
                stats[layer], row["loss_networks"].values[:, :sizes[layer]],
                row["loss_network_strength"].values)
        elif criterion == "magnitude":
            squares = (down ** 2).sum(0)
            for up in adapter.up_weights(model, layer):
                squares = squares + (up.detach().to(torch.float64).cpu() ** 2).sum(1)
            score = squares.sqrt().numpy()
        elif criterion == "wanda-sp":
            score = (down.abs() * torch.from_numpy(stats[layer])[None, :]).sum(0).numpy()
        elif criterion == "flap":
            score = stats[layer] * (down ** 2).sum(0).numpy()
        else:  # random
            score = rng.random(sizes[layer])
        per_layer[layer] = np.asarray(score, dtype=np.float64)
    return _as_scores(per_layer, criterion)
