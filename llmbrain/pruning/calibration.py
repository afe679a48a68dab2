"""Activation statistics of MLP neurons over a calibration corpus.

The statistics that activation-based criteria (contextual, Wanda-sp, FLAP)
and bias compensation need are four numbers per neuron: the mean, the mean
absolute value, the variance and the L2 norm of its input to the output
projection over the calibration tokens. They are returned as an
:class:`xarray.Dataset` with dims ``(layer, neuron)``:

==============  ===========================================================
variable        meaning
==============  ===========================================================
``mean``        mean input of the neuron
``mean_abs``    mean absolute input (the *contextual* criterion)
``variance``    unbiased variance over tokens (FLAP's fluctuation)
``l2_norm``     ``sqrt(sum x**2)`` over tokens (Wanda's ``||X_j||``)
==============  ===========================================================

With ``loss_sensitivity=True`` a fifth variable, ``fisher``, holds how much
the language-modelling loss depends on each neuron (the ``"fisher"``
criterion; see :mod:`llmbrain.pruning.sensitivity`), and with
``loss_networks=K`` also ``loss_networks`` and ``loss_network_strength``, the
``K`` strongest loss networks of every layer (the ``"loss-networks"``
criterion).

Attributes: ``n_tokens`` and ``model`` (the model's name). Layers narrower
than the widest (a model already pruned non-uniformly) are padded with NaN,
and the coordinate ``n_neurons`` (layer) gives every layer's width.

:func:`collect_calibration_stats` runs the model once over the corpus through
the recorder (the forward pass stops after the last measured layer; the
language-model head never runs) and streams every batch into running moments
(:class:`llmbrain._moments.RunningMoments`), so memory does not grow with the
number of tokens. :func:`calibration_stats_from_activations` reads the same
statistics from a recorded store.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import xarray as xr
from torch import nn

from .._moments import RunningMoments
from ..recording.sinks import ActivationSink

__all__ = ["STATISTICS", "calibration_stats_from_activations", "collect_calibration_stats",
           "layer_statistic"]

#: Variables of a calibration-statistics Dataset.
STATISTICS = ("mean", "mean_abs", "variance", "l2_norm")


def _as_dataset(moments: dict[int, RunningMoments], model_name: str = "") -> xr.Dataset:
    layers = sorted(moments)
    widths = [int(moments[layer].mean.numel()) for layer in layers]
    width = max(widths)
    values = {name: np.full((len(layers), width), np.nan) for name in STATISTICS}
    n_tokens = moments[layers[0]].n
    for i, layer in enumerate(layers):
        m, n = moments[layer], widths[i]
        if m.n < 2:
            raise ValueError(f"Calibration statistics need at least 2 tokens; layer {layer} "
                             f"saw {m.n}.")
        values["mean"][i, :n] = m.mean.cpu().numpy()
        values["mean_abs"][i, :n] = m.mean_abs.cpu().numpy()
        values["variance"][i, :n] = m.variance(ddof=1).cpu().numpy()
        values["l2_norm"][i, :n] = m.l2_norm.cpu().numpy()
    coords = {"layer": layers, "neuron": np.arange(width), "n_neurons": ("layer", widths)}
    return xr.Dataset({name: (("layer", "neuron"), v) for name, v in values.items()},
                      coords=coords, attrs={"n_tokens": int(n_tokens), "model": model_name})


def layer_statistic(stats: xr.Dataset, name: str, layer: int) -> np.ndarray:
    """One statistic of one layer, without the NaN padding (float64).

    Parameters
    ----------
    stats : xarray.Dataset
        Calibration statistics (see the module documentation).
    name : {"mean", "mean_abs", "variance", "l2_norm"}
    layer : int

    Returns
    -------
    numpy.ndarray of shape (n_neurons of the layer,)
    """
    if not isinstance(stats, xr.Dataset) or name not in stats:
        raise TypeError("Calibration statistics are an xarray.Dataset with the variables "
                        f"{', '.join(STATISTICS)} (from collect_calibration_stats).")
    if layer not in stats["layer"].values:
        raise ValueError(f"The calibration statistics lack layer {layer} (they hold layers "
                         f"{[int(v) for v in stats['layer'].values]}).")
    row = stats[name].sel(layer=layer)
    n = int(row["n_neurons"]) if "n_neurons" in row.coords else row.size
    return np.asarray(row.values[:n], dtype=np.float64)


class _MomentsSink(ActivationSink):
    """Stream each recorded batch into per-layer running moments."""

    def start(self, layout) -> None:
        super().start(layout)
        self.moments = {layer: RunningMoments(absolute=True) for layer in layout.layers}

    def write(self, blocks, first_window: int) -> None:
        for layer, block in zip(self.layout.layers, blocks):  # block: (hook, token, neuron)
            self.moments[layer].update(block[0])

    def finish(self) -> xr.Dataset:
        return _as_dataset(self.moments, str(self.layout.attrs.get("model", "")))


@torch.no_grad()
def collect_calibration_stats(model: nn.Module, tokenizer, corpus="default", *,
                              window: int = 256, batch_size: int = 8,
                              max_tokens: int | None = None, layers: Sequence[int] | None = None,
                              networks=None, loss_sensitivity: bool = False,
                              loss_networks: int = 0, progress: bool = True) -> xr.Dataset:
    """Statistics of every MLP neuron's input over a calibration corpus.

    Parameters
    ----------
    model : transformers.PreTrainedModel
    tokenizer : transformers.PreTrainedTokenizerBase
    corpus : str, path, list of str or TokenWindows, default="default"
        Anything :func:`llmbrain.record` accepts; it is cut into windows by
        :func:`llmbrain.corpus.tokenize_windows`.
    window : int, default=256
        Tokens per window.
    batch_size : int, default=8
        Windows per forward pass.
    max_tokens : int, optional
        Use at most this many tokens.
    layers : sequence of int, optional
        Layers to measure (default: all).
    networks : llmbrain.networks.OnlineNetworks, optional
        Also fit these online networks in the same pass: their hook points
        are recorded beside the MLP's input, and the estimator is fitted in
        place (read its ``networks_`` afterwards). One forward pass then gives
        both what the activation criteria and what the ``networks``
        criterion need.
    loss_sensitivity : bool, default=False
        Also take each neuron's Fisher score (variable ``fisher``, which the
        ``"fisher"`` criterion reads) in a second pass over the same windows
        that runs the whole model and its backward pass
        (:func:`~llmbrain.pruning.collect_loss_sensitivity`).
    loss_networks : int, default=0
        With ``loss_sensitivity``, also keep the strongest ``loss_networks``
        loss networks of every layer (variables ``loss_networks`` and
        ``loss_network_strength``, which the ``"loss-networks"`` criterion
        reads; :data:`~llmbrain.pruning.LOSS_NETWORKS` is its setting).
    progress : bool, default=True
        Show a progress bar (in tokens).

    Returns
    -------
    xarray.Dataset
        See the module documentation.

    Examples
    --------
    >>> stats = collect_calibration_stats(model, tokenizer, "c4.jsonl",   # doctest: +SKIP
    ...                                   max_tokens=16384)
    >>> stats["variance"].sel(layer=3)                                     # doctest: +SKIP
    """
    from ..corpus import TokenWindows, load_corpus, tokenize_windows
    from ..recording import SplitSink, record
    from .sensitivity import collect_loss_sensitivity

    if loss_networks and not loss_sensitivity:
        raise ValueError("loss_networks come from the gradients of the loss: pass "
                         "loss_sensitivity=True with them.")
    if loss_sensitivity and not isinstance(corpus, TokenWindows):
        # tokenised once, so that both passes see the same tokens
        corpus = tokenize_windows(load_corpus(corpus), tokenizer, window, max_tokens=max_tokens)
    hooks, sink = ("mlp",), _MomentsSink()
    if networks is not None:
        from ..networks import OnlineNetworks

        if not isinstance(networks, OnlineNetworks):
            raise TypeError("networks must be an llmbrain.networks.OnlineNetworks to fit in the "
                            f"same pass, got {type(networks).__name__}.")
        voxels = (networks.hooks,) if isinstance(networks.hooks, str) else tuple(networks.hooks)
        hooks = tuple(dict.fromkeys(voxels + hooks))
        sink = SplitSink([(("mlp",), sink), (voxels, networks.sink())])
    stats = record(model, tokenizer, corpus, None, hook=hooks[0] if len(hooks) == 1 else hooks,
                   layers=layers, window=window, batch_size=batch_size, dtype="float32",
                   max_tokens=max_tokens, progress=progress, sink=sink,
                   distributed=False)    # each process all the tokens: its sums are whole
    stats = stats if networks is None else stats[0]
    if loss_sensitivity:
        fisher = collect_loss_sensitivity(model, corpus, stats, batch_size=batch_size,
                                          layers=stats["layer"].values.tolist(),
                                          loss_networks=loss_networks, progress=progress)
        stats = stats.assign(fisher.data_vars)
        stats.attrs["sensitivity_tokens"] = fisher.attrs["n_tokens"]
    return stats


def calibration_stats_from_activations(data, *, batch_tokens: int = 16384) -> xr.Dataset:
    """Calibration statistics of recorded MLP neurons, read from a store layer by layer.

    Parameters
    ----------
    data : xarray.Dataset or DataArray
        A store opened with :func:`llmbrain.open_activations` (recorded at
        hook ``"mlp"``, with all neurons), or its ``activations``; NumPy- or
        dask-backed (``open_activations(path, chunks={})``: each block is
        computed on the current dask scheduler).
    batch_tokens : int, default=16384
        Tokens read at once (memory stays bounded).

    Returns
    -------
    xarray.Dataset
        See the module documentation.
    """
    attrs = data.attrs
    if hasattr(data, "data_vars"):
        data = data["activations"]
    if attrs.get("hook", "mlp") != "mlp" or attrs.get("neurons_selected", "all") != "all" \
            or "hook" in data.dims:
        raise ValueError("Calibration statistics need the MLP neurons (hook='mlp') with all "
                         "neurons recorded; this store has hook="
                         f"{attrs.get('hooks', attrs.get('hook'))!r}, neurons="
                         f"{attrs.get('neurons_selected')!r}.")
    n_tokens = data.sizes["token"]
    moments = {}
    for layer in data["layer"].values.tolist():
        m = RunningMoments(absolute=True)
        for start in range(0, n_tokens, batch_tokens):
            block = data.sel(layer=layer).isel(token=slice(start, start + batch_tokens))
            m.update(np.asarray(block.values, dtype=np.float32))
        moments[int(layer)] = m
    return _as_dataset(moments, str(attrs.get("model", "")))
