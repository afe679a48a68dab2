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


def test_a_local_folder_goes_to_the_device_asked_for(tmp_path, llama, tokenizer, monkeypatch):
    from llmbrain.models import loading

    llama.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    # the meta device stands for a GPU: a device the weights must be moved to
    monkeypatch.setattr(loading, "check_device", lambda device: torch.device("meta"))
    model, _ = load_model(tmp_path / "m", device="cuda")
    assert {p.device.type for p in model.parameters()} == {"meta"}


def test_cache_dir_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMBRAIN_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LLMBRAIN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x" / "llmbrain"


def test_fingerprint_tells_models_apart(llama):
    from llmbrain._testing import tiny_model

    assert model_fingerprint(llama) == model_fingerprint(tiny_model("llama", seed=0))
    assert model_fingerprint(llama) != model_fingerprint(tiny_model("llama", intermediate_size=64))


def test_fingerprint_covers_the_weights():
    from llmbrain._testing import tiny_model

    model = tiny_model("llama")
    before = model_fingerprint(model)
    assert before != model_fingerprint(tiny_model("llama", seed=1))
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight.mul_(1.01)  # a fine-tune of one matrix
    assert model_fingerprint(model) != before


def test_fingerprint_covers_offloaded_weights(tmp_path):
    # accelerate keeps offloaded weights (to the disk, or to the CPU when the model
    # runs on GPUs) on the meta device until their layer runs
    from accelerate import dispatch_model

    from llmbrain._testing import tiny_model

    fingerprints = []
    for change in (1.0, 1.01):
        model = tiny_model("llama")
        with torch.no_grad():
            model.model.layers[1].mlp.down_proj.weight.mul_(change)
        in_memory = model_fingerprint(model)
        device_map = {"model.embed_tokens": "cpu", "model.norm": "cpu",
                      "model.rotary_emb": "cpu", "lm_head": "cpu"}
        device_map.update({f"model.layers.{i}": "disk" if i == 1 else "cpu"
                           for i in range(model.config.num_hidden_layers)})
        model = dispatch_model(model, device_map, offload_dir=tmp_path / f"offload-{change}")
        assert model.model.layers[1].mlp.down_proj.weight.is_meta
        assert model_fingerprint(model) == in_memory
        fingerprints.append(in_memory)
    assert fingerprints[0] != fingerprints[1]


@pytest.mark.integration
def test_default_model_is_plain_and_cached(smollm2):
    model, tokenizer = smollm2
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert model.config.intermediate_size == 1536
    assert not getattr(model, "is_quantized", False)
    assert not hasattr(model.config, "quantization_config")
    assert model.float() is model  # a quantized-flagged model refuses .float()
    from llmbrain.models import cached_models, default_model_path

    source = str(default_model_path().resolve())
    assert any(source in entry.sources and (entry.path / "model.safetensors").is_file()
               for entry in cached_models())


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


def test_damaged_gguf_is_a_clear_error(tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(b"GGUF\x03\x00\x00\x00\x01\x02")  # a header cut short
    with pytest.raises(ValueError, match="Could not read the GGUF file .*cut.gguf.*damaged"):
        load_model(cut, use_cache=False)


def test_unavailable_device_is_refused_before_loading(tmp_path, monkeypatch):
    from llmbrain.models import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="'cuda' is not available.*'cpu'"):
        load_model(tmp_path / "absent", device="cuda")  # refused before the path is looked at
    with pytest.raises(ValueError, match="no torch device"):
        check_device("gpu")
    assert check_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("pruned", [False, True])
def test_damaged_weights_are_a_clear_error(pruned, tmp_path, llama, tokenizer):
    import numpy as np

    from llmbrain.pruning import PruningPlan, prune_model, save_pruned

    folder = tmp_path / "m"
    if pruned:
        from llmbrain._testing import tiny_model

        model = tiny_model("llama")
        keep = {0: np.arange(10), 1: np.arange(20), 2: np.arange(30)}
        prune_model(model, PruningPlan(keep=keep, n_neurons={l: 48 for l in keep}))
        save_pruned(model, tokenizer, folder)
    else:
        llama.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(ValueError, match="damaged or cut short"):
        load_model(folder)
