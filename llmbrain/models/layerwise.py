"""Run a model's decoder layers one at a time over cached calibration inputs.

Pruning with compensation measures each layer on the model as it is being
pruned: the statistics of layer ``l`` are taken after layers ``0..l-1`` were
pruned, as SparseGPT, Wanda and FLAP do. Running the whole model once per
layer would cost ``n_layers / 2`` passes; :class:`LayerwiseRunner` costs about
two: one ordinary forward pass (stopped after the last decoder layer, so the
language-model head never runs) records the hidden states entering the first
decoder layer and the keyword arguments that *every* layer receives (attention
masks and position embeddings differ between layer types in some families,
e.g. Gemma 3's local and global layers; GPT-2 passes some of them by
position); afterwards each layer is run on the
cached hidden states, which then become the inputs of the next layer.
"""

from __future__ import annotations

import torch
from torch import nn

from .adapters import get_adapter

__all__ = ["LayerwiseRunner"]


class _Stop(Exception):
    """Raised after the last decoder layer: the head is not run."""


def _first(output):
    return output[0] if isinstance(output, tuple) else output


class LayerwiseRunner:
    """Cached hidden states of calibration windows, advanced one layer at a time.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A causal LM with an architecture adapter.
    input_ids : torch.Tensor of shape (n_windows, window)
        Calibration windows of equal length (no padding).
    batch_size : int, default=8
        Windows per layer call.
    cache_device : str or torch.device, optional
        Where the hidden states are kept between layers (default: the device
        of the first decoder layer). ``"cpu"`` saves accelerator memory.

    Attributes
    ----------
    n_tokens : int
        Tokens in the cache.
    next_layer : int
        The layer whose inputs the cache holds now.

    Examples
    --------
    >>> runner = LayerwiseRunner(model, input_ids)            # doctest: +SKIP
    >>> for layer in range(n_layers):                          # doctest: +SKIP
    ...     runner.run(layer, update=False)  # hooks on the layer measure its inputs
    ...     ...                              # change the layer (prune it)
    ...     runner.run(layer)                # its outputs feed the next layer
    """

    def __init__(self, model: nn.Module, input_ids: torch.Tensor, *, batch_size: int = 8,
                 cache_device=None) -> None:
        if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2:
            raise ValueError("input_ids must be a 2-D tensor (n_windows, window) of token ids.")
        if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
            raise ValueError("input_ids holds no token.")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}.")
        self.model = model
        self.adapter = get_adapter(model)
        self._layers = self.adapter.decoder_layers(model)
        self.n_tokens = int(input_ids.numel())
        self.next_layer = 0
        self._hidden: list[torch.Tensor] = []
        self._calls: list[list[tuple]] = [[] for _ in self._layers]  # (args, kwargs)
        self._capture(input_ids.long(), int(batch_size), cache_device)

    @torch.inference_mode()
    def _capture(self, input_ids, batch_size, cache_device) -> None:
        n_layers = len(self._layers)
        cache_device = torch.device(cache_device) if cache_device is not None else None

        def pre_hook(position):
            def hook(_module, args, kwargs):
                hidden = args[0] if args else kwargs["hidden_states"]
                if position == 0:
                    self._hidden.append(hidden.detach().to(cache_device or hidden.device))
                self._calls[position].append(
                    (args[1:], {key: value for key, value in kwargs.items()
                                if key != "hidden_states"}))
            return hook

        def stop(_module, _args, _output):
            raise _Stop

        handles = [layer.register_forward_pre_hook(pre_hook(i), with_kwargs=True)
                   for i, layer in enumerate(self._layers)]
        handles.append(self._layers[n_layers - 1].register_forward_hook(stop))
        device = self._layers[0].parameters().__next__().device
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, input_ids.shape[0], batch_size):
                try:
                    self.model(input_ids=input_ids[start:start + batch_size].to(device),
                               use_cache=False)
                except _Stop:
                    pass
        finally:
            for handle in handles:
                handle.remove()
            self.model.train(was_training)

    @torch.inference_mode()
    def run(self, layer: int, *, update: bool = True) -> None:
        """Run decoder layer ``layer`` on the cached hidden states.

        Parameters
        ----------
        layer : int
            Must be :attr:`next_layer`: layers are run in order.
        update : bool, default=True
            Replace the cache by the layer's outputs (the inputs of the next
            layer). With False the layer only runs, e.g. so that hooks on its
            modules can measure them, and the cache is unchanged.
        """
        if layer != self.next_layer:
            raise ValueError(f"The cache holds the inputs of layer {self.next_layer}; layers run "
                             f"in order, so layer {layer} cannot run now.")
        module = self._layers[layer]
        device = next(module.parameters()).device
        for i, (hidden, (args, kwargs)) in enumerate(zip(self._hidden, self._calls[layer])):
            out = _first(module(hidden.to(device), *args, **kwargs))
            if update:
                self._hidden[i] = out.to(hidden.device)
        if update:
            self.next_layer += 1
