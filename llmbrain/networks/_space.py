"""The fitted space of the networks: images, and activations <-> time courses.

Like a nilearn masker, a fitted estimator keeps the space it was fitted in
(its layers and neurons, and the layout or mask of the images it read), so that
new data of that space go to time courses (:meth:`transform`), time courses go
back to activations (:meth:`inverse_transform`) and the networks' explained
variance can be measured (:meth:`score`).

Activations are standardized with the fitted per-voxel mean and scale. The
time courses of a unit's networks are the least-squares coefficients of the
standardized activations of the unit's layers on its maps; going back, each
unit rebuilds its layers and a layer that several units cover (overlapping
windows) gets the mean of their reconstructions. With several hook points,
the voxels of a layer are its (hook, neuron) pairs throughout.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch
import xarray as xr
from sklearn.base import TransformerMixin
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from ..volumes import VolumeLayout
from ._data import ActivationSource, as_source
from ._zscore import check_finite

__all__ = ["NetworkSpaceMixin", "UnitProjection"]


class NetworkSpaceMixin(TransformerMixin):
    """Image space, :meth:`transform`, :meth:`inverse_transform` and :meth:`score` of
    fitted networks.

    Uses the fitted attributes ``components_``, ``network_masks_``, ``units_``,
    ``layers_``, ``hooks_``, ``mean_``, ``scale_``, ``input_type_`` and the
    parameters ``n_components``, ``device`` and ``verbose``.
    """

    def _set_space(self, layout: VolumeLayout | None, mask_img) -> None:
        """The fitted image space: ``layout_`` (None with a bare mask) and ``mask_img_``."""
        if mask_img is not None:
            self.layout_ = None
            self.mask_img_ = mask_img
            return
        if layout is None:
            layout = VolumeLayout(tuple(self.layers_),
                                  tuple(int(v) for v in self.components_["neuron"].values))
        self.layout_ = layout
        fitted = np.isin(np.asarray(layout.layers), self.layers_)
        mask = layout.mask & fitted[None, None, :]
        self.mask_img_ = nib.Nifti1Image(mask.astype(np.uint8), np.eye(4))

    # ------------------------------------------------------------ image space
    @property
    def components_img_(self) -> nib.Nifti1Image:
        """The raw maps as a 4-D NIfTI image (one volume per component)."""
        return self._to_img(self._one_hook(self.components_))

    @property
    def maps_z_img_(self) -> nib.Nifti1Image:
        """The z-scored maps as a 4-D NIfTI image."""
        return self._to_img(self._one_hook(self.maps_z_))

    def _one_hook(self, maps: xr.DataArray) -> np.ndarray:
        check_is_fitted(self)
        if "hook" in maps.dims:
            raise ValueError(f"The networks' voxels belong to the hook points {self.hooks_}, "
                             "which one image cannot hold: make the image of one of them with "
                             "llmbrain.to_volumes(maps.sel(hook=...)).")
        return maps.values

    def _to_img(self, values: np.ndarray) -> nib.Nifti1Image:
        """(n, fitted layers, neurons) values -> 4-D image of the fitted space."""
        check_is_fitted(self)
        values = np.asarray(values, dtype=np.float32)
        if self.layout_ is None:
            mask = np.asarray(self.mask_img_.dataobj) != 0
            volume = np.zeros(mask.shape + (values.shape[0],), dtype=np.float32)
            volume[mask] = values[:, 0, :].T
            return nib.Nifti1Image(volume, self.mask_img_.affine)
        full = np.zeros((values.shape[0], len(self.layout_.layers), values.shape[2]), np.float32)
        full[:, [list(self.layout_.layers).index(layer) for layer in self.layers_]] = values
        return nib.Nifti1Image(self.layout_.to_voxels(full), self.mask_img_.affine)

    # -------------------------------------------------- to and from time courses
    def _source(self, X) -> ActivationSource:
        """``X`` read in the fitted space (images through ``layout_`` or ``mask_img_``)."""
        hooks = getattr(self, "hooks_", None)
        source = as_source(X, mask_img=self.mask_img_ if self.layout_ is None else None,
                           layout=self.layout_, layers=self.layers_, hooks=hooks)
        if source.n_neurons != self.components_.sizes["neuron"]:
            raise ValueError(f"X has {source.n_neurons} neurons per layer, the networks "
                             f"{self.components_.sizes['neuron']}.")
        if source.hooks != hooks:
            raise ValueError(f"X holds the hook points {source.hooks}, but the networks were "
                             f"fitted on one: select it (e.g. open_activations(path, hook=...) "
                             "or X.sel(hook=...)).")
        return source

    def _voxels(self, values: np.ndarray) -> np.ndarray:
        """Fitted (..., [hook,] layer, neuron) values as (..., hook, layer, neuron)."""
        return values if getattr(self, "hooks_", None) is not None else \
            np.expand_dims(values, -3)

    def _projection(self, maps: str) -> UnitProjection:
        if maps not in ("thresholded", "raw"):
            raise ValueError(f"maps must be 'thresholded' or 'raw', got {maps!r}.")
        weights = self.components_.values
        if maps == "thresholded":
            weights = np.where(self.network_masks_.values, weights, 0)
        units = [[self.layers_.index(layer) for layer in unit] for unit in self.units_]
        return UnitProjection(self._voxels(weights), units, self.n_components,
                              self._voxels(self.mean_.values), self._voxels(self.scale_.values),
                              self.device)

    def _blocks(self, source: ActivationSource, batch_tokens: int, desc: str):
        """``(slice, tokens × features)`` blocks of ``source``, as recorded."""
        positions = range(len(self.layers_))
        for start in tqdm(range(0, source.n_tokens, batch_tokens), desc=desc,
                          disable=not self.verbose or source.n_tokens <= batch_tokens):
            group = slice(start, min(start + batch_tokens, source.n_tokens))
            block = torch.from_numpy(source.read(group, positions))
            check_finite(block)
            yield group, block

    def transform(self, X, *, maps: str = "thresholded", batch_tokens: int = 4096
                  ) -> xr.DataArray:
        """Time courses of the networks: least squares of the z-scored data on the maps.

        Parameters
        ----------
        X : same kinds as :meth:`fit`
            Activations of the fitted layers; images of the fitted space.
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
        check_is_fitted(self)
        projection = self._projection(maps)
        source = self._source(X)
        out = np.zeros((source.n_tokens, projection.n_components), dtype=np.float32)
        for group, block in self._blocks(source, batch_tokens, "transform"):
            out[group] = projection.transform(projection.standardize(block)).cpu().numpy()
        coords = {"component": self.components_["component"].values,
                  "unit": ("component", self.components_["unit"].values),
                  **source.token_coords()}
        return xr.DataArray(out, dims=("token", "component"), coords=coords, name="time_courses")

    def inverse_transform(self, time_courses, *, maps: str = "thresholded"):
        """Activations rebuilt from time courses: the maps weighted by the time courses.

        Parameters
        ----------
        time_courses : xarray.DataArray (token, component) or array of shape (n_tokens, n_components)
            E.g. the output of :meth:`transform` (with the same ``maps``).
        maps : {"thresholded", "raw"}
            The maps :meth:`transform` used.

        Returns
        -------
        xarray.DataArray (token, layer, neuron) or nibabel.Nifti1Image
            In the recorded units (the fitted mean and scale are put back), with
            the token coordinates of ``time_courses``; (token, hook, layer,
            neuron) for networks of several hook points; a 4-D image of the
            fitted space when the estimator was fitted on images. A layer that
            several units cover gets the mean of their reconstructions.
        """
        check_is_fitted(self)
        projection = self._projection(maps)
        if isinstance(time_courses, xr.DataArray) and set(time_courses.dims) == {"token",
                                                                                 "component"}:
            time_courses = time_courses.transpose("token", "component")
        values = np.asarray(time_courses, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != projection.n_components:
            raise ValueError(f"Expected time courses of shape (n_tokens, "
                             f"{projection.n_components}), got {values.shape}.")
        z = projection.inverse_transform(torch.from_numpy(values))
        x = projection.unstandardize(z).cpu().numpy().astype(np.float32)
        hooks = getattr(self, "hooks_", None)
        x = x.reshape(len(values), len(hooks or [None]), len(self.layers_), -1)
        if self.input_type_ == "images":
            return self._to_img(x[:, 0])
        hook = {} if hooks is None else {"hook": hooks}
        coords = {**hook, "layer": self.layers_, "neuron": self.components_["neuron"].values}
        if isinstance(time_courses, xr.DataArray):
            coords.update({name: ("token", c.values) for name, c in time_courses.coords.items()
                           if c.dims == ("token",)})
        return xr.DataArray(x if hook else x[:, 0], dims=("token", *hook, "layer", "neuron"),
                            coords=coords, name="activations")

    def score(self, X, y=None, *, per_component: bool = False, maps: str = "thresholded",
              batch_tokens: int = 4096):
        """Explained variance of ``X`` by the networks (as nilearn's decompositions).

        Parameters
        ----------
        X : same kinds as :meth:`fit`
        y : None
            Ignored.
        per_component : bool, default=False
            One score per network (the variance of its unit's standardized data
            explained by its unit-norm map alone) instead of one for all.
        maps : {"thresholded", "raw"}
            The maps, as in :meth:`transform`.
        batch_tokens : int
            Tokens read at a time.

        Returns
        -------
        float or xarray.DataArray (component)
            ``1 - |Z - Ẑ|² / |Z|²`` for the standardized activations ``Z`` and
            their reconstruction ``Ẑ`` from :meth:`transform` (what
            :meth:`inverse_transform` returns, standardized), over the fitted
            neurons; at least 0.
        """
        check_is_fitted(self)
        projection = self._projection(maps)
        totals: dict = {}
        for _, block in self._blocks(self._source(X), batch_tokens, "score"):
            sums = projection.sums_of_squares(projection.standardize(block))
            totals = sums if not totals else {key: totals[key] + sums[key] for key in sums}
        if per_component:
            ratio = totals["projected"] / totals["unit_total"].clamp_min(1e-300)
            return xr.DataArray(ratio.clamp(0, 1).cpu().numpy(), dims="component",
                                coords={"component": self.components_["component"].values,
                                        "unit": ("component", self.components_["unit"].values)},
                                name="explained_variance")
        return max(0.0, 1.0 - float(totals["residual"]) / max(float(totals["total"]), 1e-300))


class UnitProjection:
    """The maps of every unit, ready for projection (float64, on ``device``).

    Parameters
    ----------
    maps : ndarray of shape (n_units * n_components, n_hooks, n_layers, n_neurons)
        Maps, zero outside each component's unit.
    units : list of list of int
        Positions (in the layer axis of ``maps``) of each unit's layers.
    n_components : int
        Components per unit (rows ``u * n_components ...`` belong to unit ``u``).
    mean, scale : ndarray of shape (n_hooks, n_layers, n_neurons)
        Standardization of the activations (a zero scale counts as 1).
    device : torch.device

    Activations are ``(tokens, n_features)`` with the features in the order
    of ``maps`` (hook by hook, then layer by layer).
    """

    def __init__(self, maps: np.ndarray, units: list[list[int]], n_components: int,
                 mean: np.ndarray, scale: np.ndarray, device) -> None:
        self.device = torch.device(device)
        n_hooks, n_layers, n_neurons = maps.shape[1:]
        self.n_features = n_hooks * n_layers * n_neurons
        self.n_components = maps.shape[0]
        self.mean = torch.from_numpy(np.asarray(mean, np.float64).reshape(-1)).to(self.device)
        scale = torch.from_numpy(np.asarray(scale, np.float64).reshape(-1)).to(self.device)
        self.scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        self.parts = []
        coverage = torch.zeros(self.n_features, dtype=torch.float64, device=self.device)
        for u, positions in enumerate(units):
            rows = slice(u * n_components, (u + 1) * n_components)
            unit_maps = np.ascontiguousarray(maps[rows][:, :, positions]).reshape(n_components, -1)
            unit_maps = torch.from_numpy(unit_maps).to(self.device, torch.float64)
            cols = torch.cat([torch.arange(n_neurons) + (h * n_layers + p) * n_neurons
                              for h in range(n_hooks) for p in positions]).to(self.device)
            self.parts.append((rows, cols, unit_maps, torch.linalg.pinv(unit_maps)))
            coverage[cols] += 1
        self.coverage = coverage

    def standardize(self, block: torch.Tensor) -> torch.Tensor:
        """(tokens, n_features) activations -> float64 z-scores, on the device."""
        return (block.to(self.device, torch.float64) - self.mean) / self.scale

    def transform(self, z: torch.Tensor) -> torch.Tensor:
        """Standardized activations (tokens, n_features) -> time courses (tokens, components)."""
        out = torch.empty(z.shape[0], self.n_components, dtype=torch.float64, device=self.device)
        for rows, cols, _, pinv in self.parts:
            out[:, rows] = z[:, cols] @ pinv
        return out

    def inverse_transform(self, time_courses: torch.Tensor) -> torch.Tensor:
        """Time courses (tokens, components) -> standardized activations (tokens, n_features).

        Features outside every unit are zero (the fitted mean once unstandardized).
        """
        time_courses = time_courses.to(self.device, torch.float64)
        z = torch.zeros(time_courses.shape[0], self.n_features, dtype=torch.float64,
                        device=self.device)
        for rows, cols, unit_maps, _ in self.parts:
            z[:, cols] += time_courses[:, rows] @ unit_maps
        return z / self.coverage.clamp_min(1)

    def unstandardize(self, z: torch.Tensor) -> torch.Tensor:
        """Z-scores -> activations in the recorded units."""
        return z * self.scale + self.mean

    def sums_of_squares(self, z: torch.Tensor) -> dict:
        """What :meth:`FunctionalNetworks.score` accumulates over token blocks.

        Returns
        -------
        dict of float64 tensors
            ``total`` and ``residual``: sums of squares of ``z`` and of
            ``z - inverse_transform(transform(z))`` over the features the units
            cover; ``unit_total`` (per component: of ``z`` over its unit's
            features) and ``projected`` (per component: of the projection of
            ``z`` on its unit-norm map).
        """
        covered = self.coverage > 0
        residual = z - self.inverse_transform(self.transform(z))
        unit_total = torch.empty(self.n_components, dtype=torch.float64, device=self.device)
        projected = torch.empty_like(unit_total)
        for rows, cols, unit_maps, _ in self.parts:
            zu = z[:, cols]
            unit_total[rows] = zu.square().sum()
            norms = torch.linalg.vector_norm(unit_maps, dim=1).clamp_min(1e-300)
            projected[rows] = (zu @ (unit_maps / norms[:, None]).T).square().sum(dim=0)
        return {"total": z[:, covered].square().sum(), "residual": residual[:, covered].square().sum(),
                "unit_total": unit_total, "projected": projected}
