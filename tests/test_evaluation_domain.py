"""Domain perplexity and domain multiple-choice accuracy."""

from __future__ import annotations

import json

import pytest

from conftest import SHARED_DATA
from llmbrain.evaluation import (
    domain_accuracy,
    domain_perplexity,
    load_multiple_choice,
    load_text,
    perplexity,
    score_items,
)

LEGAL_MMLU = SHARED_DATA / "domain" / "legal" / "mmlu" / "jurisprudence_test.csv"


@pytest.fixture()
def files(tmp_path):
    (tmp_path / "statute.txt").write_text("Section 1. The court may order relief.\r\n" * 12)
    (tmp_path / "anatomy_test.csv").write_text(
        "Which bone is in the arm?,Femur,Humerus,Tibia,Fibula,B\n"
        "Which organ pumps blood?,Heart,Liver,Lung,Kidney,A\n")
    record = {"question": "Which drug?", "options": {"A": "a", "B": "b", "C": "c", "D": "d"},
              "answer_idx": "D"}
    (tmp_path / "medqa.jsonl").write_text(json.dumps(record) + "\n")
    return tmp_path


def test_domain_perplexity_equals_perplexity_of_the_text(llama, tokenizer, files):
    table = domain_perplexity(llama, tokenizer, [files / "statute.txt"], window=32,
                              progress=False)
    expected = perplexity(llama, tokenizer, load_text(files / "statute.txt"), window=32,
                          progress=False)
    assert list(table.index) == ["statute"]
    assert table.loc["statute", "perplexity"] == pytest.approx(expected)


def test_domain_accuracy_scores_csv_and_jsonl(llama, tokenizer, files):
    paths = {"anatomy": files / "anatomy_test.csv", "medqa": files / "medqa.jsonl"}
    table = domain_accuracy(llama, tokenizer, paths, progress=False)
    assert list(table.index) == ["anatomy", "medqa"]
    assert table.loc["anatomy", "n"] == 2 and table.loc["medqa", "n"] == 1
    expected = score_items(llama, tokenizer, load_multiple_choice(paths["anatomy"]),
                           progress=False)
    assert table.loc["anatomy", "acc"] == expected["acc"]
    # One-letter answers all have length 1, so acc_norm is acc.
    assert (table["acc"] == table["acc_norm"]).all()
    with pytest.raises(ValueError, match="MMLU"):
        load_multiple_choice(files / "statute.txt")


@pytest.mark.skipif(not LEGAL_MMLU.is_file(), reason="shared domain data not available")
def test_real_mmlu_file_loads():
    items = load_multiple_choice(LEGAL_MMLU)
    assert len(items) == 108
    assert items[0].contexts[0].startswith("The following are multiple choice questions (with "
                                           "answers) about jurisprudence.\n\nWhich statement")
    assert items[0].gold == 3
