import pytest
import torch

from llmbrain._testing import TINY_ARCHITECTURES, tiny_model
from llmbrain.models import ArchitectureAdapter, get_adapter, register_adapter, \
    supported_architectures


@pytest.fixture(autouse=True)
def _registry():
    """Forget the adapters a test registers."""
    from llmbrain.models import adapters

    saved = dict(adapters._REGISTRY)
    yield
    adapters._REGISTRY.clear()
    adapters._REGISTRY.update(saved)


@pytest.mark.parametrize("architecture", sorted(TINY_ARCHITECTURES))
def test_adapter_names_the_mlp(architecture):
    model = tiny_model(architecture)
    adapter = get_adapter(model)
    hidden = model.config.hidden_size
    assert adapter.n_layers(model) == 3
    assert adapter.neurons_per_layer(model) == [48, 48, 48]
    assert tuple(adapter.down_weight(model, 1).shape) == (hidden, 48)
    up = adapter.up_weights(model, 1)
    assert len(up) == (2 if adapter.gated else 1)
    assert all(tuple(w.shape) == (48, hidden) for w in up)
    assert adapter.act_module(model, 0) is not None
    assert adapter.attention_out_proj(model, 2) is not None


def test_unknown_architecture_lists_supported_and_how_to_register():
    class Config:
        model_type = "brainformer"

    with pytest.raises(ValueError, match="brainformer") as info:
        get_adapter(Config())
    message = str(info.value)
    assert "llama" in message and "gpt2" in message and "register_adapter" in message


def test_register_adapter_serves_a_new_model_type():
    model = tiny_model("llama")
    model.config.model_type = "my-llama"
    adapter = register_adapter(ArchitectureAdapter(
        name="my-llama", model_types=("my-llama",), layers="model.layers", mlp="mlp",
        up=("gate_proj", "up_proj"), down="down_proj", act="act_fn", gated=True))
    assert get_adapter(model) is adapter
    assert "my-llama" in supported_architectures()
    with pytest.raises(ValueError, match="model_types"):
        register_adapter(ArchitectureAdapter(name="x", layers="a", mlp="", up=("b",), down="c",
                                             act=None))


def test_gpt2_conv1d_weights_are_seen_as_linear():
    model = tiny_model("gpt2")
    adapter = get_adapter(model)
    x = torch.randn(5, model.config.n_embd)
    c_fc = adapter.up_projs(model, 0)[0]
    expected = c_fc(x)
    manual = x @ adapter.up_weights(model, 0)[0].T + c_fc.bias
    torch.testing.assert_close(manual, expected)


def _starcoder2():
    """A tiny model of a family llmbrain has no adapter for."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        "starcoder2", hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, vocab_size=260,
        max_position_embeddings=256, bos_token_id=256, eos_token_id=257, pad_token_id=258)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()


STARCODER2 = dict(name="starcoder2", model_types=("starcoder2",), layers="model.layers",
                  mlp="mlp", up=("c_fc",), down="c_proj", act="act")


@pytest.mark.parametrize("fields,message", [
    (dict(up="gate_proj"), "up must be a tuple"),
    (dict(model_types="mymodel"), "model_types must be a tuple"),
    (dict(gated=True), "a gated MLP has 2 input projection"),
    (dict(layers="model..layers"), "layers must be a dotted path"),
    (dict(down="mlp.c_proj"), "down must name one attribute"),
    (dict(fused_gate_up=True), "fused_gate_up=True needs gated=True"),
])
def test_register_adapter_checks_its_fields(fields, message):
    with pytest.raises(ValueError, match=message):
        register_adapter(ArchitectureAdapter(**{**STARCODER2, "model_types": ("bad",),
                                                **fields}))
    assert "bad" not in supported_architectures()


def test_an_adapter_that_does_not_fit_the_model_is_refused_before_any_forward(
        tokenizer, texts, tmp_path):
    from llmbrain import record

    model = _starcoder2()
    model.config.model_type = "starcoder2-typo"
    register_adapter(ArchitectureAdapter(**{**STARCODER2, "model_types": ("starcoder2-typo",),
                                            "up": ("fc_in",)}))
    with pytest.raises(ValueError, match="does not fit .*no module 'fc_in' .*c_fc, c_proj, act"):
        get_adapter(model)
    with pytest.raises(ValueError, match="does not fit"):
        record(model, tokenizer, texts, tmp_path / "s.zarr", window=32, progress=False)
    assert not (tmp_path / "s.zarr").exists()
    model.config.model_type = "starcoder2-ok"
    register_adapter(ArchitectureAdapter(**{**STARCODER2, "model_types": ("starcoder2-ok",)}))
    ds = record(model, tokenizer, texts, None, window=32, max_tokens=64, progress=False)
    assert ds.sizes["neuron"] == 48


def test_pruning_writes_the_width_to_the_adapters_config_attribute():
    from llmbrain.pruning import make_plan, prune_model, score_neurons

    model = tiny_model("opt")
    model.config.model_type = "my-opt"
    adapter = get_adapter(tiny_model("opt"))
    register_adapter(ArchitectureAdapter(**{
        **{f: getattr(adapter, f) for f in ("layers", "mlp", "up", "down", "act", "attn_out")},
        "name": "my-opt", "model_types": ("my-opt",), "width_attr": "ffn_dim"}))
    prune_model(model, make_plan(score_neurons(model, "magnitude"), 0.25))
    assert model.config.ffn_dim == 36
    assert "intermediate_size" not in model.config.to_dict()


def test_mixture_of_experts_is_refused_clearly():
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        "mixtral", hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, vocab_size=260, num_local_experts=4,
        bos_token_id=256, eos_token_id=257)
    model = AutoModelForCausalLM.from_config(config)
    register_adapter(ArchitectureAdapter(
        name="mixtral", model_types=("mixtral",), layers="model.layers", mlp="mlp.experts",
        up=("gate_up_proj",), down="down_proj", act="act_fn", gated=True, fused_gate_up=True))
    with pytest.raises(ValueError, match="mixture-of-experts.*num_local_experts=4"):
        get_adapter(model)


def test_adapter_from_json(tmp_path):
    import json

    from llmbrain.models import load_adapter

    file = tmp_path / "adapter.json"
    file.write_text(json.dumps({**STARCODER2, "model_types": ["starcoder2"], "up": ["c_fc"]}))
    adapter = load_adapter(file)
    assert adapter.up == ("c_fc",) and adapter.model_types == ("starcoder2",)
    file.write_text(json.dumps({**STARCODER2, "model_types": ["x"], "upp": ["c_fc"]}))
    with pytest.raises(ValueError, match="unknown: \\['upp'\\]"):
        load_adapter(file)
