"""The backtest's audit tables: from backtest_positions and backtest_equity alone, SQL rebuilds
the published figures (net returns, equity, annual return, Sharpe, turnover) of the signal and
the benchmark to 1e-10; the rows kept are exactly the non-zero ones; a store replaces a run's
rows; the sweep's best is run again and its rows match the sweep table's figures."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bentley.config import Costs, MinObservations, load_config
from bentley.features import compute_features
from bentley.sources import FetchRequest
from bentley.sources.sample import SampleMarketSource
from bentley.trading import audit
from bentley.trading import backtest as bt
from bentley.trading import strategy as strategy_lib
from bentley.trading.backtest import BacktestResult, Market, run_backtest
from bentley.trading.limits import Limits
from bentley.warehouse import Warehouse

RF_ANNUAL = 0.03
CAPITAL = 50_000.0
MINIMUMS = MinObservations(annualized=63, var=63, estimate=63, drawdown=2)
KWARGS = {
    "execution": "next_open",
    "costs": Costs(commission_bps=1.0, slippage_bps=5.0, impact_coefficient=0.1),
    # tight enough that the turnover and position limits bind: the decision is not the target
    "limits": Limits(max_position_weight=0.3, max_gross_exposure=1.0, max_daily_turnover=0.4, daily_loss_limit=0.02),
    "risk_free_rate": RF_ANNUAL,
    "capital": CAPITAL,
}


def market_and_targets(n: int = 200, seed: int = 11) -> tuple[Market, pd.DataFrame, pd.DataFrame]:
    """Four tickers, one of them never wanted (it must leave no row) and one without an open
    print on a few sessions (it cannot trade there: before == after while its target moves)."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2023-01-02", periods=n, name="date")
    names = pd.Index(["AAA", "BBB", "CCC", "ZZZ"], name="ticker")
    close = 40 * np.exp(np.cumsum(rng.normal(0.0004, 0.018, (n, 4)), axis=0))
    opened = close * np.exp(rng.normal(0, 0.008, (n, 4)))
    opened[[30, 31, 90], 1] = np.nan  # BBB
    volume = rng.uniform(2e4, 2e5, (n, 4))
    market = Market(
        open=pd.DataFrame(opened, index=dates, columns=names),
        close=pd.DataFrame(close, index=dates, columns=names),
        dollar_volume=pd.DataFrame(close * volume, index=dates, columns=names),
    )
    scores = pd.DataFrame(rng.uniform(-1, 1, (n, 4)), index=dates, columns=names)
    targets = (scores.clip(lower=0) * 0.8).where(scores > 0.2, 0.0)
    targets["ZZZ"] = 0.0
    return market, targets, scores


Backtest = tuple[Market, pd.DataFrame, pd.DataFrame, BacktestResult, pd.Series]


@pytest.fixture(scope="module")
def backtest() -> Backtest:
    market, targets, scores = market_and_targets()
    result = run_backtest(targets, market, **KWARGS)
    benchmark = market.returns.mean(axis=1).rename("BBIX")
    benchmark.iloc[[40, 41]] = np.nan  # sessions without a benchmark print: gaps in its metrics
    return market, targets, scores, result, benchmark


def stored(tmp_path: Path, backtest: Backtest, run_id: str = "r1") -> Warehouse:
    _, targets, scores, result, benchmark = backtest
    bench = bt.benchmark_result(result, benchmark)
    rows = audit.Audit(
        positions=pd.concat(
            [
                bt.position_rows(result, targets, scores, run_id, "signal"),
                bt.position_rows(bench, bench.weights, None, run_id, "benchmark"),
            ],
            ignore_index=True,
        ),
        equity=pd.concat(
            [bt.equity_rows(result, run_id, "signal"), bt.equity_rows(bench, run_id, "benchmark")], ignore_index=True
        ),
    )
    warehouse = Warehouse(f"sqlite:///{tmp_path / 'warehouse.db'}")
    audit.store(warehouse, run_id, rows)
    return warehouse


def sql(warehouse: Warehouse, query: str, **params: object) -> pd.DataFrame:
    with warehouse.engine.connect() as conn:
        return pd.read_sql(query, conn.connection.driver_connection, params=params)


# --------------------------------------------------------------------------------------------
# SQL rebuilds the published figures


@pytest.mark.parametrize("strategy", ["signal", "benchmark"])
def test_sql_rebuilds_returns_equity_annual_return_sharpe_and_turnover(tmp_path, backtest, strategy: str) -> None:
    _, _, _, result, benchmark = backtest
    published = bt.backtest_metrics(result, benchmark, RF_ANNUAL, "r1", "signal", minimums=MINIMUMS, garch=False)
    figure = published[published["strategy"] == strategy].set_index("metric")
    reference = result if strategy == "signal" else bt.benchmark_result(result, benchmark)
    warehouse = stored(tmp_path, backtest)

    curve = sql(
        warehouse,
        """
        SELECT date, net_return, equity, turnover,
               equity / LAG(equity) OVER (ORDER BY date) - 1 AS equity_return,
               (SELECT equity FROM backtest_equity WHERE run_id = :run AND strategy = :strategy ORDER BY date LIMIT 1)
                 AS capital
        FROM backtest_equity WHERE run_id = :run AND strategy = :strategy ORDER BY date""",
        run="r1",
        strategy=strategy,
    )
    net = curve["net_return"].iloc[1:].to_numpy()
    np.testing.assert_allclose(net, reference.returns.to_numpy(), rtol=0, atol=1e-10)
    # equity = capital x Π(1 + net), a missing return being a flat day
    rebuilt = curve["capital"].iloc[0] * np.cumprod(np.concatenate([[1.0], 1.0 + np.nan_to_num(net)]))
    np.testing.assert_allclose(rebuilt, reference.equity.to_numpy(), rtol=1e-10, atol=0)
    np.testing.assert_allclose(curve["equity"], reference.equity.to_numpy(), rtol=1e-10, atol=0)
    observed = curve["net_return"].notna()
    np.testing.assert_allclose(curve.loc[observed, "equity_return"], curve.loc[observed, "net_return"], atol=1e-12)

    # Sharpe: mean / std (ddof=1) of the excess returns, annualized, in SQL aggregates
    rf = (1 + RF_ANNUAL) ** (1 / 252) - 1
    moments = sql(
        warehouse,
        """
        SELECT COUNT(net_return) AS n, SUM(net_return - :rf) AS s, SUM((net_return - :rf) * (net_return - :rf)) AS ss,
               MIN(CASE WHEN net_return IS NOT NULL THEN date END) AS first_return,
               MAX(CASE WHEN net_return IS NOT NULL THEN date END) AS last_return
        FROM backtest_equity WHERE run_id = :run AND strategy = :strategy""",
        run="r1",
        strategy=strategy,
        rf=rf,
    ).iloc[0]
    n, s, ss = int(moments["n"]), moments["s"], moments["ss"]
    sharpe = (s / n) / math.sqrt((ss - s * s / n) / (n - 1)) * math.sqrt(252)
    assert n == figure.loc["sharpe_ratio", "n_obs"]
    assert sharpe == pytest.approx(figure.loc["sharpe_ratio", "value"], rel=0, abs=1e-10)
    # annual return: CAGR over the sessions from the first to the last return, gaps included (risk.py)
    sessions = int(
        sql(
            warehouse,
            """
        SELECT COUNT(*) AS n FROM backtest_equity WHERE run_id = :run AND strategy = :strategy
          AND date BETWEEN :first AND :last""",
            run="r1",
            strategy=strategy,
            first=moments["first_return"],
            last=moments["last_return"],
        )["n"].iloc[0]
    )
    growth = curve["equity"].iloc[-1] / curve["equity"].iloc[0]
    assert growth ** (252 / sessions) - 1 == pytest.approx(figure.loc["annual_return", "value"], rel=0, abs=1e-10)
    assert growth - 1 == pytest.approx(figure.loc["cumulative_return", "value"], rel=0, abs=1e-10)

    # turnover: Σ|weight_after − weight_before| per session over the stored position rows
    traded = sql(
        warehouse,
        """
        SELECT date, SUM(ABS(weight_after - weight_before)) AS turnover, SUM(ABS(weight)) AS gross
        FROM backtest_positions WHERE run_id = :run AND strategy = :strategy GROUP BY date""",
        run="r1",
        strategy=strategy,
    )
    by_date = traded.assign(date=pd.to_datetime(traded["date"])).set_index("date")
    turnover = by_date["turnover"].reindex(reference.turnover.index, fill_value=0.0)
    np.testing.assert_allclose(turnover, reference.turnover, rtol=0, atol=1e-10)
    np.testing.assert_allclose(curve["turnover"].iloc[1:], reference.turnover, rtol=0, atol=1e-10)
    mean_turnover = sql(
        warehouse,
        "SELECT AVG(turnover) AS t FROM backtest_equity WHERE run_id = :run AND strategy = :s",
        run="r1",
        s=strategy,
    )["t"].iloc[0]
    assert mean_turnover == pytest.approx(reference.turnover.mean(), rel=0, abs=1e-10)
    gross = by_date["gross"].reindex(reference.exposure.index, fill_value=0.0)
    np.testing.assert_allclose(gross, reference.exposure["gross"], rtol=0, atol=1e-10)
    warehouse.dispose()


def test_net_return_is_gross_return_compounded_with_the_cost(tmp_path, backtest) -> None:
    warehouse = stored(tmp_path, backtest)
    rows = warehouse.read("backtest_equity", where={"run_id": "r1", "strategy": "signal"}).iloc[1:]
    gross, cost, net = (rows[c].to_numpy() for c in ("gross_return", "cost", "net_return"))
    assert (cost > 0).sum() > 100, "the test must pay costs to prove anything"
    np.testing.assert_allclose(1 + net, (1 + gross) * (1 - cost), rtol=0, atol=1e-12)
    # ... which is not gross − cost: the cost is paid on the equity grown (or shrunk) by the gross move
    assert np.abs(net - (gross - cost)).max() > 1e-7
    first = warehouse.read("backtest_equity", where={"run_id": "r1", "strategy": "signal"}).iloc[0]
    assert math.isnan(first["net_return"]) and math.isnan(first["turnover"]) and first["equity"] == CAPITAL
    warehouse.dispose()


# --------------------------------------------------------------------------------------------
# Which rows are kept, and what they hold


def test_position_rows_are_the_non_zero_pairs_with_the_backtests_values(backtest) -> None:
    _, targets, scores, result, _ = backtest
    rows = bt.position_rows(result, targets, scores, "r1", "signal")
    assert list(rows.columns) == list(bt.POSITION_COLUMNS)
    assert "ZZZ" not in set(rows["ticker"]), "a ticker never wanted, held or traded has no row"
    grid = {
        name: frame.stack()
        for name, frame in (
            ("target_weight", targets),
            ("weight_before", result.weights_before),
            ("weight_after", result.weights_after),
            ("weight", result.weights),
            ("score", scores),
        )
    }
    full = pd.DataFrame(grid)
    traded = result.trades.set_index(["date", "ticker"])["traded_value"]
    full["traded_value"] = traded.reindex(full.index, fill_value=0.0)
    kept = (full.drop(columns="score") != 0).any(axis=1)
    expected = full[kept]
    indexed = rows.set_index(["date", "ticker"])
    assert indexed.index.equals(expected.index)
    pd.testing.assert_frame_equal(indexed[expected.columns], expected, check_names=False)
    assert (full[~kept].drop(columns="score") == 0).all().all()
    day = result.weights.index[90]  # BBB has no open print: the target of the day before waits
    blocked = indexed.loc[(day, "BBB")]
    assert blocked["weight_before"] == blocked["weight_after"] and blocked["traded_value"] == 0
    assert abs(indexed.loc[(result.weights.index[89], "BBB"), "target_weight"] - blocked["weight_after"]) > 0.01


def test_the_benchmark_is_held_from_the_first_close_without_trades(backtest) -> None:
    _, _, _, result, benchmark = backtest
    bench = bt.benchmark_result(result, benchmark)
    rows = bt.position_rows(bench, bench.weights, None, "r1", "benchmark")
    assert len(rows) == len(result.equity) and set(rows["ticker"]) == {"BBIX"}
    assert (rows[["target_weight", "weight_before", "weight_after", "weight"]] == 1.0).all().all()
    assert (rows["traded_value"] == 0).all() and rows["score"].isna().all()
    equity = bt.equity_rows(bench, "r1", "benchmark")
    assert equity["net_return"].isna().sum() == 3, "the first session and the two without a print"
    assert equity["equity"].iloc[42] == equity["equity"].iloc[41] == equity["equity"].iloc[40], "a gap is flat"
    with pytest.raises(ValueError, match="named after the benchmark"):
        bt.benchmark_result(result, benchmark.rename(None))


# --------------------------------------------------------------------------------------------
# Storing


def test_a_store_replaces_the_runs_rows_and_leaves_other_runs_alone(tmp_path, backtest) -> None:
    market, targets, scores, result, benchmark = backtest
    warehouse = stored(tmp_path, backtest)
    other = bt.equity_rows(result, "r0", "signal")
    warehouse.upsert("backtest_equity", other)
    before = warehouse.count("backtest_positions"), warehouse.count("backtest_equity")
    shorter = run_backtest(targets.iloc[:120], market, **KWARGS)
    rows = audit.Audit(
        positions=bt.position_rows(shorter, targets, scores, "r1", "signal"),
        equity=bt.equity_rows(shorter, "r1", "signal"),
    )
    for _ in range(2):  # a rerun writes the same rows again
        audit.store(warehouse, "r1", rows)
        equity = warehouse.read("backtest_equity", where={"run_id": "r1"})
        assert len(equity) == 120 and set(equity["strategy"]) == {"signal"}, "no row of the earlier run stays"
        positions = warehouse.read("backtest_positions", where={"run_id": "r1"})
        assert len(positions) == len(rows.positions) and positions["date"].max() == targets.index[119]
    assert len(warehouse.read("backtest_equity", where={"run_id": "r0"})) == len(other)
    assert before[0] > len(rows.positions)
    with pytest.raises(ValueError, match="another run"):
        audit.store(warehouse, "r2", rows)
    warehouse.dispose()


# --------------------------------------------------------------------------------------------
# The trade stage's call: signal, benchmark and the sweep's best


def test_backtest_audit_stores_the_sweeps_best_as_the_sweep_scored_it() -> None:
    config = load_config()
    trade = config.trade
    source = SampleMarketSource(seed=5, n_tickers=3, epoch=dt.date(2000, 1, 3), benchmark="BBIX")
    universe = tuple(dict.fromkeys([*source.available_tickers(), "BBIX"]))
    prices = source.fetch("prices", FetchRequest(dt.date(2023, 1, 2), dt.date(2024, 6, 28), universe))
    sessions = pd.DatetimeIndex(sorted(pd.to_datetime(prices["date"].unique())))
    rng = np.random.default_rng(1)
    tickers = sorted(set(prices["ticker"]) - {"BBIX"})
    history = pd.DataFrame(
        [(t, d, rng.uniform(0.3, 0.7)) for d in sessions[150:] for t in tickers], columns=["ticker", "date", "proba_up"]
    )  # a model component that moves the scores
    strategy = strategy_lib.build_strategy(
        prices,
        compute_features(prices, config.features),
        pd.DataFrame(columns=["ticker", "date", "mean_compound"]),
        history,
        trade=trade,
        feature_settings=config.features,
        technical_settings=config.technical,
        benchmark="BBIX",
    )
    start = strategy_lib.backtest_start(history, strategy.sessions)
    market = Market.from_prices(prices[prices["ticker"] != "BBIX"])
    run = {
        "execution": trade.execution,
        "costs": trade.costs,
        "limits": Limits.from_params(trade.limits),
        "risk_free_rate": RF_ANNUAL,
        "capital": trade.capital,
    }
    targets = strategy.backtest_targets().loc[start:]
    result = run_backtest(targets, market, **run)
    benchmark = strategy_lib.benchmark_returns(prices, "BBIX", result.returns.index)
    table = bt.sweep(strategy.sweep_builder(start), trade.sweep.model_dump(), market, **run)

    rows = audit.backtest_audit("r1", strategy, targets, result, benchmark, table, market, **run)

    assert set(rows.equity["strategy"]) == set(rows.positions["strategy"]) == {"signal", "benchmark", "sweep:best"}
    assert set(rows.positions["run_id"]) == set(rows.equity["run_id"]) == {"r1"}
    best = bt.best_configuration(table)
    equity = rows.equity[rows.equity["strategy"] == "sweep:best"]
    excess = equity["net_return"].dropna() - ((1 + RF_ANNUAL) ** (1 / 252) - 1)
    assert len(excess) == best["n_obs"]
    sharpe = excess.mean() / excess.std(ddof=1) * math.sqrt(252)
    assert sharpe == pytest.approx(best["sharpe_ratio"], rel=0, abs=1e-10)
    assert equity["turnover"].mean() == pytest.approx(best["turnover"], rel=0, abs=1e-12)
    # its scores are the ones its targets were gated on: held iff score ≥ its entry threshold
    held = rows.positions[rows.positions["strategy"] == "sweep:best"]
    assert ((held["target_weight"] > 0) == (held["score"] >= best["entry_threshold"])).all()
    assert (held["target_weight"] == 0).any() and (held["target_weight"] > 0).any()
    signal = rows.positions[rows.positions["strategy"] == "signal"].set_index(["date", "ticker"])
    np.testing.assert_array_equal(signal["score"], strategy.scores.stack().reindex(signal.index))
