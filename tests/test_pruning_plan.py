"""Calibration statistics, pruning criteria and plans."""

import json

import numpy as np
import pytest
import torch
import xarray as xr

from llmbrain._testing import byte_tokenizer, tiny_model
from llmbrain.models import get_adapter
from llmbrain.corpus import tokenize_windows
from llmbrain.pruning import (PruningPlan, collect_calibration_stats, layer_statistic, make_plan,
                              network_scores, score_neurons)

torch.set_num_threads(1)

TEXTS = ["The cat sat on the mat. " * 3, "Prices rose by 3% in May.", "def f(x):\n    return x"]


def _scores(values):
    values = np.asarray(values, dtype=float)
    return xr.DataArray(values, dims=("layer", "neuron"),
                        coords={"layer": np.arange(values.shape[0]),
                                "neuron": np.arange(values.shape[1])})


# -- calibration ------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "opt"])
def test_calibration_stats_match_direct_computation(arch):
    model, tok = tiny_model(arch), byte_tokenizer()
    windows = tokenize_windows(TEXTS * 4, tok, 20)
    adapter = get_adapter(model)
    seen = {l: [] for l in range(3)}
    with torch.no_grad():
        handles = [adapter.down_proj(model, l).register_forward_pre_hook(
            lambda m, a, l=l: seen[l].append(a[0].reshape(-1, a[0].shape[-1]).double()))
            for l in range(3)]
        model(torch.as_tensor(windows.input_ids, dtype=torch.long))
        for h in handles:
            h.remove()
    stats = collect_calibration_stats(model, tok, windows, window=20, batch_size=3,
                                      progress=False)
    assert stats.attrs["n_tokens"] == windows.input_ids.size
    assert stats["variance"].dims == ("layer", "neuron")
    for layer in range(3):
        x = torch.cat(seen[layer]).numpy()
        np.testing.assert_allclose(layer_statistic(stats, "mean", layer), x.mean(0), rtol=1e-4,
                                   atol=1e-6)
        np.testing.assert_allclose(layer_statistic(stats, "mean_abs", layer), np.abs(x).mean(0),
                                   rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(layer_statistic(stats, "variance", layer), x.var(0, ddof=1),
                                   rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(layer_statistic(stats, "l2_norm", layer),
                                   np.sqrt((x ** 2).sum(0)), rtol=1e-4)


def test_calibration_never_runs_the_language_model_head():
    model, tok = tiny_model("llama"), byte_tokenizer()
    calls = []
    handle = model.lm_head.register_forward_hook(lambda *a: calls.append(1))
    collect_calibration_stats(model, tok, TEXTS * 4, window=20, progress=False)
    handle.remove()
    assert calls == []


# -- criteria ----------------------------------------------------------------
def test_criteria_follow_their_formulas():
    model, tok = tiny_model("gpt2"), byte_tokenizer()
    stats = collect_calibration_stats(model, tok, TEXTS * 4, window=16, progress=False)
    adapter = get_adapter(model)
    down = adapter.down_weight(model, 1).detach().double().numpy()  # (hidden, neuron)
    up = adapter.up_weights(model, 1)[0].detach().double().numpy()  # (neuron, hidden)
    expected = {
        "contextual": layer_statistic(stats, "mean_abs", 1),
        "magnitude": np.sqrt((down ** 2).sum(0) + (up ** 2).sum(1)),
        "wanda-sp": (np.abs(down) * layer_statistic(stats, "l2_norm", 1)[None, :]).sum(0),
        "flap": layer_statistic(stats, "variance", 1) * (down ** 2).sum(0),
    }
    for criterion, values in expected.items():
        scores = score_neurons(model, criterion, calibration=stats)
        assert scores.dims == ("layer", "neuron") and scores.shape == (3, 48)
        assert scores.attrs["criterion"] == criterion
        np.testing.assert_allclose(scores.sel(layer=1).values, values, rtol=1e-6)
    random = score_neurons(model, "random", seed=4)
    np.testing.assert_array_equal(random.values, score_neurons(model, "random", seed=4).values)
    assert not np.array_equal(random.values, score_neurons(model, "random", seed=5).values)


def test_criteria_refuse_missing_or_foreign_inputs():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="calibration"):
        score_neurons(model, "flap")
    with pytest.raises(ValueError, match="Unknown criterion"):
        score_neurons(model, "biggest")
    with pytest.raises(ValueError, match="networks"):
        score_neurons(model, "networks")
    other = collect_calibration_stats(tiny_model("llama", intermediate_size=40), byte_tokenizer(),
                                      TEXTS * 4, window=16, progress=False)
    with pytest.raises(ValueError, match="another model"):
        score_neurons(model, "contextual", calibration=other)
    with pytest.raises(ValueError, match="has 48"):
        score_neurons(model, "networks", networks=_scores(np.ones((3, 40))))
    with pytest.raises(ValueError, match="calibration statistics"):
        score_neurons(model, "flap", calibration={"variance": np.ones(48)})


def test_network_scores_are_the_strongest_z_over_networks_runs_and_hooks():
    rng = np.random.default_rng(0)
    coords = {"layer": [0, 1, 2], "neuron": np.arange(20)}
    runs = [xr.DataArray(rng.normal(size=(5, 2, 3, 20)), dims=("component", "hook", "layer",
                                                                  "neuron"), coords=coords)
            for _ in range(2)]
    scores = network_scores(runs)
    expected = np.maximum(*[abs(r).max(("component", "hook")).values for r in runs])
    np.testing.assert_allclose(scores.values, expected)
    assert scores.dims == ("layer", "neuron") and scores.attrs["n_runs"] == 2
    # key neurons at any threshold are a set of top scores: a global plan keeping
    # as many neurons as there are keys at T keeps exactly the keys at T
    keys = (scores > 2.0).values
    plan = make_plan(scores, sparsity=1 - keys.mean(), allocation="global")
    for layer in range(3):
        np.testing.assert_array_equal(plan.keep[layer], np.flatnonzero(keys[layer]))
    assert plan.metadata["threshold"] <= 2.0
    broken = runs[0].copy()
    broken[0, 0, 1, 3] = np.nan
    with pytest.raises(ValueError, match="layers \\[1\\] hold NaN"):
        network_scores(broken)


# -- plans -------------------------------------------------------------------
def test_uniform_plan_removes_the_lowest_of_each_layer():
    scores = _scores([np.arange(10), np.arange(10)[::-1], np.ones(10)])
    plan = make_plan(scores, sparsity=0.3)
    np.testing.assert_array_equal(plan.keep[0], np.arange(3, 10))
    np.testing.assert_array_equal(plan.keep[1], np.arange(0, 7))
    assert plan.n_kept() == {0: 7, 1: 7, 2: 7}
    assert plan.achieved_sparsity == pytest.approx(0.3)
    np.testing.assert_array_equal(plan.removed(0), [0, 1, 2])


def test_global_and_adaptive_allocation():
    rng = np.random.default_rng(0)
    values = np.stack([rng.normal(0, 1, 50), rng.normal(10, 1, 50), rng.normal(0, 5, 50)])
    scores = _scores(values)
    glob = make_plan(scores, sparsity=0.4, allocation="global")
    assert sum(glob.n_kept().values()) == 150 - 60
    assert glob.n_kept()[1] == 50  # scores ~10: never the lowest globally
    adaptive = make_plan(scores, sparsity=0.4, allocation="adaptive")
    assert sum(adaptive.n_kept().values()) == 150 - 60
    # standardised scores: no layer is spared for its scale alone
    assert adaptive.n_kept()[1] < 50
    # min_keep is honoured while the total is still reached
    values[0] = -100 + np.arange(50)
    tight = make_plan(_scores(values), sparsity=0.5, allocation="global", min_keep=10)
    assert tight.n_kept()[0] == 10 and sum(tight.n_kept().values()) == 75


def test_protected_layers_count_in_the_budget_and_nan_padding():
    values = np.arange(30, dtype=float).reshape(3, 10)
    values[2, 6:] = np.nan  # layer 2 has 6 neurons: 26 in all
    plan = make_plan(_scores(values), sparsity=0.5, protect_layers=[1])
    assert plan.n_neurons == {0: 10, 1: 10, 2: 6}
    # 13 of the 26 neurons go, all from the 16 of layers 0 and 2 (81%)
    assert plan.n_kept() == {0: 2, 1: 10, 2: 1}
    edge = make_plan(_scores(values), sparsity=0.3, protect_first=1, protect_last=1)
    assert edge.n_kept() == {0: 10, 1: 2, 2: 6}
    assert edge.metadata["protected_layers"] == [0, 2]
    with pytest.raises(ValueError, match="can give up at most 9"):
        make_plan(_scores(values), sparsity=0.5, protect_first=1, protect_last=1)
    glob = make_plan(_scores(values), sparsity=0.3, allocation="global", protect_first=1)
    assert sum(glob.n_kept().values()) == 18 and glob.n_kept()[0] == 10
    # the global threshold: every kept prunable neuron scores above it
    kept = np.concatenate([values[layer, glob.keep[layer]] for layer in (1, 2)])
    assert kept.min() > glob.metadata["threshold"]
    values[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN inside"):
        make_plan(_scores(values), 0.5)


def test_make_plan_refuses_a_layer_without_scores():
    values = np.ones((3, 10))
    values[1] = np.nan
    with pytest.raises(ValueError, match="Every score of layer 1 is NaN"):
        make_plan(_scores(values), 0.3)


@pytest.mark.parametrize("kwargs, message", [
    (dict(sparsity=1.0), "sparsity"), (dict(sparsity=-0.1), "sparsity"),
    (dict(allocation="greedy"), "allocation"), (dict(min_keep=0), "min_keep"),
    (dict(protect_layers=[7]), "protect_layers"), (dict(protect_first=-1), "protect_first"),
])
def test_make_plan_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_plan(_scores(np.ones((3, 10))), **{"sparsity": 0.3, **kwargs})


def test_plan_json_round_trip(tmp_path):
    plan = make_plan(_scores(np.random.default_rng(1).random((3, 12))), 0.25, "adaptive")
    plan.metadata["note"] = "kept"
    path = plan.save(tmp_path / "sub" / "plan.json")
    assert json.loads(path.read_text())["format"].startswith("llmbrain-pruning-plan")
    loaded = PruningPlan.load(path)
    assert loaded.n_neurons == plan.n_neurons and loaded.allocation == "adaptive"
    assert all(np.array_equal(loaded.keep[l], plan.keep[l]) for l in plan.layers)
    assert loaded.metadata["note"] == "kept"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["plan.json"]
    with pytest.raises(ValueError, match="sorted"):
        PruningPlan(keep={0: [3, 1]}, n_neurons={0: 4})
    (tmp_path / "other.json").write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="Not a pruning plan"):
        PruningPlan.load(tmp_path / "other.json")


def test_networks_criterion_reads_fitted_estimators_and_checks_the_model():
    from types import SimpleNamespace

    model = tiny_model("llama")
    rng = np.random.default_rng(2)
    coords = {"layer": [0, 1, 2], "neuron": np.arange(48)}
    runs = [SimpleNamespace(maps_z_=xr.DataArray(rng.normal(size=(4, 3, 48)),
                                                 dims=("component", "layer", "neuron"),
                                                 coords=coords)) for _ in range(2)]
    united = score_neurons(model, "networks", networks=SimpleNamespace(runs_=runs))
    strongest = np.maximum(abs(runs[0].maps_z_).max("component"),
                           abs(runs[1].maps_z_).max("component"))
    np.testing.assert_allclose(united.values, strongest.values)
    np.testing.assert_allclose(score_neurons(model, "networks", networks=runs).values,
                               united.values)
    with pytest.raises(TypeError, match="networks must be"):
        score_neurons(model, "networks", networks=[1, 2, 3])


def test_uniform_allocation_removes_exactly_the_budget():
    rng = np.random.default_rng(7)
    for _ in range(50):
        n_layers = int(rng.integers(1, 6))
        widths = rng.integers(3, 40, n_layers)
        values = np.full((n_layers, widths.max()), np.nan)
        for i, w in enumerate(widths):
            values[i, :w] = rng.random(w)
        sparsity = float(rng.uniform(0, 0.9))
        min_keep = int(rng.integers(1, 3))
        try:
            plan = make_plan(_scores(values), sparsity, min_keep=min_keep)
        except ValueError as err:
            assert "can give up at most" in str(err)
            continue
        removed = sum(widths) - sum(plan.n_kept().values())
        assert removed == int(round(sparsity * widths.sum()))
        assert all(kept >= min_keep for kept in plan.n_kept().values())
        # proportional: no two layers' removed fractions differ by more than one neuron's worth
        fractions = [(w - plan.n_kept()[i]) / w for i, w in enumerate(widths)
                     if plan.n_kept()[i] > min_keep]
        if len(fractions) > 1:
            assert max(fractions) - min(fractions) <= 1.0 / widths.min() + 1e-9
