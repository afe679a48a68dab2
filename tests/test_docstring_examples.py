"""The examples in the docstrings of the results table, data sets, figures, volumes and
reports run and print what they show."""

import doctest
import importlib

import matplotlib
import pytest

matplotlib.use("Agg")

MODULES = ["llmbrain.evaluation.results", "llmbrain.datasets._fetch", "llmbrain.volumes",
           "llmbrain.plotting.pruning", "llmbrain.plotting.slices", "llmbrain.report._format",
           "llmbrain.report._interpret", "llmbrain.report._methods", "llmbrain.report._document",
           "llmbrain.report._build"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no example"
    assert result.failed == 0
