"""One tidy results table: evaluations write its rows; plots, tables and reports read it.

A results table is a :class:`pandas.DataFrame` in *long* format: one row is
one number (``value``) measured on one model (base model, pruning, optional
intervention) on one data set under one protocol. Everything llmbrain
measures fits in it: perplexity and zero-shot accuracy of pruned models,
parameter counts and speed, and the effect of ablating a network next to its
random controls. :func:`results_table` builds and validates one,
:func:`to_wide` turns it into a table for people, :func:`summarize_seeds`
averages over seeds with their spread, and :func:`save_results` /
:func:`read_results` store it as CSV.

Schema (columns in this order; more columns may follow and are kept):

=======================  =====  ========  ==============================================
column                   type   default   meaning
=======================  =====  ========  ==============================================
``model``                str    required  base model (name, path or hub id)
``criterion``            str    "dense"   pruning criterion ("dense": not pruned), e.g.
                                          "networks", "flap", "random"
``sparsity``             float  0.0       fraction of MLP neurons removed, in [0, 1)
``allocation``           str    ""        how the sparsity is spread over layers
                                          ("uniform", "global", "adaptive")
``protected_layers``     str    ""        layers left whole, comma-separated ("0,29")
``bias_compensation``    str    ""        how removed neurons' mean output is folded
                                          into the bias: "" (not), "dense" (means of
                                          the dense model), "progressive" (of the
                                          model being pruned)
``calibration``          str    ""        data the pruning scores were computed on
                                          ("c4", "legal"; "" for none)
``intervention``         str    ""        change applied on top of the model ("ablate",
                                          "amplify"; "": none)
``target``               str    ""        what the intervention changes ("network 3",
                                          "all key neurons")
``condition``            str    ""        "network" (the target itself), "random" (a
                                          random control matched per layer) or ""
``seed``                 int    0         seed of the random parts (random criterion,
                                          control draw, network fit)
``dataset``              str    required  data measured on ("wikitext2", "piqa",
                                          "held-out"; "random-tokens" for speed; "" for
                                          counts that need no data)
``protocol``             str    ""        how it was measured ("window=128", "0-shot",
                                          "batch=4x128")
``metric``               str    required  "perplexity", "acc", "acc_norm",
                                          "tokens_per_s", "n_params", ...
``value``                float  required  the number
``stderr``               float  NaN       standard error of value (over items, windows
                                          or timing repeats), NaN when unknown
``n``                    Int64  <NA>      items, windows or repeats behind value
=======================  =====  ========  ==============================================

Every column but ``value``, ``stderr`` and ``n`` identifies the measurement
(:data:`KEY_COLUMNS`); two rows with the same keys are refused. Repeated
measurements differ by ``seed``; timing repeats are stored as one row whose
``stderr`` and ``n`` give their spread.

Examples
--------
>>> from llmbrain.evaluation.results import results_table, to_wide
>>> results = results_table([
...     {"criterion": "dense", "metric": "perplexity", "value": 56.1},
...     {"criterion": "flap", "sparsity": 0.3, "allocation": "uniform",
...      "metric": "perplexity", "value": 129.6},
... ], model="SmolLM2-135M", dataset="wikitext2", protocol="window=128")
>>> to_wide(results)
  criterion  sparsity  perplexity
0     dense       0.0        56.1
1      flap       0.3       129.6
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._atomic import atomic_write

__all__ = ["KEY_COLUMNS", "SCHEMA", "against_controls", "from_wide", "higher_is_better", "read_results",
           "results_table", "save_results", "summarize_seeds", "to_wide"]


@dataclass(frozen=True)
class Column:
    """One column of the results schema."""

    name: str
    dtype: str
    default: object
    description: str

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


_REQUIRED = object()

#: The columns of a results table, in order.
SCHEMA: tuple[Column, ...] = (
    Column("model", "str", _REQUIRED, "base model"),
    Column("criterion", "str", "dense", "pruning criterion; 'dense' when not pruned"),
    Column("sparsity", "float", 0.0, "fraction of MLP neurons removed"),
    Column("allocation", "str", "", "spread of the sparsity over layers"),
    Column("protected_layers", "str", "", "layers left whole, comma-separated"),
    Column("bias_compensation", "str", "", "'', 'dense' or 'progressive' bias compensation"),
    Column("calibration", "str", "", "data the pruning scores were computed on"),
    Column("intervention", "str", "", "change applied on top of the model"),
    Column("target", "str", "", "what the intervention changes"),
    Column("condition", "str", "", "'network', 'random' (matched control) or ''"),
    Column("seed", "int", 0, "seed of the random parts"),
    Column("dataset", "str", _REQUIRED, "data measured on"),
    Column("protocol", "str", "", "how it was measured"),
    Column("metric", "str", _REQUIRED, "what was measured"),
    Column("value", "float", _REQUIRED, "the number"),
    Column("stderr", "float", np.nan, "standard error of value"),
    Column("n", "Int64", pd.NA, "items, windows or repeats behind value"),
)

_COLUMNS = {c.name: c for c in SCHEMA}

#: Columns that identify a measurement (all but value, stderr and n).
KEY_COLUMNS: tuple[str, ...] = tuple(c.name for c in SCHEMA
                                     if c.name not in ("value", "stderr", "n"))

_CONDITIONS = ("", "network", "random")

#: Metrics where a smaller value is better; any other metric is better when larger.
_LOWER_IS_BETTER = frozenset({"perplexity", "loss", "nll", "bits_per_byte", "seconds_per_batch",
                              "n_params", "n_mlp_params", "weight_bytes", "latency"})


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (False for perplexity, losses,
    sizes and latencies; True for accuracies and throughput)."""
    return str(metric) not in _LOWER_IS_BETTER


def against_controls(value: float, controls, metric: str, *, confidence: float = 0.95
                     ) -> tuple[float, float, float]:
    """A measurement against random controls of it.

    Parameters
    ----------
    value : float
        The measurement (e.g. perplexity with a network ablated, or its change).
    controls : array-like of float
        The same measurement for each random control (same scale as ``value``).
    metric : str
        Decides the direction of harm (:func:`higher_is_better`).
    confidence : float, default=0.95

    Returns
    -------
    low, high : float
        The ``confidence`` prediction interval of one more control (Student's
        t over the controls; NaN with fewer than 2).
    p_value : float
        The exact one-sided permutation p-value in the direction of harm,
        ``(1 + k) / (1 + n)`` where ``k`` of the ``n`` controls are at least as
        harmful as ``value``.
    """
    from scipy import stats

    controls = np.asarray(controls, dtype=float)
    n = controls.size
    low = high = np.nan
    if n >= 2:
        half = (stats.t.ppf(0.5 + confidence / 2, n - 1) * controls.std(ddof=1)
                * np.sqrt(1 + 1 / n))
        low, high = controls.mean() - half, controls.mean() + half
    harmful = controls <= value if higher_is_better(metric) else controls >= value
    return float(low), float(high), (1 + int(harmful.sum())) / (1 + n)


def _protected(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, str):
        return value.replace(" ", "")
    if isinstance(value, Iterable):
        return ",".join(str(int(v)) for v in sorted(value))
    return str(int(value))


def _compensation(value) -> str:
    if value is None or value is False or (isinstance(value, float) and np.isnan(value)):
        return ""
    if value is True:
        return "dense"
    text = str(value).strip()
    return {"true": "dense", "false": "", "none": ""}.get(text.lower(), text)


def results_table(rows=None, /, **constants) -> pd.DataFrame:
    """Build a validated results table.

    Parameters
    ----------
    rows : list of dict or pandas.DataFrame, optional
        The measurements, one per row, with any of the schema's columns
        (see the module documentation); missing optional columns get their
        default. More columns are kept, after the schema's.
    **constants
        Values shared by every row (e.g. ``model="default"``,
        ``dataset="wikitext2"``), used where a row has none.

    Returns
    -------
    pandas.DataFrame
        The schema's columns in order, with their types.

    Raises
    ------
    ValueError
        If a required column is missing or empty, a value is of the wrong kind
        or out of range, or two rows have the same keys.

    Examples
    --------
    >>> from llmbrain.evaluation.results import results_table
    >>> table = results_table([{"metric": "perplexity", "value": 56.09}],
    ...                       model="default", dataset="wikitext2")
    >>> table[["model", "criterion", "sparsity", "metric", "value"]]
         model criterion  sparsity      metric  value
    0  default     dense       0.0  perplexity  56.09
    """
    if rows is None:
        rows = []
    if isinstance(rows, pd.DataFrame):
        df = rows.copy()
    elif isinstance(rows, Mapping):
        raise TypeError("rows must be a list of dicts (one per measurement) or a DataFrame; got "
                        "one dict: wrap it in a list.")
    else:
        try:
            df = pd.DataFrame(list(rows))
        except TypeError as err:
            raise TypeError("rows must be a list of dicts or a pandas DataFrame; got "
                            f"{type(rows).__name__}.") from err
    unknown = [k for k in constants if k not in _COLUMNS]
    if unknown:
        raise ValueError(f"Unknown column(s) {unknown} given as constants; the schema has "
                         f"{list(_COLUMNS)}.")
    for name, value in constants.items():
        if name in df.columns:
            df[name] = df[name].where(df[name].notna(), value) if len(df) else df[name]
        else:
            df[name] = [value] * len(df)
    return _normalise(df)


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    if len(df) == 0:
        for column in SCHEMA:
            if column.required and column.name not in df.columns:
                df[column.name] = pd.Series(dtype=object)
    missing = [c.name for c in SCHEMA if c.required and c.name not in df.columns]
    if missing:
        raise ValueError(f"A results table needs the column(s) {missing}; it has "
                         f"{list(df.columns)}. Give them in every row or as constants, e.g. "
                         "results_table(rows, model='default', dataset='wikitext2').")
    out = pd.DataFrame(index=pd.RangeIndex(len(df)))
    df = df.reset_index(drop=True)
    for column in SCHEMA:
        if column.name in df.columns:
            values = df[column.name]
            if column.required and values.isna().any():
                rows = list(np.flatnonzero(values.isna().to_numpy())[:5])
                raise ValueError(f"Column {column.name!r} is empty in row(s) {rows}.")
            if not column.required and not pd.isna(column.default):
                values = values.where(values.notna(), column.default)
        else:
            values = pd.Series([column.default] * len(df), dtype=object)
        out[column.name] = _convert(values, column)
    for name in df.columns:
        if name not in out.columns:
            out[name] = df[name].to_numpy()
    _check_values(out)
    return out


def _convert(values: pd.Series, column: Column) -> pd.Series:
    name = column.name
    try:
        if column.dtype == "str":
            if name == "protected_layers":
                values = values.map(_protected)
            if name == "bias_compensation":  # older tables: True/False
                values = values.map(_compensation)
            return values.astype(str)
        if column.dtype == "float":
            return pd.to_numeric(values, errors="raise").astype(float)
        if column.dtype == "int":
            numeric = pd.to_numeric(values, errors="raise")
            if (numeric != np.round(numeric)).any():
                raise ValueError("not whole numbers")
            return numeric.astype(np.int64)
        if column.dtype == "Int64":
            numeric = pd.to_numeric(values, errors="raise")
            return numeric.astype("Int64")
        if column.dtype == "bool":
            mapped = values.map(lambda v: {"true": True, "false": False, "1": True,
                                           "0": False}.get(str(v).strip().lower(), v))
            if not mapped.map(lambda v: isinstance(v, (bool, np.bool_))).all():
                raise ValueError("not True/False")
            return mapped.astype(bool)
    except (TypeError, ValueError) as err:
        bad = [v for v in values.tolist()][:3]
        raise ValueError(f"Column {name!r} must hold {column.dtype} values ({column.description}); "
                         f"got {bad} ...: {err}") from None
    raise AssertionError(column.dtype)


def _check_values(df: pd.DataFrame) -> None:
    sparsity = df["sparsity"]
    if ((sparsity < 0) | (sparsity >= 1)).any():
        bad = sorted(set(sparsity[(sparsity < 0) | (sparsity >= 1)].tolist()))[:5]
        raise ValueError(f"sparsity must be a fraction in [0, 1); got {bad}. Write 30% as 0.3.")
    dense = df["criterion"] == "dense"
    if (dense & (sparsity > 0)).any():
        raise ValueError("Rows with criterion 'dense' must have sparsity 0; name the pruning "
                         "criterion of a pruned model.")
    conditions = set(df["condition"]) - set(_CONDITIONS)
    if conditions:
        raise ValueError(f"condition must be one of {list(_CONDITIONS)}; got {sorted(conditions)}.")
    if ((df["condition"] != "") & (df["intervention"] == "")).any():
        raise ValueError("A row with a condition ('network' or 'random') needs an intervention "
                         "(e.g. 'ablate').")
    if (df["metric"] == "").any() or (df["model"] == "").any():
        raise ValueError("Columns 'model' and 'metric' must not be empty strings.")
    duplicated = df.duplicated(list(KEY_COLUMNS), keep=False)
    if duplicated.any():
        rows = list(np.flatnonzero(duplicated.to_numpy())[:6])
        raise ValueError(f"Rows {rows} have the same keys ({', '.join(KEY_COLUMNS)}): each "
                         "measurement must be identified by them. Give repeats different seeds, "
                         "or average them first (value, stderr, n).")


def save_results(df: pd.DataFrame, path) -> Path:
    """Validate ``df`` and write it to ``path`` as CSV (atomically); return the path."""
    table = results_table(df)
    buffer = io.StringIO()
    table.to_csv(buffer, index=False)
    return atomic_write(Path(path), buffer.getvalue().encode("utf-8"))


def read_results(path) -> pd.DataFrame:
    """Read a results table written by :func:`save_results` (or any CSV of the schema)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No results table at {path}.")
    strings = {c.name: str for c in SCHEMA if c.dtype == "str"}
    df = pd.read_csv(path, dtype=strings, keep_default_na=False,
                     na_values={c.name: ["", "NaN", "nan", "<NA>"] for c in SCHEMA
                                if c.dtype in ("float", "Int64")})
    return results_table(df)


def _label(parts) -> str:
    return " ".join(str(p) for p in parts if str(p) != "")


def to_wide(df: pd.DataFrame, index=("criterion", "sparsity"), columns=("dataset", "metric"),
            *, values: str = "value", aggfunc="mean") -> pd.DataFrame:
    """A table for people: one row per ``index``, one column per ``columns``.

    Column labels join the values of ``columns`` with a space, leaving out
    levels that are the same for every column, so the table has a single
    header row. Rows keep their order of first appearance.

    Parameters
    ----------
    df : pandas.DataFrame
        A results table.
    index : sequence of str
        Columns that identify a row of the wide table.
    columns : sequence of str
        Columns whose values become the wide table's columns.
    values : str, default="value"
        Column to spread.
    aggfunc : str or callable, default="mean"
        How several rows of one cell (e.g. seeds) are combined.

    Returns
    -------
    pandas.DataFrame
        ``index`` as ordinary columns, then one column per combination.
    """
    df = results_table(df)
    index, columns = list(index), list(columns)
    wide = df.pivot_table(index=index, columns=columns, values=values, aggfunc=aggfunc,
                          sort=False)
    wide = wide.dropna(axis=1, how="all")
    levels = [pd.unique(wide.columns.get_level_values(i)) for i in range(len(columns))] \
        if isinstance(wide.columns, pd.MultiIndex) else [pd.unique(wide.columns)]
    varying = [i for i, level in enumerate(levels) if len(level) > 1] or [len(levels) - 1]
    labels = []
    for key in wide.columns:
        key = key if isinstance(key, tuple) else (key,)
        labels.append(_label(key[i] for i in varying) or _label(key))
    wide.columns = labels
    return wide.reset_index()


def summarize_seeds(df: pd.DataFrame, *, confidence: float = 0.95) -> pd.DataFrame:
    """Mean and spread of each measurement over seeds.

    Parameters
    ----------
    df : pandas.DataFrame
        A results table.
    confidence : float, default=0.95
        Level of the confidence interval of the mean (Student's t).

    Returns
    -------
    pandas.DataFrame
        The key columns but ``seed``, then ``mean``, ``sd`` (over seeds,
        ddof=1), ``n_seeds``, ``ci_low``, ``ci_high`` (NaN with one seed) and
        ``stderr`` (mean of the rows' own standard errors).
    """
    from scipy import stats

    df = results_table(df)
    keys = [c for c in KEY_COLUMNS if c != "seed"]
    grouped = df.groupby(keys, sort=False, dropna=False)
    out = grouped["value"].agg(mean="mean", sd=lambda v: v.std(ddof=1) if len(v) > 1 else np.nan,
                               n_seeds="count").reset_index()
    out["stderr"] = grouped["stderr"].mean().to_numpy()
    half = stats.t.ppf(0.5 + confidence / 2, np.maximum(out["n_seeds"] - 1, 1)) \
        * out["sd"] / np.sqrt(out["n_seeds"])
    out["ci_low"], out["ci_high"] = out["mean"] - half, out["mean"] + half
    return out[keys + ["mean", "sd", "n_seeds", "ci_low", "ci_high", "stderr"]]


#: How :func:`from_wide` reads the columns of wide tables: column -> (dataset, metric).
WIDE_COLUMNS: dict[str, tuple[str, str]] = {
    "perplexity": ("held-out", "perplexity"),
    "wikitext2_ppl": ("wikitext2", "perplexity"),
    "avg_accuracy": ("zero-shot mean", "acc"),
    "mean_acc": ("zero-shot mean", "acc"),
    "mean_acc_norm": ("zero-shot mean", "acc_norm"),
    "tokens_per_s": ("random-tokens", "tokens_per_s"),
    "n_params": ("", "n_params"),
    "n_mlp_params": ("", "n_mlp_params"),
    "achieved_sparsity": ("", "achieved_sparsity"),
}


def from_wide(df: pd.DataFrame, columns: Mapping[str, tuple[str, str]] | None = None,
              **constants) -> pd.DataFrame:
    """Convert a wide table (one column per metric) into a results table.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per model, with key columns of the schema (``criterion``,
        ``sparsity``, ...) and one column per measured metric.
    columns : dict of str to (str, str), optional
        Which columns hold values, as ``column -> (dataset, metric)``;
        default :data:`WIDE_COLUMNS` (``perplexity``, ``wikitext2_ppl``,
        ``avg_accuracy``, ``tokens_per_s``, ``n_params``, ...) where present.
    **constants
        Schema values shared by every row, e.g. ``model="default"``.

    Returns
    -------
    pandas.DataFrame
        A validated results table.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}.")
    mapping = dict(columns) if columns is not None else \
        {c: WIDE_COLUMNS[c] for c in df.columns if c in WIDE_COLUMNS}
    absent = [c for c in mapping if c not in df.columns]
    if absent or not mapping:
        raise ValueError(f"No value column {absent or list(WIDE_COLUMNS)} in the wide table; it "
                         f"has {list(df.columns)}. Say which columns hold values with columns=.")
    keys = [c for c in df.columns if c in _COLUMNS and c not in mapping]
    rows = []
    for record in df.to_dict("records"):
        base = {k: record[k] for k in keys}
        for column, (dataset, metric) in mapping.items():
            if pd.isna(record[column]):
                continue
            rows.append({**base, "dataset": dataset, "metric": metric, "value": record[column]})
    return results_table(rows, **constants)
