"""The paper broker: the trade stage's orders, fills, positions and daily values, as a ledger.

Nothing reaches a real broker. The ledger lives in four warehouse tables (`orders`, `fills`,
`positions`, `portfolio_values`) whose shape a real broker adapter could later fill instead,
so reports, risk metrics and reconciliation do not care who executed. One call books one
logical date T (a session) for one portfolio, as a pure function of what was booked before T,
the prices table and the target weights:

1. State before T: the latest `portfolio_values` row dated before T (cash, equity) and the
   `positions` of that date; on the first day no positions and `initial_cash`.
2. Orders decided before T and not filled by that state date fill at the first session after
   both (≤ T) on which the ticker has an execution price: the as-traded `open`
   (`next_open`) or `close` (`next_close`). A decision of T never fills on T. Costs per fill,
   on the traded value v = |quantity × price|: commission v·bps/1e4, slippage v·bps/1e4 and
   impact coefficient · v / (close × volume of the session) · v (0 when the coefficient is
   null); cash changes by −quantity × price − costs. An order without a price stays pending.
3. Corporate actions, from the prices table on each session after the state date: the split
   applies first (`split_ratio`, new shares per old share: held shares are multiplied by it,
   and an order decided before a split trades its quantity times the ratios between decision
   and fill, because its share count was sized on pre-split prices), then the cash dividend
   (`dividend` per share) is credited for the shares held into the ex-date, then the session's
   fills trade. Dividends are credited on the ex-date (no payment-date lag), so the cash
   ledger is: cash = first day's cash + Σ fill cash changes + Σ dividends, which `reconcile`
   recomputes from fills and prices.
4. Mark to market at T's close: positions (non-zero holdings only; a position closed on T has
   no row, the next day's state reads it as 0) and the `portfolio_values` row.
5. New orders decided on T: target shares trunc(weight × equity / close), whole shares toward
   zero; a held ticker without a weight is closed; the order is target − held (zeros skipped).
   Order ids hash (portfolio, T, ticker) and fill ids the order id, so a rerun rewrites the
   same rows. An order that would open or grow a position in an index (any type outside
   TRADABLE_TYPES, as the warehouse's `instruments` records it) is refused: indices are never
   held or ordered. Selling one down stays allowed, so a book from before instrument types
   can only move toward holding none.

Intraday de-risking (`runner watch`, `bentley.live.derisk`) writes into the same `orders` and
`fills`: rows with a `decided_at`/`filled_at` instant, status filled, dated the session
(`decided_on`/`date`), ids hashed from (portfolio, instant, ticker). The broker never fills or
recomputes them; it books them: the intraday fills dated after the state date and up to T trade
on their session in step 3 like the session's other fills (so T's positions, cash and costs hold
them, and `reconcile` checks them like any fill), and a rerun of T leaves them out of what it
compares, since it does not produce them. `rebook` deletes them with the book (with the watch's
marks), as they were decided on the book it deletes.

Everything of T is written in one transaction, then `reconcile` checks the ledger and raises
`ReconciliationError`. Rerunning the latest booked day recomputes the same rows and upserts
them over themselves; a rerun that would leave rows of T the new computation does not produce
(changed weights or prices) is refused, since an upsert cannot delete them. A day before the
latest booked one is recomputed and compared, never rewritten: later days were built on it.

A book is therefore a timeline, and two functions let research move along it:

* `choose_book` picks the book a trade run writes. A run for a session before the portfolio's
  last booked one books into its own book `<portfolio>@<session>`: a fresh book starting on
  that session with the same initial cash rule (so it holds what a fresh store would book for
  that date), found again by every rerun of the date. The main book is left untouched.
* `rebook` deletes a book's rows from a date on, in one transaction, so running the pipeline
  for that date and the following sessions replays the book.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from bentley import inputs
from bentley.config import Costs
from bentley.reporting import md_escape
from bentley.sources.base import TRADABLE_TYPES
from bentley.warehouse import Warehouse

Execution = Literal["next_open", "next_close"]
_EXECUTION_COLUMN: dict[str, str] = {"next_open": "open", "next_close": "close"}

ORDER_COLUMNS = [
    "order_id",
    "portfolio",
    "decided_on",
    "ticker",
    "quantity",
    "target_weight",
    "reference_price",
    "status",
    "run_id",
]
FILL_COLUMNS = [
    "fill_id",
    "order_id",
    "portfolio",
    "date",
    "ticker",
    "quantity",
    "price",
    "commission",
    "slippage",
    "impact",
    "cash_change",
    "run_id",
]
#: The intraday fills' instant (`runner watch`); NULL on the trade stage's fills.
INTRADAY_FILL_COLUMNS = [*FILL_COLUMNS, "filled_at"]
POSITION_COLUMNS = ["as_of", "ticker", "portfolio", "quantity", "price", "market_value", "weight"]
VALUE_COLUMNS = ["portfolio", "date", "cash", "positions_value", "equity", "daily_return", "costs", "run_id"]

_SHARES_TOLERANCE = 1e-9  # |shares| below this is a closed position
_VALUE_TOLERANCE = 1e-6  # relative to equity: the cash and equity identities
_EXAMPLES = 5  # mismatches named per problem in an error message
_ONE_DAY = pd.Timedelta(days=1)


class ReconciliationError(RuntimeError):
    """The ledger contradicts itself; the message names every mismatch found."""


@dataclass(frozen=True)
class PaperDay:
    """What one paper day booked (or, for a past day, recomputed and verified)."""

    portfolio: str
    as_of: pd.Timestamp
    orders_new: pd.DataFrame  # decided on as_of (status filled only when a later day filled them)
    orders_filled: pd.DataFrame  # earlier orders these fills complete, status now "filled"
    fills: pd.DataFrame  # executed after the previous booked day, up to as_of
    positions: pd.DataFrame  # non-zero holdings at as_of's close
    value: pd.DataFrame  # the portfolio_values row
    dividends: float  # cash credited for ex-dates after the previous booked day
    written: bool  # False: a past day, recomputed and found identical to the ledger
    # The watch's de-risking fills booked with these (after the previous booked day, up to as_of)
    intraday_fills: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=INTRADAY_FILL_COLUMNS))

    @property
    def cash(self) -> float:
        return float(self.value["cash"].iloc[0])

    @property
    def equity(self) -> float:
        return float(self.value["equity"].iloc[0])

    @property
    def n_orders(self) -> int:
        return len(self.orders_new)

    @property
    def n_fills(self) -> int:
        """Every fill booked on the day: the trade stage's and the watch's intraday ones."""
        return len(self.fills) + len(self.intraday_fills)


@dataclass(frozen=True)
class _State:
    date: pd.Timestamp | None  # the booked day the state is from; None before the first day
    cash: float
    equity: float  # NaN before the first day
    held: pd.Series  # ticker -> shares at that day's close


def order_id(portfolio: str, decided_on: dt.date | str | pd.Timestamp, ticker: str) -> str:
    """The deterministic id of the order a portfolio decides for a ticker on a date."""
    return _digest("order", portfolio, f"{_day(decided_on):%Y-%m-%d}", ticker)


def fill_id(order: str) -> str:
    """The deterministic id of an order's (single) fill."""
    return _digest("fill", order)


#: Target weights decided after the mark to market: (weights held at the close, the session's
#: return) -> target weight per ticker. Risk limits need both, and both exist only after marking.
Decide = Callable[[pd.Series, float], pd.Series]


def run_paper_day(
    warehouse: Warehouse,
    weights: pd.Series | Decide,
    *,
    portfolio: str,
    as_of: dt.date | str | pd.Timestamp,
    initial_cash: float,
    costs: Costs,
    execution: Execution,
    run_id: str,
) -> PaperDay:
    """Book session `as_of` for `portfolio`: fill pending orders, mark to market, decide orders.

    `weights` maps ticker -> target weight of equity (NaN is 0; a held ticker absent from it is
    closed), or is a `Decide` function called with the weights held at the day's close and the
    day's return, whose result may only name tickers in its `.universe` attribute or the
    holdings. `initial_cash` is used only on the portfolio's first day. Raises ValueError when
    a held or targeted ticker has no close on `as_of`, and `ReconciliationError` when the
    ledger does not reconcile after writing.
    """
    day = _day(as_of)
    if execution not in _EXECUTION_COLUMN:
        raise ValueError(f"execution must be one of {sorted(_EXECUTION_COLUMN)}, got {execution!r}")
    if isinstance(weights, pd.Series):
        fixed = _target(weights, portfolio)
        decide: Decide = lambda _held, _return: fixed  # noqa: E731 - the same target whatever happened
        universe = list(fixed.index)
    else:
        decide, universe = weights, list(getattr(weights, "universe", []))
    values = _read(warehouse, "portfolio_values", where={"portfolio": portfolio})
    state = _state_before(warehouse, portfolio, day, values, initial_cash)
    later_days = values.loc[values["date"] > day, "date"]

    decided = _read(
        warehouse, "orders", where={"portfolio": portfolio}, end=(day - _ONE_DAY).date(), date_column="decided_on"
    )
    decided = decided[~_intraday(decided, "decided_at")]  # filled when decided: never pending
    after_state = _read(
        warehouse,
        "fills",
        where={"portfolio": portfolio},
        start=None if state.date is None else (state.date + _ONE_DAY).date(),
    )
    watched = _intraday(after_state, "filled_at")
    intraday = after_state[watched & (after_state["date"] <= day)]
    intraday = intraday.reindex(columns=INTRADAY_FILL_COLUMNS).reset_index(drop=True)
    after_state = after_state[~watched]
    # Not filled by the state date: still pending, or filled on this day (or later) by an earlier run.
    pending = decided[(decided["status"] == "pending") | decided["order_id"].isin(after_state["order_id"])]

    tickers = sorted(set(state.held.index) | set(pending["ticker"]) | set(universe))
    first = min([day, *pending["decided_on"], *([] if state.date is None else [state.date])])
    prices = _read(warehouse, "prices", tickers=tickers, start=first.date(), end=day.date())

    fills = _fills(pending, prices, state.date, day, costs, execution, portfolio, run_id)
    booked = pd.concat([fills, intraday[FILL_COLUMNS]], ignore_index=True) if len(intraday) else fills
    window = prices if state.date is None else prices[prices["date"] > state.date]
    held, dividend_cash = _ledger(window, booked, state.held)
    held = held[held.abs() > _SHARES_TOLERANCE]
    dividends = float(dividend_cash.sum())
    cash = state.cash + float(booked["cash_change"].sum()) + dividends
    close = _closes(prices, day, sorted(held.index), portfolio)
    positions, value = _mark(held, close, cash, state, booked, day, portfolio, run_id)
    target = _target(decide(positions.set_index("ticker")["weight"], float(value["daily_return"].iloc[0])), portfolio)
    close = _closes(prices, day, sorted(set(held.index) | set(target.index[target != 0])), portfolio)

    filled_later = after_state.loc[after_state["date"] > day, "order_id"]
    orders_new = _orders(target, held, close, float(value["equity"].iloc[0]), day, portfolio, run_id, filled_later)
    _refuse_untradable(warehouse, orders_new, held, portfolio, day)
    orders_filled = pending[pending["order_id"].isin(fills["order_id"])].assign(status="filled")
    orders_filled = orders_filled[ORDER_COLUMNS].reset_index(drop=True)

    stored_orders = _read(
        warehouse, "orders", where={"portfolio": portfolio}, start=day.date(), end=day.date(), date_column="decided_on"
    )
    stored = {
        "orders": stored_orders[~_intraday(stored_orders, "decided_at")],
        "fills": after_state[after_state["date"] <= day],
        "positions": _read(warehouse, "positions", start=day.date(), end=day.date(), date_column="as_of"),
        "portfolio_values": values[values["date"] == day],
    }
    computed = {"orders": orders_new, "fills": fills, "positions": positions, "portfolio_values": value}
    _check_overwrite(stored, computed, portfolio, day, later_days)
    if later_days.empty:
        with warehouse.begin() as conn:
            warehouse.upsert("orders", orders_filled, conn=conn)
            warehouse.upsert("orders", orders_new, conn=conn)
            warehouse.upsert("fills", fills, conn=conn)
            warehouse.upsert("positions", positions, conn=conn)
            warehouse.upsert("portfolio_values", value, conn=conn)
    reconcile(warehouse, portfolio, day)
    return PaperDay(
        portfolio=portfolio,
        as_of=day,
        orders_new=orders_new,
        orders_filled=orders_filled,
        fills=fills,
        positions=positions,
        value=value,
        dividends=dividends,
        written=later_days.empty,
        intraday_fills=intraday,
    )


def reconcile(warehouse: Warehouse, portfolio: str, as_of: dt.date | str | pd.Timestamp) -> None:
    """Check the ledger of `portfolio` at `as_of`; raise `ReconciliationError` naming what is off.

    (a) cash + Σ quantity × price of the positions equals the equity of the portfolio_values
        row (and its positions_value), within 1e-6 × equity;
    (b) every fill up to as_of (the watch's intraday ones too) has an order of the same
        portfolio and ticker, marked filled, whose quantity times the split ratios between
        decision and fill is the fill's, and its cash change is −quantity × price − costs;
    (c) the positions equal the fills' cumulative shares, split adjusted;
    (d) cash moved since the first booked day by exactly the fills' cash changes plus the
        dividends on the shares the fills imply.
    """
    day = _day(as_of)
    where = f"portfolio {portfolio!r} on {day:%Y-%m-%d}"
    values = _read(warehouse, "portfolio_values", where={"portfolio": portfolio}, end=day.date())
    if values.empty or values["date"].iloc[-1] != day:
        raise ReconciliationError(f"{where}: no portfolio_values row")
    row = values.iloc[-1]
    positions = _read(
        warehouse, "positions", where={"portfolio": portfolio}, start=day.date(), end=day.date(), date_column="as_of"
    )
    fills = _read(warehouse, "fills", where={"portfolio": portfolio}, end=day.date())
    orders = _read(warehouse, "orders")
    matched = fills.merge(orders, on="order_id", how="left", suffixes=("", "_order"), indicator=True)
    starts = [*fills["date"], *matched["decided_on"].dropna()]
    prices = _read(
        warehouse, "prices", tickers=sorted(set(fills["ticker"])), start=min(starts, default=day).date(), end=day.date()
    )

    tolerance = _VALUE_TOLERANCE * max(abs(float(row["equity"])), 1.0)
    problems = [
        *_equity_problems(row, positions, tolerance),
        *_fill_problems(matched, prices, portfolio),
    ]
    first_day = values["date"].iloc[0]
    shares, dividend_cash = _ledger(prices, fills, pd.Series(dtype=np.float64))  # from nothing held
    problems += _position_problems(positions, shares)
    expected = float(fills.loc[fills["date"] > first_day, "cash_change"].sum()) + float(
        dividend_cash[dividend_cash.index > first_day].sum()
    )
    moved = float(row["cash"]) - float(values["cash"].iloc[0])
    if abs(moved - expected) > tolerance:
        problems.append(
            f"cash moved {moved:,.6f} since {first_day:%Y-%m-%d} but fills and dividends explain {expected:,.6f}"
        )
    if problems:
        raise ReconciliationError(f"{where}: " + "; ".join(problems))


def paper_returns(warehouse: Warehouse, portfolio: str) -> pd.Series:
    """Daily returns of the paper portfolio (date-indexed, named `portfolio:<name>`, the risk scope)."""
    values = _read(warehouse, "portfolio_values", where={"portfolio": portfolio})
    returns = values.set_index("date")["daily_return"].astype(np.float64).dropna()
    return returns.rename(f"portfolio:{portfolio}")


def orders_summary(day: PaperDay) -> pd.DataFrame:
    """The day's new orders for the report: side, shares, reference price and value."""
    orders = day.orders_new
    return pd.DataFrame(
        {
            "ticker": orders["ticker"],
            "side": np.where(orders["quantity"] > 0, "buy", "sell"),
            "quantity": orders["quantity"].abs(),
            "reference_price": orders["reference_price"],
            "value": (orders["quantity"] * orders["reference_price"]).abs(),
            "target_weight": orders["target_weight"],
        }
    ).reset_index(drop=True)


def ledger_sentence(day: PaperDay) -> str:
    """One sentence for the report: fills, costs, dividends, new orders, cash and equity (Markdown;
    the portfolio name is escaped)."""
    daily = day.value["daily_return"].iloc[0]
    change = "its first day" if pd.isna(daily) else f"{daily:+.2%} on the day"
    costs = float(day.value["costs"].iloc[0])
    verified = "" if day.written else " (a past day: recomputed and verified, not rewritten)"
    watched = f", {len(day.intraday_fills)} of them the intraday watch's de-risking" if len(day.intraday_fills) else ""
    return (
        f"Paper portfolio {md_escape(repr(day.portfolio))} on {day.as_of:%Y-%m-%d}: {day.n_fills} fills{watched} "
        f"(costs {costs:,.2f}), dividends {day.dividends:,.2f}, {day.n_orders} new orders for the next session; "
        f"cash {day.cash:,.2f}, equity {day.equity:,.2f} ({change}){verified}."
    )


# ------------------------------------------------------------------------------- books

#: The tables of a book, with the column that dates their rows; `rebook` deletes from each.
BOOK_TABLES: dict[str, str] = {
    "orders": "decided_on",
    "fills": "date",
    "positions": "as_of",
    "portfolio_values": "date",
}
#: The watch's marks of a book (`runner watch` resumes after the last one): `rebook` deletes them
#: with the intraday orders and fills, so replaying a session's watch on the rebuilt book
#: (`runner watch --day`) decides again instead of finding the session done.
WATCH_TABLES: dict[str, str] = {"intraday_marks": "session"}


@dataclass(frozen=True)
class BookChoice:
    """The book a trade run writes, and the report's sentence saying why."""

    name: str
    reason: str


@dataclass(frozen=True)
class RebookSummary:
    """What `rebook` removed, per table, and the earlier orders it made pending again."""

    portfolio: str
    from_date: pd.Timestamp
    deleted: dict[str, int]  # table -> rows deleted
    reopened: int  # orders decided before from_date whose fills (on or after it) were deleted

    def sentence(self) -> str:
        """One line for the CLI: what went, and what to run next."""
        counts = ", ".join(f"{n} {table}" for table, n in self.deleted.items())
        watched = (
            " Sessions the intraday watch had marked are replayed by `runner watch --day DATE` before "
            "the pipeline books them (its de-risking orders went with the book)."
            if any(self.deleted.get(table) for table in WATCH_TABLES)
            else ""
        )
        return (
            f"Deleted the rows of portfolio {self.portfolio!r} dated on or after {self.from_date:%Y-%m-%d}: "
            f"{counts}; {self.reopened} earlier order(s) are pending again. Run the pipeline for "
            f"{self.from_date:%Y-%m-%d} and each later session to replay the book.{watched}"
        )


def choose_book(warehouse: Warehouse, portfolio: str, logical_date: dt.date | str | pd.Timestamp) -> BookChoice:
    """The portfolio's own book, or `<portfolio>@<date>` when its booked sessions run past `logical_date`.

    A day that later sessions were built on cannot be rewritten, yet backdating is a normal
    research action and must not fail after minutes of work. A backdated run therefore books
    into a fresh book of its own that starts on that session; every rerun of the date finds
    the same book again, so reruns stay idempotent, and the main book is never touched.
    `logical_date` is the session the run books.
    """
    day = _day(logical_date)
    booked = _read(warehouse, "portfolio_values", where={"portfolio": portfolio})["date"]
    return _book_choice(portfolio, day, None if booked.empty else pd.Timestamp(booked.max()))


def _book_choice(portfolio: str, day: pd.Timestamp, last_booked: pd.Timestamp | None) -> BookChoice:
    """`choose_book` given the book's last booked session (None: nothing booked yet)."""
    on = f"{day:%Y-%m-%d}"
    if last_booked is None:
        return BookChoice(
            portfolio, f"The paper book {portfolio!r} has no session booked yet: this run starts it on {on}."
        )
    up_to = f"{last_booked:%Y-%m-%d}"
    if last_booked < day:
        return BookChoice(portfolio, f"This run books {on} into the paper book {portfolio!r}, booked up to {up_to}.")
    if last_booked == day:
        return BookChoice(
            portfolio,
            f"This run books {on} again into the paper book {portfolio!r}, whose latest "
            "session it is: the same inputs rewrite the same rows.",
        )
    name = f"{portfolio}@{on}"
    return BookChoice(
        name,
        (
            f"The paper book {portfolio!r} has sessions booked up to {up_to}, after this run's session {on}: this run "
            f"books into {name!r}, which starts on {on}. To replay {portfolio!r} itself from this date, delete its "
            f"sessions from then on with `{rebook_command(portfolio, day)}` and run the pipeline for each session "
            "from there."
        ),
    )


def rebook_command(portfolio: str, from_date: dt.date | str | pd.Timestamp) -> str:
    """The CLI command that calls `rebook` (what error messages and the report tell the user to run)."""
    return f"runner paper rebook --portfolio {shlex.quote(portfolio)} --from {_day(from_date):%Y-%m-%d}"


def rebook(warehouse: Warehouse, portfolio: str, from_date: dt.date | str | pd.Timestamp) -> RebookSummary:
    """Delete `portfolio`'s book from `from_date` on, in one transaction, so those dates can be replayed.

    Every row of the book dated on or after `from_date` goes (`BOOK_TABLES`), with the
    `risk_limit_events` of the runs whose booked days go (that table has no portfolio column:
    a run's events are tied to its book by the run id and date of the book's
    `portfolio_values` row). The watch's intraday orders and fills of those sessions go with
    the book's (they are rows of `orders`/`fills` dated the session), and so do its marks
    (`WATCH_TABLES`): they were decided on the holdings being deleted. Orders decided before `from_date` whose fills are deleted become
    pending again, as they were before those days were booked, so booking `from_date` again
    fills them again. Everything happens in one transaction: a failure deletes nothing.
    Raises ValueError for a portfolio without booked rows.
    """
    day = _day(from_date)
    if _read(warehouse, "portfolio_values", where={"portfolio": portfolio}).empty:
        books = ", ".join(repr(name) for name in warehouse.distinct("portfolio_values", "portfolio")) or "none"
        raise ValueError(f"portfolio {portfolio!r} has no booked rows, nothing to rebook (booked portfolios: {books})")
    reopened, deleted = warehouse.delete_book_from(portfolio, day.date(), {**BOOK_TABLES, **WATCH_TABLES})
    return RebookSummary(portfolio=portfolio, from_date=day, deleted=deleted, reopened=reopened)


# ------------------------------------------------------------------------------- the day


def _day(value: dt.date | str | pd.Timestamp) -> pd.Timestamp:
    return pd.Timestamp(value).normalize()


def _read(warehouse: Warehouse, table: str, **filters: Any) -> pd.DataFrame:
    """`Warehouse.read` with date columns as datetime64 even when no row matched."""
    frame = warehouse.read(table, **filters)
    for column in ("date", "decided_on", "as_of"):
        if column in frame.columns:
            frame[column] = pd.to_datetime(frame[column])
    return frame


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _intraday(frame: pd.DataFrame, column: str) -> pd.Series:
    """Rows the intraday watch wrote: their `decided_at`/`filled_at` instant is set."""
    return frame[column].notna()


def _target(weights: pd.Series, portfolio: str) -> pd.Series:
    duplicated = weights.index[weights.index.duplicated()]
    if len(duplicated):
        raise ValueError(f"portfolio {portfolio!r}: target weights repeat tickers {sorted(set(duplicated))}")
    target = weights.astype(np.float64).fillna(0.0)
    target.index = target.index.astype(str)
    return target


def _state_before(
    warehouse: Warehouse, portfolio: str, day: pd.Timestamp, values: pd.DataFrame, initial_cash: float
) -> _State:
    before = values[values["date"] < day]
    if before.empty:
        return _State(date=None, cash=float(initial_cash), equity=np.nan, held=pd.Series(dtype=np.float64))
    last = before.iloc[-1]
    date = pd.Timestamp(last["date"])
    positions = _read(
        warehouse, "positions", where={"portfolio": portfolio}, start=date.date(), end=date.date(), date_column="as_of"
    )
    held = positions.set_index("ticker")["quantity"].astype(np.float64)
    return _State(date=date, cash=float(last["cash"]), equity=float(last["equity"]), held=held)


def _fills(
    pending: pd.DataFrame,
    prices: pd.DataFrame,
    after: pd.Timestamp | None,
    day: pd.Timestamp,
    costs: Costs,
    execution: Execution,
    portfolio: str,
    run_id: str,
) -> pd.DataFrame:
    """Pending orders at the first session after max(decision, state date), up to `day`, with a price."""
    column = _EXECUTION_COLUMN[execution]
    quotes = prices.assign(price=prices[column])[["ticker", "date", "price", "close", "volume"]]
    sessions = pending[["order_id", "ticker", "decided_on", "quantity"]].merge(quotes, on="ticker")
    floor = sessions["decided_on"]
    if after is not None:
        floor = floor.clip(lower=after)
    tradable = sessions[(sessions["date"] > floor) & (sessions["date"] <= day) & sessions["price"].notna()]
    chosen = tradable.sort_values(["order_id", "date"]).groupby("order_id", sort=False).head(1)
    chosen = chosen.sort_values(["ticker", "order_id"]).reset_index(drop=True)
    if chosen.empty:
        return pd.DataFrame(columns=FILL_COLUMNS).astype(
            {c: np.float64 for c in ["quantity", "price", "commission", "slippage", "impact", "cash_change"]}
        )
    factor = _split_factors(chosen, prices)
    quantity = chosen["quantity"].to_numpy(dtype=np.float64) * factor
    price = chosen["price"].to_numpy(dtype=np.float64)
    traded = np.abs(quantity * price)
    if costs.impact_coefficient is None:
        impact = np.zeros(len(chosen))
    else:
        dollar_volume = chosen["close"].to_numpy(dtype=np.float64) * chosen["volume"].to_numpy(dtype=np.float64)
        bad = ~(dollar_volume > 0)
        if bad.any():
            names = [f"{t} on {d:%Y-%m-%d}" for t, d in zip(chosen["ticker"][bad], chosen["date"][bad], strict=True)]
            raise ValueError(f"portfolio {portfolio!r}: no close × volume to price the impact of fills of {names}")
        impact = costs.impact_coefficient * traded / dollar_volume * traded
    commission = traded * costs.commission_bps / 1e4
    slippage = traded * costs.slippage_bps / 1e4
    return pd.DataFrame(
        {
            "fill_id": [fill_id(o) for o in chosen["order_id"]],
            "order_id": chosen["order_id"],
            "portfolio": portfolio,
            "date": chosen["date"],
            "ticker": chosen["ticker"],
            "quantity": quantity,
            "price": price,
            "commission": commission,
            "slippage": slippage,
            "impact": impact,
            "cash_change": -quantity * price - (commission + slippage + impact),
            "run_id": run_id,
        },
        columns=FILL_COLUMNS,
    )


def _split_factors(trades: pd.DataFrame, prices: pd.DataFrame) -> np.ndarray:
    """Π split_ratio over the ticker's sessions in (decided_on, date], per row of `trades`."""
    rows = trades[["ticker", "decided_on", "date"]].reset_index(drop=True).rename_axis("row").reset_index()
    splits = prices.loc[prices["split_ratio"].fillna(1.0) != 1.0, ["ticker", "date", "split_ratio"]]
    joined = rows.merge(splits.rename(columns={"date": "split_date"}), on="ticker")
    inside = (joined["split_date"] > joined["decided_on"]) & (joined["split_date"] <= joined["date"])
    factor = joined[inside].groupby("row")["split_ratio"].prod()
    return factor.reindex(rows["row"], fill_value=1.0).to_numpy(dtype=np.float64)


def _ledger(prices: pd.DataFrame, fills: pd.DataFrame, opening: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Shares held after the last session, and dividend cash per session.

    On each session d (the dates of `prices` and `fills`, after the opening holdings) the split
    applies, the dividend is paid on the shares held into d, then d's fills trade:
    S_d = r_d·S_{d−1} + f_d, i.e. S = R·(S_0 + cumsum(f / R)) with R the running product of r.
    """
    ratio = prices.pivot(index="date", columns="ticker", values="split_ratio")
    dividend = prices.pivot(index="date", columns="ticker", values="dividend")
    traded = fills.pivot_table(index="date", columns="ticker", values="quantity", aggfunc="sum")
    dates = ratio.index.union(traded.index)
    tickers = ratio.columns.union(traded.columns).union(opening.index)
    start = opening.reindex(tickers, fill_value=0.0).to_numpy(dtype=np.float64)
    if dates.empty:
        return pd.Series(start, index=tickers, dtype=np.float64), pd.Series(index=dates, dtype=np.float64)
    r = ratio.reindex(index=dates, columns=tickers).fillna(1.0).to_numpy(dtype=np.float64)
    f = traded.reindex(index=dates, columns=tickers).fillna(0.0).to_numpy(dtype=np.float64)
    cash = dividend.reindex(index=dates, columns=tickers).fillna(0.0).to_numpy(dtype=np.float64)
    growth = np.cumprod(r, axis=0)
    shares = growth * (start + np.cumsum(f / growth, axis=0))
    paid = ((shares - f) * cash).sum(axis=1)
    return pd.Series(shares[-1], index=tickers), pd.Series(paid, index=dates)


def _closes(prices: pd.DataFrame, day: pd.Timestamp, needed: list[str], portfolio: str) -> pd.Series:
    """The as-traded close on `day` of every held or targeted ticker; a missing one is an error."""
    today = prices[(prices["date"] == day) & prices["close"].notna()]
    close = today.set_index("ticker")["close"].astype(np.float64)
    missing = [t for t in needed if t not in close.index]
    if missing:
        raise ValueError(f"portfolio {portfolio!r}: no close on {day:%Y-%m-%d} for held or targeted tickers {missing}")
    return close


def _mark(
    held: pd.Series,
    close: pd.Series,
    cash: float,
    state: _State,
    fills: pd.DataFrame,
    day: pd.Timestamp,
    portfolio: str,
    run_id: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Positions at the day's close and the portfolio_values row (return against the state's equity)."""
    price = close.reindex(held.index)
    market_value = held * price
    equity = cash + float(market_value.sum())
    positions = pd.DataFrame(
        {
            "as_of": day,
            "ticker": held.index,
            "portfolio": portfolio,
            "quantity": held.to_numpy(),
            "price": price.to_numpy(),
            "market_value": market_value.to_numpy(),
            "weight": (market_value / equity).to_numpy(),
        },
        columns=POSITION_COLUMNS,
    )
    value = pd.DataFrame(
        [
            {
                "portfolio": portfolio,
                "date": day,
                "cash": cash,
                "positions_value": float(market_value.sum()),
                "equity": equity,
                "daily_return": equity / state.equity - 1.0,
                "costs": float((fills["commission"] + fills["slippage"] + fills["impact"]).sum()),
                "run_id": run_id,
            }
        ],
        columns=VALUE_COLUMNS,
    )
    return positions, value


def _orders(
    target: pd.Series,
    held: pd.Series,
    close: pd.Series,
    equity: float,
    day: pd.Timestamp,
    portfolio: str,
    run_id: str,
    filled_later: pd.Series,
) -> pd.DataFrame:
    tickers = sorted(set(target.index) | set(held.index))
    weight = target.reindex(tickers, fill_value=0.0)
    current = held.reindex(tickers, fill_value=0.0)
    shares = np.trunc(weight * equity / close.reindex(tickers)).where(weight != 0, 0.0)
    quantity = shares - current
    trade = quantity.abs() > _SHARES_TOLERANCE
    ids = [order_id(portfolio, day, t) for t in quantity.index[trade]]
    return pd.DataFrame(
        {
            "order_id": ids,
            "portfolio": portfolio,
            "decided_on": day,
            "ticker": quantity.index[trade],
            "quantity": quantity[trade].to_numpy(),
            "target_weight": weight[trade].to_numpy(),
            "reference_price": close.reindex(quantity.index[trade]).to_numpy(),
            "status": np.where(pd.Index(ids).isin(filled_later), "filled", "pending"),
            "run_id": run_id,
        },
        columns=ORDER_COLUMNS,
    )


def _refuse_untradable(
    warehouse: Warehouse, orders: pd.DataFrame, held: pd.Series, portfolio: str, day: pd.Timestamp
) -> None:
    """Raise if an order would open or grow a position in a ticker whose type is not tradable.

    The strategy never targets one (`bentley.inputs.tradable_tickers`); this is the last check
    before the ledger, so a caller that forgets cannot buy an index. Types are the
    warehouse's (`inputs.instrument_types`), which ingest wrote with the params' overrides.
    """
    if orders.empty:
        return
    tickers = orders["ticker"].tolist()
    before = held.reindex(tickers, fill_value=0.0).to_numpy(dtype=np.float64)
    grows = np.abs(before + orders["quantity"].to_numpy(dtype=np.float64)) > np.abs(before)
    types = inputs.instrument_types(warehouse, tickers)
    refused = [f"{t} ({types[t]})" for t, g in zip(tickers, grows, strict=True) if g and types[t] not in TRADABLE_TYPES]
    if refused:
        raise ValueError(
            f"portfolio {portfolio!r} on {day:%Y-%m-%d}: the target would buy {', '.join(refused)}, which is never "
            "held or ordered; leave it out of the target weights (bentley.inputs.tradable_tickers)"
        )


_KEYS = {"orders": "order_id", "fills": "fill_id", "positions": "ticker", "portfolio_values": "portfolio"}


def _check_overwrite(
    stored: dict[str, pd.DataFrame],
    computed: dict[str, pd.DataFrame],
    portfolio: str,
    day: pd.Timestamp,
    later_days: pd.Series,
) -> None:
    """Refuse a write an upsert cannot make right, and any change to a day later days built on."""
    where = f"portfolio {portfolio!r} on {day:%Y-%m-%d}"
    positions = stored["positions"]
    stored = {**stored, "positions": positions[positions["portfolio"] == portfolio]}
    stale, changed = [], []
    for table, key in _KEYS.items():
        old, new = stored[table].set_index(key), computed[table].set_index(key)
        gone = old.index.difference(new.index)
        if len(gone):
            stale.append(f"{table} {_examples(list(gone))}")
        added = new.index.difference(old.index)
        differ = _differing(old, new)
        if len(added) or differ:
            changed.append(f"{table} {_examples([*added, *differ])}")
    if stale:
        raise ValueError(
            f"{where}: a rerun would leave rows it no longer produces ({'; '.join(stale)}); the inputs changed "
            f"since the day was booked: delete that day's ledger rows first with `{rebook_command(portfolio, day)}`"
        )
    if changed and not later_days.empty:
        raise ValueError(
            f"{where}: recomputing this day changes {'; '.join(changed)}, but later days up to "
            f"{later_days.max():%Y-%m-%d} were booked on it: delete them and replay from here with "
            f"`{rebook_command(portfolio, day)}`"
        )


def _differing(old: pd.DataFrame, new: pd.DataFrame) -> list[object]:
    """Keys present in both whose values differ, run_id aside (floats to 1e-12 relative, NaN = NaN)."""
    keys = new.index.intersection(old.index)
    same = np.ones(len(keys), dtype=bool)
    for column in new.columns.drop("run_id", errors="ignore"):
        a, b = old.loc[keys, column], new.loc[keys, column]
        if pd.api.types.is_float_dtype(b):
            same &= np.isclose(
                a.to_numpy(dtype=np.float64), b.to_numpy(dtype=np.float64), rtol=1e-12, atol=0.0, equal_nan=True
            )
        else:
            same &= a.to_numpy() == b.to_numpy()
    return list(keys[~same])


# ------------------------------------------------------------------------- reconciliation


def _equity_problems(row: pd.Series, positions: pd.DataFrame, tolerance: float) -> list[str]:
    held = float((positions["quantity"] * positions["price"]).sum())
    cash, equity = float(row["cash"]), float(row["equity"])
    problems = []
    if abs(cash + held - equity) > tolerance:
        problems.append(f"cash {cash:,.6f} + positions {held:,.6f} = {cash + held:,.6f} but equity is {equity:,.6f}")
    if abs(held - float(row["positions_value"])) > tolerance:
        problems.append(f"positions are worth {held:,.6f} but positions_value is {float(row['positions_value']):,.6f}")
    return problems


def _fill_problems(matched: pd.DataFrame, prices: pd.DataFrame, portfolio: str) -> list[str]:
    """Fills (merged with their orders) that do not match an order, or do not add up."""
    problems = []
    orphan = matched["_merge"] == "left_only"
    if orphan.any():
        problems.append(
            "fills without an order: "
            + _examples(
                [
                    f"{f} (order {o})"
                    for f, o in zip(matched.loc[orphan, "fill_id"], matched.loc[orphan, "order_id"], strict=True)
                ]
            )
        )
    found = matched[~orphan].reset_index(drop=True)
    foreign = found[(found["portfolio_order"] != portfolio) | (found["ticker_order"] != found["ticker"])]
    if len(foreign):
        problems.append(
            "fills whose order has another portfolio or ticker: "
            + _examples(
                [
                    f"{f} ({t} vs order {p}/{to})"
                    for f, t, p, to in zip(
                        foreign["fill_id"],
                        foreign["ticker"],
                        foreign["portfolio_order"],
                        foreign["ticker_order"],
                        strict=True,
                    )
                ]
            )
        )
    unfilled = found[found["status"] != "filled"]
    if len(unfilled):
        problems.append(
            "fills whose order is not marked filled: "
            + _examples([f"{o} ({s})" for o, s in zip(unfilled["order_id"], unfilled["status"], strict=True)])
        )
    if len(found):
        expected = found["quantity_order"].to_numpy(dtype=np.float64) * _split_factors(found, prices)
        actual = found["quantity"].to_numpy(dtype=np.float64)
        wrong = ~np.isclose(actual, expected, rtol=_SHARES_TOLERANCE, atol=_SHARES_TOLERANCE)
        if wrong.any():
            problems.append(
                "fill quantities differ from their orders': "
                + _examples(
                    [
                        f"{f} {t} {a:g} vs {e:g}"
                        for f, t, a, e in zip(
                            found["fill_id"][wrong], found["ticker"][wrong], actual[wrong], expected[wrong], strict=True
                        )
                    ]
                )
            )
    costs = matched["commission"] + matched["slippage"] + matched["impact"]
    cash_change = -matched["quantity"] * matched["price"] - costs
    off = ~np.isclose(
        matched["cash_change"].to_numpy(dtype=np.float64), cash_change.to_numpy(dtype=np.float64), rtol=1e-12, atol=1e-9
    )
    if off.any():
        problems.append(
            "fill cash changes differ from -quantity x price - costs: " + _examples(list(matched.loc[off, "fill_id"]))
        )
    return problems


def _position_problems(positions: pd.DataFrame, shares: pd.Series) -> list[str]:
    stored = positions.groupby("ticker")["quantity"].sum().astype(np.float64)
    tickers = stored.index.union(shares.index)
    a = stored.reindex(tickers, fill_value=0.0)
    b = shares.reindex(tickers, fill_value=0.0)
    wrong = ~np.isclose(a.to_numpy(), b.to_numpy(), rtol=_SHARES_TOLERANCE, atol=_SHARES_TOLERANCE)
    if not wrong.any():
        return []
    return [
        "positions differ from the fills' cumulative (split adjusted) shares: "
        + _examples(
            [f"{t} holds {x:g}, fills give {y:g}" for t, x, y in zip(tickers[wrong], a[wrong], b[wrong], strict=True)]
        )
    ]


def _examples(items: list[object]) -> str:
    shown = ", ".join(str(i) for i in items[:_EXAMPLES])
    return shown if len(items) <= _EXAMPLES else f"{shown} and {len(items) - _EXAMPLES} more"
