"""A store never reads a lost or damaged chunk as data; the same recording repairs it."""

import shutil
import tomllib
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

import llmbrain.recording.sinks as sinks
from llmbrain import open_activations, record
from llmbrain._testing import tiny_model
from llmbrain.cli import main
from llmbrain.recording import DamagedStoreError, IncompleteStoreError

KW = dict(window=32, batch_size=2, progress=False)


@pytest.fixture()
def store(tmp_path, llama, tokenizer, texts):
    path = tmp_path / "acts.zarr"
    record(llama, tokenizer, texts, path, **KW)
    return path


def _chunk(store: Path, row: int, layer: int) -> Path:
    return store / "activations" / "c" / str(row) / str(layer) / "0"


def _interrupt(model, tokenizer, texts, path, after: int = 2, **kw):
    """Record into ``path`` and stop after ``after`` batches, as a crash would."""
    original, calls = sinks.ZarrSink.write, {"n": 0}

    def stop(self, *args):
        calls["n"] += 1
        if calls["n"] > after:
            raise KeyboardInterrupt
        return original(self, *args)

    sinks.ZarrSink.write = stop
    try:
        with pytest.raises(KeyboardInterrupt):
            record(model, tokenizer, texts, path, **{**KW, **kw})
    finally:
        sinks.ZarrSink.write = original


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_lost_chunk_is_refused_everywhere_and_repaired_by_record(
        damage, store, llama, tokenizer, texts, capsys):
    expected = open_activations(store)["activations"].values
    chunk = _chunk(store, 1, 2)
    if damage == "delete":
        chunk.unlink()
    else:
        chunk.write_bytes(chunk.read_bytes()[:100])
    with pytest.raises(DamagedStoreError, match=r"damaged: 1 chunk.*1/2/0.*record"):
        open_activations(store)
    with pytest.raises(DamagedStoreError):
        open_activations(store, allow_incomplete=True)
    with pytest.raises(DamagedStoreError):
        xr.open_dataset(store, engine="llmbrain")
    assert main(["info", str(store)]) == 1
    assert "DAMAGED" in capsys.readouterr().out
    assert main(["networks", str(store), "--n-components", "2", "--out",
                 str(store.parent / "nets")]) == 1
    err = capsys.readouterr().err
    assert "damaged" in err and "Traceback" not in err
    with pytest.warns(UserWarning, match="recorded again"):
        repaired = record(llama, tokenizer, texts, store, **KW)
    np.testing.assert_array_equal(repaired["activations"].values, expected)


def test_altered_chunk_is_found_by_its_checksum(store, llama, tokenizer, texts, capsys):
    expected = open_activations(store)["activations"].values
    chunk = _chunk(store, 0, 1)
    data = bytearray(chunk.read_bytes())
    data[10] ^= 0xFF
    chunk.write_bytes(bytes(data))
    open_activations(store)  # sizes are right: only the checksums tell
    with pytest.raises(DamagedStoreError, match="checksum differs"):
        open_activations(store, verify=True)
    assert main(["info", str(store), "--verify"]) == 1
    assert "checksum differs" in capsys.readouterr().out
    with pytest.warns(UserWarning, match="1 chunk.* recorded again"):
        repaired = record(llama, tokenizer, texts, store, verify=True, **KW)
    np.testing.assert_array_equal(repaired["activations"].values, expected)
    assert main(["info", str(store), "--verify"]) == 0
    assert "every chunk matches its checksum" in capsys.readouterr().out


def test_truncated_progress_record_is_recovered(tmp_path, llama, tokenizer, texts):
    reference = record(llama, tokenizer, texts, tmp_path / "ref.zarr", **KW)
    path = tmp_path / "crash.zarr"
    _interrupt(llama, tokenizer, texts, path, after=3)
    progress = path / "progress.json"
    progress.write_bytes(progress.read_bytes()[:7])
    with pytest.raises(DamagedStoreError, match="progress record .* damaged.*record"):
        open_activations(path, allow_incomplete=True)
    with pytest.warns(UserWarning, match="6 windows"):
        resumed = record(llama, tokenizer, texts, path, **KW)
    np.testing.assert_array_equal(resumed["activations"].values, reference["activations"].values)


@pytest.mark.filterwarnings("ignore:Object at:UserWarning")  # xr.open_zarr on our files
def test_unwritten_tokens_never_read_as_zeros(tmp_path, llama, tokenizer, texts):
    path = tmp_path / "crash.zarr"
    _interrupt(llama, tokenizer, texts, path, after=2)
    with pytest.raises(IncompleteStoreError, match="incomplete"):
        xr.open_dataset(path, engine="llmbrain")
    part = xr.open_dataset(path, engine="llmbrain", allow_incomplete=True)
    assert part.sizes["token"] == 128 and np.isfinite(part["activations"].values).all()
    raw = xr.open_zarr(path, consolidated=False)["activations"].values  # no llmbrain rules
    assert np.isnan(raw[128:]).all()  # the fill value: never plausible zeros


@pytest.fixture(autouse=True, scope="module")
def _entry_point(tmp_path_factory):
    """Make the ``xarray.backends`` entry point of pyproject.toml visible, as an
    install of the package does (the test environment may hold an older install)."""
    import importlib.metadata
    import sys

    from xarray.backends.plugins import list_engines

    if "llmbrain" in list_engines():
        yield
        return
    spec = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    points = spec["project"]["entry-points"]["xarray.backends"]
    site = tmp_path_factory.mktemp("site")
    dist = site / "llmbrain_entry_points-0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: llmbrain-entry-points\n"
                                   "Version: 0\n")
    (dist / "entry_points.txt").write_text(
        "[xarray.backends]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()))
    sys.path.append(str(site))
    importlib.invalidate_caches()
    list_engines.cache_clear()
    yield
    sys.path.remove(str(site))
    list_engines.cache_clear()


def test_backend_opens_one_hook_of_a_multi_hook_store(tmp_path, llama, tokenizer, texts):
    path = tmp_path / "two.zarr"
    record(llama, tokenizer, texts, path, hook=("up", "act"), max_tokens=64, **KW)
    act = xr.open_dataset(path, engine="llmbrain", hook="act")
    assert act["activations"].dims == ("token", "layer", "neuron")
    np.testing.assert_array_equal(act["activations"].values,
                                  open_activations(path)["activations"].sel(hook="act").values)


def test_resume_refuses_a_model_whose_weights_changed(tmp_path, tokenizer, texts):
    model = tiny_model("llama")
    path = tmp_path / "s.zarr"
    _interrupt(model, tokenizer, texts, path, after=2)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(1.5)
    with pytest.raises(FileExistsError, match="model_fingerprint"):
        record(model, tokenizer, texts, path, **KW)


def test_resume_checks_disk_space_again(tmp_path, llama, tokenizer, texts, monkeypatch):
    path = tmp_path / "s.zarr"
    _interrupt(llama, tokenizer, texts, path, after=1)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(100, 99, 1))
    with pytest.raises(OSError, match="GB more but the disk has only"):
        record(llama, tokenizer, texts, path, **KW)


def test_float16_overflow_is_refused_not_stored_as_inf(tmp_path, tokenizer, texts):
    model = tiny_model("llama")
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(1e8)  # a residual stream beyond 65,504
    path = tmp_path / "s.zarr"
    with pytest.raises(ValueError, match="exceed float16's range.*dtype='float32'"):
        record(model, tokenizer, texts, path, hook="residual", **KW)
    part = open_activations(path, allow_incomplete=True)
    assert part.sizes["token"] == 0  # nothing of the batch was written
    ds = record(model, tokenizer, texts, tmp_path / "f32.zarr", hook="residual",
                dtype="float32", **KW)
    assert np.isfinite(ds["activations"].values).all()
    assert np.abs(ds["activations"].values).max() > 65504
    memory = tiny_model("llama")
    with torch.no_grad():
        memory.model.layers[1].mlp.up_proj.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="inf or NaN activations at layer 1"):
        record(memory, tokenizer, texts, None, dtype="float32", **KW)
