"""Size and speed of a (dense or pruned) model, measured the same way for both."""

from __future__ import annotations

import statistics
import time

import torch

from ..models import get_adapter, supported_architectures

__all__ = ["count_parameters", "measure_efficiency"]


def count_parameters(model) -> dict:
    """Parameter counts and weight memory of ``model``.

    Returns
    -------
    counts : dict
        ``n_params`` (unique parameters, tied weights counted once),
        ``n_mlp_params`` (weights and biases of the MLP projections of every
        decoder layer), ``n_neurons`` (MLP neurons in all layers) and
        ``weight_bytes`` (bytes of the parameters and buffers).
        ``n_mlp_params`` and ``n_neurons`` are None for an architecture
        without an adapter (see :func:`llmbrain.models.register_adapter`).
    """
    seen, n_params, weight_bytes = set(), 0, 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        weight_bytes += tensor.numel() * tensor.element_size()
        if isinstance(tensor, torch.nn.Parameter):
            n_params += tensor.numel()
    counts = {"n_params": int(n_params), "n_mlp_params": None, "n_neurons": None,
              "weight_bytes": int(weight_bytes)}
    model_type = getattr(model.config, "model_type", None)
    if model_type not in supported_architectures():
        return counts
    adapter = get_adapter(model)
    n_mlp = 0
    for layer in range(adapter.n_layers(model)):
        for module in adapter.up_projs(model, layer) + [adapter.down_proj(model, layer)]:
            n_mlp += sum(p.numel() for p in module.parameters())
    counts.update(n_mlp_params=int(n_mlp), n_neurons=int(sum(adapter.neurons_per_layer(model))))
    return counts


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def measure_efficiency(model, tokenizer=None, *, batch_size: int = 8, seq_len: int = 256,
                       warmup: int = 2, repeats: int = 5, device=None, seed: int = 0) -> dict:
    """Parameters, weight memory and forward throughput of ``model``.

    The throughput is measured on one fixed batch of random token ids (the
    same for every model of the same vocabulary, given ``seed``): ``warmup``
    untimed forward passes, then ``repeats`` timed ones; the median time
    gives tokens per second.

    Parameters
    ----------
    model : transformers.PreTrainedModel
    tokenizer : transformers.PreTrainedTokenizerBase, optional
        Only used for the vocabulary size (else ``model.config.vocab_size``).
    batch_size : int, default=8
    seq_len : int, default=256
    warmup : int, default=2
    repeats : int, default=5
    device : str or torch.device, optional
        Defaults to the device of the model's parameters.
    seed : int, default=0
        Seed of the random token ids.

    Returns
    -------
    efficiency : dict
        The counts of :func:`count_parameters`, plus ``tokens_per_s``
        (median), ``tokens_per_s_stderr`` (standard error of the per-repeat
        rates), ``seconds_per_batch`` (median), ``seconds_min``,
        ``seconds_max``, ``batch_size``, ``seq_len``, ``repeats`` and
        ``device``.
    """
    if batch_size < 1 or seq_len < 1 or repeats < 1 or warmup < 0:
        raise ValueError("batch_size, seq_len and repeats must be positive and warmup "
                         "non-negative.")
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    vocab = len(tokenizer) if tokenizer is not None else model.config.vocab_size
    vocab = min(vocab, model.get_input_embeddings().num_embeddings)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch_size, seq_len), generator=generator).to(device)
    for _ in range(warmup):
        model(input_ids=ids, use_cache=False)
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(input_ids=ids, use_cache=False)
        _sync(device)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    rates = [batch_size * seq_len / t for t in times]
    spread = statistics.stdev(rates) / len(rates) ** 0.5 if len(rates) > 1 else float("nan")
    return {**count_parameters(model), "tokens_per_s": batch_size * seq_len / median,
            "tokens_per_s_stderr": spread, "seconds_per_batch": median,
            "seconds_min": min(times), "seconds_max": max(times), "batch_size": batch_size,
            "seq_len": seq_len, "repeats": repeats, "device": str(device)}
