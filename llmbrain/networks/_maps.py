"""From raw component maps to z-scored maps and key neurons.

The key-neuron rule is defined here once: a neuron belongs to a network when
the absolute value of its z-scored map value is strictly greater than a
threshold (:data:`KEY_NEURON_THRESHOLD` by default), and it is a *key neuron*
when it belongs to at least one network.
"""

from __future__ import annotations

import numbers

import numpy as np
import xarray as xr

__all__ = ["KEY_NEURON_THRESHOLD", "flip_signs", "key_neurons", "network_masks",
           "threshold_for_count", "zscore_maps"]

#: Default |z| above which a neuron belongs to a network (the value used for
#: the z-scored ICA maps of LLM neurons in the literature this toolbox follows).
KEY_NEURON_THRESHOLD = 3.6


def flip_signs(maps: np.ndarray) -> np.ndarray:
    """Flip each row so that its largest-magnitude tail is positive (CanICA's rule)."""
    maps = np.array(maps, dtype=np.float64, copy=True)
    flip = maps.max(axis=1) < -maps.min(axis=1)
    maps[flip] *= -1
    return maps


def zscore_maps(maps: np.ndarray) -> np.ndarray:
    """Z-score each row of ``maps`` (components × voxels) across its voxels."""
    maps = np.asarray(maps, dtype=np.float64)
    std = maps.std(axis=1, keepdims=True)
    std[std == 0] = 1.0
    return (maps - maps.mean(axis=1, keepdims=True)) / std


def check_threshold(threshold) -> float:
    """``threshold`` as a float, or a ValueError when it is not a positive number."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) \
            or not threshold > 0 or not np.isfinite(threshold):
        raise ValueError(f"threshold must be a positive number, got {threshold!r}.")
    return float(threshold)


def network_masks(maps_z, threshold: float = KEY_NEURON_THRESHOLD):
    """Which neurons belong to each network: ``|maps_z| > threshold``.

    Parameters
    ----------
    maps_z : xarray.DataArray or array-like
        Z-scored maps, e.g. ``(component, layer, neuron)``.
    threshold : float, default=KEY_NEURON_THRESHOLD
        Strict lower bound on ``|z|``.

    Returns
    -------
    Boolean array of the same shape (a DataArray named ``network_masks``
    for a DataArray input).
    """
    threshold = check_threshold(threshold)
    if isinstance(maps_z, xr.DataArray):
        return (abs(maps_z) > threshold).rename("network_masks")
    return np.abs(np.asarray(maps_z)) > threshold


def key_neurons(maps_z, threshold: float = KEY_NEURON_THRESHOLD, dim: str = "component"):
    """Key neurons: those with ``|z| > threshold`` in at least one network.

    A neuron recorded at several hook points (a ``hook`` dim, e.g. the
    outputs of ``up_proj`` and of the activation function) is several voxels:
    it is key when any of them is.

    Parameters
    ----------
    maps_z : xarray.DataArray or array-like
        Z-scored maps; networks along ``dim`` (DataArray) or the first axis.
    threshold : float, default=KEY_NEURON_THRESHOLD
        Strict lower bound on ``|z|``.
    dim : str, default="component"
        Dimension of the networks for a DataArray input.

    Returns
    -------
    Boolean array without the network (and hook) axis, e.g. ``(layer, neuron)``
    (a DataArray named ``key_neurons`` for a DataArray input).
    """
    masks = network_masks(maps_z, threshold)
    if isinstance(masks, xr.DataArray):
        dims = [dim] + (["hook"] if "hook" in masks.dims and dim != "hook" else [])
        return masks.any(dims).rename("key_neurons")
    return masks.any(axis=0)


def threshold_for_count(abs_z_max: np.ndarray, target_count: int) -> float:
    """The |z| threshold that keeps ``target_count`` neurons.

    Parameters
    ----------
    abs_z_max : ndarray
        Per neuron, the largest |z| over components.
    target_count : int
        Number of key neurons wanted (those with ``abs_z_max > threshold``).

    Returns
    -------
    float
        Midway between the ``target_count``-th and the next largest value, so
        exactly ``target_count`` neurons pass unless values tie.
    """
    values = np.sort(np.asarray(abs_z_max, dtype=np.float64).ravel())[::-1]
    if not 1 <= target_count <= values.size:
        raise ValueError(f"target_count must be between 1 and the number of neurons "
                         f"({values.size}), got {target_count}.")
    if target_count == values.size:
        return float(values[-1]) / 2 if values[-1] > 0 else 0.0
    return float((values[target_count - 1] + values[target_count]) / 2)
