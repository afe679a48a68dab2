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

from figure_checks import assert_readable, overlapping_texts, panels_without_tick_labels
from llmbrain.evaluation.results import results_table
from llmbrain.plotting import (NETWORK_PALETTE, criterion_color, network_color, network_colors,
                               plot_intervention_effects, plot_key_neurons, plot_kept_neurons,
                               plot_layer_slices, plot_network_atlas, plot_network_map,
                               plot_networks, plot_pruning_curves, plot_recurrence,
                               plot_timecourses, savefig)
from llmbrain.plotting.maps import _pick_by_magnitude
from llmbrain.plotting.timecourses import token_label
from llmbrain.volumes import to_volumes

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
    assert np.isfinite(shown).sum() == (np.abs(maps_z.sel(component=0).values) > 3).sum()
    assert shown[1, 5] == 8.0


def test_threshold_is_strict_as_in_the_estimator(maps_z):
    """A neuron exactly at the threshold is not a key neuron (|z| > threshold)."""
    at = maps_z.copy()
    at[0, 0, 0] = 3.0
    shown = np.ma.getdata(_images(plot_network_map(at, 0, threshold=3.0).axes[0])[0].get_array())
    assert np.isnan(shown[0, 0])
    atlas = np.ma.getdata(_images(plot_network_atlas(at.isel(component=[0]), 3.0).axes[0])[0]
                          .get_array())
    assert np.isnan(atlas[0, 0])
    assert "|z| > 3" in plot_networks(at, threshold=3.0).texts[0].get_text() or \
        "|z| > 3" in plot_networks(at, threshold=3.0)._suptitle.get_text()


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
    assert_readable(fig)  # every panel keeps its layer and neuron tick labels
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
    assert "3 key neurons" in fig.axes[0].get_title()
    assert plot_networks(maps_z, kind="atlas").axes[0].get_title().endswith("|z| > 3.6)")
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
def test_plot_timecourses_small_multiples(timecourses, tmp_path):
    fig = plot_timecourses(timecourses, start=2, stop=10)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == N_COMP  # one panel per network
    for component, ax in zip(timecourses.component.values, panels):
        assert ax.get_ylabel() == f"Network {component}"
        assert ax.get_lines()[0].get_color() == network_color(component)
        assert [t.get_text() for t in ax.get_yticklabels() if t.get_text()]  # own value ticks
    np.testing.assert_allclose(panels[1].get_lines()[0].get_ydata(),
                               timecourses.isel(component=1).values[2:10])
    labels = [t.get_text() for t in panels[-1].get_xticklabels()]
    assert labels == [token_label(t) for t in timecourses.token_text.values[2:10]]
    assert r" \$" in labels and "↵" in labels and "∅" in labels
    assert panels[0].get_ylim() == panels[-1].get_ylim()  # one value scale
    assert overlapping_texts(fig) == []
    _save_all(fig, tmp_path, "timecourses")


def test_plot_timecourses_many_networks_stay_readable():
    rng = np.random.default_rng(2)
    many = xr.DataArray(rng.standard_normal((40, 16)), dims=("token", "component"),
                        coords={"component": np.arange(16),
                                "token_text": ("token", [f"w{i}" for i in range(40)])})
    heatmap = plot_timecourses(many)  # "auto": more than 12 networks -> heatmap
    assert len(_images(heatmap.axes[0])) == 1
    lines = plot_timecourses(many, kind="lines")
    assert len([ax for ax in lines.axes if ax.get_lines()]) == 16
    for fig in (heatmap, lines):
        assert_readable(fig)


@pytest.mark.parametrize("kind,n_axes", [("heatmap", 2), ("lines", 1), ("both", 3)])
def test_plot_timecourses_kinds(timecourses, kind, n_axes):
    fig = plot_timecourses(timecourses, components=[1], kind=kind)
    assert len(fig.axes) == n_axes
    if kind != "heatmap":
        panel = fig.axes[1 if kind == "both" else 0]
        assert panel.get_lines()[0].get_color() == network_color(1)  # the colour of network 1


def test_plot_timecourses_explicit_tokens(timecourses):
    bare = timecourses.drop_vars("token_text")
    with pytest.raises(ValueError, match="token_text"):
        plot_timecourses(bare)
    fig = plot_timecourses(bare, [f"w{i}" for i in range(N_TOKENS)], kind="lines")
    assert fig.axes[N_COMP - 1].get_xticklabels()[0].get_text() == "w0"
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


def test_plot_intervention_effects_reads_a_results_table(effects):
    rows = effects.rename(columns={"network": "target"}).assign(target=lambda d: d["target"]
                                                                .map(lambda n: f"network {n}"))
    dense = pd.DataFrame([{"criterion": "dense", "metric": "perplexity", "value": 18.0}])
    table = results_table(pd.concat([dense, rows]), model="m", dataset="held-out")
    fig = plot_intervention_effects(table)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["network 0", "network 1"]
    dashed = [l for l in fig.axes[0].get_lines() if l.get_linestyle() == "--"]
    assert dashed[0].get_ydata()[0] == 18.0  # the unmodified model, taken from the table
    assert_readable(fig)


def test_plot_intervention_effects_bad_input(effects):
    with pytest.raises(ValueError, match="condition"):
        plot_intervention_effects(effects.drop(columns="condition"))
    with pytest.raises(ValueError, match="'network' or 'random'"):
        plot_intervention_effects(effects.assign(condition="control"))
    with pytest.raises(TypeError, match="DataFrame"):
        plot_intervention_effects(effects.to_dict())


# -- pruning -----------------------------------------------------------------------------------
def _results(pruning_results, seeds=(0,)):
    rows = []
    for seed in seeds:
        for record in pruning_results.to_dict("records"):
            if record["criterion"] == "dense" and seed != seeds[0]:
                continue
            for metric, dataset in (("perplexity", "wikitext2"), ("acc", "zero-shot mean")):
                value = record["perplexity" if metric == "perplexity" else "avg_accuracy"]
                rows.append({"criterion": record["criterion"], "sparsity": record["sparsity"],
                             "seed": seed, "dataset": dataset, "metric": metric,
                             "value": value * (1 + 0.01 * seed)})
    return results_table(rows, model="tiny", allocation="uniform")


def test_plot_pruning_curves(pruning_results, tmp_path):
    fig = plot_pruning_curves(_results(pruning_results))
    ppl, acc = fig.axes
    assert ppl.get_yscale() == "log" and acc.get_yscale() == "linear"
    assert ppl.get_title() == "wikitext2" and "↓ better" in ppl.get_ylabel()
    for ax in (ppl, acc):
        labels = ax.get_legend_handles_labels()[1]
        assert sorted(labels) == ["dense", "magnitude", "networks"]
        dense = [l for l in ax.get_lines() if l.get_linestyle() == "--"]
        assert len(dense) == 1
    assert dense[0].get_ydata()[0] == 0.5
    networks_line = ppl.containers[0].lines[0]
    assert networks_line.get_color() == criterion_color("networks")
    # every curve starts at the dense model, at sparsity 0
    assert networks_line.get_xdata().tolist() == [0.0, 0.1, 0.3, 0.5]
    assert networks_line.get_ydata()[0] == 18.0
    assert_readable(fig)
    _save_all(fig, tmp_path, "curves")


def test_plot_pruning_curves_spread_over_seeds(pruning_results):
    fig = plot_pruning_curves(_results(pruning_results, seeds=(0, 1, 2)), metrics=["perplexity"])
    bars = fig.axes[0].containers[0]
    assert bars.has_yerr
    expected = 18 * np.exp(0.1) * np.array([1.0, 1.01, 1.02])
    assert bars.lines[0].get_ydata()[1] == pytest.approx(expected.mean())
    segment = [seg for seg in bars.lines[2][0].get_segments() if len(seg)][0]
    assert segment[1][1] - segment[0][1] == pytest.approx(2 * expected.std(ddof=1))
    assert "s.d. over seeds" in fig.legends[0].get_title().get_text()


def test_plot_pruning_curves_reads_wide_tables_and_rejects_bad_input(pruning_results):
    fig = plot_pruning_curves(pruning_results)  # columns perplexity, avg_accuracy
    assert len(fig.axes) == 2
    fig = plot_pruning_curves(pruning_results.drop(columns="avg_accuracy"))
    assert len(fig.axes) == 1
    with pytest.raises(ValueError, match="perplexity"):
        plot_pruning_curves(pruning_results[["criterion", "sparsity"]])
    with pytest.raises(ValueError, match="metrics"):
        plot_pruning_curves(_results(pruning_results), metrics=["bleu"])
    with pytest.raises(ValueError, match="sparsity"):
        plot_pruning_curves(pruning_results.assign(sparsity=30))


class Plan:  # the attributes a pruning plan carries
    def __init__(self, keep, criterion="networks", n=8):
        self.keep, self.criterion = keep, criterion
        self.n_neurons = {layer: n for layer in keep}


def test_plot_kept_neurons_groups_identical_allocations(tmp_path):
    uniform = {layer: np.arange(6) for layer in range(3)}
    other = {layer: np.arange(2, 8) for layer in range(3)}
    adaptive = {0: np.arange(8), 1: np.arange(4), 2: np.arange(6)}
    fig = plot_kept_neurons({"networks": Plan(uniform), "random": Plan(other),
                             "flap (adaptive)": Plan(adaptive)})
    lines = fig.axes[0].get_lines()
    assert [l.get_label() for l in lines] == ["networks, random", "flap (adaptive)"]
    assert lines[0].get_ydata().tolist() == [75.0, 75.0, 75.0]  # % of the layer's 8 neurons
    assert lines[1].get_ydata().tolist() == [100.0, 50.0, 75.0]
    assert_readable(fig)
    _save_all(fig, tmp_path, "kept")


def test_plot_kept_neurons_shows_key_neurons_kept():
    key = xr.DataArray(np.zeros((3, 8), dtype=bool), dims=("layer", "neuron"),
                       coords={"layer": [0, 1, 2], "neuron": np.arange(8)})
    key[0, [0, 1]] = key[1, [6, 7]] = True
    plans = {"networks": Plan({0: np.arange(6), 1: np.arange(2, 8), 2: np.arange(6)}),
             "random": Plan({layer: np.arange(6) for layer in range(3)})}
    fig = plot_kept_neurons(plans, key_neurons=key)
    share = {l.get_label(): l.get_ydata() for l in fig.axes[1].get_lines()}
    np.testing.assert_array_equal(share["networks"], [100.0, 100.0, np.nan])
    np.testing.assert_array_equal(share["random"], [100.0, 0.0, np.nan])
    assert "4 key neurons" in fig.axes[1].get_title()
    assert_readable(fig)
    with pytest.raises(ValueError, match="plans"):
        plot_kept_neurons(pd.DataFrame([[1, 2]], index=["a"], columns=[0, 1]), key_neurons=key)


def test_plot_kept_neurons_from_tables_and_indices():
    counts = pd.DataFrame([[10, 12, 8], [5, 15, 10]], index=["networks", "random"],
                          columns=[0, 1, 2])
    fig = plot_kept_neurons(counts, n_neurons=20)
    lines = fig.axes[0].get_lines()
    assert lines[1].get_ydata().tolist() == [25.0, 75.0, 50.0]
    assert lines[1].get_color() == criterion_color("random")
    long = counts.stack().rename("kept").rename_axis(["criterion", "layer"]).reset_index()
    assert plot_kept_neurons(long).axes[0].get_lines()[0].get_ydata().tolist() == [10, 12, 8]
    da = xr.DataArray(counts.values, dims=("criterion", "layer"),
                      coords={"criterion": counts.index, "layer": counts.columns})
    assert len(plot_kept_neurons(da).axes[0].get_lines()) == 2
    fig = plot_kept_neurons({0: np.arange(4), 1: np.array([1, 3])}, label="my plan")
    assert fig.axes[0].get_lines()[0].get_label() == "my plan"
    with pytest.raises(TypeError, match="kept must be"):
        plot_kept_neurons([1, 2, 3])


# -- layer slices ------------------------------------------------------------------------------
@pytest.fixture
def activations():
    rng = np.random.default_rng(3)
    values = rng.standard_normal((12, 3, 20)).astype(np.float32)
    values[0] = values[6] = 500.0  # BOS tokens, at position 0 of each window
    return xr.DataArray(values, dims=("token", "layer", "neuron"),
                        coords={"layer": [0, 5, 9], "neuron": np.arange(20),
                                "position": ("token", list(range(6)) * 2)})


def test_plot_layer_slices_matches_the_nifti_slices(activations, tmp_path):
    fig = plot_layer_slices(activations)
    panels = [ax for ax in fig.axes if _images(ax)]
    assert [ax.get_title() for ax in panels] == ["layer 0", "layer 5", "layer 9"]
    expected = np.abs(activations.isel(token=[1, 2, 3, 4, 5, 7, 8, 9, 10, 11])).mean("token")
    volume = to_volumes(expected).img.get_fdata()
    for k, ax in enumerate(panels):
        shown = np.ma.getdata(_images(ax)[0].get_array())
        np.testing.assert_allclose(shown.T, volume[..., k], rtol=1e-6)  # x across, y up
    assert "BOS" in fig._suptitle.get_text() and "10 tokens" in fig._suptitle.get_text()
    assert _images(panels[0])[0].get_clim()[1] < 100  # the BOS tokens do not set the scale
    assert_readable(fig)
    _save_all(fig, tmp_path, "slices")


def test_plot_layer_slices_of_maps_images_and_thresholds(maps_z, activations):
    fig = plot_layer_slices(maps_z, component=1, threshold=3.0)
    shown = [np.ma.getdata(_images(ax)[0].get_array()) for ax in fig.axes if _images(ax)]
    assert len(shown) == N_LAYERS
    assert np.nanmin(shown[2]) == -9.0 and np.isfinite(shown[2]).sum() == 1
    volumes = to_volumes(maps_z)
    from_image = plot_layer_slices(volumes, component=1, threshold=3.0)
    again = [np.ma.getdata(_images(ax)[0].get_array()) for ax in from_image.axes if _images(ax)]
    np.testing.assert_array_equal(np.isnan(again[2]), np.isnan(shown[2]))
    padded = plot_layer_slices(maps_z.isel(neuron=slice(0, 17)), component=0)
    # 17 neurons fill a 5 x 4 slice: 3 padded voxels, not neurons, are blank
    assert np.isnan(np.ma.getdata(_images(padded.axes[0])[0].get_array())).sum() == 3
    with pytest.raises(ValueError, match="component"):
        plot_layer_slices(maps_z)
    with pytest.raises(ValueError, match="position"):
        plot_layer_slices(activations.drop_vars("position"))
    assert plot_layer_slices(activations.drop_vars("position"), exclude_bos=False)
    with pytest.raises(ValueError, match="layers"):
        plot_layer_slices(maps_z, component=0, layers=[3])


# -- style -------------------------------------------------------------------------------------
def test_criterion_colors_consistent_and_distinct():
    known = ["dense", "networks", "contextual", "magnitude", "wanda-sp", "flap", "random"]
    colors = [criterion_color(c) for c in known]
    assert len(set(colors)) == len(known)
    assert criterion_color("Wanda-SP") == criterion_color("wanda_sp")
    assert criterion_color("my-criterion") == criterion_color("my-criterion")
    assert len(set(network_colors(8))) == 8 and len(network_colors(25)) == 25


def _lab(hex_color):
    rgb = np.array([int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    rgb = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                    [0.0193, 0.1192, 0.9505]]) @ rgb / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_twenty_networks_have_distinguishable_colors():
    colors = network_colors(20)
    assert colors == list(NETWORK_PALETTE)
    distances = [np.linalg.norm(_lab(a) - _lab(b)) for i, a in enumerate(colors)
                 for b in colors[i + 1:]]
    assert min(distances) > 25  # CIELAB units; 2.3 is a just-noticeable difference
    assert network_color(0) != network_color(8)
    assert network_colors(30)[:20] == colors and network_color(25) == network_colors(30)[25]


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


def test_every_figure_is_readable(maps_z, timecourses, effects, pruning_results):
    """No text over other text, and tick labels on every panel, in every figure."""
    figures = [plot_network_map(maps_z, 0, threshold=2.0), plot_networks(maps_z),
               plot_network_atlas(maps_z, 2.0), plot_key_neurons(np.abs(maps_z) > 1.5),
               plot_timecourses(timecourses, kind="both"), plot_recurrence(np.full((3, 4), 0.7)),
               plot_intervention_effects(effects, baseline=18.0),
               plot_pruning_curves(pruning_results)]
    for fig in figures:
        assert overlapping_texts(fig) == [], fig
        assert panels_without_tick_labels(fig) == [], fig


def test_two_maps_one_above_the_other_do_not_collide(maps_z):
    """Tutorial 02 compares two methods' maps in stacked panels: titles, axis labels and
    colour bars must not overlap (they did with a shared x axis and no layout engine)."""
    fig = Figure(figsize=(9, 5.2), layout="constrained")
    top, bottom = fig.subplots(2, 1)
    plot_network_map(maps_z, 1, threshold=3.0, ax=top, title="CanICA (torch), network 1")
    plot_network_map(maps_z, 2, threshold=3.0, ax=bottom,
                     title="DictLearning (nilearn), network 2")
    fig.suptitle("Layer 12: the best-matched pair of maps, |r| = 0.87")
    assert_readable(fig)
