"""Activation statistics of MLP neurons over a calibration corpus.

One streaming pass: forward pre-hooks on every MLP output projection add each
batch's neuron inputs to running float64 sums (of ``x``, ``|x|`` and ``x**2``)
so that the memory used does not grow with the number of tokens.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import xarray as xr
from torch import nn
from tqdm.auto import tqdm

from ..models.adapters import get_adapter

__all__ = ["CalibrationStats", "collect_calibration_stats", "token_windows"]


@dataclass
class CalibrationStats:
    """Per-neuron statistics of the MLP neuron inputs over calibration tokens.

    Attributes
    ----------
    n_tokens : int
        Number of tokens the statistics were computed on.
    mean, mean_abs, variance, l2_norm : dict of int to numpy.ndarray
        Per layer, one float64 value per neuron: mean, mean absolute value,
        unbiased variance over tokens, and the L2 norm ``sqrt(sum x**2)``
        over tokens (the ``||X_j||`` of Wanda).
    """

    n_tokens: int
    mean: dict[int, np.ndarray] = field(default_factory=dict)
    mean_abs: dict[int, np.ndarray] = field(default_factory=dict)
    variance: dict[int, np.ndarray] = field(default_factory=dict)
    l2_norm: dict[int, np.ndarray] = field(default_factory=dict)

    _STATS = ("mean", "mean_abs", "variance", "l2_norm")

    @property
    def layers(self) -> list[int]:
        """Layers that have statistics."""
        return sorted(self.mean)

    @classmethod
    def from_sums(cls, n_tokens: int, sums: dict) -> CalibrationStats:
        """Build from per-layer running sums ``(sum x, sum |x|, sum x**2)``."""
        stats = cls(n_tokens=int(n_tokens))
        for layer, (s1, s_abs, s2) in sums.items():
            mean = s1 / n_tokens
            stats.mean[layer] = mean
            stats.mean_abs[layer] = s_abs / n_tokens
            stats.variance[layer] = np.maximum(s2 - n_tokens * mean * mean, 0.0) / max(
                n_tokens - 1, 1)
            stats.l2_norm[layer] = np.sqrt(s2)
        return stats

    @classmethod
    def from_activations(cls, data, *, batch_tokens: int = 16384) -> CalibrationStats:
        """Statistics of recorded MLP neurons, read from a store layer by layer.

        Parameters
        ----------
        data : xarray.Dataset or DataArray
            A store opened with :func:`llmbrain.open_activations` (recorded at
            hook ``"mlp"``, with all neurons), or its ``activations``. Backed
            by dask (``open_activations(path, chunks={})``), the sums are
            computed chunk by chunk on the current dask scheduler (threads,
            or a cluster's workers).
        batch_tokens : int, default=16384
            Tokens read at once (memory stays bounded); not used with dask.
        """
        attrs = data.attrs
        if hasattr(data, "data_vars"):
            data = data["activations"]
        if attrs.get("hook", "mlp") != "mlp" or attrs.get("neurons_selected", "all") != "all":
            raise ValueError("Calibration statistics need the MLP neurons (hook='mlp') with all "
                             "neurons recorded; this store has hook="
                             f"{attrs.get('hook')!r}, neurons={attrs.get('neurons_selected')!r}.")
        n_tokens = data.sizes["token"]
        if data.chunks is not None:
            return cls.from_sums(n_tokens, _dask_sums(data))
        sums = {}
        for layer in data["layer"].values.tolist():
            acc = [0.0, 0.0, 0.0]
            for start in range(0, n_tokens, batch_tokens):
                x = np.asarray(data.sel(layer=layer).isel(token=slice(start, start + batch_tokens))
                               .values, dtype=np.float64)
                acc = [acc[0] + x.sum(0), acc[1] + np.abs(x).sum(0), acc[2] + (x * x).sum(0)]
            sums[int(layer)] = tuple(acc)
        return cls.from_sums(n_tokens, sums)

    def to_dataset(self) -> xr.Dataset:
        """The statistics as an :class:`xarray.Dataset` (layer, neuron).

        Raises
        ------
        ValueError
            If the layers have different neuron counts (a non-uniformly
            pruned model); use the dict attributes then.
        """
        sizes = {self.mean[layer].size for layer in self.layers}
        if len(sizes) > 1:
            raise ValueError("Layers have different neuron counts; use the per-layer dicts.")
        coords = {"layer": self.layers, "neuron": np.arange(sizes.pop() if sizes else 0)}
        data = {name: (("layer", "neuron"),
                       np.stack([getattr(self, name)[layer] for layer in self.layers]))
                for name in self._STATS}
        return xr.Dataset(data, coords=coords, attrs={"n_tokens": self.n_tokens})


def _dask_sums(data: xr.DataArray) -> dict:
    """Per-layer ``(sum x, sum |x|, sum x**2)`` of dask-backed activations, in one pass."""
    import dask

    x = data.transpose("token", "layer", "neuron").data.astype(np.float64)
    s1, s_abs, s2 = dask.compute(x.sum(0), abs(x).sum(0), (x * x).sum(0))
    return {int(layer): (s1[i], s_abs[i], s2[i])
            for i, layer in enumerate(data["layer"].values.tolist())}


def token_windows(tokenizer, texts, window: int = 256, max_tokens: int | None = None,
                  ) -> list[list[int]]:
    """Cut a corpus into windows of token ids.

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase
    texts : str, path, sequence of str, or sequence of sequences of int
        A corpus accepted by :func:`llmbrain.corpus.load_corpus` (a text or
        JSONL file, a folder of ``.txt`` files, ``"default"``), a list of
        texts, or already tokenized windows (used as they are).
    window : int, default=256
        Tokens per window. Texts are joined with the end-of-sequence token
        and cut into consecutive windows; the last one may be shorter.
    max_tokens : int, optional
        Stop after this many tokens.

    Returns
    -------
    list of list of int
    """
    if isinstance(texts, (str, os.PathLike)):
        from ..corpus import load_corpus

        texts = load_corpus(texts)
    texts = list(texts)
    if not texts:
        raise ValueError("The calibration corpus is empty; give at least one text.")
    if window < 1:
        raise ValueError(f"window must be a positive number of tokens, not {window}.")
    if not isinstance(texts[0], str):
        windows, budget = [], max_tokens
        for w in texts:
            w = [int(t) for t in w]
            if budget is not None:
                if budget <= 0:
                    break
                w = w[:budget]
                budget -= len(w)
            if w:
                windows.append(w)
        return windows
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(eos)
        if max_tokens is not None and len(ids) >= max_tokens:
            break
    if max_tokens is not None:
        ids = ids[:max_tokens]
    return [ids[i:i + window] for i in range(0, len(ids), window)]


@torch.no_grad()
def collect_calibration_stats(model: nn.Module, tokenizer, texts, *, window: int = 256,
                              batch_size: int = 8, max_tokens: int | None = None,
                              layers: Sequence[int] | None = None,
                              progress: bool = True) -> CalibrationStats:
    """Statistics of every MLP neuron's input over a calibration corpus.

    Parameters
    ----------
    model : transformers.PreTrainedModel
    tokenizer : transformers.PreTrainedTokenizerBase
    texts : str, path, list of str, or list of token-id windows
        The calibration corpus (see :func:`token_windows`).
    window : int, default=256
        Tokens per forward window.
    batch_size : int, default=8
        Windows per forward pass.
    max_tokens : int, optional
        Use at most this many tokens.
    layers : sequence of int, optional
        Layers to measure (default: all).
    progress : bool, default=True
        Show a tqdm progress bar (in tokens).

    Returns
    -------
    CalibrationStats
    """
    adapter = get_adapter(model)
    n_layers = adapter.n_layers(model)
    layers = list(range(n_layers)) if layers is None else [int(layer) for layer in layers]
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"Layers {bad} do not exist; the model has layers 0..{n_layers - 1}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}.")
    windows = token_windows(tokenizer, texts, window=window, max_tokens=max_tokens)
    if not windows:
        raise ValueError("The calibration corpus has no tokens.")
    sums = {layer: [None, None, None] for layer in layers}  # sum x, sum |x|, sum x^2
    state: dict[str, torch.Tensor] = {}

    def make_hook(layer):
        def hook(module, args):
            x = args[0]
            # some models (OPT) flatten (batch, seq) before the MLP
            x = x.reshape(-1, x.shape[-1])[state["valid"]].to(torch.float64)
            parts = (x.sum(0), x.abs().sum(0), (x * x).sum(0))
            acc = sums[layer]
            for i, part in enumerate(parts):
                acc[i] = part if acc[i] is None else acc[i] + part
        return hook

    handles = [adapter.down_proj(model, layer).register_forward_pre_hook(make_hook(layer))
               for layer in layers]
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    n_tokens = 0
    was_training = model.training
    model.eval()
    try:
        with tqdm(total=sum(map(len, windows)), unit="tok", desc="calibration",
                  disable=not progress) as bar:
            for start in range(0, len(windows), batch_size):
                batch = windows[start:start + batch_size]
                length = max(map(len, batch))
                ids = torch.full((len(batch), length), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), length), dtype=torch.long)
                for i, w in enumerate(batch):
                    ids[i, :len(w)] = torch.tensor(w)
                    mask[i, :len(w)] = 1
                state["valid"] = mask.bool().reshape(-1).to(device)
                model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
                n_tokens += int(mask.sum())
                bar.update(int(mask.sum()))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return CalibrationStats.from_sums(
        n_tokens, {layer: tuple(t.cpu().numpy() for t in sums[layer]) for layer in layers})
