"""Recurrence across runs, save/load, and the ``llmbrain networks`` command."""

import os

import nibabel as nib
import numpy as np
import pytest
import torch
import xarray as xr

from llmbrain.networks import (FunctionalNetworks, NetworkRecurrence, compare_runs,
                               load_networks, match_components, planted_networks, save_networks)
from llmbrain.networks.recurrence import split_tokens

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def planted():
    return planted_networks(n_tokens=2400, n_layers=3, n_neurons=64, n_networks=6,
                            network_size=10, within_layer=True, seed=7)


@pytest.fixture(scope="module")
def fitted(planted):
    X, _ = planted
    return FunctionalNetworks(2, scope="layer", verbose=0, target_count=30).fit(X)


def _permuted(ds: xr.Dataset, order, signs) -> xr.Dataset:
    out = ds.copy(deep=True)
    for name in ("components", "maps_z", "network_masks"):
        values = ds[name].values[order]
        if name != "network_masks":
            values = values * np.asarray(signs)[:, None, None]
        out[name] = (ds[name].dims, values)
    return out


def test_matching_recovers_a_known_permutation(fitted):
    ds = fitted.to_dataset()
    # permute within units (layer scope): unit 0 = comps 0,1; unit 1 = 2,3; unit 2 = 4,5
    order = [1, 0, 2, 3, 5, 4]
    signs = [1, -1, -1, 1, 1, -1]
    shuffled = _permuted(ds, order, signs)
    match, r = match_components(ds["maps_z"], shuffled["maps_z"])
    np.testing.assert_array_equal(shuffled["maps_z"].values[match], ds["maps_z"].values
                                  * np.asarray(signs)[np.argsort(order)][:, None, None])
    np.testing.assert_allclose(np.abs(r), 1, atol=1e-5)
    assert list(np.sign(r)) == [signs[list(order).index(i)] for i in range(6)]
    result = compare_runs([fitted, shuffled], cutoff=0.9)
    np.testing.assert_array_equal(result["match"].values[1], match)
    np.testing.assert_allclose(result["recurrence"].values, 1)
    # sign-aligned consensus of identical maps is the map itself
    np.testing.assert_allclose(result["consensus"].values, ds["maps_z"].values, atol=1e-5)
    np.testing.assert_array_equal(result["key_neurons_union"].values, ds["key_neurons"].values)


def test_recurrence_on_disjoint_runs(planted):
    X, truth = planted
    rec = NetworkRecurrence(FunctionalNetworks(2, scope="layer", verbose=0, target_count=30),
                            n_runs=3, verbose=0).fit(X)
    res = rec.result_
    assert res.sizes["run"] == 3 and res.sizes["component"] == 6
    assert np.all(res["recurrence"].values == 1)
    assert np.abs(res["match_r"].values).min() > 0.9
    assert np.nanmean(res["mask_iou"].values) > 0.5
    union, majority = res["key_neurons_union"], res["key_neurons_majority"]
    assert bool((majority <= union).all()) and int(union.sum()) >= int(majority.sum()) > 0
    votes = res["key_neurons_votes"].values
    np.testing.assert_array_equal(majority.values, votes >= 2)
    # the runs saw disjoint tokens
    sizes = [run.n_tokens_ for run in rec.runs_]
    assert sum(sizes) == 2400
    assert "key neurons: union" in rec.summary()


def test_majority_differs_from_union():
    a = xr.Dataset({"maps_z": (("component", "layer", "neuron"), np.eye(4)[None, :, :]),
                    "network_masks": (("component", "layer", "neuron"), np.eye(4, dtype=bool)[None]),
                    "key_neurons": (("layer", "neuron"), np.eye(4, dtype=bool))},
                   coords={"layer": range(4), "neuron": range(4)})
    b = a.copy(deep=True)
    b["key_neurons"] = (("layer", "neuron"), np.zeros((4, 4), bool))
    res = compare_runs([a, b, a.copy(deep=True)])
    np.testing.assert_array_equal(res["key_neurons_majority"].values, np.eye(4, dtype=bool))
    b["key_neurons"] = (("layer", "neuron"), np.ones((4, 4), bool))
    res = compare_runs([a, b, b.copy(deep=True)])
    assert res["key_neurons_majority"].values.all() and res["key_neurons_union"].values.all()


def test_split_tokens_respects_documents():
    documents = np.repeat(np.arange(10), 10)
    blocks = split_tokens(100, 3, documents)
    assert [b.start for b in blocks] == [0, 30, 70] or all(b.start % 10 == 0 for b in blocks)
    assert blocks[-1].stop == 100
    with pytest.raises(ValueError, match="n_runs"):
        split_tokens(5, 6)


def test_compare_runs_errors(fitted, planted):
    with pytest.raises(ValueError, match="at least 2 runs"):
        compare_runs([fitted])
    other = FunctionalNetworks(2, scope="layer", layers=[0, 1], verbose=0,
                               target_count=10).fit(planted[0])
    with pytest.raises(ValueError, match="other layers"):
        compare_runs([fitted, other])
    with pytest.raises(TypeError, match="fitted FunctionalNetworks"):
        compare_runs([fitted, "nope"])
    with pytest.raises(ValueError, match="n_runs must be"):
        NetworkRecurrence(FunctionalNetworks(2), n_runs=1).fit(planted[0])


def test_save_load_round_trip(tmp_path, fitted, planted):
    X, _ = planted
    folder = save_networks(fitted, tmp_path / "nets")
    assert {"networks.zarr", "components.nii.gz", "maps_z.nii.gz", "key_neurons.nii.gz",
            "kind.json"} <= set(os.listdir(folder))
    back = load_networks(folder)
    for name in ("components_", "maps_z_", "network_masks_", "key_neurons_"):
        xr.testing.assert_allclose(getattr(back, name), getattr(fitted, name).astype(
            getattr(back, name).dtype))
    assert back.threshold_ == pytest.approx(fitted.threshold_, rel=1e-6)
    assert back.units_ == fitted.units_ and back.get_params() == fitted.get_params()
    np.testing.assert_allclose(back.transform(X).values, fitted.transform(X).values,
                               rtol=1e-4, atol=1e-4)
    img = nib.load(folder / "maps_z.nii.gz")
    assert img.shape[-1] == 6
    # overwriting is atomic and leaves no temporary folder behind
    save_networks(fitted, folder)
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []
    with pytest.raises(FileNotFoundError, match="save_networks"):
        load_networks(tmp_path)
    with pytest.raises(TypeError, match="save_networks expects"):
        save_networks("nothing", tmp_path / "x")


def test_save_load_recurrence(tmp_path, planted):
    X, _ = planted
    rec = NetworkRecurrence(FunctionalNetworks(2, scope="layer", verbose=0, target_count=20),
                            n_runs=2, verbose=0).fit(X)
    back = load_networks(save_networks(rec, tmp_path / "rec"))
    assert isinstance(back, NetworkRecurrence) and len(back.runs_) == 2
    np.testing.assert_array_equal(back.key_neurons_union_.values, rec.key_neurons_union_.values)
    np.testing.assert_allclose(back.result_["match_r"].values, rec.result_["match_r"].values)
    bare = load_networks(save_networks(rec.result_, tmp_path / "bare"))
    assert isinstance(bare, xr.Dataset) and "consensus" in bare


def test_cli_networks(tmp_path, capsys):
    from llmbrain import record
    from llmbrain._testing import byte_tokenizer, tiny_model
    from llmbrain.cli import main

    texts = ["The cat sat on the mat. " * 10, "for i in range(3):\n    print(i)\n" * 6,
             "1 2 3 4 5 6 7 8 " * 12]
    store = tmp_path / "acts.zarr"
    record(tiny_model("llama"), byte_tokenizer(), texts, store, window=64, batch_size=4)
    out = tmp_path / "nets"
    code = main(["networks", str(store), "--n-components", "3", "--scope", "all",
                 "--target-count", "15", "--runs", "2", "--out", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "key neurons per layer" in printed and "union" in printed
    assert isinstance(load_networks(out), NetworkRecurrence)
    code = main(["networks", str(store), "--n-components", "500", "--out", str(out), "--quiet",
                 "--overwrite"])
    assert code == 1
    assert "n_components=500 exceeds" in capsys.readouterr().err
