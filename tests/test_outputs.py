"""Outputs are replaced only when asked, only by an output of the same kind, never
the input; a store being recorded is locked."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from llmbrain import open_activations, record
from llmbrain._outputs import output_kind, output_lock
from llmbrain.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, llama, tokenizer):
    folder = tmp_path_factory.mktemp("models") / "tiny-llama"
    llama.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory, texts):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n\n".join(texts * 4))
    return path


@pytest.fixture()
def store(tmp_path, llama, tokenizer, texts):
    path = tmp_path / "acts.zarr"
    record(llama, tokenizer, texts, path, window=32, batch_size=2, progress=False)
    return path


def _user_folder(path: Path) -> Path:
    path.mkdir()
    (path / "thesis.tex").write_text("years of work")
    return path


def _intact(path: Path) -> bool:
    return (path / "thesis.tex").read_text() == "years of work"


def test_verbs_never_replace_their_input(store, model_folder, capsys):
    before = open_activations(store)["activations"].values
    for verb in ("volumes", "networks"):
        for extra in ([], ["--overwrite"]):
            assert main([verb, str(store), "--out", str(store), *extra]) == 1
            assert "would replace the input" in capsys.readouterr().err
    assert main(["volumes", str(store), "--out", str(store.parent), "--overwrite"]) == 1
    np.testing.assert_array_equal(open_activations(store)["activations"].values, before)
    assert main(["prune", "--model", str(model_folder), "--criterion", "magnitude",
                 "--out", str(model_folder), "--overwrite"]) == 1
    assert "would replace the input" in capsys.readouterr().err
    assert (model_folder / "config.json").is_file()


def test_verbs_never_replace_a_folder_that_is_not_theirs(store, model_folder, tmp_path,
                                                         monkeypatch, capsys):
    mine = _user_folder(tmp_path / "mine")
    calls = [["volumes", str(store)], ["networks", str(store), "--n-components", "2"],
             ["prune", "--model", str(model_folder), "--criterion", "magnitude"],
             ["record", "--model", str(model_folder), "--window", "32"],
             ["run", "--model", str(model_folder)]]
    for call in calls:
        for extra in ([], ["--overwrite"]):
            assert main([*call, "--out", str(mine), *extra]) == 1, call
            assert "not an llmbrain output" in capsys.readouterr().err
            assert _intact(mine)
    monkeypatch.chdir(mine)  # `record --out . --overwrite` once emptied the working directory
    assert main(["record", "--model", str(model_folder), "--out", ".", "--overwrite"]) == 1
    assert _intact(mine)


def test_verbs_replace_only_outputs_of_their_own_kind(store, tmp_path, capsys):
    volumes, networks = tmp_path / "vols", tmp_path / "nets"
    assert main(["volumes", str(store), "--out", str(volumes)]) == 0
    assert output_kind(volumes) == "volumes"
    assert main(["volumes", str(store), "--out", str(volumes)]) == 1
    assert "--overwrite" in capsys.readouterr().err  # the flag, not overwrite=True
    assert main(["volumes", str(store), "--out", str(volumes), "--overwrite",
                 "--max-tokens", "32"]) == 0
    assert main(["networks", str(store), "--n-components", "2", "--restarts", "1", "--quiet",
                 "--out", str(volumes), "--overwrite"]) == 1
    assert "volumes folder" in capsys.readouterr().err
    assert (volumes / "img.nii.gz").is_file()
    assert main(["networks", str(store), "--n-components", "2", "--restarts", "1", "--quiet",
                 "--scope", "all", "--out", str(networks)]) == 0
    assert output_kind(networks) == "networks"
    assert main(["volumes", str(store), "--out", str(networks), "--overwrite"]) == 1
    assert main(["record", "--out", str(networks), "--overwrite"]) == 1
    assert output_kind(networks) == "networks"


def test_record_overwrite_replaces_a_store_only_once_the_new_one_is_complete(
        store, llama, tokenizer, texts, monkeypatch):
    import llmbrain.recording.sinks as sinks

    old = open_activations(store)["activations"].values

    def fail(self, *args):
        raise RuntimeError("disk gone")

    monkeypatch.setattr(sinks.ZarrSink, "write", fail)
    with pytest.raises(RuntimeError, match="disk gone"):
        record(llama, tokenizer, texts, store, window=32, batch_size=2, max_tokens=64,
               overwrite=True, progress=False)
    monkeypatch.undo()
    np.testing.assert_array_equal(open_activations(store)["activations"].values, old)
    new = record(llama, tokenizer, texts, store, window=32, batch_size=2, max_tokens=64,
                 overwrite=True, progress=False)
    assert new.sizes["token"] == 64
    assert [p.name for p in store.parent.iterdir() if p.name.startswith(".")] == []


_HELD_RECORD = """
import os, sys, time
import llmbrain.recording.sinks as sinks
write = sinks.ZarrSink.write
def held(self, *args):  # the first batch waits until the test lets it go
    open(sys.argv[1], "w").close()
    deadline = time.time() + 300
    while not os.path.exists(sys.argv[2]) and time.time() < deadline:
        time.sleep(0.05)
    return write(self, *args)
sinks.ZarrSink.write = held
from llmbrain.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def test_two_recordings_into_one_store(model_folder, corpus_file, tmp_path, llama, tokenizer):
    store, started, release = tmp_path / "acts.zarr", tmp_path / "started", tmp_path / "go"
    args = ["record", "--model", str(model_folder), "--corpus", str(corpus_file), "--out",
            str(store), "--window", "32", "--batch-size", "2"]
    first = subprocess.Popen([sys.executable, "-c", _HELD_RECORD, str(started), str(release),
                              *args], env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not started.exists():
            assert first.poll() is None, first.communicate()
            assert time.time() < deadline
            time.sleep(0.05)
        second = subprocess.run([sys.executable, "-m", "llmbrain", *args], env=_env(),
                                capture_output=True, text=True, timeout=120)
        release.touch()
        out, err = first.communicate(timeout=300)
    finally:
        first.kill()
    assert second.returncode == 1
    assert "is locked" in second.stderr and f"process {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    assert first.returncode == 0, err
    recorded = open_activations(store, verify=True)  # complete, every chunk as written
    reference = record(llama, tokenizer, [corpus_file.read_text()], tmp_path / "ref.zarr",
                       window=32, batch_size=2, progress=False)  # eager attention: not bitwise
    np.testing.assert_allclose(recorded["activations"].values.astype(np.float32),
                               reference["activations"].values.astype(np.float32),
                               rtol=1e-2, atol=2e-5)


def test_lock_of_a_dead_process_is_taken_over(tmp_path, llama, tokenizer, texts):
    store = tmp_path / "acts.zarr"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom llmbrain._outputs import output_lock\n"
         "with output_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)",
         str(store)], env=_env(), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RuntimeError, match=f"process {holder.pid}"):
        with output_lock(store):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    lock = tmp_path / ".acts.zarr.lock"
    assert json.loads(lock.read_bytes()[1:])["pid"] == holder.pid  # left behind by the crash
    with pytest.warns(UserWarning, match=f"Took over the lock .* process {holder.pid}"):
        ds = record(llama, tokenizer, texts, store, window=32, batch_size=2, progress=False)
    assert ds.attrs["complete"] and not lock.exists()
