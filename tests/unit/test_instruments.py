"""Instrument types: where a ticker's type comes from, and that an index is never traded.

An index in the universe that is not the benchmark (here SPX, or MEDX made an index by
`universe.instrument_types`) keeps its prices, but is never a model row, never in the
optimizer's target weights, never scored by the strategy and never ordered by the paper
broker. Types come from the source (Yahoo's `^` symbols, a CSV type column, the sample's
benchmark) unless `universe.instrument_types` says otherwise, and ingest records them in
`instruments`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bentley import inputs
from bentley.config import Config, load_config
from bentley.features import compute_features
from bentley.ingest import ingest, instrument_rows, instruments_sentence
from bentley.lake import Lake
from bentley.models import optimize
from bentley.models.prediction import model_frame
from bentley.sources import FetchRequest
from bentley.sources.base import MarketSource, SourceError, default_instrument_type, tradable_only
from bentley.sources.sample import SampleMarketSource
from bentley.trading import broker
from bentley.trading import strategy as strategy_lib
from bentley.trading.limits import Limits
from bentley.warehouse import Warehouse

BENCHMARK = "BBIX"
STOCKS = ["MEDX", "NOVA", "QBIT"]
LOGICAL_DATE = dt.date(2024, 12, 31)
CONFIG = load_config()
TRADE = CONFIG.trade.model_copy(update={"entry_threshold": -1.0})  # every tradable name clears it


def _sample_prices() -> pd.DataFrame:
    """A year of the sample's three stocks and benchmark, plus SPX: an index that is not the benchmark."""
    source = SampleMarketSource(seed=42, n_tickers=3, epoch=dt.date(2000, 1, 3), benchmark=BENCHMARK)
    request = FetchRequest(dt.date(2024, 1, 2), LOGICAL_DATE, (*STOCKS, BENCHMARK))
    prices = source.fetch("prices", request)
    spx = prices[prices["ticker"] == BENCHMARK].assign(ticker="SPX")
    for column in ("open", "high", "low", "close", "adj_close"):
        spx[column] = spx[column] * 3.16
    return pd.concat([prices, spx], ignore_index=True).sort_values(["ticker", "date"], ignore_index=True)


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    return _sample_prices()


def _params(*overrides: str) -> Config:
    return load_config(
        "default", [f"universe.tickers=[{', '.join([*STOCKS, 'SPX'])}]", f"universe.benchmark={BENCHMARK}", *overrides]
    )


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    store = Warehouse(f"sqlite:///{tmp_path / 'warehouse.db'}")
    yield store
    store.dispose()


def _record(warehouse: Warehouse, types: dict[str, str]) -> None:
    warehouse.upsert(
        "instruments",
        pd.DataFrame(
            {
                "ticker": list(types),
                "instrument_type": list(types.values()),
                "source": "csv",
                "updated_at": pd.Timestamp("2025-01-02", tz="UTC"),
            }
        ),
    )


# --------------------------------------------------------------------------- where types come from


def test_caret_symbols_default_to_index_and_are_not_tradable() -> None:
    assert default_instrument_type("^GSPC") == "index"
    assert default_instrument_type("SPY") == "equity"

    class Plain(MarketSource):  # a source that knows nothing but the symbols
        name = "plain"
        datasets = ("prices",)

        def available_tickers(self) -> list[str]:
            return []

        def fetch(self, dataset: str, request: FetchRequest) -> pd.DataFrame:
            raise NotImplementedError

    assert Plain().instrument_types(["^GSPC", "AAPL"]) == {"^GSPC": "index", "AAPL": "equity"}
    assert tradable_only(["AAPL", "^GSPC", "SPY", "QQQ"], {"QQQ": "etf"}, benchmark="SPY") == ["AAPL", "QQQ"]


def test_the_params_override_wins_over_the_source_and_is_recorded_as_params() -> None:
    source = SampleMarketSource(seed=42, n_tickers=3, epoch=dt.date(2000, 1, 3), benchmark=BENCHMARK)
    now = dt.datetime(2025, 1, 2, tzinfo=dt.UTC)
    rows = instrument_rows([*STOCKS, BENCHMARK, "^VIX"], source, {"NOVA": "etf", BENCHMARK: "fund"}, now)
    assert rows.set_index("ticker")[["instrument_type", "source"]].to_dict("index") == {
        "MEDX": {"instrument_type": "equity", "source": "sample"},
        "NOVA": {"instrument_type": "etf", "source": "params"},
        "QBIT": {"instrument_type": "equity", "source": "sample"},
        BENCHMARK: {"instrument_type": "fund", "source": "params"},
        "^VIX": {"instrument_type": "equity", "source": "sample"},  # the sample source: all stocks
    }


def test_types_as_of_the_warehouse_with_the_params_on_top(warehouse: Warehouse) -> None:
    _record(warehouse, {"SPX": "index", "NOVA": "etf", BENCHMARK: "index"})
    assert inputs.instrument_types(warehouse, ["NOVA", "SPX", "QBIT", "^GSPC"]) == {
        "NOVA": "etf",
        "SPX": "index",
        "QBIT": "equity",
        "^GSPC": "index",  # unrecorded: the convention
    }
    assert inputs.instrument_types(warehouse, None) == {BENCHMARK: "index", "NOVA": "etf", "SPX": "index"}
    params = _params("universe.instrument_types={SPX: equity, MEDX: index}")
    assert inputs.tradable_tickers(warehouse, params) == ["NOVA", "QBIT", "SPX"]  # the params win; no benchmark
    assert inputs.tradable_tickers(warehouse, _params()) == STOCKS


def test_ingest_records_types_from_a_csv_type_column_and_the_params(tmp_path: Path, prices: pd.DataFrame) -> None:
    data = tmp_path / "data"
    data.mkdir()
    long = prices.assign(type=prices["ticker"].map({"SPX": "INDEX", BENCHMARK: "index", "NOVA": "Etf"}).fillna(""))
    long.assign(date=long["date"].dt.strftime("%Y-%m-%d")).to_csv(data / "prices.csv", index=False)
    params = _params(
        "sources.market.kind=csv",
        "sources.market.path=prices.csv",
        "history.years=1",
        "universe.instrument_types={QBIT: fund}",
    )
    warehouse = Warehouse(f"sqlite:///{tmp_path / 'warehouse.db'}")
    try:
        result = ingest(params, Lake(tmp_path / "lake"), warehouse, LOGICAL_DATE, "run-1", tmp_path)
        stored = warehouse.read("instruments").set_index("ticker")
        assert stored[["instrument_type", "source"]].to_dict("index") == {
            BENCHMARK: {"instrument_type": "index", "source": "csv"},
            "MEDX": {"instrument_type": "equity", "source": "csv"},  # a blank cell: the convention
            "NOVA": {"instrument_type": "etf", "source": "csv"},
            "QBIT": {"instrument_type": "fund", "source": "params"},
            "SPX": {"instrument_type": "index", "source": "csv"},
        }
        assert inputs.tradable_tickers(warehouse, params) == ["MEDX", "NOVA", "QBIT"]
        sentence = instruments_sentence(result.instruments, BENCHMARK)
        assert sentence.startswith("3 of 5 tickers may be traded (1 equity, 1 etf, 1 fund).")
        assert "rows: SPX, BBIX (the benchmark);" in sentence and "universe.instrument_types: QBIT" in sentence

        long.loc[long["ticker"] == "SPX", "type"] = "bond"
        long.assign(date=long["date"].dt.strftime("%Y-%m-%d")).to_csv(data / "prices.csv", index=False)
        with pytest.raises(SourceError, match=r"prices\.csv: column 'type', line \d+, ticker 'SPX': 'bond' is not"):
            ingest(params, Lake(tmp_path / "lake"), warehouse, LOGICAL_DATE, "run-2", tmp_path)
    finally:
        warehouse.dispose()


# --------------------------------------------------------------------------- an index is never traded


def test_an_index_is_never_a_model_row(prices: pd.DataFrame) -> None:
    features = compute_features(prices, CONFIG.features)
    sentiment = pd.DataFrame(
        columns=["ticker", "date", "mean_compound", "positive_share", "negative_share", "n_headlines"]
    )
    frame = model_frame(features, prices, sentiment, horizon=5, exclude=[BENCHMARK], tradable=["NOVA", "QBIT"])
    assert sorted(frame["ticker"].unique()) == ["NOVA", "QBIT"]
    caret = features.assign(ticker=features["ticker"].replace({"SPX": "^SPX"}))
    by_convention = model_frame(
        caret, prices.replace({"ticker": {"SPX": "^SPX"}}), sentiment, horizon=5, exclude=[BENCHMARK]
    )
    assert sorted(by_convention["ticker"].unique()) == STOCKS  # ^SPX is an index without being told


def test_an_index_is_never_in_the_target_weights(prices: pd.DataFrame) -> None:
    returns = prices.pivot(index="date", columns="ticker", values="adj_close").pct_change().iloc[1:]
    # the champion even predicts the index, and confidently
    proba = pd.Series({"MEDX": 0.55, "NOVA": 0.6, "QBIT": 0.52, "SPX": 0.95, BENCHMARK: 0.9})
    universe, excluded = optimize.optimization_universe(returns, proba, 126, tradable=STOCKS)
    assert list(universe.columns) == STOCKS
    assert excluded.set_index("ticker")["reason"].to_dict() == {
        BENCHMARK: optimize.NOT_TRADABLE,
        "SPX": optimize.NOT_TRADABLE,
    }
    expected = optimize.expected_returns_from_probabilities(proba, universe, 5)
    cov = optimize.shrunk_covariance(universe)
    constraints = optimize.Constraints(long_only=True, max_weight=0.6, min_names=2, risk_free_rate=0.0)
    result = optimize.optimize_portfolio(expected, cov, constraints)
    allocation, _ = optimize.discrete_allocation(result.weights, prices.groupby("ticker")["close"].last(), 100_000.0)
    table = optimize.target_weights_table(result, expected, allocation)
    assert set(table["ticker"]) == set(STOCKS)


def test_an_index_is_never_scored_held_or_ordered(tmp_path: Path, prices: pd.DataFrame) -> None:
    warehouse = Warehouse(f"sqlite:///{tmp_path / 'warehouse.db'}")
    try:
        warehouse.upsert("prices", prices)
        _record(warehouse, {"SPX": "index", BENCHMARK: "index"})
        tradable = inputs.tradable_tickers(warehouse, _params())
        assert tradable == STOCKS
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
            tradable=tradable,
        )
        assert list(strategy.tickers) == STOCKS
        assert "SPX" not in strategy.backtest_targets().columns
        sessions = strategy.sessions
        optimizer = pd.Series({"MEDX": 0.25, "NOVA": 0.25, "QBIT": 0.25, "SPX": 0.25})  # a stale target naming it
        for day in sessions[-3:]:
            target = strategy.live_target(optimizer, day)
            assert "SPX" not in target.index
            decide = strategy_lib.LimitedTarget(target, Limits.from_params(TRADE.limits))
            broker.run_paper_day(
                warehouse,
                decide,
                portfolio="paper",
                as_of=day,
                initial_cash=100_000.0,
                costs=TRADE.costs,
                execution=TRADE.execution,
                run_id="test",
            )
        orders = warehouse.read("orders")
        assert len(orders) > 0 and set(orders["ticker"]) <= set(STOCKS)
        assert set(warehouse.read("positions")["ticker"]) <= set(STOCKS)
        assert "SPX" not in set(strategy.today(target, decide, sessions[-1])["ticker"])
    finally:
        warehouse.dispose()


def test_the_broker_refuses_to_buy_an_index_even_when_asked(warehouse: Warehouse, prices: pd.DataFrame) -> None:
    warehouse.upsert("prices", prices)
    _record(warehouse, {"SPX": "index"})
    day = pd.Timestamp(LOGICAL_DATE)
    with pytest.raises(
        ValueError,
        match=r"portfolio 'paper' on 2024-12-31: the target would buy SPX \(index\), "
        r"which is never held or ordered",
    ):
        broker.run_paper_day(
            warehouse,
            pd.Series({"NOVA": 0.5, "SPX": 0.5}),
            portfolio="paper",
            as_of=day,
            initial_cash=100_000.0,
            costs=TRADE.costs,
            execution=TRADE.execution,
            run_id="test",
        )
    assert warehouse.read("orders").empty  # nothing was written
    booked = broker.run_paper_day(
        warehouse,
        pd.Series({"NOVA": 0.5}),
        portfolio="paper",
        as_of=day,
        initial_cash=100_000.0,
        costs=TRADE.costs,
        execution=TRADE.execution,
        run_id="test",
    )
    assert booked.orders_new["ticker"].tolist() == ["NOVA"]
    assert np.isclose(booked.orders_new["target_weight"].iloc[0], 0.5)


def test_the_equal_weight_risk_portfolio_holds_no_index() -> None:
    """The risk stage's equal-weighted portfolio averages the tradable names only."""
    from bentley.analytics import risk

    days = pd.bdate_range("2024-01-02", periods=4)
    returns = pd.DataFrame(
        {
            "NOVA": [0.01, 0.02, -0.01, 0.0],
            "QBIT": [0.03, 0.0, 0.01, 0.02],
            "SPX": [0.5, 0.5, 0.5, 0.5],
            "BBIX": [0.0, 0.01, 0.0, 0.0],
        },
        index=days,
    )
    no_holdings = pd.DataFrame(columns=["account", "ticker", "quantity", "cost_basis"])
    out, _ = risk.with_portfolios(returns, no_holdings, pd.DataFrame(), "BBIX", tradable={"NOVA", "QBIT"})
    expected = returns[["NOVA", "QBIT"]].mean(axis=1)
    np.testing.assert_allclose(out[risk.EQUAL_SCOPE].to_numpy(), expected.to_numpy(), rtol=0, atol=1e-15)
