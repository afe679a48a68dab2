"""Task loaders: item counts and the prompts lm-evaluation-harness builds."""

from __future__ import annotations

import json

import pytest

from conftest import SHARED_DATA
from llmbrain.evaluation import (
    ZEROSHOT_TASKS,
    MultipleChoiceItem,
    hellaswag_preprocess,
    load_boolq,
    load_hellaswag,
    load_medqa,
    load_mmlu_csv,
    load_task,
    load_winogrande,
)

needs_data = pytest.mark.skipif(not (SHARED_DATA / "piqa" / "valid.jsonl").is_file(),
                                reason="shared evaluation data not available")

COUNTS = {"piqa": 1838, "arc_easy": 2376, "arc_challenge": 1172, "hellaswag": 10042,
          "winogrande": 1267, "boolq": 3270, "openbookqa": 500}


@needs_data
@pytest.mark.parametrize("task", ZEROSHOT_TASKS)
def test_loaders_count_every_item(task):
    items = load_task(task, SHARED_DATA)
    assert len(items) == COUNTS[task]
    assert all(isinstance(item, MultipleChoiceItem) for item in items)
    assert load_task(task, SHARED_DATA, limit=3) == items[:3]


def _first(path):
    with open(path, encoding="utf-8") as f:
        return json.loads(f.readline())


@needs_data
def test_piqa_prompt():
    item = load_task("piqa", SHARED_DATA, limit=1)[0]
    doc = _first(SHARED_DATA / "piqa" / "valid.jsonl")
    # lm-eval piqa.yaml: "Question: {{goal}}\nAnswer:", choices [sol1, sol2]
    assert item.contexts == ("Question: How do I ready a guinea pig cage for it's new "
                             "occupants?\nAnswer:",) * 2
    assert item.continuations == (" " + doc["sol1"], " " + doc["sol2"])
    assert item.choices == (doc["sol1"], doc["sol2"])
    assert item.gold == int((SHARED_DATA / "piqa" / "valid-labels.lst").read_text().split()[0])


@needs_data
def test_arc_prompt():
    item = load_task("arc_challenge", SHARED_DATA, limit=1)[0]
    assert item.contexts[0] == ("Question: An astronomer observes that a planet rotates faster "
                                "after a meteorite impact. Which is the most likely effect of "
                                "this increase in rotation?\nAnswer:")
    assert item.continuations[2] == " Planetary days will become shorter."
    assert item.gold == 2  # answerKey "C"


@needs_data
def test_hellaswag_prompt_matches_lm_eval_example():
    items = load_task("hellaswag", SHARED_DATA, limit=2)
    # lm-eval: preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())
    assert items[0].contexts[0] == "Roof shingle removal: A man is sitting on a roof. He"
    assert items[0].continuations[3] == " starts pulling up roofing on a roof."
    assert items[0].gold == 3
    assert items[1].contexts[0] == ("Clean and jerk: A lady walks to a barbell. She bends down "
                                    "and grabs the pole. The lady")


def test_hellaswag_preprocess_drops_wikihow_markup():
    text = "[header] How to  cook rice [title] Rinse the rice. [step] Use cold water."
    # lm-eval strips before removing the markup, so the leading space stays.
    assert hellaswag_preprocess(text) == " How to cook rice. Rinse the rice. Use cold water."


def test_hellaswag_loader_rejects_bad_format(tmp_path):
    path = tmp_path / "h.txt"
    path.write_text("only\nfive\nlines\nin\nhere\n")
    with pytest.raises(ValueError, match="multiple of 6"):
        load_hellaswag(path)


@needs_data
def test_winogrande_partial_scoring():
    item = load_task("winogrande", SHARED_DATA, limit=1)[0]
    # lm-eval preprocess_winogrande: contexts = sentence[:blank] + option,
    # target = sentence after the blank, stripped.
    assert item.contexts == ("Sarah was a much better surgeon than Maria so Sarah",
                             "Sarah was a much better surgeon than Maria so Maria")
    assert item.continuations == (" always got the easier cases.",) * 2
    assert item.choices == item.contexts
    assert item.gold == 1  # answer "2"


def test_winogrande_from_file(tmp_path):
    path = tmp_path / "w.jsonl"
    path.write_text(json.dumps({"sentence": "The cup fell on the _ and it broke.",
                                "option1": "floor", "option2": "table", "answer": "1"}) + "\n")
    item = load_winogrande(path)[0]
    assert item.contexts == ("The cup fell on the floor", "The cup fell on the table")
    assert item.continuations == (" and it broke.",) * 2


def test_a_broken_task_file_names_its_line(tmp_path):
    path = tmp_path / "w.jsonl"
    good = json.dumps({"sentence": "A _ b.", "option1": "x", "option2": "y", "answer": "1"})
    path.write_text(good + "\n\n" + '{"sentence": "cut' + "\n")
    with pytest.raises(ValueError, match=r"w.jsonl, line 3: not valid JSON"):
        load_winogrande(path)
    path.write_bytes(good.encode() + b"\n" + b'{"sentence": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"line 2, column"):
        load_winogrande(path)


@needs_data
def test_boolq_prompt_rebuilt_as_lm_eval():
    item = load_task("boolq", SHARED_DATA, limit=1)[0]
    query = _first(SHARED_DATA / "boolq" / "boolq_dev_llmfoundry.jsonl")["query"]
    passage = query[len("Passage: "):query.rindex("\nQuestion: ")]
    # lm-eval boolq: "{{passage}}\nQuestion: {{question}}?\nAnswer:", choices ["no", "yes"]
    assert item.contexts[0] == (passage + "\nQuestion: does ethanol take more energy make that "
                                "produces?\nAnswer:")
    assert item.contexts[0].startswith("All biomass goes through at least some of these steps")
    assert item.continuations == (" no", " yes")
    assert item.gold == 0


def test_boolq_rejects_other_formats(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text(json.dumps({"query": "no passage here", "choices": ["no", "yes"],
                                "gold": 1}) + "\n")
    with pytest.raises(ValueError, match="llm-foundry"):
        load_boolq(path)


@needs_data
def test_openbookqa_prompt_is_question_stem():
    item = load_task("openbookqa", SHARED_DATA, limit=1)[0]
    assert item.contexts[0].endswith("they decide the best way to save money is to")
    assert item.continuations[1] == " quit eating lunch out"
    assert item.gold == 1


def test_mmlu_prompt(tmp_path):
    path = tmp_path / "high_school_physics_test.csv"
    path.write_text('"  What is g? ",9.8 m/s^2,1 m/s,0,42,A\n')
    item = load_mmlu_csv(path)[0]
    assert item.contexts[0] == ("The following are multiple choice questions (with answers) "
                                "about high school physics.\n\nWhat is g?\nA. 9.8 m/s^2\n"
                                "B. 1 m/s\nC. 0\nD. 42\nAnswer:")
    assert item.continuations == (" A", " B", " C", " D")
    assert item.gold == 0
    path.write_text("q,a,b,c,d,E\n")
    with pytest.raises(ValueError, match="answer letter"):
        load_mmlu_csv(path)


def test_medqa_prompt(tmp_path):
    path = tmp_path / "medqa.jsonl"
    path.write_text(json.dumps({"question": "Which?", "options": {"A": "a", "B": "b", "C": "c",
                                                                  "D": "d"},
                                "answer_idx": "C"}) + "\n")
    item = load_medqa(path)[0]
    assert item.contexts[0] == "Which?\nA. a\nB. b\nC. c\nD. d\nAnswer:"
    assert item.gold == 2


def test_load_task_rejects_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="Unknown task"):
        load_task("mmlu", tmp_path)
    with pytest.raises(FileNotFoundError):
        load_task("piqa", tmp_path)
