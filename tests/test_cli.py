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
