"""The interface every source implements.

A source has a name, the datasets it provides and a `fetch` over a date window.
Market sources also say which tickers they offer, so that `universe.tickers: null`
means "everything the market source has". News and portfolio sources take the
universe as an argument: sources stay independent of each other.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


class SourceError(ValueError):
    """Bad input from a source: the message names the file, field or ticker and the problem."""


class TransientSourceError(RuntimeError):
    """A failure worth retrying later (rate limit, 5xx, timeout, connection reset)."""


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


class MarketSource(Source):
    """A source of daily prices that knows its own ticker list."""

    @abstractmethod
    def available_tickers(self) -> list[str]:
        """Tickers this source can provide (the benchmark excluded)."""
