"""Packaging facts that are easy to let drift: one version, the licence, typing, package data."""

import re
import tomllib
from pathlib import Path

import llmbrain

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_is_defined_once():
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert "version" not in PYPROJECT["project"]
    attr = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "llmbrain._version.__version__"
    assert llmbrain.__version__ == llmbrain._version.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", llmbrain.__version__)
    citation = re.search(r"version\s*=\s*\{([^}]+)\}", (ROOT / "README.md").read_text())
    assert citation and citation.group(1) == llmbrain.__version__


def test_licence_and_changelog():
    assert PYPROJECT["project"]["license"] == {"text": "BSD-3-Clause"}
    assert (ROOT / "LICENSE").read_text().startswith("BSD 3-Clause License")
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {llmbrain.__version__}" in changelog


def test_package_data_is_shipped():
    data = PYPROJECT["tool"]["setuptools"]["package-data"]["llmbrain"]
    for pattern in data:
        assert list((ROOT / "llmbrain").glob(pattern)), pattern
    assert "py.typed" in data and (ROOT / "llmbrain" / "py.typed").is_file()
    assert any("jinja2" in d for d in PYPROJECT["project"]["dependencies"])
