"""Networks of a model over a corpus in one call (the recipe that feeds pruning)."""

import numpy as np
import pytest

from llmbrain.networks import FunctionalNetworks, NetworkRecurrence, find_networks, \
    scaled_components
from llmbrain.pruning import network_scores


def test_scaled_components_follow_the_recipe():
    assert scaled_components(2 * 11008) == 128
    assert scaled_components(2 * 1536) == 18
    assert scaled_components(10) == 2
    with pytest.raises(ValueError):
        scaled_components(1)


def test_find_networks_records_both_hooks_and_unites_runs(llama, tokenizer, texts):
    corpus = texts * 30
    fitted = find_networks(llama, tokenizer, corpus, n_components=3, n_runs=2,
                           tokens_per_run=128, window=32, verbose=0)
    assert isinstance(fitted, NetworkRecurrence) and len(fitted.runs_) == 2
    maps = fitted.runs_[0].maps_z_
    assert list(maps["hook"].values) == ["up", "act"] and maps.sizes["component"] == 3 * 3
    scores = network_scores(fitted)
    expected = np.maximum(*[abs(run.maps_z_).max(("component", "hook")).values
                            for run in fitted.runs_])
    np.testing.assert_allclose(scores.values, expected)
    one = find_networks(llama, tokenizer, corpus, hook="mlp", n_components=3, n_runs=1,
                        tokens_per_run=128, window=32, verbose=0)
    assert isinstance(one, FunctionalNetworks) and "hook" not in one.maps_z_.dims
    with pytest.raises(ValueError, match="need 768"):
        find_networks(llama, tokenizer, texts, n_components=3, n_runs=3, tokens_per_run=256,
                      window=32, verbose=0)
