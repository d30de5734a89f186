"""The incremental state equals a from-scratch recomputation after every batch."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bentley.live.bars import split_batches, validate_bars
from bentley.live.stream import StreamState, from_scratch, load_book, previous_closes
from bentley.warehouse import Warehouse

from .conftest import DAY, crafted_bars, seed_book, walk


def test_the_book_is_read_from_the_previous_close(warehouse: Warehouse) -> None:
    equity = seed_book(warehouse)
    seed_book(warehouse, as_of=DAY, cash=1.0, positions={"AAA": (1.0, 1.0)})  # the session's own close: not read
    book = load_book(warehouse, "paper", DAY)
    assert book.as_of == pd.Timestamp("2024-05-31") and book.equity == equity and book.cash == 10_000.0
    assert book.quantities == {"AAA": 100.0, "BBB": 200.0} and book.prev_close == {"AAA": 100.0, "BBB": 50.0}
    empty = load_book(warehouse, "other", DAY)
    assert empty.quantities == {} and empty.equity == 0.0
    warehouse.upsert("prices", pd.DataFrame([{"ticker": "CCC", "date": pd.Timestamp("2024-05-31"), "close": 7.0}]))
    assert previous_closes(warehouse, ["CCC"], DAY) == {"CCC": 7.0}


def test_incremental_state_equals_a_recomputation_after_each_batch(warehouse: Warehouse) -> None:
    seed_book(warehouse)
    book = load_book(warehouse, "paper", DAY)
    bars = crafted_bars(
        {"AAA": walk(100.5, 30, 1), "BBB": walk(49.0, 30, 2), "CCC": walk(10.0, 30, 3)},
        first_open={"AAA": 100.2, "BBB": 49.5},
    )
    bars = validate_bars(bars.drop(index=bars[(bars["ticker"] == "BBB")].index[5:9]))  # BBB misses 4 bars
    extra = {"CCC": 9.9}
    state = StreamState.start(book, extra)
    seen = []
    for batch in split_batches(bars):
        snapshot = state.update(batch)
        seen.append(batch)
        if len(seen) in (1, 2, 7, 12, 30):
            reference = from_scratch(book, pd.concat(seen), extra)
            assert snapshot.equity == pytest.approx(reference["equity"], rel=1e-12)
            assert snapshot.positions_value == pytest.approx(reference["positions_value"], rel=1e-12)
            assert snapshot.pnl == pytest.approx(reference["pnl"], rel=1e-9, abs=1e-9)
            assert snapshot.high_water == pytest.approx(reference["high_water"], rel=1e-12)
            assert snapshot.drawdown == pytest.approx(reference["drawdown"], abs=1e-12)
            assert snapshot.realised_vol == pytest.approx(reference["realised_vol"], rel=1e-9)
            for ticker, vol in reference["ticker_vol"].items():
                assert state.tickers[ticker].realised_vol == pytest.approx(vol, rel=1e-9), ticker
                assert state.tickers[ticker].last_price == reference["last_price"][ticker]
    assert snapshot.pnl_pct == pytest.approx(snapshot.pnl / book.equity)
    assert set(snapshot.position_pnl) == {"AAA", "BBB"}  # held only; CCC is watched, not held


def test_staleness_and_ordering(warehouse: Warehouse) -> None:
    seed_book(warehouse)
    state = StreamState.start(load_book(warehouse, "paper", DAY))
    batches = list(split_batches(validate_bars(crafted_bars({"AAA": [100, 101, 102]}))))
    for batch in batches:
        state.update(batch)
    now = batches[-1]["ts"].iloc[0] + pd.Timedelta(minutes=10)
    ages = state.staleness_minutes(now, ["AAA", "BBB"])
    assert ages["AAA"] == 10.0 and math.isinf(ages["BBB"])
    with pytest.raises(ValueError, match="is not after the last one"):
        state.update(batches[0])


def test_fills_move_holdings_and_cash_but_not_the_mark(warehouse: Warehouse) -> None:
    seed_book(warehouse)
    state = StreamState.start(load_book(warehouse, "paper", DAY))
    state.update(validate_bars(crafted_bars({"AAA": [90.0], "BBB": [45.0]})))
    before = state.equity
    state.apply_fills(
        pd.DataFrame({"ticker": ["AAA"], "quantity": [-100.0], "price": [90.0], "cash_change": [100 * 90.0 - 1.0]})
    )
    assert "AAA" not in state.quantities and state.equity == pytest.approx(before - 1.0)
    assert state.snapshot(state.last_ts).position_pnl == {"AAA": -1000.0, "BBB": -1000.0}  # realised + held
