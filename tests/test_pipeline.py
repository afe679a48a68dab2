"""The whole pipeline on a tiny model: every stage runs and the report is complete."""

import json

import pandas as pd
import pytest

from llmbrain import load_model, run_pipeline
from llmbrain._testing import byte_tokenizer, tiny_model
from llmbrain.corpus import load_corpus


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "report"
    documents = load_corpus("default", max_documents=20)
    run_pipeline((tiny_model("llama", intermediate_size=64), byte_tokenizer()), documents, out,
                 n_tokens=2048, window=64, n_components=3, n_runs=2, n_interventions=1,
                 threshold=2.0,
                 eval_windows=2, eval_window=32, progress=False)
    return out


def test_report_folder_holds_every_result(report):
    html = (report / "index.html").read_text()
    for heading in ("Functional networks", "Interventions", "Pruning"):
        assert heading in html
    figures = sorted((report / "figures").glob("*.png"))
    assert len(figures) == 7 and all(f.stat().st_size > 1000 for f in figures)
    assert all(f"figures/{f.name}" in html for f in figures)
    assert (report / "networks" / "consensus.nii.gz").is_file()
    assert (report / "activations.zarr" / "progress.json").is_file()


def test_pruning_table_compares_every_criterion(report):
    table = pd.read_csv(report / "pruning.csv")
    assert table["criterion"].tolist() == ["dense", "networks+contextual", "networks",
                                           "contextual", "wanda-sp", "flap", "magnitude",
                                           "random"]
    dense = table.iloc[0]
    assert (table["n_params"].iloc[1:] < dense["n_params"]).all()
    assert table["perplexity"].gt(1).all()
    summary = json.loads((report / "summary.json").read_text())
    assert summary["baseline_perplexity"] == pytest.approx(dense["perplexity"])


def test_interventions_have_random_controls(report):
    effects = pd.read_csv(report / "interventions.csv")
    assert set(effects["intervention"]) == {"ablate", "amplify"}
    assert effects.groupby("intervention")["condition"].value_counts().to_dict() == {
        ("ablate", "network"): 1, ("ablate", "random"): 2,
        ("amplify", "network"): 1, ("amplify", "random"): 2}


def test_saved_pruned_model_loads(report):
    model, _ = load_model(report / "pruned-model")
    assert model.config.llmbrain_pruning["neurons_per_layer"] != [64, 64, 64]


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="Unknown criteria"):
        run_pipeline((tiny_model("llama"), byte_tokenizer()), out=tmp_path, criteria=["vibes"])
    with pytest.raises(ValueError, match="sparsity"):
        run_pipeline((tiny_model("llama"), byte_tokenizer()), out=tmp_path, sparsity=1.5)


def test_networks_were_found_and_intervened_on(report):
    effects = pd.read_csv(report / "interventions.csv")
    assert (effects["n_neurons"] > 0).all()


def test_rerun_with_other_settings_is_refused_without_overwrite(report):
    with pytest.raises(FileExistsError, match="other settings"):
        run_pipeline((tiny_model("llama", intermediate_size=64), byte_tokenizer()),
                     load_corpus("default", max_documents=20), report, n_tokens=1024, window=64,
                     progress=False)
