"""The whole pipeline, as a sequence of stage calls.

``text -> activations -> networks -> interventions -> pruning -> evaluation -> report``

:func:`run_pipeline` is what ``llmbrain run`` executes; every step is one call
of a public stage function that the tutorials and benchmarks use too:

1. :func:`llmbrain.corpus.load_corpus` and :func:`split_documents`: documents
   to record and documents held out for evaluation;
2. :func:`llmbrain.record`: the MLP neurons of the recorded documents (a store
   in the report folder);
3. :class:`llmbrain.networks.NetworkRecurrence`: networks over all layers on
   disjoint token blocks, and how they recur;
4. :func:`llmbrain.interventions.intervene_on_networks`: the largest networks
   ablated and amplified against matched random controls;
5. :func:`llmbrain.networks.find_networks` (the recipe's per-layer networks
   that feed pruning, fitted online: one more pass, no activation kept),
   :func:`llmbrain.pruning.calibration_stats_from_activations`
   and :func:`llmbrain.pruning.compare_pruning`: every criterion pruned with
   its published plan options and evaluated on the held-out documents;
6. :func:`llmbrain.report.build_report`: the report folder.

Its defaults run on the embedded model and corpus on a 2-core CPU in
minutes; every setting can be raised for a real study.
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

__all__ = ["DEFAULT_CRITERIA", "run_pipeline", "split_documents"]

#: Criteria compared by default; the model pruned by the first one is saved: the loss
#: networks, the best criterion on SmolLM2 (``benchmarks/results/pruning-40k-loss-networks``).
DEFAULT_CRITERIA = ("loss-networks", "networks", "fisher", "flap", "wanda-sp", "contextual",
                    "magnitude", "random")


def split_documents(documents: list[str], held_out_every: int = 5):
    """Disjoint documents: every ``held_out_every``-th one is held out for
    evaluation, the rest are recorded (and calibrate the pruning).

    Returns
    -------
    analysed, held_out : list of str
    """
    if int(held_out_every) < 2:
        raise ValueError(f"held_out_every must be at least 2, not {held_out_every}.")
    held_out = documents[held_out_every - 1::held_out_every]
    analysed = [doc for i, doc in enumerate(documents) if (i + 1) % held_out_every]
    if not held_out:
        raise ValueError(f"The corpus needs at least {held_out_every} documents: every "
                         f"{held_out_every}th is held out for evaluation.")
    return analysed, held_out


class _Steps:
    """Seconds of every step, printed as they end."""

    def __init__(self):
        self.steps: list[tuple[str, float]] = []
        self.clock = time.perf_counter()

    def done(self, message: str) -> None:
        seconds = time.perf_counter() - self.clock
        self.steps.append((message, seconds))
        total = sum(s for _, s in self.steps)
        print(f"[{total:6.0f} s] {message} ({seconds:.0f} s)", flush=True)
        self.clock = time.perf_counter()


def _check_settings(criteria, sparsity, n_runs, n_controls) -> None:
    from .pruning import check_criterion

    for criterion in criteria:
        check_criterion(criterion)
    if not criteria:
        raise ValueError("Give at least one pruning criterion.")
    if not 0 < sparsity < 1:
        raise ValueError(f"sparsity must be between 0 and 1, got {sparsity}.")
    if int(n_runs) < 2:
        raise ValueError(f"n_runs must be at least 2 to measure recurrence, got {n_runs}.")
    if int(n_controls) < 1:
        raise ValueError(f"n_controls must be at least 1, got {n_controls}.")


def run_pipeline(model="default", corpus="default", out="llmbrain-report", *,
                 n_tokens: int = 8192, window: int = 256, batch_size: int = 8,
                 n_components: int = 10, n_runs: int = 3, threshold: float | None = None,
                 sparsity: float = 0.3, criteria=DEFAULT_CRITERIA, options=None,
                 n_interventions: int = 3,
                 n_controls: int = 10, intervention_windows: int = 8,
                 pruning_tokens_per_run: int = 2048, pruning_runs: int = 2,
                 eval_windows: int = 24, eval_window: int = 128, device: str = "cpu",
                 seed: int = 0, overwrite: bool = False, progress: bool = True) -> Path:
    """Run the llmbrain pipeline end to end and write a report folder.

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
        Tokens to record (the networks over all layers, calibration).
    window, batch_size : int
        Recording windows and batch.
    n_components : int, default=10
        Networks over all layers per run.
    n_runs : int, default=3
        Disjoint token blocks those networks are fitted on (at least 2).
    threshold : float, optional
        ``|z|`` above which a neuron is a key neuron of a network (default
        :data:`llmbrain.networks.KEY_NEURON_THRESHOLD`).
    sparsity : float, default=0.3
        Fraction of MLP neurons to remove.
    criteria : sequence of str
        Pruning criteria to compare, each with its published plan options
        (:data:`llmbrain.pruning.PUBLISHED`); ``"random"`` runs with three
        seeds. The model pruned by the first criterion is saved.
    options : PlanOptions or dict of str to PlanOptions, optional
        Plan options for every criterion, or per criterion (see
        :func:`llmbrain.pruning.compare_pruning`); default each criterion's
        published options.
    n_interventions : int, default=3
        Networks to ablate and amplify (the largest ones).
    n_controls : int, default=10
        Random neuron sets, matched per layer, per network and intervention.
    intervention_windows : int, default=8
        Held-out windows of ``eval_window`` tokens per intervention measurement.
    pruning_tokens_per_run, pruning_runs : int
        The recipe's per-layer networks that feed the ``"networks"`` criterion:
        runs on disjoint samples of the recorded documents and their size.
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
    import pandas as pd

    from .corpus import load_corpus, tokenize_windows
    from .evaluation import evaluate_model
    from .evaluation.results import results_table, save_results
    from .interventions import intervene_on_networks, largest_networks
    from .models import load_model
    from .networks import (
        KEY_NEURON_THRESHOLD,
        FunctionalNetworks,
        NetworkRecurrence,
        find_networks,
        save_networks,
    )
    from .pruning import (
        LOSS_NETWORKS,
        calibration_stats_from_activations,
        collect_loss_sensitivity,
        compare_pruning,
        save_pruned,
        sensitivity_options,
    )
    from .recording import record
    from .report import PUBLISHED_CLAIMS, Methods, build_report

    criteria = list(criteria)
    _check_settings(criteria, sparsity, n_runs, n_controls)
    threshold = KEY_NEURON_THRESHOLD if threshold is None else float(threshold)
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    steps = _Steps()

    if isinstance(model, tuple):
        model, tokenizer = model
    else:
        model, tokenizer = load_model(model, device=device)
    name = str(model.config.name_or_path)
    steps.done(f"loaded {name}")

    analysed, held_out = split_documents(load_corpus(corpus))
    windows = tokenize_windows(analysed, tokenizer, window, max_tokens=n_tokens)
    ds = record(model, tokenizer, windows, out / "activations.zarr", window=window,
                batch_size=batch_size, overwrite=overwrite, progress=progress)
    eval_text = "\n\n".join(held_out)
    steps.done(f"recorded {ds.sizes['token']:,} tokens x {ds.sizes['layer']} layers x "
               f"{ds.sizes['neuron']:,} neurons")

    recurrence = NetworkRecurrence(
        FunctionalNetworks(n_components, scope="all", threshold=threshold, n_init=3,
                           random_state=seed, device=device, verbose=0),
        n_runs=n_runs, verbose=int(progress)).fit(ds)
    networks = recurrence.runs_[0]
    save_networks(recurrence, out / "networks")
    steps.done(f"networks: {recurrence.summary().splitlines()[0]}")

    effects = intervene_on_networks(model, tokenizer, networks, eval_text,
                                    components=largest_networks(networks, n_interventions),
                                    n_controls=n_controls,
                                    window=eval_window, max_windows=intervention_windows,
                                    random_state=seed, model_name=name, progress=progress)
    steps.done(f"interventions on {n_interventions} networks, {n_controls} controls each")

    stats = calibration_stats_from_activations(ds)
    needs = sensitivity_options(criteria)
    if needs["loss_sensitivity"]:
        stats = stats.assign(collect_loss_sensitivity(
            model, windows, stats, batch_size=batch_size, progress=progress,
            loss_networks=needs["loss_networks"]).data_vars)
    pruning_networks = None
    if "networks" in criteria:
        pruning_networks = find_networks(model, tokenizer, windows, n_runs=pruning_runs,
                                         tokens_per_run=pruning_tokens_per_run, window=window,
                                         batch_size=batch_size, threshold=threshold,
                                         online=True, random_state=seed, device=device,
                                         verbose=0)
    evaluate = partial(evaluate_model, tokenizer=tokenizer, model_name=name, text=eval_text,
                       dataset="held-out", window=eval_window, max_windows=eval_windows,
                       efficiency=True, progress=False)
    dense = evaluate(model)
    seeds = {c: [seed, seed + 1, seed + 2] if c == "random" else [seed] for c in criteria}
    pruned, plans, kept = compare_pruning(
        model, criteria, [sparsity], evaluate, options=options, seeds=seeds,
        calibration=stats, calibration_windows=windows, networks=pruning_networks,
        keep_models=[(criteria[0], sparsity)], progress=progress)
    save_pruned(kept[(criteria[0], float(sparsity))], tokenizer, out / "pruned-model",
                plan=plans[(criteria[0], float(sparsity), seed)], overwrite=True)
    results = results_table(pd.concat([dense, pruned, effects[effects["intervention"] != ""]],
                                      ignore_index=True))
    save_results(results, out / "results.csv")
    steps.done(f"pruned {sparsity:.0%} of MLP neurons by {len(criteria)} criteria")

    methods = Methods(
        model=name, corpus=str(corpus), n_tokens=int(ds.sizes["token"]), window=window,
        evaluation=f"{len(held_out)} held-out documents (every fifth), never recorded",
        evaluation_size=f"{eval_windows} windows of {eval_window} tokens",
        decomposition={"method": "canica", "scope": "all layers", "n_components": n_components,
                       "runs": n_runs, "threshold": threshold},
        pruning={"criteria": ", ".join(criteria), "sparsity": sparsity,
                 "networks criterion": f"per-layer networks of up and act, {pruning_runs} runs "
                                       f"x {pruning_tokens_per_run} tokens, fitted online from a "
                                       "sketch of each layer's correlations",
                 **({"fisher criterion": "each neuron's second-order loss increase when "
                                         "replaced by its mean, from gradients over the "
                                         "recorded tokens"}
                    if "fisher" in criteria else {}),
                 **({"loss-networks criterion": "Fisher plus the interactions of neurons within "
                                                f"the {LOSS_NETWORKS} strongest loss networks "
                                                "of each layer (leading eigenvectors of the Gram "
                                                "matrix of the neurons' per-token loss "
                                                "contributions), neurons removed greedily"}
                    if "loss-networks" in criteria else {}),
                 "plan options": "each criterion's published options" if options is None
                 else str(options)},
        interventions={"targets": f"the {n_interventions} largest networks",
                       "controls": f"{n_controls} random sets matched per layer",
                       "amplification": "x3"},
        seeds=seed, device=device)
    timecourses = networks.transform(ds.isel(token=slice(0, 2 * window)))
    report = build_report(
        results, methods=methods, maps_z=networks.maps_z_,
        network_masks=networks.network_masks_, recurrence=recurrence, timecourses=timecourses,
        plans={c: plans[(c, float(sparsity), seed)] for c in criteria},
        activations=ds["activations"].isel(token=slice(0, 256)),
        expectations=PUBLISHED_CLAIMS, threshold=threshold, steps=steps.steps)
    report.save(out)
    (out / "summary.json").write_text(json.dumps(
        {"tokens": int(ds.sizes["token"]), "seconds": sum(s for _, s in steps.steps),
         "key_result": [f.text for f in report.key_result.findings]}, indent=2))
    print(f"Report: {out / 'index.html'}")
    return out
