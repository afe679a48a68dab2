"""How much the language-modelling loss depends on each MLP neuron.

The ``"fisher"`` criterion scores a neuron by the second-order estimate of how
much the loss grows when the neuron's input to the output projection is
replaced by its calibration mean, which is what structural pruning with bias
compensation does to it (:func:`~llmbrain.pruning.prune_model`). With
``x_tj`` the neuron's input at calibration token ``t``, ``mu_j`` its mean and
``g_tj = dL/dx_tj`` the gradient of the summed next-token loss,

.. math::

    F_j = \\sum_t \\big((x_{tj} - \\mu_j)\\, g_{tj}\\big)^2 ,

the diagonal of the empirical Fisher information of a per-token gate on the
neuron's deviation from its mean (Fisher pruning, Theis et al. 2018,
arXiv 1801.05787; the Fisher-based mask search of Kwon et al. 2022,
arXiv 2204.09656). It is the loss-aware counterpart of FLAP's fluctuation
``Var(x_j) ||W_down[:, j]||**2``, which measures the same replacement by the
change of the layer's output alone. Scores are in units of the loss, so they
compare across layers.

The gradients need one backward pass through the whole model, language-model
head included, over the calibration windows; the model's weights are not
touched and no parameter gradient is stored.

Loss networks
-------------
The per-token terms ``c_tj = (x_tj - mu_j) g_tj`` are the neurons' loss
contributions, a (tokens x neurons) time series per layer. Their Gram matrix
``G = C^T C`` extends Fisher to sets of neurons: removing a set ``S`` of a
layer costs ``1_S^T G 1_S`` to second order, of which ``F_j = G_jj`` are the
neurons' own terms and the off-diagonal what neurons that act together add
to or take from each other's cost. The leading eigenvectors of ``G`` are
*loss networks*: sets of neurons whose loss contributions rise and fall
together over tokens, each with its strength ``lambda_k = u_k^T G u_k``, the
loss that removing the network's direction costs.
``collect_loss_sensitivity(..., loss_networks=K)`` keeps the ``K`` strongest
per layer, and the ``"loss-networks"`` criterion removes, layer by layer and
one neuron at a time, the neuron that adds least to
``1_S^T (diag(G) + offdiag(G_K)) 1_S``, with ``G_K = U_K Lambda_K U_K^T``:
each neuron's own Fisher plus its interactions within the loss networks
(the rest of the off-diagonal, estimated from a few thousand tokens, is
mostly noise; see ``benchmarks/results/network-criteria.md``).
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr
from torch import nn
from tqdm.auto import tqdm

from ..corpus import TokenWindows
from ..models.adapters import get_adapter

__all__ = ["collect_loss_sensitivity", "loss_network_importance"]


def _means(means, layers, widths) -> dict[int, torch.Tensor]:
    """Per-layer mean inputs from calibration statistics (or a mapping)."""
    out = {}
    for layer, width in zip(layers, widths):
        if isinstance(means, xr.Dataset):
            if "mean" not in means or layer not in means["layer"].values:
                raise ValueError(f"The calibration statistics lack the means of layer {layer}: "
                                 "pass the Dataset of collect_calibration_stats for this model.")
            row = np.asarray(means["mean"].sel(layer=layer).values, dtype=np.float64)[:width]
        else:
            row = np.asarray(means[layer], dtype=np.float64)
        if row.shape != (width,) or not np.isfinite(row).all():
            raise ValueError(f"The means of layer {layer} must be {width} finite numbers (one per "
                             f"neuron of the model); got shape {row.shape}: were they measured "
                             "on another model?")
        out[layer] = torch.from_numpy(row)
    return out


def collect_loss_sensitivity(model: nn.Module, windows, means, *, batch_size: int = 8,
                             layers=None, loss_networks: int = 0,
                             progress: bool = True) -> xr.Dataset:
    """Each MLP neuron's Fisher score over calibration windows (see the module text).

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A causal language model (its head gives the loss).
    windows : TokenWindows or 2-D integer array
        Calibration token windows, e.g. from :func:`llmbrain.corpus.tokenize_windows`.
    means : xarray.Dataset or mapping of layer to array
        Each neuron's mean input to the output projection over calibration
        text: the statistics of :func:`collect_calibration_stats`.
    batch_size : int, default=8
        Windows per forward and backward pass.
    layers : sequence of int, optional
        Layers to score (default: all).
    loss_networks : int, default=0
        Also keep the ``loss_networks`` strongest loss networks of every
        layer (see the module text; the ``"loss-networks"`` criterion reads
        them). This accumulates each layer's Gram matrix of loss
        contributions during the pass: ``8 * width**2`` bytes per layer on
        the model's device (19 MB for a layer of 1,536 neurons, 0.97 GB for
        one of 11,008).
    progress : bool, default=True
        Show a progress bar (in windows).

    Returns
    -------
    xarray.Dataset
        ``fisher`` with dims ``(layer, neuron)`` (NaN-padded as the calibration
        statistics, coordinate ``n_neurons``); attrs ``n_tokens`` (tokens
        whose gradient was taken) and ``loss`` (the mean next-token loss).
        With ``loss_networks``, also ``loss_networks`` ``(layer,
        loss_network, neuron)``, each network's unit-norm neuron weights (the
        largest weight positive), and ``loss_network_strength`` ``(layer,
        loss_network)``, its eigenvalue of ``G`` in units of the loss, by
        decreasing strength.

    Examples
    --------
    >>> stats = collect_calibration_stats(model, tokenizer, windows)      # doctest: +SKIP
    >>> stats = stats.merge(collect_loss_sensitivity(model, windows, stats))  # doctest: +SKIP
    >>> scores = score_neurons(model, "fisher", calibration=stats)        # doctest: +SKIP
    """
    ids = windows.input_ids if isinstance(windows, TokenWindows) else windows
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    if ids.ndim != 2 or ids.shape[1] < 2 or ids.shape[0] < 1:
        raise ValueError("windows must be TokenWindows or a 2-D array of token ids (windows x "
                         f"tokens) with at least 2 tokens a window; got shape {tuple(ids.shape)}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}.")
    if isinstance(loss_networks, bool) or not isinstance(loss_networks, (int, np.integer)) \
            or loss_networks < 0:
        raise ValueError("loss_networks must be a non-negative integer (0: none), not "
                         f"{loss_networks!r}.")
    adapter = get_adapter(model)
    widths = adapter.neurons_per_layer(model)
    n_layers = len(widths)
    layers = list(range(n_layers)) if layers is None else [int(layer) for layer in layers]
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad or not layers:
        raise ValueError(f"layers must name some of the model's layers 0..{n_layers - 1}; got "
                         f"{layers}.")
    widths = [widths[layer] for layer in layers]
    if loss_networks > min(widths):
        raise ValueError(f"loss_networks={loss_networks} exceeds the {min(widths)} neurons of "
                         "the narrowest layer scored: ask for fewer.")
    embed = model.get_input_embeddings()
    device = embed.weight.device
    # each layer's sums where its down projection runs (a model may span several GPUs)
    places = [adapter.down_proj(model, layer).weight.device for layer in layers]
    mu = {layer: values.to(place) for (layer, values), place in
          zip(_means(means, layers, widths).items(), places)}
    sums = {layer: torch.zeros(width, dtype=torch.float64, device=place)
            for layer, width, place in zip(layers, widths, places)}
    grams = {layer: torch.zeros(width, width, dtype=torch.float64, device=place)
             for layer, width, place in zip(layers, widths, places)} if loss_networks else {}
    inputs: dict[int, torch.Tensor] = {}

    def keep_input(layer):
        def hook(_module, args):
            inputs[layer] = args[0]
        return hook

    handles = [adapter.down_proj(model, layer).register_forward_pre_hook(keep_input(layer))
               for layer in layers]
    was_training, n_tokens, total_loss = model.training, 0, 0.0
    grad_flags = [p.requires_grad for p in model.parameters()]
    bar = tqdm(total=len(ids), unit="window", desc="loss sensitivity", disable=not progress)
    try:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        for start in range(0, len(ids), batch_size):
            batch = ids[start:start + batch_size].to(device)
            inputs.clear()
            with torch.enable_grad():
                embedded = embed(batch).detach().requires_grad_(True)
                out = model(inputs_embeds=embedded, labels=batch, use_cache=False)
                count = batch.shape[0] * (batch.shape[1] - 1)
                loss = out.loss * count    # summed over tokens: each token weighs the same
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"The loss of calibration windows {start}..{start + len(batch) - 1} is "
                        "not finite; the model cannot be scored on them (check its dtype and "
                        "weights).")
                grads = torch.autograd.grad(loss, [inputs[layer] for layer in layers])
            for layer, grad in zip(layers, grads):
                x = inputs[layer].detach().to(mu[layer].device, torch.float64)
                deviation = (x - mu[layer]) * grad.to(x.device, torch.float64)
                sums[layer] += (deviation ** 2).sum(dim=tuple(range(deviation.ndim - 1)))
                if grams:
                    # float32 products (fast), summed over batches in float64
                    flat = deviation.reshape(-1, deviation.shape[-1]).to(torch.float32)
                    grams[layer] += (flat.T @ flat).to(torch.float64)
            n_tokens += count
            total_loss += float(loss.detach())
            bar.update(len(batch))
    finally:
        bar.close()
        for handle in handles:
            handle.remove()
        for p, flag in zip(model.parameters(), grad_flags):
            p.requires_grad_(flag)
        model.train(was_training)
        inputs.clear()
    width = max(widths)
    data = np.full((len(layers), width), np.nan)
    for i, (layer, n) in enumerate(zip(layers, widths)):
        data[i, :n] = sums[layer].cpu().numpy()
    variables = {"fisher": (("layer", "neuron"), data)}
    if grams:
        vectors = np.full((len(layers), loss_networks, width), np.nan)
        strengths = np.empty((len(layers), loss_networks))
        for i, (layer, n) in enumerate(zip(layers, widths)):
            strengths[i], vectors[i, :, :n] = _leading_eigenvectors(grams.pop(layer),
                                                                   loss_networks)
        variables["loss_networks"] = (("layer", "loss_network", "neuron"), vectors)
        variables["loss_network_strength"] = (("layer", "loss_network"), strengths)
    return xr.Dataset(variables,
                      coords={"layer": layers, "neuron": np.arange(width),
                              "n_neurons": ("layer", widths)},
                      attrs={"n_tokens": int(n_tokens), "loss": total_loss / n_tokens})


def _leading_eigenvectors(gram: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest eigenvalues of a symmetric matrix and their unit eigenvectors
    (rows), each signed so that its largest entry is positive."""
    values, vectors = torch.linalg.eigh((gram + gram.T) / 2)
    values, vectors = values.flip(0)[:k], vectors.flip(1)[:, :k].T
    rows = torch.arange(k, device=vectors.device)
    signs = torch.sign(vectors[rows, vectors.abs().argmax(dim=1)])
    return values.cpu().numpy(), (vectors * signs[:, None]).cpu().numpy()


def loss_network_importance(fisher, networks, strengths) -> np.ndarray:
    """The ``"loss-networks"`` scores of one layer's neurons (higher = keep).

    Neurons are removed greedily, each time the one whose removal adds least
    to ``1_S^T Q 1_S`` with ``Q = diag(F) + offdiag(U^T diag(lambda) U)``
    (the neurons' own Fisher ``F`` and their interactions within the loss
    networks ``U``, see the module text). A neuron's score is the largest
    marginal cost met up to its removal, so it is in units of the loss,
    increases strictly along the removal order, and keeping the highest
    scores of one layer, or of several at once (each layer's ranking merged
    by cost), keeps what the greedy removal keeps.

    Parameters
    ----------
    fisher : array of shape (n_neurons,)
        Each neuron's Fisher score (the diagonal of ``G``).
    networks : array of shape (n_networks, n_neurons)
        The loss networks' neuron weights (rows of ``U``).
    strengths : array of shape (n_networks,)
        Their eigenvalues ``lambda``.

    Returns
    -------
    numpy.ndarray of shape (n_neurons,)
    """
    fisher = np.asarray(fisher, dtype=np.float64)
    networks = np.atleast_2d(np.asarray(networks, dtype=np.float64))
    strengths = np.asarray(strengths, dtype=np.float64)
    n = fisher.size
    if networks.shape[1] != n or strengths.shape != networks.shape[:1] or \
            not (np.isfinite(fisher).all() and np.isfinite(networks).all()
                 and np.isfinite(strengths).all()):
        raise ValueError(f"fisher ({fisher.shape}), networks ({networks.shape}) and strengths "
                         f"({strengths.shape}) must be finite, with one weight per neuron in "
                         "each network and one strength per network.")
    weighted = networks.T * strengths            # (neurons, networks): U^T Lambda
    removed_sum = np.zeros(networks.shape[0])   # sum of U's columns of the removed neurons
    alive = np.ones(n, bool)
    scores = np.empty(n)
    highest = -np.inf
    for _ in range(n):
        # cost of removing j after S: F_j + 2 sum_{i in S} (U^T Lambda U)_ji  (j not in S)
        cost = np.where(alive, fisher + 2 * (weighted @ removed_sum), np.inf)
        j = int(np.argmin(cost))
        highest = max(cost[j], np.nextafter(highest, np.inf))
        scores[j] = highest
        alive[j] = False
        removed_sum += networks[:, j]
    return scores
