"""Online networks: a sketch per layer updated while the model runs, decomposed like the
offline recipe."""

import numpy as np
import pytest
import torch

from llmbrain import record
from llmbrain.networks import (
    FunctionalNetworks,
    NetworkRecurrence,
    OnlineNetworks,
    find_networks,
    match_components,
    planted_networks,
)
from llmbrain.networks._sketch import CorrelationSketch
from llmbrain.pruning import network_scores

RECIPE = dict(method="fastica", fun="cube", max_iter=300, n_init=1, verbose=0)


def _correlation_eigenvectors(x: np.ndarray, k: int) -> np.ndarray:
    evals, evecs = np.linalg.eigh(np.corrcoef(x.T))
    return evecs[:, ::-1][:, :k].T


@pytest.fixture(scope="module")
def lowrank():
    """4,000 tokens of 2 x 30 voxels: 6 latent directions plus weak noise, far from zero."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 6, generator=gen, dtype=torch.float64) @ torch.randn(
        6, 60, generator=gen, dtype=torch.float64)
    x += 0.01 * torch.randn(4000, 60, generator=gen, dtype=torch.float64) + 50.0
    return x.float()


@pytest.mark.parametrize("size", [None, 16])
def test_sketch_gives_the_principal_maps_of_the_z_scored_tokens(lowrank, size):
    sketch = CorrelationSketch(60, size, device="cpu")
    assert sketch.exact == (size is None)
    for start in range(0, 4000, 900):    # blocks of any size, hook-major (groups, tokens, width)
        sketch.update(lowrank[start:start + 900].reshape(-1, 2, 30).transpose(0, 1))
    x = lowrank.double().numpy()
    np.testing.assert_allclose(sketch.mean.numpy(), x.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(sketch.std().numpy(), x.std(axis=0, ddof=1), rtol=1e-4)
    centred = x - x.mean(axis=0)
    gram = centred.T @ centred
    expected = gram if size is None else gram @ sketch.omega.numpy()
    np.testing.assert_allclose(sketch.centred_products().numpy(), expected,
                               atol=0.01 * np.abs(expected).max())
    maps, evals = sketch.principal_maps(6)
    cosines = np.abs(np.sum(maps.double().numpy() * _correlation_eigenvectors(x, 6), axis=1))
    assert cosines.min() > 0.999
    assert np.all(np.diff(evals.numpy()) <= 0)


def test_sketches_of_parts_merge_into_the_sketch_of_the_whole(lowrank):
    whole, first, second = (CorrelationSketch(60, 16, device="cpu") for _ in range(3))
    whole.update(lowrank)
    first.update(lowrank[:1500])
    second.update(lowrank[3000:])          # another shift: its sums are re-expressed
    second.update(lowrank[1500:3000])
    merged = first.merge(second)
    assert merged.n == 4000
    np.testing.assert_allclose(merged.mean.numpy(), whole.mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(merged.centred_products().numpy(),
                               whole.centred_products().numpy(), rtol=0.05, atol=0.05 * float(
                                   whole.centred_products().abs().max()))
    with pytest.raises(ValueError, match="same voxels"):
        merged.merge(CorrelationSketch(60, 8, device="cpu"))
    with pytest.raises(ValueError, match=r"\(tokens, 60\)"):
        whole.update(lowrank[:, :59])


def test_kronecker_factors_compress_both_sides_or_give_way_to_a_dense_matrix():
    from llmbrain.networks._sketch import _kronecker_shape

    rows_a, rows_b, cols_a, cols_b = _kronecker_shape(1536, 512)      # SmolLM2, sketch 512
    assert (rows_a * rows_b, cols_a * cols_b) == (1536, 512)
    assert max(cols_a / rows_a, cols_b / rows_b) <= 0.75 and min(cols_a, cols_b) >= 8
    assert _kronecker_shape(1531, 512) is None        # a prime width
    assert _kronecker_shape(30, 16) is None           # factors too small to be near Gaussian


def test_kronecker_sketch_takes_runs_and_flat_blocks_alike():
    """Two runs of 256 voxels, a sketch of 64 columns: Kronecker factors per run."""
    gen = torch.Generator().manual_seed(0)
    strengths = torch.linspace(8, 1, 8, dtype=torch.float64)[:, None]
    x = torch.randn(3000, 8, generator=gen, dtype=torch.float64) @ (
        strengths * torch.randn(8, 512, generator=gen, dtype=torch.float64))
    x = (x + 0.3 * torch.randn(3000, 512, generator=gen, dtype=torch.float64) + 5.0).float()
    by_runs, flat = (CorrelationSketch(512, 64, device="cpu", groups=2) for _ in range(2))
    assert by_runs._test.shape is not None
    for start in range(0, 3000, 700):
        block = x[start:start + 700]
        by_runs.update(block.reshape(-1, 2, 256).transpose(0, 1))   # the factors' path
        flat.update(block)                                          # the dense path
    omega = by_runs.omega.numpy()
    for part in omega.reshape(2, 256, 64):              # orthonormal columns in each run
        np.testing.assert_allclose(part.T @ part, np.eye(64), atol=1e-12)
    centred = x.double().numpy() - x.double().numpy().mean(axis=0)
    expected = centred.T @ centred @ omega
    for sketch in (by_runs, flat):
        np.testing.assert_allclose(sketch.centred_products().numpy(), expected,
                                   atol=0.01 * np.abs(expected).max())
        maps, _ = sketch.principal_maps(8)
        cosines = np.abs(np.sum(maps.double().numpy() *
                                _correlation_eigenvectors(x.double().numpy(), 8), axis=1))
        assert cosines.min() > 0.99
    few = CorrelationSketch(512, 64, device="cpu", groups=2).update(x[:8])
    with pytest.raises(ValueError, match="at least 9 tokens"):
        few.principal_maps(8)


@pytest.fixture(scope="module")
def planted():
    X, _ = planted_networks(n_tokens=3000, n_layers=2, n_neurons=100, n_networks=6,
                            within_layer=True, hooks=["up", "act"], seed=1)
    return X


def _matched(a, b) -> np.ndarray:
    return np.abs(match_components(a.maps_z_, b.maps_z_)[1])


@pytest.mark.parametrize("sketch_size", [None, 40])
def test_online_fit_agrees_with_the_offline_recipe(planted, sketch_size):
    offline = FunctionalNetworks(3, **RECIPE).fit(planted)
    online = OnlineNetworks(3, sketch_size=sketch_size, verbose=0).fit(planted)
    assert online.runs_ == [online.networks_]
    fitted = online.networks_
    assert isinstance(fitted, FunctionalNetworks) and fitted.n_tokens_ == 3000
    assert fitted.maps_z_.dims == offline.maps_z_.dims
    assert list(fitted.maps_z_["hook"].values) == ["up", "act"]
    np.testing.assert_allclose(fitted.mean_.values, offline.mean_.values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fitted.scale_.values, offline.scale_.values, rtol=1e-4)
    assert _matched(offline, fitted).min() > 0.97
    assert fitted.fit_info_["online"]["exact"] == (sketch_size is None)
    # what the offline networks feed, the online ones feed
    scores = network_scores(fitted)
    assert scores.dims == ("layer", "neuron") and np.isfinite(scores.values).all()
    assert np.corrcoef(scores.values.ravel(), network_scores(offline).values.ravel())[0, 1] > 0.95


def test_partial_fit_in_blocks_equals_one_fit(planted):
    blocks = OnlineNetworks(3, n_runs=2, tokens_per_run=1500, sketch_size=None, verbose=0)
    for start in range(0, 3000, 700):
        blocks.partial_fit(planted.isel(token=slice(start, start + 700)))
    assert blocks.n_tokens_seen_ == 3000 and blocks.run_edges_ == [0, 1500, 3000]
    blocks.decompose()
    assert isinstance(blocks.networks_, NetworkRecurrence)
    assert [run.n_tokens_ for run in blocks.runs_] == [1500, 1500]
    for run, tokens in zip(blocks.runs_, (slice(0, 1500), slice(1500, 3000))):
        alone = OnlineNetworks(3, sketch_size=None, verbose=0).fit(planted.isel(token=tokens))
        np.testing.assert_allclose(run.mean_.values, alone.networks_.mean_.values, rtol=1e-5,
                                   atol=1e-6)
        assert _matched(alone.networks_, run).min() > 0.97
    with pytest.raises(ValueError, match="other layers"):
        blocks.partial_fit(planted.isel(layer=[0]))


def test_blocks_come_in_and_out_of_inference_mode(planted):
    """The recorder runs in inference mode, a user's blocks may not: the sketches take
    both, and decomposing frees their block buffers."""
    mixed = OnlineNetworks(3, sketch_size=40, verbose=0)
    with torch.inference_mode():
        mixed.partial_fit(planted.isel(token=slice(0, 1000)))
    mixed.partial_fit(planted.isel(token=slice(1000, None)))
    assert mixed._workspaces
    mixed.decompose()
    assert not mixed._workspaces
    whole = OnlineNetworks(3, sketch_size=40, verbose=0).fit(planted)
    np.testing.assert_allclose(mixed.networks_.mean_.values, whole.networks_.mean_.values,
                               rtol=1e-5, atol=1e-6)
    assert _matched(whole.networks_, mixed.networks_).min() > 0.97


def test_online_find_networks_sees_the_offline_tokens(llama, tokenizer, texts):
    kw = dict(n_components=3, n_runs=2, tokens_per_run=256, window=32, verbose=0)
    offline = find_networks(llama, tokenizer, texts * 30, **kw)
    online = find_networks(llama, tokenizer, texts * 30, online=True, sketch_size=None, **kw)
    assert isinstance(online, NetworkRecurrence) and len(online.runs_) == 2
    for a, b in zip(offline.runs_, online.runs_):
        assert a.n_tokens_ == b.n_tokens_          # the same split into runs
        np.testing.assert_allclose(b.mean_.values, a.mean_.values, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(b.scale_.values, a.scale_.values, rtol=1e-3, atol=1e-5)
        assert b.maps_z_.shape == a.maps_z_.shape
    assert network_scores(online).shape == network_scores(offline).shape
    with pytest.raises(ValueError, match="online=True fits each layer"):
        find_networks(llama, tokenizer, texts, online=True, scope="all", n_components=3,
                      tokens_per_run=64, window=32, verbose=0)


def test_the_sink_receives_the_recording(llama, tokenizer, texts):
    estimator = OnlineNetworks(2, hooks=("up",), sketch_size=None, verbose=0)
    fitted = record(llama, tokenizer, texts, None, hook=estimator.hooks, window=32,
                    progress=False, sink=estimator.sink())
    assert fitted is estimator and "hook" not in fitted.networks_.maps_z_.dims
    assert fitted.networks_.n_tokens_ == fitted.n_tokens_seen_ > 0


def test_the_sink_refuses_non_finite_activations_itself(llama, tokenizer, texts):
    import copy

    broken = copy.deepcopy(llama)
    with torch.no_grad():
        broken.model.layers[1].mlp.up_proj.weight[3, 0] = float("nan")
    estimator = OnlineNetworks(2, verbose=0)
    assert estimator.sink().checks_finite            # the recorder leaves the check to it
    with pytest.raises(ValueError, match="inf or NaN activations at layer 1, hook 'up'"):
        record(broken, tokenizer, texts, None, hook=estimator.hooks, window=32, dtype="float32",
               progress=False, sink=estimator.sink())


def test_bad_input_is_refused_with_what_to_do(planted):
    with pytest.raises(ValueError, match="tokens_per_run"):
        OnlineNetworks(3, n_runs=2, verbose=0).partial_fit(planted)
    with pytest.raises(ValueError, match="No tokens"):
        OnlineNetworks(3).decompose()
    with pytest.raises(ValueError, match="exceeds the 200 voxels"):
        OnlineNetworks(201, verbose=0).fit(planted)
    with pytest.raises(ValueError, match="sketch_size"):
        OnlineNetworks(3, sketch_size=0).fit(planted)
    with pytest.raises(ValueError, match="fewer than n_components"):
        OnlineNetworks(3, n_runs=2, tokens_per_run=2999, verbose=0).fit(planted)


def test_one_pass_gives_calibration_statistics_and_networks(llama, tokenizer, texts):
    from llmbrain.pruning import collect_calibration_stats

    kw = dict(window=32, progress=False)
    networks = OnlineNetworks(2, sketch_size=None, verbose=0)
    stats = collect_calibration_stats(llama, tokenizer, texts, networks=networks, **kw)
    alone = collect_calibration_stats(llama, tokenizer, texts, **kw)
    for name in alone.data_vars:
        np.testing.assert_allclose(stats[name].values, alone[name].values, rtol=1e-6)
    separate = record(llama, tokenizer, texts, None, hook=("up", "act"), dtype="float32",
                      sink=OnlineNetworks(2, sketch_size=None, verbose=0).sink(), **kw)
    assert networks.networks_.n_tokens_ == separate.networks_.n_tokens_ == stats.attrs["n_tokens"]
    np.testing.assert_allclose(networks.networks_.mean_.values, separate.networks_.mean_.values,
                               rtol=1e-6, atol=1e-7)
    with pytest.raises(TypeError, match="OnlineNetworks"):
        collect_calibration_stats(llama, tokenizer, texts, networks="yes", **kw)


def test_a_split_sink_needs_its_hook_points_recorded(llama, tokenizer, texts):
    from llmbrain.recording import MemorySink, SplitSink

    up, act = record(llama, tokenizer, texts, None, hook=("up", "act"), window=32,
                     progress=False, sink=SplitSink([("up", MemorySink()), ("act", MemorySink())]))
    both = record(llama, tokenizer, texts, None, hook=("up", "act"), window=32, progress=False)
    np.testing.assert_array_equal(up["activations"].values,
                                  both["activations"].sel(hook="up").values)
    assert act.attrs["hook"] == "act" and "hook" not in act["activations"].dims
    with pytest.raises(ValueError, match="record them too"):
        record(llama, tokenizer, texts, None, hook="up", window=32, progress=False,
               sink=SplitSink([("act", MemorySink())]))
