"""Every tutorial runs end to end as a notebook (jupytext percent format) and cleans up."""

from pathlib import Path

import pytest

from conftest import SHARED_DATA

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("[0-9][0-9]_*.py"))


def test_there_are_tutorials():
    assert len(TUTORIALS) >= 1


def _outputs(notebook):
    return [out for cell in notebook.cells if cell.cell_type == "code"
            for out in cell.get("outputs", [])]


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.mark.integration
@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_executes(path, tmp_path, monkeypatch):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TMPDIR", str(temp))  # the kernel's temporary folder, checked below
    if SHARED_DATA.is_dir():
        monkeypatch.setenv("LLMBRAIN_DATA", str(SHARED_DATA.resolve()))
    notebook = jupytext.read(path)
    client = nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = _outputs(notebook)
    errors = [out for out in outputs if out.get("output_type") == "error"]
    assert not errors
    assert [out for out in outputs if "image/png" in out.get("data", {})], \
        f"{path.name} shows no figure"
    printed = "".join(out.get("text", "") for out in outputs if out.get("output_type") == "stream")
    assert "IProgress not found" not in printed  # the widget warning is silenced
    # the tutorial removed what it wrote (recordings, models) from the temporary folder
    assert not list(temp.glob("llmbrain-tutorial-*"))
    assert _size(temp) < 1_000_000, sorted(p.name for p in temp.rglob("*"))[:20]
