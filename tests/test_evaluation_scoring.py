"""Log-likelihood scoring and acc / acc_norm against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llmbrain.evaluation import MultipleChoiceItem, encode_pair, loglikelihoods, score_items


def _brute_force(model, tokenizer, context, continuation):
    """One forward pass per request on the unpadded sequence."""
    context_ids, continuation_ids = encode_pair(tokenizer, context, continuation)
    ids = torch.tensor([context_ids + continuation_ids])
    with torch.no_grad():
        log_probs = F.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    positions = torch.arange(len(context_ids) - 1, ids.shape[1] - 1)
    target = torch.tensor(continuation_ids)
    chosen = log_probs[positions, target]
    greedy = bool((log_probs[positions].argmax(-1) == target).all())
    return float(chosen.sum()), greedy


def test_encode_pair_moves_trailing_space_to_continuation(tokenizer):
    context_ids, continuation_ids = encode_pair(tokenizer, "Answer: ", "yes")
    assert tokenizer.decode(context_ids) == "Answer:"
    assert tokenizer.decode(continuation_ids) == " yes"
    context_ids, continuation_ids = encode_pair(tokenizer, "", "hello")
    assert context_ids == [tokenizer.eos_token_id]
    assert tokenizer.decode(continuation_ids) == "hello"


REQUESTS = [
    ("Question: what is two plus two?\nAnswer:", " four"),
    ("Question: what is two plus two?\nAnswer:", " five, surely"),
    ("The capital of France is", " Paris"),
    ("Short", " x"),  # one-token continuations of one context share a forward pass
    ("Short", " y"),
    ("A much longer context that runs on and on to make the batch ragged: ", "done."),
    ("", "An empty context scores from the end-of-text token."),
]


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_loglikelihoods_match_brute_force(llama, tokenizer, batch_size):
    scores = loglikelihoods(llama, tokenizer, REQUESTS, batch_size=batch_size, progress=False)
    assert scores.shape == (len(REQUESTS), 2)
    for (context, continuation), (ll, greedy) in zip(REQUESTS, scores):
        expected, expected_greedy = _brute_force(llama, tokenizer, context, continuation)
        assert ll == pytest.approx(expected, abs=1e-4)
        assert bool(greedy) == expected_greedy


def test_loglikelihoods_truncate_on_the_left(llama, tokenizer):
    context, continuation = "abcdefghij" * 3, " end"
    scores = loglikelihoods(llama, tokenizer, [(context, continuation)], max_length=12,
                            progress=False)
    # The last 13 tokens: the model reads 12 and predicts the 4 of " end".
    ids = tokenizer.encode(context + continuation)[-13:]
    with torch.no_grad():
        log_probs = F.log_softmax(llama(input_ids=torch.tensor([ids[:-1]])).logits[0].double(), -1)
    expected = float(log_probs[torch.arange(8, 12), torch.tensor(ids[-4:])].sum())
    assert scores[0, 0] == pytest.approx(expected, abs=1e-4)


def test_loglikelihoods_reject_bad_requests(llama, tokenizer):
    with pytest.raises(TypeError, match="pair of strings"):
        loglikelihoods(llama, tokenizer, ["just a string"], progress=False)
    with pytest.raises(ValueError, match="no token"):
        loglikelihoods(llama, tokenizer, [("context", "")], progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        loglikelihoods(llama, tokenizer, REQUESTS, batch_size=0, progress=False)


def _items():
    return [
        MultipleChoiceItem.from_prompt("Question: pick the fruit\nAnswer:",
                                       ["apple", "a very long rock indeed", "car"], 0),
        MultipleChoiceItem.from_prompt("The sky is", ["blue", "green"], 1),
        MultipleChoiceItem(contexts=("Tom gave Ann the book because Tom",
                                     "Tom gave Ann the book because Ann"),
                           continuations=(" was done with it.",) * 2,
                           choices=("Tom gave Ann the book because Tom",
                                    "Tom gave Ann the book because Ann"), gold=0),
        MultipleChoiceItem.from_prompt("Two plus two is", ["four", "five", "twenty-two"], 2),
    ]


def test_score_items_acc_and_acc_norm_match_brute_force(llama, tokenizer):
    items = _items()
    scores, per_item = score_items(llama, tokenizer, items, batch_size=4, progress=False,
                                   return_per_item=True)
    acc, acc_norm = [], []
    for item, row in zip(items, per_item.itertuples()):
        lls = np.array([_brute_force(llama, tokenizer, c, k)[0]
                        for c, k in zip(item.contexts, item.continuations)])
        np.testing.assert_allclose(row.loglikelihoods, lls, atol=1e-4)
        lengths = np.array([len(c) for c in item.choices], dtype=float)
        assert row.pred == int(np.argmax(lls))
        assert row.pred_norm == int(np.argmax(lls / lengths))
        acc.append(float(np.argmax(lls) == item.gold))
        acc_norm.append(float(np.argmax(lls / lengths) == item.gold))
    assert scores["n"] == len(items)
    assert scores["acc"] == pytest.approx(np.mean(acc))
    assert scores["acc_norm"] == pytest.approx(np.mean(acc_norm))
    expected_stderr = math.sqrt(np.var(acc, ddof=1) / len(acc))
    assert scores["acc_stderr"] == pytest.approx(expected_stderr)


def test_multiple_choice_item_validates():
    with pytest.raises(ValueError, match="gold"):
        MultipleChoiceItem.from_prompt("q", ["a", "b"], 2)
    with pytest.raises(ValueError, match="two choices"):
        MultipleChoiceItem.from_prompt("q", ["a"], 0)


def test_matches_lm_evaluation_harness(llama, tokenizer):
    """Same log-likelihoods as lm-evaluation-harness's HFLM (when installed)."""
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    requests = [r for r in REQUESTS if r[0]]
    lm = HFLM(pretrained=llama, tokenizer=tokenizer, batch_size=2)
    instances = [Instance(request_type="loglikelihood", doc={}, arguments=r, idx=i)
                 for i, r in enumerate(requests)]
    theirs = np.array(lm.loglikelihood(instances, disable_tqdm=True))
    ours = loglikelihoods(llama, tokenizer, requests, batch_size=2, progress=False)
    np.testing.assert_allclose(ours[:, 0], theirs[:, 0], atol=1e-4)
    np.testing.assert_array_equal(ours[:, 1], theirs[:, 1])
