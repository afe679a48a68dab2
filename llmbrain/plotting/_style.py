"""One consistent, colour-blind-safe look for every llmbrain figure.

Colours come from the Okabe–Ito palette (categories: networks, criteria,
conditions) and from perceptually uniform colormaps (``viridis`` /
``cividis`` for magnitudes, ``RdBu_r`` centred at zero for signed values).
Figures are built as :class:`matplotlib.figure.Figure` objects without
pyplot, so plotting never depends on, or changes, the active backend.
"""

from __future__ import annotations

import contextlib
import zlib
from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = [
    "DIVERGING_CMAP",
    "NETWORK_PALETTE",
    "OKABE_ITO",
    "SEQUENTIAL_CMAP",
    "criterion_color",
    "network_color",
    "network_colors",
    "plot_style",
    "savefig",
]

#: The eight Okabe–Ito colours (Okabe & Ito, 2008), safe for colour-blind readers.
OKABE_ITO: dict[str, str] = {
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
    "black": "#000000",
}

#: Order in which categories receive colours (yellow last: weak on white).
_CYCLE = [OKABE_ITO[k] for k in ("blue", "orange", "bluish_green", "vermillion",
                                   "reddish_purple", "sky_blue", "yellow")]

#: Colormap for signed values (z-maps, time courses), always centred at zero.
DIVERGING_CMAP = "RdBu_r"
#: Colormap for non-negative magnitudes (counts, similarities).
SEQUENTIAL_CMAP = "viridis"

GREY = "#7F7F7F"

#: Fixed colours of common pruning criteria, so a criterion looks the same in every figure.
_CRITERION_COLORS: dict[str, str] = {
    "dense": OKABE_ITO["black"],
    "random": GREY,
    "magnitude": OKABE_ITO["sky_blue"],
    "activation": OKABE_ITO["orange"],
    "wanda": OKABE_ITO["reddish_purple"],
    "wanda_sp": OKABE_ITO["reddish_purple"],
    "flap": OKABE_ITO["vermillion"],
    "fisher": "#A6761D",  # dark gold: Okabe-Ito's yellow is too light on white
    "loss_networks": "#6A3D9A",  # dark purple, apart from Wanda's reddish purple
    "network": OKABE_ITO["blue"],
    "networks": OKABE_ITO["blue"],
    "functional_network": OKABE_ITO["blue"],
    "functional_networks": OKABE_ITO["blue"],
    "key_neurons": OKABE_ITO["blue"],
    "networks+contextual": OKABE_ITO["orange"],
    "contextual": OKABE_ITO["bluish_green"],
    "domain": OKABE_ITO["bluish_green"],
}

_RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "figure.titlesize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": mpl.cycler(color=_CYCLE),
    "image.cmap": SEQUENTIAL_CMAP,
    "savefig.dpi": 150,
    "figure.dpi": 100,
    "svg.fonttype": "none",
    "pdf.fonttype": 42,
}

_SUFFIXES = (".png", ".pdf", ".svg")


@contextlib.contextmanager
def plot_style():
    """Context manager applying llmbrain's matplotlib style (fonts, colours, spines)."""
    with mpl.rc_context(_RC):
        yield


def criterion_color(name: str) -> str:
    """Colour of a pruning criterion, identical in every figure.

    Known criteria (``"dense"``, ``"networks"``, ``"contextual"``,
    ``"magnitude"``, ``"wanda-sp"``, ``"flap"``, ``"random"``, ...) have fixed,
    mutually distinct colours; any other name
    gets a palette colour chosen from a stable hash of the name.
    """
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    if key in _CRITERION_COLORS:
        return _CRITERION_COLORS[key]
    return _CYCLE[zlib.crc32(key.encode()) % len(_CYCLE)]


#: Colours of networks 0-19: the Okabe-Ito colours, then colours chosen from Kelly's and Tol's
#: palettes to be as far as possible from those before them (every pair differs by at least
#: 25 CIELAB units; no grey, which marks controls and missing values).
NETWORK_PALETTE: tuple[str, ...] = (
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
    "#C2B280", "#332288", "#BE0032", "#654522", "#F99379", "#882255", "#8DB600", "#882D17",
    "#999933", "#2B3D26", "#604E97", "#AA4499",
)


def network_color(index) -> str:
    """Colour of network ``index`` (0-based), the same in every figure.

    Networks 0-19 get :data:`NETWORK_PALETTE`; later ones a fixed colour of
    the ``turbo`` colormap (golden-ratio steps), which may resemble others.
    """
    index = int(index)
    if index < 0:
        raise ValueError(f"Network indices start at 0, got {index}.")
    if index < len(NETWORK_PALETTE):
        return NETWORK_PALETTE[index]
    step = ((index - len(NETWORK_PALETTE)) * 0.6180339887) % 1.0
    return mpl.colors.to_hex(mpl.colormaps["turbo"](0.05 + 0.9 * step))


def network_colors(n: int) -> list[str]:
    """Colours of networks 0 to n - 1 (see :func:`network_color`).

    The first 20 are mutually distinct (every pair differs by at least 25
    CIELAB units); draw more networks as small multiples or a labelled
    atlas rather than by colour alone.
    """
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}.")
    return [network_color(i) for i in range(n)]


def color_of_label(label, position: int) -> str:
    """Colour of a network named by a coordinate value: by its index when the label is
    an integer, else by its position."""
    try:
        return network_color(int(label))
    except (TypeError, ValueError):
        return network_color(position)


def savefig(fig: Figure, path, *, dpi: int = 150) -> Path:
    """Save ``fig`` as PNG, PDF or SVG, chosen by the suffix of ``path``.

    Parent folders are created. Returns the path written.
    """
    path = Path(path)
    if path.suffix.lower() not in _SUFFIXES:
        raise ValueError(f"Cannot save a figure as {path.name!r}: the file name must end with "
                         f"one of {', '.join(_SUFFIXES)}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    with plot_style():
        fig.savefig(path, dpi=dpi, bbox_inches="tight", facecolor="white")
    return path


def new_figure(figsize) -> Figure:
    """A pyplot-free figure using constrained layout."""
    return Figure(figsize=figsize, layout="constrained")


def figure_and_axes(ax: Axes | None, figsize) -> tuple[Figure, Axes]:
    """Use ``ax`` if given, else a new figure with one axes."""
    if ax is not None:
        if not isinstance(ax, Axes):
            raise TypeError(f"ax must be a matplotlib Axes, got {type(ax).__name__}.")
        return ax.figure, ax
    fig = new_figure(figsize)
    return fig, fig.add_subplot()


def finish(fig: Figure, output_file) -> Figure:
    """Save ``fig`` to ``output_file`` when one is given, and return it."""
    if output_file is not None:
        savefig(fig, output_file)
    return fig


def log_axis(ax, values, axis: str = "y") -> None:
    """Log scale with plain-number tick labels, denser when ``values`` span little."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    narrow = values.size and values.max() / values.min() < 20
    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    subs = tuple(range(1, 10)) if narrow else (1.0, 2.0, 5.0)
    target.set_major_locator(LogLocator(base=10, subs=subs))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def label_all_panels(axes) -> None:
    """Show tick labels on every panel, also where axes share an axis."""
    for ax in np.ravel(axes):
        if ax.get_visible():
            ax.tick_params(labelbottom=True, labelleft=True)


def text_color_on(rgba) -> str:
    """Black or white, whichever reads better on a background colour."""
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


_CRITERION_MARKERS = {"networks": "o", "network": "o", "networks+contextual": "P",
                      "contextual": "s", "magnitude": "^", "wanda_sp": "D", "wanda": "D",
                      "flap": "v", "fisher": "*", "loss_networks": "h", "random": "X",
                      "activation": "P"}


def marker_for(name) -> str:
    """Marker shape of a criterion, identical in every figure (tells lines apart without colour)."""
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    return _CRITERION_MARKERS.get(key, _MARKERS[zlib.crc32(key.encode()) % len(_MARKERS)])
