"""What stages read from the warehouse: tables cut to the universe and the history window."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd


def universe_tickers(params: Any) -> list[str] | None:
    """`universe.tickers` plus the benchmark, or None for every ticker in the table."""
    if params.universe.tickers is None:
        return None
    return [*params.universe.tickers, params.universe.benchmark]


def load_window(warehouse: Any, params: Any, logical_date: dt.date, table: str) -> pd.DataFrame:
    """Rows of `table` for the universe within the history window ending at the logical date."""
    start, end = params.history.window(logical_date)
    return warehouse.read(table, tickers=universe_tickers(params), start=start, end=end)


def load_prices(warehouse: Any, params: Any, logical_date: dt.date) -> pd.DataFrame:
    """Prices of the window; an empty result means ETL has not run, which is an error."""
    prices = load_window(warehouse, params, logical_date, "prices")
    if prices.empty:
        start, end = params.history.window(logical_date)
        raise ValueError(f"no prices in the warehouse between {start} and {end}; run the etl stage first")
    return prices


def with_run_id(frame: pd.DataFrame, run_id: str, columns: list[str]) -> pd.DataFrame:
    """`frame[columns]` with the run id in front: the shape of per-run warehouse tables."""
    out = frame[columns].copy()
    out.insert(0, "run_id", run_id)
    return out
