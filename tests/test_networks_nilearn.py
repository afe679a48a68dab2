"""The nilearn backend, and agreement between the torch and nilearn backends."""

import numpy as np
import pytest
import torch
import xarray as xr
from scipy.optimize import linear_sum_assignment

from llmbrain.networks import FunctionalNetworks, planted_networks

torch.set_num_threads(1)


def matched_abs_r(a, b):
    a, b = np.asarray(a).reshape(len(a), -1), np.asarray(b).reshape(len(b), -1)
    r = np.abs(np.corrcoef(np.vstack([a, b]))[:len(a), len(a):])
    rows, cols = linear_sum_assignment(-r)
    return r[rows, cols]


@pytest.fixture(scope="module")
def planted():
    return planted_networks(n_tokens=1200, n_layers=2, n_neurons=48, n_networks=4, seed=5)


def test_torch_and_nilearn_canica_agree(planted):
    X, truth = planted
    common = dict(n_components=4, scope="all", n_init=3, verbose=0, target_count=40)
    torch_est = FunctionalNetworks(backend="torch", **common).fit(X)
    nilearn_est = FunctionalNetworks(backend="nilearn", **common).fit(X)
    assert matched_abs_r(torch_est.components_.values, nilearn_est.components_.values).min() > 0.99
    assert matched_abs_r(nilearn_est.components_.values, truth.values).min() > 0.95
    # both report maps in llmbrain's (component, layer, neuron) frame with the same conventions
    flat = nilearn_est.components_.values.reshape(4, -1)
    assert np.all(flat.max(axis=1) >= -flat.min(axis=1))
    agree = (torch_est.key_neurons_ == nilearn_est.key_neurons_).mean()
    assert float(agree) > 0.95
    assert nilearn_est.transform(X).shape == (1200, 4)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_nilearn_dictlearning_runs(planted):
    X, truth = planted
    est = FunctionalNetworks(4, method="dictlearning", backend="nilearn", scope="all",
                             verbose=0, target_count=40).fit(X)
    assert est.components_.shape == (4, 2, 48)
    assert np.isfinite(est.maps_z_.values).all()
    assert matched_abs_r(est.components_.values, truth.values).min() > 0.8


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_dictlearning_keeps_its_own_sign_rule():
    # each network: nine neurons at +1 and one at -4. DictLearning's rule (more positive
    # than negative neurons) keeps the nine positive; CanICA's rule (largest tail
    # positive) would flip them.
    rng = np.random.default_rng(0)
    maps = np.zeros((3, 96))
    for i in range(3):
        neurons = rng.choice(96, 10, replace=False)
        maps[i, neurons[:9]], maps[i, neurons[9]] = 1.0, -4.0
    courses = rng.laplace(size=(1200, 3)) * (rng.random((1200, 3)) < 0.3) * 3
    values = courses @ maps + 0.3 * rng.standard_normal((1200, 96))
    X = xr.DataArray(values.reshape(1200, 2, 48).astype(np.float32),
                     dims=("token", "layer", "neuron"))
    est = FunctionalNetworks(3, method="dictlearning", backend="nilearn", scope="all",
                             n_init=1, threshold=2.0, verbose=0).fit(X)
    flat = est.components_.values.reshape(3, -1)
    assert np.all((flat > 0).sum(axis=1) > (flat < 0).sum(axis=1))
    assert matched_abs_r(np.sign(flat), np.sign(maps)).min() > 0.9   # the networks are found


@pytest.mark.parametrize("backend", ["torch", "nilearn"])
def test_constant_activations_are_refused(backend):
    X = xr.DataArray(np.zeros((200, 2, 16), np.float32), dims=("token", "layer", "neuron"))
    with pytest.warns(UserWarning, match="32 of 32 neurons are constant"), \
            pytest.raises(ValueError, match="Only 0 of 32 neurons of layers \\[0, 1\\] vary"):
        FunctionalNetworks(3, backend=backend, scope="all", verbose=0).fit(X)


def test_nilearn_backend_rejects_fastica(planted):
    X, _ = planted
    with pytest.raises(ValueError, match="method='fastica' runs with backend='torch'"):
        FunctionalNetworks(4, method="fastica", backend="nilearn", verbose=0).fit(X)
