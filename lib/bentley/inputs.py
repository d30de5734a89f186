"""What stages read from the warehouse: tables cut to the universe and the history window."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import pandas as pd

from bentley import adjustment
from bentley.sources.base import default_instrument_type, tradable_only

if TYPE_CHECKING:
    from bentley.stage import Params
    from bentley.warehouse import Warehouse


def universe_tickers(params: Params) -> list[str] | None:
    """`universe.tickers` plus the benchmark, or None for every ticker in the table."""
    if params.universe.tickers is None:
        return None
    return [*params.universe.tickers, params.universe.benchmark]


def instrument_types(
    warehouse: Warehouse, tickers: Iterable[str] | None, overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """ticker -> instrument type as of the warehouse, for `tickers` (None: every ticker recorded).

    `overrides` (`universe.instrument_types`) win, then the `instruments` row ingest wrote,
    then Yahoo's convention (`^` is an index): a ticker never ingested still gets a type, so
    a caller never has to guess.
    """
    wanted = None if tickers is None else list(dict.fromkeys(tickers))
    recorded = warehouse.read("instruments", tickers=wanted, columns=["ticker", "instrument_type"])
    known = dict(zip(recorded["ticker"], recorded["instrument_type"], strict=True))
    known.update(overrides or {})
    names = list(recorded["ticker"]) if wanted is None else wanted
    return {t: known.get(t, default_instrument_type(t)) for t in names}


def tradable_tickers(warehouse: Warehouse, params: Params) -> list[str]:
    """The run's tickers that may be held, ordered, optimized or be model rows, in universe order.

    The one place that decides it: the universe without the benchmark and without any ticker
    whose type (`instrument_types`, params over the warehouse) is not tradable. An index stays
    in the price and feature tables, as a benchmark or a feature input, but never gets a weight.
    """
    types = instrument_types(warehouse, universe_tickers(params), params.universe.instrument_types)
    return tradable_only(types, types, params.universe.benchmark)


def load_window(
    warehouse: Warehouse,
    params: Params,
    logical_date: dt.date,
    table: str,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Rows of `table` for the universe within the history window ending at the logical date;
    only `columns` when given (a stage that needs two features of forty reads two)."""
    start, end = params.history.window(logical_date)
    return warehouse.read(table, tickers=universe_tickers(params), start=start, end=end, columns=columns)


def load_prices(warehouse: Warehouse, params: Params, logical_date: dt.date) -> pd.DataFrame:
    """Prices of the window with `adj_close` adjusted as of the logical date.

    The warehouse keeps prices as traded (bentley.adjustment); only the splits and
    dividends dated on or before the logical date adjust them, so a run for an earlier date
    never sees an action announced after it. An empty result means ETL has not run.
    """
    prices = load_window(warehouse, params, logical_date, "prices")
    if prices.empty:
        start, end = params.history.window(logical_date)
        raise ValueError(f"no prices in the warehouse between {start} and {end}; run the etl stage first")
    return adjustment.adjusted_as_of(prices)


def with_run_id(frame: pd.DataFrame, run_id: str, columns: list[str]) -> pd.DataFrame:
    """`frame[columns]` with the run id in front: the shape of per-run warehouse tables."""
    out = frame[columns].copy()
    out.insert(0, "run_id", run_id)
    return out


def latest_predictions(warehouse: Warehouse, logical_date: dt.date, lookback_days: int = 14) -> pd.DataFrame:
    """The newest train run's predictions for the latest session on or before the logical date.

    Empty when no champion has predicted in the last `lookback_days` (a stale forecast is no
    forecast): callers treat every ticker as a coin flip then.
    """
    rows = warehouse.read(
        "predictions", start=logical_date - dt.timedelta(days=lookback_days), end=logical_date, where={"kind": "live"}
    )
    if rows.empty:
        return rows
    rows = rows[rows["date"] == rows["date"].max()]
    return rows[rows["predicted_at"] == rows["predicted_at"].max()].reset_index(drop=True)


def investable_cash(warehouse: Warehouse, logical_date: dt.date) -> float:
    """The budget stage's investable cash as of the logical date (or the latest before it)."""
    rows = warehouse.read("investable_cash", end=logical_date, date_column="as_of")
    if rows.empty:
        raise ValueError(f"no investable_cash on or before {logical_date}; run the budget stage first")
    return float(rows.sort_values("as_of")["investable_cash"].iloc[-1])


def model_history(warehouse: Warehouse, model_name: str, version: str, start: dt.date, end: dt.date) -> pd.DataFrame:
    """One model version's point-in-time probabilities: its out-of-sample CV rows, then live rows.

    For a session predicted more than once (live rows of several runs), the newest wins.
    """
    rows = warehouse.read(
        "predictions", start=start, end=end, where={"model_name": model_name, "model_version": version}
    )
    if rows.empty:
        return rows
    rows = rows.sort_values("predicted_at", kind="stable")
    return rows.drop_duplicates(["ticker", "date"], keep="last").sort_values(["ticker", "date"]).reset_index(drop=True)


def target_weights(warehouse: Warehouse, run_id: str) -> pd.Series:
    """The optimize stage's weights of this run, ticker -> weight."""
    rows = warehouse.read("target_weights", where={"run_id": run_id})
    if rows.empty:
        raise ValueError(f"no target_weights for run {run_id!r}; run the optimize stage first")
    return rows.set_index("ticker")["weight"].astype(float)
