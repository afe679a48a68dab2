"""Inputs of the network estimators: stores, xarray objects or NIfTI images.

Everything is turned into an :class:`ActivationSource`, a lazily read
``(token, layer, neuron)`` DataArray plus what is needed to map maps back to
images. Activations of several hook points recorded together are
``(token, hook, layer, neuron)``: the voxels of a layer are then all its
(hook, neuron) pairs. Token groups ("subjects" in fMRI terms) are contiguous
blocks of tokens, or the images of a list of images.

NumPy-, Zarr- and dask-backed DataArrays are all read the same way: a block
of tokens of one (hook, layer) at a time, so nothing larger is ever loaded.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import xarray as xr

from ..volumes import LLMVolumes, VolumeLayout

__all__ = ["ActivationSource", "as_source", "plan_groups", "plan_units"]

TOKEN_COORDS = ("document", "position", "token_id", "token_text")


@dataclass
class ActivationSource:
    """A ``(token, [hook,] layer, neuron)`` DataArray, possibly backed by a Zarr
    store or dask.

    Attributes
    ----------
    data : xarray.DataArray
        Dims (token, layer, neuron), or (token, hook, layer, neuron) for
        several hook points; values read on demand.
    boundaries : list of int or None
        Token offsets separating images when the input was a list of images.
    mask_img : nibabel.Nifti1Image or None
        For image inputs without a layout: the mask whose voxels are the
        neurons of the single pseudo-layer 0.
    layout : VolumeLayout or None
        For image inputs with a layout: the layout of the images (all their
        layers, also those not selected).
    from_images : bool
        Whether the input was NIfTI images.
    attrs : dict
        Attributes of the recording (model, hook, ...).
    """

    data: xr.DataArray
    boundaries: list[int] | None = None
    mask_img: nib.Nifti1Image | None = None
    layout: VolumeLayout | None = None
    from_images: bool = False
    attrs: dict = field(default_factory=dict)

    def isel_tokens(self, tokens: slice) -> ActivationSource:
        """The same source restricted to a block of tokens (images are not split)."""
        return dataclasses.replace(self, data=self.data.isel(token=tokens), boundaries=None)

    @property
    def n_tokens(self) -> int:
        return int(self.data.sizes["token"])

    @property
    def layers(self) -> list[int]:
        return [int(v) for v in self.data["layer"].values]

    @property
    def n_neurons(self) -> int:
        return int(self.data.sizes["neuron"])

    @property
    def hooks(self) -> list[str] | None:
        """Names of the hook points (None for activations without a hook dim)."""
        if "hook" not in self.data.dims:
            return None
        return [str(v) for v in self.data["hook"].values]

    @property
    def n_hooks(self) -> int:
        return int(self.data.sizes.get("hook", 1))

    def read(self, tokens: slice, layer_positions) -> np.ndarray:
        """Tokens × (hooks · layers · neurons) array of a block of tokens, in its
        stored floating dtype (float16 stays float16: convert on the device).

        The features are ordered hook by hook, then layer by layer
        (``reshape(n_tokens, n_hooks, n_layers, n_neurons)`` gives them back).
        """
        layer_positions = list(layer_positions)
        block = self.data.isel(token=tokens)
        dtype = block.dtype if block.dtype.kind == "f" and block.dtype.itemsize <= 4 \
            else np.dtype(np.float32)
        out = np.empty((block.sizes["token"], self.n_hooks, len(layer_positions),
                        self.n_neurons), dtype=dtype)
        # one (hook, layer) at a time: a storage chunk holds one layer of one
        # hook, so at most one layer's chunks are being decoded at any moment
        for h in range(self.n_hooks):
            part = block.isel(hook=h) if "hook" in block.dims else block
            for j, pos in enumerate(layer_positions):
                out[:, h, j] = np.asarray(part.isel(layer=pos).values)
        return out.reshape(out.shape[0], -1)

    def token_coords(self, tokens: slice | None = None) -> dict:
        """The per-token coordinates (document, position, token_id, token_text)."""
        data = self.data if tokens is None else self.data.isel(token=tokens)
        return {name: ("token", np.asarray(data[name].values)) for name in TOKEN_COORDS
                if name in data.coords}


def _from_images(imgs, mask_img, layout: VolumeLayout | None) -> ActivationSource:
    if isinstance(imgs, (str, Path)) or isinstance(imgs, nib.spatialimages.SpatialImage):
        imgs = [imgs]
    imgs = [nib.load(img) if isinstance(img, (str, Path)) else img for img in imgs]
    arrays = []
    for img in imgs:
        if img.ndim != 4:
            raise ValueError(f"Expected 4-D images (x, y, z, token), got shape {img.shape}.")
        arrays.append(np.asarray(img.dataobj, dtype=np.float32))
    shape = arrays[0].shape[:3]
    if any(a.shape[:3] != shape for a in arrays):
        raise ValueError("All images must have the same spatial shape; got "
                         f"{[a.shape[:3] for a in arrays]}.")
    boundaries = list(np.cumsum([0] + [a.shape[3] for a in arrays]))
    if layout is not None:
        values = np.concatenate([layout.from_voxels(a) for a in arrays])
        data = xr.DataArray(values, dims=("token", "layer", "neuron"),
                            coords={"layer": list(layout.layers), "neuron": list(layout.neurons)})
        return ActivationSource(data, boundaries=boundaries, layout=layout, from_images=True)
    if mask_img is None:
        raise ValueError("Images need a mask: pass mask_img=... (e.g. LLMVolumes.mask_img) or "
                         "layout=..., or pass the LLMVolumes object itself.")
    mask_img = nib.load(mask_img) if isinstance(mask_img, (str, Path)) else mask_img
    mask = np.asarray(mask_img.dataobj) != 0
    if mask.shape != shape:
        raise ValueError(f"The mask's shape {mask.shape} differs from the images' {shape}.")
    if not mask.any():
        raise ValueError("The mask selects no voxel.")
    values = np.concatenate([a[mask].T for a in arrays])[:, None, :]
    data = xr.DataArray(values, dims=("token", "layer", "neuron"),
                        coords={"layer": [0], "neuron": np.arange(int(mask.sum()))})
    return ActivationSource(data, boundaries=boundaries, mask_img=mask_img, from_images=True)


def as_source(X, *, mask_img=None, layout: VolumeLayout | None = None,
              layers=None, hooks=None) -> ActivationSource:
    """Turn any supported input into an :class:`ActivationSource`.

    Parameters
    ----------
    X : path, xarray.Dataset, xarray.DataArray, LLMVolumes, Nifti1Image, list of images \
        or ActivationSource
        A store written by :func:`llmbrain.record` (opened lazily), activations
        with dims (token, layer, neuron) or (token, hook, layer, neuron), or
        4-D images. An ActivationSource is passed through (``mask_img`` and
        ``layout`` are then ignored).
    mask_img, layout : optional
        For images: the mask (voxels to use) or the layout that made them.
    layers : list of int, optional
        Model layers to keep; all by default.
    hooks : str or list of str, optional
        Hook points to keep, in this order; all recorded ones by default. A
        single hook point (recorded alone or selected) gives
        (token, layer, neuron) activations.
    """
    attrs: dict = {}
    if isinstance(X, ActivationSource):
        source = dataclasses.replace(X)
    elif isinstance(X, LLMVolumes):
        source = _from_images([X.img], None, X.layout)
    elif isinstance(X, (str, Path)) and Path(X).is_dir():
        from ..recording import open_activations

        ds = open_activations(X)
        attrs = dict(ds.attrs)
        source = ActivationSource(ds["activations"])
    elif isinstance(X, (str, Path)):
        if not Path(X).exists():
            raise FileNotFoundError(f"No activation store or image at {X}.")
        source = _from_images([X], mask_img, layout)
    elif isinstance(X, xr.Dataset):
        if "activations" not in X:
            raise ValueError("The Dataset has no 'activations' variable; pass the DataArray "
                             f"to use (variables: {list(X.data_vars)}).")
        attrs = dict(X.attrs)
        source = ActivationSource(X["activations"])
    elif isinstance(X, xr.DataArray):
        source = ActivationSource(X)
    elif isinstance(X, nib.spatialimages.SpatialImage) or (
            isinstance(X, (list, tuple)) and X and all(
                isinstance(x, (nib.spatialimages.SpatialImage, str, Path)) for x in X)):
        source = _from_images(X, mask_img, layout)
    else:
        raise TypeError("Expected an activation store path, an xarray Dataset/DataArray with dims "
                        "(token, [hook,] layer, neuron), LLMVolumes, or 4-D NIfTI image(s); got "
                        f"{type(X).__name__}.")
    data = source.data
    for dims in (("token", "layer", "neuron"), ("token", "hook", "layer", "neuron")):
        if set(data.dims) == set(dims):
            data = data.transpose(*dims)
    if data.dims not in (("token", "layer", "neuron"), ("token", "hook", "layer", "neuron")):
        raise ValueError("Activations must have dims ('token', 'layer', 'neuron'), or "
                         f"('token', 'hook', 'layer', 'neuron') for several hook points; got "
                         f"{data.dims}.")
    for dim in ("layer", "neuron"):
        if dim not in data.coords:
            data = data.assign_coords({dim: np.arange(data.sizes[dim])})
    data = _select_hooks(data, hooks, attrs)
    if layers is not None:
        wanted = [int(v) for v in np.atleast_1d(layers)]
        present = [int(v) for v in data["layer"].values]
        missing = [v for v in wanted if v not in present]
        if missing:
            raise ValueError(f"Layer(s) {missing} are not in the activations, which hold layers "
                             f"{present}: record them, or choose among the layers present.")
        data = data.sel(layer=wanted)
    source.data = data
    source.attrs = {**attrs, **source.attrs}
    return source


def _select_hooks(data: xr.DataArray, hooks, attrs: dict) -> xr.DataArray:
    """Keep the hook points ``hooks`` (all by default); one hook point drops the dim."""
    recorded = ([str(v) for v in data["hook"].values] if "hook" in data.coords else
                [str(v) for v in range(data.sizes["hook"])]) if "hook" in data.dims else \
        [str(attrs.get("hook", data.attrs.get("hook", "mlp")))]
    if hooks is not None:
        wanted = [hooks] if isinstance(hooks, str) else [str(h) for h in hooks]
        missing = [h for h in wanted if h not in recorded]
        if missing or not wanted or len(set(wanted)) != len(wanted):
            raise ValueError(f"hooks={list(wanted)} must name distinct recorded hook points; "
                             f"the activations hold {recorded}.")
        if "hook" in data.dims:
            data = data.isel(hook=[recorded.index(h) for h in wanted])
    if "hook" not in data.dims:
        return data
    if "hook" not in data.coords:
        data = data.assign_coords(hook=recorded)
    if data.sizes["hook"] == 1:
        name = str(data["hook"].values[0])
        data = data.isel(hook=0, drop=True)
        data.attrs = {**data.attrs, "hook": name}
        attrs["hook"] = name
        attrs.pop("hooks", None)
    return data


def plan_units(layers: list[int], scope: str, window: int | None, stride: int | None
               ) -> list[list[int]]:
    """Positions of the layers decomposed together, one list per unit."""
    n = len(layers)
    if scope == "all":
        return [list(range(n))]
    if scope == "layer":
        return [[i] for i in range(n)]
    if scope == "window":
        if window is None or int(window) < 1:
            raise ValueError("scope='window' needs window=<number of layers> (at least 1).")
        window = min(int(window), n)
        stride = window if stride is None else int(stride)
        if stride < 1:
            raise ValueError(f"stride must be at least 1, got {stride}.")
        starts = list(range(0, n - window + 1, stride))
        if starts[-1] + window < n:
            starts.append(n - window)
        return [list(range(s, s + window)) for s in starts]
    raise ValueError(f"Unknown scope={scope!r}; use 'layer', 'all' or 'window'.")


def plan_groups(n_tokens: int, n_groups: int, max_group_tokens: int | None,
                boundaries: list[int] | None = None) -> list[slice]:
    """Contiguous token blocks: ``n_groups`` (or the images), each split further
    so that no block exceeds ``max_group_tokens``."""
    if boundaries is not None:
        edges = [int(b) for b in boundaries]
    else:
        n_groups = max(1, min(int(n_groups), n_tokens))
        edges = [round(i * n_tokens / n_groups) for i in range(n_groups + 1)]
    groups = []
    for a, b in zip(edges[:-1], edges[1:]):
        if b <= a:
            continue
        parts = 1 if not max_group_tokens else math.ceil((b - a) / max_group_tokens)
        for i in range(parts):
            groups.append(slice(a + round(i * (b - a) / parts), a + round((i + 1) * (b - a) / parts)))
    return groups

