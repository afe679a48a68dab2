"""Save and load fitted networks: a Zarr Dataset plus NIfTI images.

A networks folder holds::

    networks.zarr/        components, maps_z, network_masks, key_neurons,
                          mean, scale (and the mask of a bare-mask image fit),
                          in the estimator's own dtypes, with all attributes
    components.nii.gz     raw maps, one volume per component
    maps_z.nii.gz         z-scored maps
    key_neurons.nii.gz    1 where a neuron is key
    kind.json             what was saved

Networks of several hook points have one image of maps per hook point
(``components_up.nii.gz``, ``maps_z_act.nii.gz``, ...); the key neurons are
one image (a neuron is key when any of its voxels is).

A recurrence folder holds ``recurrence.zarr`` (the :func:`compare_runs`
result and the recurrence parameters), ``consensus.nii.gz`` and one networks
folder per run
(``run-0``, ``run-1``, ...). Folders are written to a temporary sibling and
renamed into place, so a folder is never half written.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import xarray as xr
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted

from .._outputs import write_output
from ..volumes import to_volumes
from .decomposition import FunctionalNetworks
from .recurrence import NetworkRecurrence

__all__ = ["load_networks", "save_networks"]

_KIND = "kind.json"


def _float32(ds: xr.Dataset) -> xr.Dataset:
    return ds.map(lambda v: v.astype(np.float32) if v.dtype.kind == "f" else v)


def _per_hook(maps: xr.DataArray):
    """``(suffix, maps)`` of each hook point (one with no suffix without a hook dim)."""
    if "hook" not in maps.dims:
        return [("", maps)]
    return [(f"_{hook}", maps.sel(hook=hook)) for hook in maps["hook"].values]


def _write_networks(est: FunctionalNetworks, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    est.to_dataset().to_zarr(folder / "networks.zarr", mode="w", consolidated=False)
    for name in ("components", "maps_z"):
        for suffix, maps in _per_hook(getattr(est, f"{name}_")):
            nib.save(est._to_img(maps.values), folder / f"{name}{suffix}.nii.gz")
    key = est._to_img(est.key_neurons_.values[None])          # in the fitted image space
    nib.save(nib.Nifti1Image(np.asarray(key.dataobj)[..., 0], key.affine),
             folder / "key_neurons.nii.gz")
    (folder / _KIND).write_text(json.dumps({"kind": "networks"}))


def _write_recurrence(result: xr.Dataset, runs, folder: Path, params: dict | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    result = _float32(result)
    if params is not None:
        result.attrs["recurrence_params"] = json.dumps(params)
    result.to_zarr(folder / "recurrence.zarr", mode="w", consolidated=False)
    for suffix, maps in _per_hook(result["consensus"]):
        nib.save(to_volumes(maps).img, folder / f"consensus{suffix}.nii.gz")
    for i, run in enumerate(runs):
        _write_networks(run, folder / f"run-{i}")
    (folder / _KIND).write_text(json.dumps({"kind": "recurrence", "n_runs": len(runs)}))


def save_networks(networks, folder) -> Path:
    """Write fitted networks (or a recurrence analysis) to ``folder``, atomically.

    Parameters
    ----------
    networks : FunctionalNetworks, NetworkRecurrence or xarray.Dataset
        A fitted estimator, or the Dataset returned by :func:`compare_runs`.
    folder : str or path
        Replaced if it holds networks saved before; any other existing
        folder is refused (``FileExistsError``).

    Returns
    -------
    pathlib.Path
        The folder.
    """
    folder = Path(folder).expanduser()
    if isinstance(networks, FunctionalNetworks):
        check_is_fitted(networks)
        write = lambda tmp: _write_networks(networks, tmp)  # noqa: E731
    elif isinstance(networks, NetworkRecurrence):
        check_is_fitted(networks)
        params = networks.get_params(deep=False)
        params.pop("estimator")    # each run's parameters are saved with the run
        write = lambda tmp: _write_recurrence(networks.result_, networks.runs_, tmp,  # noqa: E731
                                              params)
    elif isinstance(networks, xr.Dataset) and "consensus" in networks:
        write = lambda tmp: _write_recurrence(networks, [], tmp)  # noqa: E731
    else:
        raise TypeError("save_networks expects a fitted FunctionalNetworks, a fitted "
                        "NetworkRecurrence or a compare_runs result, got "
                        f"{type(networks).__name__}.")
    with write_output(folder, "networks", overwrite=True) as tmp:
        write(tmp)
    return folder


def _read_networks(folder: Path) -> FunctionalNetworks:
    ds = xr.open_zarr(folder / "networks.zarr", consolidated=False).load()
    return FunctionalNetworks.from_dataset(ds)


def load_networks(folder):
    """Read what :func:`save_networks` wrote.

    Returns
    -------
    FunctionalNetworks or NetworkRecurrence or xarray.Dataset
        A fitted estimator (``transform`` works), a fitted recurrence analysis
        with its runs, or the bare :func:`compare_runs` Dataset if no run was saved.
    """
    folder = Path(folder).expanduser()
    kind_file = folder / _KIND
    if not kind_file.is_file():
        raise FileNotFoundError(f"{folder} holds no {_KIND}: it was not written by "
                                "llmbrain.networks.save_networks.")
    kind = json.loads(kind_file.read_text())
    if kind["kind"] == "networks":
        return _read_networks(folder)
    result = xr.open_zarr(folder / "recurrence.zarr", consolidated=False).load()
    for name in ("key_neurons_union", "key_neurons_majority"):
        result[name] = result[name].astype(bool)
    if kind.get("n_runs", 0) == 0:
        return result
    runs = [_read_networks(folder / f"run-{i}") for i in range(kind["n_runs"])]
    params = json.loads(result.attrs.pop("recurrence_params", "{}")) or {
        "n_runs": kind["n_runs"], "cutoff": float(result.attrs["cutoff"]),
        "reference": int(result.attrs["reference"])}
    rec = NetworkRecurrence(clone(runs[0]), **params)
    rec.runs_ = runs
    rec.result_ = result
    rec.key_neurons_union_ = result["key_neurons_union"]
    rec.key_neurons_majority_ = result["key_neurons_majority"]
    rec.recurrence_ = result["recurrence"]
    return rec
