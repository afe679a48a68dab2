"""The package's import graph follows the data's one-way flow:
text -> activations -> volumes -> networks -> interventions -> pruning -> figures -> report
-> pipeline -> command line, over shared foundations (models, corpora, data sets, and the
measurements of a model that every stage reports in one results table). A module may import from its own stage or a lower one,
never from a higher one (imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import llmbrain

PACKAGE = Path(llmbrain.__file__).parent

#: The stage of each top-level module or subpackage; shared foundations are stage 0.
STAGES = {
    "_atomic": 0, "_outputs": 0, "_moments": 0, "_text": 0, "_version": 0, "_testing": 0,
    "distributed": 0, "datasets": 0, "corpus": 0, "models": 0,
    "evaluation": 0,  # measuring a model (perplexity, zero-shot, results table) serves every stage
    "recording": 1, "volumes": 2, "networks": 3, "interventions": 4, "pruning": 5,
    "plotting": 7, "report": 8, "pipeline": 9, "cli": 10, "__main__": 10,
}


def _top(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imported(path: Path) -> set[str]:
    """Top-level llmbrain modules that ``path`` imports."""
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    if path.name == "__init__.py":
        package = path.relative_to(PACKAGE.parent).parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[:len(package) - node.level + 1])
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            names = [name] if node.module or not node.level else [
                f"{name}.{alias.name}" for alias in node.names]
            if node.level and not node.module:
                names = [f"{name}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "llmbrain" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_no_module_imports_from_a_higher_stage():
    modules = [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] != "__init__.py"]
    unknown = sorted({_top(p) for p in modules} - set(STAGES))
    assert not unknown, f"give these modules a stage: {unknown}"
    upward = []
    for path in modules:
        stage = STAGES[_top(path)]
        for target in _imported(path):
            if target in STAGES and STAGES[target] > stage:
                upward.append(f"{path.relative_to(PACKAGE)} -> llmbrain.{target}")
    assert not upward, "imports against the flow:\n" + "\n".join(sorted(upward))


def test_the_checker_sees_relative_imports(tmp_path):
    found = _imported(PACKAGE / "pruning" / "criteria.py")
    assert "models" in found and "pruning" in found
