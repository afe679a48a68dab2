"""How reliably networks recur across runs on different samples."""

from __future__ import annotations

import numpy as np
import xarray as xr

from ._style import SEQUENTIAL_CMAP, figure_and_axes, finish, plot_style, text_color_on

__all__ = ["plot_recurrence"]


def _as_matrix(similarity, dims):
    if isinstance(similarity, xr.Dataset):
        if "match_r" not in similarity:
            raise ValueError("A Dataset passed as similarity must hold 'match_r' (run, component), "
                             f"as returned by compare_runs; it has {list(similarity.data_vars)}.")
        similarity = similarity["match_r"]
    if isinstance(similarity, xr.DataArray):
        if similarity.ndim != 2:
            raise ValueError("similarity must be 2-D, with dims (run, component) or two component "
                             f"dims; got dims {tuple(similarity.dims)}.")
        if "run" in similarity.dims:
            if "component" not in similarity.dims:
                raise ValueError("similarity with a 'run' dim must have dims (run, component); "
                                 f"got {tuple(similarity.dims)}.")
            similarity = similarity.transpose("run", "component")
        return similarity
    try:
        array = np.asarray(similarity, dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError("similarity must be an xarray.DataArray or a 2-D array of numbers; "
                        f"got {type(similarity).__name__}.") from err
    if array.ndim != 2:
        raise ValueError(f"similarity must be 2-D (runs × networks or networks × networks); "
                         f"got shape {array.shape}.")
    dims = dims or ("run", "component")
    if len(dims) != 2 or len(set(dims)) != 2:
        raise ValueError(f"dims must name the two axes with different names; got {dims!r}.")
    return xr.DataArray(array, dims=tuple(dims))


def _labels(da, dim):
    if dim in da.coords:
        return [str(v) for v in da[dim].values]
    return [str(i) for i in range(da.sizes[dim])]


def _dim_title(dim: str) -> str:
    if dim == "run":
        return "Run"
    if dim == "component":
        return "Network"
    if dim.startswith("component_"):
        return f"Network (run {dim[len('component_'):]})"
    return dim.replace("_", " ").capitalize()


def plot_recurrence(similarity, *, dims=None, annotate="auto", vmin=0.0, vmax=1.0,
                    threshold=None, ax=None, title=None, output_file=None):
    """Plot matched similarity (|r|) of networks across runs as an annotated heatmap.

    Parameters
    ----------
    similarity : xarray.DataArray, xarray.Dataset or 2-D array
        Matched |r| of each network. Either dims (run, component): for each
        run, the similarity of its network matched to each reference network;
        or two component dims (e.g. ``component_a``, ``component_b``): the
        network × network similarity between two runs. Signed correlations
        are drawn as their absolute value. A Dataset from
        :func:`llmbrain.networks.compare_runs` is read through its
        ``match_r`` variable (and its ``cutoff`` attribute is the default
        ``threshold``).
    dims : tuple of two str, optional
        Names of the axes of a NumPy ``similarity``; default
        ``("run", "component")``.
    annotate : "auto" or bool
        Write each value in its cell ("auto": up to 400 cells).
    vmin, vmax : float
        Colour limits (default 0 to 1, the range of |r|).
    threshold : float, optional
        In the (run, component) view, mark values below it with a black
        outline (e.g. the |r| at which a network counts as recurring).
    ax : matplotlib.axes.Axes, optional
        Axes to draw in.
    title : str, optional
        Axes title.
    output_file : str or Path, optional
        Save the figure there (``.png``, ``.pdf`` or ``.svg``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    reference = None
    if isinstance(similarity, xr.Dataset):
        reference = similarity.attrs.get("reference")
        if threshold is None:
            threshold = similarity.attrs.get("cutoff")
    da = _as_matrix(similarity, dims)
    values = np.abs(np.asarray(da.values, dtype=float))
    if 0 in values.shape:
        raise ValueError(f"similarity is empty (shape {values.shape}).")
    row_dim, col_dim = da.dims
    rows, cols = _labels(da, row_dim), _labels(da, col_dim)
    if reference is not None and row_dim == "run" and 0 <= reference < len(rows):
        rows[reference] += " (reference)"
    if annotate == "auto":
        annotate = values.size <= 400
    n_rows, n_cols = values.shape
    with plot_style():
        fig, ax = figure_and_axes(ax, (min(1.6 + 0.45 * n_cols, 16), min(1.3 + 0.38 * n_rows, 12)))
        img = ax.imshow(values, cmap=SEQUENTIAL_CMAP, vmin=vmin, vmax=vmax, aspect="auto",
                        interpolation="nearest")
        ax.set_xticks(np.arange(n_cols), cols, rotation=0 if max(map(len, cols)) <= 3 else 45,
                      ha="center" if max(map(len, cols)) <= 3 else "right")
        ax.set_yticks(np.arange(n_rows), rows)
        ax.set_xlabel(_dim_title(col_dim))
        ax.set_ylabel(_dim_title(row_dim))
        ax.spines[:].set_visible(False)
        ax.tick_params(length=0)
        if annotate:
            for (i, j), v in np.ndenumerate(values):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color=text_color_on(img.cmap(img.norm(v))))
        if threshold is not None and row_dim == "run":
            for i, j in zip(*np.nonzero(values < threshold)):
                ax.add_patch(_outline(j, i))
        fig.colorbar(img, ax=ax, label="Matched similarity |r|", shrink=0.9)
        if title is None:
            title = ("Network recurrence across runs" if row_dim == "run"
                     else "Network similarity between two runs")
            if threshold is not None and row_dim == "run":
                title += f" (outlined in white: |r| < {threshold:g})"
        ax.set_title(title)
    return finish(fig, output_file)


def _outline(x, y):
    from matplotlib.patches import Rectangle
    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="white", linewidth=1.6)
