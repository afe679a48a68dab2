"""Perplexity and WikiText-2 loading."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmbrain.evaluation import load_text, load_wikitext2, perplexity, wikitext_rows

from conftest import SHARED_DATA

WIKITEXT = SHARED_DATA / "wikitext2_raw" / "test.hf_rows_newline_joined.txt"
TEXT = ("Functional networks in the brain are sets of regions whose activity rises and falls "
        "together over time. Independent component analysis finds them without a task. ") * 3


def _manual_perplexity(model, tokenizer, text, window, max_windows=None):
    ids = tokenizer(text, return_tensors="pt").input_ids[0]
    n = len(ids) // window if max_windows is None else min(max_windows, len(ids) // window)
    nll, count = 0.0, 0
    with torch.no_grad():
        for k in range(n):
            chunk = ids[k * window:(k + 1) * window]
            logits = model(input_ids=chunk[None]).logits[0]
            log_probs = F.log_softmax(logits[:-1].double(), dim=-1)
            nll -= float(log_probs[torch.arange(window - 1), chunk[1:]].sum())
            count += window - 1
    return math.exp(nll / count), n


@pytest.mark.parametrize("window, batch_size", [(32, 3), (64, 8)])
def test_perplexity_equals_manual_computation(llama, tokenizer, window, batch_size):
    expected, n = _manual_perplexity(llama, tokenizer, TEXT, window)
    ppl, details = perplexity(llama, tokenizer, TEXT, window=window, batch_size=batch_size,
                              progress=False, return_details=True)
    assert details["n_windows"] == n == len(TEXT.encode()) // window
    assert details["n_tokens"] == n * (window - 1)
    assert ppl == pytest.approx(expected, rel=1e-5)
    # every window weighs the same: the windows' mean NLL is the perplexity's
    assert len(details["window_nll"]) == n
    assert math.exp(sum(details["window_nll"]) / n) == pytest.approx(expected, rel=1e-5)


def test_perplexity_max_windows_and_stride(llama, tokenizer):
    expected, _ = _manual_perplexity(llama, tokenizer, TEXT, 32, max_windows=2)
    ppl = perplexity(llama, tokenizer, TEXT, window=32, max_windows=2, progress=False)
    assert ppl == pytest.approx(expected, rel=1e-5)
    _, details = perplexity(llama, tokenizer, TEXT, window=32, stride=16, progress=False,
                            return_details=True)
    assert details["n_windows"] == (len(TEXT.encode()) - 32) // 16 + 1


def test_perplexity_rejects_bad_input(llama, tokenizer):
    with pytest.raises(ValueError, match="fewer than one window"):
        perplexity(llama, tokenizer, "short", window=128, progress=False)
    with pytest.raises(ValueError, match="non-empty"):
        perplexity(llama, tokenizer, "", progress=False)
    with pytest.raises(ValueError, match="window"):
        perplexity(llama, tokenizer, TEXT, window=1, progress=False)


def test_wikitext_rows_round_trip(tmp_path):
    rows = ["", " = Title = \n", "", " Body text , with @-@ marks . \n", " More . \n", ""]
    joined = "\n".join(rows)
    assert wikitext_rows(joined) == rows
    path = tmp_path / "rows.txt"
    path.write_text(joined, encoding="utf-8")
    assert load_wikitext2(path) == "\n\n".join(rows)
    other = tmp_path / "plain.txt"
    other.write_text("no trailing newline", encoding="utf-8")
    assert load_wikitext2(other) == "no trailing newline"
    with pytest.raises(FileNotFoundError):
        load_wikitext2(tmp_path / "missing.txt")


def test_load_text_formats(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"line one\r\nline two\r\n")
    assert load_text(tmp_path / "a.txt") == "line one\nline two\n"
    (tmp_path / "b.jsonl").write_text('{"text": "first"}\n{"text": "second"}\n')
    assert load_text(tmp_path / "b.jsonl") == "first\n\nsecond"
    (tmp_path / "c.json").write_text('{"1": {"CONTEXTS": ["x", "y"]}, "2": {"CONTEXTS": ["z"]}}')
    assert load_text(tmp_path / "c.json") == "x\ny\n\nz"
    (tmp_path / "d.jsonl").write_text('{"body": "no text field"}\n')
    with pytest.raises(ValueError, match="'text'"):
        load_text(tmp_path / "d.jsonl")


@pytest.mark.skipif(not WIKITEXT.is_file(), reason="shared WikiText-2 data not available")
def test_load_wikitext2_real_file_matches_literature_string():
    text = load_wikitext2(WIKITEXT)
    assert len(text) == 1_294_336
    assert len(wikitext_rows(WIKITEXT.read_text(encoding="utf-8"))) == 4358


def test_bos_per_window_protocol(llama, tokenizer):
    """Every window starts with BOS; the stream is cut into window - 1 token pieces."""
    from llmbrain.evaluation import perplexity_protocol

    window = 32
    ids = tokenizer(TEXT, return_tensors="pt").input_ids[0]
    bos = tokenizer.bos_token_id
    n = len(ids) // (window - 1)
    nll, count = 0.0, 0
    with torch.no_grad():
        for k in range(n):
            chunk = torch.cat([torch.tensor([bos]), ids[k * (window - 1):(k + 1) * (window - 1)]])
            log_probs = F.log_softmax(llama(input_ids=chunk[None]).logits[0, :-1].double(), -1)
            nll -= float(log_probs[torch.arange(window - 1), chunk[1:]].sum())
            count += window - 1
    ppl, details = perplexity(llama, tokenizer, TEXT, window=window, bos=True, progress=False,
                              return_details=True)
    assert details["protocol"] == "bos-per-window" == perplexity_protocol(llama, True)
    assert details["n_windows"] == n and details["n_tokens"] == count
    assert ppl == pytest.approx(math.exp(nll / count), rel=1e-5)
    assert perplexity(llama, tokenizer, TEXT, window=window, progress=False) != pytest.approx(ppl)


def test_bos_is_default_for_gemma_only(llama):
    from llmbrain._testing import tiny_model
    from llmbrain.evaluation import needs_bos, perplexity_protocol

    assert not needs_bos(llama) and perplexity_protocol(llama) == "stream"
    gemma = tiny_model("gemma3_text")
    assert needs_bos(gemma) and perplexity_protocol(gemma) == "bos-per-window"
