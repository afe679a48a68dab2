"""Text corpora and their cutting into token windows.

A corpus is a sequence of documents (strings). :func:`load_corpus` reads one
from a plain text file, a JSONL file (a named field), a list of strings, a
Hugging Face dataset name (needs a network), or the built-in default: the
Python documentation topics that ship with CPython (``pydoc_data``), which
need no download. :func:`tokenize_windows` cuts the documents into windows of
a fixed number of tokens and keeps, for every token, its document and its
position.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DEFAULT_CORPUS", "TokenWindows", "corpus_fingerprint", "load_corpus", "read_jsonl",
           "tokenize_windows"]

#: Name that selects the built-in corpus (CPython's documentation topics).
DEFAULT_CORPUS = "default"


def _default_documents() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)]


def _read_text(path: Path, encoding: str) -> str:
    """The text of ``path``; a byte that is not ``encoding`` is an error that
    names the file, line and column."""
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - data.rfind(b"\n", 0, err.start)
        raise ValueError(
            f"{path} is not {encoding} text: line {line}, column {column} holds the byte "
            f"0x{data[err.start]:02x}, which {encoding} cannot decode. Convert the file to "
            f"{encoding} (e.g. iconv -f latin1 -t utf-8), or give its encoding with "
            "encoding=...; a binary file is no corpus.") from None


def read_jsonl(path, *, limit: int | None = None, encoding: str = "utf-8"
               ) -> list[tuple[int, object]]:
    """The records of a JSON Lines file, with their line numbers.

    Blank lines are skipped; a line that is not JSON, or bytes that are not
    ``encoding``, raise a ``ValueError`` that names the file and the line.

    Parameters
    ----------
    path : str or path
    limit : int, optional
        Stop after this many records.
    encoding : str, default="utf-8"

    Returns
    -------
    list of (int, object)
        ``(line number, record)`` pairs.
    """
    path = Path(path)
    records = []
    for number, line in enumerate(_read_text(path, encoding).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {number}: not valid JSON ({err}).") from None
        if limit is not None and len(records) >= limit:
            break
    return records


def _read_jsonl(path: Path, field: str, encoding: str) -> list[str]:
    documents = []
    for number, record in read_jsonl(path, encoding=encoding):
        if not isinstance(record, dict) or field not in record:
            found = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise ValueError(f"{path}, line {number}: no field {field!r}; the record has "
                             f"{found}. Choose one with text_field=...")
        documents.append(str(record[field]))
    return documents


def load_corpus(source=DEFAULT_CORPUS, *, text_field: str = "text", split: str = "train",
                max_documents: int | None = None, encoding: str = "utf-8") -> list[str]:
    """Load a corpus as a list of documents.

    Parameters
    ----------
    source : str, path or list of str, default="default"
        ``"default"`` for CPython's documentation topics; a text file (one
        document); a ``.jsonl`` file (one document per record); a folder of
        ``.txt`` files (one document each); a list of strings; or
        ``"hf:NAME[:CONFIG]"`` for a
        Hugging Face dataset (needs a network and the ``datasets`` package).
    text_field : str, default="text"
        Field holding the text in JSONL records and Hugging Face datasets.
    split : str, default="train"
        Split of a Hugging Face dataset.
    max_documents : int, optional
        Keep only the first documents.
    encoding : str, default="utf-8"
        Encoding of text and JSONL files. A file that does not decode is
        refused (the message names the file, line and column), never read
        with replaced characters.

    Returns
    -------
    list of str
        The non-empty documents.

    Raises
    ------
    FileNotFoundError
        If a path does not exist.
    ValueError
        If the corpus holds no text, or a file is not text in ``encoding``.
    ModuleNotFoundError
        If a Hugging Face dataset is asked for without the ``datasets`` package.
    """
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ValueError(f"Unknown text encoding {encoding!r}; use e.g. 'utf-8' or "
                         "'latin-1'.") from None
    if isinstance(source, (list, tuple)):
        if not all(isinstance(doc, str) for doc in source):
            raise TypeError("A corpus given as a list must hold strings only.")
        documents = list(source)
    elif str(source) == DEFAULT_CORPUS:
        documents = _default_documents()
    elif str(source).startswith("hf:"):
        documents = _load_hf_dataset(str(source)[3:], text_field, split)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"Corpus {path} does not exist. Give a text or JSONL file, a "
                                    "folder of .txt files, a list of strings, 'hf:NAME' or 'default'.")
        if path.is_dir():
            files = sorted(path.glob("*.txt"))
            if not files:
                raise ValueError(f"Folder {path} holds no .txt file.")
            documents = [_read_text(f, encoding) for f in files]
        elif path.suffix == ".jsonl":
            documents = _read_jsonl(path, text_field, encoding)
        else:
            documents = [_read_text(path, encoding)]
    documents = [doc for doc in documents if doc.strip()]
    if max_documents is not None:
        documents = documents[:max_documents]
    if not documents:
        raise ValueError(f"The corpus {source if not isinstance(source, list) else '(list)'} "
                         "holds no text: give a corpus with at least one non-empty document.")
    return documents


def _load_hf_dataset(name: str, text_field: str, split: str) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise ModuleNotFoundError("Loading a Hugging Face dataset (hf:NAME) needs the "
                                  "'datasets' package: pip install 'llmbrain[datasets]'") from None
    dataset_name, _, config = name.partition(":")
    dataset = datasets.load_dataset(dataset_name, config or None, split=split)
    return [str(text) for text in dataset[text_field]]


def corpus_fingerprint(documents: list[str]) -> str:
    """A short SHA-256 of the documents (order matters)."""
    digest = hashlib.sha256()
    for doc in documents:
        digest.update(doc.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


@dataclass
class TokenWindows:
    """A corpus cut into windows of ``window_length`` tokens.

    Attributes
    ----------
    input_ids : ndarray of int32, shape (n_windows, window_length)
    document : ndarray of int32, shape (n_windows,)
        Index of the document each window comes from.
    start : ndarray of int64, shape (n_windows,)
        Position of each window's first token inside its document.
    fingerprint : str
        Fingerprint of the documents.
    """

    input_ids: np.ndarray
    document: np.ndarray
    start: np.ndarray
    fingerprint: str

    @property
    def window_length(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.size)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def tokenize_windows(documents: list[str], tokenizer, window_length: int = 256, *,
                     max_tokens: int | None = None, max_length: int | None = None,
                     add_bos: bool = True) -> TokenWindows:
    """Cut documents into windows of ``window_length`` tokens.

    Each document is tokenized on its own and cut into consecutive,
    non-overlapping windows. Windows never straddle two documents, so every
    token belongs to one document; the incomplete tail of a document (and a
    document shorter than one window) is left out.

    Parameters
    ----------
    documents : list of str
    tokenizer : transformers tokenizer
    window_length : int, default=256
        Tokens per window.
    max_tokens : int, optional
        Stop once this many tokens (rounded down to whole windows, at least
        one) are taken.
    max_length : int, optional
        The model's context length; a longer window is refused.
    add_bos : bool, default=True
        Start each window with the tokenizer's BOS token, if it has one.

    Returns
    -------
    TokenWindows
    """
    if int(window_length) < 2:
        raise ValueError(f"window_length must be at least 2 tokens, got {window_length}.")
    if max_length is not None and window_length > max_length:
        raise ValueError(f"window_length={window_length} is longer than the model's context "
                         f"({max_length} tokens): choose window_length <= {max_length}.")
    if max_tokens is not None and int(max_tokens) < window_length:
        raise ValueError(f"max_tokens={max_tokens} is less than one window of {window_length} "
                         "tokens: take at least one window.")
    bos = tokenizer.bos_token_id if add_bos else None
    body = window_length - (bos is not None)
    max_windows = None if max_tokens is None else int(max_tokens) // window_length
    windows, doc_index, starts = [], [], []
    for index, doc in enumerate(documents):
        ids = tokenizer(doc, add_special_tokens=False, verbose=False)["input_ids"]
        for begin in range(0, len(ids) - body + 1, body):
            chunk = ids[begin:begin + body]
            windows.append(([bos] if bos is not None else []) + chunk)
            doc_index.append(index)
            starts.append(begin)
            if max_windows is not None and len(windows) >= max_windows:
                break
        if max_windows is not None and len(windows) >= max_windows:
            break
    if not windows:
        raise ValueError(
            f"No document holds {body} tokens, so no window of {window_length} tokens can be "
            "cut: give more text or a shorter window_length.")
    return TokenWindows(input_ids=np.asarray(windows, dtype=np.int32),
                        document=np.asarray(doc_index, dtype=np.int32),
                        start=np.asarray(starts, dtype=np.int64),
                        fingerprint=corpus_fingerprint(documents))
