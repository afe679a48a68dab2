"""Parameter counts and throughput."""

from __future__ import annotations

import pytest

from llmbrain._testing import tiny_model
from llmbrain.evaluation import count_parameters, measure_efficiency


def test_count_parameters_tiny_llama(llama):
    counts = count_parameters(llama)
    assert counts["n_params"] == sum(p.numel() for p in llama.parameters())
    # 3 layers x (gate, up, down) x 32 hidden x 48 neurons, no biases.
    assert counts["n_mlp_params"] == 3 * 3 * 32 * 48
    assert counts["n_neurons"] == 3 * 48
    assert counts["weight_bytes"] >= 4 * counts["n_params"]


def test_count_parameters_shrinks_with_narrower_mlps():
    wide, narrow = tiny_model("gpt2"), tiny_model("gpt2", n_inner=24)
    assert count_parameters(wide)["n_mlp_params"] - count_parameters(narrow)["n_mlp_params"] \
        == 3 * (2 * 32 * 24 + 24)  # c_fc weight + bias and c_proj weight per layer


def test_measure_efficiency(llama, tokenizer):
    result = measure_efficiency(llama, tokenizer, batch_size=2, seq_len=16, warmup=1, repeats=3)
    assert result["tokens_per_s"] > 0
    assert result["seconds_min"] <= result["seconds_per_batch"] <= result["seconds_max"]
    assert result["tokens_per_s"] == pytest.approx(32 / result["seconds_per_batch"])
    with pytest.raises(ValueError):
        measure_efficiency(llama, tokenizer, repeats=0)
