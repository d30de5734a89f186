"""No lookahead in the trade stage: prices after T change nothing about T's signals, orders or fills."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from bentley.config import load_config
from bentley.features import compute_features
from bentley.sources import FetchRequest
from bentley.sources.sample import SampleMarketSource
from bentley.trading import broker
from bentley.trading import strategy as strategy_lib
from bentley.trading.limits import Limits
from bentley.warehouse import Warehouse

CONFIG = load_config()
TRADE = CONFIG.trade.model_copy(update={"entry_threshold": 0.0})
BENCHMARK = "BBIX"


def _prices() -> pd.DataFrame:
    source = SampleMarketSource(seed=42, n_tickers=4, epoch=dt.date(2000, 1, 3), benchmark=BENCHMARK)
    request = FetchRequest(dt.date(2024, 1, 2), dt.date(2024, 12, 31), tuple(source.available_tickers()))
    return source.fetch("prices", request)


def _book(prices: pd.DataFrame, days: list[pd.Timestamp], folder) -> dict[str, pd.DataFrame]:
    warehouse = Warehouse(f"sqlite:///{folder / 'warehouse.db'}")
    warehouse.upsert("prices", prices)
    features = compute_features(prices, CONFIG.features)
    empty = pd.DataFrame(columns=["ticker", "date", "mean_compound"])
    history = pd.DataFrame(columns=["ticker", "date", "proba_up"])
    strategy = strategy_lib.build_strategy(
        prices,
        features,
        empty,
        history,
        trade=TRADE,
        feature_settings=CONFIG.features,
        technical_settings=CONFIG.technical,
        benchmark=BENCHMARK,
    )
    optimizer = pd.Series(0.25, index=strategy.tickers)
    for day in days:
        target = strategy.live_target(optimizer, day)
        decide = strategy_lib.LimitedTarget(target, Limits.from_params(TRADE.limits))
        paper = broker.run_paper_day(
            warehouse,
            decide,
            portfolio="paper",
            as_of=day,
            initial_cash=100_000.0,
            costs=TRADE.costs,
            execution=TRADE.execution,
            run_id="test",
        )
    today = strategy.today(target, decide, day)
    warehouse.dispose()
    return {"signals": today, "orders": paper.orders_new, "fills": paper.fills}


def test_prices_after_t_change_nothing_about_t(tmp_path):
    prices = _prices()
    sessions = sorted(pd.to_datetime(prices["date"].unique()))
    t = sessions[200]
    days = [sessions[198], sessions[199], t]
    later = prices.copy()
    after = pd.to_datetime(later["date"]) > t
    for column in ("open", "high", "low", "close", "adj_close"):
        later.loc[after, column] *= 1.5
    later.loc[after, "volume"] *= 3
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    original = _book(prices, days, tmp_path / "a")
    changed = _book(later, days, tmp_path / "b")
    assert len(original["fills"]) > 0 and len(original["orders"]) > 0, "the test must trade to prove anything"
    for name in ("signals", "orders", "fills"):
        pd.testing.assert_frame_equal(original[name].reset_index(drop=True), changed[name].reset_index(drop=True))


def test_the_live_target_is_limited_and_its_events_recorded(tmp_path):
    target = pd.Series({"AAA": 0.6, "BBB": 0.1})
    decide = strategy_lib.LimitedTarget(target, Limits(0.4, 1.0, 10.0, 0.03))
    weights = decide(pd.Series(dtype=float), 0.0)
    assert weights.to_dict() == pytest.approx({"AAA": 0.4, "BBB": 0.1})
    events = decide.events("run", "2025-01-02")
    assert events[["ticker", "rule", "requested", "allowed"]].values.tolist() == [
        ["AAA", "max_position_weight", 0.6, 0.4]
    ]
