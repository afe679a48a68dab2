"""Record the activations of a causal LM over a corpus into a store."""

from __future__ import annotations

import queue
import shutil
import threading
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import zarr
from tqdm.auto import tqdm

from ..corpus import TokenWindows, load_corpus, tokenize_windows
from ..models.adapters import get_adapter
from ..models.loading import model_fingerprint
from .hooks import HOOK_POINTS, attach_hooks
from .store import (IDENTITY_KEYS, create_store, mark_progress, open_activations,
                    read_progress, store_attrs)

__all__ = ["record"]


class _StopForward(Exception):
    """Raised after the last recorded layer: the rest of the model is not run."""


def _check_selection(values, size: int, what: str) -> list[int]:
    if values is None:
        return list(range(size))
    values = [int(v) for v in np.atleast_1d(values)]
    bad = [v for v in values if not -size <= v < size]
    if bad:
        raise ValueError(f"{what} {bad} out of range: the model has {size} {what}s "
                         f"(0 to {size - 1}).")
    values = sorted({v % size for v in values})
    if not values:
        raise ValueError(f"The {what} selection is empty.")
    return values


def _feature_size(model, adapter, layers, hook, device) -> list[int]:
    """Size of the hooked tensor of every selected layer (one tiny forward)."""
    sizes = {}
    handles = attach_hooks(model, adapter, layers, hook,
                           lambda pos, x: sizes.__setitem__(pos, int(x.shape[-1])))
    try:
        with torch.inference_mode():
            model(input_ids=torch.zeros((1, 2), dtype=torch.long, device=device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return [sizes[i] for i in range(len(layers))]


def _token_texts(tokenizer, ids: np.ndarray) -> np.ndarray:
    unique, inverse = np.unique(ids, return_inverse=True)
    texts = np.array([tokenizer.decode([int(i)]) for i in unique], dtype=object)
    return texts[inverse].astype(str)


def _check_disk(path: Path, n_bytes: int) -> None:
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = parent / f".{path.name}.write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"Cannot write the store at {path}: {err}. Choose a writable "
                              "folder.") from err
    free = shutil.disk_usage(parent).free
    if n_bytes > free:
        raise OSError(f"The store at {path} needs {n_bytes / 1e9:.2f} GB but the disk has only "
                      f"{free / 1e9:.2f} GB free: free some space, record fewer tokens "
                      "(max_tokens) or layers, or use dtype='float16'.")


class _Writer(threading.Thread):
    """Writes batches to the Zarr array in the background (double buffering)."""

    def __init__(self, array: zarr.Array, path: Path):
        super().__init__(daemon=True)
        self.array, self.path = array, path
        self.jobs: queue.Queue = queue.Queue(maxsize=1)
        self.free: queue.Queue = queue.Queue()
        self.error: BaseException | None = None

    def run(self):
        while (job := self.jobs.get()) is not None:
            buffer, token_start, n_tokens, windows_done = job
            try:
                if self.error is None:
                    values = buffer.numpy()
                    for layer in range(values.shape[0]):
                        self.array[token_start:token_start + n_tokens, layer, :] = \
                            values[layer, :n_tokens]
                    mark_progress(self.path, windows_done)
            except BaseException as err:  # re-raised in the recording thread
                self.error = err
            self.free.put(buffer)

    def submit(self, buffer, token_start, n_tokens, windows_done):
        if self.error is not None:
            raise self.error
        self.jobs.put((buffer, token_start, n_tokens, windows_done))

    def close(self):
        self.jobs.put(None)
        self.join()
        if self.error is not None:
            raise self.error


def record(model, tokenizer, corpus="default", path="activations.zarr", *, hook: str = "mlp",
           layers=None, neurons=None, window: int = 256, batch_size: int = 8,
           dtype: str = "float16", max_tokens: int | None = None, resume: bool = True,
           overwrite: bool = False, text_field: str = "text", progress: bool = True):
    """Record a model's activations over a corpus into a Zarr store.

    The corpus is cut into windows of ``window`` tokens (see
    :func:`llmbrain.corpus.tokenize_windows`); each batch of windows is run
    through the model, the hooked activations are copied into a float16 (or
    float32) buffer and written to disk in the background while the next batch
    runs, so memory stays constant whatever the number of tokens. The forward
    pass stops after the last requested layer and never runs the language-model
    head.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A causal LM with a registered architecture adapter.
    tokenizer : transformers tokenizer
    corpus : str, path, list of str or TokenWindows, default="default"
        Anything :func:`llmbrain.corpus.load_corpus` accepts, or windows
        already cut by :func:`llmbrain.corpus.tokenize_windows`.
    path : str or path, default="activations.zarr"
        Folder of the store.
    hook : {"mlp", "up", "gate", "act", "residual", "attention"}, default="mlp"
        Where to read activations (see :mod:`llmbrain.recording.hooks`).
    layers : sequence of int, optional
        Layers to record (default: all).
    neurons : sequence of int, optional
        Indices of the neurons (features) to keep in every layer (default: all).
    window : int, default=256
        Tokens per window.
    batch_size : int, default=8
        Windows per forward pass; also the number of windows per chunk on disk.
    dtype : {"float16", "float32"}, default="float16"
        Storage type.
    max_tokens : int, optional
        Record at most this many tokens.
    resume : bool, default=True
        Continue an interrupted recording at ``path`` made with the same model,
        hook, selection and corpus. A store made otherwise is refused.
    overwrite : bool, default=False
        Replace an existing store at ``path``.
    text_field : str, default="text"
        Field of JSONL records holding the text.
    progress : bool, default=True
        Show a progress bar.

    Returns
    -------
    xarray.Dataset
        The store, opened with :func:`llmbrain.open_activations`.
    """
    if hook not in HOOK_POINTS:
        raise ValueError(f"Unknown hook {hook!r}; choose one of {', '.join(HOOK_POINTS)}.")
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}.")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    path = Path(path).expanduser()
    adapter = get_adapter(model)
    layers = _check_selection(layers, adapter.n_layers(model), "layer")
    device = next(model.parameters()).device
    sizes = _feature_size(model, adapter, layers, hook, device)
    if len(set(sizes)) != 1:
        raise ValueError(f"The selected layers have different sizes {sorted(set(sizes))} at "
                         f"hook {hook!r} (a pruned model?): record groups of equal layers "
                         "separately with layers=....")
    neurons = _check_selection(neurons, sizes[0], "neuron")
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
    n_tokens = windows.n_tokens
    attrs = {
        "model": str(model.config.name_or_path), "model_fingerprint": model_fingerprint(model),
        "architecture": adapter.name, "hook": hook, "dtype": dtype, "window_length": int(window),
        "corpus_fingerprint": windows.fingerprint, "layers": layers,
        "neurons_selected": neurons if len(neurons) < sizes[0] else "all",
        "n_tokens": n_tokens, "batch_windows": int(batch_size),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    start_window = _prepare_store(path, attrs, resume, overwrite)
    if start_window is None:  # already complete
        return open_activations(path)
    if start_window == 0:
        if path.exists():
            shutil.rmtree(path)
        itemsize = np.dtype(dtype).itemsize
        _check_disk(path, n_tokens * len(layers) * len(neurons) * itemsize)
        ids = windows.input_ids.reshape(-1)
        create_store(path, n_tokens=n_tokens, layers=layers, neurons=neurons, dtype=dtype,
                     tokens_per_chunk=int(batch_size) * int(window), attrs=attrs, coords={
                         "document": np.repeat(windows.document, window),
                         "position": np.tile(np.arange(window, dtype=np.int32), len(windows)),
                         "token_id": ids.astype(np.int32),
                         "token_text": _token_texts(tokenizer, ids),
                     })
    _run(model, adapter, windows.input_ids, path, layers, neurons, hook, int(batch_size),
         dtype, start_window, device, progress)
    mark_progress(path, len(windows), complete=True)
    return open_activations(path)


def _prepare_store(path: Path, attrs: dict, resume: bool, overwrite: bool) -> int | None:
    """Window to start from (0 for a new store), or None if already complete."""
    if not path.exists() or overwrite:
        return 0
    try:
        existing = store_attrs(path)
        progress = read_progress(path)
    except (FileNotFoundError, ValueError, KeyError) as err:
        raise FileExistsError(f"{path} exists and is no llmbrain activation store ({err}). "
                              "Choose another path or pass overwrite=True.") from None
    differences = [f"{key}: store has {existing.get(key)!r}, this recording {attrs[key]!r}"
                   for key in IDENTITY_KEYS if existing.get(key) != attrs[key]]
    if differences:
        raise FileExistsError(
            f"The store {path} was recorded with other settings, so this recording cannot "
            f"continue it ({'; '.join(differences)}). Choose another path, or pass "
            "overwrite=True to replace it.")
    if progress["complete"]:
        return None
    if not resume:
        raise FileExistsError(f"{path} holds an interrupted recording. Pass resume=True to "
                              "continue it or overwrite=True to start again.")
    return int(progress["windows_written"])


def _run(model, adapter, input_ids, path, layers, neurons, hook, batch_size, dtype,
         start_window, device, progress):
    n_windows, window = input_ids.shape
    n_layers, n_neurons = len(layers), len(neurons)
    all_neurons = n_neurons == int(neurons[-1]) + 1
    neuron_index = None if all_neurons else torch.as_tensor(neurons, device=device)
    torch_dtype = getattr(torch, dtype)
    on_cuda = device.type == "cuda"
    staging = torch.empty((n_layers, batch_size * window, n_neurons), dtype=torch_dtype,
                          device=device)
    array = zarr.open_group(path, mode="r+")["activations"]
    writer = _Writer(array, path)
    for _ in range(2):
        host = torch.empty((n_layers, batch_size * window, n_neurons), dtype=torch_dtype,
                           pin_memory=on_cuda)
        writer.free.put(host)
    state = {"n": 0}

    def sink(position, x):
        x = x.reshape(-1, x.shape[-1])
        if neuron_index is not None:
            x = x.index_select(1, neuron_index)
        staging[position, :state["n"]].copy_(x)
        if position == n_layers - 1:
            raise _StopForward

    handles = attach_hooks(model, adapter, layers, hook, sink)
    writer.start()
    bar = tqdm(total=n_windows * window, initial=start_window * window, unit="tok",
               desc="Recording", disable=not progress, smoothing=0.1)
    try:
        with torch.inference_mode():
            for begin in range(start_window, n_windows, batch_size):
                batch = torch.as_tensor(input_ids[begin:begin + batch_size], dtype=torch.long,
                                        device=device)
                state["n"] = batch.numel()
                try:
                    model(input_ids=batch, use_cache=False)
                except _StopForward:
                    pass
                host = writer.free.get()
                host[:, :state["n"]].copy_(staging[:, :state["n"]], non_blocking=on_cuda)
                if on_cuda:
                    torch.cuda.current_stream().synchronize()
                writer.submit(host, begin * window, state["n"], begin + len(batch))
                bar.update(state["n"])
    finally:
        for handle in handles:
            handle.remove()
        bar.close()
        writer.close()
