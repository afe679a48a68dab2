"""Recording at scale: parallel chunk writes, shards, subsampling, models split over devices."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import zarr

import llmbrain.recording._chunks as chunks_module
import llmbrain.recording.recorder as recorder
import llmbrain.recording.sinks as sinks
from llmbrain import load_model, open_activations, record
from llmbrain._testing import tiny_model
from llmbrain.recording import DamagedStoreError
from llmbrain.recording.store import merge_journals

KW = dict(window=32, batch_size=2, progress=False)


@pytest.fixture(scope="module")
def memory(llama, tokenizer, texts):
    """The reference: every activation of the tiny Llama, recorded into memory."""
    return record(llama, tokenizer, texts, None, hook=("up", "act"), **KW)


def test_sharded_store_holds_the_same_values(llama, tokenizer, texts, memory, tmp_path):
    path = tmp_path / "s.zarr"
    ds = record(llama, tokenizer, texts, path, hook=("up", "act"), sharded=True, **KW)
    np.testing.assert_array_equal(ds["activations"].values, memory["activations"].values)
    array = zarr.open_array(path / "activations")
    assert array.shards == (64, 2, 3, 48) and array.chunks == (64, 1, 1, 48)
    rows = sorted((path / "activations" / "c").iterdir(), key=lambda p: int(p.name))
    assert len(rows) == 8 and all(len(list(row.rglob("*"))) == 3 for row in rows)  # c/R/0/0/0
    open_activations(path, verify=True)
    shard = path / "activations" / "c" / "2" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[64 * 48 * 2 * 4 + 5] ^= 0xFF  # inside the fifth chunk (hook "act", layer 1)
    shard.write_bytes(bytes(data))
    with pytest.raises(DamagedStoreError, match=r"chunk 2/1/1/0 \(checksum differs\)"):
        open_activations(path, verify=True)
    with pytest.warns(UserWarning, match="1 chunk"):
        repaired = record(llama, tokenizer, texts, path, hook=("up", "act"), verify=True, **KW)
    np.testing.assert_array_equal(repaired["activations"].values, memory["activations"].values)


def test_chunks_bypassing_the_page_cache(tokenizer, texts, tmp_path, monkeypatch):
    model = tiny_model("llama", intermediate_size=64)  # 64 tokens x 64 neurons x 2 B = 8 KiB
    opened = []
    original = sinks.open_for_writing

    def spy(file, *, direct, truncate=True):
        fd, used = original(file, direct=direct, truncate=truncate)
        opened.append(used)
        return fd, used

    monkeypatch.setattr(sinks, "open_for_writing", spy)
    direct = record(model, tokenizer, texts, tmp_path / "d.zarr", **KW)
    assert any(opened)  # the file system here takes O_DIRECT (tmpfs would not: then no test)
    assert not all(opened)  # the short last chunk, padded, goes through the cache
    np.testing.assert_array_equal(direct["activations"].values,
                                  record(model, tokenizer, texts, None, **KW)["activations"].values)
    open_activations(tmp_path / "d.zarr", verify=True)
    opened.clear()
    monkeypatch.setattr(chunks_module, "_DIRECT", 0)  # a system without O_DIRECT
    record(model, tokenizer, texts, tmp_path / "c.zarr", **KW)
    assert opened and not any(opened)
    files = sorted(p.relative_to(tmp_path / "d.zarr") for p in (tmp_path / "d.zarr").rglob("c/*/*/*"))
    assert len(files) == 8 * 3
    for file in files:
        assert (tmp_path / "d.zarr" / file).read_bytes() == (tmp_path / "c.zarr" / file).read_bytes()


def test_a_batch_is_counted_only_once_its_chunks_are_written(llama, tokenizer, texts, tmp_path,
                                                              monkeypatch):
    original = sinks.ZarrSink._write_chunk

    def fail_in_third_batch(self, row, j, values, shard):
        if row == 2 and j == 1:
            raise OSError(28, "No space left on device")
        return original(self, row, j, values, shard)

    monkeypatch.setattr(sinks.ZarrSink, "_write_chunk", fail_in_third_batch)
    path = tmp_path / "s.zarr"
    with pytest.raises(OSError, match="No space left"):
        record(llama, tokenizer, texts, path, **KW)
    monkeypatch.undo()
    progress = json.loads((path / "progress.json").read_text())
    assert progress["windows_written"] == 4 and not progress["complete"]
    assert open_activations(path, allow_incomplete=True).sizes["token"] == 4 * 32
    resumed = record(llama, tokenizer, texts, path, **KW)
    np.testing.assert_array_equal(resumed["activations"].values,
                                  record(llama, tokenizer, texts, None, **KW)["activations"].values)


def test_token_stride_and_neuron_fraction(llama, tokenizer, texts, memory, tmp_path,
                                          capsys):
    path = tmp_path / "s.zarr"
    ds = record(llama, tokenizer, texts, path, hook=("up", "act"), token_stride=5,
                neuron_fraction=0.25, random_state=1, **KW)
    neurons = ds["neuron"].values
    assert len(neurons) == 12 and len(set(neurons)) == 12 and list(neurons) == sorted(neurons)
    positions = np.arange(4, 32, 5)  # 4, 9, ..., 29: 6 of each window, never the first
    assert ds["position"].values.tolist() == positions.tolist() * 15
    kept = (np.arange(15)[:, None] * 32 + positions).ravel()
    np.testing.assert_array_equal(
        ds["activations"].values, memory["activations"].values[kept][..., neurons])
    np.testing.assert_array_equal(ds["token_id"].values, memory["token_id"].values[kept])
    assert ds.attrs["token_stride"] == 5 and ds.attrs["neuron_fraction"] == 0.25
    assert ds.attrs["n_tokens"] == 15 * 6
    open_activations(path, verify=True)
    from llmbrain.cli import main
    assert main(["info", str(path)]) == 0
    assert "15 x 32 tokens, one token in 5 kept" in capsys.readouterr().out
    again = record(llama, tokenizer, texts, None, hook=("up", "act"), token_stride=5,
                   neuron_fraction=0.25, random_state=1, **KW)
    np.testing.assert_array_equal(again["activations"].values, ds["activations"].values)
    with pytest.raises(FileExistsError, match="token_stride"):  # part of the identity
        record(llama, tokenizer, texts, path, hook=("up", "act"), neuron_fraction=0.25,
               random_state=1, **KW)


def test_an_interrupted_strided_recording_resumes(llama, tokenizer, texts, tmp_path,
                                                  monkeypatch):
    original, calls = sinks.ZarrSink.write, {"n": 0}

    def crash_on_third(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(sinks.ZarrSink, "write", crash_on_third)
    path = tmp_path / "s.zarr"
    with pytest.raises(KeyboardInterrupt):
        record(llama, tokenizer, texts, path, token_stride=4, **KW)
    monkeypatch.undo()
    assert open_activations(path, allow_incomplete=True).sizes["token"] == 4 * 8
    resumed = record(llama, tokenizer, texts, path, token_stride=4, **KW)
    np.testing.assert_array_equal(
        resumed["activations"].values,
        record(llama, tokenizer, texts, None, token_stride=4, **KW)["activations"].values)


def test_bad_subsampling_is_refused(llama, tokenizer, texts, tmp_path):
    with pytest.raises(ValueError, match="token_stride"):
        record(llama, tokenizer, texts, tmp_path / "s.zarr", token_stride=33, **KW)
    with pytest.raises(ValueError, match="neuron_fraction"):
        record(llama, tokenizer, texts, tmp_path / "s.zarr", neuron_fraction=1.5, **KW)
    with pytest.raises(ValueError, match="not both"):
        record(llama, tokenizer, texts, tmp_path / "s.zarr", neurons=[1], neuron_fraction=0.5,
               **KW)
    assert not (tmp_path / "s.zarr").exists()


def test_journals_are_merged_and_a_cut_line_is_ignored(llama, tokenizer, texts, tmp_path):
    path = tmp_path / "s.zarr"
    record(llama, tokenizer, texts, path, **KW)
    progress = json.loads((path / "progress.json").read_text())
    sums = np.frombuffer((path / "checksums.crc32c").read_bytes(), "<u4").reshape(-1, 3)
    (path / "progress.json").write_text(json.dumps({**progress, "windows_written": 2,
                                                    "complete": False}))
    (path / "checksums.crc32c").write_bytes(sums[:1].tobytes())
    lines = [{"first_window": w, "n_windows": 2, "checksums": sums[w // 2].tolist()}
             for w in (4, 2, 8)]
    (path / "progress.rank0.jsonl").write_text(json.dumps(lines[0]) + "\n" +
                                               json.dumps(lines[2])[:20])  # a crash mid-line
    (path / "progress.rank1.jsonl").write_text(json.dumps(lines[1]) + "\n")
    assert merge_journals(path)
    assert json.loads((path / "progress.json").read_text())["windows_written"] == 6
    assert not list(path.glob("progress.rank*")) and not merge_journals(path)
    assert (path / "checksums.crc32c").read_bytes() == sums[:3].tobytes()
    open_activations(path, allow_incomplete=True, verify=True)


# -- models split over devices ------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory, llama, tokenizer):
    folder = tmp_path_factory.mktemp("model") / "tiny"
    llama.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("device_map", ["auto", "layers"])
def test_a_model_loaded_with_a_device_map_records_the_same(device_map, saved, tokenizer, texts):
    if device_map == "layers":  # every module placed explicitly
        device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu",
                      "lm_head": "cpu", **{f"model.layers.{i}": "cpu" for i in range(3)}}
    plain, _ = load_model(saved, dtype=torch.bfloat16)
    split, _ = load_model(saved, device_map=device_map, dtype=torch.bfloat16)
    assert next(split.parameters()).dtype == torch.bfloat16
    reference = record(plain, tokenizer, texts, None, **KW)
    ds = record(split, tokenizer, texts, None, **KW)
    np.testing.assert_array_equal(ds["activations"].values, reference["activations"].values)
    assert ds.attrs["model_fingerprint"] == reference.attrs["model_fingerprint"]


def test_device_map_is_checked_first(saved):
    with pytest.raises(ValueError, match="not both"):
        load_model(saved, device="cpu", device_map="auto")
    with pytest.raises(ValueError, match="device_map must be one of"):
        load_model(saved, device_map="everywhere")
    with pytest.raises(ValueError, match="not available"):
        load_model(saved, device_map={"": "cuda:99"})


def test_recording_through_accelerate_hooks(saved, tokenizer, texts, tmp_path):
    from accelerate import dispatch_model

    plain, _ = load_model(saved)
    reference = record(plain, tokenizer, texts, None, **KW)
    hooked, _ = load_model(saved)
    hooked = dispatch_model(hooked, device_map={"": "cpu"}, force_hooks=True)
    assert any(hasattr(module, "_hf_hook") for module in hooked.modules())
    ds = record(hooked, tokenizer, texts, tmp_path / "s.zarr", **KW)
    np.testing.assert_array_equal(ds["activations"].values, reference["activations"].values)


def test_layers_on_several_devices_reach_the_sink_apart(llama, tokenizer, texts, memory,
                                                        tmp_path, monkeypatch):
    """The recorder keeps one buffer per device; two names of the CPU stand in for two GPUs."""
    original = recorder._probe
    other = torch.device("cpu", 0)  # a device of its own as a key, tensors on the CPU

    def two_devices(*args):
        sizes, devices = original(*args)
        return sizes, [devices[0], other, devices[2]]

    monkeypatch.setattr(recorder, "_probe", two_devices)
    seen = []

    class Devices(sinks.MemorySink):
        def write(self, blocks, first_window):
            seen.append([block.data_ptr() for block in blocks])
            super().write(blocks, first_window)

    ds = record(llama, tokenizer, texts, hook=("up", "act"), sink=Devices(), **KW)
    np.testing.assert_array_equal(ds["activations"].values, memory["activations"].values)
    stored = record(llama, tokenizer, texts, tmp_path / "s.zarr", hook=("up", "act"), **KW)
    np.testing.assert_array_equal(stored["activations"].values, memory["activations"].values)
    first, second, third = seen[0]
    assert third - first == 64 * 48 * 2  # layers 0 and 2 share one buffer ...
    assert not first <= second < first + 2 * 2 * 64 * 48 * 2  # ... layer 1 has its own


def test_command_line_subsampling(saved, texts, tmp_path, capsys):
    from llmbrain.cli import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(texts))
    out = tmp_path / "s.zarr"
    assert main(["record", "--model", str(saved), "--corpus", str(corpus), "--out", str(out),
                 "--window", "32", "--token-stride", "8", "--neuron-fraction", "0.5"]) == 0
    ds = open_activations(out)
    assert ds.sizes["neuron"] == 24 and set(ds["position"].values.tolist()) == {7, 15, 23, 31}
    assert main(["record", "--model", str(saved), "--out", str(tmp_path / "t.zarr"),
                 "--neuron-fraction", "2"]) == 1
    assert "--neuron-fraction must be in (0, 1]" in capsys.readouterr().err


@pytest.mark.integration
def test_default_model_with_a_device_map(smollm2, tmp_path):
    """The embedded model is converted on the CPU, then dispatched by accelerate."""
    model, tokenizer = smollm2
    split, _ = load_model("default", device_map="auto")
    assert split.hf_device_map
    kw = dict(window=128, max_tokens=256, layers=[0, 29], progress=False)
    ds = record(split, tokenizer, "default", None, **kw)
    np.testing.assert_array_equal(ds["activations"].values,
                                  record(model, tokenizer, "default", None, **kw)
                                  ["activations"].values)


def test_the_store_copies_in_blocks_it_did_not_lend(tmp_path):
    """Blocks outside the host buffers the store lends (a GPU's) are copied in, hook by
    hook, and stored as they are."""
    from llmbrain.recording.store import create_store, layout_coords

    hooks, n_layers, n_neurons, tokens = ("up", "act"), 3, 16, 8
    coords = layout_coords(n_tokens=2 * tokens, hooks=hooks, layers=range(n_layers),
                           neurons=range(n_neurons), per_token={})
    attrs = {"window_length": tokens, "batch_windows": 1, "n_tokens": 2 * tokens}
    layout = sinks.RecordingLayout(
        hooks=hooks, layers=list(range(n_layers)), neurons=list(range(n_neurons)),
        dtype="float32", window=tokens, batch_windows=1, n_windows=2, coords=coords,
        attrs=attrs, device=torch.device("cpu"), token_stride=1,
        devices=(torch.device("cpu"),) * n_layers)
    path = tmp_path / "s.zarr"
    create_store(path, hooks=hooks, tokens_per_chunk=tokens, dtype="float32", coords=coords,
                 attrs=attrs)
    values = torch.randn(2, len(hooks), n_layers, tokens, n_neurons)
    sink = sinks.ZarrSink(path)
    sink.start(layout)
    for batch in range(2):            # no buffer() asked for: the blocks are copied in
        sink.write(tuple(values[batch][:, i] for i in range(n_layers)), batch)
    sink.finish()
    stored = open_activations(path)["activations"].transpose("token", "hook", "layer", "neuron")
    expected = values.permute(0, 3, 1, 2, 4).reshape(2 * tokens, len(hooks), n_layers, n_neurons)
    np.testing.assert_array_equal(stored.values, expected.numpy())
