"""Pruning plans: which MLP neurons each layer keeps.

A :class:`PruningPlan` is built from importance scores by :func:`make_plan`,
saved as JSON, checked against a model, and applied by
:func:`~llmbrain.pruning.prune_model`.

Allocation of the removals over layers
--------------------------------------
``"uniform"``
    Every prunable layer removes the same fraction ``sparsity`` of its
    neurons, those with the lowest scores.
``"global"``
    The raw scores of all prunable layers are ranked together and the
    lowest ``sparsity`` fraction of all their neurons is removed, wherever it
    lies. Only meaningful when scores are comparable across layers.
``"adaptive"``
    FLAP's adaptive structure search (arXiv 2312.11983): the scores of each
    layer are standardised (minus the layer's mean, divided by its standard
    deviation) and then ranked globally. A layer whose scores are spread
    with a long low tail gives up more neurons than a layer whose scores are
    concentrated, so per-layer sparsity follows each layer's own structure
    while scale differences between layers are removed.

In every mode ``sparsity`` is the fraction of all the scored neurons that is
removed; protected layers keep every neuron and count in that budget, so two
plans of the same sparsity leave models of the same size. Each layer keeps at
least ``min_keep`` neurons.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr
from torch import nn

from .._atomic import atomic_write
from ..models.adapters import get_adapter

__all__ = ["ALLOCATIONS", "PruningPlan", "make_plan"]

#: Names accepted by :func:`make_plan`'s ``allocation``.
ALLOCATIONS = ("uniform", "global", "adaptive")
_FORMAT = "llmbrain-pruning-plan/1"


@dataclass
class PruningPlan:
    """The neurons each MLP layer keeps.

    Parameters
    ----------
    keep : dict of int to numpy.ndarray
        Sorted neuron indices kept in each planned layer. Layers absent from
        ``keep`` are left untouched.
    n_neurons : dict of int to int
        Neuron count of each planned layer before pruning (used to check that
        the plan fits a model).
    criterion : str, optional
        Name of the importance criterion.
    sparsity : float, optional
        Target fraction of prunable neurons to remove.
    allocation : str, optional
        How removals were spread over layers.
    metadata : dict
        Anything else worth keeping (JSON-serialisable).
    """

    keep: dict[int, np.ndarray]
    n_neurons: dict[int, int]
    criterion: str | None = None
    sparsity: float | None = None
    allocation: str | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        self.keep = {int(k): np.asarray(v, dtype=np.int64) for k, v in self.keep.items()}
        self.n_neurons = {int(k): int(v) for k, v in self.n_neurons.items()}
        if set(self.keep) != set(self.n_neurons):
            raise ValueError("keep and n_neurons must name the same layers.")
        for layer, idx in self.keep.items():
            if idx.ndim != 1:
                raise ValueError(f"keep[{layer}] must be a 1-D array of neuron indices.")
            if idx.size and (np.any(np.diff(idx) <= 0)):
                raise ValueError(f"keep[{layer}] must be sorted and without repeats.")

    @property
    def layers(self) -> list[int]:
        """Planned layers, in order."""
        return sorted(self.keep)

    def n_kept(self) -> dict[int, int]:
        """Number of neurons kept per planned layer."""
        return {layer: int(self.keep[layer].size) for layer in self.layers}

    def removed(self, layer: int) -> np.ndarray:
        """Sorted indices of the neurons removed from ``layer``."""
        return np.setdiff1d(np.arange(self.n_neurons[layer]), self.keep[layer])

    def removed_neurons(self) -> dict[int, np.ndarray]:
        """``{layer: removed indices}``: a neuron set for
        :func:`llmbrain.interventions.ablate`."""
        return {layer: self.removed(layer) for layer in self.layers}

    @property
    def achieved_sparsity(self) -> float:
        """Fraction of the planned layers' neurons that the plan removes."""
        total = sum(self.n_neurons.values())
        return 1.0 - sum(self.n_kept().values()) / total if total else 0.0

    def validate(self, model: nn.Module) -> None:
        """Check that the plan fits ``model``; change nothing.

        Raises
        ------
        ValueError
            If a planned layer does not exist, has another neuron count than
            the plan was made for, keeps an index out of range, or keeps no
            neuron.
        """
        sizes = get_adapter(model).neurons_per_layer(model)
        for layer in self.layers:
            if not 0 <= layer < len(sizes):
                raise ValueError(f"The plan prunes layer {layer} but the model has layers "
                                 f"0..{len(sizes) - 1}: the plan was made for another model.")
            if sizes[layer] != self.n_neurons[layer]:
                raise ValueError(f"The plan was made for {self.n_neurons[layer]} neurons in layer "
                                 f"{layer} but the model has {sizes[layer]} there (another model,"
                                 " or a model already pruned).")
            idx = self.keep[layer]
            if idx.size == 0:
                raise ValueError(f"The plan keeps no neuron in layer {layer}; a layer must keep "
                                 "at least one (use min_keep).")
            if idx[0] < 0 or idx[-1] >= sizes[layer]:
                raise ValueError(f"The plan keeps neuron indices outside 0..{sizes[layer] - 1} "
                                 f"in layer {layer}.")

    # -- persistence --------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-serialisable dict."""
        return {"format": _FORMAT, "criterion": self.criterion, "sparsity": self.sparsity,
                "allocation": self.allocation, "metadata": self.metadata,
                "n_neurons": {str(k): v for k, v in sorted(self.n_neurons.items())},
                "keep": {str(k): self.keep[k].tolist() for k in self.layers}}

    @classmethod
    def from_dict(cls, data: dict) -> PruningPlan:
        """Inverse of :meth:`to_dict`."""
        if data.get("format") != _FORMAT:
            raise ValueError(f"Not a pruning plan (format {data.get('format')!r}, expected "
                             f"{_FORMAT!r}).")
        return cls(keep={int(k): v for k, v in data["keep"].items()},
                   n_neurons={int(k): v for k, v in data["n_neurons"].items()},
                   criterion=data.get("criterion"), sparsity=data.get("sparsity"),
                   allocation=data.get("allocation"), metadata=data.get("metadata") or {})

    def save(self, path: str | os.PathLike) -> Path:
        """Write the plan as JSON, atomically (temp file then rename)."""
        return atomic_write(path, json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | os.PathLike) -> PruningPlan:
        """Read a plan written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No pruning plan at {path}.")
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))


def _lowest(values: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` lowest values (stable)."""
    return np.argsort(values, kind="stable")[:count]


def _uniform_counts(total: int, sizes: dict[int, int], min_keep: int) -> dict[int, int]:
    """Removals per layer, proportional to the layers' sizes and summing to ``total``
    (largest remainders get the rounding), each layer keeping ``min_keep``."""
    room = {layer: max(n - min_keep, 0) for layer, n in sizes.items()}
    counts = {layer: 0 for layer in sizes}
    left = total
    while left > 0:
        open_layers = [layer for layer in sizes if counts[layer] < room[layer]]
        share = left / sum(sizes[layer] for layer in open_layers)
        exact = {layer: min(share * sizes[layer], room[layer] - counts[layer])
                 for layer in open_layers}
        floors = {layer: int(np.floor(value)) for layer, value in exact.items()}
        given = sum(floors.values())
        order = sorted(open_layers, key=lambda layer: floors[layer] - exact[layer])
        for layer in order[:max(0, min(left - given, len(order)))]:
            if floors[layer] < room[layer] - counts[layer]:
                floors[layer] += 1
        for layer, count in floors.items():
            counts[layer] += count
        if sum(floors.values()) == 0:
            break
        left = total - sum(counts.values())
    return counts


def _protected(layers: list[int], protect_layers, protect_first: int, protect_last: int
               ) -> set[int]:
    for name, value in (("protect_first", protect_first), ("protect_last", protect_last)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative number of layers, not {value!r}.")
    unknown = sorted(set(map(int, protect_layers)) - set(layers))
    if unknown:
        raise ValueError(f"protect_layers names layers {unknown} that have no scores "
                         f"(scored layers: {layers}).")
    ordered = sorted(layers)
    protected = set(map(int, protect_layers)) | set(ordered[:int(protect_first)])
    if protect_last:
        protected |= set(ordered[-int(protect_last):])
    return protected


def make_plan(scores: xr.DataArray, sparsity: float = 0.3, allocation: str = "uniform", *,
              protect_first: int = 0, protect_last: int = 0,
              protect_layers: Sequence[int] = (), min_keep: int = 1) -> PruningPlan:
    """Choose the neurons to keep from importance scores.

    Parameters
    ----------
    scores : xarray.DataArray
        ``(layer, neuron)`` importance (higher = keep), e.g. from
        :func:`~llmbrain.pruning.score_neurons`. NaN marks neurons that do not
        exist (padding of narrower layers) and must form a tail.
    sparsity : float, default=0.3
        Fraction of all the scored neurons to remove, in [0, 1). Protected
        layers count in this budget: they keep every neuron, so the other
        layers give up more (``sparsity * all / prunable`` on average). Plans
        with the same sparsity therefore leave models of the same size,
        whatever their options.
    allocation : {"uniform", "global", "adaptive"}, default="uniform"
        How removals are spread over layers (see the module documentation).
        With ``"global"`` a single threshold over the raw scores of all
        prunable layers decides (stored as ``metadata["threshold"]``): the
        kept set is every neuron scoring above it.
    protect_first, protect_last : int, default=0
        Keep the first / last this many scored layers whole (the published
        network-pruning recipe protects the first 3 and the last 2).
    protect_layers : sequence of int, default=()
        Further layers kept whole.
    min_keep : int, default=1
        Least number of neurons any layer keeps.

    Returns
    -------
    PruningPlan

    Raises
    ------
    ValueError
        For malformed scores (a layer without any finite score, NaN that is
        not padding), unknown options, or a sparsity the prunable layers
        cannot reach.
    """
    if not isinstance(scores, xr.DataArray) or set(scores.dims) != {"layer", "neuron"}:
        raise ValueError("scores must be an xarray.DataArray with dims ('layer', 'neuron').")
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity is the fraction of neurons to remove, in [0, 1); got "
                         f"{sparsity}.")
    if allocation not in ALLOCATIONS:
        raise ValueError(f"Unknown allocation {allocation!r}; choose one of "
                         f"{', '.join(ALLOCATIONS)}.")
    if int(min_keep) < 1:
        raise ValueError(f"min_keep must be at least 1, not {min_keep}.")
    scores = scores.transpose("layer", "neuron")
    layers = [int(layer) for layer in scores["layer"].values]
    if len(set(layers)) != len(layers):
        raise ValueError("scores name a layer more than once.")
    protected = _protected(layers, protect_layers, protect_first, protect_last)
    values, sizes = {}, {}
    for i, layer in enumerate(layers):
        row = np.asarray(scores.values[i], dtype=np.float64)
        n = int((~np.isnan(row)).sum())
        if n == 0:
            raise ValueError(f"Every score of layer {layer} is NaN: the criterion failed there "
                             "(e.g. a decomposition that did not converge). Fix the scores "
                             "rather than plan to keep nothing in that layer.")
        if not np.isnan(row[n:]).all() or np.isnan(row[:n]).any():
            raise ValueError(f"Scores of layer {layer} have NaN inside; NaN may only pad the "
                             "end of a narrower layer.")
        values[layer], sizes[layer] = row[:n], n
    prunable = [layer for layer in layers if layer not in protected]
    total = int(round(float(sparsity) * sum(sizes.values())))
    room = sum(max(sizes[layer] - int(min_keep), 0) for layer in prunable)
    if total > room:
        raise ValueError(
            f"sparsity={sparsity} removes {total} neurons but the {len(prunable)} prunable "
            f"layers can give up at most {room} (protected layers: {sorted(protected)}, "
            f"min_keep={min_keep}): lower the sparsity or protect fewer layers.")
    removed: dict[int, np.ndarray] = {layer: np.empty(0, np.int64) for layer in layers}
    metadata = {"protected_layers": sorted(protected), "min_keep": int(min_keep)}
    if allocation == "uniform" and prunable:
        for layer, count in _uniform_counts(total, {layer: sizes[layer] for layer in prunable},
                                            int(min_keep)).items():
            removed[layer] = _lowest(values[layer], count)
    elif prunable:
        pool_values, pool_layer, pool_index = [], [], []
        for layer in prunable:
            v = values[layer]
            if allocation == "adaptive":
                std = v.std()
                v = (v - v.mean()) / (std if std > 0 else 1.0)
            # only the lowest n - min_keep neurons of a layer may go
            candidates = _lowest(v, max(sizes[layer] - min_keep, 0))
            pool_values.append(v[candidates])
            pool_layer.append(np.full(candidates.size, layer))
            pool_index.append(candidates)
        pool_values = np.concatenate(pool_values)
        pool_layer = np.concatenate(pool_layer)
        pool_index = np.concatenate(pool_index)
        chosen = _lowest(pool_values, total)
        for layer in prunable:
            removed[layer] = pool_index[chosen][pool_layer[chosen] == layer]
        if chosen.size:
            metadata["threshold"] = float(pool_values[chosen].max())
    keep = {layer: np.setdiff1d(np.arange(sizes[layer]), removed[layer]) for layer in layers}
    return PruningPlan(keep=keep, n_neurons=sizes, criterion=scores.attrs.get("criterion"),
                       sparsity=float(sparsity), allocation=allocation, metadata=metadata)
