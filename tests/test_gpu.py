"""Every stage on a GPU gives what it gives on the CPU.

Skipped on machines without CUDA. ``LLMBRAIN_TEST_DEVICE=<device>`` runs them
on another device (``mps``, or ``cpu`` to try the tests themselves there):
``LLMBRAIN_TEST_DEVICE=cuda:1 python -m pytest tests/test_gpu.py``.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch

from llmbrain import ablate, load_model, open_activations, perplexity, record
from llmbrain.networks import OnlineNetworks
from llmbrain.networks._sketch import CorrelationSketch
from llmbrain.pruning import collect_calibration_stats, make_plan, prune_model, score_neurons

DEVICE = os.environ.get("LLMBRAIN_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else None)
pytestmark = pytest.mark.skipif(DEVICE is None, reason="needs a GPU (or LLMBRAIN_TEST_DEVICE)")

# float32 on a GPU: other kernels, other summation orders (matrix products stay in full
# float32: PyTorch does not use TF32 for them unless asked to)
RTOL, ATOL = 1e-4, 1e-5


def on(model, device):
    return copy.deepcopy(model).to(device)


def test_recording_to_memory_and_to_a_store(llama, tokenizer, texts, tmp_path):
    kwargs = dict(window=32, batch_size=2, progress=False)
    cpu = record(llama, tokenizer, texts, None, dtype="float32", **kwargs)
    model = on(llama, DEVICE)
    gpu = record(model, tokenizer, texts, None, dtype="float32", **kwargs)
    np.testing.assert_allclose(gpu["activations"].values, cpu["activations"].values,
                               rtol=RTOL, atol=ATOL)
    # the store is written from pinned host buffers, filled layer by layer
    for dtype in ("float32", "float16"):
        store = record(model, tokenizer, texts, tmp_path / f"{dtype}.zarr", dtype=dtype,
                       verify=True, **kwargs)
        np.testing.assert_allclose(store["activations"].values.astype(np.float32),
                                   cpu["activations"].values,
                                   rtol=1e-3 if dtype == "float16" else RTOL, atol=1e-3)
    reopened = open_activations(tmp_path / "float32.zarr")
    assert reopened.attrs["model_fingerprint"] == cpu.attrs["model_fingerprint"]


@pytest.mark.filterwarnings("ignore:No neuron has")
def test_online_networks(llama, tokenizer, texts):
    fits = []
    for device in ("cpu", DEVICE):
        estimator = OnlineNetworks(n_components=4, verbose=0)
        record(on(llama, device), tokenizer, texts, None, hook=estimator.hooks, window=32,
               batch_size=2, progress=False, sink=estimator.sink())
        fits.append(estimator.networks_.components_.values.reshape(4, -1))
    cpu, gpu = fits
    matched = np.abs(np.corrcoef(cpu, gpu)[:4, 4:]).max(axis=1)
    assert matched.min() > 0.99, matched


def test_bfloat16_sketch():
    # 3,072 voxels in 2 hook points, a 512-column Kronecker sketch with bfloat16 products
    gen = torch.Generator().manual_seed(0)
    scales = torch.linspace(8, 3, 8)[:, None]
    x = (torch.randn(4096, 8, generator=gen) @ (scales * torch.randn(8, 3072, generator=gen))
         + torch.randn(4096, 3072, generator=gen) + 5)
    maps = []
    for device in ("cpu", DEVICE):
        sketch = CorrelationSketch(3072, 512, device=device, groups=2)
        assert not sketch.exact and sketch.product_dtype == torch.bfloat16
        for block in x.split(1000):
            sketch.update(block.view(-1, 2, 1536).transpose(0, 1).to(device))
        np.testing.assert_allclose(sketch.mean.cpu(), x.double().mean(0), rtol=0, atol=1e-5)
        np.testing.assert_allclose(sketch.std().cpu(), x.double().std(0), rtol=1e-5)
        maps.append(sketch.principal_maps(8)[0].double().cpu())
    cosines = torch.linalg.svdvals(maps[0] @ maps[1].T)
    assert cosines.min() > 0.999, cosines


def test_calibration_pruning_and_evaluation(llama, tokenizer, texts):
    text = " ".join(texts)
    results = []
    for device in ("cpu", DEVICE):
        model = on(llama, device)
        stats = collect_calibration_stats(model, tokenizer, texts, window=32, batch_size=2,
                                          loss_sensitivity=True, progress=False)
        plan = make_plan(score_neurons(model, "flap", calibration=stats), 0.3)
        with ablate(model, plan.removed_neurons(), mode="mean", means=stats):
            ablated = perplexity(model, tokenizer, text, window=32, progress=False)
        prune_model(model, plan, bias_compensation=stats)
        assert next(model.parameters()).device.type == torch.device(device).type
        results.append((stats, plan, ablated, perplexity(model, tokenizer, text, window=32,
                                                         progress=False)))
    (stats, plan, ablated, pruned), (stats_d, plan_d, ablated_d, pruned_d) = results
    for name in stats.data_vars:
        np.testing.assert_allclose(stats_d[name].values, stats[name].values, rtol=1e-3,
                                   atol=1e-6, err_msg=name)
    assert plan_d.keep.keys() == plan.keep.keys()
    agree = np.mean([np.isin(plan_d.keep[k], plan.keep[k]).mean() for k in plan.keep])
    assert agree > 0.95                  # near-ties may fall either way
    assert ablated_d == pytest.approx(ablated, rel=1e-3)
    assert pruned == pytest.approx(ablated, rel=1e-4)       # pruning = mean ablation
    assert pruned_d == pytest.approx(ablated_d, rel=1e-4)


def test_loading_onto_the_device(llama, tokenizer, tmp_path):
    llama.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    for placement in ({"device": DEVICE}, {"device_map": {"": DEVICE}}):
        model, _ = load_model(tmp_path / "m", **placement)
        assert {p.device.type for p in model.parameters()} == {torch.device(DEVICE).type}
        ds = record(model, tokenizer, ["a few words of text to record"], None, window=8,
                    dtype="float32", progress=False)
        assert np.isfinite(ds["activations"].values).all()
