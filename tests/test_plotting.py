"""Tests of llmbrain.plotting on small synthetic inputs of the documented shapes."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from matplotlib.collections import PathCollection
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from llmbrain.plotting import (criterion_color, network_colors, plot_intervention_effects,
                               plot_key_neurons, plot_kept_neurons, plot_network_atlas,
                               plot_network_map, plot_networks, plot_pruning_curves,
                               plot_recurrence, plot_timecourses, savefig)
from llmbrain.plotting.maps import _pick_by_magnitude
from llmbrain.plotting.timecourses import token_label

N_COMP, N_LAYERS, N_NEURONS, N_TOKENS = 3, 4, 20, 12


@pytest.fixture
def maps_z():
    rng = np.random.default_rng(0)
    values = rng.standard_normal((N_COMP, N_LAYERS, N_NEURONS))
    values[0, 1, 5] = 8.0
    values[1, 2, 7] = -9.0
    values[2, 3, 11] = 7.0
    return xr.DataArray(values, dims=("component", "layer", "neuron"),
                        coords={"component": np.arange(N_COMP), "layer": [2, 4, 6, 8],
                                "neuron": np.arange(N_NEURONS)})


@pytest.fixture
def timecourses():
    rng = np.random.default_rng(1)
    words = ["The", " cat", " costs", " $", "5", ".", "\n", " ", "", " it", " sat", " down"]
    return xr.DataArray(rng.standard_normal((N_TOKENS, N_COMP)), dims=("token", "component"),
                        coords={"component": np.arange(N_COMP),
                                "token_text": ("token", words),
                                "document": ("token", [0] * 6 + [1] * 6),
                                "position": ("token", list(range(6)) * 2)})


@pytest.fixture
def effects():
    rows = []
    for network in range(2):
        for intervention in ("ablate", "amplify"):
            rows.append(dict(network=network, intervention=intervention, condition="network",
                             metric="perplexity", value=30.0 + network, seed=0))
            for seed in range(3):
                rows.append(dict(network=network, intervention=intervention, condition="random",
                                 metric="perplexity", value=20.0 + seed, seed=seed))
    return pd.DataFrame(rows)


@pytest.fixture
def pruning_results():
    rows = [dict(criterion="dense", sparsity=0.0, perplexity=18.0, avg_accuracy=0.5)]
    for criterion, slope in (("networks", 1.0), ("magnitude", 2.0)):
        for sparsity in (0.1, 0.3, 0.5):
            rows.append(dict(criterion=criterion, sparsity=sparsity,
                             perplexity=18 * np.exp(slope * sparsity),
                             avg_accuracy=0.5 - 0.1 * slope * sparsity))
    return pd.DataFrame(rows)


def _images(ax):
    return [a for a in ax.get_children() if isinstance(a, AxesImage)]


def _save_all(fig, tmp_path, stem):
    for suffix in (".png", ".pdf", ".svg"):
        path = savefig(fig, tmp_path / f"{stem}{suffix}", dpi=40)
        assert path.is_file() and path.stat().st_size > 100


# -- network maps ------------------------------------------------------------------------------
def test_plot_network_map(maps_z, tmp_path):
    fig = plot_network_map(maps_z, 1, output_file=tmp_path / "map.png")
    assert isinstance(fig, Figure)
    assert (tmp_path / "map.png").stat().st_size > 100
    assert len(fig.axes) == 2  # map + colour bar
    ax = fig.axes[0]
    image = _images(ax)[0]
    assert image.get_array().shape == (N_LAYERS, N_NEURONS)
    assert ax.get_ylabel() == "Layer"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["2", "4", "6", "8"]
    low, high = image.get_clim()
    assert low == -high == -9.0  # symmetric around zero, at the largest |z|
    _save_all(fig, tmp_path, "map")


def test_plot_network_map_threshold_hides_weak_neurons(maps_z):
    fig = plot_network_map(maps_z, 0, threshold=3.0, colorbar=False)
    shown = np.ma.getdata(_images(fig.axes[0])[0].get_array())
    assert len(fig.axes) == 1
    assert np.isfinite(shown).sum() == (np.abs(maps_z.sel(component=0).values) >= 3).sum()
    assert shown[1, 5] == 8.0


def test_plot_network_map_bins_keep_strongest_neuron(maps_z):
    fig = plot_network_map(maps_z, 1, neuron_bin=4)
    shown = _images(fig.axes[0])[0].get_array()
    assert shown.shape == (N_LAYERS, N_NEURONS // 4)
    assert shown[2, 7 // 4] == -9.0
    assert "bins of 4" in fig.axes[0].get_xlabel()


def test_pick_by_magnitude_keeps_sign_and_pads():
    values = np.array([[1.0, -5.0, 2.0, 3.0, 0.5]])
    assert _pick_by_magnitude(values, values, 2).tolist() == [[-5.0, 3.0, 0.5]]


def test_plot_networks_grid(maps_z, tmp_path):
    fig = plot_networks(maps_z, threshold=2.0, ncols=2)
    visible = [ax for ax in fig.axes if ax.get_visible() and _images(ax)]
    assert len(visible) == N_COMP
    assert len(fig.axes) == 2 * 2 + 1  # 2 x 2 grid (one hidden) + shared colour bar
    _save_all(fig, tmp_path, "grid")


def test_plot_networks_selected_components(maps_z):
    fig = plot_networks(maps_z, components=[2, 0])
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible() and _images(ax)]
    assert titles == ["Network 2", "Network 0"]


def test_plot_network_atlas(maps_z, tmp_path):
    fig = plot_network_atlas(maps_z, threshold=6.0)
    shown = np.ma.getdata(_images(fig.axes[0])[0].get_array())
    expected = np.full((N_LAYERS, N_NEURONS), np.nan)
    expected[1, 5], expected[2, 7], expected[3, 11] = 0, 1, 2
    np.testing.assert_array_equal(shown, expected)
    assert "3 neurons" in fig.axes[0].get_title()
    assert plot_networks(maps_z, kind="atlas").axes[0].get_title().endswith("3.6")
    _save_all(fig, tmp_path, "atlas")


@pytest.mark.parametrize("func", [plot_network_map, plot_networks, plot_network_atlas])
def test_maps_reject_wrong_dims(func, maps_z):
    bad = maps_z.rename(neuron="unit")
    args = (bad, 0) if func is plot_network_map else (bad,)
    with pytest.raises(ValueError, match="dims"):
        func(*args)
    with pytest.raises(TypeError, match="DataArray"):
        func(maps_z.values, 0) if func is plot_network_map else func(maps_z.values)


def test_plot_network_map_rejects_unknown_component(maps_z):
    with pytest.raises(ValueError, match="component 7"):
        plot_network_map(maps_z, 7)


# -- key neurons -------------------------------------------------------------------------------
def test_plot_key_neurons_per_network(maps_z, tmp_path):
    masks = np.abs(maps_z) > 1.5
    fig = plot_key_neurons(masks)
    heatmap = _images(fig.axes[0])[0].get_array()
    np.testing.assert_array_equal(heatmap, masks.values.sum(axis=2).T)
    union = [p.get_width() for p in fig.axes[1].patches]
    assert union == masks.values.any(axis=0).sum(axis=1).tolist()
    texts = [t for t in fig.axes[0].texts]
    assert len(texts) == N_LAYERS * N_COMP
    _save_all(fig, tmp_path, "key")


def test_plot_key_neurons_single_mask(maps_z, tmp_path):
    mask = (np.abs(maps_z) > 1.5).any("component")
    fig = plot_key_neurons(mask, output_file=tmp_path / "key.pdf")
    assert [p.get_width() for p in fig.axes[0].patches] == mask.values.sum(axis=1).tolist()
    assert (tmp_path / "key.pdf").stat().st_size > 100


def test_plot_key_neurons_bad_input(maps_z):
    with pytest.raises(TypeError, match="boolean"):
        plot_key_neurons(maps_z)
    with pytest.raises(ValueError, match="dims"):
        plot_key_neurons((maps_z > 0).rename(layer="depth"))


# -- time courses ------------------------------------------------------------------------------
def test_plot_timecourses(timecourses, tmp_path):
    fig = plot_timecourses(timecourses, start=2, stop=10)
    heat, lines = fig.axes[0], fig.axes[1]  # heatmap, lines (then the colour bar)
    assert _images(heat)[0].get_array().shape == (N_COMP, 8)
    assert len(lines.get_lines()) == N_COMP + 1 + 1  # networks, zero line, document break
    labels = [t.get_text() for t in lines.get_xticklabels()]
    assert labels == [token_label(t) for t in timecourses.token_text.values[2:10]]
    assert r" \$" in labels and "↵" in labels and "∅" in labels
    _save_all(fig, tmp_path, "timecourses")


@pytest.mark.parametrize("kind,n_axes", [("heatmap", 2), ("lines", 1)])
def test_plot_timecourses_kinds(timecourses, kind, n_axes):
    fig = plot_timecourses(timecourses, components=[1], kind=kind)
    assert len(fig.axes) == n_axes


def test_plot_timecourses_explicit_tokens(timecourses):
    bare = timecourses.drop_vars("token_text")
    with pytest.raises(ValueError, match="token_text"):
        plot_timecourses(bare)
    fig = plot_timecourses(bare, [f"w{i}" for i in range(N_TOKENS)], kind="lines")
    assert fig.axes[0].get_xticklabels()[0].get_text() == "w0"
    with pytest.raises(ValueError, match="entries"):
        plot_timecourses(bare, ["a", "b"])


def test_plot_timecourses_bad_input(timecourses):
    with pytest.raises(ValueError, match="dims"):
        plot_timecourses(timecourses.rename(token="time"))
    with pytest.raises(ValueError, match="start"):
        plot_timecourses(timecourses, start=5, stop=3)


# -- recurrence --------------------------------------------------------------------------------
def test_plot_recurrence_runs(tmp_path):
    values = np.array([[0.9, 0.4, 0.7], [0.8, 0.2, 0.95]])
    sim = xr.DataArray(values, dims=("run", "component"))
    fig = plot_recurrence(sim, threshold=0.5)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["0.90", "0.40", "0.70", "0.80", "0.20", "0.95"]
    assert len(ax.patches) == 2  # the two values below the threshold are outlined
    assert ax.get_ylabel() == "Run" and ax.get_xlabel() == "Network"
    _save_all(fig, tmp_path, "recurrence")


def test_plot_recurrence_two_runs_numpy():
    fig = plot_recurrence(np.eye(3) * 0.9, dims=("component_a", "component_b"))
    ax = fig.axes[0]
    assert len(ax.texts) == 9
    assert ax.get_ylabel() == "Network (run a)"


def test_plot_recurrence_from_compare_runs_dataset():
    ds = xr.Dataset({"match_r": (("run", "component"), np.array([[1.0, 1.0], [-0.6, 0.3]]))},
                    attrs={"reference": 0, "cutoff": 0.5})
    ax = plot_recurrence(ds).axes[0]
    assert [t.get_text() for t in ax.texts] == ["1.00", "1.00", "0.60", "0.30"]  # |r|
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0 (reference)", "1"]
    assert len(ax.patches) == 1  # 0.30 is below the run comparison's cutoff
    with pytest.raises(ValueError, match="match_r"):
        plot_recurrence(ds.rename(match_r="r"))


def test_plot_recurrence_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        plot_recurrence(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="run, component"):
        plot_recurrence(xr.DataArray(np.zeros((2, 3)), dims=("run", "network")))


# -- interventions -----------------------------------------------------------------------------
def test_plot_intervention_effects(effects, tmp_path):
    fig = plot_intervention_effects(effects, baseline=18.0)
    assert len(fig.axes) == 2  # ablate, amplify
    for ax in fig.axes:
        bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        assert len(bars) == 4  # 2 networks x (network, random)
        assert ax.get_yscale() == "log"
        assert sum(isinstance(c, PathCollection) for c in ax.collections) == 2  # random seeds
    random_mean = [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)][2]
    assert random_mean.lines[0].get_ydata()[0] == pytest.approx(21.0)
    _save_all(fig, tmp_path, "effects")


def test_plot_intervention_effects_bad_input(effects):
    with pytest.raises(ValueError, match="condition"):
        plot_intervention_effects(effects.drop(columns="condition"))
    with pytest.raises(ValueError, match="'network' or 'random'"):
        plot_intervention_effects(effects.assign(condition="control"))
    with pytest.raises(TypeError, match="DataFrame"):
        plot_intervention_effects(effects.to_dict())


# -- pruning -----------------------------------------------------------------------------------
def test_plot_pruning_curves(pruning_results, tmp_path):
    fig = plot_pruning_curves(pruning_results)
    ppl, acc = fig.axes
    assert ppl.get_yscale() == "log" and acc.get_yscale() == "linear"
    for ax in (ppl, acc):
        labels = ax.get_legend_handles_labels()[1]
        assert sorted(labels) == ["dense", "magnitude", "networks"]
        dense = [l for l in ax.get_lines() if l.get_linestyle() == "--"]
        assert len(dense) == 1
    assert dense[0].get_ydata()[0] == 0.5
    networks_line = ppl.containers[0].lines[0]
    assert networks_line.get_color() == criterion_color("networks")
    _save_all(fig, tmp_path, "curves")


def test_plot_pruning_curves_single_metric_and_bad_input(pruning_results):
    fig = plot_pruning_curves(pruning_results.drop(columns="avg_accuracy"))
    assert len(fig.axes) == 1
    with pytest.raises(ValueError, match="perplexity"):
        plot_pruning_curves(pruning_results[["criterion", "sparsity"]])
    with pytest.raises(ValueError, match="sparsity"):
        plot_pruning_curves(pruning_results.drop(columns="sparsity"))


def test_plot_kept_neurons_table(tmp_path):
    counts = pd.DataFrame([[10, 12, 8], [5, 15, 10]], index=["networks", "random"],
                          columns=[0, 1, 2])
    fig = plot_kept_neurons(counts, n_neurons=20)
    lines = fig.axes[0].get_lines()
    assert [l.get_label() for l in lines] == ["networks", "random", "dense (all neurons)"]
    assert lines[1].get_ydata().tolist() == [5, 15, 10]
    assert lines[1].get_color() == criterion_color("random")
    long = counts.stack().rename("kept").rename_axis(["criterion", "layer"]).reset_index()
    fig_long = plot_kept_neurons(long)
    assert fig_long.axes[0].get_lines()[0].get_ydata().tolist() == [10, 12, 8]
    da = xr.DataArray(counts.values, dims=("criterion", "layer"),
                      coords={"criterion": counts.index, "layer": counts.columns})
    assert len(plot_kept_neurons(da).axes[0].get_lines()) == 2
    _save_all(fig, tmp_path, "kept")


def test_plot_kept_neurons_from_indices():
    keep = {0: np.arange(4), 1: np.array([1, 3]), 2: np.arange(6)}
    fig = plot_kept_neurons(keep, label="my plan")
    line = fig.axes[0].get_lines()[0]
    assert line.get_label() == "my plan"
    assert line.get_ydata().tolist() == [4, 2, 6]

    class Plan:  # the attributes a pruning plan carries
        criterion = "networks"
        n_neurons = {0: 8, 1: 8, 2: 8}

        def __init__(self, keep):
            self.keep = keep

    fig = plot_kept_neurons({"networks": Plan(keep), "random": Plan(keep)})
    assert [l.get_label() for l in fig.axes[0].get_lines()] == ["networks", "random",
                                                              "dense (all neurons)"]
    with pytest.raises(TypeError, match="kept must be"):
        plot_kept_neurons([1, 2, 3])


# -- style -------------------------------------------------------------------------------------
def test_criterion_colors_consistent_and_distinct():
    known = ["dense", "networks", "contextual", "magnitude", "wanda-sp", "flap", "random"]
    colors = [criterion_color(c) for c in known]
    assert len(set(colors)) == len(known)
    assert criterion_color("Wanda-SP") == criterion_color("wanda_sp")
    assert criterion_color("my-criterion") == criterion_color("my-criterion")
    assert len(set(network_colors(8))) == 8 and len(network_colors(25)) == 25


def test_savefig_rejects_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.png"):
        savefig(Figure(), tmp_path / "figure.jpg")


def test_functions_draw_into_given_axes(maps_z, pruning_results):
    fig = Figure(figsize=(8, 6))
    axes = fig.subplots(2, 3).ravel()
    assert plot_network_map(maps_z, 0, ax=axes[0], colorbar=False) is fig
    assert plot_network_atlas(maps_z, 2.0, ax=axes[1]) is fig
    assert plot_recurrence(np.full((2, 3), 0.7), ax=axes[2]) is fig
    assert plot_key_neurons(np.abs(maps_z.isel(component=0)) > 1, ax=axes[3]) is fig
    assert plot_pruning_curves(pruning_results, axes=axes[4:6]) is fig
    assert all(ax.has_data() for ax in axes)
    with pytest.raises(ValueError, match="2 axes"):
        plot_pruning_curves(pruning_results, axes=axes[:1])
    with pytest.raises(TypeError, match="Axes"):
        plot_network_map(maps_z, 0, ax="left")
