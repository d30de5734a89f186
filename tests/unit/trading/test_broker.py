"""The paper broker: orders from target weights, next-session fills with hand-computed costs,
splits and dividends, one transaction per day, idempotent reruns, a reconciliation that
catches a tampered ledger, and no Sharpe ratio published for a book a few sessions old."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from bentley.analytics import risk
from bentley.calendar import sessions
from bentley.config import Costs, MinObservations
from bentley.live.derisk import intraday_order_id
from bentley.trading import broker, strategy
from bentley.trading.broker import (
    BookChoice,
    ReconciliationError,
    fill_id,
    order_id,
    paper_returns,
    rebook,
    reconcile,
    run_paper_day,
)
from bentley.warehouse import Warehouse
from bentley.warehouse import fills as fills_table
from bentley.warehouse import orders as orders_table
from bentley.warehouse import portfolio_values as values_table

DAYS = sessions("2025-01-06", "2025-01-14")  # 6, 7, 8, 10, 13, 14 January (9th: market closed)
D1, D2, D3, D4 = DAYS[:4]
VOLUME = 1_000_000
COSTS = Costs(commission_bps=1.0, slippage_bps=5.0, impact_coefficient=0.1)
CASH = 10_000.0
WEIGHTS = pd.Series({"AAA": 0.456, "BBB": 0.3})
TABLES = ("orders", "fills", "positions", "portfolio_values")


def _bars(ticker: str, opens: list[float], closes: list[float], days: pd.DatetimeIndex = DAYS) -> pd.DataFrame:
    opens, closes = np.asarray(opens, dtype=np.float64), np.asarray(closes, dtype=np.float64)
    return pd.DataFrame(
        {
            "ticker": ticker,
            "date": days,
            "open": opens,
            "high": np.maximum(opens, closes) + 1,
            "low": np.minimum(opens, closes) - 1,
            "close": closes,
            "adj_close": closes,
            "volume": VOLUME,
            "dividend": 0.0,
            "split_ratio": 1.0,
            "source": "test",
        }
    )


def _prices() -> pd.DataFrame:
    return pd.concat(
        [
            _bars("AAA", [99, 101, 103, 105, 107, 109], [100, 102, 104, 106, 108, 110]),
            _bars("BBB", [51, 49, 47, 45, 43, 41], [50, 48, 46, 44, 42, 40]),
            _bars("CCC", [20, 21, 22, 23, 24], [20, 21, 22, 23, 24], days=DAYS[1:]),  # no bar on D1
        ],
        ignore_index=True,
    )


@pytest.fixture()
def warehouse(tmp_path: Path) -> Warehouse:
    store = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    store.upsert("prices", _prices())
    return store


def _run(
    warehouse: Warehouse,
    day: pd.Timestamp,
    weights: pd.Series = WEIGHTS,
    execution: str = "next_open",
    run_id: str = "r1",
    costs: Costs = COSTS,
    portfolio: str = "paper",
) -> broker.PaperDay:
    return run_paper_day(
        warehouse,
        weights,
        portfolio=portfolio,
        as_of=day,
        initial_cash=CASH,
        costs=costs,
        execution=execution,
        run_id=run_id,
    )  # type: ignore[arg-type]


def _snapshot(warehouse: Warehouse) -> dict[str, pd.DataFrame]:
    return {table: warehouse.read(table) for table in TABLES}


def _costs(quantity: float, price: float, close: float) -> float:
    value = abs(quantity * price)
    return value * 1e-4 + value * 5e-4 + 0.1 * value / (close * VOLUME) * value


def test_the_first_day_orders_whole_shares_and_fills_nothing(warehouse: Warehouse) -> None:
    day = _run(warehouse, D1)

    assert day.n_fills == 0 and warehouse.count("fills") == 0
    assert day.cash == CASH and day.equity == CASH and warehouse.count("positions") == 0
    orders = warehouse.read("orders").set_index("ticker")
    assert orders["quantity"].to_dict() == {"AAA": 45.0, "BBB": 60.0}  # trunc(0.456e4 / 100), 0.3e4 / 50
    assert set(orders["status"]) == {"pending"} and orders["reference_price"].to_dict() == {"AAA": 100.0, "BBB": 50.0}
    assert orders.loc["AAA", "order_id"] == order_id("paper", D1, "AAA")
    value = warehouse.read("portfolio_values").iloc[0]
    assert value["cash"] == CASH and math.isnan(value["daily_return"]) and value["costs"] == 0.0


def test_short_targets_truncate_toward_zero(warehouse: Warehouse) -> None:
    day = _run(warehouse, D1, weights=pd.Series({"AAA": -0.456, "BBB": 0.0}))
    assert day.orders_new.set_index("ticker")["quantity"].to_dict() == {"AAA": -45.0}


def test_the_next_day_fills_at_its_open_with_hand_computed_costs(warehouse: Warehouse) -> None:
    _run(warehouse, D1)
    day = _run(warehouse, D2)

    fills = warehouse.read("fills").set_index("ticker")
    assert fills["price"].to_dict() == {"AAA": 101.0, "BBB": 49.0}
    assert fills["quantity"].to_dict() == {"AAA": 45.0, "BBB": 60.0}
    assert (fills["date"] == D2).all()
    assert fills.loc["AAA", "commission"] == pytest.approx(4545 * 1e-4, rel=1e-12)
    assert fills.loc["AAA", "slippage"] == pytest.approx(4545 * 5e-4, rel=1e-12)
    assert fills.loc["AAA", "impact"] == pytest.approx(0.1 * 4545 / (102 * VOLUME) * 4545, rel=1e-12)
    assert fills.loc["BBB", "impact"] == pytest.approx(0.1 * 2940 / (48 * VOLUME) * 2940, rel=1e-12)
    costs = _costs(45, 101, 102) + _costs(60, 49, 48)
    cash = CASH - 45 * 101 - 60 * 49 - costs
    equity = cash + 45 * 102 + 60 * 48
    assert day.cash == pytest.approx(cash, rel=1e-12)
    assert day.equity == pytest.approx(equity, rel=1e-12)
    value = warehouse.read("portfolio_values").iloc[-1]
    assert value["costs"] == pytest.approx(costs, rel=1e-12)
    assert value["daily_return"] == pytest.approx(equity / CASH - 1, rel=1e-12)
    positions = warehouse.read("positions", where={"portfolio": "paper"}).query("as_of == @D2").set_index("ticker")
    assert positions["quantity"].to_dict() == {"AAA": 45.0, "BBB": 60.0}
    assert positions.loc["BBB", "market_value"] == 60 * 48
    assert positions.loc["AAA", "weight"] == pytest.approx(45 * 102 / equity, rel=1e-12)
    assert set(warehouse.read("orders").query("decided_on == @D1")["status"]) == {"filled"}
    new = day.orders_new.set_index("ticker")["quantity"]
    assert new.to_dict() == {"AAA": math.trunc(0.456 * equity / 102) - 45, "BBB": math.trunc(0.3 * equity / 48) - 60}
    reconcile(warehouse, "paper", D2)


def test_next_close_fills_at_the_next_close(warehouse: Warehouse) -> None:
    _run(warehouse, D1, execution="next_close")
    day = _run(warehouse, D2, execution="next_close")
    assert day.fills.set_index("ticker")["price"].to_dict() == {"AAA": 102.0, "BBB": 48.0}
    cash = CASH - 45 * 102 - 60 * 48 - _costs(45, 102, 102) - _costs(60, 48, 48)
    assert day.cash == pytest.approx(cash, rel=1e-12)
    assert day.equity == pytest.approx(cash + 45 * 102 + 60 * 48, rel=1e-12)


def test_no_impact_when_the_coefficient_is_null(warehouse: Warehouse) -> None:
    costs = Costs(commission_bps=1.0, slippage_bps=5.0, impact_coefficient=None)
    _run(warehouse, D1, costs=costs)
    day = _run(warehouse, D2, costs=costs)
    assert (day.fills["impact"] == 0).all()
    assert day.cash == pytest.approx(CASH - (4545 + 2940) * (1 + 6e-4), rel=1e-12)


def test_reruns_change_nothing(warehouse: Warehouse) -> None:
    _run(warehouse, D1)
    first = _snapshot(warehouse)
    _run(warehouse, D1)
    for table in TABLES:
        pd.testing.assert_frame_equal(warehouse.read(table), first[table])

    _run(warehouse, D2)
    second = _snapshot(warehouse)
    assert _run(warehouse, D2).written
    past = _run(warehouse, D1, run_id="r2")  # a day later days built on: recomputed, compared, not written
    assert not past.written and set(past.orders_new["status"]) == {"filled"}
    for table in TABLES:
        pd.testing.assert_frame_equal(warehouse.read(table), second[table])
    assert warehouse.count("orders") == len(set(second["orders"]["order_id"])) == 4
    assert warehouse.count("fills") == len(set(second["fills"]["fill_id"])) == 2

    _run(warehouse, D2, run_id="r3")  # a new pipeline run: same ids, only run_id moves
    for table in TABLES:
        assert warehouse.count(table) == len(second[table])


def test_a_rerun_that_would_leave_stale_rows_or_rewrite_history_is_refused(warehouse: Warehouse) -> None:
    _run(warehouse, D1)
    with pytest.raises(
        ValueError,
        match=r"portfolio 'paper' on 2025-01-06: a rerun would leave rows .*orders.*"
        r"`runner paper rebook --portfolio paper --from 2025-01-06`",
    ):
        _run(warehouse, D1, weights=pd.Series({"AAA": 0.456}))
    _run(warehouse, D2)
    with pytest.raises(
        ValueError,
        match=r"recomputing this day changes orders .* later days up to 2025-01-07 were booked on it: "
        r"delete them and replay from here with "
        r"`runner paper rebook --portfolio paper --from 2025-01-06`",
    ):
        _run(warehouse, D1, weights=pd.Series({"AAA": 0.4, "BBB": 0.3}))


def test_the_next_day_fills_the_previous_days_orders(warehouse: Warehouse) -> None:
    _run(warehouse, D1)
    day2 = _run(warehouse, D2)
    day3 = _run(warehouse, D3)
    assert set(day3.fills["order_id"]) == set(day2.orders_new["order_id"])
    assert (day3.fills["price"].to_numpy() == [103.0, 47.0]).all()
    returns = paper_returns(warehouse, "paper")
    assert returns.name == "portfolio:paper" and list(returns.index) == [D2, D3]
    assert returns.iloc[-1] == pytest.approx(day3.equity / day2.equity - 1, rel=1e-12)


def test_a_target_of_zero_closes_the_position(warehouse: Warehouse) -> None:
    _run(warehouse, D1)
    _run(warehouse, D2)
    day3 = _run(warehouse, D3, weights=pd.Series({"AAA": 0.456}))  # BBB dropped: sell all
    held = day3.positions.set_index("ticker").loc["BBB", "quantity"]
    assert held > 60  # D2's order topped it up on D3
    assert day3.orders_new.set_index("ticker").loc["BBB", ["quantity", "target_weight"]].tolist() == [-held, 0.0]
    day4 = _run(warehouse, D4, weights=pd.Series({"AAA": 0.456}))
    assert "BBB" not in set(day4.positions["ticker"])
    sold = day4.fills.set_index("ticker").loc["BBB"]
    assert sold["quantity"] == -held
    assert sold["cash_change"] == pytest.approx(held * 45 - _costs(held, 45, 44), rel=1e-12)
    assert "BBB" not in set(warehouse.read("positions").query("as_of == @D4")["ticker"])


def _record_types(warehouse: Warehouse, types: dict[str, str]) -> None:
    warehouse.upsert(
        "instruments",
        pd.DataFrame(
            {
                "ticker": list(types),
                "instrument_type": list(types.values()),
                "source": "test",
                "updated_at": pd.Timestamp("2025-01-06", tz="UTC"),
            }
        ),
    )


def test_an_index_is_never_bought_but_a_book_holding_one_may_sell_it(warehouse: Warehouse) -> None:
    """A book from before instrument types holds BBB; once BBB is known as an index, the broker
    refuses to buy more of it, and the order that closes it goes through."""
    _run(warehouse, D1)
    _run(warehouse, D2)  # D1's orders fill: BBB is held
    _record_types(warehouse, {"BBB": "index", "AAA": "equity"})
    with pytest.raises(ValueError, match=r"the target would buy BBB \(index\), which is never held or ordered"):
        _run(warehouse, D3, weights=pd.Series({"AAA": 0.456, "BBB": 0.6}))
    assert warehouse.read("portfolio_values")["date"].max() == D2  # nothing of D3 was written
    day3 = _run(warehouse, D3, weights=pd.Series({"AAA": 0.456}))
    assert day3.orders_new.set_index("ticker").loc["BBB", "quantity"] < 0  # sold down, to 0
    day4 = _run(warehouse, D4, weights=pd.Series({"AAA": 0.456}))
    assert "BBB" not in set(day4.positions["ticker"])


def test_a_ticker_without_a_close_on_the_day_is_named(warehouse: Warehouse) -> None:
    with pytest.raises(ValueError, match=r"no close on 2025-01-06 for held or targeted tickers \['CCC'\]"):
        _run(warehouse, D1, weights=pd.Series({"AAA": 0.4, "CCC": 0.2}))
    assert all(warehouse.count(table) == 0 for table in TABLES)


def test_splits_scale_holdings_and_orders_and_dividends_reach_cash(warehouse: Warehouse) -> None:
    bars = _prices()
    on_d3 = bars["date"] == D3
    later = bars["date"] >= D3
    bbb = bars["ticker"] == "BBB"
    bars.loc[bbb & later, ["open", "close", "high", "low", "adj_close"]] /= 2  # 2-for-1 on D3
    bars.loc[bbb & on_d3, "split_ratio"] = 2.0
    bars.loc[(bars["ticker"] == "AAA") & on_d3, "dividend"] = 0.5
    warehouse.upsert("prices", bars)

    _run(warehouse, D1)
    day2 = _run(warehouse, D2)
    ordered = day2.orders_new.set_index("ticker")["quantity"]
    day3 = _run(warehouse, D3)

    fills = day3.fills.set_index("ticker")
    assert fills.loc["BBB", "quantity"] == 2 * ordered["BBB"] and fills.loc["BBB", "price"] == 23.5
    assert fills.loc["AAA", "quantity"] == ordered["AAA"]
    held = day3.positions.set_index("ticker")["quantity"].to_dict()
    assert held == {"AAA": 45 + ordered["AAA"], "BBB": 2 * 60 + 2 * ordered["BBB"]}
    assert day3.dividends == 45 * 0.5  # shares held into the ex-date, not the ones bought on it
    assert day3.cash == pytest.approx(day2.cash + fills["cash_change"].sum() + 22.5, rel=1e-12)
    reconcile(warehouse, "paper", D3)


def _tamper(warehouse: Warehouse, statement: sa.Executable) -> None:
    with warehouse.engine.begin() as conn:
        conn.execute(statement)


@pytest.fixture()
def ledger(warehouse: Warehouse) -> Warehouse:
    _run(warehouse, D1)
    _run(warehouse, D2)
    return warehouse


def test_reconciliation_catches_a_tampered_fill_quantity(ledger: Warehouse) -> None:
    aaa = fills_table.c.ticker == "AAA"
    _tamper(ledger, sa.update(fills_table).where(aaa).values(quantity=46.0))
    with pytest.raises(
        ReconciliationError,
        match=r"portfolio 'paper' on 2025-01-07: .*fill quantities differ"
        r".*AAA 46 vs 45.*AAA holds 45, fills give 46",
    ):
        reconcile(ledger, "paper", D2)


def test_reconciliation_catches_a_deleted_order(ledger: Warehouse) -> None:
    _tamper(ledger, sa.delete(orders_table).where(orders_table.c.order_id == order_id("paper", D1, "BBB")))
    with pytest.raises(ReconciliationError, match=f"fills without an order: .*order {order_id('paper', D1, 'BBB')}"):
        reconcile(ledger, "paper", D2)


def test_reconciliation_catches_an_order_left_pending(ledger: Warehouse) -> None:
    _tamper(ledger, sa.update(orders_table).where(orders_table.c.ticker == "AAA").values(status="pending"))
    with pytest.raises(ReconciliationError, match="fills whose order is not marked filled"):
        reconcile(ledger, "paper", D2)


def test_reconciliation_catches_changed_cash(ledger: Warehouse) -> None:
    row = (values_table.c.portfolio == "paper") & (values_table.c.date == D2.date())
    _tamper(ledger, sa.update(values_table).where(row).values(cash=values_table.c.cash + 1.0))
    with pytest.raises(ReconciliationError, match=r"but equity is .*cash moved .* but fills and dividends explain"):
        reconcile(ledger, "paper", D2)
    with pytest.raises(ReconciliationError, match="cash moved"):
        _run(ledger, D3)  # the stage fails: the next day starts from the tampered cash


def test_a_failure_mid_write_leaves_nothing_half_written(warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    _run(warehouse, D1)
    before = _snapshot(warehouse)
    upsert = warehouse.upsert

    def failing(table: str, frame: pd.DataFrame, **kwargs: object) -> int:
        if table == "positions":
            raise RuntimeError("disk full")
        return upsert(table, frame, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(warehouse, "upsert", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        _run(warehouse, D2)
    for table in TABLES:
        pd.testing.assert_frame_equal(warehouse.read(table), before[table])
    monkeypatch.undo()
    assert _run(warehouse, D2).n_fills == 2


# ------------------------------------------------------------------------------- books


def _raw(warehouse: Warehouse, portfolio: str) -> dict[str, list[tuple]]:
    """A book's rows in every ledger table exactly as stored (SQLite text dates, doubles)."""
    with warehouse.engine.connect() as conn:
        return {
            table: conn.exec_driver_sql(
                f"SELECT * FROM {table} WHERE portfolio = ? ORDER BY 1, 2, 3", (portfolio,)
            ).fetchall()
            for table in TABLES
        }


def _content(warehouse: Warehouse, portfolio: str) -> dict[str, pd.DataFrame]:
    """A book's rows without its name and the ids derived from it: what two books can share."""
    return {
        table: warehouse.read(table, where={"portfolio": portfolio}).drop(
            columns=["portfolio", "order_id", "fill_id"], errors="ignore"
        )
        for table in TABLES
    }


def test_the_main_book_is_chosen_unless_it_has_later_sessions(warehouse: Warehouse) -> None:
    assert broker.choose_book(warehouse, "paper", D2) == BookChoice(
        "paper", "The paper book 'paper' has no session booked yet: this run starts it on 2025-01-07."
    )
    _run(warehouse, D1)
    _run(warehouse, D2)
    assert broker.choose_book(warehouse, "paper", D3) == BookChoice(
        "paper", "This run books 2025-01-08 into the paper book 'paper', booked up to 2025-01-07."
    )
    assert broker.choose_book(warehouse, "paper", D2).name == "paper"  # its latest day: rebooked in place
    assert broker.choose_book(warehouse, "paper", "2025-01-06") == BookChoice(
        "paper@2025-01-06",
        "The paper book 'paper' has sessions booked up to 2025-01-07, after this run's session 2025-01-06: this "
        "run books into 'paper@2025-01-06', which starts on 2025-01-06. To replay 'paper' itself from this date, "
        "delete its sessions from then on with `runner paper rebook --portfolio paper --from 2025-01-06` and run "
        "the pipeline for each session from there.",
    )


def test_a_backdated_day_books_its_own_book_as_a_fresh_store_would(warehouse: Warehouse, tmp_path: Path) -> None:
    for n, day in enumerate([D1, D2, D3]):
        _run(warehouse, day, run_id=f"r{n}")
    main = _raw(warehouse, "paper")

    book = broker.choose_book(warehouse, "paper", D2)
    assert book.name == "paper@2025-01-07"
    assert _run(warehouse, D2, run_id="back", portfolio=book.name).written
    assert _raw(warehouse, "paper") == main  # byte for byte

    fresh = Warehouse(f"sqlite:///{tmp_path / 'fresh.db'}")
    fresh.upsert("prices", _prices())
    _run(fresh, D2, run_id="back")
    backdated, expected = _content(warehouse, book.name), _content(fresh, "paper")
    assert len(backdated["orders"]) == 2 and len(backdated["portfolio_values"]) == 1
    for table in TABLES:
        pd.testing.assert_frame_equal(backdated[table], expected[table], check_exact=True)
    orders = warehouse.read("orders", where={"portfolio": book.name})
    assert list(orders["order_id"]) == sorted(order_id(book.name, D2, t) for t in ("AAA", "BBB"))

    stored = _raw(warehouse, book.name)
    assert broker.choose_book(warehouse, "paper", D2) == book  # a rerun finds the same book ...
    assert _run(warehouse, D2, run_id="back", portfolio=book.name).written
    assert _raw(warehouse, book.name) == stored  # ... and rewrites the same rows
    _run(warehouse, D2, run_id="back-2", portfolio=book.name)  # another run: only run_id moves
    assert {t: len(rows) for t, rows in _raw(warehouse, book.name).items()} == {t: len(r) for t, r in stored.items()}
    assert _raw(warehouse, "paper") == main


def _events(*pairs: tuple[str, pd.Timestamp]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_id": [r for r, _ in pairs],
            "date": [d for _, d in pairs],
            "ticker": "AAA",
            "rule": "max_position_weight",
            "requested": 0.5,
            "allowed": 0.4,
        }
    )


def test_rebook_deletes_exactly_the_rows_from_the_date_on_and_a_replay_reproduces_them(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    for n, day in enumerate(DAYS[:4]):
        _run(warehouse, day, run_id=f"r{n}")
        _run(warehouse, day, run_id=f"o{n}", portfolio="other")
    # The events of the runs that booked D3 and D4 go; other runs' events stay.
    warehouse.upsert("risk_limit_events", _events(("r1", D2), ("r2", D3), ("r3", D4), ("o2", D3), ("elsewhere", D3)))
    booked, other = _raw(warehouse, "paper"), _raw(warehouse, "other")
    filled_on_d3 = warehouse.read(
        "orders", where={"portfolio": "paper"}, start=D2.date(), end=D2.date(), date_column="decided_on"
    )

    summary = rebook(warehouse, "paper", D3)

    assert summary.deleted == {
        "risk_limit_events": 2,
        "orders": 4,
        "fills": 4,
        "positions": 4,
        "portfolio_values": 2,
        "intraday_marks": 0,
    }
    assert "runner watch" not in summary.sentence()
    assert summary.reopened == len(filled_on_d3) == 2
    assert summary.sentence().startswith("Deleted the rows of portfolio 'paper' dated on or after 2025-01-08: ")
    two_days = Warehouse(f"sqlite:///{tmp_path / 'two.db'}")  # what booking D1 and D2 alone leaves
    two_days.upsert("prices", _prices())
    _run(two_days, D1, run_id="r0")
    _run(two_days, D2, run_id="r1")
    assert _raw(warehouse, "paper") == _raw(two_days, "paper")
    assert _raw(warehouse, "other") == other
    kept = warehouse.read("risk_limit_events")
    assert sorted(zip(kept["run_id"], kept["date"], strict=True)) == [("elsewhere", D3), ("o2", D3), ("r1", D2)]

    _run(warehouse, D3, run_id="r2")
    _run(warehouse, D4, run_id="r3")
    assert _raw(warehouse, "paper") == booked


def test_a_failing_rebook_deletes_nothing(ledger: Warehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last delete fails (its table is gone for a moment): every earlier delete is rolled back."""
    before = _raw(ledger, "paper")
    last_positions = {name: column for name, column in broker.BOOK_TABLES.items() if name != "positions"}
    monkeypatch.setattr(broker, "BOOK_TABLES", {**last_positions, "positions": broker.BOOK_TABLES["positions"]})
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE positions RENAME TO positions_away")
    with pytest.raises(sa.exc.OperationalError, match="positions"):
        rebook(ledger, "paper", D2)
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE positions_away RENAME TO positions")
    assert _raw(ledger, "paper") == before


def test_rebook_refuses_a_portfolio_without_rows_in_one_line(ledger: Warehouse) -> None:
    before = _raw(ledger, "paper")
    with pytest.raises(ValueError) as error:
        rebook(ledger, "papr", D1)
    assert str(error.value) == "portfolio 'papr' has no booked rows, nothing to rebook (booked portfolios: 'paper')"
    assert _raw(ledger, "paper") == before


# --------------------------------------------------------------------------------------------
# What the trade stage publishes about a young book


def test_a_sharpe_ratio_of_four_booked_sessions_is_stored_as_null_with_the_reason(warehouse: Warehouse) -> None:
    """Four booked sessions are three daily returns: risk_metrics keeps the row, without a value."""
    for day in (D1, D2, D3, D4):
        _run(warehouse, day)
    returns = paper_returns(warehouse, "paper")
    benchmark = pd.Series([0.001, -0.002, 0.003], index=returns.index)
    raw = risk.risk_metrics(returns.to_frame(), benchmark, 0.02, garch=False).iloc[0]
    assert len(returns) == 3 and math.isfinite(raw["sharpe_ratio"]), "computable, so it used to be published"
    minimums = MinObservations(annualized=63, var=63, estimate=63, drawdown=2)
    rows = strategy.paper_metrics(returns, benchmark, 0.02, "r9", "paper", minimums)
    warehouse.upsert("risk_metrics", rows)
    stored = warehouse.read("risk_metrics", where={"run_id": "r9"}).set_index("metric")
    assert set(stored["scope"]) == {"portfolio:paper"} and len(stored) == len(risk.METRICS)
    assert pd.isna(stored.loc["sharpe_ratio", "value"]) and stored.loc["sharpe_ratio", "n_obs"] == 3
    assert stored.loc["sharpe_ratio", "note"] == "3 daily returns: too few for a Sharpe ratio; 63 needed"
    assert stored.loc["cumulative_return", "value"] == pytest.approx(raw["cumulative_return"], rel=1e-12)
    assert pd.isna(stored.loc["cumulative_return", "note"])
    sentence = strategy.paper_sentence(returns, stored.reset_index(), "paper")
    assert sentence == (
        f"Over 3 daily returns the paper portfolio returned {raw['cumulative_return']:+.2%}, with a max drawdown of "
        f"{raw['max_drawdown']:.2%}; its Sharpe ratio is n/a (3 daily returns: too few for a Sharpe ratio; 63 needed)."
    )


# --------------------------------------------------------------------------------------------
# The intraday watch's de-risking, in the same ledger

#: 10:00 New York on D3: the watch flattens what the book held at D2's close.
WATCHED_AT = pd.Timestamp("2025-01-08 15:00", tz="UTC")
HELD_AT_D2 = {"AAA": 45.0, "BBB": 60.0}


def _watch_sells(warehouse: Warehouse, prices: dict[str, float], at: pd.Timestamp = WATCHED_AT) -> pd.DataFrame:
    """What `runner watch` writes when it flattens: filled orders and their fills at an instant, dated
    the session, ids from (portfolio, instant, ticker), commission 1 bp and slippage 5 bp, no impact."""
    session = at.tz_convert("America/New_York").normalize().tz_localize(None)
    orders, fills = [], []
    for ticker, price in prices.items():
        quantity = -HELD_AT_D2[ticker]
        oid = intraday_order_id("paper", at, ticker)
        traded = abs(quantity * price)
        common = {"order_id": oid, "portfolio": "paper", "ticker": ticker, "quantity": quantity, "run_id": "watch"}
        orders.append(
            {
                **common,
                "decided_on": session,
                "decided_at": at,
                "target_weight": 0.0,
                "reference_price": price,
                "status": "filled",
                "reason": "flatten",
            }
        )
        fills.append(
            {
                **common,
                "fill_id": fill_id(oid),
                "date": session,
                "filled_at": at,
                "price": price,
                "commission": traded * 1e-4,
                "slippage": traded * 5e-4,
                "impact": 0.0,
                "cash_change": -quantity * price - traded * 6e-4,
            }
        )
    warehouse.upsert("orders", pd.DataFrame(orders))
    warehouse.upsert("fills", pd.DataFrame(fills))
    return pd.DataFrame(fills)


def _store(tmp_path: Path, name: str) -> Warehouse:
    store = Warehouse(f"sqlite:///{tmp_path / f'{name}.db'}")
    store.upsert("prices", _prices())
    return store


def test_the_watchs_fills_are_booked_with_their_session_reconciled_and_reruns_change_nothing(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    plain = _store(tmp_path, "plain")  # the same book, never de-risked
    for store in (warehouse, plain):
        _run(store, D1)
        _run(store, D2)
    sold = _watch_sells(warehouse, {"AAA": 103.5, "BBB": 46.5})
    without, day3 = _run(plain, D3), _run(warehouse, D3)  # reconciles, or raises

    held = day3.positions.set_index("ticker")["quantity"]
    held_without = without.positions.set_index("ticker")["quantity"]
    assert held.to_dict() == (held_without - pd.Series(HELD_AT_D2)).to_dict()  # D2's orders still filled on D3
    assert day3.cash == pytest.approx(without.cash + sold["cash_change"].sum(), rel=1e-12)
    assert float(day3.value["costs"].iloc[0]) == pytest.approx(
        float(without.value["costs"].iloc[0]) + (sold["commission"] + sold["slippage"]).sum(), rel=1e-12
    )
    assert day3.n_fills == without.n_fills + 2 and set(day3.intraday_fills["fill_id"]) == set(sold["fill_id"])
    assert "2 of them the intraday watch's de-risking" in broker.ledger_sentence(day3)
    stored = warehouse.read("orders", where={"portfolio": "paper"})
    assert set(stored.loc[stored["decided_at"].notna(), "status"]) == {"filled"}  # never pending, never refilled

    booked = _snapshot(warehouse)
    assert _run(warehouse, D3, run_id="again").written  # the trade stage rerun for the day: same rows
    for table in TABLES:
        pd.testing.assert_frame_equal(
            warehouse.read(table).drop(columns="run_id", errors="ignore"),
            booked[table].drop(columns="run_id", errors="ignore"),
        )
    _run(warehouse, D4)
    assert not _run(warehouse, D3).written  # a past day: recomputed with the watch's fills, found identical
    reconcile(warehouse, "paper", D4)
    plain.dispose()


def test_a_session_the_daily_book_skipped_is_booked_with_the_next_one(warehouse: Warehouse) -> None:
    _run(warehouse, D1)
    _run(warehouse, D2)
    _watch_sells(warehouse, {"AAA": 103.5})
    day4 = _run(warehouse, D4)  # D3 never booked: its intraday fill trades on D3 within D4's booking
    assert set(day4.intraday_fills["ticker"]) == {"AAA"}
    filled_d3 = day4.fills[day4.fills["ticker"] == "AAA"]["quantity"].sum()
    assert day4.positions.set_index("ticker").loc["AAA", "quantity"] == 45.0 + filled_d3 - 45.0


def test_reconciliation_checks_the_watchs_fills_like_any_fill(ledger: Warehouse) -> None:
    sold = _watch_sells(ledger, {"AAA": 103.5, "BBB": 46.5})
    _run(ledger, D3)
    aaa = fills_table.c.fill_id == sold.loc[sold["ticker"] == "AAA", "fill_id"].iloc[0]
    _tamper(ledger, sa.update(fills_table).where(aaa).values(cash_change=fills_table.c.cash_change + 5.0))
    with pytest.raises(ReconciliationError, match="fill cash changes differ .*cash moved"):
        reconcile(ledger, "paper", D3)
    _tamper(
        ledger, sa.delete(orders_table).where(orders_table.c.order_id == intraday_order_id("paper", WATCHED_AT, "BBB"))
    )
    with pytest.raises(ReconciliationError, match="fills without an order"):
        reconcile(ledger, "paper", D3)


def test_rebook_deletes_the_watchs_orders_fills_and_marks_with_the_book(ledger: Warehouse, tmp_path: Path) -> None:
    _watch_sells(ledger, {"AAA": 103.5, "BBB": 46.5})
    mark = {"portfolio": "paper", "ts": WATCHED_AT, "session": D3, "equity": 1.0, "run_id": "watch"}
    ledger.upsert("intraday_marks", pd.DataFrame([mark]))
    _run(ledger, D3)

    summary = rebook(ledger, "paper", D3)

    assert summary.deleted["orders"] == 2 + 2 and summary.deleted["fills"] == 2 + 2  # the day's and the watch's
    assert summary.deleted["intraday_marks"] == 1 and summary.reopened == 2  # D2's orders; the watch's are gone
    assert "`runner watch --day DATE`" in summary.sentence()
    assert ledger.read("orders")["decided_at"].isna().all() and ledger.read("fills")["filled_at"].isna().all()
    two_days = _store(tmp_path, "two")
    _run(two_days, D1)
    _run(two_days, D2, run_id="r1")
    assert _raw(ledger, "paper") == _raw(two_days, "paper")
    two_days.dispose()
