"""Record the activations of a causal LM over a corpus into a store (or memory)."""

from __future__ import annotations

from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import distributed as _processes
from .._atomic import replace_folder
from .._outputs import check_output, output_kind, output_lock
from .._text import format_ranges
from ..corpus import TokenWindows, load_corpus, tokenize_windows
from ..models.adapters import get_adapter
from ..models.loading import model_fingerprint
from .hooks import HOOK_POINTS, MLP_HOOKS, attach_hooks
from ._resume import prepare_store
from ._together import record_together
from .sinks import ActivationSink, MemorySink, RecordingLayout, ZarrSink, refuse_non_finite
from .store import layout_coords, open_activations

__all__ = ["record"]


class _StopForward(Exception):
    """Raised after the last recorded hook: the rest of the model is not run."""


def _check_selection(values, size: int, what: str) -> list[int]:
    if values is None:
        return list(range(size))
    values = [int(v) for v in np.atleast_1d(values)]
    bad = [v for v in values if not -size <= v < size]
    if bad:
        raise ValueError(f"{len(bad)} {what} index(es) out of range ({format_ranges(bad)}): "
                         f"the model has {size} {what}s (0 to {size - 1}).")
    values = sorted({v % size for v in values})
    if not values:
        raise ValueError(f"The {what} selection is empty.")
    return values


def _check_hooks(hook) -> tuple[str, ...]:
    hooks = (hook,) if isinstance(hook, str) else tuple(hook)
    unknown = [h for h in hooks if h not in HOOK_POINTS]
    if unknown or not hooks:
        raise ValueError(f"Unknown hook {unknown[0] if unknown else hook!r}; choose one of "
                         f"{', '.join(HOOK_POINTS)}.")
    if len(set(hooks)) != len(hooks):
        raise ValueError(f"hook {list(hooks)} names a hook point twice.")
    others = sorted(set(hooks) - set(MLP_HOOKS))
    if len(hooks) > 1 and others:
        raise ValueError(f"Hooks recorded together must have the same width: combine only the "
                         f"MLP hooks {', '.join(MLP_HOOKS)}; record {others} alone.")
    return hooks


def _probe(model, adapter, layers, hooks, device) -> tuple[dict, list]:
    """Width of the hooked tensor of every (hook, selected layer), and the device
    of every selected layer's tensor, from one tiny forward pass."""
    sizes, devices = {}, [None] * len(layers)

    expected = len(hooks) * len(layers)

    def seen(hook, position, x):
        sizes[(hook, layers[position])] = int(x.shape[-1])
        devices[position] = x.device
        if len(sizes) == expected:  # the rest of the model (and its head) is not run
            raise _StopForward

    handles = []

    for hook in hooks:
        handles += attach_hooks(model, adapter, layers, hook, partial(seen, hook))
    try:
        with torch.inference_mode():
            model(input_ids=torch.zeros((1, 2), dtype=torch.long, device=device), use_cache=False)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return sizes, devices


def _input_device(model) -> torch.device:
    """Where the input ids go: the device of the embeddings (on a model split over
    devices, the first one); the CPU for weights offloaded by accelerate."""
    weight = model.get_input_embeddings().weight
    return torch.device("cpu") if weight.device.type == "meta" else weight.device


def _neuron_subset(neurons, fraction, width: int, random_state) -> list[int] | None:
    if fraction is None:
        return neurons
    if neurons is not None:
        raise ValueError("Give either neurons (indices) or neuron_fraction, not both.")
    if not 0 < float(fraction) <= 1:
        raise ValueError(f"neuron_fraction must be in (0, 1], got {fraction}.")
    k = max(1, round(float(fraction) * width))
    return np.random.default_rng(random_state).choice(width, k, replace=False).tolist()


def _token_texts(tokenizer, ids: np.ndarray) -> np.ndarray:
    unique, inverse = np.unique(ids, return_inverse=True)
    texts = np.array([tokenizer.decode([int(i)]) for i in unique], dtype=object)
    return texts[inverse].astype(str)


def record(model, tokenizer, corpus="default", path="activations.zarr", *, hook="mlp",
           layers=None, neurons=None, window: int = 256, batch_size: int = 8,
           dtype: str = "float16", max_tokens: int | None = None, token_stride: int = 1,
           neuron_fraction: float | None = None, random_state: int | None = 0,
           sharded: bool = False, resume: bool = True, overwrite: bool = False,
           verify: bool = False, text_field: str = "text", progress: bool = True,
           sink: ActivationSink | None = None, distributed: bool | None = None):
    """Record a model's activations over a corpus into a Zarr store (or memory).

    The corpus is cut into windows of ``window`` tokens (see
    :func:`llmbrain.corpus.tokenize_windows`); each batch of windows is run
    through the model, the hooked activations are copied into a float16 (or
    float32) buffer and written to disk in the background while the next batch
    runs, so memory stays constant whatever the number of tokens. The forward
    pass stops after the last requested layer and never runs the language-model
    head. Several MLP hook points can be recorded in the same pass.

    A model split over several devices (``load_model(..., device_map="auto")``)
    is recorded the same way. Under ``torchrun`` (or ``accelerate launch``),
    with the process group initialised, the processes share the batches and
    write disjoint chunks of the same store (see ``distributed``).

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A causal LM with a registered architecture adapter.
    tokenizer : transformers tokenizer
    corpus : str, path, list of str or TokenWindows, default="default"
        Anything :func:`llmbrain.corpus.load_corpus` accepts, or windows
        already cut by :func:`llmbrain.corpus.tokenize_windows`.
    path : str, path or None, default="activations.zarr"
        Folder of the store. None records into memory and returns an
        in-memory Dataset of the same layout (for small passes).
    hook : str or sequence of str, default="mlp"
        Where to read activations: one of "mlp", "up", "gate", "act",
        "residual", "attention" (see :mod:`llmbrain.recording.hooks`), or
        several of the MLP hook points ("mlp", "up", "gate", "act"), which
        have the same width, recorded in one pass: the activations then get a
        ``hook`` dimension (token, hook, layer, neuron).
    layers : sequence of int, optional
        Layers to record (default: all).
    neurons : sequence of int, optional
        Indices of the neurons (features) to keep in every layer (default: all).
    window : int, default=256
        Tokens per window.
    batch_size : int, default=8
        Windows per forward pass; also the number of windows per chunk on disk
        (a resumed store keeps its own).
    dtype : {"float16", "float32"}, default="float16"
        Storage type. Values that float16 cannot hold (beyond ±65,504, as in
        the residual stream of some models) stop the recording with an error
        that says to use float32: inf or NaN is never stored.
    max_tokens : int, optional
        Run at most this many tokens through the model (at least one window).
    token_stride : int, default=1
        Keep one token in ``token_stride`` of each window: the positions
        ``token_stride - 1, 2 * token_stride - 1, ...`` (the first token of
        a window, whose activations are atypical, is then never kept). The
        store is ``token_stride`` times smaller; the ``position`` coordinate
        says which tokens were kept. For when the disk, not the model, is the
        limit.
    neuron_fraction : float, optional
        Keep this fraction of the neurons of every layer, drawn at random
        (the same neurons in every layer; the ``neuron`` coordinate lists
        them). An alternative to ``neurons``.
    random_state : int, optional
        Seed of the ``neuron_fraction`` draw.
    sharded : bool, default=False
        Store each batch (all its hooks and layers) as one file, a Zarr v3
        shard, instead of one file per layer and batch: fewer files, for
        file systems that handle many small files badly. Read the same way.
        A resumed store keeps its own layout.
    resume : bool, default=True
        Continue an interrupted recording at ``path`` made with the same model
        (weights included), hook, selection and corpus. A store made otherwise
        is refused.
    overwrite : bool, default=False
        Replace an existing store at ``path``. The new store is recorded
        beside it and takes its place only once complete; a folder that is no
        activation store is never replaced.
    verify : bool, default=False
        Before resuming, also compare the recorded chunks with their
        checksums (reads the store) and record again those that differ.
        Missing or cut-short chunks are always found and recorded again.
    text_field : str, default="text"
        Field of JSONL records holding the text.
    progress : bool, default=True
        Show a progress bar (on the first process only, when several record).
    sink : ActivationSink, optional
        Send the activations to this sink instead of a store (``path`` is
        then ignored); see :mod:`llmbrain.recording.sinks`. Its ``finish()``
        value is returned.
    distributed : bool, optional
        Share the work between the processes of the ``torch.distributed``
        process group: process ``r`` of ``N`` runs the batches ``r, r + N,
        ...``; into a store, the first process creates it (and holds its
        lock) and every process writes its own chunks, so the store is the
        one a single process would have written, bit for bit; a given sink
        receives its process's batches only. By default, whenever a process
        group of several processes is initialised. False: every process
        records everything on its own.

    Returns
    -------
    xarray.Dataset
        The store, opened with :func:`llmbrain.open_activations`, or the
        in-memory Dataset when ``path`` is None.

    Raises
    ------
    OutputLockedError
        If another process is recording into ``path``.
    """
    hooks = _check_hooks(hook)
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}.")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    if int(window) < 2:
        raise ValueError(f"window must be at least 2 tokens, got {window}.")
    if max_tokens is not None and int(max_tokens) < int(window):
        raise ValueError(f"max_tokens={max_tokens} is less than one window of {window} tokens: "
                         "record at least one window.")
    if not 1 <= int(token_stride) <= int(window):
        raise ValueError(f"token_stride must be between 1 and the window ({window}), got "
                         f"{token_stride}.")
    parallel = _check_distributed(distributed)
    if parallel and sink is None and path is None:
        raise ValueError("Recording into memory (path=None) is not shared between processes: "
                         "give a store path, a sink, or distributed=False.")
    if sink is None and path is not None:
        path = Path(path).expanduser()
        if output_kind(path) != "activations":  # refuse a folder not ours before any work
            check_output(path, "activations", overwrite=True)
    adapter = get_adapter(model)
    layers = _check_selection(layers, adapter.n_layers(model), "layer")
    device = _input_device(model)
    sizes, devices = _probe(model, adapter, layers, hooks, device)
    if len(set(sizes.values())) != 1:
        detail = ", ".join(f"{h} layer {layer}: {n}" for (h, layer), n in list(sizes.items())[:6])
        raise ValueError(f"The selected layers and hooks have different widths ({detail}): "
                         "record hooks or layers of equal width separately (a pruned model's "
                         "layers may differ).")
    width = next(iter(sizes.values()))
    neurons = _check_selection(_neuron_subset(neurons, neuron_fraction, width, random_state),
                               width, "neuron")
    context = getattr(model.config, "max_position_embeddings", None) or getattr(
        model.config, "n_positions", None)
    if isinstance(corpus, TokenWindows):
        if corpus.window_length != int(window):
            raise ValueError(f"The token windows hold {corpus.window_length} tokens but "
                             f"window={window}: pass window={corpus.window_length}.")
        windows = corpus
    else:
        windows = tokenize_windows(load_corpus(corpus, text_field=text_field), tokenizer,
                                   window, max_tokens=max_tokens, max_length=context)
    positions = np.arange(int(token_stride) - 1, int(window), int(token_stride))
    attrs = {
        "model": str(model.config.name_or_path), "model_fingerprint": model_fingerprint(model),
        "architecture": adapter.name, **({"hook": hooks[0]} if len(hooks) == 1 else
                                         {"hooks": list(hooks)}),
        "dtype": dtype, "window_length": int(window), "corpus_fingerprint": windows.fingerprint,
        "layers": layers, "neurons_selected": neurons if len(neurons) < width else "all",
        "n_tokens": len(windows) * len(positions), "batch_windows": int(batch_size),
        "token_stride": int(token_stride),
        **({"neuron_fraction": float(neuron_fraction), "random_state": random_state}
           if neuron_fraction is not None else {}),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    ids = windows.input_ids[:, positions].reshape(-1)
    layout = dict(hooks=hooks, layers=layers, neurons=neurons, dtype=dtype, window=int(window),
                  n_windows=len(windows), attrs=attrs, device=device,
                  token_stride=int(token_stride), devices=tuple(devices),
                  coords=layout_coords(
                      n_tokens=attrs["n_tokens"], hooks=hooks, layers=layers, neurons=neurons,
                      per_token={
                          "document": np.repeat(windows.document, len(positions)),
                          "position": np.tile(positions.astype(np.int32), len(windows)),
                          "token_id": ids.astype(np.int32),
                          "token_text": _token_texts(tokenizer, ids)}))
    show = progress and _processes.rank() == 0
    if sink is not None or path is None:
        sink = sink or MemorySink()
        starts = list(range(0, len(windows), int(batch_size)))
        if parallel:
            starts = starts[_processes.rank()::_processes.world_size()]
        return _run(model, adapter, windows.input_ids, starts,
                    RecordingLayout(batch_windows=int(batch_size), shared=parallel, **layout),
                    sink, show, agree=parallel)
    store = dict(batch_size=int(batch_size), resume=resume, overwrite=overwrite, verify=verify,
                 sharded=sharded)
    run = partial(_run, model, adapter, windows.input_ids)
    if parallel:
        record_together(run, path, layout, store, show)
    else:
        with output_lock(path, "recording into"):
            plan = prepare_store(path, layout, store)
            if plan is not None:
                run(plan["starts"], RecordingLayout(batch_windows=plan["batch"], **layout),
                    ZarrSink(plan["path"], plan["done"]), show)
                if plan["path"] != path:
                    replace_folder(plan["path"], path)
    return open_activations(path)


def _check_distributed(distributed) -> bool:
    if distributed is None:
        return _processes.is_distributed()
    if distributed and not _processes.is_distributed():
        raise ValueError("distributed=True needs an initialised torch.distributed process group "
                         "of several processes: launch with torchrun and call "
                         "llmbrain.distributed.init_from_environment() first.")
    return bool(distributed)


def _run(model, adapter, input_ids, starts, layout: RecordingLayout, sink: ActivationSink,
         progress: bool, agree: bool = False):
    """Run the batches beginning at the windows ``starts`` and hand each one's
    activations to ``sink``. ``agree``: the processes of the group find out
    whether one of them failed before the sink finishes (where an estimator
    waits for the others' sums), so that none waits for a failed one."""
    window, stride, kept = layout.window, layout.token_stride, layout.tokens_per_window
    n_hooks, n_neurons = len(layout.hooks), len(layout.neurons)
    all_neurons = n_neurons == int(layout.neurons[-1]) + 1
    groups: dict = {}  # device -> positions of the layers running there
    for position, device in enumerate(layout.devices):
        groups.setdefault(device, []).append(position)
    layerwise = sink.layerwise  # hand over each layer as it is done: one layer's buffer
    staging, views, neuron_index = {}, [None] * len(layout.layers), {}
    for device, positions in groups.items():  # contiguous per layer, on the layer's device
        staging[device] = torch.empty(
            (n_hooks, 1 if layerwise else len(positions), layout.batch_windows * kept,
             n_neurons), dtype=getattr(torch, layout.dtype), device=device)
        if not all_neurons:
            neuron_index[device] = torch.as_tensor(layout.neurons, device=device)
    buffers = dict(staging)

    def gather_into_sink_buffers():
        """Use the buffers the sink offers for the next batch (else our own)."""
        for device, positions in groups.items():
            given = None if layerwise else sink.buffer(device, tuple(staging[device].shape))
            buffers[device] = staging[device] if given is None else given
            for j, position in enumerate(positions):
                views[position] = buffers[device][:, 0 if layerwise else j]
    state = {"n": 0, "left": 0, "begin": 0, "open": None, "received": 0}

    def hand_over_layer(position):
        """Layerwise sinks: give the layer once all its hook points are in."""
        if state["open"] not in (None, position):
            raise RuntimeError(
                f"The hook points of layers {layout.layers[state['open']]} and "
                f"{layout.layers[position]} ran interleaved, so this sink, which takes one "
                "layer at a time, cannot be used with this model.")
        state["open"], state["received"] = position, state["received"] + 1
        if state["received"] < n_hooks:
            return
        state["open"], state["received"] = None, 0
        block = views[position][:, :state["n"]]
        if not sink.checks_finite:
            refuse_non_finite(block.unsqueeze(1), layout.hooks, [layout.layers[position]],
                              layout.dtype, state["begin"] * kept)
        sink.write_layer(position, block, state["begin"])

    def receive(h, position, x):
        x = x.reshape(-1, window, x.shape[-1])  # (windows, window, features)
        if stride > 1:
            x = x[:, stride - 1::stride]
        if neuron_index:
            x = x.index_select(2, neuron_index[x.device])
        views[position][h, :state["n"]].view(-1, kept, n_neurons).copy_(x)
        if layerwise:
            hand_over_layer(position)
        state["left"] -= 1
        if state["left"] == 0:
            raise _StopForward

    sink.start(layout)
    handles = []
    for h, hook in enumerate(layout.hooks):
        handles += attach_hooks(model, adapter, layout.layers, hook, partial(receive, h))
    n_tokens = sum(min(layout.batch_windows, layout.n_windows - s) for s in starts) * window
    bar = tqdm(total=n_tokens, unit="tok", desc="Recording", disable=not progress, smoothing=0.1)
    error = None
    try:
        with torch.inference_mode():
            for begin in starts:
                batch = torch.as_tensor(input_ids[begin:begin + layout.batch_windows],
                                        dtype=torch.long, device=layout.device)
                state["n"], state["left"] = len(batch) * kept, n_hooks * len(layout.layers)
                state["begin"] = begin
                gather_into_sink_buffers()
                try:
                    model(input_ids=batch, use_cache=False)
                except _StopForward:
                    pass
                if state["left"]:
                    raise RuntimeError(f"{state['left']} of the {n_hooks * len(layout.layers)} "
                                       "hooks did not run in the forward pass: check the adapter.")
                if layerwise:      # the layers are in already: the batch is done
                    sink.write(None, begin)
                else:
                    if not sink.checks_finite:
                        for device, positions in groups.items():
                            refuse_non_finite(buffers[device][:, :, :state["n"]],
                                              layout.hooks, [layout.layers[p] for p in positions],
                                              layout.dtype, begin * kept)
                    sink.write(tuple(view[:, :state["n"]] for view in views), begin)
                bar.update(batch.numel())
    except BaseException as err:
        error = err
    finally:
        for handle in handles:
            handle.remove()
        bar.close()
    if agree and _processes.all_reduce(int(error is not None), op="max") and error is None:
        error = RuntimeError("Another process of the recording failed (see its error), so "
                             "this one stops too.")
    if error is not None:
        sink.abort()
        raise error
    return sink.finish()
