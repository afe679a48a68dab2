"""Functional networks found while the model runs: one pass, nothing on disk.

:class:`OnlineNetworks` keeps, for every run and layer, a
:class:`~llmbrain.networks._sketch.CorrelationSketch` of the layer's voxels (its
(hook, neuron) pairs): the per-voxel moments and either the exact correlation
matrix or a streaming Nyström sketch of it. Blocks of tokens update the
sketches as they come (:meth:`OnlineNetworks.partial_fit`, or the recording
sink of :meth:`OnlineNetworks.sink`, which the recorder feeds batch by batch
on the device where each layer runs). :meth:`OnlineNetworks.decompose` then
takes each layer's top principal maps from its sketch and unmixes them with
the same FastICA, seeds and post-processing as the offline
:class:`FunctionalNetworks` (``method="fastica"``, ``scope="layer"``), the
layers of a run together (one batch of products per FastICA iteration), so each
run is a fitted :class:`FunctionalNetworks` and several runs a
:class:`NetworkRecurrence`: everything that reads the offline networks
(:func:`llmbrain.pruning.network_scores`, plots, reports) reads these.

Memory is ``size`` floats per voxel (or the voxel count with the exact matrix)
per layer and run, whatever the number of tokens; the cost per token is a
product of its activations with the test matrix's small Kronecker factors and
the product back (``size`` multiply-adds per voxel).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from ..recording.sinks import ActivationSink, non_finite_error
from ._data import as_source
from ._estimator import ActivationsEstimatorMixin, check_positive_int
from ._maps import KEY_NEURON_THRESHOLD, check_threshold, flip_signs
from ._sketch import CorrelationSketch
from ._torch_ica import _draw_seeds
from ._zscore import check_finite
from .decomposition import FunctionalNetworks
from .recurrence import NetworkRecurrence, split_tokens

__all__ = ["OnlineNetworks"]

_SEED_MAX = np.iinfo(np.int32).max


class OnlineNetworks(ActivationsEstimatorMixin, BaseEstimator):
    """Functional networks of each layer from one streamed pass over the tokens.

    The single-pass counterpart of ``FunctionalNetworks(method="fastica",
    scope="layer")`` (the published recipe): each layer's voxels are z-scored,
    reduced to their top principal maps and unmixed with FastICA, but the
    principal maps come from a sketch updated block by block, so no activation
    is kept. Blocks come from a recording (:meth:`sink`, used by
    ``find_networks(..., online=True)``), from :meth:`partial_fit`, or from a
    store read by :meth:`fit`.

    Parameters
    ----------
    n_components : int or "scaled", default="scaled"
        Networks per layer; ``"scaled"`` follows
        :func:`~llmbrain.networks.scaled_components` (the recipe's 128 maps
        for 22,016 voxels, in proportion to the layer's voxels).
    hooks : str or tuple of str, default=("up", "act")
        Hook points recorded by :meth:`sink`; their (hook, neuron) pairs are
        the voxels. :meth:`partial_fit` and :meth:`fit` use the hook points of
        their data.
    n_runs : int, default=1
        Runs fitted on disjoint blocks of consecutive tokens.
    tokens_per_run : int, optional
        Tokens of each run: run ``r`` takes the tokens ``r * tokens_per_run``
        up to ``(r + 1) * tokens_per_run`` in the order they arrive, and
        later tokens are not used. By default the tokens are split into
        ``n_runs`` blocks between documents as :class:`NetworkRecurrence`
        does, which needs the number of tokens in advance: known to
        :meth:`sink` and :meth:`fit`, not to :meth:`partial_fit` (give
        ``tokens_per_run`` there when ``n_runs > 1``).
    sketch_size : int or None, default=512
        Columns of the Nyström sketch of each layer's correlation matrix
        (memory: ``sketch_size`` floats per voxel). None, or a size of at
        least half the voxels, keeps the exact matrix (voxels × voxels).
    fun, max_iter, tol, n_init
        FastICA settings (as :class:`FunctionalNetworks`; the defaults are
        the recipe's).
    threshold : float, default=KEY_NEURON_THRESHOLD
        ``|z|`` of the key neurons of each run.
    random_state : int, RandomState or None, default=0
        Seeds of the sketch and of FastICA; with the same value, each run's
        FastICA starts from the same seeds as the offline fit.
    device : str, optional
        Where the decomposition runs (default: where the sketch is); the
        sketches stay on the device of their layer.
    verbose : int, default=1
        0: silent; 1: a progress bar over layers while decomposing.

    Attributes
    ----------
    runs_ : list of FunctionalNetworks
        The fitted networks of each run.
    networks_ : FunctionalNetworks or NetworkRecurrence
        ``runs_[0]`` with one run, else the runs compared by
        :meth:`NetworkRecurrence.from_runs`.
    n_tokens_seen_ : int
        Tokens received (those beyond the runs included).
    n_components_ : int
    run_edges_ : list of int
        Token offsets where the runs start and the last one ends.

    Examples
    --------
    >>> est = OnlineNetworks(n_runs=2)                               # doctest: +SKIP
    >>> llmbrain.record(model, tokenizer, "corpus.jsonl", sink=est.sink(),
    ...                 hook=est.hooks, max_tokens=8192)             # doctest: +SKIP
    >>> network_scores(est.networks_)                                # doctest: +SKIP
    """

    _fitted_attribute = "networks_"

    def __init__(self, n_components="scaled", *, hooks=("up", "act"), n_runs=1,
                 tokens_per_run=None, sketch_size=512, fun="cube", max_iter=300, tol=1e-4,
                 n_init=1, threshold=KEY_NEURON_THRESHOLD, random_state=0, device=None,
                 verbose=1):
        self.n_components = n_components
        self.hooks = hooks
        self.n_runs = n_runs
        self.tokens_per_run = tokens_per_run
        self.sketch_size = sketch_size
        self.fun = fun
        self.max_iter = max_iter
        self.tol = tol
        self.n_init = n_init
        self.threshold = threshold
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # ------------------------------------------------------------- parameters
    def _check_params(self) -> None:
        if self.n_components != "scaled":
            check_positive_int("n_components", self.n_components)
        check_positive_int("n_runs", self.n_runs)
        check_positive_int("tokens_per_run", self.tokens_per_run, optional=True)
        check_positive_int("sketch_size", self.sketch_size, optional=True)
        check_positive_int("max_iter", self.max_iter)
        check_positive_int("n_init", self.n_init)
        if self.fun not in ("cube", "logcosh", "exp"):
            raise ValueError(f"fun must be 'cube', 'logcosh' or 'exp', got {self.fun!r}.")
        check_threshold(self.threshold)
        check_random_state(self.random_state)
        if self.device is not None:
            torch.device(self.device)

    def _run_estimator(self) -> FunctionalNetworks:
        """The offline estimator each run is equivalent to (unfitted)."""
        return FunctionalNetworks(self.n_components_, method="fastica", scope="layer",
                                  fun=self.fun, max_iter=self.max_iter, tol=self.tol,
                                  n_init=self.n_init, threshold=self.threshold,
                                  random_state=self.random_state,
                                  device=str(self.device or "cpu"), verbose=0)

    # ------------------------------------------------------------------ state
    def _start(self, *, layers, hooks, neurons, attrs, devices, n_tokens=None,
               documents=None) -> None:
        """Empty sketches for the given space; forget earlier tokens."""
        from .from_model import scaled_components

        self._check_params()
        for name in ("runs_", "networks_"):
            self.__dict__.pop(name, None)
        n_voxels = len(hooks) * len(neurons)
        k = (scaled_components(n_voxels) if self.n_components == "scaled"
             else int(self.n_components))
        if k > n_voxels:
            raise ValueError(f"n_components={k} exceeds the {n_voxels} voxels of a layer: "
                             "lower n_components.")
        self.n_components_ = k
        if self.tokens_per_run is not None:
            self.run_edges_ = [r * int(self.tokens_per_run) for r in range(self.n_runs + 1)]
        elif self.n_runs == 1:
            self.run_edges_ = [0, np.iinfo(np.int64).max if n_tokens is None else int(n_tokens)]
        elif n_tokens is None:
            raise ValueError(f"n_runs={self.n_runs} runs need tokens_per_run when the number of "
                             "tokens is not known in advance (partial_fit): give "
                             "tokens_per_run.")
        else:
            edges = split_tokens(int(n_tokens), self.n_runs, documents)
            self.run_edges_ = [edges[0].start] + [block.stop for block in edges]
        self._space = dict(layers=list(layers), hooks=list(hooks),
                           neurons=np.asarray(neurons), attrs=dict(attrs))
        seed = int(check_random_state(copy.deepcopy(self.random_state)).randint(_SEED_MAX))
        self._workspaces: dict = {}        # block buffers, shared by the sketches
        self._sketches = [[CorrelationSketch(n_voxels, self.sketch_size, device=device,
                                             seed=seed, groups=len(hooks),
                                             workspaces=self._workspaces)
                           for device in devices]
                          for _ in range(self.n_runs)]
        self.n_tokens_seen_ = 0

    def _start_from(self, source, **tokens) -> None:
        """:meth:`_start` for the space of an activation source, sketched on ``device``."""
        self._start(layers=source.layers, hooks=_hooks(source),
                    neurons=source.data["neuron"].values, attrs=source.attrs,
                    devices=[torch.device(self.device or "cpu")] * len(source.layers), **tokens)

    def _add(self, blocks, check: bool = False) -> None:
        """Add the next tokens: ``blocks[i]`` holds layer ``i``'s activations,
        shape (hook, tokens, neurons); ``check``: refuse non-finite values."""
        first = self.n_tokens_seen_
        for position, block in enumerate(blocks):
            self._add_layer(position, block, first, check)
        self.n_tokens_seen_ = first + int(blocks[0].shape[1])

    def _add_layer(self, position: int, block, first: int, check: bool = False) -> None:
        """Add the tokens ``first, first + 1, ...`` of the layer at ``position``."""
        last = first + int(block.shape[1])
        for run, sketches in enumerate(self._sketches):
            lo, hi = max(first, self.run_edges_[run]), min(last, self.run_edges_[run + 1])
            if lo >= hi:
                continue
            part = block[:, lo - first:hi - first]
            if check:
                check_finite(part)
            sketches[position].update(part)

    # -------------------------------------------------------------- feeding
    def sink(self) -> ActivationSink:
        """A recording sink that feeds this estimator; its ``finish`` decomposes.

        Give it to :func:`llmbrain.record` with ``hook=self.hooks`` (the
        recorder then returns this estimator, fitted). Under ``torchrun``,
        each process's sketches receive its own batches and are added over
        the processes before the decomposition.
        """
        return _OnlineSink(self)

    def partial_fit(self, X, y=None) -> OnlineNetworks:
        """Add a block of activations (the following tokens).

        Parameters
        ----------
        X : xarray.DataArray or Dataset
            Activations (token, [hook,] layer, neuron) of the same layers,
            hook points and neurons as the earlier blocks.
        y : None
            Ignored.

        Returns
        -------
        self
            With the sketches updated; call :meth:`decompose` to find the
            networks of the tokens so far.
        """
        source = as_source(X)
        space = (source.layers, _hooks(source), source.data["neuron"].values.tolist())
        if not hasattr(self, "_sketches"):
            self._start_from(source)
        elif space != (self._space["layers"], self._space["hooks"],
                       self._space["neurons"].tolist()):
            raise ValueError("This block holds other layers, hook points or neurons than the "
                             f"earlier ones ({self._space['layers']}, {self._space['hooks']}): "
                             "give blocks of the same space, or start over with fit.")
        self._add_source(source)
        return self

    def _add_source(self, source, batch_tokens: int = 4096) -> None:
        positions = list(range(len(source.layers)))
        shape = (source.n_tokens, source.n_hooks, len(positions), source.n_neurons)
        for start in range(0, shape[0], batch_tokens):
            tokens = slice(start, min(start + batch_tokens, shape[0]))
            block = torch.from_numpy(source.read(tokens, positions)).view(
                tokens.stop - start, *shape[1:])
            self._add([block[:, :, i].transpose(0, 1) for i in positions], check=True)

    def fit(self, X, y=None) -> OnlineNetworks:
        """Stream a recording through the sketches and find its networks.

        Parameters
        ----------
        X : path, xarray.Dataset or DataArray
            Activations (token, [hook,] layer, neuron), e.g. a store written
            by :func:`llmbrain.record` (read block by block).
        y : None
            Ignored.

        Returns
        -------
        self
        """
        source = as_source(X)
        documents = (np.asarray(source.data["document"].values)
                     if "document" in source.data.coords else None)
        self._start_from(source, n_tokens=source.n_tokens, documents=documents)
        self._add_source(source)
        return self.decompose()

    # ------------------------------------------------------------ decomposing
    def decompose(self) -> OnlineNetworks:
        """Find the networks of every run from the tokens received so far.

        Returns
        -------
        self
            With ``runs_`` and ``networks_`` set.
        """
        if not hasattr(self, "_sketches"):
            raise ValueError("No tokens were given yet: call partial_fit, fit, or record "
                             "through sink() first.")
        self._workspaces.clear()       # the block buffers (GBs on a 7B model's GPU)
        k, space = self.n_components_, self._space
        layers, hooks = space["layers"], space["hooks"]
        n_hooks, n_neurons = len(hooks), len(space["neurons"])
        runs = []
        bar = tqdm(total=self.n_runs * len(layers), desc="networks", unit="layer",
                   disable=not self.verbose)
        for run, sketches in enumerate(self._sketches):
            if sketches[0].n < max(2, k):
                raise ValueError(f"Run {run} received {sketches[0].n} tokens, fewer than "
                                 f"n_components={k}: give more tokens or fewer runs.")
            estimator = self._run_estimator()
            rng = check_random_state(copy.deepcopy(self.random_state))
            raw = np.zeros((len(layers) * k, n_hooks, len(layers), n_neurons), np.float32)
            info = {"units": [], "online": {"sketch_size": sketches[0].size,
                                            "exact": sketches[0].exact}}
            maps, seeds = [], []
            for position, sketch in enumerate(sketches):
                varying = int((sketch.std() > 0).sum())
                if varying < k:
                    raise ValueError(
                        f"Only {varying} of {sketch.n_voxels} voxels of layer "
                        f"{layers[position]} vary over the tokens of run {run}, fewer than "
                        f"n_components={k}: the activations hold no networks to find.")
                # the seeds the offline fit draws for this layer: its PCA's, then FastICA's
                rng.randint(_SEED_MAX)
                seeds.append(_draw_seeds(rng, self.n_init))
                maps.append(sketch.principal_maps(k)[0].to(self.device or sketches[0].device))
                bar.update()
            # every layer's FastICA at once: the same seeds as layer by layer
            unmixed = estimator._unmix_units(torch.stack(maps), seeds, rng)
            for position, (sources, unit_info) in enumerate(unmixed):
                raw[position * k:(position + 1) * k, :, position] = flip_signs(
                    sources).reshape(k, n_hooks, n_neurons)
                info["units"].append({"layers": [layers[position]], "n_groups": 1, **unit_info})
            estimator._set_fitted(
                [[i] for i in range(len(layers))], raw, info, layers=layers,
                hooks=hooks if n_hooks > 1 else None, neurons=space["neurons"],
                n_tokens=sketches[0].n, attrs=space["attrs"],
                mean=np.stack([s.mean.cpu().numpy().reshape(n_hooks, n_neurons)
                               for s in sketches], axis=1),
                scale=np.stack([s.std().cpu().numpy().reshape(n_hooks, n_neurons)
                                for s in sketches], axis=1))
            runs.append(estimator)
        bar.close()
        self.runs_ = runs
        self.networks_ = runs[0] if len(runs) == 1 else NetworkRecurrence.from_runs(runs)
        return self

    def summary(self) -> str:
        """The summary of the fitted networks (see ``networks_``)."""
        check_is_fitted(self)
        return self.networks_.summary()


def _hooks(source) -> list[str]:
    """The hook points of a source's voxels (one recorded hook point has no ``hook`` dim)."""
    return source.hooks or [str(source.attrs.get("hook", "mlp"))]


class _OnlineSink(ActivationSink):
    """Feed each recorded layer to an :class:`OnlineNetworks`, as soon as it is done.

    It checks the values itself: a block holding inf or NaN makes the sums of its
    sketch non-finite, which costs one test per device and batch instead of the
    recorder's pass over every batch.
    """

    checks_finite = True
    layerwise = True

    def __init__(self, estimator: OnlineNetworks) -> None:
        self.estimator = estimator

    def start(self, layout) -> None:
        super().start(layout)
        documents = layout.coords.get("document")
        self.estimator._start(layers=layout.layers, hooks=layout.hooks, neurons=layout.neurons,
                              attrs=layout.attrs, devices=layout.devices,
                              n_tokens=layout.n_tokens,
                              documents=None if documents is None else np.asarray(documents[1]))
        self._tokens = 0

    def write_layer(self, position: int, block, first_window: int) -> None:
        self._tokens = int(block.shape[1])
        self.estimator._add_layer(position, block, first_window * self.layout.tokens_per_window)

    def write(self, blocks, first_window: int) -> None:
        if blocks is not None:                 # a whole batch (from a SplitSink)
            for position, block in enumerate(blocks):
                self.write_layer(position, block, first_window)
        first = first_window * self.layout.tokens_per_window
        # under torchrun, the batches between this process's ones are other processes'
        self.estimator.n_tokens_seen_ = first + self._tokens
        self._refuse_non_finite(first)

    def _refuse_non_finite(self, first: int) -> None:
        by_device: dict = {}
        for sketches in self.estimator._sketches:
            for sketch in sketches:
                by_device.setdefault(sketch.device, []).append(sketch.sum)
        if all(bool(torch.isfinite(torch.stack(sums)).all()) for sums in by_device.values()):
            return
        layout = self.layout
        for sketches in self.estimator._sketches:
            for position, sketch in enumerate(sketches):
                bad = (~torch.isfinite(sketch.sum)).nonzero()
                if len(bad):
                    hook = layout.hooks[int(bad[0]) // len(layout.neurons)]
                    raise non_finite_error(layout.layers[position],
                                           hook if len(layout.hooks) > 1 else None,
                                           layout.dtype, first)

    def finish(self) -> OnlineNetworks:
        from ..distributed import all_reduce

        est = self.estimator
        if self.layout.shared:
            for sketches in est._sketches:
                for sketch in sketches:
                    sketch.all_reduce()
            est.n_tokens_seen_ = int(all_reduce(torch.tensor(est.n_tokens_seen_), op="max"))
        return est.decompose()
