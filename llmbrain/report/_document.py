"""A report page built piece by piece: one self-contained HTML file plus its figures as files."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .._atomic import atomic_write
from ._format import format_table
from ._interpret import KeyResult
from ._methods import Methods

__all__ = ["Report"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_BADGES = {"contradicts": "contradicts expectation", "agrees": "as expected",
           "inconclusive": "inconclusive"}
_MAX_LISTED = 20  # files of a sub-folder listed one by one; larger folders get one line


@dataclass
class _Figure:
    png: bytes
    name: str
    caption: str | None
    alt: str

    @property
    def size(self) -> tuple[int, int]:
        """Width and height of the PNG in pixels."""
        return struct.unpack(">II", self.png[16:24])


def _check_text(value, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}.")
    return value


def _slug(text: str) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())[:5]
    return "-".join(words) or "figure"


def _human_size(n_bytes: int) -> str:
    size = float(n_bytes)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1000
    return f"{size:,.1f} TB"


def _list_files(folder: Path, extra=()) -> list[dict]:
    """Every file under ``folder`` (hidden ones and ``index.html`` aside) and ``extra``,
    with large sub-folders summarised in one entry."""
    entries = []

    def visible(path: Path) -> bool:
        return not any(part.startswith(".") for part in path.relative_to(folder).parts)

    for child in sorted(folder.iterdir()):
        if not visible(child) or child.name == "index.html":
            continue
        if child.is_dir():
            files = sorted(p for p in child.rglob("*") if p.is_file() and visible(p))
            if len(files) > _MAX_LISTED or child.suffix in (".zarr",):
                total = sum(p.stat().st_size for p in files)
                entries.append({"name": f"{child.name}/", "href": f"{child.name}/",
                                "size": _human_size(total),
                                "note": f"folder of {len(files):,} files"})
            else:
                entries += [{"name": p.relative_to(folder).as_posix(),
                             "href": p.relative_to(folder).as_posix(),
                             "size": _human_size(p.stat().st_size), "note": ""} for p in files]
        elif child.is_file():
            entries.append({"name": child.name, "href": child.name,
                            "size": _human_size(child.stat().st_size), "note": ""})
    entries += list(extra)
    return sorted(entries, key=lambda e: e["name"])


class Report:
    """A report: key result, methods, sections of text, figures and tables.

    Saved as a folder holding ``index.html``, a single file that works alone
    (styles inline, figures embedded, no JavaScript, no network), and the
    figures as PNG files with the names given to them; the page ends with a
    linked list of every file in the folder. In a notebook, a report shows
    itself inline.

    Parameters
    ----------
    title : str
        Title of the page (also its first heading).
    methods : Methods, optional
        The methods block, shown after the key result.

    Examples
    --------
    >>> from matplotlib.figure import Figure
    >>> from llmbrain.report import Report
    >>> fig = Figure()
    >>> _ = fig.add_subplot().plot([0, 1], [1, 0])
    >>> report = Report("Functional networks of SmolLM2")
    >>> _ = report.add_text("Ten networks from 3 runs of CanICA.")
    >>> _ = report.add_figure(fig, "Network atlas", name="network-atlas")
    >>> report.figure_names
    ['network-atlas']
    >>> report.save("report/")                     # doctest: +SKIP
    PosixPath('report/index.html')
    """

    def __init__(self, title: str, *, methods: Methods | None = None):
        self.title = _check_text(title, "title")
        self.methods = methods
        self.key_result: KeyResult | None = None
        self._blocks: list = []

    # -- building ---------------------------------------------------------------------------
    def set_key_result(self, key_result: KeyResult) -> Report:
        """Show ``key_result`` (from :func:`interpret`) at the top of the page."""
        if not isinstance(key_result, KeyResult):
            raise TypeError("key_result must be the KeyResult returned by "
                            f"llmbrain.report.interpret; got {type(key_result).__name__}.")
        self.key_result = key_result
        return self

    def set_methods(self, methods: Methods) -> Report:
        """Show ``methods`` after the key result."""
        if not isinstance(methods, Methods):
            raise TypeError(f"methods must be a llmbrain.report.Methods; got "
                            f"{type(methods).__name__}.")
        self.methods = methods
        return self

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

    @property
    def figure_names(self) -> list[str]:
        """File names (without ``.png``) of the figures, in order."""
        return [b[1].name for b in self._blocks if b[0] == "figure"]

    def add_figure(self, figure, caption: str | None = None, *, name: str | None = None,
                   alt: str | None = None, dpi: int = 150) -> Report:
        """Add a figure: a matplotlib Figure (rendered to PNG now) or the path of a PNG file.

        Parameters
        ----------
        figure : matplotlib.figure.Figure or str or Path
            The figure, or a ``.png`` file (read now, so it may change later).
        caption : str, optional
            Caption written under the figure.
        name : str, optional
            File name in ``figures/`` (lower-case letters, digits and hyphens,
            e.g. ``"pruning-curve"``); default made from the caption. A name
            already used gets a number.
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
            default = path.stem
        elif hasattr(figure, "savefig"):
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
            png = buffer.getvalue()
            default = None
        else:
            raise TypeError("figure must be a matplotlib Figure or the path of a PNG file; got "
                            f"{type(figure).__name__}.")
        if name is None:
            name = _slug(caption or default or "figure")
        elif not (isinstance(name, str) and _NAME.match(name)):
            raise ValueError(f"name must be lower-case letters, digits and hyphens, such as "
                             f"'pruning-curve'; got {name!r}.")
        base, k = name, 2
        while name in self.figure_names:
            name, k = f"{base}-{k}", k + 1
        self._blocks.append(("figure", _Figure(png, name, caption, alt or caption or name)))
        return self

    def add_table(self, df, caption: str | None = None, *, index: bool = True,
                  formats: dict | None = None) -> Report:
        """Add a table, formatted for people (see :func:`llmbrain.report.format_table`).

        Parameters
        ----------
        df : pandas.DataFrame or pandas.Series
            The table; a column MultiIndex is flattened into one header row.
        caption : str, optional
            Caption written under the table.
        index : bool
            Whether to show the index (as the first columns).
        formats : dict, optional
            Kind of some columns (``"int"``, ``"percent"``, ``"float"``,
            ``"text"`` or a format string); the others are inferred.
        """
        if isinstance(df, pd.Series):
            df = df.to_frame()
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"df must be a pandas DataFrame or Series; got {type(df).__name__}.")
        if caption is not None:
            _check_text(caption, "caption")
        text = format_table(df, formats, index=index)
        shown = df.reset_index(allow_duplicates=True) if index and not (
            isinstance(df.index, pd.RangeIndex) and df.index.name is None) else df
        numeric = [pd.api.types.is_numeric_dtype(shown.iloc[:, i])
                   and not pd.api.types.is_bool_dtype(shown.iloc[:, i])
                   for i in range(shown.shape[1])]
        self._blocks.append(("table", list(text.columns), text.values.tolist(), numeric, caption))
        return self

    # -- output -----------------------------------------------------------------------------
    def _context(self, files=None) -> dict:
        from .._version import __version__

        blocks = []
        for block in self._blocks:
            kind = block[0]
            if kind == "heading":
                blocks.append({"kind": kind, "level": block[1], "text": block[2],
                               "anchor": _slug(block[2])})
            elif kind == "text":
                blocks.append({"kind": kind, "text": block[1]})
            elif kind == "figure":
                fig = block[1]
                width, height = fig.size
                blocks.append({"kind": kind, "name": fig.name, "caption": fig.caption,
                               "alt": fig.alt, "width": width, "height": height,
                               "data": base64.b64encode(fig.png).decode("ascii")})
            elif kind == "table":
                _, header, rows, numeric, caption = block
                blocks.append({"kind": kind, "header": header, "rows": rows, "numeric": numeric,
                               "caption": caption})
        return {"title": self.title, "version": __version__,
                "stamp": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
                "key_result": self.key_result, "badges": _BADGES,
                "methods": list(self.methods.items()) if self.methods is not None else [],
                "blocks": blocks, "files": files or []}

    def to_html(self, files=None) -> str:
        """The page as one self-contained HTML string (figures embedded as PNG data)."""
        from jinja2 import Environment, PackageLoader, select_autoescape

        environment = Environment(loader=PackageLoader("llmbrain.report", "templates"),
                                  autoescape=select_autoescape(("html", "j2")),
                                  trim_blocks=True, lstrip_blocks=True)
        return environment.get_template("report.html.j2").render(self._context(files))

    def save(self, folder) -> Path:
        """Write ``folder/figures/<name>.png`` and ``folder/index.html``; return the index path.

        Each file is written to a temporary name and renamed into place, and
        ``index.html`` comes last. Other files in ``folder`` are kept, and
        listed (with the figures and the page itself) at the end of the page.
        """
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"{folder} exists and is not a folder; choose another path.")
        (folder / "figures").mkdir(parents=True, exist_ok=True)
        for block in self._blocks:
            if block[0] == "figure":
                atomic_write(folder / "figures" / f"{block[1].name}.png", block[1].png)
        index = folder / "index.html"
        page = {"name": "index.html", "href": "index.html", "size": "", "note": "this page"}
        atomic_write(index, self.to_html(_list_files(folder, [page])).encode("utf-8"))
        return index

    def _repr_html_(self) -> str:
        page = html.escape(self.to_html(), quote=True)
        return (f'<iframe srcdoc="{page}" title="{html.escape(self.title, quote=True)}" '
                'style="width: 100%; height: 720px; border: 1px solid #ddd;"></iframe>')

    def __repr__(self) -> str:
        counts = {k: sum(1 for b in self._blocks if b[0] == k) for k in ("figure", "table")}
        return (f"Report({self.title!r}, {len(self._blocks)} blocks, {counts['figure']} figures, "
                f"{counts['table']} tables)")

