"""Functional networks of a language model: CanICA on its neurons.

Neurons are voxels and tokens are time points. Each neuron is z-scored over
tokens, the data are reduced (per group of tokens, then across groups) and
unmixed with spatial ICA; the maps are z-scored across neurons and the neurons
with ``|z| > threshold`` in any map are the *key neurons*.
"""

from __future__ import annotations

import inspect
import json
import warnings

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from ._data import ActivationSource, as_source, plan_groups, plan_units
from ._maps import flip_signs, threshold_for_count, zscore_maps
from ._torch_ica import GroupPCA, fastica, randomized_row_basis
from ._zscore import RunningMoments, check_finite, zscore_tokens

__all__ = ["FunctionalNetworks"]

_METHODS = ("canica", "dictlearning", "fastica")
_BACKENDS = ("torch", "nilearn")


class FunctionalNetworks:
    """Find functional networks of neurons with ICA (CanICA as in fMRI).

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
    threshold : float, default=3.6
        Neurons with ``|z| > threshold`` in a z-scored map belong to it.
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
    n_restarts : int, default=10
        FastICA restarts (nilearn's ``n_init``); the sparsest result is kept.
    fun : {"logcosh", "cube", "exp"}, default="logcosh"
        FastICA contrast. nilearn's CanICA uses ``"cube"`` (kurtosis), which
        converges slowly on small layers and is sensitive to outliers.
    max_iter, tol : int, float
        FastICA stopping rule.
    random_state : int, default=0
    device : str, default="cpu"
        Torch device (``"cuda"`` for a GPU).
    mask_img, layout : optional
        For image inputs: the mask, or the :class:`llmbrain.VolumeLayout` that
        made the images.
    backend_params : dict, optional
        Extra parameters of nilearn's estimator (``backend="nilearn"``).
    progress : bool, default=True
        Show progress bars.

    Attributes
    ----------
    components_ : xarray.DataArray (component, layer, neuron)
        Raw maps, sign-flipped so each map's largest tail is positive; zero
        outside the layers of the map's unit. Coordinate ``unit`` gives each
        component's unit.
    maps_z_ : xarray.DataArray (component, layer, neuron)
        Maps z-scored across the neurons of their unit.
    network_masks_ : xarray.DataArray of bool (component, layer, neuron)
        ``|maps_z_| > threshold_``.
    key_neurons_ : xarray.DataArray of bool (layer, neuron)
        Union of the network masks.
    threshold_ : float
    units_ : list of list of int
        Model layers of each decomposed unit.
    mean_, scale_ : xarray.DataArray (layer, neuron)
        Per-neuron mean and standard deviation over the fitted tokens, used by
        :meth:`transform`.
    n_tokens_ : int
    fit_info_ : dict
        Groups, FastICA iterations and convergence per unit.
    """

    def __init__(self, n_components=20, *, method="canica", backend="torch", scope="layer",
                 window=None, stride=None, layers=None, threshold=3.6, target_count=None,
                 n_groups=4, max_memory_gb=None, batch_tokens=None, n_restarts=10, fun="logcosh",
                 max_iter=200, tol=1e-4, random_state=0, device="cpu", mask_img=None,
                 layout=None, backend_params=None, progress=True):
        self.n_components = n_components
        self.method = method
        self.backend = backend
        self.scope = scope
        self.window = window
        self.stride = stride
        self.layers = layers
        self.threshold = threshold
        self.target_count = target_count
        self.n_groups = n_groups
        self.max_memory_gb = max_memory_gb
        self.batch_tokens = batch_tokens
        self.n_restarts = n_restarts
        self.fun = fun
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.device = device
        self.mask_img = mask_img
        self.layout = layout
        self.backend_params = backend_params
        self.progress = progress

    # ------------------------------------------------------------------ params
    def get_params(self) -> dict:
        """Parameters of this estimator (scikit-learn convention)."""
        names = [name for name in inspect.signature(type(self).__init__).parameters
                 if name != "self"]
        return {name: getattr(self, name) for name in names}

    def set_params(self, **params) -> FunctionalNetworks:
        """Set parameters (scikit-learn convention)."""
        valid = self.get_params()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"Unknown parameter {name!r}; valid ones: {sorted(valid)}.")
            setattr(self, name, value)
        return self

    def _validate(self) -> None:
        if not isinstance(self.n_components, (int, np.integer)) or self.n_components < 1:
            raise ValueError(f"n_components must be a positive integer, got {self.n_components!r}.")
        if self.method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {self.method!r}.")
        if self.backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {self.backend!r}.")
        if self.backend == "torch" and self.method == "dictlearning":
            raise ValueError("method='dictlearning' runs with backend='nilearn'; the torch "
                             "backend runs 'canica' and 'fastica'.")
        if self.backend == "nilearn" and self.method == "fastica":
            raise ValueError("method='fastica' runs with backend='torch'.")
        if self.target_count is None and not (isinstance(self.threshold, (int, float))
                                              and self.threshold > 0):
            raise ValueError(f"threshold must be a positive number, got {self.threshold!r}.")
        if self.target_count is not None and (not isinstance(self.target_count, (int, np.integer))
                                              or self.target_count < 1):
            raise ValueError(f"target_count must be a positive integer, got {self.target_count!r}.")
        if int(self.n_groups) < 1:
            raise ValueError(f"n_groups must be at least 1, got {self.n_groups}.")
        if self.n_restarts < 1:
            raise ValueError(f"n_restarts must be at least 1, got {self.n_restarts}.")
        if self.max_memory_gb is not None and self.max_memory_gb <= 0:
            raise ValueError(f"max_memory_gb must be positive, got {self.max_memory_gb}.")
        if self.fun not in ("cube", "logcosh", "exp"):
            raise ValueError(f"fun must be 'cube', 'logcosh' or 'exp', got {self.fun!r}.")
        torch.device(self.device)  # raises on a malformed device string

    # --------------------------------------------------------------------- fit
    def fit(self, X, y=None) -> FunctionalNetworks:
        """Find the networks of ``X``.

        Parameters
        ----------
        X : path, xarray.Dataset or DataArray, LLMVolumes, or 4-D NIfTI image(s)
            Activations (token, layer, neuron): a store written by
            :func:`llmbrain.record` (read lazily, group by group), an xarray
            object, or images with ``mask_img``/``layout``.
        y : None
            Ignored.

        Returns
        -------
        self
        """
        self._validate()
        source = as_source(X, mask_img=self.mask_img, layout=self.layout, layers=self.layers)
        layers = source.layers
        units = plan_units(layers, self.scope, self.window, self.stride)
        n_tokens, n_neurons = source.n_tokens, source.n_neurons
        for unit in units:
            n_vox = len(unit) * n_neurons
            if self.n_components > n_vox:
                raise ValueError(f"n_components={self.n_components} exceeds the {n_vox} neurons of "
                                 f"a decomposed unit: lower n_components or use a wider scope.")
        if self.n_components > n_tokens:
            raise ValueError(f"n_components={self.n_components} exceeds the {n_tokens} tokens: "
                             "lower n_components or give more tokens.")
        # dense (component, layer, neuron), zero outside each component's unit
        raw = np.zeros((len(units) * self.n_components, len(layers), n_neurons), np.float32)
        moments = [RunningMoments() for _ in layers]
        info = {"units": []}
        bar = tqdm(total=len(units), desc="networks", unit="unit", disable=not self.progress)
        done: set[int] = set()
        for u, unit in enumerate(units):
            groups = self._groups(source, len(unit) * n_neurons)
            # moments of a layer are accumulated once, by the first unit holding it
            todo = {pos: moments[pos] for pos in unit if pos not in done}
            if self.backend == "torch":
                maps, unit_info = self._fit_unit_torch(source, unit, groups, todo, u)
            else:
                maps, unit_info = self._fit_unit_nilearn(source, unit, groups, todo)
            done.update(unit)
            rows = slice(u * self.n_components, (u + 1) * self.n_components)
            raw[rows, unit[0]:unit[-1] + 1] = flip_signs(maps).reshape(
                self.n_components, len(unit), n_neurons)
            info["units"].append({"layers": [layers[i] for i in unit], "n_groups": len(groups),
                                  **unit_info})
            bar.update()
        bar.close()
        self._set_fitted(source, units, raw, moments, info)
        return self

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

    def _fit_unit_torch(self, source, unit, groups, moments, u):
        device = torch.device(self.device)
        gen = torch.Generator().manual_seed(int(self.random_state) + 7919 * u)
        k = self.n_components
        canica = self.method == "canica"
        # "fastica": keep extra directions per block so merged blocks approximate one PCA
        per_group = k if canica else min(4 * k, k + 50)
        n_vox = len(unit) * source.n_neurons
        max_rows = max(8 * k, 4 * per_group)
        if self.max_memory_gb is not None:
            max_rows = max(4 * per_group, min(max_rows, int(self.max_memory_gb * 1e9 * 0.3
                                                              // (8 * n_vox))))
        group_pca = GroupPCA(k, max_rows, normalize=canica)
        bar = tqdm(groups, desc=f"unit {u}", unit="group", leave=False,
                   disable=not self.progress or len(groups) < 2)
        for group in bar:
            block = torch.from_numpy(source.read(group, unit)).to(device).to(torch.float32)
            check_finite(block)
            _update_moments(moments, unit, block, source.n_neurons)
            zscore_tokens(block)
            group_pca.add(randomized_row_basis(block, per_group, generator=gen))
            del block
        pca_maps = group_pca.components()
        sources, ica_info = fastica(pca_maps, n_restarts=self.n_restarts, fun=self.fun,
                                    max_iter=self.max_iter, tol=self.tol,
                                    seed=int(self.random_state) + 104729 * u)
        if not ica_info["converged"][ica_info["best"]]:
            warnings.warn(f"FastICA did not converge within max_iter={self.max_iter} for the kept "
                          f"restart of unit {u} ({ica_info['converged'].count(False)} of "
                          f"{self.n_restarts} restarts did not): raise max_iter or tol.",
                          UserWarning, stacklevel=3)
        return sources.cpu().numpy().astype(np.float64), {
            "ica_n_iter": ica_info["n_iter"], "ica_best": ica_info["best"],
            "ica_converged": ica_info["converged"]}

    def _fit_unit_nilearn(self, source, unit, groups, moments):
        from ._nilearn_backend import nilearn_decompose

        arrays = []
        for group in groups:
            block = source.data.isel(token=group, layer=unit).astype(np.float32).load()
            values = torch.from_numpy(np.ascontiguousarray(
                block.values.reshape(block.sizes["token"], -1)))
            check_finite(values)
            _update_moments(moments, unit, values, source.n_neurons)
            zscore_tokens(values.clone())  # warns about constant neurons
            arrays.append(block)
        maps = nilearn_decompose(arrays, self.method, self.n_components, self.n_restarts,
                                 int(self.random_state), **(self.backend_params or {}))
        return maps.reshape(self.n_components, -1), {}

    def _set_fitted(self, source, units, raw, moments, info) -> None:
        layers = source.layers
        k = self.n_components
        z = np.zeros_like(raw)
        for u, unit in enumerate(units):
            rows = slice(u * k, (u + 1) * k)
            block = raw[rows, unit[0]:unit[-1] + 1].reshape(k, -1)
            z[rows, unit[0]:unit[-1] + 1] = zscore_maps(block).reshape(k, len(unit), -1)
        coords = {"component": np.arange(raw.shape[0]), "layer": layers,
                  "neuron": source.data["neuron"].values,
                  "unit": ("component", np.repeat(np.arange(len(units)), k))}
        dims = ("component", "layer", "neuron")
        self.units_ = [[layers[i] for i in unit] for unit in units]
        self.components_ = xr.DataArray(raw, dims=dims, coords=coords, name="components")
        self.maps_z_ = xr.DataArray(z, dims=dims, coords=coords, name="maps_z")
        means, stds = zip(*(m.result() for m in moments))
        nc = {"layer": layers, "neuron": coords["neuron"]}
        self.mean_ = xr.DataArray(torch.stack(means).cpu().numpy(), dims=("layer", "neuron"),
                                  coords=nc, name="mean")
        self.scale_ = xr.DataArray(torch.stack(stds).cpu().numpy(), dims=("layer", "neuron"),
                                   coords=nc, name="scale")
        self.n_tokens_ = source.n_tokens
        self.fit_info_ = info
        self.source_attrs_ = {key: v for key, v in source.attrs.items()
                              if isinstance(v, (str, int, float, bool))}
        self._mask_img = source.mask_img
        self.set_threshold(self.threshold if self.target_count is None else None,
                           target_count=self.target_count)

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
        self._check_fitted()
        abs_z = np.abs(self.maps_z_.values)
        if target_count is not None:
            threshold = threshold_for_count(abs_z.max(axis=0), int(target_count))
        if threshold is None or not threshold > 0:
            raise ValueError(f"threshold must be a positive number, got {threshold!r}.")
        self.threshold_ = float(threshold)
        masks = abs_z > self.threshold_
        self.network_masks_ = xr.DataArray(masks, dims=self.maps_z_.dims,
                                           coords=self.maps_z_.coords, name="network_masks")
        self.key_neurons_ = self.network_masks_.any("component").rename("key_neurons")
        if not masks.any():
            warnings.warn(f"No neuron has |z| > {self.threshold_:g} in any network (the largest "
                          f"|z| is {abs_z.max():.2f}): lower the threshold or set target_count.",
                          UserWarning, stacklevel=2)
        empty = int((~masks.reshape(masks.shape[0], -1).any(axis=1)).sum())
        if 0 < empty < masks.shape[0]:
            warnings.warn(f"{empty} of {masks.shape[0]} networks have no neuron above "
                          f"|z| > {self.threshold_:g}.", UserWarning, stacklevel=2)
        return self

    # ----------------------------------------------------------------- outputs
    def _check_fitted(self) -> None:
        if not hasattr(self, "maps_z_"):
            raise RuntimeError("This FunctionalNetworks is not fitted yet: call fit(X) first.")

    @property
    def components_img_(self):
        """The raw maps as a 4-D NIfTI image (one volume per component)."""
        return self._img(self.components_)

    @property
    def maps_z_img_(self):
        """The z-scored maps as a 4-D NIfTI image."""
        return self._img(self.maps_z_)

    def _img(self, maps: xr.DataArray):
        self._check_fitted()
        import nibabel as nib

        from ..volumes import to_volumes

        mask_img = getattr(self, "_mask_img", None)
        if mask_img is not None:
            mask = np.asarray(mask_img.dataobj) != 0
            volume = np.zeros(mask.shape + (maps.sizes["component"],), dtype=np.float32)
            volume[mask] = maps.values[:, 0, :].T
            return nib.Nifti1Image(volume, mask_img.affine)
        return to_volumes(maps).img

    def transform(self, X, *, maps: str = "thresholded", batch_tokens: int = 4096
                  ) -> xr.DataArray:
        """Time courses of the networks: least squares of the z-scored data on the maps.

        Parameters
        ----------
        X : same kinds as :meth:`fit`
            Activations with the fitted layers.
        maps : {"thresholded", "raw"}
            Regress on the raw maps restricted to each network's neurons
            (``|z| > threshold_``, like nilearn's thresholded CanICA maps; less
            noise) or on the whole raw maps.
        batch_tokens : int
            Tokens read at a time.

        Returns
        -------
        xarray.DataArray (token, component)
            With the per-token coordinates of ``X`` (document, position,
            token_id, token_text) when it has them.
        """
        self._check_fitted()
        layers = [int(v) for v in self.maps_z_["layer"].values]
        source = as_source(X, mask_img=self.mask_img, layout=self.layout, layers=layers)
        if source.n_neurons != self.maps_z_.sizes["neuron"]:
            raise ValueError(f"X has {source.n_neurons} neurons per layer, the networks "
                             f"{self.maps_z_.sizes['neuron']}.")
        device = torch.device(self.device)
        mean = torch.from_numpy(self.mean_.values.reshape(-1)).to(device, torch.float64)
        scale = torch.from_numpy(self.scale_.values.reshape(-1)).to(device, torch.float64)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        if maps not in ("thresholded", "raw"):
            raise ValueError(f"maps must be 'thresholded' or 'raw', got {maps!r}.")
        weights = self.components_.values
        if maps == "thresholded":
            weights = np.where(self.network_masks_.values, weights, 0)
        k = self.n_components
        pinvs = []
        for u, unit_layers in enumerate(self.units_):
            pos = [layers.index(layer) for layer in unit_layers]
            unit_maps = torch.from_numpy(np.ascontiguousarray(
                weights[u * k:(u + 1) * k][:, pos]).reshape(k, -1)).to(device, torch.float64)
            cols = torch.cat([torch.arange(p * source.n_neurons, (p + 1) * source.n_neurons)
                              for p in pos]).to(device)
            pinvs.append((cols, torch.linalg.pinv(unit_maps)))        # (n_vox, k)
        out = np.zeros((source.n_tokens, len(pinvs) * k), dtype=np.float32)
        all_layers = list(range(len(layers)))
        for start in tqdm(range(0, source.n_tokens, batch_tokens), desc="transform",
                          disable=not self.progress or source.n_tokens <= batch_tokens):
            group = slice(start, min(start + batch_tokens, source.n_tokens))
            block = torch.from_numpy(source.read(group, all_layers)).to(device).to(torch.float64)
            check_finite(block)
            block = (block - mean) / scale
            for u, (cols, pinv) in enumerate(pinvs):
                out[group, u * k:(u + 1) * k] = (block[:, cols] @ pinv).cpu().numpy()
        coords = {"component": self.components_["component"].values,
                  "unit": ("component", self.components_["unit"].values),
                  **source.token_coords()}
        return xr.DataArray(out, dims=("token", "component"), coords=coords, name="time_courses")

    def fit_transform(self, X, y=None) -> xr.DataArray:
        """Fit, then return the time courses of ``X``."""
        return self.fit(X).transform(X)

    def summary(self) -> str:
        """A short text: networks, threshold and key neurons per layer."""
        self._check_fitted()
        per_layer = self.key_neurons_.sum("neuron").values
        sizes = self.network_masks_.sum(("layer", "neuron")).values
        lines = [f"{self.maps_z_.sizes['component']} networks ({len(self.units_)} unit(s) x "
                 f"{self.n_components}, method={self.method}, backend={self.backend}, "
                 f"scope={self.scope}) from {self.n_tokens_} tokens",
                 f"threshold |z| > {self.threshold_:.3g}: {int(per_layer.sum())} key neurons "
                 f"of {self.key_neurons_.size}; network sizes median {int(np.median(sizes))}, "
                 f"max {int(sizes.max())}",
                 "key neurons per layer: " + ", ".join(
                     f"{int(layer)}:{int(n)}" for layer, n in
                     zip(self.key_neurons_["layer"].values, per_layer))]
        return "\n".join(lines)

    def to_dataset(self) -> xr.Dataset:
        """The fitted results as one Dataset (what :func:`save_networks` writes)."""
        self._check_fitted()
        params = {key: value for key, value in self.get_params().items()
                  if key not in ("mask_img", "layout")}
        attrs = {"threshold": self.threshold_, "n_tokens": self.n_tokens_,
                 "units": json.dumps(self.units_), "params": json.dumps(params, default=str),
                 "fit_info": json.dumps(self.fit_info_, default=str),
                 **{f"source_{key}": value for key, value in self.source_attrs_.items()}}
        return xr.Dataset({"components": self.components_, "maps_z": self.maps_z_,
                           "network_masks": self.network_masks_, "key_neurons": self.key_neurons_,
                           "mean": self.mean_, "scale": self.scale_}, attrs=attrs)

    @classmethod
    def from_dataset(cls, ds: xr.Dataset) -> FunctionalNetworks:
        """Rebuild a fitted estimator from :meth:`to_dataset`'s output."""
        params = json.loads(ds.attrs["params"])
        est = cls(**params)
        est.units_ = json.loads(ds.attrs["units"])
        est.components_ = ds["components"].load()
        est.maps_z_ = ds["maps_z"].load()
        est.mean_ = ds["mean"].load()
        est.scale_ = ds["scale"].load()
        est.n_tokens_ = int(ds.attrs["n_tokens"])
        est.fit_info_ = json.loads(ds.attrs.get("fit_info", "{}"))
        est.source_attrs_ = {key[len("source_"):]: v for key, v in ds.attrs.items()
                             if key.startswith("source_")}
        est._mask_img = None
        est.threshold_ = float(ds.attrs["threshold"])
        est.network_masks_ = ds["network_masks"].load().astype(bool)
        est.key_neurons_ = ds["key_neurons"].load().astype(bool)
        return est

    def __repr__(self) -> str:
        defaults = type(self)().get_params()
        changed = {k: v for k, v in self.get_params().items()
                   if v is not defaults[k] and not (isinstance(v, (int, float, str))
                                                    and v == defaults[k])}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"



def _update_moments(moments: dict, unit: list[int], block: torch.Tensor, n_neurons: int) -> None:
    """Add a block (tokens × unit neurons) to the running moments of the layers in ``moments``."""
    for j, pos in enumerate(unit):
        if pos in moments:
            moments[pos].update(block[:, j * n_neurons:(j + 1) * n_neurons])
