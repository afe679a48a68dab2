"""Recording the real SmolLM2-135M-Instruct."""

import numpy as np
import pytest
import torch

from llmbrain import open_activations, record, to_volumes

pytestmark = pytest.mark.integration


def test_smollm2_layer_equals_manual_recomputation(smollm2, tmp_path):
    model, tokenizer = smollm2
    ds = record(model, tokenizer, "default", tmp_path / "s.zarr", layers=[0, 29], window=64,
                batch_size=2, max_tokens=128, dtype="float32", progress=False)
    assert ds["activations"].shape == (128, 2, 1536)
    mlp = model.model.layers[29].mlp
    captured = {}
    handle = mlp.register_forward_pre_hook(lambda m, a: captured.setdefault("x", a[0]))
    ids = torch.as_tensor(ds["token_id"].values[:64].astype(np.int64))[None]
    with torch.no_grad():
        model(input_ids=ids)
    handle.remove()
    x = captured["x"]
    expected = (mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x))[0].detach().numpy()
    np.testing.assert_allclose(ds["activations"].sel(layer=29).values[:64], expected,
                               rtol=1e-4, atol=1e-4)
    volumes = to_volumes(open_activations(tmp_path / "s.zarr")["activations"])
    assert volumes.layout.shape == (48, 32, 2)  # 1536 neurons as a 48 x 32 slice
