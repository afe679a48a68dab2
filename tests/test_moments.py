"""Streaming moments (llmbrain._moments): chunked = whole, precise, on any device."""

import numpy as np
import pytest
import torch

from llmbrain._moments import RunningMoments

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_chunks_give_the_whole_data_moments(device):
    rng = np.random.default_rng(0)
    x = rng.standard_t(3, size=(1000, 2, 7)) * 3 + 1           # (samples, layer, neuron)
    moments = RunningMoments(absolute=True)
    for chunk in np.array_split(x, [1, 17, 18, 400, 999]):     # includes 1-sample chunks
        moments.update(torch.from_numpy(chunk).to(device))
    assert moments.n == 1000 and moments.mean.dtype == torch.float64
    assert moments.mean.device.type == device
    np.testing.assert_allclose(moments.mean.cpu(), x.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(moments.variance().cpu(), x.var(0, ddof=1), rtol=1e-10)
    np.testing.assert_allclose(moments.std(ddof=0).cpu(), x.std(0), rtol=1e-10)
    np.testing.assert_allclose(moments.mean_abs.cpu(), np.abs(x).mean(0), rtol=1e-12)
    np.testing.assert_allclose(moments.sum_squares.cpu(), (x ** 2).sum(0), rtol=1e-10)
    np.testing.assert_allclose(moments.l2_norm.cpu(), np.sqrt((x ** 2).sum(0)), rtol=1e-10)


def test_no_cancellation_for_a_large_mean():
    # values 1e4 + noise of 1e-2 in float32 chunks: sum x^2 - n mean^2 loses every digit
    rng = np.random.default_rng(1)
    x = (1e4 + 1e-2 * rng.standard_normal((20000, 3))).astype(np.float32)
    moments = RunningMoments()
    for chunk in np.array_split(x, 40):
        moments.update(chunk)
    exact = x.astype(np.float64).var(0, ddof=1)
    np.testing.assert_allclose(moments.variance().numpy(), exact, rtol=1e-3)
    x64 = x.astype(np.float64)
    naive = ((x64 ** 2).sum(0) - len(x) * x64.mean(0) ** 2) / (len(x) - 1)
    assert np.abs(naive - exact).max() > 10 * np.abs(moments.variance().numpy() - exact).max()


def test_half_precision_numpy_merge_and_errors():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 5)).astype(np.float16)
    a, b = RunningMoments(absolute=True), RunningMoments(absolute=True)
    a.update(torch.from_numpy(x[:100]))
    b.update(x[100:])                                          # NumPy arrays are accepted
    a.merge(b)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(a.mean.numpy(), x64.mean(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(a.variance().numpy(), x64.var(0, ddof=1), rtol=1e-6)
    np.testing.assert_allclose(a.mean_abs.numpy(), np.abs(x64).mean(0), rtol=1e-6)
    assert a.update(x[:0]) is a and a.n == 300
    with pytest.raises(ValueError, match="shape"):
        a.update(np.zeros((4, 6), np.float32))
    with pytest.raises(ValueError, match="absolute=True"):
        RunningMoments().update(x).mean_abs
    with pytest.raises(ValueError, match="at least 2"):
        RunningMoments().update(x[:1]).variance()
    with pytest.raises(TypeError, match="floating point"):
        RunningMoments().update(np.arange(4))
