"""``llmbrain evaluate`` on tiny saved models."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from llmbrain._testing import byte_tokenizer, tiny_model
from llmbrain.cli import main
from llmbrain.evaluation.results import read_results
from llmbrain.models import load_model

TEXT = "Neurons that fire together wire together. " * 20


@pytest.fixture()
def data(tmp_path):
    (tmp_path / "wiki.txt").write_text(TEXT, encoding="utf-8")
    root = tmp_path / "tasks"
    (root / "winogrande").mkdir(parents=True)
    rows = [{"sentence": "The cup fell on the _ and it broke.", "option1": "floor",
             "option2": "table", "answer": "1"},
            {"sentence": "Ann thanked Tom because _ had helped.", "option1": "Ann",
             "option2": "Tom", "answer": "2"}]
    (root / "winogrande" / "dev.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return tmp_path


def test_evaluate_saved_model(tmp_path, data):
    folder = tmp_path / "model"
    tiny_model("llama").save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    out = tmp_path / "results.csv"
    code = main(["evaluate", str(folder), "--wikitext", str(data / "wiki.txt"), "--window", "32",
                 "--zeroshot-root", str(data / "tasks"), "--tasks", "winogrande",
                 "--efficiency", "--out", str(out)])
    assert code == 0
    table = read_results(out)                     # llmbrain's results table, validated
    assert set(table["criterion"]) == {"dense"}
    ppl = table.query("metric == 'perplexity'")
    assert list(ppl["dataset"]) == ["wikitext2"] and list(ppl["protocol"]) == ["stream window=32"]
    assert ppl["value"].iloc[0] > 1 and ppl["stderr"].iloc[0] > 0
    acc = table.query("dataset == 'winogrande' and metric == 'acc'")
    assert acc["n"].iloc[0] == 2 and acc["value"].iloc[0] in (0.0, 0.5, 1.0)
    mean = table.query("dataset == 'zero-shot mean' and metric == 'acc'")["value"].iloc[0]
    assert mean == acc["value"].iloc[0]
    params = table.query("metric == 'n_mlp_params'")["value"].iloc[0]
    assert params == 3 * 3 * 32 * 48


def test_evaluate_names_the_pruning_of_a_pruned_folder(tmp_path, data):
    from llmbrain.pruning import PlanOptions, prune, save_pruned

    pruned, plan = prune(tiny_model("llama"), "magnitude", 0.25,
                         options=PlanOptions("global", protect_first=1))
    save_pruned(pruned, byte_tokenizer(), tmp_path / "pruned", plan=plan)
    out = tmp_path / "results.csv"
    assert main(["evaluate", str(tmp_path / "pruned"), "--wikitext", str(data / "wiki.txt"),
                 "--window", "32", "--out", str(out)]) == 0
    row = read_results(out).iloc[0]
    assert (row["criterion"], row["sparsity"], row["allocation"]) == ("magnitude", 0.25, "global")
    assert row["protected_layers"] == "0"


def test_evaluate_needs_something_to_do(tmp_path, capsys):
    assert main(["evaluate", "default"]) == 1
    assert "Nothing to evaluate" in capsys.readouterr().err


def test_pruned_folder_is_loaded_with_its_widths(tmp_path):
    pruning = pytest.importorskip("llmbrain.pruning")
    model, tokenizer = tiny_model("llama"), byte_tokenizer()
    scores = pruning.score_neurons(model, "magnitude")
    plan = pruning.make_plan(scores, 0.5, "global")
    pruning.prune_model(model, plan)
    folder = tmp_path / "pruned"
    pruning.save_pruned(model, tokenizer, folder, plan=plan)
    loaded, loaded_tokenizer = load_model(folder)
    from llmbrain.models import get_adapter
    assert get_adapter(loaded).neurons_per_layer(loaded) == \
        get_adapter(model).neurons_per_layer(model)
    assert loaded_tokenizer.pad_token is not None


def test_evaluate_a_model_without_adapter(tmp_path, data):
    from test_adapters import _starcoder2

    folder = tmp_path / "starcoder2"
    _starcoder2().save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    out = tmp_path / "results.csv"
    assert main(["evaluate", str(folder), "--wikitext", str(data / "wiki.txt"), "--window", "32",
                 "--efficiency", "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert set(table["metric"]) == {"perplexity", "n_params", "weight_bytes", "tokens_per_s",
                                    "seconds_per_batch"}


def test_results_measured_before_an_error_are_kept(tmp_path, data, monkeypatch, capsys):
    import llmbrain.evaluation

    def broken(*args, **kwargs):
        raise RuntimeError("the timer broke")

    monkeypatch.setattr(llmbrain.evaluation, "measure_efficiency", broken)
    folder = tmp_path / "model"
    tiny_model("llama").save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    out = tmp_path / "results.csv"
    assert main(["evaluate", str(folder), "--wikitext", str(data / "wiki.txt"), "--window", "32",
                 "--efficiency", "--out", str(out)]) == 1
    assert "the timer broke" in capsys.readouterr().err
    assert pd.read_csv(out)["metric"].tolist() == ["perplexity"]
