"""Domain evaluation: perplexity on domain text and domain multiple-choice
accuracy (MMLU subject CSVs, MedQA / MedMCQA JSONL)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .perplexity import load_text, perplexity
from .tasks import load_medqa, load_mmlu_csv
from .zeroshot import score_items

__all__ = ["domain_accuracy", "domain_perplexity", "load_multiple_choice"]


def load_multiple_choice(path: str | os.PathLike, limit: int | None = None):
    """Items of a domain multiple-choice file: an MMLU subject ``.csv`` or a
    MedQA / MedMCQA ``.jsonl`` (see :func:`load_mmlu_csv`, :func:`load_medqa`)."""
    path = Path(path)
    if path.suffix == ".csv":
        return load_mmlu_csv(path, limit=limit)
    if path.suffix == ".jsonl":
        return load_medqa(path, limit=limit)
    raise ValueError(f"{path}: expected an MMLU .csv or a MedQA-style .jsonl file.")


def _named_paths(paths) -> dict[str, Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if isinstance(paths, dict):
        return {str(k): Path(v) for k, v in paths.items()}
    return {Path(p).stem: Path(p) for p in paths}


def domain_perplexity(model, tokenizer, paths: Sequence | dict, *, window: int = 128,
                      batch_size: int = 8, max_windows: int | None = None, device=None,
                      progress: bool = True) -> pd.DataFrame:
    """Perplexity on each domain text file (see :func:`load_text` for formats).

    Parameters
    ----------
    paths : path, sequence of paths, or dict {name: path}
        Files to score; names default to the file stems.
    window, batch_size, max_windows, device, progress
        As in :func:`perplexity`.

    Returns
    -------
    results : pandas.DataFrame
        Index ``corpus``; columns ``perplexity``, ``nll``, ``n_windows``,
        ``n_tokens``.
    """
    rows = []
    for name, path in _named_paths(paths).items():
        ppl, details = perplexity(model, tokenizer, load_text(path), window=window,
                                  batch_size=batch_size, max_windows=max_windows, device=device,
                                  progress=progress, return_details=True)
        rows.append({"corpus": name, "perplexity": ppl, **details})
    return pd.DataFrame(rows).set_index("corpus")


def domain_accuracy(model, tokenizer, paths: Sequence | dict, *, limit: int | None = None,
                    batch_size: int = 16, device=None, progress: bool = True) -> pd.DataFrame:
    """Zero-shot accuracy on domain multiple-choice files.

    Parameters
    ----------
    paths : path, sequence of paths, or dict {name: path}
        MMLU subject CSVs or MedQA / MedMCQA JSONL files.
    limit : int, optional
        First ``limit`` questions of each file.

    Returns
    -------
    results : pandas.DataFrame
        Index ``task``; columns as :func:`score_items` (``acc``,
        ``acc_norm``, their standard errors, ``n``). For one-letter answers
        ``acc_norm`` equals ``acc``.
    """
    rows = []
    for name, path in _named_paths(paths).items():
        items = load_multiple_choice(path, limit=limit)
        scores = score_items(model, tokenizer, items, batch_size=batch_size, device=device,
                             progress=progress, desc=name)
        rows.append({"task": name, **scores})
    return pd.DataFrame(rows).set_index("task")
