"""Stores open as dask arrays, and the analyses that read stores take them lazily."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from llmbrain import open_activations, to_volumes
from llmbrain.pruning import STATISTICS, calibration_stats_from_activations

dask = pytest.importorskip("dask")


@pytest.fixture(autouse=True)
def _threads():
    with dask.config.set(scheduler="threads", num_workers=2):
        yield


@pytest.fixture(scope="module")
def lazy(tiny_store):
    return open_activations(tiny_store, chunks={})


@pytest.mark.filterwarnings("ignore:The specified chunks separate:UserWarning")  # coordinates
def test_store_opens_with_dask_chunks(tiny_store, lazy):
    data = lazy["activations"]
    assert isinstance(data.data, dask.array.Array)
    assert data.chunks == ((64,) * 7 + (32,), (1, 1, 1), (48,))  # the store's own chunks
    eager = open_activations(tiny_store)["activations"].values
    np.testing.assert_array_equal(data.values, eager)
    tokens = open_activations(tiny_store, chunks={"token": 128, "layer": -1})["activations"]
    assert tokens.chunks[:2] == ((128,) * 3 + (96,), (3,))
    mean = data.astype(np.float64).mean("token")
    assert isinstance(mean.data, dask.array.Array)  # nothing is read yet
    np.testing.assert_allclose(mean.values, eager.astype(np.float64).mean(0))


@pytest.mark.filterwarnings("ignore:Object at:UserWarning")
def test_backend_opens_with_dask_chunks(tiny_store):
    from xarray.backends.plugins import list_engines

    if "llmbrain" not in list_engines():
        pytest.skip("the llmbrain xarray entry point is not installed here")
    ds = xr.open_dataset(tiny_store, engine="llmbrain", chunks={})
    assert isinstance(ds["activations"].data, dask.array.Array)
    np.testing.assert_array_equal(ds["activations"].values,
                                  open_activations(tiny_store)["activations"].values)


def test_calibration_statistics_from_a_dask_store(tiny_store, lazy):
    eager = calibration_stats_from_activations(open_activations(tiny_store), batch_tokens=100)
    stats = calibration_stats_from_activations(lazy)
    assert stats.attrs["n_tokens"] == eager.attrs["n_tokens"]
    for name in STATISTICS:
        np.testing.assert_allclose(stats[name].values, eager[name].values, rtol=1e-10,
                                   atol=1e-12)


def test_volumes_of_a_dask_store_stay_lazy(tiny_store, lazy):
    part = lazy["activations"].isel(token=slice(0, 100), neuron=slice(0, 45))  # slices padded
    vols = to_volumes(part)
    assert isinstance(vols.img.dataobj, dask.array.Array)
    eager = to_volumes(open_activations(tiny_store)["activations"].isel(
        token=slice(0, 100), neuron=slice(0, 45)))
    assert vols.img.shape == eager.img.shape and vols.layout == eager.layout
    np.testing.assert_array_equal(vols.img.get_fdata(), eager.img.get_fdata())
    np.testing.assert_array_equal(vols.mask_img.get_fdata(), eager.mask_img.get_fdata())


def test_without_dask_the_error_says_what_to_install(tiny_store, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "dask.array", None)
    with pytest.raises(ImportError, match=r"llmbrain\[dask\]"):
        open_activations(tiny_store, chunks={})
