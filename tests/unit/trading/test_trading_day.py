"""The trade stage's two calls (bentley.trading.day) against a warehouse the upstream stages filled."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from bentley.config import load_config
from bentley.features import compute_features
from bentley.sources import FetchRequest
from bentley.sources.sample import SampleMarketSource
from bentley.stage import StageParams
from bentley.trading import backtest
from bentley.trading import day as day_lib
from bentley.warehouse import Warehouse

CONFIG = load_config("ci")
BENCHMARK = CONFIG.universe.benchmark
RUN = "run-1"
LOGICAL = dt.date(2024, 12, 31)
SATURDAY = dt.date(2024, 12, 28)


def _params(initial_cash: float | None = 100_000.0, **trade: object) -> StageParams:
    """The trade stage's sections, as `StageContext.params` holds them."""
    paper = CONFIG.trade.paper.model_copy(update={"initial_cash": initial_cash})
    settings = CONFIG.trade.model_copy(update={"paper": paper, **trade})
    names = ("workflow", "universe", "history", "features", "technical", "ml", "risk", "warehouse")
    return StageParams(trade=settings, **{name: getattr(CONFIG, name) for name in names})


@pytest.fixture
def warehouse(tmp_path):
    """Instruments, prices, features and this run's target weights: what ingest, etl, features
    and optimize leave."""
    source = SampleMarketSource(seed=7, n_tickers=4, epoch=dt.date(2000, 1, 3), benchmark=BENCHMARK)
    request = FetchRequest(dt.date(2023, 6, 1), LOGICAL, (*source.available_tickers(), BENCHMARK))
    prices = source.fetch("prices", request)
    store = Warehouse(f"sqlite:///{tmp_path / 'warehouse.db'}")
    store.upsert("prices", prices)
    store.upsert_extending("features", compute_features(prices, CONFIG.features))
    tradable = sorted(set(prices["ticker"]) - {BENCHMARK})
    types = {**dict.fromkeys(tradable, "equity"), BENCHMARK: "index"}
    store.upsert("instruments", pd.DataFrame({"ticker": list(types), "instrument_type": list(types.values())}))
    weights = pd.DataFrame({"run_id": RUN, "ticker": tradable, "weight": 1.0 / len(tradable), "method": "hrp"})
    store.upsert("target_weights", weights)
    yield store
    store.dispose()


def _predictions(warehouse: Warehouse, version: str, proba: float, *, start: dt.date, kind: str) -> None:
    prices = warehouse.read("prices", start=start, end=LOGICAL)
    rows = prices.loc[prices["ticker"] != BENCHMARK, ["ticker", "date"]].assign(
        run_id=f"train-{version}",
        proba_up=proba,
        predicted_up=proba > 0.5,
        horizon=5,
        model_name="champion",
        model_version=version,
        predicted_at=pd.Timestamp(f"2024-12-31 0{version}:00", tz="UTC"),
        kind=kind,
    )
    warehouse.upsert("predictions", rows)


def test_the_day_books_the_paper_book_and_writes_what_the_report_shows(warehouse):
    today = day_lib.run_trading_day(warehouse, _params(), LOGICAL, RUN)

    assert today.session == pd.Timestamp(LOGICAL)
    stored = warehouse.read("signals", where={"run_id": RUN}).drop(columns=["run_id"])
    assert sorted(stored["ticker"]) == sorted(today.signals["ticker"])
    assert BENCHMARK not in set(stored["ticker"]), "the benchmark is never scored or held"
    pd.testing.assert_series_equal(
        stored.set_index("ticker")["weight"], today.signals.set_index("ticker")["weight"], check_names=False
    )
    booked = warehouse.read("portfolio_values", where={"portfolio": "paper"})
    assert booked["date"].tolist() == [pd.Timestamp(LOGICAL)]
    assert today.paper.equity == pytest.approx(100_000.0), "the first day has no fills, so nothing moved yet"
    assert len(today.orders) == today.paper.n_orders > 0
    assert set(today.orders["side"]) == {"buy"}
    assert today.metrics["orders"] == today.paper.n_orders
    assert today.metrics["names_held"] == (today.signals["weight"] > 0).sum()
    assert today.ledger_sentence.startswith(today.book.reason)
    assert today.paper_chart() is None, "one booked day has no return to chart"


def test_without_a_champion_the_model_component_is_zero_and_the_report_says_so(warehouse):
    today = day_lib.run_trading_day(warehouse, _params(), LOGICAL, RUN)

    assert today.model_history.empty
    assert (today.signals["model"] == 0).all()
    assert "No champion has predicted yet" in today.signals_sentence


def test_the_latest_champion_version_drives_the_model_component(warehouse):
    _predictions(warehouse, "1", 0.1, start=dt.date(2024, 1, 2), kind="walk_forward")
    _predictions(warehouse, "2", 0.9, start=dt.date(2024, 7, 1), kind="walk_forward")
    _predictions(warehouse, "2", 0.9, start=LOGICAL, kind="live")
    today = day_lib.run_trading_day(warehouse, _params(), LOGICAL, RUN)

    assert set(today.model_history["model_version"]) == {"2"}, "an older version's rows are another model"
    share = CONFIG.trade.signal_weights.model / sum(CONFIG.trade.signal_weights.model_dump().values())
    assert today.signals["model"].to_numpy() == pytest.approx(share * (2 * 0.9 - 1))
    assert "No champion" not in today.signals_sentence


def test_a_weekend_logical_date_books_the_session_before(warehouse):
    today = day_lib.run_trading_day(warehouse, _params(), SATURDAY, RUN)

    assert today.session == pd.Timestamp("2024-12-27")
    assert warehouse.read("signals", where={"run_id": RUN})["date"].unique().tolist() == [today.session]


def test_without_fixed_paper_cash_the_book_starts_with_the_budgets_investable_cash(warehouse):
    with pytest.raises(ValueError, match="run the budget stage first"):
        day_lib.run_trading_day(warehouse, _params(initial_cash=None), LOGICAL, RUN)
    warehouse.upsert("investable_cash", pd.DataFrame({"as_of": [LOGICAL], "investable_cash": [25_000.0]}))

    today = day_lib.run_trading_day(warehouse, _params(initial_cash=None), LOGICAL, RUN)

    assert today.paper.equity == pytest.approx(25_000.0)


def test_a_day_before_the_books_last_session_goes_to_its_own_book(warehouse):
    day_lib.run_trading_day(warehouse, _params(), LOGICAL, RUN)
    earlier = day_lib.run_trading_day(warehouse, _params(), dt.date(2024, 12, 30), RUN)

    assert earlier.book.name == "paper@2024-12-30"
    assert warehouse.read("portfolio_values", where={"portfolio": "paper"})["date"].tolist() == [pd.Timestamp(LOGICAL)]


def test_the_paper_book_gets_figures_and_a_chart_once_it_has_returns(warehouse):
    sessions = warehouse.read("prices", start=dt.date(2024, 12, 20), end=LOGICAL)["date"].drop_duplicates()
    for session in sorted(sessions):
        today = day_lib.run_trading_day(warehouse, _params(), session.date(), RUN)

    scope = "portfolio:paper"
    stored = warehouse.read("risk_metrics", where={"run_id": RUN, "scope": scope})
    assert len(stored) == len(today.paper_performance) > 0
    assert today.paper_returns.size == len(sessions) - 1
    assert today.paper_chart() is not None


def test_the_backtest_and_sweep_are_stored_with_the_figures_the_report_shows(warehouse):
    grid = CONFIG.trade.sweep.model_copy(update={"entry_threshold": [0.0, 0.1], "model_weight": [0.0, 0.4]})
    params = _params(sweep=grid)
    _predictions(warehouse, "1", 0.6, start=dt.date(2024, 3, 1), kind="walk_forward")
    _predictions(warehouse, "1", 0.6, start=LOGICAL, kind="live")
    today = day_lib.run_trading_day(warehouse, params, LOGICAL, RUN)

    study = day_lib.backtest_signal(warehouse, params, today, RUN)

    assert study.start == pd.Timestamp("2024-03-01"), "the backtest starts at the first out-of-sample probability"
    assert study.result.returns.index.min() > study.start
    metrics = warehouse.read("backtest_metrics", where={"run_id": RUN})
    assert {backtest.SIGNAL_STRATEGY, backtest.BENCHMARK_STRATEGY} <= set(metrics["strategy"])
    assert len(warehouse.read("backtest_sweep", where={"run_id": RUN})) == len(study.sweep) == 4
    assert len(warehouse.read("backtest_equity", where={"run_id": RUN})) > 0
    assert list(study.headline.index) == list(day_lib.HEADLINE_METRICS)
    assert set(study.headline.columns) == {backtest.SIGNAL_STRATEGY, backtest.BENCHMARK_STRATEGY}
    assert set(study.figures) >= {"backtest_sharpe_ratio", "sweep_configurations", "sweep_best_sharpe"}
    assert study.figures["sweep_configurations"] == 4
    assert set(study.notes) == {"drawdown", "monthly", "exposure", "costs"}
