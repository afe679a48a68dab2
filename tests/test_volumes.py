import warnings

import nibabel as nib
import numpy as np
import pytest
import xarray as xr

from llmbrain import from_volumes, open_activations, to_volumes
from llmbrain.volumes import VolumeLayout, load_volumes, save_volumes


def test_store_to_nifti_to_store_is_exact(tiny_store, tmp_path):
    data = open_activations(tiny_store)["activations"]
    volumes = to_volumes(data)
    assert volumes.img.shape == (*volumes.layout.shape, data.sizes["token"])
    assert volumes.layout.shape[2] == 3
    folder = save_volumes(volumes, tmp_path / "vols")
    loaded = load_volumes(folder)
    back = from_volumes(loaded.img, loaded.layout)
    np.testing.assert_array_equal(back.values.astype(np.float16), data.values)
    assert back["layer"].values.tolist() == data["layer"].values.tolist()


def test_mask_and_labels():
    layout = VolumeLayout(layers=(4, 7), neurons=tuple(range(37)))
    data = xr.DataArray(np.ones((5, 2, 37)), dims=("token", "layer", "neuron"),
                        coords={"layer": [4, 7], "neuron": np.arange(37)})
    volumes = to_volumes(data)
    assert volumes.layout == layout
    mask = volumes.mask_img.get_fdata().astype(bool)
    assert mask.sum() == 2 * 37  # padded voxels are outside the mask
    labels = volumes.labels_img.get_fdata()
    assert set(np.unique(labels[mask])) == {1, 2} and (labels[~mask] == 0).all()
    assert volumes.label_names == ["layer 4", "layer 7"]
    assert (volumes.img.get_fdata()[~mask] == 0).all()


def test_nilearn_masker_order_maps_back(tiny_store):
    from nilearn.maskers import NiftiMasker

    data = open_activations(tiny_store)["activations"].isel(token=slice(0, 64))
    volumes = to_volumes(data)
    masked = NiftiMasker(volumes.mask_img, standardize=None).fit_transform(volumes.img)
    assert masked.shape == (64, 3 * 48)
    np.testing.assert_array_equal(volumes.layout.from_masked(masked).astype(np.float16),
                                  data.values)


def test_nilearn_canica_runs_on_llm_volumes(tiny_store):
    from nilearn.decomposition import CanICA

    data = open_activations(tiny_store)["activations"]
    volumes = to_volumes(data)
    canica = CanICA(n_components=3, mask=volumes.mask_img, smoothing_fwhm=None,
                    standardize="zscore_sample", detrend=False, random_state=0, n_init=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        canica.fit(volumes.img)
    maps = volumes.layout.from_masked(canica.components_)
    assert maps.shape == (3, 3, 48)
    assert np.isfinite(maps).all() and np.abs(maps).max() > 0
    assert canica.components_img_.shape == (*volumes.layout.shape, 3)


def test_wrong_inputs_are_refused():
    layout = VolumeLayout(layers=(0,), neurons=tuple(range(6)))
    with pytest.raises(ValueError, match="layer', 'neuron"):
        to_volumes(xr.DataArray(np.zeros((2, 3)), dims=("a", "b")))
    with pytest.raises(ValueError, match="this layout"):
        layout.from_voxels(np.zeros((5, 5, 1)))
    with pytest.raises(ValueError, match="voxels"):
        layout.from_masked(np.zeros((2, 5)))
    with pytest.raises(FileNotFoundError, match="layout.json"):
        load_volumes("/nonexistent-folder")
    img = nib.Nifti1Image(np.zeros((3, 2, 1, 4), dtype=np.float32), np.eye(4))
    assert from_volumes(img, layout).shape == (4, 1, 6)


def test_images_invent_no_anatomy(tmp_path):
    """Identity affine (world = voxel indices, layer k at z = k), no units, kept on disk."""
    data = xr.DataArray(np.arange(2 * 3 * 12, dtype=np.float32).reshape(2, 3, 12),
                        dims=("token", "layer", "neuron"), coords={"layer": [3, 5, 8]})
    volumes = to_volumes(data)
    for img in (volumes.img, volumes.mask_img, volumes.labels_img):
        np.testing.assert_array_equal(img.affine, np.eye(4))
    assert volumes.img.header.get_xyzt_units() == ("unknown", "unknown")
    assert b"z: layer" in volumes.img.header["descrip"].tobytes()
    loaded = load_volumes(save_volumes(volumes, tmp_path / "v"))
    np.testing.assert_array_equal(loaded.img.affine, np.eye(4))  # not nibabel's flipped fallback
    assert loaded.img.header.get_xyzt_units() == ("unknown", "unknown")
    nx, ny, _ = volumes.layout.shape
    # neuron 7 of the second layer (model layer 5) sits at voxel (7 // ny, 7 % ny, 1)
    assert loaded.img.get_fdata()[7 // ny, 7 % ny, 1, 1] == data.sel(layer=5)[1, 7]
