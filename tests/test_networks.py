"""FunctionalNetworks (torch backend): recovery of planted networks, inputs, errors."""

import warnings

import nibabel as nib
import numpy as np
import pytest
import torch
import xarray as xr
from scipy.optimize import linear_sum_assignment
from sklearn.exceptions import NotFittedError

from llmbrain.networks import FunctionalNetworks, planted_networks
from llmbrain.networks._torch_ica import GroupPCA, fastica, fastica_layers, randomized_row_basis
from llmbrain.networks._zscore import zscore_tokens
from llmbrain.volumes import to_volumes

torch.set_num_threads(1)


def matched_abs_r(maps, truth):
    a = np.asarray(maps).reshape(len(maps), -1)
    b = np.asarray(truth).reshape(len(truth), -1)
    r = np.abs(np.corrcoef(np.vstack([a, b]))[:len(a), len(a):])
    rows, cols = linear_sum_assignment(-r.T)
    return r.T[rows, cols]


@pytest.fixture(scope="module")
def planted():
    return planted_networks(n_tokens=2000, n_layers=3, n_neurons=48, n_networks=4, seed=0)


def test_recovers_planted_networks(planted):
    X, truth = planted
    est = FunctionalNetworks(4, scope="all", verbose=0).fit(X)
    assert est.components_.dims == ("component", "layer", "neuron")
    assert est.components_.shape == (4, 3, 48)
    assert matched_abs_r(est.components_.values, truth.values).min() > 0.95
    # key neurons from a tuned threshold are the planted neurons
    n_planted = int((truth != 0).any("network").sum())
    est.set_threshold(target_count=n_planted)
    planted_mask = (truth != 0).any("network").values
    assert est.key_neurons_.values.sum() == n_planted
    assert (est.key_neurons_.values & planted_mask).sum() >= 0.9 * n_planted
    # nilearn's sign convention: the largest tail of every map is positive
    flat = est.components_.values.reshape(4, -1)
    assert np.all(flat.max(axis=1) >= -flat.min(axis=1))
    # maps_z_ is z-scored per component
    z = est.maps_z_.values.reshape(4, -1)
    np.testing.assert_allclose(z.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=1), 1, atol=1e-4)


def test_fastica_method_and_logcosh_recover(planted):
    X, truth = planted
    for params in ({"method": "fastica"}, {"fun": "logcosh"}):
        est = FunctionalNetworks(4, scope="all", verbose=0, **params).fit(X)
        assert matched_abs_r(est.components_.values, truth.values).min() > 0.95, params


def test_layer_scope_units_and_transform():
    X, truth = planted_networks(n_tokens=1500, n_layers=3, n_neurons=48, n_networks=6,
                                within_layer=True, seed=1)
    est = FunctionalNetworks(2, scope="layer", verbose=0, target_count=30).fit(X)
    assert est.units_ == [[0], [1], [2]]
    assert list(est.components_["unit"].values) == [0, 0, 1, 1, 2, 2]
    # each map lives in its own layer only
    for c, unit in enumerate(est.components_["unit"].values):
        other = [layer for layer in range(3) if layer != unit]
        assert np.all(est.components_.values[c, other] == 0)
        assert np.all(~est.network_masks_.values[c, other])
    assert matched_abs_r(est.components_.values, truth.values).min() > 0.9
    assert est.threshold_ > 0 and int(est.key_neurons_.sum()) == 30
    tc = est.transform(X)
    assert tc.dims == ("token", "component") and tc.shape == (1500, 6)
    for name in ("document", "position", "token_id", "token_text"):
        np.testing.assert_array_equal(tc[name].values, X[name].values)
    assert np.isfinite(tc.values).all()


def test_window_scope_covers_all_layers():
    X, _ = planted_networks(n_tokens=600, n_layers=5, n_neurons=16, n_networks=3,
                            network_size=6, seed=2)
    est = FunctionalNetworks(2, scope="window", window=2, stride=2, verbose=0,
                             threshold=1.0).fit(X)
    assert est.units_ == [[0, 1], [2, 3], [3, 4]]
    assert est.components_.sizes["component"] == 6


def test_transform_recovers_time_courses():
    X, _, courses = planted_networks(n_tokens=1200, n_networks=3, noise=0.3, seed=3,
                                     return_time_courses=True)
    est = FunctionalNetworks(3, scope="all", verbose=0, threshold=2.0).fit(X)
    tc = est.transform(X).values
    assert matched_abs_r(tc.T, courses.values.T).min() > 0.98
    raw = est.transform(X, maps="raw").values
    assert matched_abs_r(raw.T, courses.values.T).min() > 0.8


def test_streaming_groups_match_in_memory(planted):
    X, truth = planted
    streamed = FunctionalNetworks(4, scope="all", batch_tokens=200, verbose=0).fit(X)
    assert streamed.fit_info_["units"][0]["n_groups"] == 12
    assert matched_abs_r(streamed.components_.values, truth.values).min() > 0.95
    # bounded memory: max_memory_gb sets the group size
    small = FunctionalNetworks(4, scope="all", max_memory_gb=3e-4, verbose=0).fit(X)
    assert small.fit_info_["units"][0]["n_groups"] > 4
    assert matched_abs_r(small.components_.values, truth.values).min() > 0.95


def test_group_pca_merge_is_close_to_exact():
    gen = torch.Generator().manual_seed(0)
    signal = torch.randn(40, 5, generator=gen) * 3 @ torch.randn(5, 300, generator=gen)
    data = signal + torch.randn(40, 300, generator=gen)
    exact = GroupPCA(5, max_rows=1000)
    merged = GroupPCA(5, max_rows=20)  # forces merges
    for block in data.split(5):
        exact.add(block)
        merged.add(block)
    a, b = exact.components(), merged.components()
    # same subspace: singular values of a b^T all near 1
    s = torch.linalg.svdvals(a @ b.T)
    assert float(s.min()) > 0.99


def test_randomized_row_basis_matches_svd():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(200, 30, generator=gen) @ torch.randn(30, 500, generator=gen)
    rows = randomized_row_basis(a, 5, generator=gen)
    s = torch.linalg.svdvals(a)[:5]
    torch.testing.assert_close(torch.linalg.vector_norm(rows, dim=1), s, rtol=1e-3, atol=1e-3)


def test_fastica_unmixes_and_keeps_converged_restart():
    rng = np.random.default_rng(0)
    sources = rng.laplace(size=(3, 4000)) ** 3
    mixing = rng.normal(size=(3, 3))
    mixed = torch.tensor(mixing @ sources, dtype=torch.float32)
    out, info = fastica(mixed, n_init=4, fun="logcosh", random_state=0)
    assert info["converged"][info["best"]]
    assert matched_abs_r(out.numpy(), sources).min() > 0.99
    with pytest.raises(ValueError, match="contrast"):
        fastica(mixed, fun="tanh")


def heavy_tailed_activations(n_tokens=1000, n_layers=1, n_neurons=256, seed=0):
    """Activations shaped like an LLM's MLP neurons: broad, mildly heavy-tailed shared
    factors (Student t) and a few massive neurons, huge on a few tokens."""
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((n_tokens, n_layers, n_neurons))
    factors = rng.standard_t(5, size=(n_tokens, n_layers, 30))
    values += np.einsum("tlf,lfn->tln", factors,
                        0.5 * rng.standard_normal((n_layers, 30, n_neurons)))
    for layer in range(n_layers):
        neurons = rng.choice(n_neurons, 3, replace=False)
        tokens = rng.choice(n_tokens, 12, replace=False)
        values[np.ix_(tokens, [layer], neurons)] += 300 * rng.random((12, 1, 3))
    return xr.DataArray(values.astype(np.float32), dims=("token", "layer", "neuron"))


def group_pca_maps(x, k, n_groups=4):
    group_pca = GroupPCA(k, 8 * k)
    for block in torch.from_numpy(np.ascontiguousarray(x)).tensor_split(n_groups):
        block = block.clone()
        zscore_tokens(block, warn=False)
        group_pca.add(randomized_row_basis(block, k, generator=torch.Generator().manual_seed(0)))
    return group_pca.components()


def test_fastica_cube_in_float32_gives_finite_maps():
    # With the fixed-point products in float32, the cube contrast used to make the
    # unmixing matrix nearly singular in a few percent of restarts; its float32
    # decorrelation then overflowed (NaN maps, or a LinAlgError from eigh).
    maps = group_pca_maps(heavy_tailed_activations(seed=0).values[:, 0], k=16)
    sources, info = fastica(maps, n_init=60, fun="cube", max_iter=30, random_state=0)
    assert bool(torch.isfinite(sources).all())
    assert np.isfinite(info["max_l1"]).all() and len(info["seeds"]) == 60
    X = heavy_tailed_activations(n_layers=2, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # cube converges slowly here
        est = FunctionalNetworks(16, scope="layer", fun="cube", n_init=10, max_iter=30,
                                 verbose=0).fit(X)
    assert np.isfinite(est.components_.values).all() and np.isfinite(est.maps_z_.values).all()


def test_fastica_reruns_diverged_restarts_in_float64_or_raises(monkeypatch):
    from llmbrain.networks import _torch_ica

    real = _torch_ica._iterate
    calls = []

    def float32_fails_first(x1, w_init, fun, max_iter, tol, iter_dtype):
        calls.append(iter_dtype)
        w, iters, done, ok = real(x1, w_init, fun, max_iter, tol, iter_dtype)
        if iter_dtype == torch.float32:
            w[0], ok[0] = torch.nan, False
        return w, iters, done, ok

    maps = group_pca_maps(heavy_tailed_activations(seed=0).values[:, 0], k=4)
    monkeypatch.setattr(_torch_ica, "_iterate", float32_fails_first)
    sources, info = fastica(maps, n_init=3, random_state=0)
    assert calls == [torch.float32, torch.float64]
    assert info["float64"] == [True, False, False] and bool(torch.isfinite(sources).all())

    def always_fails(x1, w_init, fun, max_iter, tol, iter_dtype):
        w, iters, done, ok = real(x1, w_init, fun, max_iter, tol, iter_dtype)
        return w * torch.nan, iters, done, [False] * len(ok)

    monkeypatch.setattr(_torch_ica, "_iterate", always_fails)
    with pytest.raises(RuntimeError, match="FastICA diverged .* in all 6 restarts"):
        fastica(maps, n_init=3, random_state=0)


@pytest.mark.parametrize("fun", ["logcosh", "cube"])
@pytest.mark.parametrize("n_init", [1, 3])
def test_fastica_of_several_sets_at_once_equals_one_by_one(fun, n_init):
    X = heavy_tailed_activations(n_layers=3, seed=2).values
    maps = torch.stack([group_pca_maps(X[:, layer], k=8) for layer in range(3)])
    rng = np.random.RandomState(0)
    seeds = [rng.randint(2**31 - 1, size=n_init) for _ in range(3)]
    together = fastica_layers(maps, seeds, fun=fun, max_iter=60)
    for one, (sources, info) in enumerate(together):
        alone, alone_info = fastica(maps[one], n_init=n_init, fun=fun, max_iter=60,
                                    seeds=seeds[one])
        assert info["seeds"] == alone_info["seeds"] == seeds[one].tolist()
        assert info["n_iter"] == alone_info["n_iter"] and info["best"] == alone_info["best"]
        assert info["converged"] == alone_info["converged"]
        torch.testing.assert_close(sources, alone, rtol=1e-4, atol=1e-5)   # float32 products
    assert {n for _, info in together for n in info["n_iter"]} != {60}   # some converged
    with pytest.raises(ValueError, match=f"{n_init} seeds for each of the 3 sets"):
        fastica_layers(maps, seeds[:2], fun=fun)


def test_fastica_of_several_sets_redoes_a_set_that_diverged(monkeypatch):
    from llmbrain.networks import _torch_ica

    real = _torch_ica._iterate

    def second_set_fails(x1, w_init, fun, max_iter, tol, iter_dtype):
        w, iters, done, finite = real(x1, w_init, fun, max_iter, tol, iter_dtype)
        if x1.dim() == 3:                  # the sets together, not fastica's rerun
            w[1], finite[1] = torch.nan, False
        return w, iters, done, finite

    X = heavy_tailed_activations(n_layers=2, seed=3).values
    maps = torch.stack([group_pca_maps(X[:, layer], k=4) for layer in range(2)])
    monkeypatch.setattr(_torch_ica, "_iterate", second_set_fails)
    (first, first_info), (second, second_info) = fastica_layers(maps, [[1], [3]])
    # the second set went through fastica itself, which ran its restart again
    assert first_info["float64"] == [False] and np.isfinite(second_info["max_l1"]).all()
    alone, alone_info = fastica(maps[1], n_init=1, seeds=[3])
    assert second_info == alone_info
    torch.testing.assert_close(second, alone)


def test_zscore_tokens():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(100, 6, generator=gen) * 3 + 1
    x[:, 2] = 5.0
    with pytest.warns(UserWarning, match="1 of 6 neurons are constant"):
        z, constant = zscore_tokens(x.clone())
    assert constant.tolist() == [False, False, True, False, False, False]
    assert torch.all(z[:, 2] == 0)


def test_fit_on_volumes_and_images(planted):
    X, _ = planted
    X = X.isel(token=slice(0, 800))
    ref = FunctionalNetworks(4, scope="all", n_groups=1, verbose=0).fit(X)
    vols = to_volumes(X)
    from_vols = FunctionalNetworks(4, scope="all", verbose=0).fit(vols)
    assert matched_abs_r(from_vols.components_.values, ref.components_.values).min() > 0.999
    # a bare image with a mask: neurons are the mask's voxels, in one pseudo-layer
    bare = FunctionalNetworks(4, scope="all", mask_img=vols.mask_img, verbose=0).fit(vols.img)
    assert bare.components_.shape == (4, 1, 144)
    img = bare.components_img_
    assert img.shape == vols.mask_img.shape + (4,)
    in_mask = np.asarray(img.dataobj)[np.asarray(vols.mask_img.dataobj) > 0].T   # (4, voxels)
    np.testing.assert_array_equal(in_mask, bare.components_.values[:, 0])
    assert matched_abs_r(vols.layout.from_masked(in_mask), ref.components_.values).min() > 0.999
    # components_img_ of a DataArray fit follows llmbrain's layout
    back = vols.layout.from_voxels(np.asarray(ref.components_img_.dataobj))
    np.testing.assert_allclose(back, ref.components_.values, atol=1e-6)
    # a list of images: one group per image
    halves = [to_volumes(X.isel(token=slice(0, 400))).img, to_volumes(X.isel(token=slice(400, 800))).img]
    est = FunctionalNetworks(4, scope="all", layout=vols.layout, verbose=0).fit(halves)
    assert est.fit_info_["units"][0]["n_groups"] == 2
    assert isinstance(est.maps_z_img_, nib.Nifti1Image)


def test_store_input(tmp_path, planted):
    from llmbrain import record
    from llmbrain._testing import byte_tokenizer, tiny_model

    texts = ["The cat sat on the mat. " * 12, "import numpy as np\n" * 12, "1 2 3 4 5 6 " * 20]
    store = tmp_path / "acts.zarr"
    record(tiny_model("llama"), byte_tokenizer(), texts, store, window=64, batch_size=4)
    est = FunctionalNetworks(3, scope="layer", layers=[0, 2], max_memory_gb=1.2e-4,
                             verbose=0, target_count=10).fit(store)
    assert list(est.components_["layer"].values) == [0, 2]
    assert est.fit_info_["units"][0]["n_groups"] > 4   # streamed in small groups
    assert est.source_attrs_["model"] == "tiny-random-llama"
    tc = est.transform(store)
    assert "token_text" in tc.coords and tc.sizes["component"] == 6
    with pytest.raises(ValueError, match=r"Layer\(s\) \[7\] are not in the activations"):
        FunctionalNetworks(3, layers=[0, 7], verbose=0).fit(store)


@pytest.mark.parametrize("params, match", [
    ({"n_components": 0}, "n_components must be a positive integer"),
    ({"method": "pca"}, "method must be one of"),
    ({"method": "dictlearning"}, "runs with backend='nilearn'"),
    ({"scope": "brain"}, "Unknown scope"),
    ({"scope": "window"}, "needs window="),
    ({"threshold": -1}, "threshold must be a positive number"),
    ({"target_count": 0}, "target_count must be a positive integer"),
    ({"fun": "tanh"}, "fun must be"),
    ({"n_components": 200, "scope": "all"}, "exceeds the 144 neurons"),
    ({"n_components": 60, "scope": "layer"}, "exceeds the 48 neurons"),
])
def test_bad_parameters(planted, params, match):
    X, _ = planted
    with pytest.raises(ValueError, match=match):
        FunctionalNetworks(**{"n_components": 4, "verbose": 0, **params}).fit(X)


def test_bad_data(planted):
    X, _ = planted
    few = X.isel(token=slice(0, 3))
    with pytest.raises(ValueError, match="exceeds the 3 tokens"):
        FunctionalNetworks(4, scope="all", verbose=0).fit(few)
    bad = X.isel(token=slice(0, 400)).copy()
    bad.values[5, 1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        FunctionalNetworks(4, scope="all", verbose=0).fit(bad)
    const = X.isel(token=slice(0, 400)).copy()
    const.values[:, 0, :5] = 1.0
    with pytest.warns(UserWarning, match="5 of 144 neurons are constant"):
        est = FunctionalNetworks(4, scope="all", n_groups=1, verbose=0).fit(const)
    assert not est.key_neurons_.values[0, :5].any()
    with pytest.raises(TypeError, match="Expected an activation store path"):
        FunctionalNetworks(4, verbose=0).fit(np.zeros((10, 3, 4)))
    with pytest.raises(ValueError, match="dims"):
        FunctionalNetworks(4, verbose=0).fit(xr.DataArray(np.zeros((10, 3, 4)),
                                                               dims=("a", "layer", "neuron")))
    with pytest.raises(NotFittedError, match="not fitted"):
        FunctionalNetworks(4).transform(X)


def test_threshold_keeping_nothing_warns(planted):
    X, _ = planted
    with pytest.warns(UserWarning, match="No neuron has"):
        est = FunctionalNetworks(4, scope="all", threshold=50.0, verbose=0).fit(X)
    assert not est.key_neurons_.values.any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est.set_threshold(target_count=12)
    assert int(est.key_neurons_.sum()) == 12
    assert "12 key neurons" in est.summary()


@pytest.mark.integration
def test_real_model_networks(tmp_path):
    from llmbrain import load_model, record

    model, tok = load_model("default")
    store = tmp_path / "smol.zarr"
    record(model, tok, "default", store, layers=[3, 20], window=256, max_tokens=1024)
    est = FunctionalNetworks(8, scope="layer", verbose=0).fit(store)
    assert est.components_.shape == (16, 2, 1536)
    assert np.isfinite(est.maps_z_.values).all()
    # z-scored maps of real neurons are heavy-tailed: the default threshold keeps some neurons
    assert 0 < int(est.key_neurons_.sum()) < 2 * 1536
    tc = est.transform(store)
    assert tc.sizes["component"] == 16 and "token_text" in tc.coords


def test_unconverged_fastica_warns_once_per_fit():
    X, _ = planted_networks(n_tokens=600, n_layers=3, n_neurons=40, n_networks=3,
                            within_layer=True, seed=0)
    estimator = FunctionalNetworks(3, method="fastica", scope="layer", fun="cube", max_iter=1,
                                   n_init=1, verbose=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimator.fit(X)
    messages = [str(w.message) for w in caught if "did not converge" in str(w.message)]
    assert len(messages) == 1, messages
    assert "3 of 3 units (layers 0-2" in messages[0]
