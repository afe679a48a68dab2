"""The whole pipeline on a tiny model: every stage runs and the report is complete."""

import json

import numpy as np
import pytest
import xarray as xr

from llmbrain import load_model, run_pipeline
from llmbrain._testing import byte_tokenizer, tiny_model
from llmbrain.corpus import load_corpus
from llmbrain.evaluation.results import read_results
from llmbrain.interventions import largest_networks
from llmbrain.networks import load_networks
from llmbrain.pipeline import split_documents
from llmbrain.pruning import PUBLISHED


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "report"
    documents = load_corpus("default", max_documents=20)
    # three layers: the published options protect too many of them; one each side
    options = {c: opts.replace(protect_first=min(opts.protect_first, 1),
                               protect_last=min(opts.protect_last, 1))
               for c, opts in PUBLISHED.items()}
    run_pipeline((tiny_model("llama", intermediate_size=64), byte_tokenizer()), documents, out,
                 options=options,
                 n_tokens=2048, window=64, n_components=3, n_runs=2, n_interventions=1,
                 n_controls=3, intervention_windows=2, threshold=2.0,
                 pruning_tokens_per_run=512, eval_windows=2, eval_window=32, progress=False)
    return out


def test_report_folder_holds_every_result(report):
    html = (report / "index.html").read_text()
    for heading in ("Functional networks", "Interventions", "Pruning"):
        assert heading in html
    assert "fitted online from a sketch" in html      # the networks criterion's networks
    assert "loss increase when replaced by its mean" in html   # the fisher criterion
    assert "strongest loss networks" in html                   # the loss-networks criterion
    figures = sorted((report / "figures").glob("*.png"))
    assert {"pruning-curve.png", "network-maps.png", "recurrence.png"} <= {f.name for f in figures}
    assert all(f.stat().st_size > 1000 for f in figures)
    assert (report / "networks" / "consensus.nii.gz").is_file()
    assert (report / "activations.zarr" / "progress.json").is_file()
    summary = json.loads((report / "summary.json").read_text())
    assert summary["key_result"] and summary["seconds"] > 0


def test_results_compare_every_criterion_with_the_same_evaluation(report):
    results = read_results(report / "results.csv")
    pruning = results[results["intervention"] == ""]
    ppl = pruning[pruning["metric"] == "perplexity"]
    assert set(ppl["criterion"]) == {"dense", "loss-networks", "networks", "fisher", "flap",
                                     "wanda-sp", "contextual", "magnitude", "random"}
    assert sorted(ppl[ppl["criterion"] == "random"]["seed"]) == [0, 1, 2]
    assert (ppl["value"] > 1).all() and (ppl["dataset"] == "held-out").all()
    # each criterion with its published plan options
    networks = ppl[ppl["criterion"] == "networks"].iloc[0]
    assert networks["allocation"] == "global" and networks["bias_compensation"] == "progressive"
    assert ppl[ppl["criterion"] == "flap"]["allocation"].item() == "adaptive"
    for name in ("fisher", "loss-networks"):
        row = ppl[ppl["criterion"] == name].iloc[0]
        assert row["allocation"] == "uniform" and row["bias_compensation"] == "progressive"
    params = pruning[pruning["metric"] == "n_params"].set_index(["criterion", "seed"])["value"]
    assert (params.drop(("dense", 0)) < params[("dense", 0)]).all()


def test_interventions_have_matched_random_controls(report):
    results = read_results(report / "results.csv")
    effects = results[results["intervention"] != ""]
    assert set(effects["intervention"]) == {"ablate", "amplify"}
    counts = effects.groupby(["intervention", "condition"]).size().to_dict()
    assert counts == {("ablate", "network"): 1, ("ablate", "random"): 3,
                      ("amplify", "network"): 1, ("amplify", "random"): 3}
    networks = load_networks(report / "networks").runs_[0]
    assert set(effects["target"]) == {f"network {largest_networks(networks, 1)[0]}"}


def test_interventions_target_the_largest_networks():
    masks = xr.DataArray(np.zeros((4, 2, 5), dtype=bool), dims=("component", "layer", "neuron"),
                         coords={"component": [0, 1, 2, 3]})
    for component, size in enumerate([2, 0, 5, 3]):
        masks[component].values.flat[:size] = True
    assert largest_networks(masks, 2) == [2, 3]
    assert largest_networks(masks, 10) == [2, 3, 0]      # a network without key neuron is left out


def test_saved_pruned_model_loads(report):
    model, _ = load_model(report / "pruned-model")
    assert model.config.llmbrain_pruning["neurons_per_layer"] != [64, 64, 64]


def test_bad_settings_are_refused_before_any_work(tmp_path):
    pair = (tiny_model("llama"), byte_tokenizer())
    with pytest.raises(ValueError, match="Unknown criterion"):
        run_pipeline(pair, out=tmp_path, criteria=["vibes"])
    with pytest.raises(ValueError, match="Unknown criterion"):
        run_pipeline(pair, out=tmp_path, criteria=["networks+anything"])
    with pytest.raises(ValueError, match="sparsity"):
        run_pipeline(pair, out=tmp_path, sparsity=1.5)
    assert not any(tmp_path.iterdir())


def test_split_documents_holds_out_every_fifth():
    analysed, held_out = split_documents([str(i) for i in range(10)])
    assert held_out == ["4", "9"] and len(analysed) == 8
    with pytest.raises(ValueError, match="at least 5 documents"):
        split_documents(["a", "b"])


def test_rerun_with_other_settings_is_refused_without_overwrite(report):
    with pytest.raises(FileExistsError, match="other settings"):
        run_pipeline((tiny_model("llama", intermediate_size=64), byte_tokenizer()),
                     load_corpus("default", max_documents=20), report, n_tokens=1024, window=64,
                     progress=False)
