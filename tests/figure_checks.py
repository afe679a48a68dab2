"""Checks that a figure is readable: no text drawn over other text, tick labels on every panel."""

from __future__ import annotations

from itertools import combinations

from matplotlib.backends.backend_agg import FigureCanvasAgg


def _tick_labels(axis):
    """Tick labels that are drawn: visible, and at a tick inside the axis' view interval."""
    axis.get_majorticklabels()  # updates the ticks
    low, high = sorted(axis.get_view_interval())
    span = (high - low) * 1e-9
    labels = []
    for tick in axis.get_major_ticks():
        if low - span <= tick.get_loc() <= high + span:
            labels += [t for t in (tick.label1, tick.label2) if t.get_visible()]
    return labels


def _axes_texts(ax):
    texts = [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
    texts += _tick_labels(ax.xaxis) + _tick_labels(ax.yaxis)
    texts += list(ax.texts)
    legend = ax.get_legend()
    if legend is not None:
        texts += list(legend.get_texts()) + [legend.get_title()]
    for child in ax.child_axes:
        texts += _axes_texts(child)
    return texts


def drawn_texts(fig):
    """(text, window extent) of every visible, non-empty text of ``fig``."""
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = list(fig.texts)
    texts += [t for t in (fig._suptitle, fig._supxlabel, fig._supylabel) if t is not None]
    for legend in fig.legends:
        texts += list(legend.get_texts()) + [legend.get_title()]
    for ax in fig.axes:
        if ax.get_visible():
            texts += _axes_texts(ax)
    out, seen = [], set()
    for text in texts:
        if id(text) in seen:
            continue
        seen.add(id(text))
        if text.get_visible() and text.get_text().strip():
            out.append((text, text.get_window_extent(renderer)))
    return out


def overlapping_texts(fig, tolerance: float = 1.0):
    """Pairs of texts of ``fig`` whose boxes overlap by more than ``tolerance`` pixels."""
    pairs = []
    for (a, box_a), (b, box_b) in combinations(drawn_texts(fig), 2):
        width = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
        height = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
        if width > tolerance and height > tolerance:
            pairs.append((a.get_text(), b.get_text()))
    return pairs


def _labelled(axis) -> bool:
    return any(t.get_text().strip() for t in _tick_labels(axis))


def panels_without_tick_labels(fig):
    """Titles of visible data panels (not colour bars) lacking x or y tick labels.

    Panels stacked on one shared x axis (small multiples over tokens) may leave the
    x tick labels to the panel at the bottom of the stack.
    """
    missing = []
    for ax in fig.axes:
        if not ax.get_visible() or not ax.has_data() or ax.get_label() == "<colorbar>":
            continue
        if not _labelled(ax.yaxis):
            missing.append(f"{ax.get_title() or '(untitled)'} (y)")
        if not _labelled(ax.xaxis):
            below = [other for other in ax.get_shared_x_axes().get_siblings(ax)
                     if other is not ax and other.get_position().y0 < ax.get_position().y0]
            if not any(_labelled(other.xaxis) for other in below):
                missing.append(f"{ax.get_title() or '(untitled)'} (x)")
    return missing


def assert_readable(fig):
    """No overlapping text and tick labels on every panel."""
    overlaps = overlapping_texts(fig)
    assert not overlaps, f"texts drawn over each other: {overlaps}"
    missing = panels_without_tick_labels(fig)
    assert not missing, f"panels without tick labels: {missing}"
