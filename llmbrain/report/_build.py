"""The report of a whole run, from its results: what ``llmbrain run`` writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from ..evaluation.results import results_table, to_wide
from ..networks._maps import KEY_NEURON_THRESHOLD
from ._format import format_number
from ._document import Report
from ._interpret import interpret
from ._methods import Methods
from ._stats import compare_to_controls, speedups

__all__ = ["build_report"]


def _pruning_table(results: pd.DataFrame) -> pd.DataFrame:
    rows = results[(results["intervention"] == "") & (results["metric"] != "tokens_per_s")]
    pruned = rows[rows["criterion"] != "dense"]
    index = ["criterion", "sparsity"] + [
        c for c in ("allocation", "calibration", "protected_layers", "bias_compensation")
        if pruned[c].nunique() > 1]
    wide = to_wide(rows, index=index)
    if "n_params" in wide.columns:
        wide = wide.rename(columns={"n_params": "parameters"})
    return wide


def _speed_table(results: pd.DataFrame) -> tuple[pd.DataFrame | None, str]:
    speed = speedups(results)
    if speed.empty:
        return None, ""
    table = pd.DataFrame({"criterion": speed["criterion"], "sparsity": speed["sparsity"],
                          "tokens/s": speed["tokens_per_s"].round().astype("Int64")})
    shown = np.isfinite(speed["speedup"])
    table["speed-up"] = [f"{s:.2f}× ± {e:.2f}" if ok else "–" for s, e, ok in
                         zip(speed["speedup"], speed["speedup_stderr"], shown)]
    table["within noise"] = ["yes" if flag else ("no" if ok else "–")
                             for flag, ok in zip(speed["within_noise"], shown)]
    note = ("Speed-up: tokens per second relative to the dense model, ± its standard error over "
            "timing repeats; 'within noise' when it is less than 2 standard errors from 1×.")
    if not shown.all():
        note += (" Where no spread over repeats was recorded, no speed-up is shown, only the "
                 "throughput.")
    return table, note


def _controls_table(results: pd.DataFrame, min_controls: int) -> tuple[pd.DataFrame, str]:
    comparison = compare_to_controls(results, min_controls=min_controls)
    measures = comparison[["metric", "dataset"]].drop_duplicates()
    several = len(measures) > 1
    out = pd.DataFrame({"target": comparison["target"],
                        "intervention": comparison["intervention"]})
    if several:
        out["measure"] = comparison["dataset"] + " " + comparison["metric"]
    out["value"] = comparison["target_value"]
    out["controls mean"] = comparison["controls_mean"]
    out["95% prediction interval"] = [f"{format_number(a)}–{format_number(b)}"
                                      for a, b in zip(comparison["controls_low"],
                                                      comparison["controls_high"])]
    out["controls"] = comparison["n_controls"]
    tested = np.isfinite(comparison["p_value"])
    out["beyond"] = [("yes" if b else "no") if ok else "–"
                     for b, ok in zip(comparison["beyond_controls"], tested)]
    out["p"] = [format_number(p, decimals=3) if ok else "–"
                for p, ok in zip(comparison["p_value"], tested)]
    measure = "" if several else (f" Values: {measures['metric'].iloc[0]} on "
                                  f"{measures['dataset'].iloc[0]}.")
    caption = ("Each target against random neurons of the same count per layer." + measure
               + " Prediction interval: where 95% of further controls would fall (Student's t); "
               "beyond: the target lies outside it on the harmful side; p: one-sided permutation "
               "p-value, the share of controls at least as harmful (at least 1 / (controls + 1))."
               f" Both need {min_controls} or more controls.")
    return out, caption


def _key_neuron_text(network_masks, recurrence, threshold) -> str:
    lines = []
    if network_masks is not None:
        per_run = network_masks.any("component")
        lines.append(f"The reference run has {int(per_run.sum()):,} key neurons: neurons with "
                     f"|z| > {threshold:g} in at least one of its "
                     f"{network_masks.sizes['component']} networks (the union over networks), "
                     f"{float(per_run.mean()):.1%} of all {per_run.size:,} neurons.")
    if recurrence is not None:
        n_runs = int(recurrence.attrs.get("n_runs", recurrence.sizes.get("run", 0)))
        lines.append(f"Over the {n_runs} runs, {int(recurrence['key_neurons_union'].sum()):,} "
                     "neurons are key in at least one run (the union over runs, which the "
                     "networks criterion keeps first) and "
                     f"{int(recurrence['key_neurons_majority'].sum()):,} in a majority of runs.")
    return " ".join(lines)


def build_report(results, *, methods: Methods | None = None, maps_z=None, network_masks=None,
                 recurrence=None, timecourses=None, plans=None, key_neurons=None,
                 activations=None, expectations=None,
                 threshold: float = KEY_NEURON_THRESHOLD,
                 steps=None, title: str = "llmbrain report", min_controls: int = 10) -> Report:
    """Assemble the report of a run: key result, methods, pruning, networks, interventions.

    Every argument but ``results`` is optional; the sections and figures of
    what is given are made (figures named ``pruning-curve``,
    ``kept-neurons-per-layer``, ``network-maps``, ``network-atlas``,
    ``key-neurons``, ``layer-slices``, ``time-courses``, ``recurrence``,
    ``interventions``). Networks, runs and layers are numbered from 0.

    Parameters
    ----------
    results : pandas.DataFrame
        The results table of the run (:mod:`llmbrain.evaluation.results`):
        the dense and pruned models' metrics, their parameter counts and
        speed (``tokens_per_s`` with ``stderr`` and ``n`` over timing
        repeats), and interventions against matched random controls.
    methods : Methods, optional
    maps_z : xarray.DataArray, dims (component, layer, neuron), optional
        z-scored maps of the reference run.
    network_masks : xarray.DataArray of bool, dims (component, layer, neuron), optional
        Key neurons of each network of the reference run (``|z| > threshold``).
    recurrence : xarray.Dataset or NetworkRecurrence, optional
        How the networks recur over runs (:func:`llmbrain.networks.compare_runs`).
    timecourses : xarray.DataArray, dims (token, component), optional
        Network time courses with ``token_text``.
    plans : dict of str to PruningPlan, optional
        The plan of each criterion (at one sparsity).
    key_neurons : xarray.DataArray of bool, dims (layer, neuron), optional
        Key neurons the networks criterion keeps; default the union over runs
        of ``recurrence``.
    activations : xarray.DataArray, dims (token, layer, neuron), optional
        Recorded activations, shown as one slice per layer (BOS excluded).
    expectations : dict, optional
        Passed to :func:`interpret`, e.g. :data:`PUBLISHED_CLAIMS`.
    threshold : float, default=KEY_NEURON_THRESHOLD (3.6)
        The |z| threshold of the key neurons.
    steps : sequence of (str, float), optional
        Steps of the run and their seconds.
    title : str
    min_controls : int, default=10
        Random controls needed per target before it is judged against them.

    Returns
    -------
    Report
        Save it with :meth:`Report.save`.

    Examples
    --------
    >>> from llmbrain.evaluation.results import results_table
    >>> from llmbrain.report import build_report
    >>> results = results_table(
    ...     [{"criterion": "dense", "value": 56.1},
    ...      {"criterion": "flap", "sparsity": 0.3, "value": 129.6}],
    ...     model="SmolLM2", dataset="wikitext2", metric="perplexity")
    >>> report = build_report(results)
    >>> report.figure_names
    ['pruning-curve']
    >>> report.save("llmbrain-report")               # doctest: +SKIP
    """
    from .. import plotting

    results = results_table(results)
    if recurrence is not None and not isinstance(recurrence, xr.Dataset):
        recurrence = getattr(recurrence, "result_", None)
        if recurrence is None:
            raise TypeError("recurrence must be the Dataset of compare_runs or a fitted "
                            "NetworkRecurrence.")
    if key_neurons is None and recurrence is not None:
        key_neurons = recurrence["key_neurons_union"]
    n_networks = maps_z.sizes["component"] if maps_z is not None else None
    report = Report(title, methods=methods)
    report.set_key_result(interpret(results, recurrence=recurrence, expectations=expectations,
                                    n_networks=n_networks, min_controls=min_controls))

    pruning = results[results["intervention"] == ""]
    if (pruning["criterion"] != "dense").any():
        report.add_heading("Pruning")
        metrics = [m for m in ("perplexity", "acc") if m in set(pruning["metric"])]
        if metrics:
            report.add_figure(plotting.plot_pruning_curves(pruning, metrics=metrics),
                              "Quality against sparsity, one line per criterion; each line starts "
                              "at the dense model (sparsity 0, dashed).", name="pruning-curve")
        report.add_table(_pruning_table(pruning), "Every model evaluated (mean over seeds where "
                         "there are several).", index=False)
        speed, note = _speed_table(pruning)
        if speed is not None:
            report.add_table(speed, note, index=False)
        if plans:
            report.add_figure(
                plotting.plot_kept_neurons(plans, key_neurons=key_neurons),
                "Left: the share of each layer's neurons that each criterion keeps; criteria that "
                "keep the same counts share a line (with uniform allocation, all of them). "
                + ("Right: the share of each layer's key neurons (the union over runs) that each "
                   "criterion keeps." if key_neurons is not None else ""),
                name="kept-neurons-per-layer")

    if any(x is not None for x in (maps_z, network_masks, recurrence, timecourses, activations)):
        report.add_heading("Functional networks")
        text = _key_neuron_text(network_masks, recurrence, threshold)
        if text:
            report.add_text(text)
        if maps_z is not None:
            report.add_figure(plotting.plot_networks(maps_z, threshold=threshold),
                              f"z-scored maps of the reference run's networks, one row per layer; "
                              f"only key neurons (|z| > {threshold:g}) are coloured.",
                              name="network-maps")
            report.add_figure(plotting.plot_network_atlas(maps_z, threshold),
                              "Each key neuron coloured by the network where its |z| is largest.",
                              name="network-atlas")
        if network_masks is not None:
            report.add_figure(plotting.plot_key_neurons(network_masks),
                              "Key neurons per layer and network; right: per layer, the neurons "
                              "key in at least one network (union over the run's networks).",
                              name="key-neurons")
        if activations is not None:
            report.add_figure(plotting.plot_layer_slices(activations),
                              "The recording as NIfTI slices, one per layer (x, y: the neuron "
                              "grid; the BOS token left out).", name="layer-slices")
        if timecourses is not None:
            start = 1 if "position" in timecourses.coords and \
                int(timecourses["position"].values[0]) == 0 else 0
            report.add_figure(plotting.plot_timecourses(timecourses, start=start),
                              "Network time courses over the first tokens, with the text.",
                              name="time-courses")
        if recurrence is not None:
            report.add_figure(plotting.plot_recurrence(recurrence),
                              "Matched |r| of every network of the reference run in each run "
                              "(disjoint tokens).", name="recurrence")

    if (results["intervention"] != "").any():
        report.add_heading("Interventions")
        report.add_figure(plotting.plot_intervention_effects(results),
                          "Each target ablated or amplified, next to random neurons of the same "
                          "count per layer (one point per control).", name="interventions")
        table, caption = _controls_table(results, min_controls)
        report.add_table(table, caption, index=False)

    if steps:
        report.add_heading("Run time")
        report.add_table(pd.DataFrame(list(steps), columns=["step", "seconds"]), index=False,
                         formats={"seconds": "{:,.0f}"})
    return report
