"""De-risking orders: whole shares, the broker's id scheme with an instant, idempotent, in the ledger's tables."""

from __future__ import annotations

import pandas as pd
import pytest

from bentley.live.bars import validate_bars
from bentley.live.derisk import intraday_order_id, orders_and_fills, plan
from bentley.live.stream import StreamState, load_book
from bentley.trading.broker import order_id
from bentley.warehouse import Warehouse

from .conftest import DAY, OPEN_UTC, crafted_bars, seed_book


@pytest.fixture
def state(warehouse: Warehouse) -> StreamState:
    seed_book(warehouse, positions={"AAA": (101.0, 100.0), "BBB": (-7.0, 50.0)})
    state = StreamState.start(load_book(warehouse, "paper", DAY))
    state.update(validate_bars(crafted_bars({"AAA": [90.0], "BBB": [52.0]})))
    return state


def test_plans_reduce_in_whole_shares_and_flatten_everything(state: StreamState) -> None:
    assert plan("alert", state, OPEN_UTC, reduce_fraction=0.5).empty
    assert plan("reduce", state, OPEN_UTC, reduce_fraction=0.5).to_dict() == {"AAA": -50.0, "BBB": 3.0}
    assert plan("flatten", state, OPEN_UTC, reduce_fraction=0.5).to_dict() == {"AAA": -101.0, "BBB": 7.0}


def test_ids_are_the_brokers_scheme_with_the_instant(state: StreamState) -> None:
    oid = intraday_order_id("paper", OPEN_UTC, "AAA")
    assert oid == intraday_order_id(
        "paper", OPEN_UTC.tz_convert("America/New_York"), "AAA"
    )  # the instant, not the zone
    assert oid != intraday_order_id("paper", OPEN_UTC + pd.Timedelta(minutes=1), "AAA")
    assert oid != order_id("paper", DAY, "AAA") and len(oid) == 32


def test_orders_fill_at_the_last_price_into_the_ledger_and_rewrite_nothing(
    warehouse: Warehouse, state: StreamState
) -> None:
    trades = plan("flatten", state, OPEN_UTC, reduce_fraction=0.5)

    def rows() -> tuple[pd.DataFrame, pd.DataFrame]:
        return orders_and_fills(
            trades,
            state,
            OPEN_UTC,
            portfolio="paper",
            commission_bps=1.0,
            slippage_bps=5.0,
            reason="flatten",
            run_id="watch-paper-20240603",
        )

    orders, fills = rows()
    aaa = fills.set_index("ticker").loc["AAA"]
    assert aaa["price"] == 90.0 and aaa["commission"] == pytest.approx(101 * 90 * 1e-4)
    assert aaa["cash_change"] == pytest.approx(101 * 90 - 101 * 90 * 6e-4)
    for _ in range(2):  # a rerun of the batch: same ids, same rows
        again = rows()
        warehouse.upsert("orders", again[0])
        warehouse.upsert("fills", again[1])
    assert warehouse.count("orders") == 2 and warehouse.count("fills") == 2
    stored_orders, stored = warehouse.read("orders"), warehouse.read("fills")
    assert set(stored["fill_id"]) == set(fills["fill_id"]) and set(stored["order_id"]) == set(stored_orders["order_id"])
    assert (stored["filled_at"] == OPEN_UTC).all() and (stored["date"] == pd.Timestamp(DAY)).all()
    assert (stored_orders["decided_at"] == OPEN_UTC).all() and (stored_orders["decided_on"] == pd.Timestamp(DAY)).all()
    assert set(stored_orders["status"]) == {"filled"} and set(stored_orders["reason"]) == {"flatten"}
