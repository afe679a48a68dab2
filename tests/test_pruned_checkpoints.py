"""A saved pruned model loads with the same logits, or is refused with a message."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from llmbrain._testing import byte_tokenizer, tiny_model
from llmbrain.models import load_model
from llmbrain.pruning import (PruningPlan, collect_calibration_stats, make_plan, prune_model,
                              save_pruned, score_neurons)

IDS = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])
TEXT = ["Functional networks in the brain rise and fall together over time. " * 6]


def _logits(model):
    with torch.no_grad():
        return model.eval()(IDS).logits


def _flap(architecture, allocation="uniform"):
    model = tiny_model(architecture)
    stats = collect_calibration_stats(model, byte_tokenizer(), TEXT, window=16, progress=False)
    plan = make_plan(score_neurons(model, "flap", calibration=stats), 0.25, allocation)
    return prune_model(model, plan, bias_compensation=stats)


@pytest.mark.parametrize("architecture", ["llama", "gpt2", "opt"])
def test_bias_compensated_model_loads_exactly_with_plain_transformers(architecture, tmp_path):
    model = _flap(architecture)
    assert model.config.llmbrain_pruning["down_bias_layers"] or architecture != "llama"
    save_pruned(model, byte_tokenizer(), tmp_path / "m")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "m", attn_implementation="eager")
    torch.testing.assert_close(_logits(plain), _logits(model), rtol=0, atol=0)
    loaded, _ = load_model(tmp_path / "m")
    torch.testing.assert_close(_logits(loaded), _logits(model), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", ["bias without a config switch", "layers of other widths"])
def test_checkpoint_plain_transformers_would_misread_is_refused(case, tmp_path):
    if case == "layers of other widths":
        model = tiny_model("llama")
        keep = {0: np.arange(10), 1: np.arange(20), 2: np.arange(30)}
        prune_model(model, PruningPlan(keep=keep, n_neurons={layer: 48 for layer in keep}))
    else:
        model = _flap("qwen2")
    save_pruned(model, byte_tokenizer(), tmp_path / "m")
    with pytest.raises(ValueError, match="pruned by llmbrain: load it with llmbrain.load_model"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    loaded, tokenizer = load_model(tmp_path / "m")
    assert tokenizer is not None and loaded.config.model_type == model.config.model_type
    torch.testing.assert_close(_logits(loaded), _logits(model), rtol=1e-6, atol=1e-6)


def test_save_pruned_replaces_only_a_pruned_model(tmp_path):
    model = _flap("llama")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an llmbrain output"):
        save_pruned(model, None, tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"
    save_pruned(model, None, tmp_path / "m")
    with pytest.raises(FileExistsError, match="overwrite"):
        save_pruned(model, None, tmp_path / "m")
    save_pruned(model, None, tmp_path / "m", overwrite=True)
