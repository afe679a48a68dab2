"""The key result of a run, stated plainly from its numbers.

:func:`interpret` reads a results table (and, optionally, how the networks
recurred) and says which criterion won and by how much, whether intervening
on the networks mattered compared with matched random controls, whether the
networks recurred, and where a result contradicts an expectation given to it
(a published claim, or the README's).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..evaluation.results import higher_is_better, results_table, summarize_seeds
from ._format import format_number
from ._stats import compare_to_controls, standard_error

__all__ = ["PUBLISHED_CLAIMS", "Finding", "KeyResult", "interpret"]

#: What the papers llmbrain follows report, as expectations for :func:`interpret`.
PUBLISHED_CLAIMS = {
    "best_criterion": "networks",
    "networks_matter": True,
    "networks_recur": True,
    "source": "the published results (arXiv:2502.20408, arXiv:2508.05239)",
}

_STATUSES = ("info", "agrees", "contradicts", "inconclusive")


@dataclass
class Finding:
    """One statement of a key result.

    Attributes
    ----------
    topic : str
        ``"winner"``, ``"networks_matter"``, ``"recurrence"`` or
        ``"expectation"``.
    text : str
        The statement, in plain words with its numbers.
    status : {"info", "agrees", "contradicts", "inconclusive"}
    details : list of str
        Supporting numbers, one line each.
    """

    topic: str
    text: str
    status: str = "info"
    details: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.status not in _STATUSES:
            raise ValueError(f"status must be one of {_STATUSES}; got {self.status!r}.")


@dataclass
class KeyResult:
    """The findings of :func:`interpret`, most important first."""

    findings: list[Finding]

    @property
    def contradictions(self) -> list[Finding]:
        """Findings that contradict an expectation."""
        return [f for f in self.findings if f.status == "contradicts"]

    def __str__(self) -> str:
        lines = []
        for finding in self.findings:
            mark = {"contradicts": "[contradicts] ", "inconclusive": "[inconclusive] ",
                    "agrees": "[agrees] "}.get(finding.status, "")
            lines.append(f"- {mark}{finding.text}")
            lines += [f"    {d}" for d in finding.details]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        items = []
        for f in self.findings:
            details = "".join(f"<li>{html.escape(d)}</li>" for d in f.details)
            items.append(f'<li class="{f.status}"><b>{html.escape(f.status)}</b> '
                         f"{html.escape(f.text)}" + (f"<ul>{details}</ul>" if details else "")
                         + "</li>")
        return "<ul>" + "".join(items) + "</ul>"


def _fmt(value, metric: str) -> str:
    if metric.startswith("acc") and 0 <= value <= 1:
        return format_number(value, "percent", decimals=1)
    return format_number(value, digits=4)


def _relative(a: float, b: float) -> str:
    return format_number(abs(a - b) / abs(b), "percent", decimals=1) if b else "∞"


def _pick(table: pd.DataFrame, metric, dataset):
    pruning = table[table["intervention"] == ""]
    if metric is None:
        available = list(pd.unique(pruning["metric"]))
        metric = next((m for m in ("perplexity", "acc_norm", "acc") if m in available), None)
        if metric is None:
            return None, None, pruning.iloc[0:0]
    rows = pruning[pruning["metric"] == metric]
    if dataset is None and len(rows):
        dataset = rows["dataset"].value_counts(sort=True).index[0]
    return metric, dataset, rows[rows["dataset"] == dataset]


_VARIANTS = ("allocation", "calibration", "protected_layers", "bias_compensation")


def _label(summary: pd.DataFrame) -> pd.Series:
    """Each pruned model's name: its criterion, with the settings that tell apart models of one
    criterion (allocation, calibration data, ...) in parentheses."""
    varying = [c for c in _VARIANTS
               if summary.groupby("criterion")[c].nunique().gt(1).any()]
    labels = []
    for _, row in summary.iterrows():
        extra = [f"{c}={row[c]}" if c in ("protected_layers", "bias_compensation") else
                 str(row[c]) for c in varying if str(row[c]) not in ("", "False")]
        labels.append(f"{row['criterion']} ({', '.join(extra)})" if extra else row["criterion"])
    return pd.Series(labels, index=summary.index)


def _winners(summary: pd.DataFrame, metric: str, dataset: str) -> tuple[Finding | None, dict]:
    better_high = higher_is_better(metric)
    dense = summary[summary["criterion"] == "dense"]["mean"]
    pruned = summary[summary["criterion"] != "dense"]
    if pruned.empty:
        return None, {}
    pruned = pruned.assign(label=_label(pruned))
    winners, details = {}, []
    for sparsity, group in pruned.groupby("sparsity", sort=True):
        group = group.groupby("label", sort=False).agg(
            criterion=("criterion", "first"), mean=("mean", "mean"), sd=("sd", "mean"),
            n_seeds=("n_seeds", "max"), stderr=("stderr", "mean")).reset_index()
        group = group.sort_values("mean", ascending=not better_high).reset_index(drop=True)
        best = group.iloc[0]
        winners[float(sparsity)] = (best["label"], group)
        where = f"At {format_number(sparsity, 'percent')} sparsity"
        if len(group) == 1:
            details.append(f"{where}, only {best['label']} was evaluated: "
                           f"{metric} {_fmt(best['mean'], metric)}.")
            continue
        second = group.iloc[1]
        line = (f"{where}, {best['label']} gave the {'highest' if better_high else 'lowest'} "
                f"{dataset} {metric}: {_fmt(best['mean'], metric)}, "
                f"{_relative(best['mean'], second['mean'])} "
                f"{'above' if better_high else 'below'} {second['label']} "
                f"({_fmt(second['mean'], metric)})")
        se = np.hypot(standard_error(best), standard_error(second))
        if np.isfinite(se) and se > 0:
            z = abs(best["mean"] - second["mean"]) / se
            line += ("; the difference is within noise (less than 2 standard errors)" if z < 2
                     else f"; {z:.1f} standard errors apart")
        else:
            line += "; one measurement each, so no spread to judge the difference by"
        details.append(line + ".")
    if len(dense):
        details.append(f"Dense model: {_fmt(float(dense.mean()), metric)}.")
    counts = pd.Series([w[0] for w in winners.values()]).value_counts()
    if len(winners) == 1:
        text = details[0]
        details = details[1:]
    else:
        parts = []
        for name in counts.index:
            levels = [format_number(s, "percent") for s, w in winners.items() if w[0] == name]
            parts.append(f"{name} at {', '.join(levels)}")
        text = (f"Best criterion on {dataset} {metric} over {len(winners)} sparsities: "
                + "; ".join(parts) + ".")
    return Finding("winner", text, details=details), winners


def _networks_matter(results, min_controls, n_networks) -> tuple[Finding | None, bool | None]:
    comparison = compare_to_controls(results, min_controls=min_controls)
    if comparison.empty:
        return None, None
    ablations = comparison[comparison["intervention"].str.startswith("ablat")]
    intervention = (ablations if len(ablations) else comparison)["intervention"].iloc[0]
    main = comparison[comparison["intervention"] == intervention]
    details = []
    for row in comparison.itertuples():
        line = (f"{row.intervention} {row.target}: {row.metric} "
                f"{_fmt(row.target_value, row.metric)} vs {row.n_controls} random controls")
        if np.isfinite(row.controls_low):
            low, high = _fmt(row.controls_low, row.metric), _fmt(row.controls_high, row.metric)
            line += (f" (mean {_fmt(row.controls_mean, row.metric)}, 95% prediction interval "
                     f"{low}–{high})")
        if np.isfinite(row.p_value):
            line += f", permutation p = {row.p_value:.3g}"
        details.append(line)
    targets = list(pd.unique(main["target"]))
    chosen = f"{len(targets)} target(s) tested: {', '.join(map(str, targets))}"
    n_network_targets = sum(str(t).startswith("network") for t in targets)
    if n_networks is not None and n_network_targets < n_networks:
        chosen += f" ({n_network_targets} of the {n_networks} networks)"
    tested = main[np.isfinite(main["p_value"])]
    if tested.empty:
        fewest = int(main["n_controls"].min())
        text = (f"Whether the networks matter is not established: {intervention} was compared "
                f"with only {fewest} random control(s) per target; at least {min_controls} are "
                f"needed. {chosen}.")
        return Finding("networks_matter", text, "inconclusive", details), None
    beyond = int(tested["beyond_controls"].sum())
    mattered = beyond > len(tested) / 2
    verb = {"ablate": "Ablating", "amplify": "Amplifying"}.get(intervention, str(intervention))
    text = (f"{verb} the networks {'mattered' if mattered else 'did not clearly matter'}: "
            f"{beyond} of {len(tested)} targets changed {tested['metric'].iloc[0]} beyond the "
            f"95% prediction interval of their matched random controls "
            f"({int(tested['n_controls'].min())}+ controls each; smallest permutation p "
            f"{tested['p_value'].min():.3g}). {chosen}.")
    return Finding("networks_matter", text, "info", details), mattered


def _recurrence(recurrence, threshold_fraction=0.5) -> tuple[Finding | None, bool | None]:
    if recurrence is None:
        return None, None
    if not isinstance(recurrence, (Mapping,)) and not hasattr(recurrence, "data_vars"):
        recurrence = getattr(recurrence, "result_", recurrence)
    rec = np.asarray(recurrence["recurrence"].values, dtype=float)
    n_runs = int(recurrence.attrs.get("n_runs", recurrence.sizes.get("run", 0)))
    reference = int(recurrence.attrs.get("reference", 0))
    cutoff = float(recurrence.attrs.get("cutoff", 0.5))
    match = np.abs(np.asarray(recurrence["match_r"].values, dtype=float))
    others = np.arange(match.shape[0]) != reference
    mean_r = float(np.nanmean(match[others]))
    every, half = int((rec >= 1).sum()), int((rec >= threshold_fraction).sum())
    recurred = half > rec.size / 2
    text = (f"The networks {'recurred' if recurred else 'mostly did not recur'}: {every} of "
            f"{rec.size} networks of run {reference} came back in every other run "
            f"({n_runs - 1} run(s) on disjoint tokens, matched |r| ≥ {cutoff:g}), {half} in at "
            f"least half of them; mean matched |r| {mean_r:.2f}.")
    return Finding("recurrence", text), recurred


def _as_set(value) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, Iterable):
        return {str(v) for v in value}
    raise TypeError(f"Expected a criterion name or a list of them, got {type(value).__name__}.")


def _check_expectations(expectations, winners, metric, dataset, mattered, recurred):
    source = expectations.get("source", "the expectation given")
    findings = []
    if "best_criterion" in expectations and winners:
        expected = _as_set(expectations["best_criterion"])
        lost = {s: (w[0], w[1]) for s, w in winners.items()
                if w[1]["criterion"].iloc[0] not in expected}
        names = " or ".join(sorted(expected))
        if not lost:
            findings.append(Finding("expectation", f"As {source} report, {names} pruned best at "
                                    "every sparsity tested.", "agrees"))
        else:
            parts = []
            for s, (best, group) in lost.items():
                mine = group.index[group["criterion"].isin(expected)]
                if len(mine):
                    row = group.loc[mine[0]]
                    parts.append(f"at {format_number(s, 'percent')}, {row['label']} ranked "
                                 f"{mine[0] + 1} of {len(group)} ({metric} "
                                 f"{_fmt(row['mean'], metric)} vs "
                                 f"{_fmt(group['mean'].iloc[0], metric)} for {best})")
                else:
                    parts.append(f"at {format_number(s, 'percent')}, {names} was not evaluated")
            findings.append(Finding(
                "expectation", f"This contradicts {source}, by which {names} prunes best: "
                + "; ".join(parts) + f" ({dataset}).", "contradicts"))
    for criterion, others in (expectations.get("beats") or {}).items():
        losses = []
        for s, (_, group) in winners.items():
            values = dict(zip(group["criterion"], group["mean"]))  # the first of each criterion
            if criterion not in values:
                continue
            for other in _as_set(others):
                if other in values and not (values[criterion] > values[other]
                                            if higher_is_better(metric)
                                            else values[criterion] < values[other]):
                    losses.append(f"{other} at {format_number(s, 'percent')}")
        if losses:
            findings.append(Finding("expectation", f"This contradicts {source}, by which "
                                    f"{criterion} beats {', '.join(sorted(_as_set(others)))}: "
                                    f"it did not beat {', '.join(losses)}.", "contradicts"))
        else:
            findings.append(Finding("expectation", f"As {source} report, {criterion} beat "
                                    f"{', '.join(sorted(_as_set(others)))} at every sparsity.",
                                    "agrees"))
    for key, observed, claim in (("networks_matter", mattered, "intervening on the networks "
                                  "harms the model more than on random neurons"),
                                 ("networks_recur", recurred, "the networks recur on other "
                                  "data")):
        if key not in expectations or observed is None:
            continue
        if bool(expectations[key]) == observed:
            findings.append(Finding("expectation", f"As {source} report, {claim}"
                                    + ("." if observed else " does not hold."), "agrees"))
        else:
            findings.append(Finding("expectation", f"This contradicts {source}, by which "
                                    f"{claim}" + (": here it did not." if not observed
                                                  else ": here it did."), "contradicts"))
    return findings


def interpret(results, *, recurrence=None, expectations=None, metric=None, dataset=None,
              n_networks=None, min_controls: int = 10) -> KeyResult:
    """State the key result of a run plainly, from its numbers.

    Parameters
    ----------
    results : pandas.DataFrame
        A results table (:mod:`llmbrain.evaluation.results`) with the pruned
        models (and the dense one) and, optionally, interventions against
        random controls.
    recurrence : xarray.Dataset or NetworkRecurrence, optional
        The comparison of runs (:func:`llmbrain.networks.compare_runs`, or a
        fitted :class:`~llmbrain.NetworkRecurrence`).
    expectations : dict, optional
        What the results are expected to show, e.g.
        :data:`PUBLISHED_CLAIMS`: ``best_criterion`` (a name or names),
        ``beats`` (criterion -> criteria it should beat at every sparsity),
        ``networks_matter`` and ``networks_recur`` (bool), and ``source``
        (who expects it, named in the text).
    metric, dataset : str, optional
        What decides the winner (default perplexity, on the data set with
        most rows).
    n_networks : int, optional
        Networks found, to say how many of them were tested.
    min_controls : int, default=10
        Random controls needed per target before it is judged against them:
        a target matters when it lies beyond the 95% prediction interval of
        its controls on the harmful side (the permutation p-value is given
        too; see :func:`compare_to_controls`).

    Returns
    -------
    KeyResult

    Examples
    --------
    >>> from llmbrain.evaluation.results import results_table
    >>> from llmbrain.report import interpret
    >>> results = results_table(
    ...     [{"criterion": "dense", "value": 56.1},
    ...      {"criterion": "flap", "sparsity": 0.3, "value": 129.6},
    ...      {"criterion": "networks", "sparsity": 0.3, "value": 1216.0}],
    ...     model="SmolLM2", dataset="wikitext2", metric="perplexity")
    >>> key = interpret(results, expectations={"best_criterion": "networks",
    ...                                        "source": "the paper"})
    >>> print(key.findings[0].text)  # doctest: +NORMALIZE_WHITESPACE
    At 30% sparsity, flap gave the lowest wikitext2 perplexity: 129.6, 89.3% below networks
    (1,216); one measurement each, so no spread to judge the difference by.
    >>> key.contradictions[0].text.startswith("This contradicts the paper")
    True
    """
    table = results_table(results)
    findings = []
    metric, dataset, rows = _pick(table, metric, dataset)
    winners = {}
    if len(rows):
        winner, winners = _winners(summarize_seeds(rows), metric, dataset)
        if winner is not None:
            findings.append(winner)
    matter, mattered = _networks_matter(table, min_controls, n_networks)
    if matter is not None:
        findings.append(matter)
    recur, recurred = _recurrence(recurrence)
    if recur is not None:
        findings.append(recur)
    if expectations:
        findings += _check_expectations(dict(expectations), winners, metric, dataset, mattered,
                                        recurred)
    if not findings:
        findings.append(Finding("winner", "The results hold no pruned model and no intervention "
                                "to interpret.", "inconclusive"))
    return KeyResult(findings)
