import json

import numpy as np
import pytest

from llmbrain.corpus import corpus_fingerprint, load_corpus, tokenize_windows


def test_default_corpus_needs_no_download():
    docs = load_corpus("default")
    assert len(docs) > 50 and sum(map(len, docs)) > 100_000


def test_text_jsonl_folder_and_list(tmp_path, texts):
    (tmp_path / "a.txt").write_text(texts[0])
    (tmp_path / "b.txt").write_text(texts[1])
    assert load_corpus(tmp_path / "a.txt") == [texts[0]]
    assert load_corpus(tmp_path) == texts[:2]
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("\n".join(json.dumps({"body": t}) for t in texts))
    assert load_corpus(jsonl, text_field="body") == texts
    with pytest.raises(ValueError, match="no field 'text'"):
        load_corpus(jsonl)
    assert load_corpus(texts, max_documents=2) == texts[:2]


def test_bad_corpora_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_corpus(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(ValueError, match="no text"):
        load_corpus(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="no text"):
        load_corpus([])


def test_windows_keep_documents_apart(tokenizer, texts):
    windows = tokenize_windows(texts, tokenizer, 32)
    assert windows.input_ids.shape[1] == 32
    assert (windows.input_ids[:, 0] == tokenizer.bos_token_id).all()
    for doc in np.unique(windows.document):
        ids = tokenizer(texts[doc], add_special_tokens=False)["input_ids"]
        rows = windows.input_ids[windows.document == doc][:, 1:]
        starts = windows.start[windows.document == doc]
        for row, start in zip(rows, starts):
            assert row.tolist() == ids[start:start + 31]
    assert windows.fingerprint == corpus_fingerprint(texts)


def test_window_errors(tokenizer, texts):
    with pytest.raises(ValueError, match="longer than the model's context"):
        tokenize_windows(texts, tokenizer, 512, max_length=256)
    with pytest.raises(ValueError, match="shorter window_length"):
        tokenize_windows(["tiny"], tokenizer, 64)
    assert tokenize_windows(texts, tokenizer, 16, max_tokens=40).n_tokens == 32
