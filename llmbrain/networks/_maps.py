"""From raw component maps to z-scored maps and key neurons."""

from __future__ import annotations

import numpy as np

__all__ = ["flip_signs", "threshold_for_count", "zscore_maps"]


def flip_signs(maps: np.ndarray) -> np.ndarray:
    """Flip each row so that its largest-magnitude tail is positive (nilearn's rule)."""
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
