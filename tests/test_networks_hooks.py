"""Several hook points per layer as voxels: (token, hook, layer, neuron) activations."""

import nibabel as nib
import numpy as np
import pytest
import torch
import xarray as xr
from scipy.optimize import linear_sum_assignment

from llmbrain import open_activations, record
from llmbrain.networks import (FunctionalNetworks, NetworkRecurrence, compare_runs,
                               load_networks, planted_networks, save_networks)
from llmbrain.pruning import network_scores

torch.set_num_threads(1)
HOOKS = ("up", "act")


def matched_abs_r(maps, truth):
    a = np.asarray(maps).reshape(len(maps), -1)
    b = np.asarray(truth).reshape(len(truth), -1)
    r = np.abs(np.corrcoef(np.vstack([a, b]))[:len(a), len(a):])
    rows, cols = linear_sum_assignment(-r.T)
    return r.T[rows, cols]


@pytest.fixture(scope="module")
def planted():
    return planted_networks(n_tokens=1500, n_layers=3, n_neurons=32, n_networks=6,
                            network_size=10, within_layer=True, seed=2, hooks=HOOKS)


@pytest.fixture(scope="module")
def fitted(planted):
    X, _ = planted
    return FunctionalNetworks(2, scope="layer", n_init=3, threshold=2.5, verbose=0).fit(X)


def test_planted_networks_span_both_hooks(planted):
    X, truth = planted
    assert X.dims == ("token", "hook", "layer", "neuron") and list(X["hook"].values) == list(HOOKS)
    assert truth.dims == ("network", "hook", "layer", "neuron")
    per_hook = (truth != 0).sum(("layer", "neuron")).values      # (network, hook)
    assert (per_hook > 0).all(), "every planted network has voxels at both hook points"


def test_joint_decomposition_recovers_networks_across_hooks(planted, fitted):
    X, truth = planted
    est = fitted
    assert est.hooks_ == list(HOOKS)
    for name in ("components_", "maps_z_", "network_masks_"):
        assert getattr(est, name).dims == ("component", "hook", "layer", "neuron"), name
        assert list(getattr(est, name)["hook"].values) == list(HOOKS)
    assert est.key_neurons_.dims == ("layer", "neuron")
    assert est.mean_.dims == est.scale_.dims == ("hook", "layer", "neuron")
    np.testing.assert_allclose(est.mean_.values, X.mean("token").values, atol=1e-5)
    np.testing.assert_allclose(est.scale_.values, X.std("token", ddof=1).values, rtol=1e-4)
    # each component's map is z-scored over all voxels (both hooks) of its layer
    for c, unit in enumerate(est.components_["unit"].values):
        z = est.maps_z_.values[c][:, unit]
        np.testing.assert_allclose([z.mean(), z.std()], [0, 1], atol=1e-6)
        assert not est.maps_z_.values[c][:, [u for u in range(3) if u != unit]].any()
    assert matched_abs_r(est.components_.values, truth.values).min() > 0.9
    # a neuron is key when either of its voxels is
    masks = est.network_masks_
    np.testing.assert_array_equal(est.key_neurons_.values,
                                  masks.any(("component", "hook")).values)
    only_one_hook = masks.any("component").values.sum(0) == 1      # (layer, neuron)
    assert only_one_hook.any() and est.key_neurons_.values[only_one_hook].all()
    # target_count counts neurons, not voxels
    est2 = FunctionalNetworks(2, scope="layer", n_init=3, target_count=20, verbose=0).fit(X)
    assert int(est2.key_neurons_.sum()) == 20
    # pruning reads the strongest |z| over networks and hook points
    scores = network_scores(est)
    np.testing.assert_allclose(scores.values, abs(est.maps_z_).max(("component", "hook")).values)


def test_transform_inverse_transform_score(planted, fitted):
    X, _ = planted
    tc = fitted.transform(X, maps="raw")
    assert tc.shape == (1500, 6)
    rebuilt = fitted.inverse_transform(tc, maps="raw")
    assert rebuilt.dims == ("token", "hook", "layer", "neuron")
    assert list(rebuilt["hook"].values) == list(HOOKS)
    # hook order in X does not matter: voxels are matched by name
    swapped = X.isel(hook=[1, 0])
    np.testing.assert_allclose(fitted.transform(swapped, maps="raw").values, tc.values,
                               rtol=1e-5, atol=1e-5)
    score = fitted.score(X, maps="raw")
    assert 0.05 < score < 1
    with pytest.raises(ValueError, match="hook points"):
        fitted.transform(X.sel(hook="up"))
    single = FunctionalNetworks(2, scope="layer", n_init=2, verbose=0).fit(X.sel(hook="up"))
    with pytest.raises(ValueError, match="fitted on one"):
        single.transform(X)


def test_hooks_parameter_selects_hook_points(planted):
    X, _ = planted
    a = FunctionalNetworks(2, scope="layer", n_init=2, hooks="act", verbose=0).fit(X)
    b = FunctionalNetworks(2, scope="layer", n_init=2, verbose=0).fit(X.sel(hook="act"))
    assert a.components_.dims == ("component", "layer", "neuron") and a.hooks_ is None
    np.testing.assert_array_equal(a.components_.values, b.components_.values)
    assert a.source_attrs_["hook"] == "act"
    with pytest.raises(ValueError, match="distinct recorded hook points"):
        FunctionalNetworks(2, hooks=["up", "gate"], verbose=0).fit(X)


def test_images_are_refused_clearly(planted, fitted):
    X, _ = planted
    with pytest.raises(ValueError, match="which one image cannot hold"):
        fitted.components_img_
    with pytest.raises(ValueError, match="backend='torch'"):
        FunctionalNetworks(2, backend="nilearn", verbose=0).fit(X)


def test_save_load_and_recurrence(planted, fitted, tmp_path):
    X, _ = planted
    save_networks(fitted, tmp_path / "nets")
    for name in ("components_up", "components_act", "maps_z_up", "maps_z_act", "key_neurons"):
        assert nib.load(tmp_path / "nets" / f"{name}.nii.gz").shape[:2] == (8, 4)
    back = load_networks(tmp_path / "nets")
    assert back.hooks_ == list(HOOKS)
    xr.testing.assert_identical(back.maps_z_, fitted.maps_z_.astype(back.maps_z_.dtype))
    np.testing.assert_allclose(back.transform(X).values, fitted.transform(X).values, atol=1e-5)

    rec = NetworkRecurrence(FunctionalNetworks(2, scope="layer", n_init=2, threshold=2.5,
                                               verbose=0), n_runs=2, verbose=0).fit(X)
    res = rec.result_
    assert res["consensus"].dims == ("component", "hook", "layer", "neuron")
    assert np.abs(res["match_r"].values[1]).mean() > 0.9       # the networks recur
    assert res["key_neurons_union"].dims == ("layer", "neuron")
    save_networks(rec, tmp_path / "rec")
    assert (tmp_path / "rec" / "consensus_act.nii.gz").is_file()
    assert load_networks(tmp_path / "rec").runs_[1].hooks_ == list(HOOKS)
    # runs of other hook points are not compared
    other = FunctionalNetworks(2, scope="layer", n_init=2, verbose=0).fit(X.sel(hook="up"))
    with pytest.raises(ValueError, match="hook points"):
        compare_runs([rec.runs_[0], other])


@pytest.mark.parametrize("to_store", [True, False], ids=["store", "memory"])
def test_tiny_model_up_and_act(llama, tokenizer, texts, tmp_path, to_store):
    path = tmp_path / "upact.zarr" if to_store else None
    ds = record(llama, tokenizer, texts, path, hook=HOOKS, window=32, batch_size=2,
                progress=False)
    est = FunctionalNetworks(4, scope="layer", n_init=2, verbose=0).fit(path or ds)
    assert est.components_.dims == ("component", "hook", "layer", "neuron")
    assert est.components_.shape == (12, 2, 3, 48)
    assert est.source_attrs_.get("architecture") == "llama"
    assert est.transform(ds).shape == (ds.sizes["token"], 12)
    if to_store:    # one hook point of the store, as open_activations selects it
        act = FunctionalNetworks(4, scope="layer", n_init=2, hooks="act", verbose=0).fit(path)
        ref = FunctionalNetworks(4, scope="layer", n_init=2, verbose=0).fit(
            open_activations(path, hook="act"))
        np.testing.assert_array_equal(act.components_.values, ref.components_.values)
