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

Writing them into the same ledger tables (`orders`, `fills`) needs these changes, which is why
they go to `intraday_orders`/`intraday_fills` (bentley.live.tables) for now:

1. warehouse.py: `orders` gains `sa.Column("decided_at", TIMESTAMP)` and `fills` gains
   `sa.Column("filled_at", TIMESTAMP)`, both nullable (NULL = a daily row); `_add_missing_columns`
   adds them to existing stores.
2. broker.run_paper_day(T): (a) read T's intraday fills (`fills.date == T and filled_at IS NOT
   NULL`) and pass them to `_ledger` with the daily fills, and add their cash changes to `cash`,
   so T's close marks what the book really held; (b) leave intraday rows out of the
   `_check_overwrite` comparison (`stored["orders"]` / `stored["fills"]` filtered on
   `decided_at IS NULL` / `filled_at IS NULL`), otherwise a rerun of T would call them stale;
   (c) the costs of `portfolio_values` for T include the intraday fills' costs.
3. broker.reconcile needs no change: intraday orders are `filled`, same-day (split factor 1),
   and their fills' cash changes are in the cash identity once (2a) holds.
4. broker.rebook/Warehouse.delete_book_from: nothing new (rows are keyed by portfolio and date).
5. ORDER_COLUMNS / FILL_COLUMNS gain the two columns, None for daily rows.
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


def reconcile_intraday(orders: pd.DataFrame, fills: pd.DataFrame) -> list[str]:
    """Problems in the intraday ledger: fills without a filled order of the same ticker and quantity,
    and cash changes that are not −quantity × price − costs. Empty: it reconciles."""
    problems = []
    merged = fills.merge(orders, on="order_id", how="left", suffixes=("", "_order"), indicator=True)
    orphan = merged["_merge"] == "left_only"
    if orphan.any():
        problems.append(f"fills without an order: {', '.join(merged.loc[orphan, 'fill_id'])}")
    found = merged[~orphan]
    wrong = found[
        (found["ticker"] != found["ticker_order"])
        | (found["status"] != "filled")
        | ~np.isclose(found["quantity"], found["quantity_order"])
    ]
    if len(wrong):
        problems.append(f"fills not matching their order: {', '.join(wrong['fill_id'])}")
    expected = -fills["quantity"] * fills["price"] - (fills["commission"] + fills["slippage"] + fills["impact"])
    off = ~np.isclose(fills["cash_change"], expected, rtol=1e-12, atol=1e-9)
    if off.any():
        problems.append(f"fill cash changes off: {', '.join(fills.loc[off, 'fill_id'])}")
    return problems
