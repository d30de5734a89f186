"""De-risking the paper book when the daily loss limit is breached intraday.

`watch.on_loss_limit`:

* `alert`: nothing but the alert;
* `reduce`: sell `watch.reduce_fraction` of every position (whole shares, toward zero);
* `flatten`: close every position.

It acts once per `watch_daily_loss` episode, on the batch that opens it (a breach that stays
breached does not sell again on every bar, and a restarted watch meets the episode already
open). Orders fill at once, on paper, at the batch's last price with the trade stage's
commission and slippage (impact needs a session's dollar volume, unknown intraday: 0), so the
cash identity of the ledger holds: cash_change = −quantity × price − costs.

Ids follow the broker's scheme (a SHA-256 of the parts joined by \\x1f, 32 hex digits) with the
decision *instant* in place of the date: `intraday_order_id(portfolio, ts, ticker)` hashes
("order", portfolio, "YYYY-MM-DDTHH:MM:SSZ", ticker), which can never equal a daily order id
(those hash "YYYY-MM-DD"), and the fill id is `broker.fill_id(order_id)`. Rerunning a batch
therefore produces the same rows, and an upsert writes nothing new.

They are rows of the ledger's own `orders` and `fills` (`decided_at`/`filled_at` set, `reason`
reduce or flatten, `decided_on`/`date` the session): the daily paper book
(`bentley.trading.broker.run_paper_day`) books them into the session's positions, cash and
costs, and `broker.reconcile` checks them like every fill; `broker.rebook` deletes them with the
book.
"""

from __future__ import annotations

import hashlib
import math
from typing import Literal

import numpy as np
import pandas as pd

from bentley.live.stream import StreamState
from bentley.trading.broker import fill_id

Mode = Literal["alert", "reduce", "flatten"]

ORDER_COLUMNS = [
    "order_id",
    "portfolio",
    "decided_on",
    "decided_at",
    "ticker",
    "quantity",
    "target_weight",
    "reference_price",
    "status",
    "reason",
    "run_id",
]
FILL_COLUMNS = [
    "fill_id",
    "order_id",
    "portfolio",
    "date",
    "filled_at",
    "ticker",
    "quantity",
    "price",
    "commission",
    "slippage",
    "impact",
    "cash_change",
    "run_id",
]


def _digest(*parts: str) -> str:
    """The broker's id digest (bentley.trading.broker._digest)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _instant(ts: pd.Timestamp) -> str:
    return pd.Timestamp(ts).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def intraday_order_id(portfolio: str, ts: pd.Timestamp, ticker: str) -> str:
    return _digest("order", portfolio, _instant(ts), ticker)


def plan(mode: Mode, state: StreamState, ts: pd.Timestamp, *, reduce_fraction: float) -> pd.Series:
    """Signed share quantities to trade (ticker -> quantity), whole shares, zeros left out."""
    if mode == "alert":
        return pd.Series(dtype=np.float64)
    held = pd.Series(state.quantities, dtype=np.float64).sort_index()
    if mode == "flatten":
        trade = -held
    elif mode == "reduce":
        trade = -np.trunc(held * reduce_fraction)
    else:
        raise ValueError(f"on_loss_limit must be alert, reduce or flatten, got {mode!r}")
    return trade[trade.abs() > 0]


def orders_and_fills(
    trades: pd.Series,
    state: StreamState,
    ts: pd.Timestamp,
    *,
    portfolio: str,
    commission_bps: float,
    slippage_bps: float,
    reason: str,
    run_id: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The orders (status filled) and their fills at the last price, with costs."""
    ts = pd.Timestamp(ts).tz_convert("UTC")
    session = ts.tz_convert("America/New_York").normalize().tz_localize(None)
    equity = state.equity
    order_rows, fill_rows = [], []
    for ticker, quantity in trades.items():
        price = state.tickers[ticker].last_price
        if not math.isfinite(price) or price <= 0:
            raise ValueError(f"no price for {ticker} at {ts.isoformat()}: cannot de-risk it")
        oid = intraday_order_id(portfolio, ts, ticker)
        remaining = state.quantities.get(ticker, 0.0) + float(quantity)
        order_rows.append(
            {
                "order_id": oid,
                "portfolio": portfolio,
                "decided_on": session,
                "decided_at": ts,
                "ticker": ticker,
                "quantity": float(quantity),
                "target_weight": remaining * price / equity if equity > 0 else math.nan,
                "reference_price": price,
                "status": "filled",
                "reason": reason,
                "run_id": run_id,
            }
        )
        traded = abs(float(quantity) * price)
        commission, slippage = traded * commission_bps / 1e4, traded * slippage_bps / 1e4
        fill_rows.append(
            {
                "fill_id": fill_id(oid),
                "order_id": oid,
                "portfolio": portfolio,
                "date": session,
                "filled_at": ts,
                "ticker": ticker,
                "quantity": float(quantity),
                "price": price,
                "commission": commission,
                "slippage": slippage,
                "impact": 0.0,
                "cash_change": -float(quantity) * price - (commission + slippage),
                "run_id": run_id,
            }
        )
    return pd.DataFrame(order_rows, columns=ORDER_COLUMNS), pd.DataFrame(fill_rows, columns=FILL_COLUMNS)
