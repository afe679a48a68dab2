"""Evaluation of the real SmolLM2-135M on a few items."""

from __future__ import annotations

import pytest

from conftest import SHARED_DATA
from llmbrain.evaluation import evaluate_zeroshot, load_wikitext2, perplexity

WIKITEXT = SHARED_DATA / "wikitext2_raw" / "test.hf_rows_newline_joined.txt"

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not WIKITEXT.is_file(), reason="shared data not available")]


def test_smollm2_perplexity_and_accuracy(smollm2):
    model, tokenizer = smollm2
    ppl = perplexity(model, tokenizer, load_wikitext2(WIKITEXT), window=128, max_windows=4,
                     progress=False)
    assert 5 < ppl < 100  # a trained 135M model, far below a uniform guess (~49,000)
    table = evaluate_zeroshot(model, tokenizer, SHARED_DATA, ["arc_easy"], limit=20,
                              progress=False)
    assert table.loc["arc_easy", "n"] == 20
    assert table.loc["arc_easy", "acc"] > 0.3  # chance is 0.25
