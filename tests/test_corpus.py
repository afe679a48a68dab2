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


def test_text_that_is_not_utf8_is_refused_with_file_and_line(tmp_path):
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Première ligne\nDeuxième: café\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.txt is not utf-8 text: line 1, column 6 .*0xe8"):
        load_corpus(latin)
    assert load_corpus(latin, encoding="latin-1") == ["Première ligne\nDeuxième: café\n"]
    noise = tmp_path / "noise.txt"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="noise.txt is not utf-8 text"):
        load_corpus(noise)
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "a.txt").write_bytes(b"caf\xe9")
    with pytest.raises(ValueError, match="a.txt is not utf-8"):
        load_corpus(tmp_path / "folder")
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl is not utf-8 text: line 2"):
        load_corpus(jsonl)
    with pytest.raises(ValueError, match="Unknown text encoding"):
        load_corpus(latin, encoding="klingon")


def test_hf_corpus_without_datasets_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(ModuleNotFoundError, match="pip install 'llmbrain\\[datasets\\]'"):
        load_corpus("hf:wikitext:wikitext-2-raw-v1")


def test_max_tokens_below_one_window_is_refused(tokenizer, texts):
    with pytest.raises(ValueError, match="less than one window"):
        tokenize_windows(texts, tokenizer, 32, max_tokens=0)
    with pytest.raises(ValueError, match="less than one window"):
        tokenize_windows(texts, tokenizer, 32, max_tokens=31)
