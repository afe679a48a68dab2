"""Sets of MLP neurons and per-neuron values, addressed by (layer, neuron).

The *neurons* of a layer are the input of its MLP output projection. Every
stage that works on chosen neurons (interventions, pruning) reads them through
these two functions, which accept the same forms and check them against the
model:

* :func:`neuron_indices`: a set of neurons, as a boolean DataArray
  ``(layer, neuron)`` or a dict ``{layer: indices or boolean mask}``;
* :func:`neuron_values`: one number per neuron, as a DataArray
  ``(layer, neuron)``, a dict ``{layer: vector}`` or calibration statistics.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from .adapters import get_adapter

__all__ = ["neuron_indices", "neuron_values"]


def _indices_from_bool(values: np.ndarray, n: int | None, layer: int) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"The neuron mask of layer {layer} has shape {values.shape}; "
                         "give one boolean value per neuron (a 1-D array).")
    if n is not None and values.shape[0] != n:
        raise ValueError(f"The neuron mask of layer {layer} has {values.shape[0]} entries but "
                         f"the layer has {n} neurons: the mask was made for another model.")
    return np.flatnonzero(values).astype(np.int64)


def neuron_indices(neurons, model=None) -> dict[int, np.ndarray]:
    """Turn a set of neurons into ``{layer: sorted neuron indices}``.

    Parameters
    ----------
    neurons : xarray.DataArray or dict
        Boolean DataArray with dims ``("layer", "neuron")``, or a dict from
        layer index to neuron indices (or to a boolean array per neuron).
    model : transformers.PreTrainedModel, optional
        When given, the neurons are checked against it: every layer must
        exist and every index must be below the layer's neuron count.

    Returns
    -------
    dict of int to numpy.ndarray
        Sorted, unique int64 indices per layer (layers with no neuron are
        kept, with an empty array).

    Raises
    ------
    ValueError
        If the mask is malformed or does not fit ``model``.
    """
    sizes = None
    if model is not None:
        sizes = get_adapter(model).neurons_per_layer(model)
    result: dict[int, np.ndarray] = {}
    if isinstance(neurons, xr.DataArray):
        if set(neurons.dims) != {"layer", "neuron"}:
            raise ValueError(f"A neuron mask DataArray needs dims ('layer', 'neuron'); got "
                             f"{neurons.dims}. Reduce extra dims first, e.g. mask.any('run').")
        if neurons.dtype != bool:
            raise ValueError(f"A neuron mask DataArray must be boolean, not {neurons.dtype}; "
                             "use e.g. (abs(z) > 3.6) to make one.")
        neurons = neurons.transpose("layer", "neuron")
        if "neuron" in neurons.coords:
            ids = np.asarray(neurons["neuron"].values)
            if not np.array_equal(ids, np.arange(ids.size)):
                raise ValueError("The 'neuron' coordinate of the mask must be 0, 1, ..., n-1 "
                                 "(all neurons of each layer, in order).")
        layers = (neurons["layer"].values if "layer" in neurons.coords
                  else np.arange(neurons.sizes["layer"]))
        items = [(int(layer), neurons.values[i]) for i, layer in enumerate(layers)]
    elif isinstance(neurons, Mapping):
        items = [(int(layer), value) for layer, value in neurons.items()]
    else:
        raise TypeError(f"Neurons must be a boolean xarray.DataArray (layer, neuron) or a dict "
                        f"layer -> indices, not {type(neurons).__name__}.")
    for layer, value in items:
        if sizes is not None and not 0 <= layer < len(sizes):
            raise ValueError(f"The neurons name layer {layer}, but the model has layers "
                             f"0..{len(sizes) - 1}: the mask was made for another model.")
        n = sizes[layer] if sizes is not None else None
        value = np.asarray(value)
        if value.dtype == bool:
            idx = _indices_from_bool(value, n, layer)
        elif value.size == 0 or np.issubdtype(value.dtype, np.integer):
            idx = np.unique(value.astype(np.int64).ravel())
        else:
            raise ValueError(f"The neurons of layer {layer} must be integer indices or a boolean "
                             f"mask, not {value.dtype} values.")
        if idx.size and idx[0] < 0:
            raise ValueError(f"Layer {layer} has a negative neuron index ({idx[0]}).")
        if n is not None and idx.size and idx[-1] >= n:
            raise ValueError(f"Layer {layer} has {n} neurons but the neurons include index "
                             f"{idx[-1]}: the mask was made for another model.")
        result[layer] = idx
    return result


def neuron_values(values, model, layers, what: str = "values") -> dict[int, np.ndarray]:
    """One float per neuron of each of ``layers``, checked against ``model``.

    Parameters
    ----------
    values : xarray.DataArray, dict or xarray.Dataset
        A DataArray with dims ``("layer", "neuron")``, a dict from layer index
        to an array with one value per neuron, or calibration statistics (a
        Dataset from :func:`llmbrain.pruning.collect_calibration_stats`: its
        ``mean``, the neurons' mean input).
    model : transformers.PreTrainedModel
        The model whose neurons the values describe.
    layers : iterable of int
        Layers to return.
    what : str, default="values"
        Name of the values in error messages (the caller's argument name).

    Returns
    -------
    dict of int to numpy.ndarray
        A float64 vector per layer, as long as the layer has neurons.

    Raises
    ------
    ValueError
        If a layer is missing or a vector does not fit the model.
    TypeError
        If ``values`` is of none of the accepted kinds.
    """
    sizes = get_adapter(model).neurons_per_layer(model)
    if isinstance(values, xr.Dataset):
        if "mean" not in values:
            raise TypeError(f"{what} is a Dataset without 'mean': give calibration statistics "
                            "(collect_calibration_stats), a DataArray or a dict of means.")
        widths = values["n_neurons"] if "n_neurons" in values.coords else None
        values = {int(layer): values["mean"].sel(layer=layer).values[
            :None if widths is None else int(widths.sel(layer=layer))]
            for layer in values["layer"].values}
    out = {}
    for layer in layers:
        if isinstance(values, xr.DataArray):
            if "layer" not in values.dims or "neuron" not in values.dims:
                raise ValueError(f"{what} DataArray needs dims ('layer', 'neuron').")
            if layer not in values["layer"].values:
                raise ValueError(f"{what} has no values for layer {layer}.")
            vec = np.asarray(values.sel(layer=layer).values, dtype=np.float64)
        elif isinstance(values, Mapping):
            if layer not in values:
                raise ValueError(f"{what} has no values for layer {layer}.")
            vec = np.asarray(values[layer], dtype=np.float64)
        else:
            raise TypeError(f"{what} must be a DataArray (layer, neuron), a dict layer -> array, "
                            f"or calibration statistics, not {type(values).__name__}.")
        if vec.shape != (sizes[layer],):
            raise ValueError(f"{what} for layer {layer} has shape {vec.shape}; the layer has "
                             f"{sizes[layer]} neurons.")
        out[layer] = vec
    return out
