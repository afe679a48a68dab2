"""Network time courses over tokens, with the tokens written along the x axis."""

from __future__ import annotations

import math

import numpy as np
import xarray as xr
import matplotlib as mpl
from matplotlib.ticker import MaxNLocator

from ._inputs import check_dataarray, component_labels, select_component
from ._style import DIVERGING_CMAP, color_of_label, finish, new_figure, plot_style

__all__ = ["plot_timecourses"]

_MAX_LABELS = 100  # token labels written at most; beyond, every k-th token is labelled


def token_label(text) -> str:
    """A token's text made visible and safe for matplotlib (no mathtext, no hidden whitespace)."""
    text = str(text)
    if text == "":
        return "∅"
    text = text.replace("\n", "↵").replace("\t", "⇥").replace("\r", "")
    if text.strip() == "":
        text = "␣" * len(text)
    return text.replace("$", r"\$")


def _token_texts(timecourses: xr.DataArray, token_text) -> list[str]:
    if token_text is None:
        if "token_text" not in timecourses.coords:
            raise ValueError("timecourses has no 'token_text' coordinate; pass token_text=, "
                             "a sequence with one string per token.")
        token_text = timecourses["token_text"].values
    token_text = list(np.asarray(token_text).ravel())
    if len(token_text) != timecourses.sizes["token"]:
        raise ValueError(f"token_text has {len(token_text)} entries but timecourses has "
                         f"{timecourses.sizes['token']} tokens.")
    return [token_label(t) for t in token_text]


def _document_breaks(timecourses: xr.DataArray) -> np.ndarray:
    if "document" not in timecourses.coords or timecourses.sizes["token"] < 2:
        return np.array([], dtype=int)
    doc = np.asarray(timecourses["document"].values)
    breaks = np.flatnonzero(doc[1:] != doc[:-1]) + 1
    if "position" in timecourses.coords:  # a new window of the same document also starts anew
        pos = np.asarray(timecourses["position"].values)
        breaks = np.union1d(breaks, np.flatnonzero(pos[1:] < pos[:-1]) + 1)
    return breaks


def _token_axis(ax, labels):
    n = len(labels)
    step = max(1, math.ceil(n / _MAX_LABELS))
    pos = np.arange(0, n, step)
    ax.set_xticks(pos, [labels[p] for p in pos], rotation=90, fontsize=7 if n > 40 else 8)
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_xlabel("Token" if step == 1 else f"Token (one in {step} labelled)")


def plot_timecourses(timecourses, token_text=None, components=None, start=0, stop=None, *,
                     kind="auto", value_label="Network activity (a.u.)", output_file=None):
    """Plot network time courses over tokens, showing which words drive which network.

    Parameters
    ----------
    timecourses : xarray.DataArray, dims (token, component)
        Network signals, one value per token and network; coordinates
        ``token_text`` (and optionally ``document``, ``position``) on ``token``.
    token_text : sequence of str, optional
        Text of each token of ``timecourses``; default its ``token_text``
        coordinate.
    components : list, optional
        Networks to draw (values of the ``component`` coordinate); default all.
    start, stop : int, optional
        Token positions to draw, ``timecourses[start:stop]`` (default: from
        ``start`` up to 60 tokens, so the words stay readable).
    kind : {"auto", "lines", "heatmap", "both"}
        ``"lines"``: small multiples, one panel per network with its own
        value ticks, on a shared token axis and a shared value scale;
        ``"heatmap"``: one network × token image; ``"both"``: the heatmap
        above the small multiples. ``"auto"``: small multiples for up to 12
        networks, else the heatmap.
    value_label : str
        Label of the colour bar / value axis.
    output_file : str or Path, optional
        Save the figure there (``.png``, ``.pdf`` or ``.svg``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    timecourses = check_dataarray(timecourses, "timecourses", [("token", "component")])
    if kind not in ("auto", "both", "heatmap", "lines"):
        raise ValueError(f"kind must be 'auto', 'lines', 'heatmap' or 'both'; got {kind!r}.")
    labels_all = _token_texts(timecourses, token_text)
    n_tokens = timecourses.sizes["token"]
    if stop is None:
        stop = min(n_tokens, start + 60)
    if not (0 <= start < stop <= n_tokens):
        raise ValueError(f"Need 0 <= start < stop <= {n_tokens} (the number of tokens); "
                         f"got start={start}, stop={stop}.")
    tc = timecourses.isel(token=slice(start, stop))
    labels = labels_all[start:stop]
    if components is not None:
        tc = xr.concat([select_component(tc, c, "timecourses") for c in components],
                       dim="component").transpose("token", "component")
    names = component_labels(tc)
    values = np.asarray(tc.values, dtype=float)  # (token, component)
    breaks = _document_breaks(tc)
    n_tok, n_comp = values.shape
    if kind == "auto":
        kind = "lines" if n_comp <= 12 else "heatmap"
    width = min(max(6.0, 0.16 * n_tok + 2.4), 18.0)
    panels = {"heatmap": [max(1.6, 0.26 * n_comp + 0.8)], "lines": [0.85] * n_comp}
    panels["both"] = panels["heatmap"] + panels["lines"]
    ratios = panels[kind]
    colors = [color_of_label(name, i) for i, name in enumerate(names)]
    vmax = float(np.nanmax(np.abs(values))) or 1.0
    tick = float(MaxNLocator(2, steps=[1, 2, 2.5, 5, 10]).tick_values(0, 0.8 * vmax)[-2]) or vmax
    with plot_style():
        fig = new_figure((width, sum(ratios) + 1.6))
        axes = fig.subplots(len(ratios), 1, sharex=True, squeeze=False,
                            gridspec_kw={"height_ratios": ratios})[:, 0]
        if kind in ("both", "heatmap"):
            ax = axes[0]
            img = ax.imshow(values.T, aspect="auto", interpolation="nearest", cmap=DIVERGING_CMAP,
                            norm=mpl.colors.Normalize(-vmax, vmax), origin="upper")
            step = max(1, math.ceil(n_comp / 30))
            ax.set_yticks(np.arange(0, n_comp, step), [f"Network {names[i]}"
                                                       for i in range(0, n_comp, step)])
            ax.spines[:].set_visible(False)
            fig.colorbar(img, ax=ax, label=value_label, shrink=0.9, pad=0.01)
        if kind in ("both", "lines"):
            line_axes = axes[-n_comp:]
            for ax, name, color, series in zip(line_axes, names, colors, values.T):
                x = np.arange(n_tok)
                ax.fill_between(x, 0, series, color=color, alpha=0.25, linewidth=0)
                ax.plot(x, series, color=color, linewidth=1.2, marker="o", markersize=2)
                ax.axhline(0, color="#7F7F7F", linewidth=0.6)
                ax.set_ylim(-1.2 * vmax, 1.2 * vmax)
                ax.set_yticks([-tick, 0, tick])
                ax.set_ylabel(f"Network {name}", rotation=0, ha="right", va="center",
                              color=color if color != "#F0E442" else "black")
                ax.grid(True, axis="x", color="#eeeeee", linewidth=0.5)
            fig.supylabel(value_label, fontsize=9)
        for ax in axes:
            for b in breaks:
                ax.axvline(b - 0.5, color="black", linestyle="--", linewidth=0.8)
            ax.tick_params(labelleft=True)
        for ax in axes[:-1]:
            ax.tick_params(labelbottom=False)
        _token_axis(axes[-1], labels)
        title = f"Network time courses, tokens {start}–{stop - 1}"
        if len(breaks):
            title += " (dashed: new document or window)"
        fig.suptitle(title)
    return finish(fig, output_file)
