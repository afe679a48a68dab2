"""Tests of llmbrain.datasets: data directories, the catalogue, checks and downloads."""

import bz2
import hashlib
from pathlib import Path

import pytest

from conftest import SHARED_DATA
from llmbrain.datasets import (DatasetNotFoundError, catalogue_markdown, fetch_dataset,
                               fetch_wikitext2, fetch_zeroshot_tasks, get_data_dirs,
                               list_datasets)
from llmbrain.datasets import _fetch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_user_data(monkeypatch, tmp_path):
    """Isolate the tests from the user's data directories."""
    monkeypatch.delenv("LLMBRAIN_DATA", raising=False)
    monkeypatch.delenv("LLMBRAIN_SHARED_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def toy_catalogue(monkeypatch, tmp_path):
    """A catalogue of one data set of two files, served from a local 'remote' folder."""
    remote = tmp_path / "remote"
    remote.mkdir()
    texts = {"toy/a.txt": b"first file\n", "toy/b.txt": b"second file, compressed there\n"}
    (remote / "a.txt").write_bytes(texts["toy/a.txt"])
    (remote / "b.txt.bz2").write_bytes(bz2.compress(texts["toy/b.txt"]))
    files = [{"path": path, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
              "url": (remote / ("a.txt" if path.endswith("a.txt") else "b.txt.bz2")).as_uri(),
              "compression": None if path.endswith("a.txt") else "bz2",
              "source": "someone/toy:a.txt@0123", "provenance": "ORIGINAL"}
             for path, data in texts.items()]
    catalogue = {"toy": {"title": "Toy", "kind": "evaluation", "reference": "nobody",
                         "licence": "CC0", "files": files}}
    monkeypatch.setattr(_fetch, "_catalogue", lambda: catalogue)
    return texts


def test_data_directories_in_order(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMBRAIN_DATA", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    monkeypatch.setenv("LLMBRAIN_SHARED_DATA", str(tmp_path / "shared"))
    assert get_data_dirs(tmp_path / "first") == [
        tmp_path / "first", tmp_path / "a", tmp_path / "b", tmp_path / "shared",
        tmp_path / "home" / "llmbrain_data"]
    assert get_data_dirs()[0] == tmp_path / "a"


def test_local_files_are_found_and_checked(toy_catalogue, tmp_path, monkeypatch):
    local = tmp_path / "data"
    for path, data in toy_catalogue.items():
        (local / path).parent.mkdir(parents=True, exist_ok=True)
        (local / path).write_bytes(data)
    monkeypatch.setenv("LLMBRAIN_DATA", str(local))
    bunch = fetch_dataset("toy", download=False)
    assert bunch.files == [local / "toy/a.txt", local / "toy/b.txt"] and bunch.root == local
    assert bunch.licence == "CC0"
    (local / "toy/a.txt").write_bytes(b"another version\n")
    with pytest.raises(ValueError, match="does not match the catalogue"):
        fetch_dataset("toy", download=False)
    assert (local / "toy/a.txt").read_bytes() == b"another version\n"  # left as it was


def test_missing_files_say_where_to_put_them(toy_catalogue, tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        fetch_dataset("toy", tmp_path / "mine", download=False)
    message = str(error.value)
    assert "toy/a.txt" in message and "toy/b.txt" in message and "LLMBRAIN_DATA" in message
    assert str(tmp_path / "mine") in message and "bz2-compressed there" in message
    with pytest.raises(ValueError, match="Unknown data set"):
        fetch_dataset("imagenet")


def test_missing_files_are_downloaded_checked_and_kept(toy_catalogue, tmp_path):
    bunch = fetch_dataset("toy", tmp_path / "mine", verbose=0)
    for path, data in toy_catalogue.items():
        assert (tmp_path / "mine" / path).read_bytes() == data  # b.txt decompressed
    assert bunch.root == tmp_path / "mine"
    (tmp_path / "remote" / "a.txt").unlink()  # offline now: the local copies suffice
    assert fetch_dataset("toy", tmp_path / "mine", verbose=0).files == bunch.files


def test_a_download_that_does_not_match_is_not_saved(toy_catalogue, tmp_path):
    (tmp_path / "remote" / "a.txt").write_bytes(b"tampered\n")
    with pytest.raises(ValueError, match="was not saved"):
        fetch_dataset("toy", tmp_path / "mine", verbose=0)
    assert not (tmp_path / "mine" / "toy" / "a.txt").exists()
    (tmp_path / "remote" / "a.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="downloading failed"):
        fetch_dataset("toy", tmp_path / "mine", verbose=0)


def test_catalogue_lists_provenance_licence_and_checksums():
    table = list_datasets()
    assert {"wikitext2", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge",
            "boolq", "openbookqa", "c4", "uscode", "pubmedqa"} <= set(table.index)
    for name, entry in _fetch._catalogue().items():
        assert entry["licence"] and entry["reference"]
        for item in entry["files"]:
            assert len(item["sha256"]) == 64 and item["size"] > 0
            assert item["url"].startswith("https://raw.githubusercontent.com/")
            assert "@" in item["source"] and item["provenance"]


def test_data_readme_holds_the_catalogue():
    readme = (ROOT / "data" / "README.md").read_text()
    table = readme.split("<!-- catalogue start -->\n")[1].split("<!-- catalogue end -->")[0]
    assert table == catalogue_markdown()


def test_samples_are_the_first_items_of_the_catalogued_files():
    samples = ROOT / "data" / "samples"
    sums = dict(line.split("  ")[::-1] for line in (samples / "SHA256SUMS").read_text().split("\n")
                if line)
    catalogued = {item["path"] for entry in _fetch._catalogue().values()
                  for item in entry["files"]}
    for path, digest in sums.items():
        data = (samples / path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest and path in catalogued
        if (SHARED_DATA / path).is_file():
            assert (SHARED_DATA / path).read_bytes().startswith(data)


@pytest.mark.skipif(not (SHARED_DATA / "piqa").is_dir(), reason="needs ../shared/data")
def test_fetchers_on_a_real_data_directory():
    assert fetch_wikitext2(SHARED_DATA, download=False).path.name.startswith("test.")
    tasks = fetch_zeroshot_tasks(["piqa", "arc_easy"], SHARED_DATA, download=False)
    assert tasks.root.resolve() == SHARED_DATA.resolve() and tasks.tasks == ["piqa", "arc_easy"]
    with pytest.raises(ValueError, match="zero-shot task"):
        fetch_zeroshot_tasks(["c4"], SHARED_DATA)


def test_command_line_prints_the_catalogue(capsys):
    from llmbrain.datasets.__main__ import main

    assert main([]) == 0
    assert capsys.readouterr().out == catalogue_markdown()
