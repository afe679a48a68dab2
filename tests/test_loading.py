import pytest
import torch

from llmbrain.models import cache_dir, load_model, model_fingerprint


def test_missing_paths_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="No GGUF file"):
        load_model(tmp_path / "absent.gguf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(tmp_path / "empty")


def test_local_folder_round_trip(tmp_path, llama, tokenizer):
    llama.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    model, tok = load_model(tmp_path / "m")
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, llama(ids).logits)
    assert tok.pad_token is not None


def test_cache_dir_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMBRAIN_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LLMBRAIN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x" / "llmbrain"


def test_fingerprint_tells_models_apart(llama):
    from llmbrain._testing import tiny_model

    assert model_fingerprint(llama) == model_fingerprint(tiny_model("llama", seed=1))
    assert model_fingerprint(llama) != model_fingerprint(tiny_model("llama", intermediate_size=64))


@pytest.mark.integration
def test_default_model_is_plain_and_cached(smollm2):
    model, tokenizer = smollm2
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert model.config.intermediate_size == 1536
    assert not getattr(model, "is_quantized", False)
    assert not hasattr(model.config, "quantization_config")
    assert model.float() is model  # a quantized-flagged model refuses .float()
    assert any((cache_dir() / "models").glob("SmolLM2-135M-Instruct*/model.safetensors"))


def test_pruned_folder_with_uneven_layers_loads(tmp_path, tokenizer):
    import numpy as np

    from llmbrain._testing import tiny_model
    from llmbrain.pruning import PruningPlan, prune_model, save_pruned

    model = tiny_model("llama")
    keep = {0: np.arange(10), 1: np.arange(0, 48, 2), 2: np.arange(40)}
    plan = PruningPlan(keep=keep, n_neurons={layer: 48 for layer in keep}, criterion="custom",
                       sparsity=0.5, allocation="custom")
    prune_model(model, plan)
    save_pruned(model, tokenizer, tmp_path / "pruned", plan=plan)
    loaded, _ = load_model(tmp_path / "pruned")
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
