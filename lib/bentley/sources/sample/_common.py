"""What every sample generator shares: the fictional companies, the stream tags, row helpers.

A ticker's traits (name, sector, split schedule, dividends) are independent of the seed;
random streams are seeded by the seed, a CRC-32 of the name and one of the tags below, so the
generators never draw from one another's streams (see the package docstring, "Determinism").
"""

from __future__ import annotations

import datetime as dt
import hashlib
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bentley import schemas
from bentley.calendar import sessions
from bentley.sources.base import FetchRequest

DEFAULT_BENCHMARK = "BBIX"
SECTORS: tuple[str, ...] = ("tech", "health", "energy", "finance", "consumer", "industrials")
#: Sessions between two splits of the same ticker.
SPLIT_PERIOD = 1197

_TRADING_DAYS = 252

# Tags that keep the random streams of one (seed, ticker) apart.
_PROFILE_TAG, _NEWS_TAG, _HOLDINGS_TAG, _LEDGER_TAG, _SOCIAL_TAG = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class _Company:
    """What a ticker is, independent of the seed."""

    name: str
    sector: str
    split_offset: int | None  # session index of the first split, None if it never splits
    pays_dividend: bool


# Split offsets are 1 + SPLIT_PERIOD * (0, 1/2, 1/4, 3/4, 1/8, 5/8, 3/8, 7/8): any leading
# part of the list (small universes take the first n names) spreads its splits evenly.
_DEFAULT_COMPANIES: dict[str, _Company] = {
    "NOVA": _Company("Nova Systems", "tech", 1, False),
    "QBIT": _Company("Qubit Labs", "tech", 599, False),
    "MEDX": _Company("Medix Pharmaceuticals", "health", 300, False),
    "CURA": _Company("Cura Health", "health", 899, True),
    "PTRL": _Company("Petrolux Energy", "energy", 151, True),
    "SOLR": _Company("Solaris Power", "energy", 749, False),
    "BANQ": _Company("Banque Federal", "finance", 450, True),
    "LEDG": _Company("Ledger Trust", "finance", 1048, True),
}
#: Company names of the built-in tickers; `company_name` also covers generated ones.
COMPANY_NAMES: dict[str, str] = {t: c.name for t, c in _DEFAULT_COMPANIES.items()}

_NAME_SUFFIX = {
    "tech": "Technologies",
    "health": "Therapeutics",
    "energy": "Energy",
    "finance": "Financial",
    "consumer": "Brands",
    "industrials": "Industries",
}


def _crc(text: str) -> int:
    """Stable 32-bit hash of a name (Python's `hash` is salted per process)."""
    return zlib.crc32(text.encode())


def _company(ticker: str) -> _Company:
    """Static traits of a ticker; unknown names get theirs from digits of their CRC-32."""
    if ticker in _DEFAULT_COMPANIES:
        return _DEFAULT_COMPANIES[ticker]
    crc = _crc(ticker)
    sector = SECTORS[crc % len(SECTORS)]
    crc //= len(SECTORS)
    splits = crc % 3 == 0
    crc //= 3
    pays = crc % 2 == 0
    crc //= 2
    return _Company(
        name=f"{ticker} {_NAME_SUFFIX[sector]}",
        sector=sector,
        split_offset=1 + crc % SPLIT_PERIOD if splits else None,
        pays_dividend=pays,
    )


def company_name(ticker: str) -> str:
    """The company's display name, e.g. "Nova Systems" for NOVA, "X0009 Energy" otherwise."""
    return _company(ticker).name


def sector_of(ticker: str) -> str:
    """The ticker's sector, one of `SECTORS`."""
    return _company(ticker).sector


# --------------------------------------------------------------------------- shared helpers

_DTYPES: dict[str, str | type] = {
    "date": "datetime64[ns]",
    "timestamp": "datetime64[ns, UTC]",
    "float": "float64",
    "int": "int64",
}


def _frame(contract: schemas.TableContract, columns: Mapping[str, Any]) -> pd.DataFrame:
    """A frame with exactly the contract's columns, in its order, with its dtypes."""
    frame = pd.DataFrame({name: columns[name] for name in contract.column_names})
    dtypes = {name: _DTYPES[kind] for name, kind in contract.columns.items() if kind in _DTYPES}
    if frame.empty:  # nothing to infer text columns from: pandas would pick float64
        dtypes |= {name: object for name, kind in contract.columns.items() if kind == "str"}
    return frame.astype(dtypes)


def _require_epoch(epoch: dt.date, day: dt.date, what: str) -> None:
    """Sample data begins at the epoch: an earlier date is a configuration error, not "no data"."""
    if day < epoch:
        raise ValueError(f"sample data starts at its epoch {epoch}; {what} is {day}")


def _window(epoch: dt.date, request: FetchRequest, calendar: str) -> tuple[pd.DatetimeIndex, int]:
    """Sessions from the first one on or after `epoch` to the request's end, and the window's start.

    Series are always generated from the epoch so that a date's values never depend on the window.
    """
    _require_epoch(epoch, request.start, "the request's start")
    days = sessions(epoch, request.end, calendar)
    return days, int(days.searchsorted(pd.Timestamp(request.start)))


def _tickers(request: FetchRequest) -> list[str]:
    """Requested tickers, deduplicated and sorted: the output order of every frame."""
    return sorted(set(request.tickers))


def _digest(*parts: object) -> str:
    """Stable identifier of a row from its natural coordinates."""
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()
