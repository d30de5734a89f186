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
    first_missing: Mapping[str, dt.date] | None = None,
) -> FetchPlan:
    """Start each ticker at its cursor minus the overlap, never before the window start.

    A cursor only says where the last load ended, not that everything before it is held. A
    backdated window (ending before the cursor) is therefore fetched whole, and a ticker
    whose held rows miss a session of the window (`first_missing`, see `first_missing_sessions`)
    starts at that session at the latest.
    """
    start, end = window
    starts: dict[str, dt.date] = {}
    for ticker in tickers:
        cursor = cursors.get(ticker)
        if full_refresh or cursor is None or cursor < start or cursor > end:
            starts[ticker] = start
        else:
            resume = max(start, calendar.sessions_before(cursor, overlap_sessions, market_calendar))
            gap = (first_missing or {}).get(ticker)
            starts[ticker] = min(resume, gap) if gap is not None else resume
    return FetchPlan(starts=starts, end=end)


def first_missing_sessions(
    held: pd.DataFrame, tickers: Iterable[str], window: tuple[dt.date, dt.date], market_calendar: str
) -> dict[str, dt.date]:
    """Per ticker, the first session of the window without a held row (tickers holding all are left out).

    `held` has the warehouse's `ticker` and `date` of the window. A longer history window, or a
    load that skipped ahead, leaves sessions no cursor accounts for.
    """
    sessions = calendar.sessions(window[0], window[1], market_calendar)
    by_ticker = {t: pd.DatetimeIndex(d) for t, d in pd.to_datetime(held["date"]).groupby(held["ticker"])}
    out = {}
    for ticker in tickers:
        missing = sessions.difference(by_ticker.get(ticker, pd.DatetimeIndex([])))
        if len(missing):
            out[ticker] = missing[0].date()
    return out


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
