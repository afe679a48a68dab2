"""Importance scores of MLP neurons: which neurons a pruned model keeps.

Every criterion returns the same thing: an :class:`xarray.DataArray` of dims
``("layer", "neuron")`` named ``"importance"``, where a higher score means
"keep". Layers with fewer neurons than the widest (a model already pruned
non-uniformly) are padded with NaN, which :func:`~llmbrain.pruning.make_plan`
reads as "no such neuron".

Criteria
--------
``"networks"``
    Key neurons of functional networks are kept first: a neuron is *key*
    when its z-scored map value exceeds a threshold (|z| > ~3.6) in any
    network of any run (union over runs). Keys rank above every other
    neuron; within each group neurons rank by their strongest |z|, which is
    how the target count is filled (or keys trimmed) (arXiv 2502.20408,
    2508.05239).
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
``"random"``
    Uniform random scores (a control).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import xarray as xr
from torch import nn

from ..models.adapters import get_adapter
from .calibration import CalibrationStats

__all__ = ["CRITERIA", "network_scores", "score_neurons"]

#: Names accepted by :func:`score_neurons`.
CRITERIA = ("networks", "contextual", "magnitude", "wanda-sp", "flap", "random")
_NEEDS_CALIBRATION = ("contextual", "wanda-sp", "flap")


def _as_scores(per_layer: dict[int, np.ndarray], criterion: str) -> xr.DataArray:
    layers = sorted(per_layer)
    width = max(v.size for v in per_layer.values())
    data = np.full((len(layers), width), np.nan)
    for i, layer in enumerate(layers):
        data[i, :per_layer[layer].size] = per_layer[layer]
    return xr.DataArray(data, dims=("layer", "neuron"),
                        coords={"layer": layers, "neuron": np.arange(width)},
                        name="importance", attrs={"criterion": criterion})


def _reduce(array: xr.DataArray, how: str, what: str) -> xr.DataArray:
    if "layer" not in array.dims or "neuron" not in array.dims:
        raise ValueError(f"{what} needs dims 'layer' and 'neuron'; got {array.dims}.")
    extra = [d for d in array.dims if d not in ("layer", "neuron")]
    if extra:
        array = array.any(extra) if how == "any" else abs(array).max(extra)
    return array.transpose("layer", "neuron")


def network_scores(key_neurons: xr.DataArray | None = None,
                   max_abs_z: xr.DataArray | None = None,
                   threshold: float = 3.6, fill: xr.DataArray | None = None) -> xr.DataArray:
    """Scores that keep key neurons of functional networks first.

    Parameters
    ----------
    key_neurons : xarray.DataArray of bool, optional
        Key-neuron mask with dims ``layer`` and ``neuron``; extra dims (e.g.
        ``run``, ``component``) are reduced with ``any`` (the union over runs).
        Default: ``max_abs_z > threshold``.
    max_abs_z : xarray.DataArray, optional
        Strongest |z| of each neuron over networks, dims ``layer``, ``neuron``;
        extra dims (e.g. ``component`` of z-scored maps, ``run``) are reduced
        with ``max(abs(.))``. Without it, neurons rank by key membership only.
    threshold : float, default=3.6
        |z| above which a neuron is key, when ``key_neurons`` is not given.
    fill : xarray.DataArray, optional
        ``(layer, neuron)`` scores of another criterion that rank the
        non-key neurons instead of their |z| (keys still come first, ranked
        by |z|).

    Returns
    -------
    xarray.DataArray
        ``(layer, neuron)`` scores: keys score ``max_abs_z + offset`` with
        ``offset`` larger than every non-key score, the others ``max_abs_z``
        (or ``fill``).
    """
    if key_neurons is None and max_abs_z is None:
        raise ValueError("The 'networks' criterion needs key_neurons and/or max_abs_z "
                         "(e.g. the z-scored maps of FunctionalNetworks).")
    z = None if max_abs_z is None else _reduce(max_abs_z, "max", "max_abs_z").astype(float)
    if key_neurons is None:
        keys = z > threshold
    else:
        keys = _reduce(key_neurons, "any", "key_neurons")
        if keys.dtype != bool:
            raise ValueError(f"key_neurons must be boolean, not {keys.dtype}.")
    if z is None:
        z = xr.zeros_like(keys, dtype=float)
    keys, z = xr.align(keys, z, join="exact")
    if fill is None:
        offset = float(np.nanmax(np.abs(z.values))) + 1.0 if z.size else 1.0
        scores = z + keys.astype(float) * offset
    else:
        fill = fill.transpose("layer", "neuron").astype(float)
        keys, z, fill = xr.align(keys, z, fill, join="exact")
        top = float(np.nanmax(fill.values)) + 1.0 if fill.size else 1.0
        scores = xr.where(keys, top + abs(z), fill)
    scores = scores.rename("importance")
    scores.attrs = {"criterion": "networks", "n_key_neurons": int(keys.sum())}
    if fill is not None:
        scores.attrs["fill"] = str(fill.attrs.get("criterion", "custom"))
    return scores


def _networks_parts(networks):
    """(key_neurons or None, max_abs_z or None) of one networks description."""
    if hasattr(networks, "maps_z_"):  # a fitted FunctionalNetworks-like estimator
        return getattr(networks, "key_neurons_", None), networks.maps_z_
    if isinstance(networks, xr.Dataset):
        networks = {name: networks[name] for name in networks.data_vars}
    if isinstance(networks, xr.DataArray):
        return (networks, None) if networks.dtype == bool else (None, networks)
    if isinstance(networks, Mapping):
        return networks.get("key_neurons"), networks.get("max_abs_z", networks.get("maps_z"))
    if (isinstance(networks, Sequence) and len(networks) == 2
            and all(isinstance(x, xr.DataArray) or x is None for x in networks)):
        return networks[0], networks[1]
    raise TypeError("networks must be a fitted FunctionalNetworks, a Dataset/dict with "
                    "'key_neurons' and/or 'max_abs_z' (or 'maps_z'), a (key_neurons, max_abs_z)"
                    " pair, one DataArray, or a list of these (runs, united).")


def _networks_inputs(networks, threshold, fill=None):
    single = not (isinstance(networks, (list, tuple)) and not (
        len(networks) == 2 and all(isinstance(x, xr.DataArray) or x is None for x in networks)))
    runs = [networks] if single else list(networks)
    if not runs:
        raise ValueError("networks is an empty list; give at least one run.")
    keys, zs = [], []
    for run in runs:
        key, z = _networks_parts(run)
        if z is not None:
            z = _reduce(z, "max", "max_abs_z").astype(float)
        if key is None:
            if z is None:
                raise ValueError("Every networks run needs key_neurons and/or z maps.")
            key = z > threshold
        keys.append(_reduce(key, "any", "key_neurons"))
        zs.append(z)
    if len(runs) == 1:
        return network_scores(keys[0], zs[0], threshold, fill)
    # union over runs: a neuron is key if it is key in any run; its |z| is its strongest
    key = xr.concat(keys, dim="run", join="exact")
    z = None if any(v is None for v in zs) else xr.concat(zs, dim="run", join="exact")
    return network_scores(key, z, threshold, fill)


@torch.no_grad()
def score_neurons(model: nn.Module, criterion: str, *, calibration: CalibrationStats | None = None,
                  networks=None, threshold: float = 3.6, fill: str | None = None,
                  seed: int | None = 0, layers: Sequence[int] | None = None) -> xr.DataArray:
    """Importance of every MLP neuron under one criterion (higher = keep).

    Parameters
    ----------
    model : transformers.PreTrainedModel
    criterion : {"networks", "contextual", "magnitude", "wanda-sp", "flap", "random"}
        See the module documentation.
    calibration : CalibrationStats, optional
        Needed by "contextual", "wanda-sp" and "flap"; from
        :func:`~llmbrain.pruning.collect_calibration_stats`.
    networks : FunctionalNetworks, xarray.Dataset, dict, pair, DataArray or list, optional
        Needed by "networks": a fitted estimator with ``key_neurons_`` and
        ``maps_z_``, or ``key_neurons`` (bool) and/or ``max_abs_z`` (or
        ``maps_z``), see :func:`network_scores`. A list of these (runs on
        different samples) is united: key in any run, strongest |z| of all.
    threshold : float, default=3.6
        |z| threshold for key neurons when only z values are given.
    fill : str, optional
        For "networks": another criterion (e.g. "contextual") that ranks the
        non-key neurons; by default they rank by their strongest |z|.
    seed : int or None, default=0
        Seed of the "random" criterion.
    layers : sequence of int, optional
        Layers to score (default: all; for "networks", the layers it covers).

    Returns
    -------
    xarray.DataArray
        Dims ``("layer", "neuron")``, named ``"importance"``.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"Unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}.")
    adapter = get_adapter(model)
    sizes = adapter.neurons_per_layer(model)
    if criterion == "networks":
        if networks is None:
            raise ValueError("criterion='networks' needs networks=(key_neurons, max_abs_z).")
        scores = _networks_inputs(networks, threshold)
        for layer in scores["layer"].values:
            if not 0 <= int(layer) < len(sizes):
                raise ValueError(f"The networks name layer {layer} but the model has layers "
                                 f"0..{len(sizes) - 1}.")
            if scores.sizes["neuron"] != sizes[int(layer)]:
                raise ValueError(f"The networks have {scores.sizes['neuron']} neurons per layer "
                                 f"but layer {layer} of the model has {sizes[int(layer)]}.")
        if fill is not None:
            if fill == "networks":
                raise ValueError("fill must be another criterion than 'networks'.")
            fill_scores = score_neurons(model, fill, calibration=calibration, seed=seed,
                                        layers=[int(layer) for layer in scores["layer"].values])
            fill_scores = fill_scores.assign_coords(neuron=scores["neuron"].values)
            scores = _networks_inputs(networks, threshold, fill_scores)
        if layers is not None:
            scores = scores.sel(layer=list(layers))
        return scores
    layers = list(range(len(sizes))) if layers is None else [int(layer) for layer in layers]
    if criterion in _NEEDS_CALIBRATION:
        if not isinstance(calibration, CalibrationStats):
            raise ValueError(f"criterion={criterion!r} needs calibration statistics: "
                             "calibration=collect_calibration_stats(model, tokenizer, texts).")
        missing = [layer for layer in layers if layer not in calibration.mean]
        if missing:
            raise ValueError(f"The calibration statistics lack layers {missing}.")
        for layer in layers:
            if calibration.mean[layer].size != sizes[layer]:
                raise ValueError(f"The calibration statistics of layer {layer} have "
                                 f"{calibration.mean[layer].size} neurons, the model "
                                 f"{sizes[layer]}: they were collected on another model.")
    rng = np.random.default_rng(seed)
    per_layer = {}
    for layer in layers:
        down = adapter.down_weight(model, layer).detach().to(torch.float64).cpu()
        if criterion == "contextual":
            score = calibration.mean_abs[layer]
        elif criterion == "magnitude":
            squares = (down ** 2).sum(0)
            for up in adapter.up_weights(model, layer):
                squares = squares + (up.detach().to(torch.float64).cpu() ** 2).sum(1)
            score = squares.sqrt().numpy()
        elif criterion == "wanda-sp":
            norms = torch.from_numpy(calibration.l2_norm[layer])
            score = (down.abs() * norms[None, :]).sum(0).numpy()
        elif criterion == "flap":
            score = calibration.variance[layer] * (down ** 2).sum(0).numpy()
        else:  # random
            score = rng.random(sizes[layer])
        per_layer[layer] = np.asarray(score, dtype=np.float64)
    return _as_scores(per_layer, criterion)
