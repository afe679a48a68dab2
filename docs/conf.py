"""Sphinx configuration: the llmbrain documentation, built offline from the docstrings.

The API pages are generated from each subpackage's ``__all__`` and the tutorials (jupytext
percent scripts in ``../tutorials``) are converted to notebooks that myst-nb renders without
running them, so the build needs neither a network nor a model.
"""

import importlib
import inspect
import re
import shutil
import sys
from pathlib import Path

import jupytext
from sphinx.ext import autosummary

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from llmbrain._version import __version__  # noqa: E402

project = "llmbrain"
author = "The llmbrain developers"
copyright = "2026, The llmbrain developers"
version = release = __version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.autosummary", "sphinx.ext.napoleon", "myst_nb"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
templates_path = []

autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_ivar = True
napoleon_use_rtype = False

nb_execution_mode = "off"  # the tutorials need the real model: they run in the tests instead
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"llmbrain {__version__}"
html_static_path = []

# |z|, |r| and |activation| are written as in the papers; they are not substitutions.
rst_prolog = "\n".join(f".. |{name}| unicode:: U+007C {' '.join(f'U+{ord(c):04X}' for c in name)}"
                       " U+007C" for name in ("z", "r", "x", "activation", "value"))

#: API sections: (title, module, introduction).
API = [
    ("Models", "llmbrain.models", "Load Hugging Face causal LMs and describe their MLPs."),
    ("Corpora", "llmbrain.corpus", "Text in, token windows out."),
    ("Recording", "llmbrain.recording", "MLP neurons recorded into a Zarr store."),
    ("Volumes", "llmbrain.volumes", "The recording as NIfTI images."),
    ("Functional networks", "llmbrain.networks", "CanICA, FastICA and dictionary learning."),
    ("Interventions", "llmbrain.interventions", "Ablate or amplify neurons, with controls."),
    ("Pruning", "llmbrain.pruning", "Score neurons, plan and prune structurally."),
    ("Evaluation", "llmbrain.evaluation", "Perplexity, zero-shot accuracy, domain scores, speed."),
    ("Results table", "llmbrain.evaluation.results", "The tidy table every plot reads."),
    ("Data sets", "llmbrain.datasets", "Catalogue, data directories and fetchers."),
    ("Figures", "llmbrain.plotting", "Figures of every stage."),
    ("Reports", "llmbrain.report", "Key result, methods, figures and tables in one page."),
]


def _whole_literals(extract_summary):
    """autosummary cuts a summary at the first ". ", even inside an inline literal (such as
    ``"A. "``), which leaves the literal open; take the whole first paragraph then."""
    def extract(doc, settings):
        summary = extract_summary(doc, settings)
        if summary.count("``") % 2:
            lines = [line.strip() for line in doc]
            while lines and not lines[0]:
                lines.pop(0)
            first = lines[:lines.index("")] if "" in lines else lines
            summary = " ".join(first)
        return summary
    return extract


autosummary.extract_summary = _whole_literals(autosummary.extract_summary)


def _home(module, name: str) -> str:
    """Full name under which to document ``module.name``: constants are documented in the
    module that assigns them, where their ``#:`` comment is."""
    obj = getattr(module, name)
    if callable(obj) or inspect.ismodule(obj):
        return f"{module.__name__}.{name}"
    prefix = module.__name__ + "."
    for sub_name, sub in sorted(sys.modules.items()):
        if sub_name.startswith(prefix) and getattr(sub, name, None) is obj:
            source = Path(getattr(sub, "__file__", "") or "")
            if source.is_file() and re.search(rf"^{name}\b\s*[:=]", source.read_text(), re.M):
                return f"{sub_name}.{name}"
    return f"{module.__name__}.{name}"


def _write_api() -> None:
    lines = ["API reference", "=============", "",
             "The most used functions are also importable from ``llmbrain`` itself "
             "(``llmbrain.record``, ``llmbrain.load_model``, ...); they are documented once, "
             "in their stage.", ""]
    for title, module_name, intro in API:
        module = importlib.import_module(module_name)
        names = sorted(getattr(module, "__all__", []), key=str.lower)
        lines += [title, "-" * len(title), "", intro, "",
                  f".. automodule:: {module_name}", "   :no-members:", "",
                  ".. autosummary::", "   :toctree: generated", "   :nosignatures:", ""]
        lines += [f"   {_home(module, name)[len(module_name) + 1:]}" for name in names] + [""]
    (HERE / "api.rst").write_text("\n".join(lines))


def _write_tutorials() -> None:
    target = HERE / "tutorials"
    for old in target.glob("*.ipynb"):
        old.unlink()
    for script in sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py")):
        notebook = jupytext.read(script)
        jupytext.write(notebook, target / f"{script.stem}.ipynb")


_write_api()
_write_tutorials()
shutil.copyfile(ROOT / "CHANGELOG.md", HERE / "changelog.md")


def _skip_metadata_requests(app, what, name, obj, skip, options):
    """scikit-learn generates ``set_<method>_request`` methods (metadata routing) whose
    docstrings point into scikit-learn's own documentation; they are not llmbrain's API."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_metadata_requests)
