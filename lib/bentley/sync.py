"""Incremental sync: fetch only what is new since the last successful load.

Each (source, dataset, ticker) has a cursor in `sync_state`: the last date the warehouse
holds. The next fetch starts `overlap_sessions` before it, so late corrections to recent
days are picked up; the lake is append-only and ETL upserts, so the overlap never
duplicates rows. Cursors move only after a successful load (ETL writes them), so a failed
run is simply fetched again. A new split or dividend changes the back-adjusted history of
its ticker, so that ticker is refetched over the whole window.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bentley import calendar

ALL_TICKERS = "*"  # the cursor key of datasets without a ticker (transactions)


@dataclass(frozen=True)
class FetchPlan:
    """Which tickers to fetch from which date; tickers sharing a start share a request."""

    starts: dict[str, dt.date]
    end: dt.date

    def groups(self) -> dict[dt.date, tuple[str, ...]]:
        grouped: dict[dt.date, list[str]] = {}
        for ticker, start in self.starts.items():
            grouped.setdefault(start, []).append(ticker)
        return {start: tuple(sorted(tickers)) for start, tickers in sorted(grouped.items())}

    def is_incremental(self, ticker: str, window_start: dt.date) -> bool:
        return self.starts[ticker] > window_start


def plan_fetch(
    tickers: Iterable[str],
    cursors: Mapping[str, dt.date],
    window: tuple[dt.date, dt.date],
    overlap_sessions: int,
    full_refresh: bool,
    market_calendar: str = calendar.DEFAULT_CALENDAR,
) -> FetchPlan:
    """Start each ticker at its cursor minus the overlap, never before the window start."""
    start, end = window
    starts: dict[str, dt.date] = {}
    for ticker in tickers:
        cursor = cursors.get(ticker)
        if full_refresh or cursor is None or cursor < start:
            starts[ticker] = start
        else:
            resume = calendar.sessions_before(min(cursor, end), overlap_sessions, market_calendar)
            starts[ticker] = max(start, resume)
    return FetchPlan(starts=starts, end=end)


def new_corporate_actions(prices: pd.DataFrame, cursors: Mapping[str, dt.date]) -> list[str]:
    """Tickers with a split or dividend after their cursor: their adjusted history changed."""
    if prices.empty:
        return []
    cursor = prices["ticker"].map(lambda t: pd.Timestamp(cursors[t]) if t in cursors else pd.NaT)
    after = prices["date"] > cursor
    actions = (prices["split_ratio"].fillna(1.0) != 1.0) | (prices["dividend"].fillna(0.0) != 0.0)
    return sorted(set(prices.loc[after & actions, "ticker"]))


def read_cursors(warehouse: Any, source: str, dataset: str) -> dict[str, dt.date]:
    """Saved cursors of one (source, dataset): ticker -> last loaded date."""
    rows = warehouse.read("sync_state", where={"source": source, "dataset": dataset})
    return {r.ticker: pd.Timestamp(r.cursor_date).date() for r in rows.itertuples() if pd.notna(r.cursor_date)}


def cursors_from_rows(frame: pd.DataFrame, date_column: str = "date", by_ticker: bool = True) -> dict[str, dt.date]:
    """The last date per ticker (or overall, keyed `*`) in rows just loaded."""
    if frame.empty:
        return {}
    dates = pd.to_datetime(frame[date_column])
    if not by_ticker:
        return {ALL_TICKERS: dates.max().date()}
    last = dates.groupby(frame["ticker"]).max()
    return {ticker: value.date() for ticker, value in last.items()}
