"""Incremental intraday state: one `update(batch)` per batch of bars, O(batch), never the whole day.

What a person watching the paper book through the day looks at, kept current bar by bar:

* last price and last bar time per ticker (staleness is `now - last bar`);
* the book marked to market: positions and cash of the book's previous close (the warehouse's
  `positions` of the latest `as_of` before the session and its `portfolio_values` row), changed
  only by intraday fills (`apply_fills`). Σ quantity × last price is kept as a running sum:
  a bar for ticker i changes it by q_i × (new − old);
* intraday P&L against the previous close (equity − previous equity, and as a return);
* the day's high-water mark (starting at the previous close's equity) and the drawdown from it;
* realised intraday volatility per ticker and of the book: running sums of squared log returns
  bar to bar (a ticker's first return is its first bar's close over its open, so the overnight
  gap is not intraday volatility), annualised as sqrt(Σ r² × 252 / day fraction elapsed) is left
  to readers: `realised_vol` is the plain sqrt(Σ r²) of the session so far.

`from_scratch(book, bars)` recomputes the same figures from all the day's bars at once; the
tests prove the incremental state equals it after every batch.

Prices are as traded, like the ledger's. A split effective on the session is not applied to
the book intraday (the daily broker applies it when it books the day); a book holding a ticker
with a split that day is marked wrong until then, and the bad-tick rule flags its first bar.

Orders the daily run decided before the session and the broker fills at its open
(`trade.execution: next_open`; `opening_orders`) are in the intraday book: each fills at its
ticker's first bar's open, with commission and slippage, before that bar is marked. So the
book watched, and any de-risking decided on it, holds what the daily booking will hold (a
flatten leaves nothing, not a position the morning's fills opened). The daily broker prices them
from the prices table (its open, and impact), so the day's booked cash can differ from the
last mark by that much. Orders filled at the close (`next_close`) trade after the session: the
intraday book cannot hold them.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bentley.warehouse import Warehouse


@dataclass(frozen=True)
class Book:
    """The paper book at the previous close: what the session starts from."""

    portfolio: str
    as_of: pd.Timestamp | None  # the previous booked session; None: nothing booked yet
    cash: float
    equity: float
    quantities: dict[str, float]
    prev_close: dict[str, float]  # ticker -> close at as_of (positions' price, else prices table)


def load_book(warehouse: Warehouse, portfolio: str, day: dt.date) -> Book:
    """The book at its latest close before `day`: positions (`positions` of that `as_of`) and cash/equity
    (`portfolio_values`). A portfolio never booked starts empty, with no cash (nothing to watch but prices)."""
    values = warehouse.read("portfolio_values", where={"portfolio": portfolio}, end=day - dt.timedelta(days=1))
    if values.empty:
        return Book(portfolio, None, 0.0, 0.0, {}, {})
    last = values.iloc[-1]
    as_of = pd.Timestamp(last["date"])
    positions = warehouse.read(
        "positions", where={"portfolio": portfolio}, start=as_of.date(), end=as_of.date(), date_column="as_of"
    )
    held = {str(t): float(q) for t, q in zip(positions["ticker"], positions["quantity"], strict=True) if q != 0}
    closes = {str(t): float(p) for t, p in zip(positions["ticker"], positions["price"], strict=True)}
    return Book(portfolio, as_of, float(last["cash"]), float(last["equity"]), held, closes)


def opening_orders(warehouse: Warehouse, portfolio: str, day: dt.date) -> dict[str, float]:
    """Shares per ticker of the daily orders still pending before `day` (decided earlier, not intraday):
    what the broker fills at the session's open under `next_open`."""
    orders = warehouse.read(
        "orders",
        where={"portfolio": portfolio, "status": "pending"},
        end=day - dt.timedelta(days=1),
        date_column="decided_on",
    )
    orders = orders[orders["decided_at"].isna()]
    summed = orders.groupby("ticker")["quantity"].sum()
    return {str(t): float(q) for t, q in summed.items() if q != 0}


def previous_closes(warehouse: Warehouse, tickers: list[str], day: dt.date) -> dict[str, float]:
    """Each ticker's latest as-traded close before `day` (for tickers the book does not hold)."""
    if not tickers:
        return {}
    start = day - dt.timedelta(days=14)
    prices = warehouse.read(
        "prices", tickers=tickers, start=start, end=day - dt.timedelta(days=1), columns=["ticker", "date", "close"]
    )
    prices = prices.dropna(subset=["close"]).sort_values(["ticker", "date"])
    last = prices.groupby("ticker").tail(1)
    return {str(t): float(c) for t, c in zip(last["ticker"], last["close"], strict=True)}


@dataclass
class TickerState:
    last_price: float
    last_ts: pd.Timestamp | None = None
    prev_close: float = math.nan
    first_open: float = math.nan
    n_returns: int = 0
    sum_sq: float = 0.0  # Σ (log return bar to bar)²
    last_return: float = 0.0  # the latest bar's log return (close over the previous close seen)

    @property
    def realised_vol(self) -> float:
        return math.sqrt(self.sum_sq)

    @property
    def day_return(self) -> float:
        """Last price against the previous close (NaN without one)."""
        return self.last_price / self.prev_close - 1.0 if self.prev_close > 0 else math.nan


@dataclass(frozen=True)
class Snapshot:
    """The state after one batch: what rules read and what `intraday_marks` stores."""

    ts: pd.Timestamp
    equity: float
    cash: float
    positions_value: float
    prev_equity: float
    pnl: float
    pnl_pct: float  # NaN when the previous equity is 0
    high_water: float
    drawdown: float  # equity / high_water - 1 (<= 0)
    realised_vol: float  # of the book's equity, bar to bar, the session so far
    n_batches: int
    n_bars: int  # bars in this batch
    bar_returns: dict[str, float]  # this batch's log return per ticker in it
    position_pnl: dict[str, float]  # per ticker: held × (last − previous close) + what intraday fills realised


@dataclass
class StreamState:
    """The intraday state of one book on one session, updated one batch at a time."""

    book: Book
    tickers: dict[str, TickerState] = field(default_factory=dict)
    quantities: dict[str, float] = field(default_factory=dict)
    cash: float = 0.0
    positions_value: float = 0.0
    high_water: float = 0.0
    equity_sum_sq: float = 0.0
    last_equity: float = 0.0
    last_ts: pd.Timestamp | None = None
    n_batches: int = 0
    realised: dict[str, float] = field(default_factory=dict)  # ticker -> P&L of intraday sales vs previous close
    opening: dict[str, float] = field(default_factory=dict)  # ticker -> shares filled at its first bar's open
    opening_cost_bps: float = 0.0  # commission + slippage on those fills

    @classmethod
    def start(
        cls,
        book: Book,
        extra_closes: dict[str, float] | None = None,
        opening: dict[str, float] | None = None,
        opening_cost_bps: float = 0.0,
    ) -> StreamState:
        """The state at the open: the book, previous closes of tickers it does not hold, and the daily
        orders filled at the open (`opening_orders`, applied at each ticker's first bar)."""
        state = cls(
            book=book,
            quantities=dict(book.quantities),
            cash=book.cash,
            opening=dict(opening or {}),
            opening_cost_bps=opening_cost_bps,
        )
        closes = {**(extra_closes or {}), **book.prev_close}
        for ticker, close in closes.items():
            state.tickers[ticker] = TickerState(last_price=close, prev_close=close)
        for ticker in book.quantities:
            state.tickers.setdefault(ticker, TickerState(last_price=math.nan))
        state.positions_value = sum(
            q * state.tickers[t].last_price
            for t, q in state.quantities.items()
            if math.isfinite(state.tickers[t].last_price)
        )
        state.high_water = state.last_equity = state.cash + state.positions_value
        return state

    @property
    def equity(self) -> float:
        return self.cash + self.positions_value

    def update(self, batch: pd.DataFrame) -> Snapshot:
        """Fold one batch (bars of one timestamp, validated) into the state."""
        if batch.empty:
            raise ValueError("an empty batch")
        ts = pd.Timestamp(batch["ts"].iloc[0])
        if self.last_ts is not None and ts <= self.last_ts:
            raise ValueError(f"batch at {ts.isoformat()} is not after the last one at {self.last_ts.isoformat()}")
        returns: dict[str, float] = {}
        tickers = batch["ticker"].to_numpy()
        opens = batch["open"].to_numpy(dtype=np.float64)
        closes = batch["close"].to_numpy(dtype=np.float64)
        for ticker, bar_open, close in zip(tickers, opens, closes, strict=True):
            state = self.tickers.get(ticker)
            if state is None:
                state = self.tickers[ticker] = TickerState(last_price=math.nan)
            if state.last_ts is None:
                state.first_open = bar_open
                r = math.log(close / bar_open)
                shares = self.opening.pop(ticker, 0.0)
                if shares:  # the daily order the broker fills at the open, before this bar is marked
                    traded = abs(shares * bar_open)
                    self._fill(ticker, shares, bar_open, -shares * bar_open - traded * self.opening_cost_bps / 1e4)
            else:
                r = math.log(close / state.last_price)
            quantity = self.quantities.get(ticker, 0.0)
            if quantity:
                old = state.last_price if math.isfinite(state.last_price) else 0.0
                self.positions_value += quantity * (close - old)
            state.sum_sq += r * r
            state.n_returns += 1
            state.last_return = r
            state.last_price = close
            state.last_ts = ts
            returns[ticker] = r
        equity = self.equity
        if self.last_equity > 0 and equity > 0:
            self.equity_sum_sq += math.log(equity / self.last_equity) ** 2
        self.last_equity = equity
        self.high_water = max(self.high_water, equity)
        self.last_ts = ts
        self.n_batches += 1
        return self.snapshot(ts, returns, len(batch))

    def snapshot(self, ts: pd.Timestamp, returns: dict[str, float] | None = None, n_bars: int = 0) -> Snapshot:
        equity = self.equity
        prev = self.book.equity
        pnl = equity - prev
        position_pnl = dict(self.realised)
        for ticker, quantity in self.quantities.items():
            state = self.tickers[ticker]
            if math.isfinite(state.prev_close):
                position_pnl[ticker] = position_pnl.get(ticker, 0.0) + quantity * (state.last_price - state.prev_close)
        return Snapshot(
            ts=ts,
            equity=equity,
            cash=self.cash,
            positions_value=self.positions_value,
            prev_equity=prev,
            pnl=pnl,
            pnl_pct=pnl / prev if prev > 0 else math.nan,
            high_water=self.high_water,
            drawdown=equity / self.high_water - 1.0 if self.high_water > 0 else 0.0,
            realised_vol=math.sqrt(self.equity_sum_sq),
            n_batches=self.n_batches,
            n_bars=n_bars,
            bar_returns=returns or {},
            position_pnl=position_pnl,
        )

    def apply_fills(self, fills: pd.DataFrame) -> None:
        """Intraday fills (ticker, quantity, price, cash_change) change holdings and cash, not prices.

        What a fill realises against the previous close stays in the ticker's P&L (`Snapshot.position_pnl`),
        so a position sold at a loss is still named as responsible for it.
        """
        for ticker, quantity, fill_price, cash_change in zip(
            fills["ticker"], fills["quantity"], fills["price"], fills["cash_change"], strict=True
        ):
            self._fill(ticker, float(quantity), float(fill_price), float(cash_change))
        # Costs lower the equity; the next bar's return is measured from here.
        self.last_equity = self.equity

    def _fill(self, ticker: str, quantity: float, fill_price: float, cash_change: float) -> None:
        """One fill: holdings and cash change, valued at the ticker's last price (not the fill's)."""
        state = self.tickers.setdefault(ticker, TickerState(last_price=math.nan))
        if math.isfinite(state.prev_close):
            self.realised[ticker] = self.realised.get(ticker, 0.0) - quantity * (fill_price - state.prev_close)
        held = self.quantities.get(ticker, 0.0) + quantity
        price = state.last_price if math.isfinite(state.last_price) else 0.0
        self.positions_value += quantity * price
        self.cash += cash_change
        if abs(held) < 1e-9:
            self.quantities.pop(ticker, None)
        else:
            self.quantities[ticker] = held

    def staleness_minutes(self, now: pd.Timestamp, tickers: list[str]) -> dict[str, float]:
        """Minutes since each ticker's last bar (inf: no bar yet this session)."""
        out = {}
        for ticker in tickers:
            state = self.tickers.get(ticker)
            last = None if state is None else state.last_ts
            out[ticker] = math.inf if last is None else (now - last).total_seconds() / 60.0
        return out


def from_scratch(book: Book, bars: pd.DataFrame, extra_closes: dict[str, float] | None = None) -> dict[str, object]:
    """The state's figures recomputed from every bar of the day at once (a reference for tests and checks)."""
    bars = bars.sort_values(["ts", "ticker"])
    closes = {**(extra_closes or {}), **book.prev_close}
    wide = bars.pivot(index="ts", columns="ticker", values="close")
    first_open = bars.groupby("ticker")["open"].first()
    held = pd.Series(book.quantities, dtype=np.float64)
    start = pd.Series({t: closes.get(t, math.nan) for t in wide.columns.union(held.index)}, dtype=np.float64)
    marked = wide.reindex(columns=start.index).ffill().fillna(start)
    positions_value = (marked[held.index] * held).sum(axis=1) if len(held) else pd.Series(0.0, index=wide.index)
    equity = book.cash + positions_value
    high_water = np.maximum.accumulate(np.r_[book.equity, equity.to_numpy()])[1:]
    log_returns = np.log(wide / wide.ffill().shift(1))
    first = np.log(wide.apply(lambda s: s.dropna().iloc[0] if s.notna().any() else math.nan) / first_open)
    sum_sq = (log_returns**2).sum() + first**2
    eq = np.r_[book.equity, equity.to_numpy()]
    steps = np.log(eq[1:] / eq[:-1]) if book.equity > 0 else np.log(eq[2:] / eq[1:-1])
    return {
        "equity": float(equity.iloc[-1]),
        "positions_value": float(positions_value.iloc[-1]),
        "pnl": float(equity.iloc[-1] - book.equity),
        "high_water": float(high_water[-1]),
        "drawdown": float(equity.iloc[-1] / high_water[-1] - 1.0),
        "realised_vol": float(math.sqrt(np.nansum(steps**2))),
        "ticker_vol": {t: float(math.sqrt(v)) for t, v in sum_sq.items()},
        "last_price": {t: float(wide[t].dropna().iloc[-1]) for t in wide.columns},
        "equity_path": equity,
    }
