"""Tests of the tidy results table (llmbrain.evaluation.results)."""

import numpy as np
import pandas as pd
import pytest

from llmbrain.evaluation.results import (KEY_COLUMNS, SCHEMA, from_wide, higher_is_better,
                                         read_results, results_table, save_results,
                                         summarize_seeds, to_wide)


def _rows():
    rows = [{"criterion": "dense", "metric": "perplexity", "value": 56.09, "n": 24}]
    for seed, noise in enumerate((0.0, 1.0, -1.0)):
        rows.append({"criterion": "flap", "sparsity": 0.3, "allocation": "uniform",
                     "bias_compensation": True, "seed": seed, "metric": "perplexity",
                     "value": 129.6 + noise, "n": 24})
    rows.append({"criterion": "flap", "sparsity": 0.3, "allocation": "uniform",
                 "bias_compensation": True, "dataset": "piqa", "protocol": "0-shot",
                 "metric": "acc", "value": 0.61, "stderr": 0.028, "n": 300})
    return rows


def test_table_has_the_schema_and_its_defaults():
    table = results_table(_rows(), model="SmolLM2", dataset="wikitext2")
    assert list(table.columns) == [c.name for c in SCHEMA]
    dense = table.iloc[0]
    assert (dense["sparsity"], dense["allocation"], dense["intervention"], dense["seed"]) == \
        (0.0, "", "", 0)
    assert np.isnan(dense["stderr"]) and table["n"].dtype == "Int64"
    assert table.loc[4, "dataset"] == "piqa"  # a row's own value wins over the constant
    assert table.loc[1, "bias_compensation"] == "dense" and dense["bias_compensation"] == ""
    assert set(KEY_COLUMNS) == {c.name for c in SCHEMA} - {"value", "stderr", "n"}
    assert results_table().empty and list(results_table().columns) == list(table.columns)


def test_extra_columns_are_kept_after_the_schema():
    table = results_table([{"metric": "perplexity", "value": 1.0, "seconds": 3.5}], model="m",
                          dataset="d")
    assert table.columns[-1] == "seconds" and table["seconds"].iloc[0] == 3.5


@pytest.mark.parametrize("row,match", [
    ({"metric": "perplexity"}, "value"),
    ({"metric": "perplexity", "value": 1.0, "sparsity": 30}, "Write 30% as 0.3"),
    ({"metric": "perplexity", "value": 1.0, "sparsity": 0.3}, "dense"),
    ({"metric": "perplexity", "value": 1.0, "condition": "random"}, "needs an intervention"),
    ({"metric": "perplexity", "value": 1.0, "condition": "control", "intervention": "ablate"},
     "condition must be"),
    ({"metric": "perplexity", "value": "high"}, "'value' must hold float"),
    ({"metric": "perplexity", "value": 1.0, "seed": 0.5}, "'seed' must hold int"),
])
def test_bad_rows_are_refused_with_a_reason(row, match):
    with pytest.raises(ValueError, match=match):
        results_table([row], model="m", dataset="d")


def test_duplicate_measurements_are_refused():
    row = {"criterion": "flap", "sparsity": 0.3, "metric": "perplexity", "value": 1.0}
    with pytest.raises(ValueError, match="same keys"):
        results_table([row, {**row, "value": 2.0}], model="m", dataset="d")
    assert len(results_table([row, {**row, "seed": 1}], model="m", dataset="d")) == 2
    with pytest.raises(TypeError, match="list"):
        results_table(row)
    with pytest.raises(ValueError, match="Unknown column"):
        results_table([row], modle="m")


def test_csv_round_trip_is_exact(tmp_path):
    table = results_table(_rows(), model="SmolLM2", dataset="wikitext2", protected_layers=[29, 0])
    assert table["protected_layers"].iloc[0] == "0,29"
    path = save_results(table, tmp_path / "results.csv")
    back = read_results(path)
    pd.testing.assert_frame_equal(back, table)
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(FileNotFoundError):
        read_results(tmp_path / "missing.csv")


def test_wide_table_for_people_has_one_header_row():
    table = results_table(_rows(), model="SmolLM2", dataset="wikitext2")
    wide = to_wide(table)
    assert list(wide.columns) == ["criterion", "sparsity", "wikitext2 perplexity", "piqa acc"]
    flap = wide.set_index("criterion").loc["flap"]
    assert flap["wikitext2 perplexity"] == pytest.approx(129.6)  # mean over the seeds
    one = to_wide(table[table["metric"] == "perplexity"])
    assert list(one.columns) == ["criterion", "sparsity", "perplexity"]


def test_summary_over_seeds():
    table = results_table(_rows(), model="SmolLM2", dataset="wikitext2")
    summary = summarize_seeds(table)
    flap = summary[(summary["criterion"] == "flap") & (summary["metric"] == "perplexity")].iloc[0]
    assert flap["n_seeds"] == 3 and flap["mean"] == pytest.approx(129.6)
    assert flap["sd"] == pytest.approx(1.0)
    half = 4.302652729911275 * 1.0 / np.sqrt(3)  # t(0.975, 2)
    assert (flap["ci_low"], flap["ci_high"]) == (pytest.approx(129.6 - half),
                                                 pytest.approx(129.6 + half))
    dense = summary[summary["criterion"] == "dense"].iloc[0]
    assert dense["n_seeds"] == 1 and np.isnan(dense["sd"]) and np.isnan(dense["ci_low"])
    assert "seed" not in summary.columns


def test_wide_tables_convert_to_the_long_format():
    wide = pd.DataFrame({"model": ["m", "m"], "criterion": ["dense", "flap"],
                         "sparsity": [0.0, 0.3], "wikitext2_ppl": [56.1, 129.6],
                         "mean_acc": [0.40, np.nan], "eval_seconds": [13.0, 12.0]})
    table = from_wide(wide)
    assert len(table) == 3  # the missing accuracy is no row
    assert table[["dataset", "metric"]].drop_duplicates().values.tolist() == [
        ["wikitext2", "perplexity"], ["zero-shot mean", "acc"]]
    with pytest.raises(ValueError, match="value column"):
        from_wide(wide[["model", "criterion", "sparsity"]])


def test_direction_of_metrics():
    assert not higher_is_better("perplexity") and not higher_is_better("n_params")
    assert higher_is_better("acc") and higher_is_better("tokens_per_s")
