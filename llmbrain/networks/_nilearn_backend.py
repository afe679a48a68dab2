"""Decomposition with nilearn's CanICA / DictLearning on LLM volumes.

The brain-imaging defaults are switched off: no smoothing, no detrending, no
filtering, no caching; each group of tokens is z-scored (``zscore_sample``)
and the mask is the layout's neuron mask.
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from ..volumes import to_volumes

__all__ = ["nilearn_decompose"]


def nilearn_decompose(groups: list[xr.DataArray], method: str, n_components: int,
                      n_init: int, random_state: int, verbose: int = 0, **params) -> np.ndarray:
    """Fit nilearn's estimator on one image per group of tokens.

    Parameters
    ----------
    groups : list of xarray.DataArray
        Each (token, layer, neuron), in memory; one image per group.
    method : {"canica", "dictlearning"}
    n_components, n_init, random_state : int
    verbose : int
        nilearn's verbosity.
    **params
        Extra parameters of the nilearn estimator (e.g. ``alpha`` for DictLearning).

    Returns
    -------
    ndarray of shape (n_components, n_layers, n_neurons)
        The raw maps (CanICA maps are not thresholded), with each method's
        own sign convention (CanICA: largest tail positive; DictLearning: more
        positive than negative voxels).
    """
    from nilearn.decomposition import CanICA, DictLearning

    volumes = [to_volumes(group) for group in groups]
    common = dict(n_components=n_components, mask=volumes[0].mask_img, smoothing_fwhm=None,
                  standardize="zscore_sample", detrend=False, low_pass=None, high_pass=None,
                  t_r=None, memory=None, random_state=random_state, verbose=verbose)
    if method == "canica":
        estimator = CanICA(threshold=None, n_init=n_init, do_cca=True, **common, **params)
    elif method == "dictlearning":
        estimator = DictLearning(**common, **params)
    else:
        raise ValueError(f"The nilearn backend runs method='canica' or 'dictlearning', not "
                         f"{method!r}; use backend='torch' for method='fastica'.")
    with warnings.catch_warnings():
        # A constant neuron gives nilearn's standardization a zero variance: our
        # own check warns about it once, before this call.
        warnings.filterwarnings("ignore", message=".*standardiz.*")
        estimator.fit([v.img for v in volumes])
    maps = np.asarray(estimator.components_, dtype=np.float64)
    return volumes[0].layout.from_masked(maps)
