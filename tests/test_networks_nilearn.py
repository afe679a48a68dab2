"""The nilearn backend, and agreement between the torch and nilearn backends."""

import numpy as np
import pytest
import torch
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
    common = dict(n_components=4, scope="all", n_restarts=3, progress=False, target_count=40)
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
                             progress=False, target_count=40).fit(X)
    assert est.components_.shape == (4, 2, 48)
    assert np.isfinite(est.maps_z_.values).all()
    assert matched_abs_r(est.components_.values, truth.values).min() > 0.8


def test_nilearn_backend_rejects_fastica(planted):
    X, _ = planted
    with pytest.raises(ValueError, match="method='fastica' runs with backend='torch'"):
        FunctionalNetworks(4, method="fastica", backend="nilearn", progress=False).fit(X)
