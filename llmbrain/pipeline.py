"""The whole pipeline in one call: record -> networks -> interventions -> prune ->
evaluate -> report.

:func:`run_pipeline` is what ``llmbrain run`` executes. Its defaults run on
the embedded model and corpus on a 2-core CPU in minutes; every setting can be
raised for a real study.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

__all__ = ["DEFAULT_CRITERIA", "run_pipeline"]

log = logging.getLogger(__name__)

#: Criteria compared by default; the model pruned by the first one is saved.
DEFAULT_CRITERIA = ("networks+contextual", "networks", "contextual", "wanda-sp", "flap",
                    "magnitude", "random")


def _split_documents(documents: list[str], held_out_every: int):
    """Disjoint documents: every ``held_out_every``-th one is held out for
    evaluation, the rest are recorded (and calibrate the pruning)."""
    held_out = documents[held_out_every - 1::held_out_every]
    analysed = [doc for i, doc in enumerate(documents) if (i + 1) % held_out_every]
    return analysed, held_out


def _step(message: str, steps: list, start: float) -> None:
    seconds = time.perf_counter() - start
    steps.append((message, seconds))
    print(f"[{sum(s for _, s in steps):6.0f} s] {message} ({seconds:.0f} s)", flush=True)


def run_pipeline(model="default", corpus="default", out="llmbrain-report", *,
                 n_tokens: int = 8192, window: int = 256, batch_size: int = 8,
                 n_components: int = 10, n_runs: int = 3, threshold: float = 3.6,
                 sparsity: float = 0.3, criteria=DEFAULT_CRITERIA, n_interventions: int = 3,
                 eval_windows: int = 24, eval_window: int = 128, device: str = "cpu",
                 seed: int = 0, overwrite: bool = False, progress: bool = True) -> Path:
    """Run the llmbrain pipeline end to end and write a report folder.

    Steps: record the MLP neurons over part of the corpus; find functional
    networks (CanICA, torch backend, over all layers) on ``n_runs`` disjoint
    token blocks and measure how they recur; ablate and amplify the largest
    networks against matched random controls; prune ``sparsity`` of the MLP
    neurons by each criterion (the networks criterion keeps the key neurons
    of the union over runs first); evaluate every model on held-out documents
    (perplexity, parameters, speed); write the figures, tables, networks
    (NIfTI) and the model pruned by the first criterion.

    Parameters
    ----------
    model : str, path or (model, tokenizer), default="default"
        Anything :func:`llmbrain.load_model` accepts, or a loaded pair.
    corpus : str, path or list of str, default="default"
        Anything :func:`llmbrain.load_corpus` accepts. Every fifth document is
        held out for evaluation; the others are recorded.
    out : str or path, default="llmbrain-report"
        Report folder (``index.html`` inside).
    n_tokens : int, default=8192
        Tokens to record.
    window, batch_size : int
        Recording windows and batch.
    n_components : int, default=10
        Networks per run.
    n_runs : int, default=3
        Disjoint token blocks fitted separately (at least 2).
    threshold : float, default=3.6
        ``|z|`` above which a neuron is a key neuron of a network.
    sparsity : float, default=0.3
        Fraction of MLP neurons to remove.
    criteria : sequence of str
        Pruning criteria to compare (see :data:`llmbrain.pruning.CRITERIA`);
        ``"networks+contextual"`` keeps the key neurons first and ranks the
        others by mean |activation|. The model pruned by the first criterion is
        saved.
    n_interventions : int, default=3
        Networks to ablate and amplify (the largest ones).
    eval_windows, eval_window : int
        Held-out perplexity on at most ``eval_windows`` windows of
        ``eval_window`` tokens.
    device : str, default="cpu"
    seed : int, default=0
    overwrite : bool, default=False
        Record again, replacing the recording in ``out``. By default an
        identical recording is reused, an interrupted one resumed, and one made
        with other settings refused.
    progress : bool, default=True

    Returns
    -------
    pathlib.Path
        The report folder.
    """
    from . import plotting
    from .corpus import load_corpus, tokenize_windows
    from .evaluation import measure_efficiency, perplexity
    from .interventions import ablate, amplify, matched_random
    from .models import load_model
    from .networks import FunctionalNetworks, NetworkRecurrence, save_networks
    from .pruning import (CRITERIA, CalibrationStats, make_plan, prune_model, save_pruned,
                          score_neurons)
    from .recording import record
    from .report import Report

    unknown = sorted({c.partition("+")[0] for c in criteria} - set(CRITERIA))
    if unknown:
        raise ValueError(f"Unknown criteria {unknown}; choose from {', '.join(CRITERIA)} "
                         "(\"networks+contextual\" fills the networks criterion by contextual).")
    if not 0 < sparsity < 1:
        raise ValueError(f"sparsity must be between 0 and 1, got {sparsity}.")
    if int(n_runs) < 2:
        raise ValueError(f"n_runs must be at least 2 to measure recurrence, got {n_runs}.")
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    steps: list = []
    figures = {}

    clock = time.perf_counter()
    if isinstance(model, tuple):
        model, tokenizer = model
    else:
        model, tokenizer = load_model(model, device=device)
    _step(f"loaded {model.config.name_or_path}", steps, clock)

    clock = time.perf_counter()
    analysed, held_out = _split_documents(load_corpus(corpus), held_out_every=5)
    if not held_out:
        raise ValueError("The corpus needs at least 5 documents: every fifth is held out for "
                         "evaluation.")
    windows = tokenize_windows(analysed, tokenizer, window, max_tokens=n_tokens)
    ds = record(model, tokenizer, windows, out / "activations.zarr", window=window,
                batch_size=batch_size, overwrite=overwrite, progress=progress)
    eval_text = "\n\n".join(held_out)
    _step(f"recorded {ds.sizes['token']:,} tokens x {ds.sizes['layer']} layers x "
          f"{ds.sizes['neuron']:,} neurons", steps, clock)

    clock = time.perf_counter()
    recurrence = NetworkRecurrence(
        FunctionalNetworks(n_components=n_components, scope="all", threshold=threshold, n_init=3,
                           random_state=seed, device=device, verbose=progress),
        n_runs=n_runs, verbose=progress).fit(ds)
    networks = recurrence.runs_[0]
    save_networks(recurrence, out / "networks")
    _step(f"networks: {recurrence.summary().splitlines()[0]}", steps, clock)

    figures["networks"] = plotting.plot_networks(networks.maps_z_, threshold=threshold)
    figures["atlas"] = plotting.plot_network_atlas(networks.maps_z_, threshold=threshold)
    figures["key"] = plotting.plot_key_neurons(networks.network_masks_)
    figures["recurrence"] = plotting.plot_recurrence(recurrence.result_)
    timecourses = networks.transform(ds.isel(token=slice(0, 2 * window)))
    figures["timecourses"] = plotting.plot_timecourses(timecourses, start=1, stop=65)

    clock = time.perf_counter()
    sizes = networks.network_masks_.sum(("layer", "neuron")).values
    chosen = [int(c) for c in np.argsort(-sizes)[:n_interventions]]
    ppl = lambda m: perplexity(m, tokenizer, eval_text, window=eval_window,  # noqa: E731
                               max_windows=eval_windows, progress=False)
    baseline = ppl(model)
    rows = []
    bar = tqdm(total=len(chosen) * 6, desc="interventions", unit="eval", disable=not progress)
    for component in chosen:
        mask = networks.network_masks_.isel(component=component).drop_vars(
            [c for c in networks.network_masks_.coords if c not in ("layer", "neuron")])
        for condition, neurons in [("network", mask)] + [
                ("random", matched_random(mask, seed=seed + k)) for k in range(2)]:
            for name, manager in (("ablate", ablate(model, neurons)),
                                  ("amplify", amplify(model, neurons, scale=3.0))):
                with manager:
                    rows.append({"network": f"network {component}", "intervention": name,
                                 "condition": condition, "metric": "perplexity",
                                 "value": ppl(model), "n_neurons": int(mask.sum())})
                bar.update()
    bar.close()
    effects = pd.DataFrame(rows)
    effects.to_csv(out / "interventions.csv", index=False)
    figures["interventions"] = plotting.plot_intervention_effects(effects, baseline=baseline)
    _step(f"interventions on {len(chosen)} networks (baseline perplexity {baseline:.2f})",
          steps, clock)

    clock = time.perf_counter()
    stats = CalibrationStats.from_activations(ds)
    dense = measure_efficiency(model, batch_size=4, seq_len=eval_window, repeats=7)
    results = [{"criterion": "dense", "sparsity": 0.0, "perplexity": baseline,
                "n_params": dense["n_params"], "tokens_per_s": dense["tokens_per_s"]}]
    plans = {}
    for criterion in tqdm(criteria, desc="pruning", unit="criterion", disable=not progress):
        name, _, fill = criterion.partition("+")  # "networks+contextual": fill by contextual
        scores = score_neurons(model, name, calibration=stats, seed=seed, fill=fill or None,
                               networks=recurrence.runs_ if name == "networks" else None)
        plan = make_plan(scores, sparsity=sparsity)
        plans[criterion] = plan
        pruned = prune_model(copy.deepcopy(model), plan,
                             bias_compensation=stats if name == "flap" else None)
        speed = measure_efficiency(pruned, batch_size=4, seq_len=eval_window, repeats=7)
        results.append({"criterion": criterion, "sparsity": sparsity, "perplexity": ppl(pruned),
                        "n_params": speed["n_params"], "tokens_per_s": speed["tokens_per_s"]})
        if criterion == criteria[0]:
            save_pruned(pruned, tokenizer, out / "pruned-model", plan=plan, overwrite=True)
        del pruned
    table = pd.DataFrame(results)
    table["speed-up"] = table["tokens_per_s"] / dense["tokens_per_s"]
    table.to_csv(out / "pruning.csv", index=False)
    figures["kept"] = plotting.plot_kept_neurons(plans)
    _step(f"pruned {sparsity:.0%} of MLP neurons by {len(criteria)} criteria", steps, clock)

    report = Report("llmbrain report")
    report.add_text(
        f"Model: {ds.attrs['model']}. Recorded {ds.sizes['token']:,} tokens of the MLP neurons "
        f"({ds.sizes['layer']} layers x {ds.sizes['neuron']:,} neurons); evaluation on "
        f"{len(held_out)} held-out documents never recorded.")
    report.add_heading("Functional networks")
    report.add_text(recurrence.summary())
    for name, caption in [
            ("networks", f"z-scored maps of the {n_components} networks of run 1 (|z| > {threshold} shown)"),
            ("atlas", "each key neuron coloured by its strongest network"),
            ("key", "key neurons per layer and network"),
            ("timecourses", "network time courses over the first tokens"),
            ("recurrence", f"matched spatial correlation across {n_runs} disjoint token blocks")]:
        report.add_figure(figures[name], caption)
    report.add_heading("Interventions")
    report.add_figure(figures["interventions"],
                      "perplexity when a network is ablated or amplified (x3), against "
                      "random neurons of the same count per layer")
    report.add_table(effects.groupby(["network", "intervention", "condition"])["value"]
                     .mean().unstack("condition"), "mean perplexity")
    report.add_heading("Pruning")
    report.add_table(table.set_index("criterion"),
                     f"{sparsity:.0%} of MLP neurons removed; held-out perplexity "
                     f"({eval_window}-token windows); speed on {device}")
    report.add_figure(figures["kept"], "kept neurons per layer")
    report.add_heading("Run")
    report.add_table(pd.DataFrame(steps, columns=["step", "seconds"]).set_index("step"))
    report.save(out)
    (out / "summary.json").write_text(json.dumps(
        {"tokens": int(ds.sizes["token"]), "baseline_perplexity": float(baseline),
         "pruning": results, "seconds": sum(s for _, s in steps)}, indent=2))
    print(table.to_string(index=False))
    print(f"Report: {out / 'index.html'}")
    return out

