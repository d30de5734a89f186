"""The interface every source implements.

A source has a name, the datasets it provides and a `fetch` over a date window.
Market sources also say which tickers they offer, so that `universe.tickers: null`
means "everything the market source has". News and portfolio sources take the
universe as an argument: sources stay independent of each other.
"""

from __future__ import annotations

import datetime as dt
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


class SourceError(ValueError):
    """Bad input from a source: the message names the file, field or ticker and the problem."""


class TransientSourceError(RuntimeError):
    """A failure worth retrying later (rate limit, 5xx, timeout, connection reset)."""


#: Longest ticker symbol accepted. Yahoo's longest real symbols (``005930.KS``,
#: ``EURUSD=X``, ``BTC-USD``) are far shorter; a longer name is a file that is not an export.
MAX_TICKER_LENGTH = 20

TICKER_PATTERN = re.compile(rf"(?=.{{1,{MAX_TICKER_LENGTH}}}\Z)\^?[A-Za-z0-9]+(?:[.=-][A-Za-z0-9]+)*")
"""What a ticker symbol may look like, wherever it enters from outside.

An optional leading ``^`` (indices: ``^GSPC``), then ASCII letters and digits in groups joined
by one ``.``, ``-`` or ``=`` (``BRK-B``, ``BRK.B``, ``7203.T``, ``BTC-USD``, ``EURUSD=X``,
``ES=F``), at most `MAX_TICKER_LENGTH` characters. Use it with `fullmatch`.

A ticker becomes a file name, an SQL value, an MLflow tag and text in every report, so
only what real symbols need is admitted: no spaces, quotes, ``<>``, ``;``, ``/``, ``&`` or
non-ASCII letters. Case is not part of the pattern; symbols are upper-cased once accepted.
"""

#: `TICKER_PATTERN` in words, for error messages.
TICKER_RULE = (
    "a ticker is ASCII letters and digits joined by single '.', '-' or '=', "
    f"optionally after '^', at most {MAX_TICKER_LENGTH} characters"
)


def validate_ticker(symbol: str, where: str) -> str:
    """`symbol` upper-cased if it matches `TICKER_PATTERN`, else a one-line `SourceError`.

    `where` names the origin for the message: a file path, ``"<file>: line 4"`` or a params
    key such as ``"universe.tickers"``. The symbol is checked as given, before upper-casing,
    so that a non-ASCII letter cannot turn into ASCII (``"ß".upper()`` is ``"SS"``). A too
    long symbol is shortened in the message so a hostile file name cannot flood it.
    `SourceError` is a `ValueError`, so a pydantic field validator can call this as it is.
    """
    if TICKER_PATTERN.fullmatch(symbol) is None:
        limit = 2 * MAX_TICKER_LENGTH
        shown = symbol if len(symbol) <= limit else symbol[:limit] + "..."
        raise SourceError(f"{where}: {shown!r} is not a ticker symbol ({TICKER_RULE})")
    return symbol.upper()


def resolve_inside(root: Path, relative: str | Path) -> Path:
    """`root / relative`, refusing anything that resolves outside `root` (`../`, symlinks).

    Absolute paths are taken as given: the user named them explicitly. Relative paths and
    every path built from data (a ticker becoming a file name) must stay inside the folder.
    """
    candidate = Path(relative)
    if candidate.is_absolute():
        return candidate
    base = Path(root).resolve()
    resolved = (base / candidate).resolve()
    if resolved != base and base not in resolved.parents:
        raise SourceError(f"path {str(relative)!r} escapes the data folder {base}")
    return resolved


@dataclass(frozen=True)
class FetchRequest:
    """What a stage asks a source for: a closed date window and a ticker list."""

    start: dt.date
    end: dt.date
    tickers: tuple[str, ...] = field(default_factory=tuple)
    as_of: dt.date | None = None  # the logical date; holdings snapshots use it

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"fetch window ends before it starts: {self.start}..{self.end}")


@dataclass(frozen=True)
class Health:
    component: str
    ok: bool
    detail: str = ""


class Source(ABC):
    """One data source. `fetch` returns a frame in the dataset's contract (schemas.py)."""

    name: str
    datasets: tuple[str, ...]
    #: True for generated data; reports flag it as sample data.
    synthetic: bool = False
    #: Filled by `fetch`: ticker (or file) -> why it failed. One failure never fails the
    #: whole fetch; the stage decides with `sources.market.max_failed_share`.
    failures: dict[str, str]

    def __init__(self) -> None:
        self.failures = {}

    @abstractmethod
    def fetch(self, dataset: str, request: FetchRequest) -> pd.DataFrame:
        """Rows of `dataset` inside the request's window and tickers."""

    def health(self) -> Health:
        return Health(component=f"source:{self.name}", ok=True, detail="no remote dependency")

    def _check_dataset(self, dataset: str) -> None:
        if dataset not in self.datasets:
            raise ValueError(f"source {self.name!r} has no dataset {dataset!r}; it provides {self.datasets}")


#: What a ticker is. Only these may be held, ordered, optimized or used as model rows;
#: an index may still be a benchmark or a feature input.
INSTRUMENT_TYPES: tuple[str, ...] = ("equity", "etf", "fund", "index")
TRADABLE_TYPES: frozenset[str] = frozenset({"equity", "etf", "fund"})


def default_instrument_type(ticker: str) -> str:
    """Yahoo's convention: a `^` symbol (^GSPC, ^VIX) is an index; anything else an equity
    unless the source or `universe.instrument_types` says otherwise."""
    return "index" if ticker.startswith("^") else "equity"


#: Yahoo's `quoteType` spellings that differ from ours: exports of it say MUTUALFUND.
_QUOTE_TYPES = {"mutualfund": "fund"}


def parse_instrument_type(value: str, where: str) -> str:
    """`value` as one of INSTRUMENT_TYPES, whatever its case; Yahoo's `quoteType` values
    (EQUITY, ETF, MUTUALFUND, INDEX) are accepted as they are written.

    Anything else (a bond, a future, a typo) is a one-line `SourceError` naming `where`: a
    type decides whether a ticker may be traded, so a guess is never made for it.
    """
    key = value.strip().lower()
    key = _QUOTE_TYPES.get(key, key)
    if key not in INSTRUMENT_TYPES:
        shown = value if len(value) <= 40 else value[:40] + "..."  # a cell, never a file dump
        raise SourceError(
            f"{where}: {shown!r} is not an instrument type (one of {', '.join(INSTRUMENT_TYPES)}; "
            "Yahoo's MUTUALFUND is a fund)"
        )
    return key


def tradable_only(
    tickers: Iterable[str], types: Mapping[str, str] | None = None, benchmark: str | None = None
) -> list[str]:
    """The `tickers` that may be held, ordered, optimized or be model rows, in their order.

    A ticker qualifies when its type (from `types`, else `default_instrument_type`) is in
    TRADABLE_TYPES and it is not the benchmark: an index is measured against, never bought,
    and the benchmark stays out whatever it is (an ETF benchmark is a yardstick too).
    """
    known = types or {}
    return [t for t in tickers if t != benchmark and known.get(t, default_instrument_type(t)) in TRADABLE_TYPES]


class MarketSource(Source):
    """A source of daily prices that knows its own ticker list."""

    def instrument_types(self, tickers: Iterable[str]) -> dict[str, str]:
        """ticker -> one of INSTRUMENT_TYPES, as this source knows it (sources override)."""
        return {t: default_instrument_type(t) for t in tickers}

    @abstractmethod
    def available_tickers(self) -> list[str]:
        """Tickers this source can provide (the benchmark excluded)."""
