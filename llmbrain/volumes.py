"""Activations as NIfTI volumes, so that fMRI tools run on them unchanged.

The neurons of one layer are laid out as a 2-D slice (``x``, ``y``), the
layers are stacked along ``z`` and tokens (or components) run along the fourth
axis, like the volumes of an fMRI run. A mask image marks the voxels that are
neurons (a slice may be padded) and a label image gives every voxel the
position of its layer plus one, as an atlas does.

The images invent no anatomy: the affine is the identity, so world
coordinates are voxel indices (``x = neuron // ny``, ``y = neuron % ny``,
``z`` = position of the layer), and the units are "unknown", neither
millimetres nor seconds. (The sform code is nibabel's default, "aligned":
with no code at all, nibabel and nilearn would fall back to a centred,
left-right flipped affine.) View them one slice per layer with
:func:`llmbrain.plotting.plot_layer_slices`, or with nilearn's viewers given
``bg_img=None`` and ``annotate=False`` (no template brain, no left/right
letters).

Neighbouring voxels are unrelated neurons, so nilearn's spatial smoothing
must stay off (``smoothing_fwhm=None`` in maskers and decompositions, its
default only in some of them); so must detrending and other steps made for
the BOLD signal, unless you mean them.

>>> vols = to_volumes(ds.activations)                       # doctest: +SKIP
>>> from nilearn.maskers import NiftiMasker                 # doctest: +SKIP
>>> X = NiftiMasker(vols.mask_img).fit_transform(vols.img)  # doctest: +SKIP
>>> vols.layout.from_masked(X)  # (token, layer, neuron)    # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import xarray as xr

from ._outputs import write_output

__all__ = ["LLMVolumes", "VolumeLayout", "from_volumes", "load_volumes", "save_volumes",
           "to_volumes"]


def _slice_shape(n_neurons: int) -> tuple[int, int]:
    """Most square ``(nx, ny)`` with ``nx * ny == n_neurons`` and an aspect
    ratio of at most 2, else a square-ish grid with padding."""
    for ny in range(int(math.isqrt(n_neurons)), 0, -1):
        if n_neurons % ny == 0:
            nx = n_neurons // ny
            if nx <= 2 * ny:
                return nx, ny
            break
    ny = math.isqrt(n_neurons)
    return math.ceil(n_neurons / ny), ny


@dataclass(frozen=True)
class VolumeLayout:
    """Where each (layer, neuron) sits in the volume.

    Neuron ``j`` of the ``k``-th layer is the voxel ``(j // ny, j % ny, k)``.

    Parameters
    ----------
    layers : tuple of int
        Model layer index of each ``z`` slice.
    neurons : tuple of int
        Neuron indices of a layer, in slice order.
    """

    layers: tuple[int, ...]
    neurons: tuple[int, ...]
    shape: tuple[int, int, int] = field(init=False)

    def __post_init__(self):
        nx, ny = _slice_shape(len(self.neurons))
        object.__setattr__(self, "shape", (nx, ny, len(self.layers)))

    @classmethod
    def from_dataarray(cls, data: xr.DataArray) -> VolumeLayout:
        _check_dims(data)
        return cls(tuple(int(v) for v in data["layer"].values),
                   tuple(int(v) for v in data["neuron"].values))

    @property
    def n_voxels(self) -> int:
        """Number of voxels that are neurons."""
        return len(self.layers) * len(self.neurons)

    @property
    def mask(self) -> np.ndarray:
        """Boolean ``(nx, ny, nz)`` array, True where a voxel is a neuron."""
        flat = np.zeros(self.shape[0] * self.shape[1], dtype=bool)
        flat[:len(self.neurons)] = True
        return np.repeat(flat.reshape(self.shape[:2])[..., None], self.shape[2], axis=2)

    def to_voxels(self, values: np.ndarray) -> np.ndarray:
        """``(..., layer, neuron)`` array -> ``(nx, ny, nz, ...)`` volume."""
        values = np.asarray(values)
        lead = values.shape[:-2]
        if values.shape[-2:] != (len(self.layers), len(self.neurons)):
            raise ValueError(f"Expected (..., {len(self.layers)} layers, {len(self.neurons)} "
                             f"neurons), got shape {values.shape}.")
        nx, ny, nz = self.shape
        padded = np.zeros(lead + (nz, nx * ny), dtype=values.dtype)
        padded[..., :len(self.neurons)] = values
        volume = padded.reshape(lead + (nz, nx, ny))
        return np.moveaxis(volume, (-2, -1, -3), (0, 1, 2))

    def from_voxels(self, volume: np.ndarray) -> np.ndarray:
        """``(nx, ny, nz, ...)`` volume -> ``(..., layer, neuron)`` array."""
        volume = np.asarray(volume)
        if volume.shape[:3] != self.shape:
            raise ValueError(f"Expected a volume of shape {self.shape} (+ more axes), got "
                             f"{volume.shape}: was it made with this layout?")
        nx, ny, nz = self.shape
        lead = volume.shape[3:]
        moved = np.moveaxis(volume, (0, 1, 2), (-2, -1, -3))  # (..., nz, nx, ny)
        return moved.reshape(lead + (nz, nx * ny))[..., :len(self.neurons)]

    def from_masked(self, masked: np.ndarray) -> np.ndarray:
        """Undo a masker: ``(..., n_voxels)`` in nilearn's mask order ->
        ``(..., layer, neuron)``."""
        masked = np.asarray(masked)
        if masked.shape[-1] != self.n_voxels:
            raise ValueError(f"Expected {self.n_voxels} voxels on the last axis, got "
                             f"{masked.shape[-1]}.")
        volume = np.zeros(self.shape + masked.shape[:-1], dtype=masked.dtype)
        volume[self.mask] = np.moveaxis(masked, -1, 0)
        return self.from_voxels(volume)

    def to_dict(self) -> dict:
        return {"layers": list(self.layers), "neurons": list(self.neurons)}


def _check_dims(data: xr.DataArray) -> None:
    if not isinstance(data, xr.DataArray) or data.dims[-2:] != ("layer", "neuron"):
        raise ValueError("Expected an xarray.DataArray whose last two dims are ('layer', "
                         f"'neuron'), got {getattr(data, 'dims', type(data).__name__)}.")
    if data.ndim > 3:
        raise ValueError(f"Expected at most 3 dims (e.g. token, layer, neuron), got {data.dims}.")


@dataclass
class LLMVolumes:
    """A 4-D image with its mask, layer labels and layout.

    Attributes
    ----------
    img : nibabel.Nifti1Image
        ``(nx, ny, n_layers, n_volumes)`` float32 image.
    mask_img : nibabel.Nifti1Image
        1 where a voxel is a neuron.
    labels_img : nibabel.Nifti1Image
        Position of each voxel's layer + 1; 0 outside the mask.
    layout : VolumeLayout
    """

    img: nib.Nifti1Image
    mask_img: nib.Nifti1Image
    labels_img: nib.Nifti1Image
    layout: VolumeLayout

    @property
    def label_names(self) -> list[str]:
        """Name of each label value 1, 2, ...: ``"layer 0"``, ``"layer 1"``, ..."""
        return [f"layer {layer}" for layer in self.layout.layers]


def to_volumes(data: xr.DataArray | xr.Dataset) -> LLMVolumes:
    """View activations (or maps) as NIfTI images.

    Parameters
    ----------
    data : xarray.DataArray or Dataset
        Dims ``(token, layer, neuron)``, ``(component, layer, neuron)`` or
        ``(layer, neuron)``; a Dataset's ``activations`` variable is used.
        Values are converted to float32 (exactly, from float16). Backed by
        dask (a store opened with ``open_activations(path, chunks={})``), the
        image's data stay a dask array: they are read, chunk by chunk and in
        parallel, only when used (``img.get_fdata()``, a masker, saving).

    Returns
    -------
    LLMVolumes

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from llmbrain import to_volumes
    >>> data = xr.DataArray(np.zeros((5, 2, 1536), dtype=np.float16),
    ...                     dims=("token", "layer", "neuron"), coords={"layer": [0, 1]})
    >>> vols = to_volumes(data)
    >>> vols.img.shape                           # 48 x 32 neurons, 2 layers, 5 tokens
    (48, 32, 2, 5)
    >>> vols.img.header.get_xyzt_units()         # no millimetres, no seconds
    ('unknown', 'unknown')
    """
    if isinstance(data, xr.Dataset):
        data = data["activations"]
    layout = VolumeLayout.from_dataarray(data)
    if data.chunks is not None:  # dask-backed: the image stays lazy
        volume = _dask_voxels(layout, data.data.astype(np.float32))
    else:
        volume = layout.to_voxels(np.asarray(data.values, dtype=np.float32))
    affine = np.eye(4)  # world coordinates = voxel indices: no anatomy, no millimetres
    img = nib.Nifti1Image(volume, affine)
    img.header.set_xyzt_units("unknown", "unknown")
    description = (f"llmbrain {data.attrs.get('hook', '')} {data.attrs.get('model', '')}; "
                   "x,y: neuron grid, z: layer")
    img.header["descrip"] = description[:79].encode()
    mask = layout.mask
    labels = np.zeros(layout.shape, dtype=np.int16)
    labels[mask] = (np.broadcast_to(np.arange(1, layout.shape[2] + 1), layout.shape))[mask]
    return LLMVolumes(img=img, mask_img=nib.Nifti1Image(mask.astype(np.uint8), affine),
                      labels_img=nib.Nifti1Image(labels, affine), layout=layout)


def _dask_voxels(layout: VolumeLayout, values):
    """:meth:`VolumeLayout.to_voxels` of a dask array, lazily."""
    import dask.array as da

    nx, ny, nz = layout.shape
    missing = nx * ny - values.shape[-1]
    if missing:
        values = da.concatenate([values, da.zeros(values.shape[:-1] + (missing,),
                                                  dtype=values.dtype)], axis=-1)
    volume = values.rechunk({-1: -1}).reshape(values.shape[:-2] + (nz, nx, ny))
    return da.moveaxis(volume, (-2, -1, -3), (0, 1, 2))


def from_volumes(img, layout: VolumeLayout, *, dim: str = "token",
                 dtype=np.float32) -> xr.DataArray:
    """Read a 3-D or 4-D image made by :func:`to_volumes` back into a
    ``(dim, layer, neuron)`` DataArray (``(layer, neuron)`` for 3-D)."""
    img = nib.load(img) if isinstance(img, (str, os.PathLike)) else img
    values = layout.from_voxels(np.asarray(img.dataobj)).astype(dtype)
    dims = (dim, "layer", "neuron") if values.ndim == 3 else ("layer", "neuron")
    return xr.DataArray(values, dims=dims, coords={"layer": list(layout.layers),
                                                   "neuron": list(layout.neurons)})


def save_volumes(volumes: LLMVolumes, folder) -> Path:
    """Write ``img.nii.gz``, ``mask.nii.gz``, ``labels.nii.gz`` and
    ``layout.json`` into ``folder`` (atomically: the folder appears whole).

    An existing volumes folder is replaced; any other existing folder is
    refused (``FileExistsError``)."""
    with write_output(folder, "volumes", overwrite=True) as tmp:
        nib.save(volumes.img, tmp / "img.nii.gz")
        nib.save(volumes.mask_img, tmp / "mask.nii.gz")
        nib.save(volumes.labels_img, tmp / "labels.nii.gz")
        (tmp / "layout.json").write_text(json.dumps(
            {**volumes.layout.to_dict(), "label_names": volumes.label_names}))
    return Path(folder)


def load_volumes(folder) -> LLMVolumes:
    """Read volumes written by :func:`save_volumes`."""
    folder = Path(folder)
    if not (folder / "layout.json").is_file():
        raise FileNotFoundError(f"{folder} holds no layout.json: it was not written by "
                                "llmbrain.volumes.save_volumes.")
    spec = json.loads((folder / "layout.json").read_text())
    layout = VolumeLayout(tuple(spec["layers"]), tuple(spec["neurons"]))
    return LLMVolumes(img=nib.load(folder / "img.nii.gz"), mask_img=nib.load(folder / "mask.nii.gz"),
                      labels_img=nib.load(folder / "labels.nii.gz"), layout=layout)
