import pytest
import torch

from llmbrain._testing import TINY_ARCHITECTURES, tiny_model
from llmbrain.models import ArchitectureAdapter, get_adapter, register_adapter, \
    supported_architectures


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
