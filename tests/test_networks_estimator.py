"""FunctionalNetworks and NetworkRecurrence as scikit-learn estimators with a fitted space.

scikit-learn's common checks that need no data run as they are. The others
feed 2-D NumPy arrays (samples x features); these estimators take
(token, layer, neuron) activations, so the same contracts are tested below on
such data: fit returns self, parameters are left untouched, fitting is
idempotent, unfitted estimators raise NotFittedError, transform leaves the
estimator unchanged, the input is not modified, a fitted estimator pickles.
"""

import pickle

import nibabel as nib
import numpy as np
import pytest
import torch
import xarray as xr
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import estimator_checks
from sklearn.utils.validation import check_is_fitted

from llmbrain.networks import (KEY_NEURON_THRESHOLD, FunctionalNetworks, NetworkRecurrence,
                               key_neurons, load_networks, network_masks, planted_networks,
                               save_networks)
from llmbrain.volumes import to_volumes

torch.set_num_threads(1)

# scikit-learn's checks that use no data (those present in the installed version)
API_CHECKS = [name for name in (
    "check_estimator_cloneable", "check_estimator_tags_renamed", "check_valid_tag_types",
    "check_estimator_repr", "check_no_attributes_set_in_init",
    "check_do_not_raise_errors_in_init_or_set_params", "check_mixin_order",
    "check_parameters_default_constructible", "check_get_params_invariance",
    "check_set_params") if hasattr(estimator_checks, name)]

ESTIMATORS = [FunctionalNetworks(verbose=0),
              NetworkRecurrence(FunctionalNetworks(3, verbose=0), n_runs=2, verbose=0)]


@pytest.fixture(scope="module")
def data():
    X, _ = planted_networks(n_tokens=800, n_layers=3, n_neurons=32, n_networks=6,
                            network_size=5, within_layer=True, noise=0.5, seed=11)
    return X


@pytest.fixture(scope="module")
def fitted(data):
    return FunctionalNetworks(2, scope="layer", n_init=2, threshold=2.0, verbose=0).fit(data)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("check", API_CHECKS)
def test_sklearn_api_checks(estimator, check):
    getattr(estimator_checks, check)(type(estimator).__name__, estimator)


def test_get_params_deep_clone_and_set_params():
    inner = FunctionalNetworks(5, scope="all", random_state=3, verbose=0)
    rec = NetworkRecurrence(inner, n_runs=3, cutoff=0.7)
    params = rec.get_params(deep=True)
    assert params["estimator"] is inner and params["estimator__n_components"] == 5
    assert params["n_runs"] == 3 and params["estimator__random_state"] == 3
    copy = clone(rec)
    assert copy.estimator is not inner and copy.estimator.get_params() == inner.get_params()
    copy.set_params(estimator__n_components=7, n_runs=2)
    assert copy.estimator.n_components == 7 and inner.n_components == 5
    with pytest.raises(ValueError, match="Invalid parameter"):
        inner.set_params(n_restarts=3)
    with pytest.raises(TypeError, match="estimator must be a FunctionalNetworks"):
        NetworkRecurrence("canica", n_runs=2).fit(planted_networks(n_tokens=100)[0])


def test_fit_contracts(data):
    est = FunctionalNetworks(2, scope="layer", n_init=2, threshold=2.0, verbose=0)
    with pytest.raises(NotFittedError):
        check_is_fitted(est)
    for method, args in (("transform", (data,)), ("score", (data,)),
                         ("inverse_transform", (np.zeros((3, 6)),)),
                         ("set_threshold", (2.0,)), ("summary", ()), ("to_dataset", ())):
        with pytest.raises(NotFittedError, match="not fitted"):
            getattr(est, method)(*args)
    before = repr(est.get_params())
    original = data.copy(deep=True)
    assert est.fit(data) is est
    check_is_fitted(est)
    assert repr(est.get_params()) == before               # parameters untouched
    xr.testing.assert_identical(data, original)           # input untouched
    first = est.transform(data).values
    state = {key: value for key, value in vars(est).items()}
    est.inverse_transform(first)
    est.score(data)
    assert vars(est).keys() == state.keys() and all(vars(est)[k] is state[k] for k in state)
    np.testing.assert_array_equal(est.fit(data).transform(data).values, first)  # idempotent
    unfitted = clone(est)
    assert not hasattr(unfitted, "components_")
    back = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(back.transform(data).values, first)
    rec = NetworkRecurrence(FunctionalNetworks(2, verbose=0), n_runs=2, verbose=0)
    with pytest.raises(NotFittedError):
        rec.summary()
    with pytest.raises(NotFittedError):
        save_networks(rec, "unused")


def test_random_state_none_int_and_randomstate(data):
    def maps(random_state):
        return FunctionalNetworks(2, scope="layer", n_init=3, random_state=random_state,
                                  threshold=2.0, verbose=0).fit(data).fit_info_["units"]

    by_int = maps(5)
    assert by_int == maps(np.random.RandomState(5))      # same seeds, drawn as nilearn does
    expected = np.random.RandomState(5)
    first_unit = [int(expected.randint(np.iinfo(np.int32).max))]   # randomized PCA seed
    first_unit += [int(s) for s in expected.randint(np.iinfo(np.int32).max, size=3)]
    assert by_int[0]["ica_seeds"] == first_unit[1:]
    assert maps(6)[0]["ica_seeds"] != by_int[0]["ica_seeds"]
    assert len(maps(None)[0]["ica_seeds"]) == 3
    with pytest.raises(ValueError, match="cannot be used to seed"):
        FunctionalNetworks(2, random_state="seed", verbose=0).fit(data)


def test_key_neuron_rule_is_strict_and_shared(fitted):
    maps_z = xr.DataArray([[[KEY_NEURON_THRESHOLD, -3.7, 0.0]]],
                          dims=("component", "layer", "neuron"))
    np.testing.assert_array_equal(key_neurons(maps_z).values, [[False, True, False]])
    np.testing.assert_array_equal(network_masks(np.asarray(maps_z), 3.0), [[[True, True, False]]])
    assert FunctionalNetworks().threshold == KEY_NEURON_THRESHOLD
    xr.testing.assert_equal(fitted.network_masks_, network_masks(fitted.maps_z_, fitted.threshold_))
    xr.testing.assert_equal(fitted.key_neurons_, key_neurons(fitted.maps_z_, fitted.threshold_))
    with pytest.raises(ValueError, match="threshold must be a positive number"):
        key_neurons(maps_z, threshold=0)


def test_transform_inverse_transform_and_score(data, fitted):
    tc = fitted.transform(data)
    rebuilt = fitted.inverse_transform(tc)
    assert rebuilt.dims == ("token", "layer", "neuron") and rebuilt.shape == data.shape
    np.testing.assert_array_equal(rebuilt["token_text"].values, data["token_text"].values)
    # score is the explained variance of that reconstruction, in z-scores
    z = (data - fitted.mean_) / fitted.scale_
    z_hat = (rebuilt - fitted.mean_) / fitted.scale_
    expected = 1 - float(((z - z_hat) ** 2).sum() / (z ** 2).sum())
    assert fitted.score(data) == pytest.approx(expected, rel=1e-5)
    # at most, and close to, what the best 2-D subspace of each layer explains (its PCA)
    best = sum((np.linalg.svd(z.values[:, layer], compute_uv=False)[:2] ** 2).sum()
               for layer in range(3)) / float((z ** 2).sum())
    for maps in ("thresholded", "raw"):
        assert 0.9 * best < fitted.score(data, maps=maps) <= best + 1e-9
    # projecting the reconstruction again gives the same time courses (least squares)
    np.testing.assert_allclose(fitted.transform(rebuilt).values, tc.values, atol=1e-3)
    per = fitted.score(data, per_component=True)
    assert per.dims == ("component",) and per.sizes["component"] == 6
    assert np.all((per.values >= 0) & (per.values <= 1)) and per.values.max() > 0.05
    with pytest.raises(ValueError, match="shape"):
        fitted.inverse_transform(np.zeros((4, 5)))


def test_overlapping_windows_average_their_reconstructions(data):
    est = FunctionalNetworks(2, scope="window", window=2, stride=1, n_init=2, threshold=1.5,
                             verbose=0).fit(data)
    assert est.units_ == [[0, 1], [1, 2]]
    tc = est.transform(data, maps="raw").values
    z = est.inverse_transform(tc, maps="raw")
    z = ((z - est.mean_) / est.scale_).values
    maps = est.components_.values
    first, second = tc[:, :2] @ maps[:2, 1], tc[:, 2:] @ maps[2:, 1]
    np.testing.assert_allclose(z[:, 1], (first + second) / 2, atol=1e-4)
    np.testing.assert_allclose(z[:, 0], tc[:, :2] @ maps[:2, 0], atol=1e-4)


def test_fitted_space_of_images(data):
    vols = to_volumes(data)
    # a DataArray fit reads images of its layout
    est = FunctionalNetworks(2, scope="layer", n_init=2, threshold=2.0, verbose=0).fit(data)
    assert est.input_type_ == "activations" and est.layout_ == vols.layout
    np.testing.assert_array_equal(np.asarray(est.mask_img_.dataobj), np.asarray(vols.mask_img.dataobj))
    np.testing.assert_allclose(est.transform(vols.img).values, est.transform(data).values,
                               atol=1e-6)
    # volumes with a subset of layers: the images keep all layers, the unfitted ones empty
    sub = FunctionalNetworks(2, scope="layer", layers=[0, 2], n_init=2, threshold=2.0,
                             verbose=0).fit(vols)
    assert sub.input_type_ == "images" and sub.layers_ == [0, 2]
    img = sub.components_img_
    assert img.shape == vols.img.shape[:3] + (4,)
    volume = np.asarray(img.dataobj)
    assert not volume[:, :, 1].any() and volume[:, :, 0].any() and volume[:, :, 2].any()
    assert sub.transform(vols.img).shape == (800, 4)
    rebuilt = sub.inverse_transform(sub.transform(vols.img))
    assert isinstance(rebuilt, nib.Nifti1Image) and rebuilt.shape == vols.img.shape
    assert np.asarray(sub.mask_img_.dataobj)[:, :, 1].sum() == 0


def _assert_same_fit(a, b, X):
    for name in ("components_", "maps_z_", "network_masks_", "key_neurons_", "mean_", "scale_"):
        xr.testing.assert_identical(getattr(a, name).reset_coords(drop=True),
                                    getattr(b, name).reset_coords(drop=True))
    assert (a.threshold_, a.units_, a.layers_, a.n_tokens_, a.input_type_) == \
        (b.threshold_, b.units_, b.layers_, b.n_tokens_, b.input_type_)
    for name in ("components_img_", "maps_z_img_", "mask_img_"):
        img_a, img_b = getattr(a, name), getattr(b, name)
        assert img_a.shape == img_b.shape
        np.testing.assert_array_equal(np.asarray(img_a.dataobj), np.asarray(img_b.dataobj))
        np.testing.assert_array_equal(img_a.affine, img_b.affine)
    tc = a.transform(X)
    np.testing.assert_array_equal(b.transform(X).values, tc.values)
    assert b.score(X) == a.score(X)
    rebuilt_a, rebuilt_b = a.inverse_transform(tc), b.inverse_transform(tc)
    if isinstance(rebuilt_a, nib.Nifti1Image):
        rebuilt_a, rebuilt_b = np.asarray(rebuilt_a.dataobj), np.asarray(rebuilt_b.dataobj)
    np.testing.assert_array_equal(np.asarray(rebuilt_a), np.asarray(rebuilt_b))


def test_save_load_exact_for_a_store(tmp_path):
    from llmbrain import record
    from llmbrain._testing import byte_tokenizer, tiny_model

    texts = ["The cat sat on the mat. " * 12, "import numpy as np\n" * 12, "1 2 3 4 5 6 " * 20]
    store = tmp_path / "acts.zarr"
    record(tiny_model("llama"), byte_tokenizer(), texts, store, window=64, batch_size=4)
    est = FunctionalNetworks(3, scope="layer", layers=[0, 1], n_init=2, target_count=10,
                             verbose=0).fit(store)
    back = load_networks(save_networks(est, tmp_path / "nets"))
    assert back.get_params() == est.get_params()
    _assert_same_fit(est, back, store)


def test_save_load_exact_for_an_image_and_mask(tmp_path, data):
    vols = to_volumes(data)
    est = FunctionalNetworks(3, scope="all", mask_img=vols.mask_img, n_init=2, threshold=2.0,
                             verbose=0).fit(vols.img)
    assert est.layout_ is None and est.input_type_ == "images"
    assert est.components_img_.shape == vols.img.shape[:3] + (3,)
    back = load_networks(save_networks(est, tmp_path / "nets"))
    np.testing.assert_array_equal(np.asarray(back.mask_img.dataobj),
                                  np.asarray(vols.mask_img.dataobj))
    _assert_same_fit(est, back, vols.img)
    key = nib.load(tmp_path / "nets" / "key_neurons.nii.gz")
    assert key.shape == vols.img.shape[:3]
    np.testing.assert_array_equal(np.asarray(key.dataobj)[np.asarray(vols.mask_img.dataobj) > 0],
                                  est.key_neurons_.values[0])


def test_recurrence_keeps_the_image_space(tmp_path, data):
    vols = to_volumes(data)
    rec = NetworkRecurrence(FunctionalNetworks(3, scope="all", mask_img=vols.mask_img, n_init=2,
                                               threshold=2.0, verbose=0),
                            n_runs=2, cutoff=0.6, verbose=0).fit(vols.img)
    assert all(run.components_img_.shape == vols.img.shape[:3] + (3,) for run in rec.runs_)
    assert rec.runs_[0].transform(vols.img).shape == (800, 3)
    back = load_networks(save_networks(rec, tmp_path / "rec"))
    assert back.get_params()["cutoff"] == 0.6 and back.verbose == 0
    assert back.estimator.get_params()["n_components"] == 3
    _assert_same_fit(rec.runs_[1], back.runs_[1], vols.img)


def test_loads_networks_saved_before_the_parameter_renames(fitted, data):
    import json

    ds = fitted.to_dataset()
    params = json.loads(ds.attrs["params"])
    params["n_restarts"], params["progress"] = params.pop("n_init"), bool(params.pop("verbose"))
    ds.attrs["params"] = json.dumps(params)
    for name in ("input_type", "layout", "mask_img_given"):
        del ds.attrs[name]
    back = FunctionalNetworks.from_dataset(ds)
    assert back.n_init == 2 and back.verbose == 0 and back.layout_ == fitted.layout_
    np.testing.assert_array_equal(back.transform(data).values, fitted.transform(data).values)
