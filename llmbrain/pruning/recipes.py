"""Pruning recipes: a criterion and the plan options that turn its scores into a model.

Every criterion scores neurons; how the scores become a smaller model is the
same set of options for all of them (:class:`PlanOptions`): how removals are
spread over layers, which layers are kept whole, and how the removed
neurons' mean output is compensated. Comparisons are fair when every
criterion gets the same options; :data:`PUBLISHED` holds the options each
method was published with.

:func:`prune` is the pruning stage in one call: scores, plan, pruned model.
"""

from __future__ import annotations

import copy
import numbers
from dataclasses import asdict, dataclass, replace

import xarray as xr
from torch import nn

from .criteria import check_criterion, score_neurons
from .plan import ALLOCATIONS, PruningPlan, make_plan
from .structural import prune_model

__all__ = ["BIAS_COMPENSATIONS", "PUBLISHED", "PlanOptions", "prune"]

#: Values of :attr:`PlanOptions.bias_compensation`.
BIAS_COMPENSATIONS = ("none", "dense", "progressive")


@dataclass(frozen=True)
class PlanOptions:
    """How importance scores become a pruned model (the same for every criterion).

    Parameters
    ----------
    allocation : {"uniform", "global", "adaptive"}, default="uniform"
        How removals are spread over layers (see :func:`make_plan`).
    protect_first, protect_last : int, default=0
        Layers kept whole at the start and end of the model.
    bias_compensation : {"none", "dense", "progressive"}, default="none"
        Fold each removed neuron's mean output into the output projection's
        bias, with means of the dense model (``"dense"``, as FLAP) or measured
        layer by layer on the model being pruned (``"progressive"``); see
        :func:`prune_model`.
    min_keep : int, default=1
        Least neurons any layer keeps.
    """

    allocation: str = "uniform"
    protect_first: int = 0
    protect_last: int = 0
    bias_compensation: str = "none"
    min_keep: int = 1

    def __post_init__(self):
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"Unknown allocation {self.allocation!r}; choose one of "
                             f"{', '.join(ALLOCATIONS)}.")
        if self.bias_compensation not in BIAS_COMPENSATIONS:
            raise ValueError(f"Unknown bias_compensation {self.bias_compensation!r}; choose one "
                             f"of {', '.join(BIAS_COMPENSATIONS)}.")
        for name, least in (("protect_first", 0), ("protect_last", 0), ("min_keep", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
                    or value < least:
                raise ValueError(f"{name} must be an integer of at least {least}, not "
                                 f"{value!r}.")
            object.__setattr__(self, name, int(value))  # numpy integers from tables

    def replace(self, **changes) -> PlanOptions:
        """A copy with some options changed."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def protected(self) -> str:
        """``"first 3, last 2"``-style description of the protected layers ("" if none)."""
        parts = [f"{side} {count}" for side, count in (("first", self.protect_first),
                                                      ("last", self.protect_last)) if count]
        return ", ".join(parts)

    def describe(self) -> str:
        """One line for tables and reports."""
        parts = [f"{self.allocation} allocation"]
        if self.protected:
            parts.append(f"layers kept: {self.protected}")
        if self.bias_compensation != "none":
            parts.append(f"{self.bias_compensation} bias compensation")
        return ", ".join(parts)


#: The plan options each criterion was published with: the functional-network
#: recipe (arXiv 2508.05239: one global threshold, the first 3 and last 2 layers
#: kept, bias compensation measured on the pruned model), FLAP (arXiv
#: 2312.11983: adaptive structure search with bias compensation) and the others
#: as compared there (uniform, no compensation). ``"fisher"``, which scores the
#: removal with bias compensation, gets the recipe's kept layers and progressive
#: compensation with uniform allocation: on WikiText-2 validation (SmolLM2) a
#: global ranking was up to 6% better at 10-30% sparsity but 16% worse at 50%;
#: ``"loss-networks"``, Fisher with its interactions, gets the same.
PUBLISHED = {
    "networks": PlanOptions("global", 3, 2, "progressive"),
    "flap": PlanOptions("adaptive", 0, 0, "dense"),
    "fisher": PlanOptions("uniform", 3, 2, "progressive"),
    "loss-networks": PlanOptions("uniform", 3, 2, "progressive"),
    "wanda-sp": PlanOptions("uniform"),
    "contextual": PlanOptions("uniform"),
    "magnitude": PlanOptions("uniform"),
    "random": PlanOptions("uniform"),
}


def prune(model: nn.Module, criterion: str, sparsity: float, *,
          options: PlanOptions | None = None, calibration: xr.Dataset | None = None,
          calibration_windows=None, networks=None, scores: xr.DataArray | None = None,
          seed: int | None = 0, inplace: bool = False, progress: bool = False
          ) -> tuple[nn.Module, PruningPlan]:
    """Score, plan and prune in one call.

    Parameters
    ----------
    model : transformers.PreTrainedModel
    criterion : str
        A name of :data:`~llmbrain.pruning.CRITERIA`.
    sparsity : float
        Fraction of the MLP neurons to remove.
    options : PlanOptions, optional
        Default: the criterion's published options (:data:`PUBLISHED`).
    calibration : xarray.Dataset, optional
        Calibration statistics (:func:`collect_calibration_stats`), needed by
        the activation-based criteria and by ``bias_compensation="dense"``.
    calibration_windows : TokenWindows or 2-D integer array, optional
        Calibration text for ``bias_compensation="progressive"``.
    networks : optional
        Fitted networks for the ``"networks"`` criterion.
    scores : xarray.DataArray, optional
        Scores already computed for ``criterion`` (skips scoring).
    seed : int, optional
        Seed of the ``"random"`` criterion.
    inplace : bool, default=False
        Prune ``model`` itself instead of a copy.
    progress : bool, default=False

    Returns
    -------
    model : transformers.PreTrainedModel
        The pruned model (a copy unless ``inplace``).
    plan : PruningPlan
        With the options in its metadata.
    """
    check_criterion(criterion)
    options = PUBLISHED.get(criterion, PlanOptions()) if options is None else options
    if options.bias_compensation == "dense" and not isinstance(calibration, xr.Dataset):
        raise ValueError("bias_compensation='dense' needs calibration statistics: "
                         "calibration=collect_calibration_stats(model, tokenizer, corpus).")
    if options.bias_compensation == "progressive" and calibration_windows is None:
        raise ValueError("bias_compensation='progressive' needs calibration_windows= (e.g. "
                         "tokenize_windows(texts, tokenizer, 256)).")
    if scores is None:
        scores = score_neurons(model, criterion, calibration=calibration, networks=networks,
                               seed=seed)
    plan = make_plan(scores, sparsity, options.allocation, protect_first=options.protect_first,
                     protect_last=options.protect_last, min_keep=options.min_keep)
    plan.metadata["options"] = options.to_dict()
    target = model if inplace else copy.deepcopy(model)
    bias = {"none": None, "dense": calibration, "progressive": "progressive"}[
        options.bias_compensation]
    prune_model(target, plan, bias, calibration=calibration_windows, progress=progress)
    return target, plan
