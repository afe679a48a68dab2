import numpy as np
import pytest
import torch
import xarray as xr

from llmbrain._testing import tiny_model
from llmbrain.interventions import ablate, amplify, matched_random, neuron_indices
from llmbrain.models import get_adapter

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(0))


def _mask(seed=0, layers=3, neurons=48, p=0.2):
    rng = np.random.default_rng(seed)
    return xr.DataArray(rng.random((layers, neurons)) < p, dims=("layer", "neuron"),
                        coords={"layer": np.arange(layers), "neuron": np.arange(neurons)})


def _n_hooks(model):
    adapter = get_adapter(model)
    return sum(len(adapter.down_proj(model, layer)._forward_pre_hooks)
               for layer in range(adapter.n_layers(model)))


def _capture_inputs(model):
    """Register pre-hooks (after any others) that record down-projection inputs."""
    adapter = get_adapter(model)
    seen, handles = {}, []
    for layer in range(adapter.n_layers(model)):
        def hook(module, args, layer=layer):
            seen[layer] = args[0].detach().clone()
        handles.append(adapter.down_proj(model, layer).register_forward_pre_hook(hook))
    return seen, handles


@pytest.mark.parametrize("arch", ["llama", "gpt2", "phi3", "opt"])
def test_zero_ablation_equals_zeroed_down_columns(arch, ids):
    model = tiny_model(arch)
    mask = _mask()
    with torch.no_grad(), ablate(model, mask):
        ablated = model(ids).logits
    assert _n_hooks(model) == 0
    adapter = get_adapter(model)
    with torch.no_grad():
        plain = model(ids).logits
        for layer in range(3):
            idx = torch.from_numpy(np.flatnonzero(mask.values[layer]))
            adapter.down_weight(model, layer)[:, idx] = 0.0
        zeroed = model(ids).logits
    assert not torch.allclose(plain, ablated)
    torch.testing.assert_close(ablated, zeroed, rtol=1e-5, atol=1e-5)


def test_mean_ablation_and_amplify_set_the_neuron_values(ids):
    model = tiny_model("llama")
    # one layer, so that its input does not depend on other interventions
    index = {1: np.array([0, 5, 7, 47])}
    means = {1: np.linspace(-1, 1, 48)}
    seen, handles = _capture_inputs(model)
    with torch.no_grad():
        model(ids)
        base = {k: v.clone() for k, v in seen.items()}
        with ablate(model, index, mode="mean", means=means):
            # hooks registered later run later: move capture hooks after the ablation
            for h in handles:
                h.remove()
            seen, handles = _capture_inputs(model)
            model(ids)
        for layer, idx in index.items():
            expected = base[layer].clone()
            expected[..., idx] = torch.tensor(means[layer][idx], dtype=expected.dtype)
            torch.testing.assert_close(seen[layer], expected)
        torch.testing.assert_close(seen[0], base[0])
        with amplify(model, index, scale=3.0, add=0.25):
            for h in handles:
                h.remove()
            seen, handles = _capture_inputs(model)
            model(ids)
        for layer, idx in index.items():
            expected = base[layer].clone()
            expected[..., idx] = expected[..., idx] * 3.0 + 0.25
            torch.testing.assert_close(seen[layer], expected)
    for h in handles:
        h.remove()
    assert _n_hooks(model) == 0


def test_hooks_removed_even_on_error(ids):
    model = tiny_model("gpt2")
    with pytest.raises(RuntimeError, match="boom"):
        with ablate(model, _mask()):
            assert _n_hooks(model) == 3
            raise RuntimeError("boom")
    assert _n_hooks(model) == 0
    with pytest.raises(RuntimeError, match="boom"):
        with amplify(model, _mask()):
            raise RuntimeError("boom")
    assert _n_hooks(model) == 0


@pytest.mark.parametrize("bad, message", [
    (_mask(neurons=40), "40 entries"),
    (_mask(layers=4), "layer 3"),
    ({0: np.array([48])}, "index 48"),
    ({0: np.array([-1])}, "negative"),
    ({0: np.array([0.5])}, "integer indices"),
])
def test_mask_that_does_not_fit_is_refused_before_hooking(bad, message):
    model = tiny_model("llama")
    with pytest.raises(ValueError, match=message):
        with ablate(model, bad):
            pass
    assert _n_hooks(model) == 0


def test_mean_ablation_needs_fitting_means():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="needs means"):
        ablate(model, _mask(), mode="mean")
    with pytest.raises(ValueError, match="shape"):
        ablate(model, {0: [1]}, mode="mean", means={0: np.zeros(10)})
    with pytest.raises(ValueError, match="mode"):
        ablate(model, _mask(), mode="half")
    assert _n_hooks(model) == 0


def test_neuron_indices_forms_agree():
    mask = _mask()
    from_array = neuron_indices(mask)
    from_bool_dict = neuron_indices({int(l): mask.values[i] for i, l in enumerate(range(3))})
    from_index_dict = neuron_indices({l: list(v) for l, v in from_array.items()})
    for layer in range(3):
        np.testing.assert_array_equal(from_array[layer], np.flatnonzero(mask.values[layer]))
        np.testing.assert_array_equal(from_bool_dict[layer], from_array[layer])
        np.testing.assert_array_equal(from_index_dict[layer], from_array[layer])


def test_matched_random_keeps_per_layer_counts():
    mask = _mask(p=0.3)
    control = matched_random(mask, seed=1)
    assert isinstance(control, xr.DataArray)
    assert control.dims == mask.dims
    np.testing.assert_array_equal(control.sum("neuron").values, mask.sum("neuron").values)
    assert not np.array_equal(control.values, mask.values)
    np.testing.assert_array_equal(matched_random(mask, seed=1).values, control.values)
    disjoint = matched_random(mask, seed=2, exclude=True)
    assert not (disjoint.values & mask.values).any()
    np.testing.assert_array_equal(disjoint.sum("neuron").values, mask.sum("neuron").values)

    index = {0: np.array([1, 2, 3]), 2: np.array([], dtype=int)}
    drawn = matched_random(index, seed=0, n_neurons=48)
    assert {k: v.size for k, v in drawn.items()} == {0: 3, 2: 0}
    assert all(v.max(initial=0) < 48 for v in drawn.values())
    with pytest.raises(ValueError, match="n_neurons"):
        matched_random(index)


# ----------------------------------------------------------------------------- the stage

import doctest  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from llmbrain.evaluation.results import (SCHEMA, read_results, results_table,  # noqa: E402
                                         save_results)
from llmbrain.interventions import (_networks, intervene_on_networks,  # noqa: E402
                                    summarize_interventions)

TEXT = ("Functional networks in the brain are sets of regions whose activity rises and falls "
        "together over time. ") * 30


def _network_masks(seed=0, n=3, p=0.15):
    rng = np.random.default_rng(seed)
    return xr.DataArray(rng.random((n, 3, 48)) < p, dims=("component", "layer", "neuron"),
                        coords={"component": np.arange(n), "layer": np.arange(3),
                                "neuron": np.arange(48)})


@pytest.fixture(scope="module")
def stage():
    """A run of the stage on the tiny Llama, with every intervention it applied."""
    from llmbrain._testing import byte_tokenizer

    model, tokenizer = tiny_model("llama"), byte_tokenizer()
    masks = _network_masks()
    applied = []
    hooks = {"ablate": _networks.ablate, "amplify": _networks.amplify}

    def spy(mode):
        def apply(model, neurons, **kwargs):
            applied.append((mode, neurons, kwargs))
            return hooks[mode](model, neurons, **kwargs)
        return apply

    mp = pytest.MonkeyPatch()
    mp.setattr(_networks, "ablate", spy("ablate"))
    mp.setattr(_networks, "amplify", spy("amplify"))
    try:
        results = intervene_on_networks(model, tokenizer, masks, TEXT, components=[0, 2],
                                        n_controls=4, window=32, max_windows=3, scale=2.5,
                                        random_state=7, progress=False)
    finally:
        mp.undo()
    return model, tokenizer, masks, results, applied


def test_stage_results_follow_the_schema(stage, tmp_path):
    model, _, _, results, _ = stage
    assert list(results.columns) == [c.name for c in SCHEMA]
    pd.testing.assert_frame_equal(results_table(results), results)
    save_results(results, tmp_path / "r.csv")
    pd.testing.assert_frame_equal(read_results(tmp_path / "r.csv"), results)
    assert len(results) == 1 + 2 * 2 * (1 + 4)  # baseline + networks x modes x conditions
    base = results[results["intervention"] == ""]
    assert len(base) == 1 and base["condition"].iloc[0] == ""
    assert set(results["target"]) == {"", "network 0", "network 2"}
    assert set(results["metric"]) == {"perplexity"} and (results["value"] > 1).all()
    assert set(results["protocol"]) == {"window=32, 3 windows"} and set(results["n"]) == {3}
    assert set(results["model"]) == {"tiny-random-llama"}
    assert set(results["dataset"]) == {"held-out"}
    per = results[results["intervention"] != ""].groupby(["target", "intervention"])
    assert (per["condition"].apply(lambda c: (c == "random").sum()) == 4).all()
    assert _n_hooks(model) == 0


def test_controls_are_matched_per_layer_and_reproducible(stage):
    model, tokenizer, masks, results, applied = stage
    assert [mode for mode, _, _ in applied] == (["ablate"] * 5 + ["amplify"] * 5) * 2
    assert all(kwargs == {"scale": 2.5} for mode, _, kwargs in applied if mode == "amplify")
    controls = results[results["condition"] == "random"]
    seeds = controls.groupby(["target", "intervention"])["seed"].apply(list)
    assert all(len(set(s)) == 4 for s in seeds)  # distinct seeds per network
    for i, component in enumerate([0, 2]):
        network = masks.sel(component=component, drop=True)
        drawn = applied[i * 10:(i + 1) * 10]
        np.testing.assert_array_equal(drawn[0][1].values, network.values)  # the network first
        for _, neurons, _ in drawn[1:5] + drawn[6:]:
            np.testing.assert_array_equal(neurons.sum("neuron").values,
                                          network.sum("neuron").values)
            assert not (neurons.values & network.values).any()
    # each control row is the perplexity with matched_random(mask, seed=<its seed>)
    row = controls[(controls["target"] == "network 2")
                   & (controls["intervention"] == "ablate")].iloc[1]
    from llmbrain import perplexity

    mask = masks.sel(component=2, drop=True).drop_vars("component", errors="ignore")
    with ablate(model, matched_random(mask, seed=int(row["seed"]), exclude=True)):
        value = perplexity(model, tokenizer, TEXT, window=32, max_windows=3, progress=False)
    assert value == pytest.approx(row["value"], rel=1e-6)


def test_stage_and_report_agree(stage):
    from llmbrain.report import compare_to_controls, interpret

    results = stage[3]
    summary = summarize_interventions(results)
    report = compare_to_controls(results, min_controls=4)
    assert len(summary) == len(report) == 4
    merged = summary.merge(report, on=["intervention", "target", "dataset", "metric"])
    np.testing.assert_allclose(merged["p_value_x"], merged["p_value_y"])
    np.testing.assert_allclose(merged["controls_low_x"] + merged["baseline"],
                               merged["controls_low_y"])
    np.testing.assert_allclose(merged["controls_high_x"] + merged["baseline"],
                               merged["controls_high_y"])
    np.testing.assert_allclose(merged["value"], merged["target_value"])
    text = str(interpret(results, min_controls=4, n_networks=3))
    assert "network 0" in text and "network 2" in text and "(2 of the 3 networks)" in text


def _constructed(network_change, control_changes, metric="perplexity", baseline=10.0):
    rows = [{"value": baseline},
            {"intervention": "ablate", "target": "network 0", "condition": "network",
             "value": baseline + network_change}]
    rows += [{"intervention": "ablate", "target": "network 0", "condition": "random",
              "seed": k, "value": baseline + c} for k, c in enumerate(control_changes)]
    return results_table(rows, model="m", dataset="d", metric=metric)


@pytest.mark.parametrize("network_change, expected_p", [
    (10.5, 1 / 11),   # above every control: the smallest possible p
    (5.5, 6 / 11),    # 5 controls (6..10) change more
    (5.0, 7 / 11),    # a tie counts as at least as harmful
    (0.0, 11 / 11),   # below every control
])
def test_permutation_p_value_on_a_constructed_case(network_change, expected_p):
    from scipy import stats

    changes = np.arange(1.0, 11.0)
    summary = summarize_interventions(_constructed(network_change, changes))
    row = summary.iloc[0]
    assert row["p_value"] == pytest.approx(expected_p)
    assert row["n_controls"] == 10 and row["baseline"] == 10.0
    assert row["change"] == pytest.approx(network_change)
    assert row["controls_mean_change"] == pytest.approx(5.5)
    assert row["change_ratio"] == pytest.approx(network_change / 5.5)
    half = stats.t.ppf(0.975, 9) * changes.std(ddof=1) * np.sqrt(1 + 1 / 10)
    assert row["controls_low"] == pytest.approx(5.5 - half)
    assert row["controls_high"] == pytest.approx(5.5 + half)


def test_p_value_follows_the_direction_of_harm():
    # for accuracy a fall is harmful: a network that lowers it most has the smallest p
    summary = summarize_interventions(_constructed(-0.5, np.linspace(-0.1, 0.1, 9), "acc",
                                                   baseline=0.6))
    assert summary["p_value"].iloc[0] == pytest.approx(1 / 10)
    summary = summarize_interventions(_constructed(0.5, np.linspace(-0.1, 0.1, 9), "acc",
                                                   baseline=0.6))
    assert summary["p_value"].iloc[0] == pytest.approx(1.0)


def test_summary_needs_the_unmodified_model_and_controls():
    table = _constructed(1.0, [0.5, 0.2])
    with pytest.raises(ValueError, match="unmodified model"):
        summarize_interventions(table[table["intervention"] != ""])
    with pytest.raises(ValueError, match="no random control"):
        summarize_interventions(table[table["condition"] != "random"])
    single = summarize_interventions(_constructed(1.0, [0.5]))
    assert np.isnan(single["controls_low"].iloc[0]) and single["p_value"].iloc[0] == 0.5


@pytest.mark.parametrize("kwargs, error, message", [
    ({"components": [5]}, ValueError, "no network 5: the networks are numbered 0..2"),
    ({"components": [-1]}, ValueError, "no network -1"),
    ({"components": ["a"]}, TypeError, "integers"),
    ({"n_controls": 0}, ValueError, "n_controls must be an integer of at least 1"),
    ({"n_controls": 2.5}, ValueError, "n_controls"),
    ({"modes": ("ablate", "lesion")}, ValueError, "modes"),
    ({"modes": ()}, ValueError, "modes"),
    ({"scale": float("nan")}, ValueError, "scale"),
    ({"window": 1}, ValueError, "window"),
    ({"max_windows": 0}, ValueError, "max_windows"),
    ({"text": ""}, ValueError, "non-empty"),
    ({"networks": _network_masks().astype(float)}, ValueError, "boolean"),
    ({"networks": _network_masks().isel(layer=0)}, ValueError, "dims"),
    ({"networks": xr.DataArray(np.ones((2, 3, 64), bool),
                               dims=("component", "layer", "neuron"))}, ValueError,
     "64 entries"),
    ({"networks": "networks/"}, TypeError, "FunctionalNetworks"),
])
def test_bad_arguments_are_refused_before_any_measurement(kwargs, error, message, monkeypatch):
    from llmbrain._testing import byte_tokenizer

    def no_measurement(*args, **kwargs):
        raise AssertionError("measured before the arguments were checked")

    monkeypatch.setattr(_networks, "perplexity", no_measurement)
    arguments = {"networks": _network_masks(), "text": TEXT, **kwargs}
    with pytest.raises(error, match=message):
        intervene_on_networks(tiny_model("llama"), byte_tokenizer(), **arguments)


def test_empty_networks_are_left_out_or_refused(monkeypatch):
    from llmbrain._testing import byte_tokenizer

    masks = _network_masks()
    masks[1] = False
    with pytest.raises(ValueError, match="Network 1 has no key neuron"):
        intervene_on_networks(tiny_model("llama"), byte_tokenizer(), masks, TEXT, components=1)
    measured = []
    monkeypatch.setattr(_networks, "perplexity",
                        lambda *a, **k: measured.append(1) or (5.0, {"n_windows": 1}))
    with pytest.warns(UserWarning, match=r"Network\(s\) \[1\] have no key neuron"):
        results = intervene_on_networks(tiny_model("llama"), byte_tokenizer(), masks, TEXT,
                                        n_controls=2, modes="ablate", progress=False)
    assert set(results["target"]) == {"", "network 0", "network 2"}
    assert len(measured) == 1 + 2 * 3


@pytest.fixture(scope="module")
def networks_folder(tiny_store, tmp_path_factory):
    """Networks of the tiny store in two runs, written by `llmbrain networks`."""
    from llmbrain.cli import main

    folder = tmp_path_factory.mktemp("networks") / "networks"
    assert main(["networks", str(tiny_store), "--n-components", "2", "--scope", "all",
                 "--threshold", "2", "--runs", "2", "--restarts", "2", "-q",
                 "--out", str(folder)]) == 0
    return folder


def test_networks_come_from_fitted_estimators(networks_folder):
    from llmbrain import load_networks

    recurrence = load_networks(networks_folder)
    reference = recurrence.runs_[recurrence.reference]
    masks = _networks._network_masks(recurrence)
    assert masks.dims == ("component", "layer", "neuron") and masks.dtype == bool
    xr.testing.assert_equal(masks, reference.network_masks_)
    xr.testing.assert_equal(_networks._network_masks(reference), reference.network_masks_)
    xr.testing.assert_equal(_networks._network_masks(reference.to_dataset()),
                            reference.network_masks_)
    with pytest.raises(ValueError, match="not fitted"):
        _networks._network_masks(type(reference)())


def test_interventions_verb_end_to_end(networks_folder, tmp_path, llama, tokenizer, capsys):
    from llmbrain import load_networks
    from llmbrain.cli import main

    model_folder = tmp_path / "model"
    llama.save_pretrained(model_folder)
    tokenizer.save_pretrained(model_folder)
    text = tmp_path / "held-out.txt"
    text.write_text(TEXT)
    out = tmp_path / "results.csv"
    capsys.readouterr()
    args = ["interventions", str(networks_folder), "--model", str(model_folder), "--text",
            str(text), "--n-controls", "3", "--window", "32", "--max-windows", "2",
            "--modes", "ablate", "--out", str(out)]
    assert main(args + ["-q"]) == 0
    printed = capsys.readouterr()
    assert "%|" not in printed.err
    results = read_results(out)
    n_networks = int((load_networks(networks_folder).runs_[0].network_masks_
                      .sum(("layer", "neuron")) > 0).sum())
    assert len(results) == 1 + n_networks * (1 + 3)
    assert set(results["intervention"]) == {"", "ablate"}
    assert set(results["dataset"]) == {"held-out"} and set(results["model"]) == {
        str(model_folder)}
    summary = summarize_interventions(results)
    for row in summary.itertuples():
        assert f"ablate       {row.target:<12}{row.value:>11.3f}" in printed.out
    assert f"Wrote {len(results)} rows to {out}" in printed.out
    # the same seed gives the same table; errors are one line
    assert main(args + ["-q", "--components", "0"]) == 0
    again = read_results(out)
    pd.testing.assert_frame_equal(again.reset_index(drop=True),
                                  results[results["target"].isin(["", "network 0"])]
                                  .reset_index(drop=True))
    capsys.readouterr()
    assert main(args + ["--components", "9"]) == 1
    assert "error: There is no network 9" in capsys.readouterr().err
    assert main(args[:-1] + [str(tmp_path / "results.txt")]) == 1
    assert "should be a .csv file" in capsys.readouterr().err
    assert main(["interventions", str(tmp_path), "--model", str(model_folder)]) == 1
    assert "not written by" in capsys.readouterr().err


def test_long_texts_are_cut_without_changing_the_windows():
    from llmbrain._testing import byte_tokenizer

    tokenizer = byte_tokenizer()
    text = TEXT * 20
    short = _networks._shorten(text, tokenizer, 3 * 32)
    assert len(short) < len(text)
    assert tokenizer(short)["input_ids"][:96] == tokenizer(text)["input_ids"][:96]
    assert _networks._shorten(TEXT[:50], tokenizer, 96) == TEXT[:50]


def test_summary_example_runs():
    result = doctest.testmod(_networks, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_pruning_imports_nothing_private_from_interventions():
    source = Path(__file__).resolve().parents[1] / "llmbrain" / "pruning"
    for path in source.glob("*.py"):
        text = path.read_text()
        assert "interventions import _" not in text, path
        assert "interventions._" not in text, path
