"""Find, check and download the data sets of the catalogue."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import os
import urllib.error
import urllib.request
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

import pandas as pd
from sklearn.utils import Bunch

from .._atomic import atomic_write

__all__ = ["DatasetNotFoundError", "fetch_c4", "fetch_dataset", "fetch_wikitext2",
           "fetch_zeroshot_tasks", "get_data_dirs", "list_datasets"]

#: Names of the zero-shot tasks of the pruning literature, as in the catalogue.
_ZEROSHOT = ("boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge",
             "openbookqa")


class DatasetNotFoundError(FileNotFoundError):
    """A data set is neither in a data directory nor downloadable now."""


@lru_cache(maxsize=1)
def _catalogue() -> dict:
    return json.loads(files(__package__).joinpath("catalogue.json").read_text(encoding="utf-8"))


def _split(value) -> list[Path]:
    return [Path(p).expanduser() for p in str(value).split(os.pathsep) if p]


def get_data_dirs(data_dir=None) -> list[Path]:
    """The folders searched for data, in order.

    1. ``data_dir``, when given (a path, or several joined by ``os.pathsep``);
    2. the ``LLMBRAIN_DATA`` environment variable (one path or several joined
       by ``os.pathsep``);
    3. the ``LLMBRAIN_SHARED_DATA`` environment variable (a read-only copy
       shared by several users);
    4. ``~/llmbrain_data``.

    Downloads go to the first of them. Inside each folder, a file keeps the
    path it has in the catalogue (``wikitext2_raw/test.hf_rows_newline_joined.txt``,
    ``piqa/valid.jsonl``, ...), so one folder can hold every data set.

    Parameters
    ----------
    data_dir : str or path-like, optional

    Returns
    -------
    list of pathlib.Path

    Examples
    --------
    >>> from llmbrain.datasets import get_data_dirs
    >>> get_data_dirs("/scratch/me")[0].as_posix()
    '/scratch/me'
    """
    dirs = []
    if data_dir is not None:
        dirs += _split(os.fspath(data_dir))
    for variable in ("LLMBRAIN_DATA", "LLMBRAIN_SHARED_DATA"):
        if os.environ.get(variable):
            dirs += _split(os.environ[variable])
    dirs.append(Path("~/llmbrain_data").expanduser())
    unique = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def list_datasets() -> pd.DataFrame:
    """The catalogue: one row per data set llmbrain knows.

    Returns
    -------
    pandas.DataFrame
        Index ``name``; columns ``title``, ``kind`` (``evaluation``,
        ``calibration`` or ``domain``), ``licence``, ``reference``,
        ``n_files`` and ``size_bytes``.

    Examples
    --------
    >>> from llmbrain.datasets import list_datasets
    >>> list_datasets().loc["wikitext2", ["kind", "licence"]].tolist()
    ['evaluation', 'CC BY-SA 3.0 / GFDL']
    """
    rows = [{"name": name, "title": d["title"], "kind": d["kind"], "licence": d["licence"],
             "reference": d["reference"], "n_files": len(d["files"]),
             "size_bytes": sum(f["size"] for f in d["files"])}
            for name, d in _catalogue().items()]
    return pd.DataFrame(rows).set_index("name")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(entry: dict, target: Path, timeout: float, verbose: int) -> None:
    if verbose:
        print(f"Downloading {entry['path']} ({entry['size']:,} bytes) from {entry['url']}",
              flush=True)
    with urllib.request.urlopen(entry["url"], timeout=timeout) as response:
        data = response.read()
    if entry.get("compression") == "bz2":
        data = bz2.decompress(data)
    elif entry.get("compression") == "gzip":
        data = gzip.decompress(data)
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        raise ValueError(f"The file downloaded from {entry['url']} has sha256 {digest}, not the "
                         f"catalogue's {entry['sha256']}: it was not saved.")
    atomic_write(target, data)


def _not_found(name: str, missing: list[dict], dirs: list[Path], reason: str) -> str:
    lines = [f"Data set {name!r} is not available: {reason}",
             "Put these files (same relative paths) under one of the data directories "
             f"({', '.join(str(d) for d in dirs)}), or point LLMBRAIN_DATA at a folder that "
             "holds them:"]
    lines += [f"  {e['path']}  (sha256 {e['sha256'][:16]}..., from {e['url']}"
              + (f", {e['compression']}-compressed there" if e.get("compression") else "") + ")"
              for e in missing]
    return "\n".join(lines)


def fetch_dataset(name: str, data_dir=None, *, download: bool = True, timeout: float = 60,
                  verbose: int = 1) -> Bunch:
    """Find a data set of the catalogue, check it, and download what is missing.

    Each file is looked for under the data directories
    (:func:`get_data_dirs`) at its catalogue path, and its SHA-256 checked.
    Missing files are downloaded from their public source (a fixed commit
    of a public repository) into the first data directory when ``download``
    is True.

    Parameters
    ----------
    name : str
        A data set of :func:`list_datasets`.
    data_dir : str or path-like, optional
        Searched first, and where downloads go.
    download : bool, default=True
        Download missing files; when False, missing files raise.
    timeout : float, default=60
        Seconds to wait for the network.
    verbose : int, default=1
        Print what is downloaded.

    Returns
    -------
    sklearn.utils.Bunch
        ``name``, ``title``, ``licence``, ``reference``, ``files`` (the
        local paths, in catalogue order) and ``root`` (the data directory
        holding them, or None when they lie in several).

    Raises
    ------
    DatasetNotFoundError
        When a file is missing and cannot be downloaded; the message lists
        the files, their checksums and where to put them.
    ValueError
        When a local file does not match its checksum (it is left as it is).

    Examples
    --------
    >>> from llmbrain.datasets import fetch_dataset
    >>> piqa = fetch_dataset("piqa", download=False)       # doctest: +SKIP
    >>> piqa.files[0].name                                 # doctest: +SKIP
    'valid.jsonl'
    """
    catalogue = _catalogue()
    if name not in catalogue:
        raise ValueError(f"Unknown data set {name!r}; the catalogue has "
                         f"{', '.join(catalogue)}.")
    entry = catalogue[name]
    dirs = get_data_dirs(data_dir)
    found, roots, missing = [], [], []
    for item in entry["files"]:
        path = next((d / item["path"] for d in dirs if (d / item["path"]).is_file()), None)
        if path is not None:
            digest = _sha256(path)
            if digest != item["sha256"]:
                raise ValueError(f"{path} does not match the catalogue (sha256 {digest}, expected "
                                 f"{item['sha256']}): it is another version of the file. Replace "
                                 f"it with the file from {item['url']}.")
            roots.append(Path(str(path)[:-len(item["path"])]))
        else:
            missing.append(item)
        found.append(path)
    if missing:
        if not download:
            raise DatasetNotFoundError(_not_found(name, missing, dirs,
                                                  "files are missing and download=False."))
        target_dir = dirs[0]
        for item in missing:
            try:
                _download(item, target_dir / item["path"], timeout, verbose)
            except (urllib.error.URLError, OSError, TimeoutError) as err:
                raise DatasetNotFoundError(_not_found(
                    name, missing, dirs, f"downloading failed ({err}).")) from err
            found[entry["files"].index(item)] = target_dir / item["path"]
            roots.append(target_dir)
    root = roots[0] if roots and all(r == roots[0] for r in roots) else None
    return Bunch(name=name, title=entry["title"], licence=entry["licence"],
                 reference=entry["reference"], files=found, root=root)


def fetch_wikitext2(data_dir=None, *, download: bool = True, verbose: int = 1) -> Bunch:
    """The WikiText-2 (raw) test split, the pruning literature's perplexity benchmark.

    Returns the :func:`fetch_dataset` Bunch plus ``path``, the text file
    (read it with :func:`llmbrain.evaluation.load_wikitext2`, which rebuilds
    the string the literature scores).

    Examples
    --------
    >>> from llmbrain.datasets import fetch_wikitext2
    >>> from llmbrain.evaluation import load_wikitext2
    >>> text = load_wikitext2(fetch_wikitext2().path)      # doctest: +SKIP
    """
    bunch = fetch_dataset("wikitext2", data_dir, download=download, verbose=verbose)
    bunch.path = bunch.files[0]
    return bunch


def fetch_c4(data_dir=None, *, download: bool = True, verbose: int = 1) -> Bunch:
    """The first 1,000 English C4 training documents, the usual calibration text.

    Returns the :func:`fetch_dataset` Bunch plus ``path``, a JSONL file with a
    ``text`` field (:func:`llmbrain.load_corpus` reads it).
    """
    bunch = fetch_dataset("c4", data_dir, download=download, verbose=verbose)
    bunch.path = bunch.files[0]
    return bunch


def fetch_zeroshot_tasks(tasks=_ZEROSHOT, data_dir=None, *, download: bool = True,
                         verbose: int = 1) -> Bunch:
    """The zero-shot tasks, gathered under one data root.

    Parameters
    ----------
    tasks : sequence of str
        Task names (default the seven tasks of the pruning literature:
        BoolQ, PIQA, HellaSwag, WinoGrande, ARC-Easy, ARC-Challenge,
        OpenBookQA).
    data_dir, download, verbose
        As in :func:`fetch_dataset`.

    Returns
    -------
    sklearn.utils.Bunch
        ``root`` (pass it to :func:`llmbrain.evaluation.evaluate_zeroshot`),
        ``tasks`` and ``datasets`` (one Bunch per task).

    Examples
    --------
    >>> from llmbrain.datasets import fetch_zeroshot_tasks
    >>> from llmbrain.evaluation import evaluate_zeroshot
    >>> data = fetch_zeroshot_tasks(["piqa", "arc_easy"])            # doctest: +SKIP
    >>> evaluate_zeroshot(model, tokenizer, data.root, data.tasks)   # doctest: +SKIP
    """
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    unknown = [t for t in tasks if _catalogue().get(t, {}).get("kind") != "evaluation"
               or t == "wikitext2"]
    if unknown:
        raise ValueError(f"Unknown zero-shot task(s) {unknown}; choose from "
                         f"{', '.join(_ZEROSHOT)}.")
    datasets = {t: fetch_dataset(t, data_dir, download=download, verbose=verbose) for t in tasks}
    roots = {d.root for d in datasets.values()}
    if len(roots) != 1 or None in roots:
        raise DatasetNotFoundError(
            "The zero-shot tasks lie in several data directories "
            f"({', '.join(sorted(str(r) for r in roots))}); evaluation reads them from one root. "
            "Move them into one folder (keeping their relative paths) or fetch them with "
            "data_dir=<that folder>.")
    return Bunch(root=roots.pop(), tasks=tasks, datasets=datasets)


def catalogue_markdown() -> str:
    """The catalogue as a Markdown table (the one in ``data/README.md``)."""
    lines = ["| data set | kind | licence | file | bytes | sha256 | source |",
             "|---|---|---|---|---:|---|---|"]
    for name, entry in _catalogue().items():
        for i, item in enumerate(entry["files"]):
            head = (f"`{name}`: {entry['title']}", entry["kind"], entry["licence"]) if i == 0 \
                else ("", "", "")
            source = item["source"] + (f" ({item['compression']})" if item.get("compression")
                                       else "")
            lines.append(f"| {' | '.join(head)} | `{item['path']}` | {item['size']:,} | "
                         f"`{item['sha256'][:16]}` | `{source}` |")
    return "\n".join(lines) + "\n"
