"""Prices and news from local files: exports the user downloaded, never a network call.

Prices come from a folder with one Yahoo-style export per ticker (``NOVA.csv``,
``QBIT.parquet``) or from one long table with a ``ticker`` column; news from one CSV of
exported posts in the news schema.

Every cell is read as text and converted column by column, so a bad cell is reported with
its file, column, line and value instead of turning into a silent NaN or a shifted column
(pandas' own reader guesses an index column when the first row is one field longer and pads
short rows, which is how a truncated download gets half-read). A file is parsed completely
before anything is returned. Only structural problems are `SourceError`s here: unreadable
text, missing columns, numbers or dates that do not parse, duplicate keys, mixed timezone
offsets, empty files. Whether the values are plausible (prices above zero, high above low)
is the validation stage's question; it reports those as data quality with counts.

Headers match whatever their case, spaces and underscores: ``Adj Close``, ``adj_close`` and
``ADJ_CLOSE`` are one column.

Everything read here may be hostile or simply the wrong file: a ticker, from a file name or a
cell, must match `TICKER_PATTERN` (it becomes a file name, an SQL value and report text), and
a file larger than `MAX_FILE_BYTES` or longer than `MAX_FILE_ROWS` is refused before it is
read whole, so pointing a source at a disk image or a database dump fails in a second
instead of exhausting memory.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import stat
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bentley import schemas
from bentley.calendar import DEFAULT_CALENDAR, session_for
from bentley.sources.base import (
    TICKER_PATTERN,
    TICKER_RULE,
    FetchRequest,
    Health,
    MarketSource,
    Source,
    SourceError,
    default_instrument_type,
    parse_instrument_type,
    resolve_inside,
    validate_ticker,
)

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_FILE_ROWS",
    "apply_limits",
    "Column",
    "CsvMarketSource",
    "CsvNewsSource",
    "Table",
    "check_size",
    "contract_frame",
    "digest",
    "folder_files",
    "read_bytes",
    "read_table",
]

#: Largest source file read, in bytes (512 MiB). Ten years of daily bars for one ticker are
#: about 200 KB and a decade of bank exports a few MB; a file this large is the wrong file.
#: `apply_limits` sets it from `sources.file_limits.max_mb`.
MAX_FILE_BYTES = 512 * 2**20
#: Most data rows read from one CSV or Parquet source file: 5,000,000 rows are 20 years of
#: daily bars for about 1,000 tickers in one long file (`sources.file_limits.max_rows`).
MAX_FILE_ROWS = 5_000_000


def apply_limits(limits: Any) -> None:
    """Use `sources.file_limits` for this process's reads (each stage runs in its own kernel).

    The source factories call it before building a source, so every reader, however deep,
    checks the same limits without passing them through each call.
    """
    global MAX_FILE_BYTES, MAX_FILE_ROWS
    MAX_FILE_BYTES = int(limits.max_mb * 2**20)
    MAX_FILE_ROWS = int(limits.max_rows)


#: Longest cell value quoted in an error message: enough to recognise it, never a file dump.
_QUOTE_LIMIT = 40
#: Offsets within one file may differ by this much: a zone's daylight saving time shift
#: (yfinance writes -05:00 in winter and -04:00 in summer for New York sessions).
_DST_SHIFT_MINUTES = 60
#: A time of day followed by a UTC offset; the part before the offset is the local time.
_WITH_OFFSET = re.compile(
    r"^(?P<local>.*\d:\d{2}(?::\d{2}(?:\.\d+)?)?)\s*(?P<offset>Z|[+-]\d{2}(?::?\d{2})?)$",
    re.IGNORECASE,
)
_DATE_FORMATS = ("ISO8601", "%m/%d/%Y")  # ISO first; US month/day/year is what US banks write
#: A whole date must be written: ISO 8601 alone would read "2024" as 2024-01-01.
_FULL_DATE = re.compile(r"\d{4}-?\d{2}-?\d{2}|\d{1,2}/\d{1,2}/\d{4}")

_DTYPES = {  # contract kind -> pandas dtype; "str" columns get pandas' string dtype
    "date": "datetime64[ns]",
    "timestamp": "datetime64[ns, UTC]",
    "float": "float64",
    "int": "int64",
}


def _quote(value: str) -> str:
    """A cell value for an error message, shortened so a long cell cannot flood the message."""
    return repr(value if len(value) <= _QUOTE_LIMIT else value[:_QUOTE_LIMIT] + "...")


def _normalized(name: str) -> str:
    """The header key columns are matched on: lower case, without spaces and underscores."""
    return re.sub(r"[\s_]+", "", name).lower()


def _offset_minutes(offset: str) -> int:
    """'Z' -> 0, '-05:00' -> -300, '+0530' -> 330, '+01' -> 60."""
    if offset.upper() == "Z":
        return 0
    digits = offset[1:].replace(":", "")
    minutes = int(digits[:2]) * 60 + int(digits[2:] or 0)
    return -minutes if offset[0] == "-" else minutes


# --------------------------------------------------------------------------- reading files


@dataclass(frozen=True)
class Table:
    """A file's cells as stripped text ("" when empty), with its header and where rows sit.

    Columns of `cells` are positions, not names: a header may repeat a name or leave one
    blank (a trailing comma), and only the columns a source asks for need to be unique.
    """

    file: str
    header: list[str]
    cells: pd.DataFrame
    rows: np.ndarray  # for each record, its line (CSV) or row (Parquet) number
    unit: str  # "line" or "row"

    def error(self, problem: str) -> SourceError:
        return SourceError(f"{self.file}: {problem}")

    def located(self, positions: Sequence[int]) -> str:
        """'line 4', 'lines 4 and 9' or 'lines 4, 9 and 12 (5 in all)' for record positions."""
        numbers = [str(self.rows[p]) for p in positions[:3]]
        if len(numbers) == 1:
            return f"{self.unit} {numbers[0]}"
        listed = f"{', '.join(numbers[:-1])} and {numbers[-1]}"
        extra = f" ({len(positions)} in all)" if len(positions) > 3 else ""
        return f"{self.unit}s {listed}{extra}"

    def columns(self, accepted: Mapping[str, Sequence[str]], required: Collection[str]) -> dict[str, Column]:
        """The file's columns by canonical name; `accepted` maps each name to other spellings.

        A header that spells one column twice is refused rather than resolved by position:
        "Dividends" next to "dividend" means the export is not what it claims to be.
        """
        found: dict[str, Column] = {}
        missing = []
        keys = [_normalized(h) for h in self.header]
        for name, spellings in accepted.items():
            wanted = {_normalized(name), *map(_normalized, spellings)}
            hits = [i for i, key in enumerate(keys) if key in wanted]
            if len(hits) > 1:
                written = " and ".join(repr(self.header[i]) for i in hits)
                raise self.error(f"columns {written} are both the {name!r} column")
            if hits:
                found[name] = Column(self, self.header[hits[0]], self.cells[hits[0]])
            elif name in required:
                missing.append(name)
        if missing:
            names = ", ".join(map(repr, missing))
            header = ", ".join(self.header)
            header = header if len(header) <= 200 else header[:200] + "..."
            raise self.error(f"missing column{'s' if len(missing) > 1 else ''} {names} (header: {header})")
        return found


@dataclass(frozen=True)
class Column:
    """One column of a `Table` with the conversions that report the first bad cell."""

    table: Table
    name: str  # as written in the file's header
    text: pd.Series  # stripped cells, "" when empty

    def _error(self, problem: str, mask: pd.Series, show_value: bool = True, hint: str = "") -> SourceError:
        first = int(np.flatnonzero(mask.to_numpy())[0])
        where = self.table.located([first])
        shown = f": {_quote(self.text.iat[first])}" if show_value else ""
        return self.table.error(f"column {self.name!r} {problem} ({where}{shown}){'; ' + hint if hint else ''}")

    def require(self) -> Column:
        """This column, checked to have no empty cell: keys and dates cannot be missing."""
        empty = self.text == ""
        if empty.any():
            raise self._error("is empty", empty, show_value=False)
        return self

    def tickers(self) -> pd.Series:
        """Ticker symbols, upper-cased; the first cell that is not one (`TICKER_PATTERN`) fails.

        Checked per distinct value, so a long file of millions of rows costs one match per ticker.
        """
        text = self.require().text
        distinct = text.unique()
        bad = [value for value in distinct if TICKER_PATTERN.fullmatch(value) is None]
        if bad:
            raise self._error("has a value that is not a ticker symbol", text.isin(bad), hint=TICKER_RULE)
        return text.str.upper()

    def strings(self) -> pd.Series:
        """The text with empty cells as missing values (None), for optional text fields."""
        return self.text.where(self.text != "", None)

    def numbers(self, parse: Callable[[str], float] | None = None) -> pd.Series:
        """Floats; empty cells are NaN (validation reports missing values), text is an error.

        `parse` reads one cell (NaN when it cannot); the default accepts plain decimal
        numbers only, so "1,234" (a thousands separator or a decimal comma?) is refused.
        """
        filled = self.text.where(self.text != "")
        if parse is None:
            values = pd.to_numeric(filled, errors="coerce").astype("float64")
        else:
            values = filled.map(parse, na_action="ignore").astype("float64")
        bad = values.isna() & (self.text != "")
        if bad.any():
            raise self._error("has text where a number belongs", bad)
        return values

    def whole_numbers(self) -> pd.Series:
        """int64 counts: every cell must be a whole number (the contract has no missing ints)."""
        values = self.require().numbers()
        fraction = ~np.isfinite(values) | (values % 1 != 0)
        if fraction.any():
            raise self._error("has a value that is not a whole number", fraction)
        return values.astype("int64")

    def dates(self) -> pd.Series:
        """Dates as written, normalized to midnight; empty cells are NaT.

        ISO 8601 or US month/day/year. A timestamp with a UTC offset keeps its local date
        (a session date written as midnight New York time is that day, not the UTC day).
        Offsets may move by one daylight-saving hour; beyond that, or some with an offset
        and some without, the rows were stitched together from different zones and their
        dates cannot be trusted to mean the same thing.
        """
        parts = self.text.str.extract(_WITH_OFFSET)
        with_offset = parts["offset"].notna()
        if with_offset.any():
            self._check_offsets(parts["offset"], with_offset)
        local = parts["local"].where(with_offset, self.text).where(self.text != "")
        parsed = pd.Series(pd.NaT, index=self.text.index, dtype="datetime64[ns]")
        for date_format in _DATE_FORMATS:
            todo = parsed.isna() & local.notna()
            if not todo.any():
                break
            attempt = pd.to_datetime(local[todo], format=date_format, errors="coerce")
            parsed[todo] = attempt.astype("datetime64[ns]")
        bad = (parsed.isna() | ~local.str.match(_FULL_DATE).fillna(True).astype(bool)) & (self.text != "")
        if bad.any():
            raise self._error("has a value that is not a date", bad)
        return parsed.dt.normalize()

    def _check_offsets(self, offsets: pd.Series, with_offset: pd.Series) -> None:
        if not with_offset.all():
            naive, aware = (
                int(np.argmin(with_offset.to_numpy())),
                int(np.argmax(with_offset.to_numpy())),
            )
            raise self.table.error(
                f"column {self.name!r} has mixed timezone offsets "
                f"({self.table.located([naive])}: none, {self.table.located([aware])}: {offsets.iat[aware]!r})"
            )
        minutes = offsets.map(_offset_minutes)
        if minutes.max() - minutes.min() > _DST_SHIFT_MINUTES:
            low, high = int(np.argmin(minutes.to_numpy())), int(np.argmax(minutes.to_numpy()))
            first, second = sorted((low, high))
            raise self.table.error(
                f"column {self.name!r} has mixed timezone offsets "
                f"({self.table.located([first])}: {offsets.iat[first]!r}, "
                f"{self.table.located([second])}: {offsets.iat[second]!r})"
            )

    def timestamps(self) -> pd.Series:
        """UTC instants from ISO 8601; a timestamp without an offset is taken as UTC."""
        self.require()
        parsed = pd.to_datetime(self.text, format="ISO8601", utc=True, errors="coerce")
        bad = parsed.isna()
        if bad.any():
            raise self._error("has a value that is not an ISO 8601 timestamp", bad)
        return parsed.astype("datetime64[ns, UTC]")


def check_size(path: Path) -> None:
    """Refuse anything but a regular file of at most `MAX_FILE_BYTES`, before reading it.

    A folder, a device or a named pipe given where a file belongs would fail obscurely or
    block forever when read; a huge file would be read whole into memory first.
    """
    try:
        info = path.stat()
    except OSError as error:
        raise SourceError(f"{path}: cannot read ({error.strerror or error})") from error
    if stat.S_ISDIR(info.st_mode):
        raise SourceError(f"{path}: a folder where a file is expected")
    if not stat.S_ISREG(info.st_mode):
        raise SourceError(f"{path}: not a regular file (a device, socket or named pipe)")
    if info.st_size > MAX_FILE_BYTES:
        raise _too_large(path, info.st_size)


def _too_large(path: Path, size: int) -> SourceError:
    return SourceError(
        f"{path}: {size:,} bytes, over the limit of {MAX_FILE_BYTES:,} bytes for one source file "
        "(sources.file_limits.max_mb)"
    )


def _too_long(path: Path | str) -> SourceError:
    return SourceError(
        f"{path}: more than {MAX_FILE_ROWS:,} data rows, the limit for one source file (sources.file_limits.max_rows)"
    )


def read_bytes(path: Path) -> bytes:
    """The file's bytes (see `check_size`); a file with nothing but whitespace is refused as empty.

    At most one byte over the limit is read, so a file that grows after `check_size` cannot
    slip past it.
    """
    check_size(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise SourceError(f"{path}: cannot read ({error.strerror or error})") from error
    if len(data) > MAX_FILE_BYTES:
        raise _too_large(path, len(data))
    if not data.strip():
        raise SourceError(f"{path}: empty file")
    return data


def folder_files(folder: Path, suffixes: Collection[str]) -> list[Path]:
    """The folder's files with one of `suffixes` (lower case, with the dot), sorted by name.

    Hidden entries (``.DS_Store``, ``.gitkeep``, editor swap files) and files of other types
    (``README.txt``) are ignored. Any other entry that is not a readable regular file is an
    error, never a skip: a subfolder's files would silently not be read, and a broken link
    or an unreadable export would silently shrink the data.
    """
    try:
        entries = sorted(folder.iterdir())
    except OSError as error:
        reason = error.strerror or error
        raise SourceError(f"{folder}: cannot list the folder ({reason})") from error
    files: list[Path] = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            raise SourceError(
                f"{folder}: {entry.name!r} is a folder; files in subfolders are not read, "
                "so move them up or point the setting at the subfolder"
            )
        if not entry.is_file():
            raise SourceError(f"{folder}: {entry.name!r} is not a regular file (a broken link, socket or pipe)")
        if entry.suffix.lower() not in suffixes:
            continue
        if not os.access(entry, os.R_OK):
            raise SourceError(f"{folder}: {entry.name!r} is not readable (permission denied)")
        files.append(entry)
    return files


def read_table(path: Path) -> Table:
    """A CSV (UTF-8, strict) or Parquet file as a `Table`, by the file's suffix."""
    if path.suffix.lower() == ".parquet":
        return _read_parquet(path)
    return _read_csv(path)


def _read_csv(path: Path) -> Table:
    """Strict UTF-8 (a byte-order mark is allowed) and exactly one field per header column.

    Rows whose fields are all blank are skipped, like the blank lines spreadsheets leave.
    """
    data = read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise SourceError(
            f"{path}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}, "
            f"line {line}); save the file as UTF-8"
        ) from error
    # A field may be as long as the file (a social post's body); the file's size is the bound.
    csv.field_size_limit(max(csv.field_size_limit(), MAX_FILE_BYTES))
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
    records: list[list[str]] = []
    lines: list[int] = []
    try:
        for record in reader:
            if any(field.strip() for field in record):
                if len(records) > MAX_FILE_ROWS:  # the header and MAX_FILE_ROWS rows are in
                    raise _too_long(path)
                records.append([field.strip() for field in record])
                lines.append(reader.line_num)
    except csv.Error as error:
        raise SourceError(f"{path}: not valid CSV (line {reader.line_num}: {error})") from error
    if not records:
        raise SourceError(f"{path}: empty file")
    header, body = records[0], records[1:]
    if not body:
        raise SourceError(f"{path}: no data rows (only a header)")
    for record, line in zip(body, lines[1:], strict=True):
        if len(record) != len(header):
            raise SourceError(f"{path}: line {line} has {len(record)} fields where the header has {len(header)}")
    cells = pd.DataFrame(body, columns=range(len(header)), dtype="str")
    return Table(str(path), header, cells, np.array(lines[1:]), "line")


def _read_parquet(path: Path) -> Table:
    """Parquet cells go through the same text conversions as CSV cells.

    So both formats accept and refuse the same values with the same messages; a float's
    text form reads back to the same float, and a timezone-aware timestamp keeps its offset.
    Index columns a writer stored are ordinary columns here (a yfinance frame saved with
    its Date index still has a Date column).
    """
    data = read_bytes(path)
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        if parquet.metadata.num_rows > MAX_FILE_ROWS:  # known from the footer, before decoding
            raise _too_long(path)
        frame = parquet.read().to_pandas(ignore_metadata=True)
    except SourceError:  # the row limit, itself a ValueError: not a parse failure
        raise
    except (OSError, ValueError, pa.ArrowException) as error:
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise SourceError(f"{path}: not a readable Parquet file ({reason})") from error
    if frame.empty:
        raise SourceError(f"{path}: no data rows")
    cells = pd.DataFrame({i: frame.iloc[:, i].astype("str").fillna("").str.strip() for i in range(frame.shape[1])})
    return Table(str(path), [str(c) for c in frame.columns], cells, np.arange(1, len(frame) + 1), "row")


def contract_frame(contract: schemas.TableContract, columns: Mapping[str, object]) -> pd.DataFrame:
    """A frame with exactly the contract's columns, in its order, with its dtypes.

    Text columns are pandas' string dtype even when empty or all missing, so a lake file
    never stores a text column as float or as Arrow's null type.
    """
    frame = pd.DataFrame({name: columns[name] for name in contract.column_names})
    dtypes = {name: _DTYPES.get(kind, "str") for name, kind in contract.columns.items()}
    return frame.astype(dtypes).reset_index(drop=True)


def digest(*parts: object) -> str:
    """Stable identifier of a row from its natural coordinates (sha1 of the "|"-joined parts)."""
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()


# --------------------------------------------------------------------------- prices

#: Price columns and the other spellings accepted (Yahoo's "Dividends" and "Stock Splits",
#: its "quoteType" for the optional instrument type: equity, etf, fund or index).
PRICE_COLUMNS: dict[str, tuple[str, ...]] = {
    "date": (),
    "ticker": (),
    "open": (),
    "high": (),
    "low": (),
    "close": (),
    "adj_close": (),
    "volume": (),
    "dividend": ("dividends",),
    "split_ratio": ("stock splits",),
    "instrument_type": ("type", "quote_type"),
}
_REQUIRED_PRICE_COLUMNS = ("date", "open", "high", "low", "close", "volume")
_PRICE_SUFFIXES = (".csv", ".parquet")
_EMPTY_PRICES = contract_frame(schemas.PRICES, {name: [] for name in schemas.PRICES.column_names})


def _fold_yfinance_header(table: Table) -> tuple[Table, str | None]:
    """yfinance's `download(...).to_csv()` header (rows Price, Ticker, Date) as one header row.

    Returns the table with a plain header and the ticker the Ticker row names, or the table
    unchanged and None for any other layout. Several tickers in one file are refused, and so
    is a Ticker row value that is not a ticker symbol.
    """
    cells = table.cells
    if not (
        _normalized(table.header[0]) == "price"
        and len(cells) >= 2
        and _normalized(cells.iat[0, 0]) == "ticker"
        and _normalized(cells.iat[1, 0]) == "date"
        and (cells.iloc[1, 1:] == "").all()
    ):
        return table, None
    where = f"{table.file}: {table.unit} {table.rows[0]}"
    named = sorted({validate_ticker(value, where) for value in cells.iloc[0, 1:] if value})
    if len(named) != 1:
        raise table.error(f"yfinance layout with {len(named)} tickers ({', '.join(named)}); save one file per ticker")
    if len(cells) == 2:
        raise table.error("no data rows (only a header)")
    body = cells.iloc[2:].reset_index(drop=True)
    header = ["Date", *table.header[1:]]
    return Table(table.file, header, body, table.rows[2:], table.unit), named[0]


class PriceFile(NamedTuple):
    """A parsed price file: its rows in contract columns and the types its type column states."""

    prices: pd.DataFrame
    types: dict[str, str]  # ticker -> instrument type; a ticker without a stated type is absent


def _stated_types(table: Table, column: Column, tickers: pd.Series) -> dict[str, str]:
    """ticker -> instrument type from a price file's type column; blank cells state nothing.

    Each distinct (ticker, value) pair is checked once, so a long file costs a check per
    ticker. A value that is not a type, or a ticker given two types, is refused with the
    file, the column, the line and the ticker: the type decides whether it may be traded.
    """
    stated = pd.DataFrame({"ticker": tickers, "value": column.text})[column.text != ""]
    types: dict[str, str] = {}
    first: dict[str, int] = {}
    for position, ticker, value in stated.drop_duplicates().itertuples(name=None):
        where = f"{table.file}: column {column.name!r}, {table.located([position])}, ticker {ticker!r}"
        kind = parse_instrument_type(value, where)
        if types.setdefault(ticker, kind) != kind:
            raise table.error(
                f"column {column.name!r} gives ticker {ticker!r} two types: {types[ticker]!r} "
                f"({table.located([first[ticker]])}) and {kind!r} ({table.located([position])})"
            )
        first.setdefault(ticker, position)
    return types


def _parse_prices(table: Table, ticker: str | None) -> PriceFile:
    """Rows of a price file in contract columns: one ticker's export, or a long table if None.

    Adj Close defaults to Close, dividends to 0 and splits to 1 (Yahoo writes 0 for "no
    split"). Empty price cells stay NaN for validation to count; a date twice is an error.
    An optional type column (`instrument_type`, `type` or `quote_type`) states each
    ticker's instrument type; it is not a price column and never reaches the lake.
    """
    table, named = _fold_yfinance_header(table)
    if named is not None and ticker is not None and named != ticker.upper():
        raise table.error(f"holds ticker {named!r}, not {ticker!r}")
    ticker = ticker or named
    required = _REQUIRED_PRICE_COLUMNS if ticker is not None else (*_REQUIRED_PRICE_COLUMNS, "ticker")
    columns = table.columns(PRICE_COLUMNS, required)
    close = columns["close"].numbers()
    dividend = columns["dividend"].numbers().fillna(0.0) if "dividend" in columns else 0.0
    split = columns["split_ratio"].numbers() if "split_ratio" in columns else pd.Series(1.0, index=close.index)
    frame = pd.DataFrame(
        {
            "ticker": ticker if ticker is not None else columns["ticker"].tickers(),
            "date": columns["date"].require().dates(),
            "open": columns["open"].numbers(),
            "high": columns["high"].numbers(),
            "low": columns["low"].numbers(),
            "close": close,
            "adj_close": columns["adj_close"].numbers() if "adj_close" in columns else close,
            "volume": columns["volume"].whole_numbers(),
            "dividend": dividend,
            "split_ratio": split.where(split.fillna(0.0) != 0.0, 1.0),
        }
    )
    duplicated = frame.duplicated(["ticker", "date"], keep=False)
    if duplicated.any():
        first = frame[duplicated].iloc[0]
        same = np.flatnonzero(duplicated & (frame["ticker"] == first["ticker"]) & (frame["date"] == first["date"]))
        whose = f" for {first['ticker']}" if ticker is None else ""
        raise table.error(f"duplicate date {first['date'].date()}{whose} ({table.located(list(same))})")
    stated = (
        _stated_types(table, columns["instrument_type"], frame["ticker"].astype(str))
        if "instrument_type" in columns
        else {}
    )
    return PriceFile(frame, stated)


class CsvMarketSource(MarketSource):
    """Daily bars from exported files: a folder of per-ticker files or one long file.

    Folder: ``TICKER.csv`` or ``TICKER.parquet`` with Yahoo's columns (Date, Open, High, Low,
    Close, Adj Close, Volume, optionally Dividends and Stock Splits; yfinance's three-row
    ``download().to_csv()`` header for one ticker too). Long file (``.csv`` or ``.parquet``):
    date, ticker, open, high, low, close, adj_close, volume, optionally dividend and
    split_ratio. Dates are session dates as written; the calendar is kept for
    the stages (validation checks dates against it), not used to reject rows here.
    Either layout may add a type column (`instrument_type`, `type` or `quote_type`: equity,
    etf, fund or index, in any case) that `instrument_types` reports.

    A folder lists as `folder_files` does (hidden entries ignored, a subfolder or an unreadable
    entry refused), and every price file's name must be a ticker symbol (`TICKER_PATTERN`).
    """

    name = "csv"
    datasets = ("prices",)

    def __init__(self, path: Path, benchmark: str, calendar: str = DEFAULT_CALENDAR) -> None:
        super().__init__()
        self.path = Path(path)
        self.benchmark = benchmark.strip().upper()
        self.calendar = calendar
        self._long_cache: tuple[tuple[int, int], PriceFile] | None = None
        #: Folder layout: ticker -> the types its file states, kept from each parse so that
        #: `instrument_types` after a fetch reads no file twice.
        self._folder_types: dict[str, dict[str, str]] = {}

    def available_tickers(self) -> list[str]:
        """Folder: file names upper-cased; long file: its tickers. The benchmark excluded."""
        if self.path.is_dir():
            tickers = set(self._ticker_files())
        else:
            tickers = set(self._long_prices().prices["ticker"])
        return sorted(tickers - {self.benchmark})

    def instrument_types(self, tickers: Iterable[str]) -> dict[str, str]:
        """ticker -> type: what the file's type column states, else the `^` convention.

        A folder's files are parsed for tickers no fetch has read yet; a requested ticker
        without a file is an error, as in `fetch`.
        """
        wanted = list(tickers)
        if self.path.is_dir():
            files = self._ticker_files()
            stated: dict[str, str] = {}
            for ticker in wanted:
                if ticker not in self._folder_types:
                    self._ticker_prices(ticker, files)
                stated.update(self._folder_types[ticker])
        else:
            stated = self._long_prices().types
        return {t: stated.get(t, default_instrument_type(t)) for t in wanted}

    def fetch(self, dataset: str, request: FetchRequest) -> pd.DataFrame:
        """The requested tickers (the benchmark too, when asked) in the window, by ticker and date.

        A requested ticker without a file or without rows is an error: the universe names it,
        so a missing export is a configuration mistake, not an empty answer.
        """
        self._check_dataset(dataset)
        tickers = sorted(set(request.tickers))
        if self.path.is_dir():
            files = self._ticker_files()
            frames = [self._ticker_prices(t, files) for t in tickers]
            prices = pd.concat(frames, ignore_index=True) if frames else _EMPTY_PRICES
        else:
            long = self._long_prices().prices
            absent = sorted(set(tickers) - set(long["ticker"]))
            if absent:
                raise SourceError(
                    f"{self.path}: no rows for ticker{'s' if len(absent) > 1 else ''} {', '.join(map(repr, absent))}"
                )
            prices = long[long["ticker"].isin(tickers)]
        start, end = pd.Timestamp(request.start), pd.Timestamp(request.end)
        prices = prices[(prices["date"] >= start) & (prices["date"] <= end)]
        prices = prices.sort_values(["ticker", "date"], kind="stable")
        return contract_frame(schemas.PRICES, prices)

    def health(self) -> Health:
        component = f"source:{self.name}"
        if not self.path.exists():
            return Health(component, ok=False, detail=f"{self.path} does not exist")
        if self.path.is_dir():
            if not os.access(self.path, os.R_OK | os.X_OK):
                return Health(component, ok=False, detail=f"folder {self.path} is not readable")
            try:
                files = self._ticker_files()
            except SourceError as error:
                return Health(component, ok=False, detail=str(error))
            return Health(component, ok=True, detail=f"{len(files)} ticker files in {self.path}")
        if not os.access(self.path, os.R_OK):
            return Health(component, ok=False, detail=f"{self.path} is not readable")
        return Health(component, ok=True, detail=f"one long file {self.path}")

    def _ticker_files(self) -> dict[str, list[Path]]:
        """TICKER -> its files in the folder (more than one is a clash, refused on fetch).

        A file name that is not a ticker symbol is refused here, for every file and not only
        the requested ones: the folder is the input, and `universe.tickers: null` lists it all.
        """
        found: dict[str, list[Path]] = {}
        for entry in folder_files(self.path, _PRICE_SUFFIXES):
            ticker = validate_ticker(entry.stem, f"{self.path}: file {entry.name!r}")
            found.setdefault(ticker, []).append(entry)
        return found

    def _ticker_prices(self, ticker: str, files: Mapping[str, list[Path]]) -> pd.DataFrame:
        """One ticker's file, found in the folder listing: a ticker never becomes a path unchecked."""
        try:
            resolve_inside(self.path, f"{ticker}.csv")
        except SourceError as error:
            raise SourceError(f"ticker {ticker!r}: {error}") from None
        paths = files.get(ticker.upper(), [])
        if not paths:
            raise SourceError(
                f"no price file for ticker {ticker!r} in {self.path} (expected {ticker}.csv or {ticker}.parquet)"
            )
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            raise SourceError(f"ticker {ticker!r} has {len(paths)} files in {self.path} ({names}); keep one")
        path = resolve_inside(self.path, paths[0].name)  # a symlink must not lead outside
        parsed = _parse_prices(read_table(path), ticker)
        self._folder_types[ticker] = parsed.types
        return parsed.prices

    def _long_prices(self) -> PriceFile:
        """The whole long file, parsed once per version of the file (ingest lists, then fetches)."""
        try:
            stat = self.path.stat()
        except OSError as error:
            raise SourceError(f"{self.path}: cannot read ({error.strerror or error})") from error
        if self.path.suffix.lower() not in _PRICE_SUFFIXES:
            raise SourceError(f"{self.path}: not a .csv or .parquet file, nor a folder of them")
        version = (stat.st_mtime_ns, stat.st_size)
        if self._long_cache is None or self._long_cache[0] != version:
            self._long_cache = (version, _parse_prices(read_table(self.path), None))
        return self._long_cache[1]


# --------------------------------------------------------------------------- news


#: News columns; only ticker, published_at and headline are required. `source_kind` is not
#: read: every row of this source is a headline (social posts come from `sources.social`).
NEWS_COLUMNS: dict[str, tuple[str, ...]] = {name: () for name in schemas.NEWS.column_names if name != "source_kind"}
_REQUIRED_NEWS_COLUMNS = ("ticker", "published_at", "headline")


class CsvNewsSource(Source):
    """Exported posts in the news schema, one CSV.

    news_id, date, publisher, url and author are optional: a missing id is derived from
    (ticker, published_at, headline), a missing date is the session the post belongs to
    (`session_for`). Headlines are kept as plain text: markup in them is text, never parsed.
    Posts of tickers outside the request are not returned; `outside_universe` counts them
    (ticker -> rows in the window) so the stage can warn by name.
    """

    name = "csv"
    datasets = ("news",)

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.outside_universe: dict[str, int] = {}

    def fetch(self, dataset: str, request: FetchRequest) -> pd.DataFrame:
        self._check_dataset(dataset)
        news = self._parse()
        in_window = news[(news["date"] >= pd.Timestamp(request.start)) & (news["date"] <= pd.Timestamp(request.end))]
        requested = in_window["ticker"].isin(request.tickers)
        outside = in_window.loc[~requested, "ticker"].value_counts().sort_index()
        self.outside_universe = {str(t): int(n) for t, n in outside.items()}
        chosen = in_window[requested].sort_values(["date", "ticker", "published_at", "news_id"], kind="stable")
        return contract_frame(schemas.NEWS, chosen)

    def _parse(self) -> pd.DataFrame:
        table = read_table(self.path)
        columns = table.columns(NEWS_COLUMNS, _REQUIRED_NEWS_COLUMNS)
        ticker = columns["ticker"].tickers()
        published = columns["published_at"].timestamps()
        headline = columns["headline"].text
        session = session_for(published)
        date = columns["date"].dates().fillna(session) if "date" in columns else session
        undated = date.isna()
        if undated.any():
            first = int(np.flatnonzero(undated.to_numpy())[0])
            raise table.error(
                f"published_at {published.iat[first].isoformat()} is outside the {DEFAULT_CALENDAR} "
                f"calendar; give the post a date ({table.located([first])})"
            )
        derived = pd.Series(
            ["csv:" + digest(t, p.isoformat(), h) for t, p, h in zip(ticker, published, headline, strict=True)],
            index=ticker.index,
            dtype="str",
        )
        news_id = (
            columns["news_id"].text.where(columns["news_id"].text != "", derived) if "news_id" in columns else derived
        )
        duplicated = news_id.duplicated(keep=False)
        if duplicated.any():
            first_id = news_id[duplicated].iat[0]
            same = np.flatnonzero((news_id == first_id).to_numpy())
            raise table.error(f"duplicate news_id {_quote(first_id)} ({table.located(list(same))})")
        return pd.DataFrame(
            {
                "news_id": news_id,
                "ticker": ticker,
                "published_at": published,
                "date": date,
                "headline": columns["headline"].strings(),
                "publisher": columns["publisher"].strings() if "publisher" in columns else None,
                "url": columns["url"].strings() if "url" in columns else None,
                "source_kind": "news",
                "author": columns["author"].strings() if "author" in columns else None,
            }
        )
