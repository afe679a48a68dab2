"""Functional networks of a language model: CanICA on its neurons.

Neurons are voxels and tokens are time points. Each neuron is z-scored over
tokens, the data are reduced (per group of tokens, then across groups) and
unmixed with spatial ICA; the maps are z-scored across neurons and the neurons
with ``|z| > threshold`` in any map are the *key neurons*. With several hook
points recorded together (e.g. the outputs of ``up_proj`` and of the
activation function), every (hook, neuron) pair of a layer is a voxel: they
are decomposed jointly, and a neuron is key when any of its voxels is.
"""

from __future__ import annotations

import json
import numbers
import warnings

import nibabel as nib
import numpy as np
import torch
import xarray as xr
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from .._moments import RunningMoments
from .._text import format_ranges
from ..volumes import VolumeLayout
from ._data import ActivationSource, as_source, plan_groups, plan_units
from ._estimator import ActivationsEstimatorMixin, check_positive_int
from ._maps import (KEY_NEURON_THRESHOLD, check_threshold, flip_signs, key_neurons,
                    network_masks, threshold_for_count, zscore_maps)
from ._space import NetworkSpaceMixin
from ._torch_ica import GroupPCA, fastica, fastica_layers, randomized_row_basis
from ._zscore import check_finite, zscore_tokens

__all__ = ["FunctionalNetworks"]

_METHODS = ("canica", "dictlearning", "fastica")
_BACKENDS = ("torch", "nilearn")
_SEED_MAX = np.iinfo(np.int32).max


class FunctionalNetworks(NetworkSpaceMixin, ActivationsEstimatorMixin, BaseEstimator):
    """Find functional networks of neurons with ICA (CanICA as in fMRI).

    A scikit-learn estimator: ``get_params``/``set_params``, ``clone`` and
    ``check_is_fitted`` work, and the fitted estimator keeps its space (layers,
    neurons, layout or mask) like a nilearn masker, so that :meth:`transform`,
    :meth:`inverse_transform` and :meth:`score` take new data of that space.

    Parameters
    ----------
    n_components : int, default=20
        Networks per decomposed unit (per layer with ``scope="layer"``).
    method : {"canica", "fastica", "dictlearning"}, default="canica"
        ``"canica"``: per-group PCA, group PCA, spatial FastICA (nilearn's
        CanICA). ``"fastica"``: one PCA of all tokens then FastICA (the
        single-run recipe). ``"dictlearning"``: nilearn's DictLearning (needs
        ``backend="nilearn"``).
    backend : {"torch", "nilearn"}, default="torch"
        ``"torch"`` runs on ``device`` and streams large stores; ``"nilearn"``
        builds NIfTI volumes and calls nilearn (in memory, CPU).
    scope : {"layer", "all", "window"}, default="layer"
        Decompose each layer alone, all layers together, or sliding windows of
        ``window`` layers moved by ``stride``.
    window, stride : int, optional
        For ``scope="window"`` (``stride`` defaults to ``window``).
    layers : list of int, optional
        Model layers to use; all recorded ones by default.
    hooks : str or list of str, optional
        Hook points to use when the activations hold several
        (``(token, hook, layer, neuron)``); all of them by default. The
        voxels of a layer are then its (hook, neuron) pairs, decomposed
        together; one hook point gives the usual (layer, neuron) voxels.
    threshold : float, default=KEY_NEURON_THRESHOLD (3.6)
        Neurons with ``|z| > threshold`` in a z-scored map belong to it
        (:func:`llmbrain.networks.network_masks`).
    target_count : int, optional
        Instead of ``threshold``, choose the threshold that keeps this many key
        neurons (the union over networks).
    n_groups : int, default=4
        Groups of consecutive tokens ("subjects") for CanICA; ignored when the
        input is a list of images (one group each).
    max_memory_gb : float, optional
        Memory allowed for one group's data and the group PCA buffer; groups are
        split so they fit (streaming the store). Default: no limit.
    batch_tokens : int, optional
        Largest group, in tokens (another way to bound memory).
    n_init : int, default=10
        FastICA restarts (as nilearn's CanICA); the sparsest result is kept.
    fun : {"logcosh", "cube", "exp"}, default="logcosh"
        FastICA contrast. nilearn's CanICA uses ``"cube"`` (kurtosis), which
        converges slowly on small layers and is sensitive to outliers.
    max_iter, tol : int, float
        FastICA stopping rule.
    random_state : None, int or numpy.random.RandomState, default=0
        Seeds of the randomized PCA and of the FastICA restarts (drawn with
        ``random_state.randint(..., size=n_init)`` per unit, as nilearn does).
        The default makes fits reproducible; ``None`` draws fresh seeds.
    device : str, default="cpu"
        Torch device (``"cuda"`` for a GPU).
    mask_img, layout : optional
        For image inputs: the mask, or the :class:`llmbrain.VolumeLayout` that
        made the images.
    backend_params : dict, optional
        Extra parameters of nilearn's estimator (``backend="nilearn"``).
    verbose : int, default=1
        0: silent; 1: progress bars; 2 and more: also nilearn's messages.

    Attributes
    ----------
    components_ : xarray.DataArray (component, layer, neuron)
        Raw maps, with the method's sign convention (CanICA and FastICA: each
        map's largest tail is positive; DictLearning: nilearn's rule, more
        positive than negative neurons); zero outside the layers of the map's
        unit. Coordinate ``unit`` gives each component's unit. With several
        hook points the maps (and ``maps_z_``, ``network_masks_``) are
        (component, hook, layer, neuron).
    maps_z_ : xarray.DataArray (component, layer, neuron)
        Maps z-scored across the voxels of their unit.
    network_masks_ : xarray.DataArray of bool (component, layer, neuron)
        ``|maps_z_| > threshold_``.
    key_neurons_ : xarray.DataArray of bool (layer, neuron)
        Union of the network masks (over networks and hook points).
    threshold_ : float
    hooks_ : list of str or None
        The hook points of the voxels when there are several, else None.
    units_ : list of list of int
        Model layers of each decomposed unit.
    layers_ : list of int
        Model layers of the fitted space.
    layout_ : VolumeLayout or None
        Layout of the fitted image space (of the input images, or of the
        fitted layers for activations); None for images with a bare mask.
    mask_img_ : nibabel.Nifti1Image
        The voxels of the image space that are fitted neurons.
    input_type_ : {"activations", "images"}
        What :meth:`fit` was given; :meth:`inverse_transform` returns the same.
    mean_, scale_ : xarray.DataArray (layer, neuron)
        Per-voxel mean and standard deviation over the fitted tokens, used by
        :meth:`transform` ((hook, layer, neuron) with several hook points).
    n_tokens_ : int
    fit_info_ : dict
        Groups, FastICA seeds, iterations and convergence per unit.
    source_attrs_ : dict
        Attributes of the recording (model, hook, ...).

    Notes
    -----
    scikit-learn's common estimator checks that need no data pass (see
    ``tests/test_networks_estimator.py``). The others generate 2-D NumPy
    arrays (samples × features), which this estimator does not take: its
    input is ``(token, [hook,] layer, neuron)`` activations (an xarray object,
    a store or images), whose layer axis defines the decomposed units. The tests check
    the same contracts (fit returns self, parameters untouched, idempotent
    fits, NotFittedError, clone of a fitted estimator) on such data.
    """

    _fitted_attribute = "components_"

    def __init__(self, n_components=20, *, method="canica", backend="torch", scope="layer",
                 window=None, stride=None, layers=None, hooks=None,
                 threshold=KEY_NEURON_THRESHOLD,
                 target_count=None, n_groups=4, max_memory_gb=None, batch_tokens=None,
                 n_init=10, fun="logcosh", max_iter=200, tol=1e-4, random_state=0,
                 device="cpu", mask_img=None, layout=None, backend_params=None, verbose=1):
        self.n_components = n_components
        self.method = method
        self.backend = backend
        self.scope = scope
        self.window = window
        self.stride = stride
        self.layers = layers
        self.hooks = hooks
        self.threshold = threshold
        self.target_count = target_count
        self.n_groups = n_groups
        self.max_memory_gb = max_memory_gb
        self.batch_tokens = batch_tokens
        self.n_init = n_init
        self.fun = fun
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.device = device
        self.mask_img = mask_img
        self.layout = layout
        self.backend_params = backend_params
        self.verbose = verbose

    def _check_params(self) -> None:
        check_positive_int("n_components", self.n_components)
        if self.method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {self.method!r}.")
        if self.backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {self.backend!r}.")
        if self.backend == "torch" and self.method == "dictlearning":
            raise ValueError("method='dictlearning' runs with backend='nilearn'; the torch "
                             "backend runs 'canica' and 'fastica'.")
        if self.backend == "nilearn" and self.method == "fastica":
            raise ValueError("method='fastica' runs with backend='torch'.")
        if self.target_count is None:
            check_threshold(self.threshold)
        else:
            check_positive_int("target_count", self.target_count)
        check_positive_int("n_groups", self.n_groups)
        check_positive_int("n_init", self.n_init)
        check_positive_int("max_iter", self.max_iter)
        if self.max_memory_gb is not None and not self.max_memory_gb > 0:
            raise ValueError(f"max_memory_gb must be positive, got {self.max_memory_gb}.")
        if self.batch_tokens is not None:
            check_positive_int("batch_tokens", self.batch_tokens)
        if self.fun not in ("cube", "logcosh", "exp"):
            raise ValueError(f"fun must be 'cube', 'logcosh' or 'exp', got {self.fun!r}.")
        if not self.tol > 0:
            raise ValueError(f"tol must be positive, got {self.tol!r}.")
        check_random_state(self.random_state)
        torch.device(self.device)  # raises on a malformed device string

    # --------------------------------------------------------------------- fit
    def fit(self, X, y=None) -> FunctionalNetworks:
        """Find the networks of ``X``.

        Parameters
        ----------
        X : path, xarray.Dataset or DataArray, LLMVolumes, or 4-D NIfTI image(s)
            Activations (token, layer, neuron), or (token, hook, layer,
            neuron) for several hook points: a store written by
            :func:`llmbrain.record` (read lazily, group by group), an xarray
            object (NumPy- or dask-backed), or images with
            ``mask_img``/``layout``.
        y : None
            Ignored.

        Returns
        -------
        self
        """
        self._check_params()
        source = self._fit_source(X)
        layers = source.layers
        units = plan_units(layers, self.scope, self.window, self.stride)
        n_tokens, n_neurons, n_hooks = source.n_tokens, source.n_neurons, source.n_hooks
        self._check_sizes([n_hooks * len(unit) * n_neurons for unit in units], n_tokens,
                          "neurons" if n_hooks == 1 else "voxels ((hook, neuron) pairs)")
        rng = check_random_state(self.random_state)
        k = self.n_components
        # dense (component, hook, layer, neuron), zero outside each component's unit
        raw = np.zeros((len(units) * k, n_hooks, len(layers), n_neurons), np.float32)
        moments = [RunningMoments() for _ in layers]
        info = {"units": []}
        bar = tqdm(total=len(units), desc="networks", unit="unit", disable=not self.verbose)
        done: set[int] = set()
        for u, unit in enumerate(units):
            groups = self._groups(source, n_hooks * len(unit) * n_neurons)
            # moments of a layer are accumulated once, by the first unit holding it
            todo = {pos: moments[pos] for pos in unit if pos not in done}
            blocks = self._standardized_groups(source, unit, groups, todo, u)
            if self.backend == "torch":
                maps, unit_info = self._fit_unit_torch(blocks, n_hooks * len(unit) * n_neurons,
                                                       rng)
            else:
                maps, unit_info = self._fit_unit_nilearn(
                    blocks, [layers[i] for i in unit], source.data["neuron"].values, rng)
            if not np.isfinite(maps).all():
                raise RuntimeError(f"The {self.method} maps of unit {u} (layers "
                                   f"{[layers[i] for i in unit]}) are not finite: try another "
                                   "method or backend, or check the activations.")
            if self.method != "dictlearning":   # DictLearning keeps nilearn's sign rule
                maps = flip_signs(maps)
            done.update(unit)
            raw[u * k:(u + 1) * k, :, unit[0]:unit[-1] + 1] = maps.reshape(
                k, n_hooks, len(unit), n_neurons)
            info["units"].append({"layers": [layers[i] for i in unit], "n_groups": len(groups),
                                  **unit_info})
            bar.update()
        bar.close()
        self._set_fitted(units, raw, info, **self._space_of(source), mean=np.stack(
            [m.mean.cpu().numpy() for m in moments], axis=1), scale=np.stack(
            [m.std().cpu().numpy() for m in moments], axis=1))
        return self

    @staticmethod
    def _space_of(source: ActivationSource) -> dict:
        """What :meth:`_set_fitted` needs to know of the fitted data."""
        return dict(layers=source.layers, hooks=source.hooks,
                    neurons=source.data["neuron"].values, n_tokens=source.n_tokens,
                    attrs=source.attrs, layout=source.layout, mask_img=source.mask_img,
                    input_type="images" if source.from_images else "activations")

    def _fit_source(self, X) -> ActivationSource:
        """``X`` as a source of the selected layers and hook points."""
        source = as_source(X, mask_img=self.mask_img, layout=self.layout, layers=self.layers,
                           hooks=self.hooks)
        if source.n_hooks > 1 and self.backend == "nilearn":
            raise ValueError(f"The activations hold several hook points {source.hooks}, which "
                             "nilearn's volumes cannot hold together: use backend='torch', or "
                             "select one hook point (hooks='act').")
        return source

    def _check_sizes(self, unit_voxels: list[int], n_tokens: int, what: str) -> None:
        for n_vox in unit_voxels:
            if self.n_components > n_vox:
                raise ValueError(f"n_components={self.n_components} exceeds the {n_vox} {what} "
                                 "of a decomposed unit: lower n_components or use a wider "
                                 "scope.")
        if self.n_components > n_tokens:
            raise ValueError(f"n_components={self.n_components} exceeds the {n_tokens} tokens: "
                             "lower n_components or give more tokens.")

    def _groups(self, source: ActivationSource, n_vox: int) -> list[slice]:
        max_tokens = self.batch_tokens
        if self.max_memory_gb is not None:
            # float32 copy + float16/32 read buffer + group PCA rows + Zarr chunks in flight
            buffer = 8 * self.n_components * n_vox * 4
            chunks = source.data.encoding.get("chunks") or source.data.encoding.get(
                "preferred_chunks")
            if isinstance(chunks, dict):
                chunks = chunks.get("token")
            chunk_tokens = int(chunks[0] if isinstance(chunks, (tuple, list)) else chunks or 0)
            # reads go one layer at a time; a chunk is held about 3 times while decoded
            buffer += 3 * chunk_tokens * source.n_neurons * source.data.dtype.itemsize
            budget = self.max_memory_gb * 1e9 - buffer
            fit = int(budget // (10 * n_vox))
            if fit < max(2, self.n_components):
                raise ValueError(f"max_memory_gb={self.max_memory_gb} leaves room for only "
                                 f"{max(fit, 0)} tokens of {n_vox} neurons per group (after "
                                 f"{buffer / 1e9:.3g} GB for buffers and storage chunks of "
                                 f"{chunk_tokens} tokens): raise it or narrow the scope.")
            max_tokens = fit if max_tokens is None else min(max_tokens, fit)
        n_groups = 1 if self.method == "fastica" else self.n_groups
        boundaries = None if self.method == "fastica" else source.boundaries
        return plan_groups(source.n_tokens, n_groups, max_tokens, boundaries)

    def _standardized_groups(self, source, unit, groups, moments, u):
        """Each group of tokens of a unit, z-scored (tokens × unit neurons, float32 on the
        device), after adding it to the moments of the layers in ``moments``.

        Once all groups are read, a unit whose neurons hardly vary is refused:
        constant (e.g. all-zero) activations hold no network to find.
        """
        device = torch.device(self.device)
        shape = (source.n_hooks, len(unit), source.n_neurons)
        varying = torch.zeros(int(np.prod(shape)), dtype=torch.bool, device=device)
        for group in tqdm(groups, desc=f"unit {u}", unit="group", leave=False,
                          disable=not self.verbose or len(groups) < 2):
            block = torch.from_numpy(source.read(group, unit)).to(device).to(torch.float32)
            check_finite(block)
            voxels = block.view(len(block), *shape)
            for j, pos in enumerate(unit):
                if pos in moments:
                    moments[pos].update(voxels[:, :, j])
            varying |= ~zscore_tokens(block)[1]
            yield block
            del block   # before the next read: one group in memory at a time
        if int(varying.sum()) < self.n_components:
            what = "neurons" if source.n_hooks == 1 else "voxels"
            raise ValueError(f"Only {int(varying.sum())} of {varying.numel()} {what} of layers "
                             f"{[source.layers[i] for i in unit]} vary over the tokens, fewer "
                             f"than n_components={self.n_components}: the activations hold no "
                             "networks to find. Check the recording (all-zero or constant "
                             "activations?), or give more varied tokens.")

    def _fit_unit_torch(self, blocks, n_vox, rng):
        gen = torch.Generator().manual_seed(int(rng.randint(_SEED_MAX)))
        k = self.n_components
        canica = self.method == "canica"
        # "fastica": keep extra directions per block so merged blocks approximate one PCA
        per_group = k if canica else min(4 * k, k + 50)
        max_rows = max(8 * k, 4 * per_group)
        if self.max_memory_gb is not None:
            max_rows = max(4 * per_group, min(max_rows, int(self.max_memory_gb * 1e9 * 0.3
                                                              // (8 * n_vox))))
        group_pca = GroupPCA(k, max_rows, normalize=canica)
        for block in blocks:
            group_pca.add(randomized_row_basis(block, per_group, generator=gen))
            del block
        return self._unmix(group_pca.components(), rng)

    def _unmix(self, maps: torch.Tensor, rng):
        """FastICA of a unit's PCA maps (k × voxels): the raw maps (float64) and the
        unit's fit information."""
        return _unmixed(*fastica(maps, n_init=self.n_init, fun=self.fun,
                                 max_iter=self.max_iter, tol=self.tol, random_state=rng))

    def _unmix_units(self, maps: torch.Tensor, seeds, rng) -> list:
        """:meth:`_unmix` of several units' PCA maps (units × k × voxels) at once, each
        with its ``n_init`` restart seeds drawn beforehand (``rng`` gives second seeds
        to a unit whose restarts all diverge)."""
        return [_unmixed(*result) for result in fastica_layers(
            maps, seeds, fun=self.fun, max_iter=self.max_iter, tol=self.tol, random_state=rng)]

    def _fit_unit_nilearn(self, blocks, layers, neurons, rng):
        from ._nilearn_backend import nilearn_decompose

        groups = [xr.DataArray(block.cpu().numpy().reshape(len(block), len(layers), -1),
                               dims=("token", "layer", "neuron"),
                               coords={"layer": layers, "neuron": neurons}) for block in blocks]
        seed = int(rng.randint(_SEED_MAX))
        maps = nilearn_decompose(groups, self.method, self.n_components, self.n_init, seed,
                                 verbose=max(0, int(self.verbose) - 1),
                                 **(self.backend_params or {}))
        return maps.reshape(self.n_components, -1), {"seed": seed}

    def _set_fitted(self, units, raw, info, *, layers, hooks, neurons, n_tokens, attrs,
                    mean, scale, layout=None, mask_img=None, input_type="activations") -> None:
        """Fitted attributes from the raw maps (component, hook, layer, neuron), the
        per-voxel ``mean`` and ``scale`` (hook, layer, neuron) and the fitted space."""
        k = self.n_components
        z = np.zeros_like(raw)
        for u, unit in enumerate(units):
            rows, cols = slice(u * k, (u + 1) * k), slice(unit[0], unit[-1] + 1)
            z[rows, :, cols] = zscore_maps(raw[rows, :, cols].reshape(k, -1)).reshape(
                z[rows, :, cols].shape)
        self.hooks_ = hooks
        hook = {} if self.hooks_ is None else {"hook": self.hooks_}
        coords = {"component": np.arange(raw.shape[0]), **hook, "layer": layers,
                  "neuron": neurons, "unit": ("component", np.repeat(np.arange(len(units)), k))}
        dims = ("component", *hook, "layer", "neuron")
        if self.hooks_ is None:
            raw, z = raw[:, 0], z[:, 0]
        self.units_ = [[layers[i] for i in unit] for unit in units]
        self.layers_ = list(layers)
        self.components_ = xr.DataArray(raw, dims=dims, coords=coords, name="components")
        self.maps_z_ = xr.DataArray(z, dims=dims, coords=coords, name="maps_z")
        nc = {**hook, "layer": layers, "neuron": neurons}
        for name, values in (("mean", mean), ("scale", scale)):    # (hook, layer, neuron)
            values = np.asarray(values)
            setattr(self, f"{name}_", xr.DataArray(values if hook else values[0], dims=dims[1:],
                                                   coords=nc, name=name))
        self.n_tokens_ = int(n_tokens)
        self.fit_info_ = info
        self._warn_unconverged(info["units"])
        self.source_attrs_ = {key: v for key, v in attrs.items()
                              if isinstance(v, (str, int, float, bool))}
        self.input_type_ = input_type
        self._set_space(layout, mask_img)
        self.set_threshold(self.threshold if self.target_count is None else None,
                           target_count=self.target_count)

    def _warn_unconverged(self, units: list) -> None:
        """One warning for the units whose kept FastICA restart did not converge."""
        failed = [u for u, unit in enumerate(units)
                  if "ica_converged" in unit and not unit["ica_converged"][unit["ica_best"]]]
        if failed:
            which = (f"{len(failed)} of {len(units)} units" if len(units) > 1 else "the unit")
            warnings.warn(f"FastICA did not converge within max_iter={self.max_iter} for the kept "
                          f"restart of {which} (layers "
                          f"{format_ranges([units[u]['layers'][0] for u in failed])}; "
                          "fit_info_['units'] has each unit's iterations): raise max_iter or tol.",
                          UserWarning, stacklevel=4)

    def set_threshold(self, threshold: float | None = None, *, target_count: int | None = None
                      ) -> FunctionalNetworks:
        """Recompute the network masks and key neurons for another threshold.

        Parameters
        ----------
        threshold : float, optional
            New |z| threshold.
        target_count : int, optional
            Or the number of key neurons to keep (the threshold is tuned).

        Returns
        -------
        self
        """
        check_is_fitted(self)
        abs_z = np.abs(self.maps_z_.values)
        if target_count is not None:
            # a neuron's strongest |z| over networks and hook points
            per_neuron = abs_z.reshape(-1, *abs_z.shape[-2:]).max(axis=0)
            threshold = threshold_for_count(per_neuron, int(target_count))
        self.threshold_ = check_threshold(threshold)
        self.network_masks_ = network_masks(self.maps_z_, self.threshold_)
        self.key_neurons_ = key_neurons(self.maps_z_, self.threshold_)
        masks = self.network_masks_.values
        if not masks.any():
            warnings.warn(f"No neuron has |z| > {self.threshold_:g} in any network (the largest "
                          f"|z| is {abs_z.max():.2f}): lower the threshold or set target_count.",
                          UserWarning, stacklevel=2)
        empty = int((~masks.reshape(masks.shape[0], -1).any(axis=1)).sum())
        if 0 < empty < masks.shape[0]:
            warnings.warn(f"{empty} of {masks.shape[0]} networks have no neuron above "
                          f"|z| > {self.threshold_:g}.", UserWarning, stacklevel=2)
        return self

    # ---------------------------------------------------------------- results
    def summary(self) -> str:
        """A short text: networks, threshold and key neurons per layer."""
        check_is_fitted(self)
        per_layer = self.key_neurons_.sum("neuron").values
        masks = self.network_masks_
        if "hook" in masks.dims:
            masks = masks.any("hook")
        sizes = masks.sum(("layer", "neuron")).values
        voxels = ("" if getattr(self, "hooks_", None) is None
                  else f", voxels of hook points {', '.join(self.hooks_)}")
        lines = [f"{self.maps_z_.sizes['component']} networks ({len(self.units_)} unit(s) x "
                 f"{self.n_components}, method={self.method}, backend={self.backend}, "
                 f"scope={self.scope}{voxels}) from {self.n_tokens_} tokens",
                 f"threshold |z| > {self.threshold_:.3g}: {int(per_layer.sum())} key neurons "
                 f"of {self.key_neurons_.size}; network sizes (neurons) median "
                 f"{int(np.median(sizes))}, "
                 f"max {int(sizes.max())}",
                 "key neurons per layer: " + ", ".join(
                     f"{int(layer)}:{int(n)}" for layer, n in
                     zip(self.key_neurons_["layer"].values, per_layer))]
        return "\n".join(lines)

    def to_dataset(self) -> xr.Dataset:
        """The fitted estimator as one Dataset (what :func:`save_networks` writes).

        :meth:`from_dataset` rebuilds it exactly: maps, masks, standardization,
        threshold, parameters and the fitted space (layout or mask image).
        """
        check_is_fitted(self)
        params = self.get_params()
        params["random_state"] = (int(params["random_state"])
                                  if isinstance(params["random_state"], numbers.Integral) else None)
        params["mask_img"] = None       # saved as the fitted space below
        params["layout"] = None if params["layout"] is None else params["layout"].to_dict()
        attrs = {"threshold": self.threshold_, "n_tokens": self.n_tokens_,
                 "units": json.dumps(self.units_), "params": json.dumps(params, default=str),
                 "fit_info": json.dumps(self.fit_info_, default=str),
                 "input_type": self.input_type_, "mask_img_given": self.mask_img is not None,
                 **{f"source_{key}": value for key, value in self.source_attrs_.items()}}
        data = {"components": self.components_, "maps_z": self.maps_z_,
                "network_masks": self.network_masks_, "key_neurons": self.key_neurons_,
                "mean": self.mean_, "scale": self.scale_}
        if self.layout_ is None:
            data["mask"] = (("mask_x", "mask_y", "mask_z"),
                            np.asarray(self.mask_img_.dataobj).astype(np.uint8))
            attrs["mask_affine"] = json.dumps(np.asarray(self.mask_img_.affine).tolist())
        else:
            attrs["layout"] = json.dumps(self.layout_.to_dict())
        ds = xr.Dataset(data, attrs=attrs)
        if "hook" in ds.coords:   # variable-length strings: a type Zarr v3 specifies
            ds = ds.assign_coords(hook=ds["hook"].values.astype(object))
        return ds

    @classmethod
    def from_dataset(cls, ds: xr.Dataset) -> FunctionalNetworks:
        """Rebuild a fitted estimator from :meth:`to_dataset`'s output."""
        params = json.loads(ds.attrs["params"])
        for old, new in (("n_restarts", "n_init"), ("progress", "verbose")):  # llmbrain 0.1
            if old in params:
                params[new] = int(params.pop(old))
        if params.get("layout") is not None:
            params["layout"] = VolumeLayout(tuple(params["layout"]["layers"]),
                                            tuple(params["layout"]["neurons"]))
        est = cls(**params)
        est.units_ = json.loads(ds.attrs["units"])
        est.components_ = ds["components"].load()
        est.maps_z_ = ds["maps_z"].load()
        est.layers_ = [int(v) for v in est.components_["layer"].values]
        est.hooks_ = ([str(v) for v in est.components_["hook"].values]
                      if "hook" in est.components_.dims else None)
        est.mean_ = ds["mean"].load()
        est.scale_ = ds["scale"].load()
        est.n_tokens_ = int(ds.attrs["n_tokens"])
        est.fit_info_ = json.loads(ds.attrs.get("fit_info", "{}"))
        est.source_attrs_ = {key[len("source_"):]: v for key, v in ds.attrs.items()
                             if key.startswith("source_")}
        est.input_type_ = ds.attrs.get("input_type", "activations")
        if "mask" in ds:
            mask_img = nib.Nifti1Image(ds["mask"].values.astype(np.uint8),
                                       np.asarray(json.loads(ds.attrs["mask_affine"])))
            est._set_space(None, mask_img)
            if ds.attrs.get("mask_img_given"):
                est.mask_img = mask_img
        else:
            spec = json.loads(ds.attrs["layout"]) if "layout" in ds.attrs else None
            est._set_space(None if spec is None else VolumeLayout(
                tuple(spec["layers"]), tuple(spec["neurons"])), None)
        est.threshold_ = float(ds.attrs["threshold"])
        est.network_masks_ = ds["network_masks"].load().astype(bool)
        est.key_neurons_ = ds["key_neurons"].load().astype(bool)
        return est


def _unmixed(sources: torch.Tensor, ica_info: dict):
    """The raw maps (float64, NumPy) and fit information of one FastICA."""
    return sources.cpu().numpy().astype(np.float64), {
        f"ica_{key}": ica_info[key] for key in ("seeds", "n_iter", "best", "converged",
                                                "float64")}
