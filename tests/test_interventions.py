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
