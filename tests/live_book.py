"""A paper book's booked close and crafted intraday bars: the live path's test data, shared by
the unit tests (tests/unit/live) and the restart test (tests/integration/test_watch_restart.py)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from bentley.warehouse import Warehouse

#: A plain Monday session (09:30-16:00 New York = 13:30-20:00 UTC).
DAY = dt.date(2024, 6, 3)
PREVIOUS = dt.date(2024, 5, 31)
OPEN_UTC = pd.Timestamp("2024-06-03 13:30", tz="UTC")


def seed_book(
    warehouse: Warehouse,
    portfolio: str = "paper",
    as_of: dt.date = PREVIOUS,
    cash: float = 10_000.0,
    positions: dict[str, tuple[float, float]] | None = None,
) -> float:
    """Write a booked close: positions {ticker: (quantity, close)} and the portfolio_values row; the equity."""
    positions = positions if positions is not None else {"AAA": (100.0, 100.0), "BBB": (200.0, 50.0)}
    value = sum(q * p for q, p in positions.values())
    equity = cash + value
    rows = pd.DataFrame(
        [
            {
                "as_of": pd.Timestamp(as_of),
                "portfolio": portfolio,
                "ticker": t,
                "quantity": q,
                "price": p,
                "market_value": q * p,
                "weight": q * p / equity,
            }
            for t, (q, p) in positions.items()
        ]
    )
    if len(rows):
        warehouse.upsert("positions", rows)
    warehouse.upsert(
        "portfolio_values",
        pd.DataFrame(
            [
                {
                    "portfolio": portfolio,
                    "date": pd.Timestamp(as_of),
                    "cash": cash,
                    "positions_value": value,
                    "equity": equity,
                    "daily_return": 0.0,
                    "costs": 0.0,
                    "run_id": "seed",
                }
            ]
        ),
    )
    return equity


def crafted_bars(
    paths: dict[str, list[float]],
    start: pd.Timestamp = OPEN_UTC,
    minutes: int = 1,
    first_open: dict[str, float] | None = None,
) -> pd.DataFrame:
    """Bars whose closes follow `paths`; each bar opens at the previous close (or `first_open`)."""
    rows = []
    for ticker, closes in paths.items():
        previous = (first_open or {}).get(ticker, closes[0])
        for i, close in enumerate(closes):
            bar_open = previous
            rows.append(
                {
                    "ts": start + pd.Timedelta(minutes=minutes * i),
                    "ticker": ticker,
                    "open": bar_open,
                    "high": max(bar_open, close) + 0.01,
                    "low": min(bar_open, close) - 0.01,
                    "close": close,
                    "volume": 1000.0,
                }
            )
            previous = close
    return pd.DataFrame(rows).sort_values(["ts", "ticker"]).reset_index(drop=True)


def walk(start: float, n: int, seed: int, step: float = 0.002) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(np.round(start * np.exp(np.cumsum(rng.normal(0.0, step, n))), 4))
