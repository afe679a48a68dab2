from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

import llmbrain.recording.sinks as sinks_module
from llmbrain import open_activations, record
from llmbrain._testing import TINY_ARCHITECTURES, tiny_model
from llmbrain.models import get_adapter
from llmbrain.recording import IncompleteStoreError


def _manual_neurons(model, input_ids, layer):
    """Recompute the MLP neurons of ``layer`` from its input and weights."""
    adapter = get_adapter(model)
    first_up = adapter.up_projs(model, layer)[0]
    captured = {}
    handle = first_up.register_forward_pre_hook(lambda m, a: captured.setdefault("x", a[0]))
    with torch.no_grad():
        model(input_ids=input_ids)
    handle.remove()
    x = captured["x"]
    biases = [m.bias for m in adapter.up_projs(model, layer)]
    if adapter.fused_gate_up:
        biases = list(biases[0].chunk(2)) if biases[0] is not None else [None, None]
    pre = [x @ w.T + (b if b is not None else 0)
           for w, b in zip(adapter.up_weights(model, layer), biases)]
    act = adapter.act_module(model, layer)
    neurons = act(pre[0]) * pre[1] if adapter.gated else act(pre[0])
    return neurons.reshape(-1, neurons.shape[-1]).detach().numpy()


@pytest.mark.parametrize("architecture", sorted(TINY_ARCHITECTURES))
def test_recorded_layer_equals_manual_recomputation(architecture, tokenizer, texts, tmp_path):
    model = tiny_model(architecture)
    ds = record(model, tokenizer, texts, tmp_path / "s.zarr", window=32, batch_size=3,
                dtype="float32", progress=False)
    ids = torch.as_tensor(ds["token_id"].values[:64].reshape(2, 32).astype(np.int64))
    expected = _manual_neurons(model, ids, 1)
    np.testing.assert_allclose(ds["activations"].sel(layer=1).values[:64], expected,
                               rtol=1e-5, atol=1e-5)


def test_store_layout_and_coords(tiny_store, tokenizer, texts):
    ds = open_activations(tiny_store)
    assert ds["activations"].dims == ("token", "layer", "neuron")
    assert ds["activations"].dtype == np.float16
    assert ds.sizes["layer"] == 3 and ds.sizes["neuron"] == 48
    assert ds.sizes["token"] % 32 == 0 and ds.attrs["complete"]
    for key in ("model", "model_fingerprint", "hook", "dtype", "window_length",
                "corpus_fingerprint", "n_tokens"):
        assert key in ds.attrs
    assert ds.attrs["hook"] == "mlp" and ds.attrs["window_length"] == 32
    assert ds["position"].values[:32].tolist() == list(range(32))
    first = ds["token_id"].values[1:32]
    doc = int(ds["document"].values[1])
    assert tokenizer.decode(first.tolist()) in texts[doc]
    assert "".join(ds["token_text"].values[1:6].tolist()) == tokenizer.decode(first[:5].tolist())
    chunks = ds["activations"].encoding["chunks"]
    assert chunks[1] == 1 and chunks[2] == 48  # one layer per chunk


@pytest.mark.parametrize("hook,size", [("up", 48), ("gate", 48), ("act", 48),
                                       ("residual", 32), ("attention", 32)])
def test_hook_points(hook, size, llama, tokenizer, texts, tmp_path):
    ds = record(llama, tokenizer, texts, tmp_path / "s.zarr", hook=hook, window=32,
                max_tokens=64, progress=False)
    assert ds.sizes["neuron"] == size and ds.attrs["hook"] == hook
    assert np.isfinite(ds["activations"].values).all()
    assert np.abs(ds["activations"].values).max() > 0


def test_act_times_up_is_mlp(llama, tokenizer, texts, tmp_path):
    kw = dict(window=32, max_tokens=64, dtype="float32", progress=False)
    mlp = record(llama, tokenizer, texts, tmp_path / "m.zarr", **kw)["activations"].values
    act = record(llama, tokenizer, texts, tmp_path / "a.zarr", hook="act", **kw)
    up = record(llama, tokenizer, texts, tmp_path / "u.zarr", hook="up", **kw)
    np.testing.assert_allclose(act["activations"].values * up["activations"].values, mlp,
                               rtol=1e-5, atol=1e-6)


def test_layer_and_neuron_selection(llama, tokenizer, texts, tmp_path):
    full = record(llama, tokenizer, texts, tmp_path / "f.zarr", window=32, max_tokens=64,
                  progress=False)
    part = record(llama, tokenizer, texts, tmp_path / "p.zarr", window=32, max_tokens=64,
                  layers=[2, 0], neurons=[5, 1, 7], progress=False)
    assert part["layer"].values.tolist() == [0, 2]
    assert part["neuron"].values.tolist() == [1, 5, 7]
    np.testing.assert_array_equal(part["activations"].values,
                                  full["activations"].sel(layer=[0, 2], neuron=[1, 5, 7]).values)
    with pytest.raises(ValueError, match="out of range"):
        record(llama, tokenizer, texts, tmp_path / "x.zarr", layers=[3], progress=False)
    with pytest.raises(ValueError, match="out of range"):
        record(llama, tokenizer, texts, tmp_path / "y.zarr", neurons=[48], progress=False)
    assert not (tmp_path / "x.zarr").exists() and not (tmp_path / "y.zarr").exists()


def test_forward_stops_after_last_requested_layer(llama, tokenizer, texts, tmp_path):
    calls = []
    handle = llama.model.layers[2].register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        record(llama, tokenizer, texts, tmp_path / "s.zarr", layers=[0, 1], window=32,
               max_tokens=64, progress=False)
    finally:
        handle.remove()
    assert calls == []  # neither the probe of the feature sizes nor the recording reached layer 2


def test_interrupted_recording_resumes_and_loses_nothing(llama, tokenizer, texts, tmp_path,
                                                         monkeypatch):
    reference = record(llama, tokenizer, texts, tmp_path / "ref.zarr", window=32, batch_size=2,
                       progress=False)
    path = tmp_path / "crash.zarr"
    original = sinks_module.ZarrSink.write
    calls = {"n": 0}

    def crash_on_third(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(sinks_module.ZarrSink, "write", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        record(llama, tokenizer, texts, path, window=32, batch_size=2, progress=False)
    monkeypatch.undo()
    with pytest.raises(IncompleteStoreError, match="incomplete: 128 of"):
        open_activations(path)
    partial = open_activations(path, allow_incomplete=True)
    assert partial.sizes["token"] == 128
    resumed = record(llama, tokenizer, texts, path, window=32, batch_size=2, progress=False)
    assert resumed.attrs["complete"]
    np.testing.assert_array_equal(resumed["activations"].values,
                                  reference["activations"].values)


def test_other_recordings_are_refused(tiny_store, tokenizer, texts):
    other = tiny_model("llama", seed=0, intermediate_size=64)
    with pytest.raises(FileExistsError, match="other settings.*model_fingerprint"):
        record(other, tokenizer, texts, tiny_store, window=32, batch_size=2, progress=False)
    llama = tiny_model("llama")
    with pytest.raises(FileExistsError, match="hook"):
        record(llama, tokenizer, texts, tiny_store, hook="up", window=32, batch_size=2,
               progress=False)
    assert open_activations(tiny_store).attrs["hook"] == "mlp"  # untouched


def test_complete_store_is_returned_and_overwrite_replaces(llama, tokenizer, texts, tmp_path):
    path = tmp_path / "s.zarr"
    first = record(llama, tokenizer, texts, path, window=32, max_tokens=64, progress=False)
    again = record(llama, tokenizer, texts, path, window=32, max_tokens=64, progress=False)
    assert again.attrs["created"] == first.attrs["created"]
    replaced = record(llama, tokenizer, texts, path, window=32, max_tokens=96, overwrite=True,
                      progress=False)
    assert replaced.sizes["token"] == 96


def test_not_a_store_is_refused(llama, tokenizer, texts, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an llmbrain output"):
        record(llama, tokenizer, texts, tmp_path / "notes", window=32, progress=False)
    with pytest.raises(FileExistsError, match="not an llmbrain output"):
        record(llama, tokenizer, texts, tmp_path / "notes", window=32, overwrite=True,
               progress=False)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    with pytest.raises(FileNotFoundError, match="No activation store"):
        open_activations(tmp_path / "nothing.zarr")


def test_full_disk_is_refused_before_writing(llama, tokenizer, texts, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(100, 99, 1))
    with pytest.raises(OSError, match="GB free"):
        record(llama, tokenizer, texts, tmp_path / "s.zarr", window=32, progress=False)
    assert not (tmp_path / "s.zarr").exists()


def test_read_only_disk_is_refused(llama, tokenizer, texts, tmp_path, monkeypatch):
    import pathlib

    def read_only(self, data):
        raise OSError(30, "Read-only file system", str(self))

    monkeypatch.setattr(pathlib.Path, "write_bytes", read_only)
    with pytest.raises(PermissionError, match="Choose a writable folder"):
        record(llama, tokenizer, texts, tmp_path / "s.zarr", window=32, progress=False)
    assert not (tmp_path / "s.zarr").exists()


def test_bad_parameters(llama, tokenizer, texts, tmp_path):
    with pytest.raises(ValueError, match="Unknown hook"):
        record(llama, tokenizer, texts, tmp_path / "s.zarr", hook="spikes")
    with pytest.raises(ValueError, match="dtype"):
        record(llama, tokenizer, texts, tmp_path / "s.zarr", dtype="int8")
    with pytest.raises(ValueError, match="context"):
        record(llama, tokenizer, texts, tmp_path / "s.zarr", window=1024, progress=False)


def test_several_hooks_in_one_pass(llama, tokenizer, texts, tmp_path):
    kw = dict(window=32, max_tokens=96, batch_size=2, dtype="float32", progress=False)
    both = record(llama, tokenizer, texts, tmp_path / "b.zarr", hook=("up", "act"), **kw)
    data = both["activations"]
    assert data.dims == ("token", "hook", "layer", "neuron")
    assert data["hook"].values.tolist() == ["up", "act"] and both.attrs["hooks"] == ["up", "act"]
    assert "hook" not in both.attrs
    assert data.encoding["chunks"] == (64, 1, 1, 48)
    open_activations(tmp_path / "b.zarr", verify=True)  # checksums hold, the short last chunk too
    for hook in ("up", "act"):
        alone = record(llama, tokenizer, texts, tmp_path / f"{hook}.zarr", hook=hook, **kw)
        np.testing.assert_array_equal(data.sel(hook=hook).values, alone["activations"].values)
        one = open_activations(tmp_path / "b.zarr", hook=hook)
        assert one["activations"].dims == ("token", "layer", "neuron")
        assert one.attrs["hook"] == hook and "hooks" not in one.attrs
        np.testing.assert_array_equal(one["activations"].values, alone["activations"].values)
    with pytest.raises(ValueError, match="holds hooks"):
        open_activations(tmp_path / "b.zarr", hook="gate")
    with pytest.raises(FileExistsError, match="hooks"):  # the hooks are part of the identity
        record(llama, tokenizer, texts, tmp_path / "b.zarr", hook=("up", "gate"), **kw)


def test_hooks_of_other_widths_are_not_combined(llama, tokenizer, texts, tmp_path):
    with pytest.raises(ValueError, match="same width.*residual"):
        record(llama, tokenizer, texts, tmp_path / "s.zarr", hook=("mlp", "residual"))
    with pytest.raises(ValueError, match="twice"):
        record(llama, tokenizer, texts, tmp_path / "s.zarr", hook=("up", "up"))
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.parametrize("hook", ["mlp", ("gate", "mlp")])
def test_recording_into_memory_equals_the_store(hook, llama, tokenizer, texts, tmp_path,
                                                monkeypatch):
    kw = dict(hook=hook, window=32, max_tokens=96, batch_size=2, progress=False)
    stored = record(llama, tokenizer, texts, tmp_path / "s.zarr", **kw).load()
    monkeypatch.chdir(tmp_path / "s.zarr")
    memory = record(llama, tokenizer, texts, None, **kw)
    assert sorted(p.name for p in Path(".").iterdir()) == sorted(  # nothing written
        p.name for p in (tmp_path / "s.zarr").iterdir())
    xr.testing.assert_identical(memory.drop_attrs(), stored.drop_attrs())
    ignore = {"created", "llmbrain_output"}
    assert {k: v for k, v in memory.attrs.items() if k not in ignore} == \
        {k: v for k, v in stored.attrs.items() if k not in ignore}


def test_a_sink_receives_every_batch_on_the_model_device(llama, tokenizer, texts):
    from llmbrain.recording import ActivationSink

    class RunningSum(ActivationSink):  # what an online estimator's partial_fit would be
        def start(self, layout):
            super().start(layout)
            self.total, self.windows = 0.0, []

        def write(self, blocks, first_window):
            assert len(blocks) == len(self.layout.layers) == len(self.layout.devices)
            for block, device in zip(blocks, self.layout.devices):
                assert block.device == device and block.shape[:1] == (2,) and block.dim() == 3
                self.total += float(block.double().sum())
            self.windows.append(first_window)

        def finish(self):
            return self.total, self.windows

    total, windows = record(llama, tokenizer, texts, hook=("up", "act"), window=32,
                            max_tokens=96, batch_size=2, dtype="float32", progress=False,
                            sink=RunningSum())
    memory = record(llama, tokenizer, texts, None, hook=("up", "act"), window=32,
                    max_tokens=96, batch_size=2, dtype="float32", progress=False)
    assert windows == [0, 2]
    assert total == pytest.approx(float(memory["activations"].values.astype(np.float64).sum()))


def test_a_layerwise_sink_receives_each_layer_as_soon_as_it_is_done(llama, tokenizer, texts):
    from llmbrain.recording import ActivationSink

    class Layers(ActivationSink):
        layerwise = True

        def start(self, layout):
            super().start(layout)
            self.calls, self.blocks = [], {}

        def write_layer(self, position, block, first_window):
            self.calls.append(position)
            self.blocks.setdefault(position, []).append(block.clone())

        def write(self, blocks, first_window):
            assert blocks is None
            self.calls.append(("batch", first_window))

        def finish(self):
            return self

    sink = record(llama, tokenizer, texts, None, hook=("up", "act"), window=32, max_tokens=96,
                  batch_size=2, dtype="float32", progress=False, sink=Layers())
    n_layers = len(sink.layout.layers)
    assert sink.calls == [*range(n_layers), ("batch", 0), *range(n_layers), ("batch", 2)]
    memory = record(llama, tokenizer, texts, None, hook=("up", "act"), window=32,
                    max_tokens=96, batch_size=2, dtype="float32", progress=False)
    for position in range(n_layers):
        got = torch.cat(sink.blocks[position], dim=1).permute(1, 0, 2).numpy()
        np.testing.assert_array_equal(got, memory["activations"].values[:, :, position])
