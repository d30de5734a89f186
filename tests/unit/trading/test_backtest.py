"""Backtest: hand-checked equity paths for both executions, no same-day execution, no
lookahead, costs, cash interest, every risk limit recorded, risk-stage metrics (and empyrical),
the sweep with its PSR/DSR and verdict, what a too-short backtest publishes, and the tearsheet
helpers."""

from __future__ import annotations

import math

import empyrical as ep
import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from bentley.analytics import risk
from bentley.config import Costs, MinObservations
from bentley.trading import backtest as bt
from bentley.trading.backtest import BacktestResult, Market, run_backtest
from bentley.trading.limits import Limits

matplotlib.use("Agg")

# empyrical-reloaded aligns series with pd.concat and trips pandas 3's future-default notice
pytestmark = pytest.mark.filterwarnings("ignore:Sorting by default when concatenating")

RF_ANNUAL = 0.05
RF = (1 + RF_ANNUAL) ** (1 / 252) - 1
LOOSE = Limits(max_position_weight=1.0, max_gross_exposure=1.0, max_daily_turnover=10.0, daily_loss_limit=0.9)
FREE = Costs(commission_bps=0.0, slippage_bps=0.0, impact_coefficient=None)
MINIMUMS = MinObservations(annualized=63, var=63, estimate=63, drawdown=2)


def wide(values: np.ndarray | list[float], dates: pd.DatetimeIndex, tickers: list[str]) -> pd.DataFrame:
    array = np.asarray(values, dtype=np.float64).reshape(len(dates), len(tickers))
    return pd.DataFrame(array, index=dates, columns=pd.Index(tickers, name="ticker"))


def random_market(n: int = 60, tickers: int = 4, seed: int = 7) -> Market:
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2024-01-02", periods=n, name="date")
    names = [f"T{i}" for i in range(tickers)]
    close = 50 * np.exp(np.cumsum(rng.normal(0.0003, 0.02, (n, tickers)), axis=0))
    gap = np.exp(rng.normal(0, 0.01, (n, tickers)))
    volume = rng.uniform(1e5, 1e6, (n, tickers))
    return Market(
        open=wide(close * gap, dates, names),
        close=wide(close, dates, names),
        dollar_volume=wide(close * volume, dates, names),
    )


def random_targets(market: Market, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    weights = rng.uniform(0, 0.4, market.close.shape) * (rng.random(market.close.shape) < 0.8)
    return pd.DataFrame(weights, index=market.close.index, columns=market.close.columns)


def run(
    targets: pd.DataFrame,
    market: Market,
    *,
    execution: str = "next_close",
    costs: Costs = FREE,
    limits: Limits = LOOSE,
    capital: float = 10_000.0,
) -> BacktestResult:
    return run_backtest(
        targets, market, execution=execution, costs=costs, limits=limits, risk_free_rate=RF_ANNUAL, capital=capital
    )


@pytest.fixture(scope="module")
def one_asset() -> Market:
    dates = pd.bdate_range("2024-03-04", periods=6, name="date")
    close = [100.0, 101.0, 99.0, 102.0, 103.0, 100.0]
    opened = [99.0, 100.5, 100.0, 98.0, 104.0, 101.0]
    return Market(
        open=wide(opened, dates, ["A"]), close=wide(close, dates, ["A"]), dollar_volume=wide([1e6] * 6, dates, ["A"])
    )


# --------------------------------------------------------------------------------------------
# Hand-checked paths


def test_next_close_equity_path_by_hand(one_asset: Market) -> None:
    costs = Costs(commission_bps=1.0, slippage_bps=4.0, impact_coefficient=0.1)
    targets = one_asset.close * 0 + 1.0  # weight 1 decided at every close from day 0
    result = run(targets, one_asset, costs=costs)
    close = [100.0, 101.0, 99.0, 102.0, 103.0, 100.0]
    # day 1: cash earns the rf, then buys everything at the close: 5 bps + 0.1 x (value / 1e6)
    before_trade = 10_000.0 * (1 + RF)
    cost = 5e-4 + 0.1 * before_trade / 1e6
    entry = before_trade * (1 - cost)
    expected = [10_000.0, entry] + [entry * c / close[1] for c in close[2:]]
    np.testing.assert_allclose(result.equity.to_numpy(), expected, rtol=1e-13)
    np.testing.assert_allclose(result.costs.to_numpy(), [cost, 0, 0, 0, 0], atol=1e-16)
    np.testing.assert_allclose(result.turnover.to_numpy(), [1, 0, 0, 0, 0], atol=1e-15)
    assert result.gross_returns.iloc[0] == pytest.approx(RF, rel=1e-12)
    assert result.returns.index.equals(one_asset.close.index[1:])
    trade = result.trades.iloc[0]
    assert len(result.trades) == 1 and trade["date"] == one_asset.close.index[1]
    assert trade["traded_value"] == pytest.approx(before_trade, rel=1e-13)
    assert trade["cost"] == pytest.approx(before_trade * cost, rel=1e-12)
    np.testing.assert_allclose(result.weights["A"].to_numpy(), [0, 1, 1, 1, 1, 1])


def test_next_open_equity_path_by_hand(one_asset: Market) -> None:
    costs = Costs(commission_bps=2.0, slippage_bps=3.0, impact_coefficient=None)
    result = run(one_asset.close * 0 + 1.0, one_asset, execution="next_open", costs=costs)
    close = [100.0, 101.0, 99.0, 102.0, 103.0, 100.0]
    opened = [99.0, 100.5, 100.0, 98.0, 104.0, 101.0]
    # day 1: overnight in cash (rf), buy at the open paying 5 bps, then earn open -> close
    entry = 10_000.0 * (1 + RF) * (1 - 5e-4) * close[1] / opened[1]
    expected = [10_000.0, entry]
    for t in range(2, 6):  # overnight and intraday legs compound to close-to-close
        expected.append(expected[-1] * (opened[t] / close[t - 1]) * (close[t] / opened[t]))
    np.testing.assert_allclose(result.equity.to_numpy(), expected, rtol=1e-13)
    gross_day1 = (1 + RF) * close[1] / opened[1] - 1
    assert result.gross_returns.iloc[0] == pytest.approx(gross_day1, rel=1e-12)


def test_next_open_weights_drift_with_prices() -> None:
    dates = pd.bdate_range("2024-01-02", periods=3)
    names = ["A", "B"]
    opened = wide([10, 20, 10, 20, 10, 20], dates, names)
    close = wide([10, 20, 11, 19, 12, 18], dates, names)
    market = Market(open=opened, close=close, dollar_volume=close * 1e6)
    result = run(wide([0.5, 0.5] * 3, dates, names), market, execution="next_open")
    h = np.array([11 / 10 - 1, 19 / 20 - 1])  # intraday of day 1, after buying 50/50 at the open
    np.testing.assert_allclose(result.weights.iloc[1].to_numpy(), 0.5 * (1 + h) / (1 + 0.5 * h.sum()), rtol=1e-14)
    np.testing.assert_allclose(result.exposure["gross"].iloc[1], 1.0, rtol=1e-14)


def test_next_close_rebalances_the_drift() -> None:
    dates = pd.bdate_range("2024-01-02", periods=4)
    names = ["A", "B"]
    close = wide([10, 20, 10, 20, 11, 19, 12, 18], dates, names)
    market = Market(open=close, close=close, dollar_volume=close * 1e6)
    result = run(wide([0.5, 0.5] * 4, dates, names), market, execution="next_close")
    r = np.array([11 / 10 - 1, 19 / 20 - 1])  # session 2, held 50/50 from the close of session 1
    drifted = 0.5 * (1 + r) / (1 + 0.5 * r.sum())
    day2 = result.trades[result.trades["date"] == dates[2]]
    np.testing.assert_allclose(day2["weight_before"], drifted, rtol=1e-14)
    np.testing.assert_allclose(day2["weight_after"], 0.5)
    assert result.turnover.loc[dates[2]] == pytest.approx(np.abs(drifted - 0.5).sum(), rel=1e-12)
    assert result.returns.loc[dates[2]] == pytest.approx(0.5 * r.sum(), rel=1e-12)


# --------------------------------------------------------------------------------------------
# Timing


@pytest.mark.parametrize("execution", ["next_open", "next_close"])
def test_a_target_from_day_t_changes_nothing_before_t_plus_one(execution: str) -> None:
    market = random_market()
    day = 10
    targets = random_targets(market)
    targets.iloc[:day] = 0.0
    cash = run(targets * 0.0, market, execution=execution)
    result = run(targets, market, execution=execution)
    upto = market.close.index[day]
    pd.testing.assert_series_equal(result.returns.loc[:upto], cash.returns.loc[:upto])
    pd.testing.assert_frame_equal(result.weights.loc[:upto], cash.weights.loc[:upto])
    assert result.trades["date"].min() == market.close.index[day + 1]
    assert not result.weights.iloc[day + 1].equals(cash.weights.iloc[day + 1])  # day + 1 trades


@pytest.mark.parametrize("execution", ["next_open", "next_close"])
def test_no_lookahead_prices_after_t_change_nothing_up_to_t(execution: str) -> None:
    market = random_market(n=80)
    targets = random_targets(market)
    limits = Limits(max_position_weight=0.3, max_gross_exposure=0.9, max_daily_turnover=0.5, daily_loss_limit=0.01)
    costs = Costs(commission_bps=1.0, slippage_bps=5.0, impact_coefficient=0.1)
    cut = 40
    later = market.close.index > market.close.index[cut]
    rng = np.random.default_rng(1)

    def shocked(frame: pd.DataFrame) -> pd.DataFrame:
        return frame * np.where(later[:, None], rng.uniform(0.5, 2.0, frame.shape), 1.0)

    changed = Market(
        open=shocked(market.open), close=shocked(market.close), dollar_volume=shocked(market.dollar_volume)
    )
    a = run(targets, market, execution=execution, costs=costs, limits=limits)
    b = run(targets, changed, execution=execution, costs=costs, limits=limits)
    end = market.close.index[cut]
    assert not a.returns.equals(b.returns)
    pd.testing.assert_series_equal(a.returns.loc[:end], b.returns.loc[:end])
    pd.testing.assert_frame_equal(a.weights.loc[:end], b.weights.loc[:end])
    for table in ("trades", "limit_events"):
        left, right = getattr(a, table), getattr(b, table)
        pd.testing.assert_frame_equal(left[left["date"] <= end], right[right["date"] <= end])
    assert len(a.limit_events) > 0  # the limits were part of the path being compared


# --------------------------------------------------------------------------------------------
# Costs and cash


def test_zero_costs_gross_equals_net_and_identity_holds() -> None:
    market = random_market()
    free = run(random_targets(market), market)
    pd.testing.assert_series_equal(free.returns, free.gross_returns, check_names=False)
    np.testing.assert_allclose(free.equity.to_numpy(), free.gross_equity.to_numpy(), rtol=1e-13)
    assert bt.cost_drag(free) == pytest.approx(0.0, abs=1e-13)
    paid = run(
        random_targets(market), market, costs=Costs(commission_bps=1.0, slippage_bps=5.0, impact_coefficient=0.1)
    )
    np.testing.assert_allclose(1 + paid.returns, (1 + paid.gross_returns) * (1 - paid.costs), rtol=1e-13)
    assert paid.costs.sum() > 0 and bt.cost_drag(paid) > 0
    trades = paid.trades
    volume = market.dollar_volume.stack().reindex(pd.MultiIndex.from_frame(trades[["date", "ticker"]]))
    by_hand = 6e-4 * trades["traded_value"] + 0.1 * trades["traded_value"] ** 2 / volume.to_numpy()
    np.testing.assert_allclose(trades["cost"], by_hand, rtol=1e-12)
    at_trade = paid.equity.shift(1).loc[paid.costs.index] * (1 + paid.gross_returns)  # next_close
    per_session = trades.groupby("date")["cost"].sum()
    np.testing.assert_allclose(per_session, (paid.costs * at_trade).loc[per_session.index], rtol=1e-9)


def test_doubling_bps_doubles_the_cost_series() -> None:
    market = random_market()
    targets = random_targets(market)
    one = run(targets, market, costs=Costs(commission_bps=1.0, slippage_bps=2.0, impact_coefficient=None))
    two = run(targets, market, costs=Costs(commission_bps=2.0, slippage_bps=4.0, impact_coefficient=None))
    np.testing.assert_allclose(two.costs.to_numpy(), 2 * one.costs.to_numpy(), rtol=1e-12)
    pd.testing.assert_series_equal(one.turnover, two.turnover)


def test_impact_grows_with_traded_value_over_dollar_volume(one_asset: Market) -> None:
    costs = Costs(commission_bps=0.0, slippage_bps=0.0, impact_coefficient=0.1)
    targets = one_asset.close * 0 + 0.5

    def first_cost(market: Market, capital: float) -> float:
        return float(run(targets, market, costs=costs, capital=capital).costs.iloc[0])

    base = first_cost(one_asset, 10_000.0)
    value = 0.5 * 10_000.0 * (1 + RF)
    assert base == pytest.approx(0.1 * 0.5 * value / 1e6, rel=1e-12)  # coefficient x share x |dw|
    thin = Market(open=one_asset.open, close=one_asset.close, dollar_volume=one_asset.dollar_volume / 2)
    assert first_cost(thin, 10_000.0) == pytest.approx(2 * base, rel=1e-12)
    assert first_cost(one_asset, 20_000.0) == pytest.approx(2 * base, rel=1e-12)
    unknown = Market(open=one_asset.open, close=one_asset.close, dollar_volume=one_asset.dollar_volume * np.nan)
    assert first_cost(unknown, 10_000.0) == 0.0  # no dollar volume: no impact term


def test_all_cash_grows_at_the_per_period_rate() -> None:
    market = random_market(n=30)
    result = run(random_targets(market) * 0.0, market)
    np.testing.assert_allclose(result.equity.to_numpy(), 10_000.0 * (1 + RF) ** np.arange(30), rtol=1e-13)
    np.testing.assert_allclose(result.returns.to_numpy(), RF, rtol=1e-10)
    assert result.trades.empty and result.turnover.sum() == 0


def test_a_ticker_without_a_print_cannot_trade() -> None:
    market = random_market(n=10, tickers=2)
    close = market.close.copy()
    close.iloc[1:4, 1] = np.nan  # T1 halted on sessions 1-3
    halted = Market(open=market.open.where(close.notna()), close=close, dollar_volume=market.dollar_volume)
    targets = pd.DataFrame(0.4, index=close.index, columns=close.columns)
    result = run(targets, halted)
    assert (result.weights["T1"].iloc[:4] == 0).all()
    assert result.weights["T1"].iloc[4] == pytest.approx(0.4)
    assert np.isfinite(result.returns).all()


def test_targets_must_match_the_market() -> None:
    market = random_market(n=10)
    targets = random_targets(market)
    with pytest.raises(ValueError, match="without prices"):
        run(targets.rename(columns={"T0": "ZZZ"}), market)
    with pytest.raises(ValueError, match="skips market sessions"):
        run(targets.drop(index=targets.index[4]), market)
    with pytest.raises(ValueError, match="execution"):
        run(targets, market, execution="same_close")


def test_market_from_prices_adjusts_open_and_keeps_raw_dollar_volume() -> None:
    dates = pd.bdate_range("2024-01-02", periods=3)
    prices = pd.DataFrame(
        {
            "ticker": ["B", "B", "B", "A", "A", "A"],
            "date": list(dates) * 2,
            "open": [200.0, 202.0, 101.0, 10.0, 10.5, 11.0],
            "high": np.nan,
            "low": np.nan,
            "close": [201.0, 204.0, 103.0, 10.2, 10.8, 11.1],  # B splits 2:1 on the third day
            "adj_close": [100.5, 102.0, 103.0, 10.2, 10.8, 11.1],
            "volume": [1000, 1100, 2400, 50, 60, 70],
        }
    )
    market = Market.from_prices(prices)
    assert list(market.close.columns) == ["A", "B"]
    np.testing.assert_allclose(market.open["B"], [200 * 100.5 / 201, 202 * 102 / 204, 101.0])
    np.testing.assert_allclose(market.dollar_volume["B"], [201 * 1000, 204 * 1100, 103 * 2400])
    np.testing.assert_allclose(market.returns["B"], [102 / 100.5 - 1, 103 / 102 - 1])  # no -50% split day


# --------------------------------------------------------------------------------------------
# Risk limits


def events(result: BacktestResult, rule: str) -> pd.DataFrame:
    return result.limit_events[result.limit_events["rule"] == rule]


def test_max_position_and_gross_exposure_fire_and_are_recorded() -> None:
    market = random_market(n=5, tickers=3)
    limits = Limits(max_position_weight=0.25, max_gross_exposure=0.5, max_daily_turnover=10, daily_loss_limit=0.9)
    targets = pd.DataFrame([[0.6, 0.25, 0.25]] * 5, index=market.close.index, columns=market.close.columns)
    result = run(targets, market, limits=limits)
    capped = events(result, "max_position_weight")
    assert list(capped["date"]) == list(market.close.index[:4])  # every decision, not the last session
    assert (capped["ticker"] == "T0").all() and (capped["requested"] == 0.6).all() and (capped["allowed"] == 0.25).all()
    scaled = events(result, "max_gross_exposure")
    first = scaled[scaled["date"] == market.close.index[0]]
    assert sorted(first["ticker"]) == ["T0", "T1", "T2"]
    np.testing.assert_allclose(first["allowed"], 0.5 / 3)
    np.testing.assert_allclose(result.weights.iloc[1].to_numpy(), 0.5 / 3)  # next_close: held as decided


def test_turnover_limit_moves_part_of_the_way() -> None:
    market = random_market(n=5, tickers=1)
    limits = Limits(max_position_weight=1.0, max_gross_exposure=1.0, max_daily_turnover=0.4, daily_loss_limit=0.9)
    result = run(pd.DataFrame(1.0, index=market.close.index, columns=market.close.columns), market, limits=limits)
    first = events(result, "max_daily_turnover").iloc[0]
    assert first["date"] == market.close.index[0] and first["requested"] == 1.0
    assert first["allowed"] == pytest.approx(0.4)
    assert result.turnover.iloc[0] == pytest.approx(0.4)


def test_daily_loss_limit_fires_after_a_planted_loss() -> None:
    dates = pd.bdate_range("2024-01-02", periods=8)
    close = wide([100, 101, 102, 103, 97.85, 98, 99, 100], dates, ["A"])  # -5% on session 4
    market = Market(open=close, close=close, dollar_volume=close * 1e6)
    limits = Limits(max_position_weight=1.0, max_gross_exposure=1.0, max_daily_turnover=10, daily_loss_limit=0.03)
    targets = wide([0.8, 0.8, 0.8, 0.8, 1.0, 1.0, 1.0, 1.0], dates, ["A"])
    result = run(targets, market, limits=limits)
    blocked = events(result, "daily_loss_limit")
    assert list(blocked["date"]) == [dates[4]] and blocked.iloc[0]["requested"] == 1.0
    assert blocked.iloc[0]["allowed"] == pytest.approx(result.weights.iloc[4, 0])  # no new risk that day
    assert result.returns.loc[dates[4]] < -0.03  # 0.8 x -5%: the planted day lost more than 3%
    assert result.weights.iloc[6, 0] == pytest.approx(1.0)  # the next decision may add again


# --------------------------------------------------------------------------------------------
# Metrics


def test_backtest_metrics_are_the_risk_stage_metrics_and_match_empyrical() -> None:
    market = random_market(n=300, tickers=5)
    result = run(
        random_targets(market), market, costs=Costs(commission_bps=1.0, slippage_bps=5.0, impact_coefficient=0.1)
    )
    benchmark = market.returns.mean(axis=1)
    long = bt.backtest_metrics(result, benchmark, RF_ANNUAL, run_id="r1", strategy="ma", minimums=MINIMUMS, garch=False)
    assert list(long.columns) == [
        "run_id",
        "strategy",
        "metric",
        "value",
        "window_start",
        "window_end",
        "n_obs",
        "note",
    ]
    assert set(long["strategy"]) == {"ma", "benchmark"}
    ours = long[long["strategy"] == "ma"].set_index("metric")["value"]
    reference = risk.risk_metrics(result.returns.to_frame("ma"), benchmark, RF_ANNUAL, garch=False).loc["ma"]
    assert list(ours.index) == list(risk.METRICS)
    np.testing.assert_allclose(ours.to_numpy(), reference[list(risk.METRICS)].to_numpy(dtype=float), rtol=1e-12)
    assert ours["annual_return"] == pytest.approx(ep.annual_return(result.returns), rel=1e-10)
    assert ours["sharpe_ratio"] == pytest.approx(ep.sharpe_ratio(result.returns, risk_free=RF), rel=1e-10)
    assert ours["max_drawdown"] == pytest.approx(ep.max_drawdown(result.returns), rel=1e-10)
    bench = long[long["strategy"] == "benchmark"].set_index("metric")["value"]
    assert bench["beta"] == pytest.approx(1.0)


def test_tearsheet_helpers() -> None:
    market = random_market(n=300, tickers=5)
    result = run(
        random_targets(market), market, costs=Costs(commission_bps=1.0, slippage_bps=5.0, impact_coefficient=0.1)
    )
    benchmark = market.returns.mean(axis=1)
    figures = [
        bt.equity_chart(result, benchmark, log_scale=True),
        bt.drawdown_chart(result, benchmark),
        bt.monthly_returns_heatmap(result.returns),
        bt.rolling_sharpe_chart(result.returns, RF_ANNUAL, MINIMUMS, window=63),
        bt.exposure_turnover_chart(result),
        bt.cost_drag_chart(result, MINIMUMS),
    ]
    assert all(isinstance(f, Figure) for f in figures)
    monthly = bt.monthly_returns(result.returns)
    january = result.returns.loc["2024-01"]
    assert monthly.loc[2024, 1] == pytest.approx(np.prod(1 + january) - 1, rel=1e-12)
    top = bt.trade_list(result, 5)
    assert len(top) == 5 and top["traded_value"].is_monotonic_decreasing
    assert bt.trade_list(result, 3, latest=True)["date"].iloc[0] == result.trades["date"].max()
    sentence = bt.summary_sentence(result, benchmark, RF_ANNUAL, MINIMUMS)
    assert "warning" not in sentence.lower() and "Sharpe" in sentence and "n/a" not in sentence
    notes = bt.tearsheet_sentences(result, benchmark, MINIMUMS)
    months = monthly.stack()
    assert f"{(months > 0).sum()} of {len(months)} months gained" in notes["monthly"]
    deepest = risk.drawdowns(pd.DataFrame({"s": result.returns}))["s"].min()
    assert f"The deepest fall from a peak was {deepest:.1%}" in notes["drawdown"]
    paid = result.gross_equity.iloc[-1] - result.equity.iloc[-1]
    assert notes["costs"].startswith(f"Costs took {paid:,.0f} USD") and "a year." in notes["costs"]
    assert f"{result.turnover.mean():.1%} of it traded per session" in notes["exposure"]
    annual = risk.risk_metrics(
        pd.DataFrame({"g": result.gross_returns, "n": result.returns}), benchmark, 0.0, garch=False
    )["annual_return"]
    assert bt.cost_drag(result) == pytest.approx(annual["g"] - annual["n"], rel=1e-12)


# --------------------------------------------------------------------------------------------
# Sweep


def momentum_builder(market: Market):
    def build(params: dict[str, float]) -> pd.DataFrame:
        momentum = market.close.pct_change(int(params["lookback"]), fill_method=None)
        held = (momentum > params["threshold"]).astype(float)
        return held.div(held.sum(axis=1).where(lambda s: s > 0), axis=0)

    return build


SWEEP_KWARGS = {
    "execution": "next_open",
    "costs": Costs(commission_bps=1.0, slippage_bps=5.0, impact_coefficient=None),
    "limits": LOOSE,
    "risk_free_rate": RF_ANNUAL,
    "capital": 1e5,
}
GRID = {"lookback": [5, 10, 20], "threshold": [0.0, 0.05]}


def test_sweep_one_row_per_combination() -> None:
    market = random_market(n=200, tickers=4)
    build = momentum_builder(market)
    table = bt.sweep(build, GRID, market, **SWEEP_KWARGS)
    assert len(table) == 6
    assert list(table["config"])[:2] == ["lookback=5,threshold=0.0", "lookback=5,threshold=0.05"]
    assert list(table.columns) == ["config", "lookback", "threshold", *bt.SWEEP_METRICS, *bt.SWEEP_EVIDENCE]
    one = run_backtest(build({"lookback": 10, "threshold": 0.05}), market, **SWEEP_KWARGS)
    row = table.set_index("config").loc["lookback=10,threshold=0.05"]
    reference = risk.risk_metrics(one.returns.to_frame("x"), one.returns * np.nan, RF_ANNUAL, garch=False).loc["x"]
    assert row["sharpe_ratio"] == pytest.approx(reference["sharpe_ratio"], rel=1e-12)
    assert row["turnover"] == pytest.approx(one.turnover.mean(), rel=1e-12)
    assert row["cost_drag"] == pytest.approx(bt.cost_drag(one), rel=1e-9)
    assert row["n_obs"] == len(one.returns) == 199
    assert isinstance(bt.sweep_heatmap(table, "lookback", "threshold"), Figure)
    note = bt.overfitting_note(table, MINIMUMS, 0.95)
    assert note.startswith("6 configurations were tried") and "warning" not in note.lower()
    assert "DSR" in note and ("indistinguishable from luck" in note or "likely more than luck" in note)


def test_sweep_psr_and_dsr_are_the_papers_formulas_on_each_configuration() -> None:
    market = random_market(n=200, tickers=4)
    table = bt.sweep(momentum_builder(market), GRID, market, **SWEEP_KWARGS)
    per_period = table["sharpe_ratio"].to_numpy() / np.sqrt(252)
    bar = risk.expected_max_sharpe(len(table), float(np.var(per_period, ddof=1)))
    assert bt.luck_bar(table) == pytest.approx(bar, rel=1e-12)
    for config, row in table.set_index("config").iterrows():
        params = dict(item.split("=") for item in str(config).split(","))
        one = run_backtest(momentum_builder(market)({k: float(v) for k, v in params.items()}), market, **SWEEP_KWARGS)
        moments = risk.sharpe_statistics(one.returns.to_frame("x"), RF_ANNUAL).loc["x"]
        args = (moments["sharpe"], len(one.returns), moments["skew"], moments["kurtosis"])
        assert row["psr"] == pytest.approx(risk.probabilistic_sharpe_ratio(*args), rel=1e-12)
        assert row["dsr"] == pytest.approx(risk.probabilistic_sharpe_ratio(*args, benchmark=bar), rel=1e-12)
        assert row["dsr"] < row["psr"], "the bar of six tries is above 0"


def sweep_table(dsr: float, *, n_obs: int = 500, sharpe: tuple[float, ...] = (1.5, 0.5, 0.2, -0.3)) -> pd.DataFrame:
    """A crafted sweep table: the first configuration is the best, with the given DSR."""
    n = len(sharpe)
    return pd.DataFrame(
        {
            "config": [f"k={i}" for i in range(n)],
            "k": list(range(n)),
            "annual_return": 0.1,
            "annual_volatility": 0.2,
            "sharpe_ratio": list(sharpe),
            "max_drawdown": -0.1,
            "turnover": 0.05,
            "cost_drag": 0.01,
            "n_obs": n_obs,
            "psr": [0.99, 0.8, 0.6, 0.3][:n],
            "dsr": [dsr, 0.1, 0.05, 0.01][:n],
        }
    )


def test_the_verdict_follows_from_the_dsr_and_prints_it() -> None:
    luck = bt.overfitting_note(sweep_table(0.62), MINIMUMS, 0.95)
    assert "the best (k=0) has a Sharpe ratio of 1.50 against a median of 0.35" in luck
    assert luck.endswith("DSR 0.62 < 0.95: the best of 4 configurations is indistinguishable from luck.")
    bar = bt.luck_bar(sweep_table(0.62)) * np.sqrt(252)
    assert f"would show about {bar:.2f}" in luck
    skill = bt.overfitting_note(sweep_table(0.97), MINIMUMS, 0.95)
    assert skill.endswith("DSR 0.97 ≥ 0.95: the best of 4 configurations is likely more than luck.")
    close = bt.overfitting_note(sweep_table(0.9496), MINIMUMS, 0.95)
    assert "DSR 0.9496 < 0.9500" in close, "a verdict near the bar shows the digits that decide it"
    assert "none has a Sharpe ratio" in bt.overfitting_note(
        sweep_table(math.nan, sharpe=(math.nan,) * 4), MINIMUMS, 0.95
    )
    alone = bt.overfitting_note(sweep_table(math.nan, sharpe=(1.0, math.nan, math.nan, math.nan)), MINIMUMS, 0.95)
    assert alone.endswith(
        "DSR n/a: fewer than two configurations have a Sharpe ratio, so there is no spread to judge luck by."
    )


def test_selection_metrics_rows_for_the_signal_and_the_sweeps_best() -> None:
    market = random_market(n=200, tickers=4)
    table = bt.sweep(momentum_builder(market), GRID, market, **SWEEP_KWARGS)
    signal = run_backtest(momentum_builder(market)({"lookback": 15, "threshold": 0.02}), market, **SWEEP_KWARGS)
    rows = bt.selection_metrics(signal, table, RF_ANNUAL, "r1", "signal", MINIMUMS)
    assert list(rows.columns) == [
        "run_id",
        "strategy",
        "metric",
        "value",
        "window_start",
        "window_end",
        "n_obs",
        "note",
    ]
    assert rows[["strategy", "metric"]].values.tolist() == [
        ["signal", "psr"],
        ["signal", "dsr"],
        ["signal", "trials"],
        [bt.SWEEP_BEST, "psr"],
        [bt.SWEEP_BEST, "dsr"],
        [bt.SWEEP_BEST, "trials"],
    ]
    value = rows.set_index(["strategy", "metric"])["value"]
    moments = risk.sharpe_statistics(signal.returns.to_frame("s"), RF_ANNUAL).loc["s"]
    args = (moments["sharpe"], 199, moments["skew"], moments["kurtosis"])
    assert value[("signal", "psr")] == pytest.approx(risk.probabilistic_sharpe_ratio(*args), rel=1e-12)
    assert value[("signal", "dsr")] == pytest.approx(
        risk.probabilistic_sharpe_ratio(*args, benchmark=bt.luck_bar(table)), rel=1e-12
    )
    best = table.loc[table["sharpe_ratio"].idxmax()]
    assert value[(bt.SWEEP_BEST, "dsr")] == best["dsr"] and value[("signal", "trials")] == 6
    notes = rows.set_index("strategy")["note"]
    assert notes["signal"].isna().all()
    assert (notes[bt.SWEEP_BEST] == f"{best['config']}: the best Sharpe ratio of 6 configurations").all()
    assert (rows["window_start"] == signal.returns.index[0]).all() and (rows["n_obs"] == 199).all()
    with pytest.raises(ValueError, match="backtest's 98 sessions"):
        shorter = run_backtest(
            momentum_builder(market)({"lookback": 15, "threshold": 0.02}).iloc[:99], market, **SWEEP_KWARGS
        )
        bt.selection_metrics(shorter, table, RF_ANNUAL, "r1", "signal", MINIMUMS)


def test_a_backtest_shorter_than_the_minimum_publishes_no_annualized_figure() -> None:
    market = random_market(n=41, tickers=4)  # 40 daily returns
    build = momentum_builder(market)
    result = run_backtest(build({"lookback": 5, "threshold": 0.0}), market, **SWEEP_KWARGS)
    benchmark = market.returns.mean(axis=1)
    long = bt.backtest_metrics(result, benchmark, RF_ANNUAL, "r1", "signal", minimums=MINIMUMS, garch=False)
    sharpe = long.set_index(["strategy", "metric"]).loc[("signal", "sharpe_ratio")]
    assert math.isnan(sharpe["value"]) and sharpe["note"] == "40 daily returns: too few for a Sharpe ratio; 63 needed"
    sentence = bt.summary_sentence(result, benchmark, RF_ANNUAL, MINIMUMS)
    assert "n/a (40 daily returns: too few for a Sharpe ratio; 63 needed)" in sentence and "in total" in sentence
    assert bt.published_cost_drag(result, MINIMUMS) == (
        None,
        "40 daily returns: too few for an annual cost drag; 63 needed",
    )
    table = bt.sweep(build, GRID, market, **SWEEP_KWARGS)
    shown = bt.published_sweep(table, MINIMUMS)
    assert table["sharpe_ratio"].notna().all(), "computed..."
    for column in ("annual_return", "annual_volatility", "sharpe_ratio", "cost_drag", "psr", "dsr"):
        assert shown[column].isna().all(), f"...but not published: {column}"
    assert shown["max_drawdown"].notna().all() and shown["turnover"].equals(table["turnover"])
    note = bt.overfitting_note(table, MINIMUMS, 0.95)
    assert note == (
        "6 configurations were tried; their Sharpe ratios are n/a (40 daily returns: too few for a Sharpe "
        "ratio; 63 needed), so neither a best configuration nor whether it beats luck can be told yet."
    )
    rows = bt.selection_metrics(result, table, RF_ANNUAL, "r1", "signal", MINIMUMS).set_index(["strategy", "metric"])
    assert rows.loc[("signal", "dsr"), "note"] == "40 daily returns: too few for a deflated Sharpe ratio; 63 needed"
    assert math.isnan(rows.loc[(bt.SWEEP_BEST, "psr"), "value"]) and rows.loc[("signal", "trials"), "value"] == 6
    import matplotlib.pyplot as plt

    chart = bt.rolling_sharpe_chart(result.returns, RF_ANNUAL, MINIMUMS)
    drag = bt.cost_drag_chart(result, MINIMUMS)
    assert "n/a (40 daily returns" in chart.axes[0].get_title() and "n/a (40 daily returns" in drag.axes[0].get_title()
    plt.close("all")
