"""Values between pandas and the database drivers, converted column by column with numpy.

A frame becomes DBAPI rows without per-cell Python branching; rows read back become typed
columns (dates as datetime64, timestamps tz-aware UTC).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from bentley.warehouse.tables import metadata

_CHUNK_ROWS = 50_000  # rows converted to Python and handed to the driver at a time


def row_chunks(columns: list[DriverColumn], n: int, keep: np.ndarray | None = None) -> Iterator[list[tuple]]:
    """DBAPI rows, `_CHUNK_ROWS` at a time (bounded memory), optionally only rows in `keep`."""
    for start in range(0, n, _CHUNK_ROWS):
        stop = min(start + _CHUNK_ROWS, n)
        select = None if keep is None else keep[start:stop]
        rows = list(zip(*(c.values_between(start, stop, select) for c in columns), strict=True))
        if rows:
            yield rows


def last_of_duplicates(key_columns: list[DriverColumn], n: int) -> np.ndarray | None:
    """A mask keeping the last row of each key, or None when keys are already unique."""
    keys = pd.DataFrame({i: c.hashable() for i, c in enumerate(key_columns)})
    duplicated = keys.duplicated(keep="last").to_numpy()
    return ~duplicated if duplicated.any() else None


# ---------------------------------------------------------------------- conversions


def schema_type(table: sa.Table, column: sa.Column) -> sa.types.TypeEngine:
    """The type of record (metadata) when the column is ours, else the reflected one."""
    known = metadata.tables.get(table.name)
    if known is not None and column.name in known.c:
        return known.c[column.name].type
    return column.type


def column_kind(column_type: sa.types.TypeEngine) -> str:
    if isinstance(column_type, sa.DateTime):
        return "timestamp"
    if isinstance(column_type, sa.Date):
        return "date"
    if isinstance(column_type, sa.Boolean):
        return "bool"
    if isinstance(column_type, sa.Integer):
        return "int"
    if isinstance(column_type, sa.Float):
        return "float"
    return "str"


class DriverColumn:
    """One frame column as a numpy array of DBAPI-ready values plus a NULL mask."""

    __slots__ = ("values", "nulls")

    def __init__(self, values: np.ndarray, nulls: np.ndarray | None) -> None:
        self.values = values
        self.nulls = nulls if nulls is not None and nulls.any() else None

    def values_between(self, start: int, stop: int, select: np.ndarray | None = None) -> list[Any]:
        part = self.values[start:stop]
        nulls = None if self.nulls is None else self.nulls[start:stop]
        if select is not None:
            part = part[select]
            nulls = None if nulls is None else nulls[select]
        if nulls is not None and nulls.any():
            part = part.astype(object)
            part[nulls] = None
        return part.tolist()

    def hashable(self) -> np.ndarray:
        if self.nulls is None:
            return self.values
        out = self.values.astype(object)
        out[self.nulls] = None
        return out

    @classmethod
    def from_series(cls, series: pd.Series, kind: str, dialect: str) -> DriverColumn:
        if kind == "float":
            values = series.to_numpy(dtype="float64", na_value=np.nan)
            return cls(values, np.isnan(values))
        if kind == "int":
            if pd.api.types.is_integer_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
                nulls = series.isna().to_numpy()
                return cls(series.to_numpy(dtype="int64", na_value=0), nulls)
            floats = series.to_numpy(dtype="float64", na_value=np.nan)
            nulls = np.isnan(floats)
            return cls(np.where(nulls, 0, floats).astype("int64"), nulls)  # truncates like int()
        if kind == "bool":
            nulls = series.isna().to_numpy()
            if series.dtype == object:
                flags = np.fromiter((bool(v) for v in series.where(~nulls, False)), dtype=bool, count=len(series))
            else:
                flags = series.to_numpy(dtype=bool, na_value=False)
            return cls(flags, nulls)
        if kind == "date":
            stamps = _to_datetime(series)
            if isinstance(stamps.dtype, pd.DatetimeTZDtype):
                stamps = stamps.dt.tz_localize(None)  # the local calendar date, like Timestamp.date()
            days = stamps.to_numpy().astype("datetime64[D]")
            return cls._mapped(days, _date_objects if dialect == "postgresql" else _iso_dates)
        if kind == "timestamp":
            stamps = _to_datetime(series, utc=True).dt.tz_localize(None)  # UTC wall time
            micros = stamps.to_numpy().astype("datetime64[us]")
            return cls._mapped(micros, _utc_datetimes if dialect == "postgresql" else _iso_timestamps)
        # Text: the frame's strings as they are, anything else through str().
        if isinstance(series.dtype, pd.StringDtype):
            return cls(series.to_numpy(dtype=object, na_value=None), None)
        nulls = series.isna().to_numpy()
        text = series.astype(str).to_numpy(dtype=object)
        text[nulls] = None
        return cls(text, None)

    @classmethod
    def _mapped(cls, stamps: np.ndarray, convert: Callable[[np.ndarray], Any]) -> DriverColumn:
        """datetime64 -> driver values, converting each distinct value once (prices repeat dates)."""
        codes, uniques = pd.factorize(stamps)
        converted = np.empty(len(uniques) + 1, dtype=object)  # the last slot is NaT's code -1
        if len(uniques):
            converted[:-1] = convert(np.asarray(uniques, dtype=stamps.dtype))
        converted[-1] = None
        return cls(converted[codes], np.isnat(stamps))


def _to_datetime(series: pd.Series, utc: bool = False) -> pd.Series:
    """pd.to_datetime, falling back to per-value parsing for text in mixed formats."""
    try:
        return pd.to_datetime(series, utc=utc)
    except (ValueError, TypeError):
        return pd.to_datetime(series, utc=utc, format="mixed")


# Dates and timestamps as each driver takes them best: SQLite stores SQLAlchemy's own text
# forms ('YYYY-MM-DD', naive UTC 'YYYY-MM-DD HH:MM:SS.ffffff'); PyMySQL escapes text cheaply
# and MySQL DATETIME(6) takes the same naive UTC text; psycopg (binary COPY) wants objects.


def _iso_dates(days: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(days, unit="D").astype(object)


def _iso_timestamps(micros: np.ndarray) -> np.ndarray:
    return np.char.replace(np.datetime_as_string(micros, unit="us"), "T", " ").astype(object)


def _date_objects(days: np.ndarray) -> np.ndarray:
    return days.astype(object)


def _utc_datetimes(micros: np.ndarray) -> np.ndarray:
    return pd.DatetimeIndex(micros).tz_localize("UTC").to_pydatetime()


def from_driver(values: Sequence[Any], kind: str) -> pd.Series:
    """A column of raw driver values -> the frame column `read()` promises."""
    if kind == "date":
        return _dates(values)
    if kind == "timestamp":
        return _timestamps(values)
    if kind == "float":
        return pd.Series(np.array(values, dtype="float64"), copy=False)
    if kind == "bool":
        if any(v is None for v in values):
            return pd.Series([None if v is None else bool(v) for v in values], dtype=object)
        return pd.Series(np.array(values, dtype=bool), copy=False)
    if not values:
        return pd.Series([], dtype=object)
    return pd.Series(list(values))


#: The unit pandas gives dates (datetime64[s] on pandas 3, [ns] on pandas 2).
_DATE_DTYPE = pd.to_datetime(pd.Series([dt.date(2000, 1, 3)])).dtype


def _dates(values: Sequence[Any]) -> pd.Series:
    first = next((v for v in values if v is not None), None)
    if isinstance(first, str):  # SQLite text 'YYYY-MM-DD': numpy parses ISO dates in C
        try:
            return pd.Series(np.array(values, dtype="datetime64[D]")).astype(_DATE_DTYPE)
        except ValueError:  # text written by something else, e.g. with a time of day
            parsed = pd.to_datetime(pd.Series(list(values), dtype=object), format="ISO8601")
            return parsed.dt.normalize().astype(_DATE_DTYPE)
    if isinstance(first, dt.datetime):
        values = [None if v is None else v.date() for v in values]
    return pd.to_datetime(pd.Series(list(values), dtype=object)).astype(_DATE_DTYPE)


def _timestamps(values: Sequence[Any]) -> pd.Series:
    series = pd.Series(list(values), dtype=object)
    first = next((v for v in values if v is not None), None)
    if isinstance(first, str):
        return pd.to_datetime(series, utc=True, format="ISO8601")
    return pd.to_datetime(series, utc=True)  # naive MySQL DATETIMEs are UTC wall times


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause cyclic garbage collection around bulk row building (restored on exit)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def as_utc(value: dt.datetime | str | None) -> dt.datetime | None:
    """A timestamp read through a raw select: SQLite hands back naive UTC or text."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
