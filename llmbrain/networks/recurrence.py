"""Do the networks recur? Fit on disjoint token sets and match the maps.

Components of two runs are paired with the Hungarian algorithm on the
absolute spatial correlation of their maps (only within the same unit: same
layer or window, over all its voxels, those of every hook point included). A network *recurs* in a run when its matched ``|r|``
reaches a cutoff. Key neurons are combined over runs by union (what pruning
keeps) and by majority vote.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import xarray as xr
from scipy.optimize import linear_sum_assignment
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from ._estimator import ActivationsEstimatorMixin
from .decomposition import FunctionalNetworks

__all__ = ["NetworkRecurrence", "compare_runs", "match_components"]


def _as_dataset(run) -> xr.Dataset:
    if isinstance(run, FunctionalNetworks):
        return run.to_dataset()
    if isinstance(run, xr.Dataset) and {"maps_z", "network_masks", "key_neurons"} <= set(run):
        return run
    raise TypeError("Each run must be a fitted FunctionalNetworks or its to_dataset() result, got "
                    f"{type(run).__name__}.")


def _correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    na = np.linalg.norm(a, axis=1, keepdims=True)
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    na[na == 0] = 1
    nb[nb == 0] = 1
    return (a / na) @ (b / nb).T


def match_components(maps_a: xr.DataArray, maps_b: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    """Pair the components of ``maps_b`` with those of ``maps_a``.

    Parameters
    ----------
    maps_a, maps_b : xarray.DataArray (component, [hook,] layer, neuron)
        Maps with the same hook points, layers and neurons; when both have a
        ``unit`` coordinate, components are only paired within the same unit
        and the correlation is computed over the voxels of the layers of that
        unit.

    Returns
    -------
    match : ndarray of int, shape (n_components_a,)
        ``match[i]`` is the component of ``maps_b`` paired with component ``i``
        of ``maps_a`` (-1 when ``maps_b`` has fewer components in that unit).
    r : ndarray of float, shape (n_components_a,)
        Signed spatial correlation of each pair (nan when unpaired).
    """
    if maps_a.dims != maps_b.dims or maps_a.shape[1:] != maps_b.shape[1:]:
        raise ValueError(f"The maps cover different voxels: {dict(maps_a.sizes)} vs "
                         f"{dict(maps_b.sizes)}.")
    units_a = maps_a["unit"].values if "unit" in maps_a.coords else np.zeros(len(maps_a), int)
    units_b = maps_b["unit"].values if "unit" in maps_b.coords else np.zeros(len(maps_b), int)
    # (component, hook points, layer, neuron), one hook point for maps without a hook dim
    order = [maps_a.dims[0], *(d for d in maps_a.dims[1:] if d not in ("layer", "neuron")),
             "layer", "neuron"]
    a_all, b_all = (m.transpose(*order).values for m in (maps_a, maps_b))
    a_all, b_all = (v.reshape(len(v), -1, *v.shape[-2:]) for v in (a_all, b_all))
    match = np.full(len(a_all), -1)
    r_out = np.full(len(a_all), np.nan)
    for unit in np.unique(units_a):
        ia, ib = np.flatnonzero(units_a == unit), np.flatnonzero(units_b == unit)
        if ib.size == 0:
            continue
        # the unit's layers: where any of its maps is nonzero
        layers = (np.abs(a_all[ia]).sum(axis=(0, 1, 3)) > 0) | (
            np.abs(b_all[ib]).sum(axis=(0, 1, 3)) > 0)
        a = a_all[ia][:, :, layers].reshape(ia.size, -1)
        b = b_all[ib][:, :, layers].reshape(ib.size, -1)
        r = _correlation(a, b)
        rows, cols = linear_sum_assignment(-np.abs(r))
        match[ia[rows]] = ib[cols]
        r_out[ia[rows]] = r[rows, cols]
    return match, r_out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else np.nan


def compare_runs(runs, reference: int = 0, cutoff: float = 0.5) -> xr.Dataset:
    """Match networks across runs and measure how often they recur.

    Parameters
    ----------
    runs : list of FunctionalNetworks or Dataset
        Fitted on disjoint tokens, with the same hook points, layers, neurons
        and units.
    reference : int
        Run whose networks are the rows of the result.
    cutoff : float
        A network recurs in a run when its matched ``|r| >= cutoff``.

    Returns
    -------
    xarray.Dataset
        ``match`` and ``match_r`` (run, component): matched component and its
        signed correlation; ``recurrence`` (component): fraction of the other
        runs where the network recurs; ``mask_iou`` (component): mean IoU of its
        key-neuron mask with the matched masks; ``consensus`` (component,
        [hook,] layer, neuron): mean of the sign-aligned matched z-maps over
        runs where it recurs (the reference included); ``key_neurons_union``,
        ``key_neurons_majority`` (layer, neuron) and ``key_neurons_votes``
        (number of runs where a neuron is key).
    """
    datasets = [_as_dataset(run) for run in runs]
    if len(datasets) < 2:
        raise ValueError(f"Need at least 2 runs to compare, got {len(datasets)}.")
    if not 0 <= reference < len(datasets):
        raise ValueError(f"reference={reference} is not a run index (0..{len(datasets) - 1}).")
    if not 0 < cutoff <= 1:
        raise ValueError(f"cutoff must be in (0, 1], got {cutoff}.")
    ref = datasets[reference]
    for i, ds in enumerate(datasets):
        hooks = [d["hook"].values.tolist() if "hook" in d["maps_z"].dims else None
                 for d in (ds, ref)]
        if (ds.sizes["layer"], ds.sizes["neuron"]) != (ref.sizes["layer"], ref.sizes["neuron"]) \
                or not np.array_equal(ds["layer"].values, ref["layer"].values) \
                or hooks[0] != hooks[1]:
            raise ValueError(f"Run {i} covers other layers/neurons/hook points than run "
                             f"{reference}: compare runs fitted with the same layers, hook "
                             "points and scope.")
    n_runs, k = len(datasets), ref.sizes["component"]
    match = np.zeros((n_runs, k), dtype=int)
    match_r = np.zeros((n_runs, k))
    iou = np.full((n_runs, k), np.nan)
    consensus = np.zeros(ref["maps_z"].shape)
    n_in = np.zeros(k)
    ref_masks = ref["network_masks"].values.astype(bool)
    for i, ds in enumerate(datasets):
        m, r = match_components(ref["maps_z"], ds["maps_z"])
        match[i], match_r[i] = m, r
        maps, masks = ds["maps_z"].values, ds["network_masks"].values.astype(bool)
        for c in range(k):
            if m[c] < 0:
                continue
            if i != reference:
                iou[i, c] = _iou(ref_masks[c], masks[m[c]])
            if abs(r[c]) >= cutoff:
                consensus[c] += np.sign(r[c]) * maps[m[c]]
                n_in[c] += 1
    consensus /= np.maximum(n_in, 1).reshape(-1, *[1] * (consensus.ndim - 1))
    others = np.arange(n_runs) != reference
    recurs = np.abs(np.nan_to_num(match_r[others])) >= cutoff
    votes = sum(ds["key_neurons"].values.astype(int) for ds in datasets)
    dims = ref["maps_z"].dims
    coords = {"run": np.arange(n_runs), "component": ref["component"].values,
              "layer": ref["layer"].values, "neuron": ref["neuron"].values}
    if "hook" in dims:
        coords["hook"] = ref["hook"].values
    if "unit" in ref.coords:
        coords["unit"] = ("component", ref["unit"].values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan columns: no mask to compare
        mean_iou = np.nanmean(iou[others], axis=0)
    return xr.Dataset(
        {"match": (("run", "component"), match),
         "match_r": (("run", "component"), match_r.astype(np.float32)),
         "recurrence": ("component", recurs.mean(axis=0).astype(np.float32)),
         "mask_iou": ("component", mean_iou.astype(np.float32)),
         "consensus": (dims, consensus.astype(np.float32)),
         "key_neurons_votes": (("layer", "neuron"), votes.astype(np.int32)),
         "key_neurons_union": (("layer", "neuron"), votes > 0),
         "key_neurons_majority": (("layer", "neuron"), votes > n_runs / 2)},
        coords=coords, attrs={"reference": reference, "cutoff": float(cutoff), "n_runs": n_runs})


def split_tokens(n_tokens: int, n_runs: int, documents: np.ndarray | None = None) -> list[slice]:
    """``n_runs`` disjoint contiguous token blocks, cut between documents when possible."""
    if n_runs < 1 or n_runs > n_tokens:
        raise ValueError(f"n_runs must be between 1 and the number of tokens ({n_tokens}), "
                         f"got {n_runs}.")
    edges = [round(i * n_tokens / n_runs) for i in range(n_runs + 1)]
    if documents is not None and len(documents) == n_tokens:
        starts = np.flatnonzero(np.r_[True, documents[1:] != documents[:-1]])
        if len(starts) >= n_runs:
            for i in range(1, n_runs):
                edges[i] = int(starts[np.argmin(np.abs(starts - edges[i]))])
            if len(set(edges)) != len(edges) or edges != sorted(edges):
                edges = [round(i * n_tokens / n_runs) for i in range(n_runs + 1)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


class NetworkRecurrence(MetaEstimatorMixin, ActivationsEstimatorMixin, BaseEstimator):
    """Fit networks on ``n_runs`` disjoint token blocks and compare them.

    A scikit-learn meta-estimator: the networks of each run are found by a
    clone of ``estimator``, whose parameters are reached as
    ``estimator__<name>`` (``get_params(deep=True)``, ``set_params``).

    Parameters
    ----------
    estimator : FunctionalNetworks, optional
        The (unfitted) estimator of each run; ``FunctionalNetworks()`` by
        default. Its ``layers``, ``mask_img`` and ``layout`` select and read
        the data once, before the tokens are split into runs.
    n_runs : int, default=4
        Disjoint blocks of consecutive tokens (cut between documents).
    cutoff : float, default=0.5
        Matched ``|r|`` above which a network recurs.
    reference : int, default=0
        Run whose networks index the result.
    verbose : int, default=1
        0: silent; 1 and more: a progress bar over runs (each run shows its
        own according to ``estimator.verbose``).

    Attributes
    ----------
    runs_ : list of FunctionalNetworks
        The fitted clone of ``estimator`` of each run.
    result_ : xarray.Dataset
        See :func:`compare_runs`.
    key_neurons_union_, key_neurons_majority_ : xarray.DataArray of bool (layer, neuron)
    recurrence_ : xarray.DataArray (component)

    Examples
    --------
    >>> rec = NetworkRecurrence(FunctionalNetworks(n_components=20, scope="all"),
    ...                         n_runs=4).fit("activations.zarr")  # doctest: +SKIP
    >>> rec.set_params(estimator__n_components=10)                # doctest: +SKIP
    """

    _fitted_attribute = "result_"

    def __init__(self, estimator=None, *, n_runs=4, cutoff=0.5, reference=0, verbose=1):
        self.estimator = estimator
        self.n_runs = n_runs
        self.cutoff = cutoff
        self.reference = reference
        self.verbose = verbose

    def _check_params(self) -> FunctionalNetworks:
        estimator = FunctionalNetworks() if self.estimator is None else self.estimator
        if not isinstance(estimator, FunctionalNetworks):
            raise TypeError("estimator must be a FunctionalNetworks (or None for the default "
                            f"one), got {type(estimator).__name__}.")
        if isinstance(self.n_runs, bool) or not isinstance(self.n_runs, numbers.Integral) \
                or self.n_runs < 2:
            raise ValueError(f"n_runs must be an integer of at least 2, got {self.n_runs!r}.")
        if not isinstance(self.cutoff, numbers.Real) or not 0 < self.cutoff <= 1:
            raise ValueError(f"cutoff must be in (0, 1], got {self.cutoff!r}.")
        if not isinstance(self.reference, numbers.Integral) \
                or not 0 <= self.reference < self.n_runs:
            raise ValueError(f"reference={self.reference!r} is not a run index "
                             f"(0..{self.n_runs - 1}).")
        estimator._check_params()
        return estimator

    def fit(self, X, y=None) -> NetworkRecurrence:
        """Fit one clone of ``estimator`` per token block of ``X`` and compare them.

        Parameters
        ----------
        X : same kinds as :meth:`FunctionalNetworks.fit`
        y : None
            Ignored.

        Returns
        -------
        self
        """
        estimator = self._check_params()
        source = estimator._fit_source(X)
        documents = (np.asarray(source.data["document"].values)
                     if "document" in source.data.coords else None)
        blocks = split_tokens(source.n_tokens, self.n_runs, documents)
        runs = []
        for block in tqdm(blocks, desc="runs", unit="run", disable=not self.verbose):
            runs.append(clone(estimator).fit(source.isel_tokens(block)))
        return self._set_runs(runs)

    @classmethod
    def from_runs(cls, runs, *, cutoff=0.5, reference=0) -> NetworkRecurrence:
        """Compare runs fitted elsewhere, as :meth:`fit` compares its own.

        Parameters
        ----------
        runs : list of FunctionalNetworks
            Fitted on disjoint tokens with the same parameters (e.g. the runs
            of :class:`~llmbrain.networks.OnlineNetworks`).
        cutoff, reference
            As the parameters of the same names.

        Returns
        -------
        NetworkRecurrence
            Fitted, with ``estimator`` an unfitted clone of the first run.
        """
        if not runs or not all(isinstance(run, FunctionalNetworks) for run in runs):
            raise TypeError("runs must be a list of fitted FunctionalNetworks.")
        for run in runs:
            check_is_fitted(run)
        recurrence = cls(clone(runs[0]), n_runs=len(runs), cutoff=cutoff, reference=reference)
        recurrence._check_params()
        return recurrence._set_runs(list(runs))

    def _set_runs(self, runs) -> NetworkRecurrence:
        self.runs_ = runs
        self.result_ = compare_runs(runs, reference=self.reference, cutoff=self.cutoff)
        self.key_neurons_union_ = self.result_["key_neurons_union"]
        self.key_neurons_majority_ = self.result_["key_neurons_majority"]
        self.recurrence_ = self.result_["recurrence"]
        return self

    def summary(self) -> str:
        """Short text: recurrence and key neurons kept by union and majority."""
        check_is_fitted(self)
        res = self.result_
        rec = res["recurrence"].values
        others = np.arange(res.sizes["run"]) != self.reference
        return (f"{res.sizes['run']} runs, {rec.size} networks of run {self.reference}: "
                f"{int((rec >= 0.5).sum())} recur in at least half of the other runs "
                f"(|r| >= {self.cutoff}); mean matched |r| "
                f"{np.nanmean(np.abs(res['match_r'].values[others])):.3f}; "
                f"mean mask IoU {np.nanmean(res['mask_iou'].values):.3f}\n"
                f"key neurons: union {int(res['key_neurons_union'].sum())}, majority "
                f"{int(res['key_neurons_majority'].sum())}")
