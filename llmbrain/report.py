"""A self-contained HTML report: headings, text, figures and tables in one folder.

:class:`Report` collects content in order and :meth:`Report.save` writes a
folder holding ``index.html`` and ``figures/*.png``. The page needs no
JavaScript and no network: styles are inline and figures are referenced by
relative paths, so the folder can be moved, zipped or served as it is.
"""

from __future__ import annotations

import datetime as _dt
import html
import io
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ._atomic import atomic_write

__all__ = ["Report"]

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1a1a1a;
       max-width: 1100px; margin: 2em auto; padding: 0 1.5em; line-height: 1.5; background: #fff; }
h1 { font-size: 1.8em; border-bottom: 2px solid #0072B2; padding-bottom: .2em; }
h2 { font-size: 1.35em; margin-top: 1.8em; color: #0b3d5c; }
h3 { font-size: 1.1em; margin-top: 1.4em; }
p { margin: .6em 0; }
figure { margin: 1.2em 0; text-align: center; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e3e3; }
figcaption, caption { font-size: .9em; color: #444; margin-top: .4em; text-align: left; }
caption { caption-side: bottom; padding-top: .4em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .9em; }
th, td { border: 1px solid #d0d0d0; padding: .3em .6em; text-align: right; }
th { background: #f2f5f8; }
tbody tr:nth-child(even) { background: #fafafa; }
.table-wrap { overflow-x: auto; }
footer { margin-top: 3em; font-size: .8em; color: #777; border-top: 1px solid #e3e3e3; padding-top: .6em; }
"""


@dataclass
class _Figure:
    png: bytes
    caption: str | None
    alt: str


def _check_text(value, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}.")
    return value


class Report:
    """An HTML report built piece by piece and saved as a folder.

    Parameters
    ----------
    title : str
        Title of the page (also its first heading).

    Examples
    --------
    >>> report = Report("Functional networks of SmolLM2")        # doctest: +SKIP
    >>> report.add_text("Twenty networks from 4 runs of CanICA.")  # doctest: +SKIP
    >>> report.add_figure(fig, caption="Network atlas")            # doctest: +SKIP
    >>> report.add_table(results, caption="Pruning results")       # doctest: +SKIP
    >>> report.save("report/")                                     # doctest: +SKIP
    """

    def __init__(self, title: str):
        self.title = _check_text(title, "title")
        self._blocks: list = []

    # -- building ---------------------------------------------------------------------------
    def add_heading(self, text: str, level: int = 2) -> Report:
        """Add a section heading (``level`` 2 or 3; the title is level 1)."""
        _check_text(text, "text")
        if level not in (2, 3):
            raise ValueError(f"level must be 2 or 3 (level 1 is the report title); got {level!r}.")
        self._blocks.append(("heading", level, text))
        return self

    def add_text(self, text: str) -> Report:
        """Add text; blank lines separate paragraphs. The text is escaped, not read as HTML."""
        _check_text(text, "text")
        for paragraph in (p.strip() for p in text.split("\n\n")):
            if paragraph:
                self._blocks.append(("text", paragraph))
        return self

    def add_figure(self, figure, caption: str | None = None, *, alt: str | None = None,
                   dpi: int = 150) -> Report:
        """Add a figure: a matplotlib Figure (rendered to PNG now) or the path of a PNG file.

        Parameters
        ----------
        figure : matplotlib.figure.Figure or str or Path
            The figure, or a ``.png`` file (read now, so it may change later).
        caption : str, optional
            Caption written under the figure.
        alt : str, optional
            Alternative text; default the caption.
        dpi : int
            Resolution at which a Figure is rendered.
        """
        if caption is not None:
            _check_text(caption, "caption")
        if isinstance(figure, (str, os.PathLike)):
            path = Path(figure)
            if path.suffix.lower() != ".png":
                raise ValueError(f"Figure files must be PNG images; got {path.name!r}. Save the "
                                 "figure with a .png suffix, or pass the matplotlib Figure.")
            if not path.is_file():
                raise FileNotFoundError(f"No figure file at {path}.")
            png = path.read_bytes()
            if not png.startswith(b"\x89PNG"):
                raise ValueError(f"{path} is not a PNG image.")
        elif hasattr(figure, "savefig"):
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
            png = buffer.getvalue()
        else:
            raise TypeError("figure must be a matplotlib Figure or the path of a PNG file; got "
                            f"{type(figure).__name__}.")
        self._blocks.append(("figure", _Figure(png, caption, alt or caption or "Figure")))
        return self

    def add_table(self, df, caption: str | None = None, *, index: bool = True,
                  float_format: str = "{:.4g}") -> Report:
        """Add a table from a pandas DataFrame (or Series); cell text is escaped.

        Parameters
        ----------
        df : pandas.DataFrame or pandas.Series
            The table.
        caption : str, optional
            Caption written under the table.
        index : bool
            Whether to show the index.
        float_format : str
            Format of floating-point cells.
        """
        if isinstance(df, pd.Series):
            df = df.to_frame()
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"df must be a pandas DataFrame or Series; got {type(df).__name__}.")
        if caption is not None:
            _check_text(caption, "caption")
        table = df.to_html(index=index, escape=True, border=0, na_rep="–",
                           float_format=float_format.format)
        self._blocks.append(("table", table, caption))
        return self

    # -- output -----------------------------------------------------------------------------
    def _figure_names(self) -> list[str]:
        n = sum(1 for b in self._blocks if b[0] == "figure")
        return [f"figure-{i + 1:03d}.png" for i in range(n)]

    def to_html(self) -> str:
        """The page as an HTML string (figures referenced as ``figures/figure-NNN.png``)."""
        names = iter(self._figure_names())
        esc = html.escape
        parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
                 '<meta name="viewport" content="width=device-width, initial-scale=1">',
                 f"<title>{esc(self.title)}</title>", f"<style>{_CSS}</style>", "</head>",
                 "<body>", f"<h1>{esc(self.title)}</h1>"]
        for block in self._blocks:
            kind = block[0]
            if kind == "heading":
                parts.append(f"<h{block[1]}>{esc(block[2])}</h{block[1]}>")
            elif kind == "text":
                parts.append("<p>" + esc(block[1]).replace("\n", "<br>\n") + "</p>")
            elif kind == "figure":
                fig = block[1]
                name = next(names)
                parts.append("<figure>")
                parts.append(f'<img src="figures/{name}" alt="{esc(fig.alt, quote=True)}">')
                if fig.caption:
                    parts.append(f"<figcaption>{esc(fig.caption)}</figcaption>")
                parts.append("</figure>")
            elif kind == "table":
                _, table, caption = block
                if caption:
                    table = table.replace(">", f"><caption>{esc(caption)}</caption>", 1)
                parts.append(f'<div class="table-wrap">{table}</div>')
        stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        parts += [f"<footer>Generated by llmbrain on {stamp}.</footer>", "</body>", "</html>"]
        return "\n".join(parts) + "\n"

    def save(self, folder) -> Path:
        """Write ``folder/index.html`` and ``folder/figures/*.png``; return the index path.

        Each file is written to a temporary name and renamed into place, and
        ``index.html`` comes last, so a reader never sees a page pointing at
        missing or half-written figures. Other files in ``folder`` are kept.
        """
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"{folder} exists and is not a folder; choose another path.")
        figures_dir = folder / "figures"
        figures_dir.mkdir(parents=True, exist_ok=True)
        figures = [b[1] for b in self._blocks if b[0] == "figure"]
        for name, fig in zip(self._figure_names(), figures):
            atomic_write(figures_dir / name, fig.png)
        index = folder / "index.html"
        atomic_write(index, self.to_html().encode("utf-8"))
        return index

    def __repr__(self) -> str:
        counts = {k: sum(1 for b in self._blocks if b[0] == k) for k in ("figure", "table")}
        return (f"Report({self.title!r}, {len(self._blocks)} blocks, {counts['figure']} figures, "
                f"{counts['table']} tables)")
