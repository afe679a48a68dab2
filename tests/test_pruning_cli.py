"""The ``llmbrain prune`` verb on a tiny saved model."""

import numpy as np
import pytest
import torch
import xarray as xr

from llmbrain._testing import byte_tokenizer, tiny_model
from llmbrain.cli import main
from llmbrain.models import get_adapter
from llmbrain.pruning import PruningPlan, load_pruned

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "llama"
    model = tiny_model("llama")
    model.save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text("A small calibration text about cats and prices. " * 20, encoding="utf-8")
    return path


def test_prune_flap_with_calibration(saved_model, corpus, tmp_path, capsys):
    out = tmp_path / "pruned"
    code = main(["prune", "--model", str(saved_model), "--criterion", "flap", "--sparsity", "0.25",
                 "--calibration", str(corpus), "--calibration-tokens", "200", "--window", "32",
                 "--allocation", "adaptive", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Parameters:" in printed and "->" in printed
    model, tokenizer = load_pruned(out)
    plan = PruningPlan.load(out / "pruning_plan.json")
    assert get_adapter(model).neurons_per_layer(model) == [plan.n_kept()[l] for l in range(3)]
    assert sum(plan.n_kept().values()) == 3 * 48 - 36
    assert model.config.llmbrain_pruning["down_bias_layers"] == [0, 1, 2]  # flap compensates
    assert tokenizer is not None


def test_prune_by_the_loss_networks(saved_model, corpus, tmp_path):
    out = tmp_path / "pruned"
    code = main(["prune", "--model", str(saved_model), "--criterion", "loss-networks",
                 "--sparsity", "0.25", "--calibration", str(corpus), "--calibration-tokens",
                 "200", "--window", "32", "--protect-first", "1", "--protect-last", "0",
                 "--out", str(out)])
    assert code == 0
    plan = PruningPlan.load(out / "pruning_plan.json")
    assert plan.criterion == "loss-networks"
    assert plan.n_kept() == {0: 48, 1: 30, 2: 30}   # uniform over the layers not kept whole


def test_prune_with_networks_store_keeps_the_strongest_z(saved_model, tmp_path):
    rng = np.random.default_rng(0)
    maps = xr.DataArray(rng.normal(size=(4, 3, 48)), dims=("component", "layer", "neuron"),
                        coords={"layer": [0, 1, 2], "neuron": np.arange(48)}, name="maps_z")
    store = tmp_path / "networks.zarr"
    xr.Dataset({"maps_z": maps}).to_zarr(store)
    out = tmp_path / "pruned"
    code = main(["prune", "--model", str(saved_model), "--criterion", "networks",
                 "--networks", str(tmp_path), "--sparsity", "0.5", "--protect-first", "0",
                 "--protect-last", "0", "--bias-compensation", "none", "--out", str(out)])
    assert code == 0
    plan = PruningPlan.load(out / "pruning_plan.json")
    assert plan.criterion == "networks"
    assert plan.metadata["options"]["allocation"] == "global"   # the published allocation
    strength = abs(maps).max("component").values                # (layer, neuron)
    threshold = np.sort(strength.ravel())[::-1][71]             # 72 of 144 neurons kept
    for layer in range(3):
        key = np.flatnonzero(strength[layer] >= threshold)
        assert sorted(plan.keep[layer]) == sorted(key)


def test_prune_from_saved_networks_with_published_options(saved_model, corpus, tmp_path):
    from llmbrain.networks import FunctionalNetworks, save_networks

    rng = np.random.default_rng(1)
    activations = xr.DataArray(rng.normal(size=(300, 6, 48)).astype(np.float32),
                               dims=("token", "layer", "neuron"),
                               coords={"layer": list(range(6))})
    fitted = FunctionalNetworks(n_components=3, random_state=0).fit(activations)
    save_networks(fitted, tmp_path / "networks")
    folder = tmp_path / "six-layers"
    model = tiny_model("llama", num_hidden_layers=6)
    model.save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    out = tmp_path / "pruned"
    code = main(["prune", "--model", str(folder), "--criterion", "networks",
                 "--networks", str(tmp_path / "networks"), "--sparsity", "0.1",
                 "--calibration", str(corpus), "--calibration-tokens", "128", "--window", "32",
                 "--out", str(out)])
    assert code == 0
    plan = PruningPlan.load(out / "pruning_plan.json")
    kept = plan.n_kept()
    assert [kept[layer] for layer in (0, 1, 2, 4, 5)] == [48] * 5   # first 3, last 2 kept
    assert kept[3] == 48 - round(0.1 * 6 * 48)                     # the budget counts them
    pruned, _ = load_pruned(out)
    assert pruned.config.llmbrain_pruning["down_bias_layers"] == [3]        # progressive bias


def test_prune_reports_bad_input(saved_model, tmp_path, capsys):
    code = main(["prune", "--model", str(saved_model), "--criterion", "networks",
                 "--out", str(tmp_path / "x")])
    assert code == 1
    assert "--networks" in capsys.readouterr().err
    (tmp_path / "exists").mkdir()
    code = main(["prune", "--model", str(saved_model), "--criterion", "random",
                 "--out", str(tmp_path / "exists")])
    assert code == 1
    assert "already exists" in capsys.readouterr().err


def test_keeping_every_layer_is_refused_before_the_calibration_pass(saved_model, corpus,
                                                                     tmp_path, capsys,
                                                                     monkeypatch):
    import llmbrain.pruning

    def no_pass(*args, **kwargs):
        raise AssertionError("the calibration pass ran")

    monkeypatch.setattr(llmbrain.pruning, "collect_calibration_stats", no_pass)
    code = main(["prune", "--model", str(saved_model), "--criterion", "flap", "--sparsity", "0.2",
                 "--calibration", str(corpus), "--protect-first", "2", "--protect-last", "1",
                 "--out", str(tmp_path / "pruned")])
    assert code == 1
    err = capsys.readouterr().err
    assert "keep all 3 layers" in err and "--protect-first 2" in err, err
    assert not (tmp_path / "pruned").exists()
