"""Structural pruning on tiny models of every adapter family."""

import copy

import numpy as np
import pytest
import torch

from llmbrain._testing import byte_tokenizer, tiny_model
from llmbrain.evaluation import count_parameters as _counts
from llmbrain.interventions import ablate
from llmbrain.models import get_adapter
from llmbrain.pruning import (PruningPlan, collect_calibration_stats,
                              load_pruned, make_plan, prune_model, save_pruned, score_neurons)


torch.set_num_threads(1)


def count_parameters(model):
    return _counts(model)["n_params"]

ARCHS = ["llama", "gpt2", "phi3", "opt", "gpt_neox", "phi", "gemma3_text"]
TEXTS = ["The cat sat on the mat. " * 4, "Prices rose by 3% in May.", "def f(x):\n    return x"]


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1))


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _random_plan(model, seed=0):
    """A non-uniform plan: every layer keeps a different random subset."""
    rng = np.random.default_rng(seed)
    sizes = get_adapter(model).neurons_per_layer(model)
    keep = {layer: np.sort(rng.choice(n, size=n - 6 - 5 * layer, replace=False))
            for layer, n in enumerate(sizes)}
    return PruningPlan(keep=keep, n_neurons=dict(enumerate(sizes)), criterion="random")


def _neuron_params(model, layer):
    """Parameters attached to one neuron of ``layer``."""
    adapter = get_adapter(model)
    count = sum(w.shape[1] for w in adapter.up_weights(model, layer))
    count += sum(2 if adapter.fused_gate_up else 1
                 for m in adapter.up_projs(model, layer) if m.bias is not None)
    return count + adapter.down_weight(model, layer).shape[0]


@pytest.mark.parametrize("arch", ARCHS)
def test_keeping_all_neurons_changes_nothing(arch, ids):
    model = tiny_model(arch)
    before, n_params = _logits(model, ids), count_parameters(model)
    sizes = get_adapter(model).neurons_per_layer(model)
    plan = PruningPlan(keep={l: np.arange(n) for l, n in enumerate(sizes)},
                       n_neurons=dict(enumerate(sizes)))
    prune_model(model, plan)
    assert count_parameters(model) == n_params
    torch.testing.assert_close(_logits(model, ids), before, rtol=0, atol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_pruning_equals_zero_ablation(arch, ids):
    model = tiny_model(arch)
    plan = _random_plan(model)
    with ablate(model, plan.removed_neurons()):
        ablated = _logits(model, ids)
    assert not torch.allclose(ablated, _logits(model, ids))
    n_params = count_parameters(model)
    expected_drop = sum(plan.removed(l).size * _neuron_params(model, l) for l in plan.layers)
    prune_model(model, plan)
    assert get_adapter(model).neurons_per_layer(model) == [42, 37, 32]
    assert count_parameters(model) == n_params - expected_drop
    torch.testing.assert_close(_logits(model, ids), ablated, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_bias_compensation_equals_mean_ablation(arch, ids):
    model = tiny_model(arch)
    stats = collect_calibration_stats(model, byte_tokenizer(), TEXTS, window=16, progress=False)
    plan = make_plan(score_neurons(model, "flap", calibration=stats), 0.4, "adaptive")
    with ablate(model, plan.removed_neurons(), mode="mean", means=stats):
        mean_ablated = _logits(model, ids)
    with ablate(model, plan.removed_neurons()):
        zero_ablated = _logits(model, ids)
    assert not torch.allclose(mean_ablated, zero_ablated)
    prune_model(model, plan, bias_compensation=stats)
    torch.testing.assert_close(_logits(model, ids), mean_ablated, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_non_uniform_model_gives_identical_logits(arch, ids, tmp_path):
    model = tiny_model(arch)
    stats = collect_calibration_stats(model, byte_tokenizer(), TEXTS, window=16, progress=False)
    plan = _random_plan(model, seed=3)
    prune_model(model, plan, bias_compensation=stats)
    expected = _logits(model, ids)
    folder = save_pruned(model, byte_tokenizer(), tmp_path / "pruned", plan=plan)
    loaded, tokenizer = load_pruned(folder, attn_implementation="eager")
    assert tokenizer is not None
    assert get_adapter(loaded).neurons_per_layer(loaded) == [42, 37, 32]
    assert count_parameters(loaded) == count_parameters(model)
    torch.testing.assert_close(_logits(loaded, ids), expected, rtol=0, atol=0)
    assert PruningPlan.load(folder / "pruning_plan.json").n_kept() == plan.n_kept()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_uniform_pruning_updates_config_and_loads_with_transformers(ids, tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny_model("gpt2")
    plan = make_plan(score_neurons(model, "magnitude"), 0.25)
    prune_model(model, plan)
    assert model.config.n_inner == 36
    expected = _logits(model, ids)
    save_pruned(model, None, tmp_path / "m")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m", attn_implementation="eager")
    torch.testing.assert_close(_logits(loaded.eval(), ids), expected, rtol=0, atol=0)
    with pytest.raises(FileExistsError):
        save_pruned(model, None, tmp_path / "m")


def _bad_plans(sizes):
    full = {l: np.arange(n) for l, n in enumerate(sizes)}
    counts = dict(enumerate(sizes))
    return [
        (PruningPlan(keep={**full, 3: np.arange(4)}, n_neurons={**counts, 3: 48}), "layer 3"),
        (PruningPlan(keep={**full, 0: np.arange(50)}, n_neurons={**counts, 0: 50}),
         "made for 50 neurons"),
        (PruningPlan(keep={**full, 1: np.array([0, 48])}, n_neurons=counts), "outside"),
        (PruningPlan(keep={**full, 2: np.array([], dtype=int)}, n_neurons=counts), "no neuron"),
    ]


@pytest.mark.parametrize("case", range(4))
def test_bad_plans_are_refused_without_changing_weights(case):
    model = tiny_model("phi3")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    plan, message = _bad_plans(get_adapter(model).neurons_per_layer(model))[case]
    with pytest.raises(ValueError, match=message):
        prune_model(model, plan)
    after = model.state_dict()
    assert state.keys() == after.keys()
    assert all(torch.equal(state[k], after[k]) for k in state)
    assert not hasattr(model.config, "llmbrain_pruning")


def test_bad_means_are_refused_without_changing_weights():
    model = tiny_model("llama")
    plan = _random_plan(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="bias_compensation"):
        prune_model(model, plan, bias_compensation={0: np.zeros(48)})
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_pruning_twice_needs_a_plan_for_the_pruned_model(ids):
    model = tiny_model("llama")
    plan = _random_plan(model)
    prune_model(model, plan)
    with pytest.raises(ValueError, match="already pruned"):
        prune_model(model, plan)
    second = make_plan(score_neurons(model, "magnitude"), 0.5)
    prune_model(model, second)
    assert get_adapter(model).neurons_per_layer(model) == [21, 18, 16]
    assert model.config.llmbrain_pruning["original_neurons_per_layer"] == [48, 48, 48]


@pytest.mark.integration
def test_real_model_pruning_equals_ablation():
    from llmbrain.models import load_model

    model, tok = load_model("default")
    ids = tok("The capital of France is Paris, and the capital of Italy is", return_tensors="pt")
    ids = ids["input_ids"]
    scores = score_neurons(model, "random", seed=0)
    plan = make_plan(scores, 0.2, "global")
    with ablate(model, plan.removed_neurons()):
        ablated = _logits(model, ids)
    n_params = count_parameters(model)
    prune_model(model, plan)
    assert n_params - count_parameters(model) == 3 * 576 * sum(
        plan.removed(l).size for l in plan.layers)
    torch.testing.assert_close(_logits(model, ids), ablated, rtol=1e-4, atol=1e-4)


def test_calibration_stats_from_a_store_equal_a_calibration_pass(tmp_path, tokenizer):
    from llmbrain import record
    from llmbrain._testing import tiny_model
    from llmbrain.corpus import load_corpus, tokenize_windows
    from llmbrain.pruning import calibration_stats_from_activations, collect_calibration_stats

    model = tiny_model("llama")
    windows = tokenize_windows(load_corpus("default", max_documents=3), tokenizer, 64,
                               max_tokens=1024)
    ds = record(model, tokenizer, windows, tmp_path / "s.zarr", window=64, dtype="float32",
                progress=False)
    from_store = calibration_stats_from_activations(ds, batch_tokens=300)
    direct = collect_calibration_stats(model, tokenizer, windows, window=64, progress=False)
    assert from_store.attrs["n_tokens"] == direct.attrs["n_tokens"] == 1024
    for name in ("mean", "mean_abs", "variance", "l2_norm"):
        np.testing.assert_allclose(from_store[name].values, direct[name].values, rtol=1e-9,
                                   atol=1e-12)
    up = record(model, tokenizer, windows, tmp_path / "u.zarr", window=64, hook="up",
                progress=False)
    with pytest.raises(ValueError, match="hook='mlp'"):
        calibration_stats_from_activations(up)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3_text"])
def test_progressive_bias_compensation_uses_means_of_the_pruned_model(arch):
    """Layer l's bias is W[:, removed] @ mean, the mean taken on the model whose
    layers 0..l-1 are already pruned and compensated."""
    torch.manual_seed(0)
    model = tiny_model(arch)
    calib = torch.randint(3, 250, (6, 16))
    plan = _random_plan(model, seed=5)
    expected = copy.deepcopy(model)
    adapter = get_adapter(expected)
    for layer in plan.layers:  # reference: one full forward per layer
        seen = []
        handle = adapter.down_proj(expected, layer).register_forward_pre_hook(
            lambda m, a: seen.append(a[0].reshape(-1, a[0].shape[-1]).double()))
        with torch.no_grad():
            expected(calib)
        handle.remove()
        mean = torch.cat(seen).mean(0).numpy()
        single = PruningPlan(keep={layer: plan.keep[layer]}, n_neurons={layer: plan.n_neurons[layer]})
        prune_model(expected, single, bias_compensation={layer: mean})
    prune_model(model, plan, bias_compensation="progressive", calibration=calib, batch_size=4)
    ids = torch.randint(3, 250, (2, 12))
    torch.testing.assert_close(_logits(model, ids), _logits(expected, ids), rtol=1e-4, atol=1e-5)
    assert model.config.llmbrain_pruning["neurons_per_layer"] == [42, 37, 32]


def test_progressive_compensation_needs_calibration_windows():
    model = tiny_model("llama")
    plan = _random_plan(model)
    with pytest.raises(ValueError, match="calibration"):
        prune_model(model, plan, bias_compensation="progressive")
    with pytest.raises(ValueError, match="not understood"):
        prune_model(model, plan, bias_compensation="later")
    assert get_adapter(model).neurons_per_layer(model) == [48, 48, 48]  # unchanged


def test_prune_applies_the_same_plan_options_to_any_criterion():
    from llmbrain.corpus import tokenize_windows
    from llmbrain.pruning import PUBLISHED, PlanOptions, prune

    model, tok = tiny_model("llama"), byte_tokenizer()
    windows = tokenize_windows(TEXTS * 6, tok, 16)
    stats = collect_calibration_stats(model, tok, windows, window=16, progress=False)
    options = PlanOptions("uniform", protect_first=1, bias_compensation="progressive")
    for criterion in ("flap", "random", "magnitude"):
        pruned, plan = prune(model, criterion, 0.3, options=options, calibration=stats,
                             calibration_windows=windows)
        sizes = get_adapter(pruned).neurons_per_layer(pruned)
        assert sizes[0] == 48 and sum(48 - s for s in sizes) == round(0.3 * 144)
        assert plan.metadata["options"] == options.to_dict()
        assert pruned.config.llmbrain_pruning["down_bias_layers"] == [1, 2]
    assert get_adapter(model).neurons_per_layer(model) == [48, 48, 48]  # a copy was pruned
    _, flap_plan = prune(model, "flap", 0.3, calibration=stats)  # FLAP's published options
    assert flap_plan.allocation == PUBLISHED["flap"].allocation == "adaptive"
    with pytest.raises(ValueError, match="calibration_windows"):
        prune(model, "random", 0.3, options=options)
    with pytest.raises(ValueError, match="bias_compensation"):
        PlanOptions(bias_compensation="yes")
    with pytest.raises(ValueError, match="Unknown criterion"):
        prune(model, "networks+anything", 0.3)
