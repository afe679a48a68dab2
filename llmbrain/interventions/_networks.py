"""The interventions stage: each network ablated or amplified, against matched random controls.

Networks come from :class:`~llmbrain.FunctionalNetworks` (one run) or
:class:`~llmbrain.NetworkRecurrence` (its reference run). For every chosen
network and intervention the held-out perplexity is measured with the
network's key neurons changed, and with ``n_controls`` random sets of the same
number of neurons in every layer (drawn outside the network). The rows go into
the tidy results table (:mod:`llmbrain.evaluation.results`), which
:func:`summarize_interventions`, :func:`llmbrain.report.interpret` and
:func:`llmbrain.plotting.plot_intervention_effects` read.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import pandas as pd
import xarray as xr
from tqdm.auto import tqdm

from ..evaluation.perplexity import perplexity
from ..evaluation.results import KEY_COLUMNS, against_controls, results_table
from ..models.adapters import get_adapter
from ..models.neurons import neuron_indices
from ._hooks import ablate, amplify, matched_random

__all__ = ["intervene_on_networks", "largest_networks", "summarize_interventions"]

#: Interventions :func:`intervene_on_networks` applies.
MODES = ("ablate", "amplify")


def _network_masks(networks) -> xr.DataArray:
    """Boolean (component, layer, neuron) masks of ``networks`` in any accepted form."""
    if hasattr(networks, "fit") and not isinstance(networks, (xr.DataArray, xr.Dataset)):
        runs = getattr(networks, "runs_", None)
        if runs is not None:  # NetworkRecurrence: its reference run
            networks = runs[int(getattr(networks, "reference", 0))]
        if not hasattr(networks, "network_masks_"):
            raise ValueError(f"The {type(networks).__name__} is not fitted: call fit first, or "
                             "load fitted networks with llmbrain.load_networks.")
        masks = networks.network_masks_
    elif isinstance(networks, xr.Dataset):
        if "network_masks" not in networks:
            raise ValueError("The Dataset holds no 'network_masks' (component, layer, neuron); "
                             f"it has {sorted(networks.data_vars)}. Give the fitted networks "
                             "(llmbrain.load_networks of a networks folder).")
        masks = networks["network_masks"]
    else:
        masks = networks
    if not isinstance(masks, xr.DataArray):
        raise TypeError("networks must be fitted FunctionalNetworks or NetworkRecurrence, or a "
                        "boolean DataArray (component, layer, neuron); got "
                        f"{type(networks).__name__}.")
    if set(masks.dims) == {"layer", "neuron"}:
        masks = masks.expand_dims(component=[0])
    if set(masks.dims) != {"component", "layer", "neuron"}:
        raise ValueError(f"Network masks need dims (component, layer, neuron); got {masks.dims}.")
    if masks.dtype != bool:
        raise ValueError(f"Network masks must be boolean (|z| > threshold), not {masks.dtype}.")
    if "component" not in masks.coords:
        masks = masks.assign_coords(component=np.arange(masks.sizes["component"]))
    return masks.transpose("component", "layer", "neuron")


def _sizes(masks: xr.DataArray) -> dict[int, int]:
    """Key neurons of each network, by network number."""
    counts = masks.sum(("layer", "neuron")).values.tolist()
    return {int(c): int(n) for c, n in zip(masks["component"].values, counts)}


def largest_networks(networks, n: int) -> list[int]:
    """The ``n`` networks with the most key neurons (those with none left out), largest first.

    Parameters
    ----------
    networks
        As :func:`intervene_on_networks` takes them.
    n : int

    Returns
    -------
    list of int
        Network numbers, for ``intervene_on_networks(components=...)``.
    """
    n = _check_int("n", n, 1)
    sizes = _sizes(_network_masks(networks))
    order = sorted(sizes, key=lambda c: (sizes[c], c), reverse=True)
    return [c for c in order[:n] if sizes[c] > 0]


def _chosen(masks: xr.DataArray, components) -> list[int]:
    sizes = _sizes(masks)
    available = list(sizes)
    if components is None:
        empty = [c for c in available if sizes[c] == 0]
        if empty:
            warnings.warn(f"Network(s) {empty} have no key neuron and are left out.",
                          stacklevel=3)
        chosen = [c for c in available if sizes[c] > 0]
        if not chosen:
            raise ValueError("No network has a key neuron: nothing to intervene on. Lower the "
                             "threshold of the networks.")
        return chosen
    if isinstance(components, numbers.Integral):
        components = [components]
    chosen = []
    for c in components:
        if not isinstance(c, numbers.Integral) or isinstance(c, bool):
            raise TypeError(f"components must be network numbers (integers); got {c!r}.")
        if int(c) not in sizes:
            raise ValueError(f"There is no network {c}: the networks are numbered "
                             f"{available[0]}..{available[-1]}.")
        if sizes[int(c)] == 0:
            raise ValueError(f"Network {c} has no key neuron: there is nothing to intervene on.")
        if int(c) not in chosen:
            chosen.append(int(c))
    if not chosen:
        raise ValueError("components selects no network; give network numbers or None (all).")
    return chosen


def _check_int(name: str, value, least: int, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < least:
        raise ValueError(f"{name} must be an integer of at least {least}, got {value!r}.")
    return int(value)


def _control_seeds(random_state, n: int) -> list[int]:
    """``n`` distinct seeds, one per control, drawn from ``random_state``."""
    from sklearn.utils import check_random_state

    rng = check_random_state(random_state)
    seeds: list[int] = []
    while len(seeds) < n:
        for seed in rng.randint(0, 2**31 - 1, size=n - len(seeds)).tolist():
            if seed not in seeds:
                seeds.append(seed)
    return seeds


def _shorten(text: str, tokenizer, n_tokens: int) -> str:
    """The start of ``text`` that tokenises to the same first ``n_tokens`` tokens, so that
    each measurement does not tokenise a long text again (``text`` when that is not sure)."""
    saved, tokenizer.model_max_length = tokenizer.model_max_length, int(1e30)  # no warning
    try:
        full = tokenizer(text, return_offsets_mapping=True)
        ids, offsets = full["input_ids"], full["offset_mapping"]
        cut = n_tokens + 64  # a margin: the tokens at a cut may merge differently
        if len(ids) <= cut:
            return text
        short = text[:offsets[cut][1]]
        same = tokenizer(short)["input_ids"][:n_tokens] == ids[:n_tokens]
    except (NotImplementedError, ValueError, TypeError, KeyError):
        return text  # a slow tokenizer has no offsets
    finally:
        tokenizer.model_max_length = saved
    return short if same else text


def intervene_on_networks(model, tokenizer, networks, text: str, *, components=None,
                          n_controls: int = 10, modes=MODES, scale: float = 3.0,
                          window: int = 128, max_windows: int | None = 32, batch_size: int = 8,
                          random_state=0, model_name: str | None = None,
                          dataset: str = "held-out", progress: bool = True) -> pd.DataFrame:
    """Perplexity with each network ablated or amplified, and with matched random neurons.

    For every chosen network and every intervention in ``modes`` the
    perplexity of ``text`` is measured with the network's key neurons changed
    (``condition="network"``) and with ``n_controls`` random sets of neurons
    of the same count in every layer, drawn among the neurons outside the
    network (``condition="random"``, each with its own seed), plus once for
    the unmodified model. The model is unchanged afterwards.

    Parameters
    ----------
    model : transformers.PreTrainedModel
    tokenizer : transformers.PreTrainedTokenizerBase
    networks : FunctionalNetworks, NetworkRecurrence or xarray.DataArray
        Fitted networks (of a :class:`~llmbrain.NetworkRecurrence`, those of
        its reference run), e.g. from :func:`llmbrain.load_networks`; or
        boolean masks with dims ``(component, layer, neuron)``.
    text : str
        Held-out text: text the networks were not fitted on.
    components : int or list of int, optional
        Networks to test (numbered from 0); default all that have key neurons.
    n_controls : int, default=10
        Random controls per network and intervention; 10 or more are needed
        for :func:`summarize_interventions` and :func:`llmbrain.report.interpret`
        to judge a network (the smallest permutation p-value is
        ``1 / (n_controls + 1)``).
    modes : sequence of {"ablate", "amplify"}, default=("ablate", "amplify")
        ``"ablate"`` sets the neurons to 0; ``"amplify"`` multiplies them by
        ``scale``.
    scale : float, default=3.0
        Factor of ``"amplify"``.
    window : int, default=128
        Tokens per perplexity window.
    max_windows : int or None, default=32
        Measure on the first ``max_windows`` windows of ``text`` (None: all).
    batch_size : int, default=8
        Windows per forward pass.
    random_state : int, RandomState or None, default=0
        Draws the seeds of the controls (the ``seed`` column; control ``k`` of a
        network is ``matched_random(mask, seed=seed_k, exclude=True)``).
    model_name : str, optional
        The ``model`` column (default: the model's ``name_or_path``).
    dataset : str, default="held-out"
        The ``dataset`` column: a name for ``text``.
    progress : bool, default=True
        Show a progress bar over the measurements.

    Returns
    -------
    pandas.DataFrame
        A results table: one row for the unmodified model (no intervention),
        and one per network x intervention x condition (the network, or
        control ``k``), with ``target`` ``"network <c>"``, metric
        ``"perplexity"``, protocol ``"window=<window>, <n> windows"`` and
        ``n`` the number of windows.

    Raises
    ------
    ValueError
        If an argument is out of range, a network does not exist or does not
        fit the model; raised before any measurement.

    See Also
    --------
    summarize_interventions : each network's change against its controls' changes.

    Examples
    --------
    >>> from llmbrain.interventions import intervene_on_networks, summarize_interventions
    >>> results = intervene_on_networks(model, tokenizer, networks, held_out_text,
    ...                                 n_controls=10)  # doctest: +SKIP
    >>> summarize_interventions(results)[["intervention", "target", "change_ratio",
    ...                                   "p_value"]]  # doctest: +SKIP
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text must be a non-empty string: the held-out text to measure "
                         "perplexity on.")
    n_controls = _check_int("n_controls", n_controls, 1)
    window = _check_int("window", window, 2)
    batch_size = _check_int("batch_size", batch_size, 1)
    max_windows = _check_int("max_windows", max_windows, 1, allow_none=True)
    modes = (modes,) if isinstance(modes, str) else tuple(modes)
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes or len(set(modes)) != len(modes):
        raise ValueError(f"modes must be distinct values of {MODES}; got {modes!r}.")
    if not isinstance(scale, numbers.Real) or not np.isfinite(scale):
        raise ValueError(f"scale must be a finite number, got {scale!r}.")
    masks = _network_masks(networks)
    chosen = _chosen(masks, components)
    get_adapter(model)  # a model llmbrain cannot hook is refused before any work
    targets = {}
    for c in chosen:
        mask = masks.sel(component=c, drop=True)
        mask = mask.drop_vars([k for k in mask.coords if k not in ("layer", "neuron")])
        neuron_indices(mask, model)  # fits the model, or a clear error now
        counts = mask.sum("neuron").values
        exclude = bool((2 * counts <= mask.sizes["neuron"]).all())
        if not exclude:
            warnings.warn(f"Network {c} holds more than half of the neurons of a layer: its "
                          "controls are drawn among all neurons, so they may overlap it.",
                          stacklevel=2)
        targets[c] = (mask, exclude)
    seeds = _control_seeds(random_state, n_controls)
    if max_windows is not None:
        text = _shorten(text, tokenizer, max_windows * window)

    def measure():
        ppl, details = perplexity(model, tokenizer, text, window=window, batch_size=batch_size,
                                  max_windows=max_windows, progress=False, return_details=True)
        return ppl, details["n_windows"]

    apply = {"ablate": lambda neurons: ablate(model, neurons),
             "amplify": lambda neurons: amplify(model, neurons, scale=scale)}
    n_total = 1 + len(targets) * len(modes) * (1 + n_controls)
    rows = []
    with tqdm(total=n_total, desc="interventions", unit="measurement",
              disable=not progress) as bar:
        baseline, n_windows = measure()
        rows.append({"value": baseline})
        bar.update()
        for c, (mask, exclude) in targets.items():
            conditions = [("network", 0, mask)] + [
                ("random", seed, matched_random(mask, seed=seed, exclude=exclude))
                for seed in seeds]
            for mode in modes:
                for condition, seed, neurons in conditions:
                    with apply[mode](neurons):
                        value, _ = measure()
                    rows.append({"intervention": mode, "target": f"network {c}",
                                 "condition": condition, "seed": seed, "value": value})
                    bar.update()
    name = model_name or str(getattr(model.config, "name_or_path", "") or "model")
    return results_table(rows, model=name, dataset=dataset, metric="perplexity",
                         protocol=f"window={window}, {n_windows} windows", n=n_windows)


_GROUP = [c for c in KEY_COLUMNS if c not in ("intervention", "target", "condition", "seed")]


def summarize_interventions(results, *, confidence: float = 0.95) -> pd.DataFrame:
    """Each network's change against the changes its matched random controls make.

    Parameters
    ----------
    results : pandas.DataFrame
        A results table with intervention rows (``condition`` ``"network"``
        and ``"random"``) and the unmodified model's row (no intervention) of
        the same model, data set, protocol and metric, as
        :func:`intervene_on_networks` returns.
    confidence : float, default=0.95
        Coverage of the controls' prediction interval.

    Returns
    -------
    pandas.DataFrame
        One row per (model, ..., intervention, target, dataset, metric):
        ``baseline`` (unmodified model), ``value`` (the network changed),
        ``change`` (``value - baseline``), ``controls_mean_change``,
        ``change_ratio`` (``change / controls_mean_change``: how many times
        the change of random neurons of the same count per layer),
        ``controls_low`` / ``controls_high`` (the ``confidence`` prediction
        interval of the change of one more control: Student's t over the
        controls, NaN with fewer than 2), ``n_controls`` and ``p_value``: the
        exact one-sided permutation p-value in the direction of harm (a
        rise of perplexity, a fall of accuracy), ``(1 + k) / (1 + n)`` where
        ``k`` of the ``n`` controls changed the metric at least as harmfully
        as the network. Under the null hypothesis that the network is one
        more random set, the network's rank among its controls is uniform,
        so ``P(p <= a) <= a`` exactly; the smallest possible value is
        ``1 / (n + 1)``. These are the prediction interval and p-value of
        :func:`llmbrain.report.compare_to_controls`, on changes.

    Raises
    ------
    ValueError
        If an intervention has no row of the unmodified model to measure its
        change from, or no random control.

    Examples
    --------
    >>> from llmbrain.evaluation.results import results_table
    >>> from llmbrain.interventions import summarize_interventions
    >>> rows = [{"value": 10.0}, {"intervention": "ablate", "target": "network 0",
    ...                           "condition": "network", "value": 14.0}]
    >>> rows += [{"intervention": "ablate", "target": "network 0", "condition": "random",
    ...           "seed": k, "value": 10.0 + k / 10} for k in range(1, 11)]
    >>> table = results_table(rows, model="m", dataset="held-out", metric="perplexity")
    >>> summary = summarize_interventions(table)
    >>> summary[["change", "controls_mean_change", "change_ratio", "p_value"]].round(3)
       change  controls_mean_change  change_ratio  p_value
    0     4.0                  0.55         7.273    0.091
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}.")
    table = results_table(results)
    plain = table[table["intervention"] == ""]
    rows = []
    for key, group in table[table["intervention"] != ""].groupby(
            _GROUP + ["intervention", "target"], sort=False, dropna=False):
        fields = dict(zip(_GROUP + ["intervention", "target"], key))
        base = plain
        for column in _GROUP:
            base = base[base[column] == fields[column]]
        if base.empty:
            raise ValueError(f"No row of the unmodified model (no intervention) for "
                             f"{fields['model']} on {fields['dataset']} ({fields['metric']}, "
                             f"{fields['protocol'] or 'no protocol'}): the change of "
                             f"{fields['intervention']} {fields['target']} cannot be measured.")
        baseline = float(base["value"].mean())
        network = group[group["condition"] == "network"]["value"].to_numpy(dtype=float)
        controls = group[group["condition"] == "random"]["value"].to_numpy(dtype=float) - baseline
        if not network.size:
            continue
        if not controls.size:
            raise ValueError(f"{fields['intervention']} {fields['target']} has no random "
                             "control (condition 'random') to compare with.")
        value = float(network.mean())
        change, mean = value - baseline, float(controls.mean())
        low, high, p_value = against_controls(change, controls, fields["metric"],
                                              confidence=confidence)
        rows.append({**fields, "baseline": baseline, "value": value, "change": change,
                     "controls_mean_change": mean,
                     "change_ratio": change / mean if mean else np.nan,
                     "controls_low": low, "controls_high": high,
                     "n_controls": int(controls.size), "p_value": p_value})
    columns = _GROUP + ["intervention", "target", "baseline", "value", "change",
                        "controls_mean_change", "change_ratio", "controls_low", "controls_high",
                        "n_controls", "p_value"]
    return pd.DataFrame(rows, columns=columns)
