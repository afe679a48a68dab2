"""Checks and conversions of the inputs accepted by the plotting functions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["above_threshold", "check_columns", "check_dataarray", "component_labels",
           "layer_values", "select_component"]


def check_dataarray(obj, name: str, allowed_dims: list[tuple[str, ...]]) -> xr.DataArray:
    """Return ``obj`` transposed to the first of ``allowed_dims`` it matches.

    Raises a ``TypeError`` / ``ValueError`` that says which dims were expected.
    """
    expected = " or ".join(str(d) for d in allowed_dims)
    if not isinstance(obj, xr.DataArray):
        raise TypeError(f"{name} must be an xarray.DataArray with dims {expected}; "
                        f"got {type(obj).__name__}. Wrap a NumPy array with "
                        f"xarray.DataArray(array, dims=...).")
    for dims in allowed_dims:
        if set(obj.dims) == set(dims) and len(obj.dims) == len(dims):
            out = obj.transpose(*dims)
            if 0 in out.shape:
                raise ValueError(f"{name} is empty (shape {dict(out.sizes)}).")
            return out
    raise ValueError(f"{name} must have dims {expected}; got dims {tuple(obj.dims)}. "
                     f"Rename dims with .rename(...) or select a single entry with .sel(...).")


def check_columns(df, name: str, required, optional=()) -> pd.DataFrame:
    """Check that ``df`` is a non-empty DataFrame holding the ``required`` columns."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas.DataFrame, got {type(df).__name__}.")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{name} lacks the column(s) {missing}; it needs columns "
                         f"{list(required)}"
                         + (f" (optionally {list(optional)})" if optional else "")
                         + f" and has {list(df.columns)}.")
    if len(df) == 0:
        raise ValueError(f"{name} has no rows.")
    return df


def layer_values(da: xr.DataArray) -> np.ndarray:
    """Model layer indices of ``da`` (its ``layer`` coordinate, else 0..n-1)."""
    if "layer" in da.coords:
        return np.asarray(da["layer"].values)
    return np.arange(da.sizes["layer"])


def component_labels(da: xr.DataArray, dim: str = "component") -> list[str]:
    """Readable labels of the entries along ``dim`` (coordinate values, else indices)."""
    values = da[dim].values if dim in da.coords else np.arange(da.sizes[dim])
    return [str(v) for v in values]


def select_component(da: xr.DataArray, component, name: str) -> xr.DataArray:
    """Select one component by coordinate value (or by position if there is no coordinate)."""
    if "component" in da.coords:
        values = list(da["component"].values)
        if component not in values:
            raise ValueError(f"component {component!r} is not in {name}; "
                             f"available components: {values[:20]}"
                             f"{' ...' if len(values) > 20 else ''}.")
        return da.sel(component=component)
    if not (isinstance(component, (int, np.integer)) and 0 <= component < da.sizes["component"]):
        raise ValueError(f"component must be an integer in [0, {da.sizes['component']}); "
                         f"got {component!r}.")
    return da.isel(component=int(component))


def above_threshold(values: np.ndarray, threshold) -> np.ndarray:
    """The key-neuron rule of the estimators: ``|z| > threshold`` (strict; NaN is never key)."""
    with np.errstate(invalid="ignore"):
        return np.abs(values) > threshold
