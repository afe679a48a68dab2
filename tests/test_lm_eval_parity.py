"""llmbrain's zero-shot scoring gives lm-evaluation-harness's numbers on the same items.

``tests/data/lm_eval_reference.json`` holds the log-likelihoods that lm-eval's ``HFLM.loglikelihood``
gave for the first items of the seven zero-shot tasks in ``data/samples`` with the default model
(``tests/data/make_lm_eval_reference.py`` wrote it), so this check needs neither lm-eval nor a network.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from llmbrain.evaluation import ZEROSHOT_TASKS, load_task, loglikelihoods, score_items

REFERENCE = json.loads((Path(__file__).parent / "data" / "lm_eval_reference.json").read_text())
SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
REQUESTS = REFERENCE["requests"]


def _items(task):
    n = 1 + max(r["item"] for r in REQUESTS if r["task"] == task)
    return load_task(task, SAMPLES, limit=n)


def test_reference_covers_every_task():
    assert {r["task"] for r in REQUESTS} == set(ZEROSHOT_TASKS)
    assert REFERENCE["lm_eval"].startswith("0.4.")


@pytest.mark.parametrize("task", ZEROSHOT_TASKS)
def test_task_loaders_give_the_scored_requests(task):
    """The prompts that lm-eval scored are the ones llmbrain builds from the sample files."""
    ours = [(index, choice, context, continuation, item.gold)
            for index, item in enumerate(_items(task))
            for choice, (context, continuation) in enumerate(zip(item.contexts,
                                                                 item.continuations))]
    theirs = [(r["item"], r["choice"], r["context"], r["continuation"], r["gold"])
              for r in REQUESTS if r["task"] == task]
    assert ours == theirs


@pytest.mark.integration
def test_loglikelihoods_match_lm_eval(smollm2):
    model, tokenizer = smollm2
    requests = [(r["context"], r["continuation"]) for r in REQUESTS]
    ours = loglikelihoods(model, tokenizer, requests, batch_size=8, progress=False)
    theirs = np.array([r["loglikelihood"] for r in REQUESTS])
    np.testing.assert_allclose(ours[:, 0], theirs, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(ours[:, 1].astype(bool), [r["is_greedy"] for r in REQUESTS])


@pytest.mark.integration
@pytest.mark.parametrize("task", ["piqa", "winogrande"])
def test_accuracy_follows_from_lm_eval_loglikelihoods(smollm2, task):
    """acc and acc_norm are lm-eval's argmax rules applied to lm-eval's log-likelihoods."""
    model, tokenizer = smollm2
    items = _items(task)
    scores = score_items(model, tokenizer, items, batch_size=8, progress=False)
    acc, acc_norm = [], []
    for index, item in enumerate(items):
        lls = np.array([r["loglikelihood"] for r in REQUESTS
                        if r["task"] == task and r["item"] == index])
        lengths = np.array([len(c) for c in item.choices], dtype=float)
        acc.append(np.argmax(lls) == item.gold)
        acc_norm.append(np.argmax(lls / lengths) == item.gold)
    assert scores["acc"] == pytest.approx(np.mean(acc))
    assert scores["acc_norm"] == pytest.approx(np.mean(acc_norm))
