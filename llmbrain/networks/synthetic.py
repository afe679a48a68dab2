"""Synthetic activations with planted networks (known ground truth)."""

from __future__ import annotations

import numpy as np
import xarray as xr

__all__ = ["planted_networks"]


def planted_networks(n_tokens: int = 2000, n_layers: int = 3, n_neurons: int = 48,
                     n_networks: int = 4, network_size: int = 12, noise: float = 1.0,
                     within_layer: bool = False, window_length: int = 100, seed: int = 0,
                     dtype=np.float32, return_time_courses: bool = False,
                     hooks=None) -> tuple:
    """Activations that are sparse networks with heavy-tailed time courses plus noise.

    Parameters
    ----------
    n_tokens, n_layers, n_neurons : int
        Shape of the activations (token, layer, neuron).
    n_networks : int
        Number of planted networks.
    network_size : int
        Voxels per network (drawn without overlap between networks when possible).
    noise : float
        Standard deviation of the Gaussian noise added to every neuron.
    within_layer : bool
        Draw each network's voxels inside one layer (network ``i`` in layer
        ``i % n_layers``), as ``scope="layer"`` expects.
    window_length : int
        Tokens per document (sets the ``document`` and ``position`` coordinates).
    seed : int
    dtype : numpy dtype
        Of the returned activations.
    return_time_courses : bool
        Also return the planted time courses.
    hooks : sequence of str, optional
        Names of several hook points: the activations are then
        ``(token, hook, layer, neuron)`` and a network's voxels are drawn
        among the (hook, neuron) pairs, so that networks span the hook points.

    Returns
    -------
    activations : xarray.DataArray (token, [hook,] layer, neuron)
        With coordinates ``document``, ``position``, ``token_id`` and ``token_text``.
    maps : xarray.DataArray (network, [hook,] layer, neuron)
        The planted spatial maps (weights, zero outside each network).
    time_courses : xarray.DataArray (token, network)
        Only with ``return_time_courses``: how strongly each network is active
        at each token.
    """
    rng = np.random.default_rng(seed)
    hooks = None if hooks is None else [str(h) for h in hooks]
    n_hooks = 1 if hooks is None else len(hooks)
    n_vox = n_hooks * n_layers * n_neurons
    layer_size = n_hooks * n_neurons          # voxels of a layer: its (hook, neuron) pairs
    maps = np.zeros((n_networks, n_layers, n_hooks, n_neurons))
    free = [list(rng.permutation(layer_size)) for _ in range(n_layers)]
    free_all = list(rng.permutation(n_vox))
    for i in range(n_networks):
        weights = rng.uniform(1.0, 2.0, network_size) * rng.choice([-1, 1], network_size, p=[.2, .8])
        if within_layer:
            layer = i % n_layers
            pool = free[layer] if len(free[layer]) >= network_size else list(
                rng.permutation(layer_size))
            chosen, free[layer] = pool[:network_size], pool[network_size:]
            maps[i, layer].reshape(-1)[chosen] = weights
        else:
            pool = free_all if len(free_all) >= network_size else list(rng.permutation(n_vox))
            chosen, free_all = pool[:network_size], pool[network_size:]
            maps[i].reshape(-1)[chosen] = weights
    maps = maps.transpose(0, 2, 1, 3)         # (network, hook, layer, neuron)
    # Heavy-tailed, sparse time courses (a network is "on" for few tokens).
    courses = rng.laplace(size=(n_tokens, n_networks)) * (rng.random((n_tokens, n_networks)) < 0.3)
    courses *= 3.0
    values = courses @ maps.reshape(n_networks, -1) + noise * rng.standard_normal((n_tokens, n_vox))
    token_id = rng.integers(0, 256, n_tokens)
    hook = {} if hooks is None else {"hook": hooks}
    if hooks is None:
        maps = maps[:, 0]
    coords = {**hook, "layer": np.arange(n_layers), "neuron": np.arange(n_neurons),
              "document": ("token", np.arange(n_tokens) // window_length),
              "position": ("token", np.arange(n_tokens) % window_length),
              "token_id": ("token", token_id),
              "token_text": ("token", np.array([chr(32 + t % 90) for t in token_id]))}
    attrs = {"model": "synthetic", **({"hook": "mlp"} if hooks is None else {"hooks": hooks})}
    activations = xr.DataArray(values.reshape(n_tokens, *maps.shape[1:]).astype(dtype),
                               dims=("token", *hook, "layer", "neuron"), coords=coords,
                               name="activations", attrs=attrs)
    truth = xr.DataArray(maps, dims=("network", *hook, "layer", "neuron"),
                         coords={**hook, "layer": np.arange(n_layers),
                                 "neuron": np.arange(n_neurons)},
                         name="planted_maps")
    if return_time_courses:
        return activations, truth, xr.DataArray(courses, dims=("token", "network"),
                                                name="planted_time_courses")
    return activations, truth
