"""The evaluation stage: every measurement of one model as rows of the results table."""

import numpy as np
import pytest

from llmbrain.evaluation import evaluate_model, perplexity
from llmbrain.evaluation.results import SCHEMA

from conftest import TEXTS


def test_evaluate_model_writes_one_row_per_measurement(llama, tokenizer):
    text = " ".join(TEXTS) * 3
    table = evaluate_model(llama, tokenizer, model_name="tiny", text=text, dataset="notes",
                           window=32, efficiency=True, speed_repeats=3, progress=False,
                           criterion="flap", sparsity=0.3, bias_compensation="progressive")
    assert list(table.columns) == [c.name for c in SCHEMA]
    rows = table.set_index("metric")
    assert set(rows.index) == {"perplexity", "n_params", "n_mlp_params", "tokens_per_s"}
    ppl = rows.loc["perplexity"]
    assert ppl["value"] == pytest.approx(perplexity(llama, tokenizer, text, window=32,
                                                    progress=False))
    assert ppl["protocol"] == "stream window=32" and ppl["stderr"] > 0 and ppl["n"] > 0
    assert (table["criterion"] == "flap").all() and (table["bias_compensation"] ==
                                                      "progressive").all()
    assert rows.loc["tokens_per_s", "n"] == 3 and np.isfinite(rows.loc["tokens_per_s", "stderr"])


def test_evaluate_model_needs_something_to_measure(llama, tokenizer):
    with pytest.raises(ValueError, match="Nothing to measure"):
        evaluate_model(llama, tokenizer, model_name="tiny")
    with pytest.raises(ValueError, match="zeroshot_root"):
        evaluate_model(llama, tokenizer, model_name="tiny", tasks=["piqa"])
