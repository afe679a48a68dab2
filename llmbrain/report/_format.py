"""Numbers and tables formatted for people.

Integers get thousands separators, fractions of a whole (sparsity,
accuracy) are shown as percentages with the same decimals down a column, and
other numbers with four significant digits (56.09, 129.6, 1,216; larger
numbers keep all their integer digits). Tables have exactly one header row.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

__all__ = ["format_number", "format_table"]

MISSING = "–"

#: Column names read as fractions of a whole, shown as percentages.
_PERCENT = re.compile(r"(^|[ _])(sparsity|acc|acc_norm|accuracy|fraction|share|recurrence)"
                      r"($|[ _])|%")


def _decimals(values: np.ndarray, digits: int) -> int:
    finite = np.abs(values[np.isfinite(values) & (values != 0)])
    if not finite.size:
        return 0
    smallest = float(finite.min())
    return int(min(max(digits - 1 - math.floor(math.log10(smallest)), 0), 6))


def _percent_decimals(values: np.ndarray) -> int:
    percent = 100 * values[np.isfinite(values)]
    if not percent.size or np.allclose(percent, np.round(percent), rtol=0, atol=1e-9):
        return 0
    return min(max(1, _decimals(percent, 2)), 3)


def format_number(value, kind: str = "float", *, decimals: int | None = None,
                  digits: int = 4) -> str:
    """One number as text.

    Parameters
    ----------
    value : number
    kind : {"float", "int", "percent"}
        ``"int"``: thousands separators; ``"percent"``: a fraction shown as
        a percentage; ``"float"``: thousands separators and ``decimals``.
    decimals : int, optional
        Decimals shown; default enough for ``digits`` significant digits.
    digits : int, default=4

    Examples
    --------
    >>> from llmbrain.report import format_number
    >>> format_number(134515008, "int"), format_number(0.3, "percent"), format_number(1216.04)
    ('134,515,008', '30%', '1,216')
    >>> format_number(56.0888), format_number(0.4033, "percent")
    ('56.09', '40.3%')
    """
    if value is None or value is pd.NA:
        return MISSING
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(value):
        return MISSING
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if kind == "int":
        return f"{int(round(value)):,}"
    if kind == "percent":
        if decimals is None:
            decimals = _percent_decimals(np.array([value]))
        return f"{100 * value:,.{decimals}f}%"
    if decimals is None:
        decimals = _decimals(np.array([value]), digits)
    return f"{value:,.{decimals}f}"


def _column_kind(name: str, series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if not pd.api.types.is_numeric_dtype(series):
        return "text"
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    if _PERCENT.search(str(name).lower()) and finite.size and (finite >= 0).all() \
            and (finite <= 1).all():
        return "percent"
    if pd.api.types.is_integer_dtype(series) or (finite.size and (finite == np.round(finite)).all()
                                                 and np.abs(finite).max() >= 1000):
        return "int"
    return "float"


def format_table(df, formats=None, *, index: bool = True, digits: int = 4) -> pd.DataFrame:
    """A table of strings for people: one header row, consistent precision per column.

    Parameters
    ----------
    df : pandas.DataFrame or Series
    formats : dict of str to str, optional
        Kind of some columns: ``"int"``, ``"percent"``, ``"float"``,
        ``"text"``, or a format string such as ``"{:.2f}"``. The others are
        inferred: integers with thousands separators; fractions in columns
        named like sparsity or accuracy as percentages; other numbers with
        ``digits`` significant digits.
    index : bool, default=True
        Keep the index as the first column(s) (a default range index is
        dropped).
    digits : int, default=4

    Returns
    -------
    pandas.DataFrame
        Strings, with flat column names (a column MultiIndex is joined).

    Examples
    --------
    >>> import pandas as pd
    >>> from llmbrain.report import format_table
    >>> table = pd.DataFrame({"criterion": ["flap", "random"], "sparsity": [0.3, 0.3],
    ...                       "perplexity": [129.61, 1805.2], "n_params": [110616768, 110616768]})
    >>> format_table(table)
      criterion sparsity perplexity     n_params
    0      flap      30%      129.6  110,616,768
    1    random      30%      1,805  110,616,768
    """
    if isinstance(df, pd.Series):
        df = df.to_frame()
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame or Series; got {type(df).__name__}.")
    df = df.copy()
    if isinstance(df.columns, pd.MultiIndex):
        df.columns = [" ".join(str(p) for p in key if str(p) != "") for key in df.columns]
    if index and not (isinstance(df.index, pd.RangeIndex) and df.index.name is None):
        df = df.reset_index(allow_duplicates=True)
    df = df.reset_index(drop=True)
    names = [str(c) for c in df.columns]
    formats = dict(formats or {})
    columns = []
    for position, name in enumerate(names):
        series = df.iloc[:, position]
        kind = formats.get(name) or _column_kind(name, series)
        if kind == "text":
            columns.append([MISSING if pd.isna(v) else str(v) for v in series])
        elif kind == "bool":
            columns.append([MISSING if pd.isna(v) else ("yes" if v else "no") for v in series])
        elif "{" in kind:
            columns.append([MISSING if pd.isna(v) else kind.format(v) for v in series])
        else:
            values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
            decimals = None
            if kind == "percent":
                decimals = _percent_decimals(values)
            columns.append([format_number(v, kind, decimals=decimals, digits=digits)
                            for v in values])
    out = pd.DataFrame({i: column for i, column in enumerate(columns)}, index=df.index)
    out.columns = names
    return out
