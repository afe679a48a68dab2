import numpy as np
import pytest

from llmbrain import open_activations
from llmbrain.cli import main


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, llama, tokenizer):
    folder = tmp_path_factory.mktemp("models") / "tiny-llama"
    llama.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory, texts):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n\n".join(texts))
    return path


def test_record_info_volumes(model_folder, corpus_file, tmp_path, capsys):
    store = tmp_path / "acts.zarr"
    code = main(["record", "--model", str(model_folder), "--corpus", str(corpus_file),
                 "--out", str(store), "--window", "32", "--layers", "0-1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "Recorded" in out and "2 layers x 48 neurons" in out
    ds = open_activations(store)
    assert ds["layer"].values.tolist() == [0, 1]
    assert main(["info", str(store)]) == 0
    info = capsys.readouterr().out
    assert "complete" in info and "mlp" in info and "48 per layer" in info
    assert main(["volumes", str(store), "--out", str(tmp_path / "vols"), "--max-tokens", "32"]) == 0
    assert (tmp_path / "vols" / "img.nii.gz").is_file()
    assert (tmp_path / "vols" / "mask.nii.gz").is_file()
    assert np.isfinite(ds["activations"].values).all()


def test_errors_are_one_clear_line(tmp_path, capsys, model_folder):
    assert main(["info", str(tmp_path / "missing.zarr")]) == 1
    assert "No activation store" in capsys.readouterr().err
    assert main(["record", "--model", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "x.zarr")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["record", "--model", str(model_folder), "--corpus", str(tmp_path / "none.txt"),
                 "--out", str(tmp_path / "x.zarr")]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["record", "--layers", "a-b"])


def test_no_verb_prints_help(capsys):
    assert main([]) == 2
    assert "record" in capsys.readouterr().out


def test_cheap_checks_come_before_the_model_is_loaded(model_folder, corpus_file, tmp_path,
                                                      monkeypatch, capsys):
    import sys

    import llmbrain.models

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(llmbrain.models, "load_model", no_model)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("mine")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café ".encode("latin-1") * 50)
    base = ["record", "--model", str(model_folder), "--out", str(tmp_path / "s.zarr")]
    for extra, message in [
            (["--window", "1"], "--window must be at least 2"),
            (["--window", "32", "--max-tokens", "16"], "--max-tokens 16 is less than one window"),
            (["--device", "cuda"], "'cuda' is not available"),
            (["--corpus", "hf:wikitext"], "needs the 'datasets' package"),
            (["--corpus", str(latin)], "latin.txt is not utf-8 text: line 1, column 4"),
            (["--corpus", str(tmp_path / "none.txt")], "does not exist"),
            (["--out", str(tmp_path / "mine")], "not an llmbrain output")]:
        assert main(base + extra) == 1, extra
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (extra, err)
    for verb in (["prune", "--model", str(model_folder), "--out", str(tmp_path / "p")],
                 ["evaluate", str(model_folder), "--efficiency"]):
        assert main(verb + ["--device", "cuda"]) == 1
        assert "'cuda' is not available" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(base + ["--max-tokens", "0"])
    assert "must be at least 1" in capsys.readouterr().err


def test_messages_are_short_and_name_flags(model_folder, corpus_file, tmp_path, capsys):
    store = tmp_path / "s.zarr"
    base = ["record", "--model", str(model_folder), "--corpus", str(corpus_file), "--out",
            str(store), "--window", "32"]
    assert main(base + ["--neurons", "0-99999"]) == 1
    err = capsys.readouterr().err
    assert len(err) < 300 and "99952 neuron index(es) out of range (48-99999)" in err
    assert main(base + ["--max-tokens", "64"]) == 0
    capsys.readouterr()
    assert main(base + ["--max-tokens", "96"]) == 1
    err = capsys.readouterr().err
    assert "--overwrite" in err and "overwrite=True" not in err


def test_record_several_hooks(model_folder, corpus_file, tmp_path, capsys):
    store = tmp_path / "s.zarr"
    assert main(["record", "--model", str(model_folder), "--corpus", str(corpus_file),
                 "--out", str(store), "--window", "32", "--hook", "up,act"]) == 0
    assert "at hooks 'up', 'act'" in capsys.readouterr().out
    assert open_activations(store)["activations"].dims == ("token", "hook", "layer", "neuron")
    assert main(["info", str(store)]) == 0
    assert "up, act" in capsys.readouterr().out
    assert main(["volumes", str(store), "--out", str(tmp_path / "v")]) == 1
    assert "--hook" in capsys.readouterr().err
    assert main(["volumes", str(store), "--hook", "act", "--out", str(tmp_path / "v")]) == 0


def test_adapter_for_a_new_architecture_from_the_command_line(tmp_path, tokenizer,
                                                              corpus_file, capsys):
    import json

    from test_adapters import STARCODER2, _starcoder2

    from llmbrain.models import adapters

    folder = tmp_path / "starcoder2"
    _starcoder2().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    args = ["record", "--model", str(folder), "--corpus", str(corpus_file), "--window", "32",
            "--out", str(tmp_path / "s.zarr")]
    assert main(args) == 1
    assert "no adapter for model_type='starcoder2'" in capsys.readouterr().err
    spec = tmp_path / "starcoder2.json"
    spec.write_text(json.dumps(STARCODER2))
    try:
        assert main(args + ["--adapter", str(spec)]) == 0
    finally:
        adapters._REGISTRY.pop("starcoder2", None)
    assert open_activations(tmp_path / "s.zarr").attrs["architecture"] == "starcoder2"
