"""The loss sensitivity of MLP neurons, the "fisher" and "loss-networks" criteria."""

import copy

import numpy as np
import pytest
import torch

from llmbrain._testing import byte_tokenizer, tiny_model
from llmbrain.models import get_adapter
from llmbrain.pruning import (LOSS_NETWORKS, PlanOptions, collect_calibration_stats,
                              collect_loss_sensitivity, loss_network_importance, make_plan,
                              prune, prune_model, score_neurons, sensitivity_options)

ARCHS = ["llama", "gpt2", "phi3", "gemma3_text"]


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 256, (6, 16), generator=torch.Generator().manual_seed(3))


def _inputs_and_gradients(model, ids):
    """Every layer's down-projection input and its loss gradient, by a plain backward pass
    through a copy whose weights all take gradients."""
    model = copy.deepcopy(model).double()
    adapter = get_adapter(model)
    seen = {}

    def keep(layer):
        def hook(_module, args):
            args[0].retain_grad()
            seen[layer] = args[0]
        return hook

    for layer in range(adapter.n_layers(model)):
        adapter.down_proj(model, layer).register_forward_pre_hook(keep(layer))
    out = model(ids, labels=ids)
    (out.loss * ids.shape[0] * (ids.shape[1] - 1)).backward()
    return {layer: (x.detach().reshape(-1, x.shape[-1]), x.grad.reshape(-1, x.shape[-1]))
            for layer, x in seen.items()}


@pytest.mark.parametrize("arch", ARCHS)
def test_fisher_equals_a_plain_backward_pass(arch, ids):
    model = tiny_model(arch)
    reference = _inputs_and_gradients(model, ids)
    means = {layer: x.mean(0).numpy() for layer, (x, _) in reference.items()}
    fisher = collect_loss_sensitivity(model, ids, means, batch_size=4, progress=False)
    assert fisher.attrs["n_tokens"] == ids.shape[0] * (ids.shape[1] - 1)
    for layer, (x, grad) in reference.items():
        expected = (((x - torch.from_numpy(means[layer])) * grad) ** 2).sum(0).numpy()
        np.testing.assert_allclose(fisher["fisher"].sel(layer=layer).values, expected,
                                   rtol=1e-4, atol=1e-12 * expected.max())
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())


def test_a_neuron_that_cannot_reach_the_output_scores_zero(ids):
    model = tiny_model("llama")
    with torch.no_grad():
        get_adapter(model).down_proj(model, 1).weight[:, 7] = 0
    stats = collect_calibration_stats(model, byte_tokenizer(), ["x" * 64], window=16,
                                      progress=False)
    fisher = collect_loss_sensitivity(model, ids, stats, progress=False)["fisher"]
    assert float(fisher.sel(layer=1, neuron=7)) == 0.0
    assert bool((fisher.sel(layer=1).drop_sel(neuron=7) > 0).all())


def test_removing_the_least_sensitive_neurons_costs_less_loss(ids):
    """Pruning half of every layer by the Fisher score, with bias compensation, raises the
    calibration loss less than pruning the most sensitive half."""
    model = tiny_model("llama", intermediate_size=96)
    tokenizer = byte_tokenizer()
    windows = ids.numpy()
    stats = collect_calibration_stats(model, tokenizer, ["a b c " * 40], window=16,
                                      progress=False)
    stats = stats.assign(fisher=collect_loss_sensitivity(model, windows, stats,
                                                         progress=False)["fisher"])
    scores = score_neurons(model, "fisher", calibration=stats)

    def loss_after(scores):
        pruned = copy.deepcopy(model)
        plan = make_plan(scores, 0.5, "uniform")
        prune_model(pruned, plan, "progressive", calibration=windows)
        with torch.no_grad():
            return float(pruned(ids, labels=ids).loss)

    assert loss_after(scores) < loss_after(-scores)


def test_the_fisher_criterion_needs_the_loss_sensitivity(ids):
    model, tokenizer = tiny_model("llama"), byte_tokenizer()
    stats = collect_calibration_stats(model, tokenizer, ["some text " * 30], window=16,
                                      progress=False)
    with pytest.raises(ValueError, match="loss_sensitivity=True"):
        score_neurons(model, "fisher", calibration=stats)
    with_fisher = collect_calibration_stats(model, tokenizer, ["some text " * 30], window=16,
                                            loss_sensitivity=True, progress=False)
    n_windows = with_fisher.attrs["n_tokens"] // 16
    assert with_fisher.attrs["sensitivity_tokens"] == n_windows * 15
    scores = score_neurons(model, "fisher", calibration=with_fisher)
    assert scores.dims == ("layer", "neuron") and bool(np.isfinite(scores).all())
    assert bool((scores > 0).all())
    options = PlanOptions("uniform", 1, 0, "progressive")
    pruned, plan = prune(model, "fisher", 0.25, options=options, calibration=with_fisher,
                         calibration_windows=ids.numpy())
    assert plan.n_kept() == {0: 48, 1: 30, 2: 30}
    # the scoring pass leaves the model as it found it
    assert not model.training and all(p.requires_grad for p in model.parameters())


def test_bad_means_are_refused(ids):
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="means of layer 0"):
        collect_loss_sensitivity(model, ids, {0: np.zeros(3), 1: np.zeros(48), 2: np.zeros(48)},
                                 progress=False)
    with pytest.raises(ValueError, match="2-D array"):
        collect_loss_sensitivity(model, ids[0], {}, progress=False)


def test_loss_networks_are_the_leading_eigenvectors_of_the_loss_contributions(ids):
    model = tiny_model("gpt2")
    reference = _inputs_and_gradients(model, ids)
    means = {layer: x.mean(0).numpy() for layer, (x, _) in reference.items()}
    out = collect_loss_sensitivity(model, ids, means, batch_size=4, loss_networks=3,
                                   progress=False)
    assert out["loss_networks"].dims == ("layer", "loss_network", "neuron")
    for layer, (x, grad) in reference.items():
        contributions = ((x - torch.from_numpy(means[layer])) * grad).numpy()
        values, vectors = np.linalg.eigh(contributions.T @ contributions)
        strengths = out["loss_network_strength"].sel(layer=layer).values
        np.testing.assert_allclose(strengths, values[::-1][:3], rtol=1e-4)
        found = out["loss_networks"].sel(layer=layer).values
        np.testing.assert_allclose(np.abs(found @ vectors[:, ::-1][:, :3]), np.eye(3),
                                   atol=1e-3)
        assert (found[np.arange(3), np.abs(found).argmax(1)] > 0).all()
        # the diagonal of the loss contributions' Gram matrix is the Fisher score
        np.testing.assert_allclose(out["fisher"].sel(layer=layer).values,
                                   (contributions ** 2).sum(0), rtol=1e-6)


def _greedy_removal(quadratic):
    """Neurons in the order that minimises ``1_S^T Q 1_S`` one removal at a time."""
    alive, order = np.ones(len(quadratic), bool), []
    for _ in range(len(quadratic)):
        cost = [quadratic[j, j] + 2 * quadratic[j, order].sum() if alive[j] else np.inf
                for j in range(len(quadratic))]
        order.append(int(np.argmin(cost)))
        alive[order[-1]] = False
    return order


def test_loss_network_importance_follows_the_greedy_removal():
    rng = np.random.default_rng(0)
    contributions = rng.normal(size=(200, 12)) @ rng.normal(size=(12, 12))
    gram = contributions.T @ contributions
    values, vectors = np.linalg.eigh(gram)
    networks, strengths = vectors[:, ::-1][:, :3].T, values[::-1][:3]
    quadratic = networks.T @ np.diag(strengths) @ networks
    np.fill_diagonal(quadratic, np.diag(gram))
    order = _greedy_removal(quadratic)
    scores = loss_network_importance(np.diag(gram), networks, strengths)
    np.testing.assert_array_equal(np.argsort(scores), order)
    assert np.all(np.diff(scores[order]) > 0)
    # with no networks the scores rank the neurons as their Fisher scores do
    alone = loss_network_importance(np.diag(gram), np.zeros((1, 12)), np.zeros(1))
    np.testing.assert_array_equal(np.argsort(alone), np.argsort(np.diag(gram)))
    with pytest.raises(ValueError, match="one weight per neuron"):
        loss_network_importance(np.diag(gram), networks[:, :5], strengths)


def test_the_loss_networks_criterion_prunes_with_its_statistics(ids):
    model, tokenizer = tiny_model("llama"), byte_tokenizer()
    text = ["some text " * 30]
    plain = collect_calibration_stats(model, tokenizer, text, window=16, loss_sensitivity=True,
                                      progress=False)
    with pytest.raises(ValueError, match=f"loss_networks={LOSS_NETWORKS}"):
        score_neurons(model, "loss-networks", calibration=plain)
    with pytest.raises(ValueError, match="loss_sensitivity=True"):
        collect_calibration_stats(model, tokenizer, text, window=16, loss_networks=2,
                                  progress=False)
    with pytest.raises(ValueError, match="non-negative integer"):
        collect_loss_sensitivity(model, ids, plain, loss_networks=-1, progress=False)
    with pytest.raises(ValueError, match="exceeds the 48 neurons"):
        collect_loss_sensitivity(model, ids, plain, loss_networks=49, progress=False)
    stats = collect_calibration_stats(model, tokenizer, text, window=16, loss_sensitivity=True,
                                      loss_networks=4, progress=False)
    np.testing.assert_allclose(stats["fisher"], plain["fisher"])
    scores = score_neurons(model, "loss-networks", calibration=stats)
    assert bool(np.isfinite(scores).all()) and scores.attrs["criterion"] == "loss-networks"
    options = PlanOptions("global", 1, 0, "progressive")
    _, plan = prune(model, "loss-networks", 0.25, options=options, calibration=stats,
                    calibration_windows=ids.numpy())
    assert sum(plan.n_kept().values()) == round(0.75 * 3 * 48)


def test_sensitivity_options_say_what_each_criterion_needs():
    assert sensitivity_options("flap") == {"loss_sensitivity": False, "loss_networks": 0}
    assert sensitivity_options(["flap", "fisher"]) == {"loss_sensitivity": True,
                                                       "loss_networks": 0}
    assert sensitivity_options(("random", "loss-networks")) == {
        "loss_sensitivity": True, "loss_networks": LOSS_NETWORKS}
    with pytest.raises(ValueError, match="Unknown criterion 'fishr'"):
        sensitivity_options(["flap", "fishr"])
