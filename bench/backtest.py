"""`python -m bench.backtest`: speed of the backtest engine and of a 100-configuration sweep.

500 tickers x 10 years of sample prices (SampleMarketSource, as bench/run.py uses for the
features) go through `Market.from_prices` once; the strategy is a seeded, parameter-free rule a
reader can check: hold every name whose fast SMA of the adjusted close is above its slow SMA
(20/100 sessions), equal weight per day, long only, traded with the params' costs, risk limits,
execution, risk-free rate and capital. Timed, as medians over --repeats:

* one `run_backtest` (target <= 5 s; building the targets is reported beside it);
* `sweep` over a 10 x 10 grid of (fast, slow) windows, targets built inside (target <= 60 s);
* the same rule in vectorbt, if it is installed (a benchmark-only dependency, not in
  pyproject): `Portfolio.from_orders` with target-percent sizing and the same commission and
  slippage, against our engine on the same inputs without impact and with non-binding limits
  (vectorbt has neither). Its first call compiles with numba and is reported apart.

Peak RSS is the process's (sample data included). JSON goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from bench.sample import machine, sample_prices
from bentley.config import Costs, load_config
from bentley.trading.backtest import Market, run_backtest, sweep
from bentley.trading.limits import Limits

TARGET_BACKTEST_S = 5.0
TARGET_SWEEP_S = 60.0
FAST, SLOW = 20, 100
GRID: dict[str, list[float]] = {
    "fast": [5, 10, 15, 20, 25, 30, 35, 40, 45, 50],
    "slow": [60, 80, 100, 120, 140, 160, 180, 200, 220, 240],
}


def sample_market(tickers: int, years: int) -> Market:
    return Market.from_prices(sample_prices(tickers, years))


def crossover_builder(market: Market) -> Callable[[Mapping[str, float]], pd.DataFrame]:
    """Equal weight across the names whose fast SMA is above the slow one (SMAs cached by window)."""
    close = market.close
    means: dict[int, pd.DataFrame] = {}

    def sma(window: int) -> pd.DataFrame:
        if window not in means:
            means[window] = close.rolling(window).mean()
        return means[window]

    def build(params: Mapping[str, float]) -> pd.DataFrame:
        held = (sma(int(params["fast"])) > sma(int(params["slow"]))).astype(np.float64)
        return held.div(held.sum(axis=1).where(lambda count: count > 0), axis=0)

    return build


def _median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_vectorbt(market: Market, targets: pd.DataFrame, settings: Any, repeats: int) -> dict[str, Any]:
    """The same rule in vectorbt (orders at the next close) against ours on identical inputs."""
    try:
        import vectorbt as vbt
    except ImportError as error:
        return {"available": False, "reason": f"{type(error).__name__}: {error}"}
    costs = settings.costs
    loose = Limits(max_position_weight=1.0, max_gross_exposure=1.0, max_daily_turnover=1e9, daily_loss_limit=0.99)
    ours_costs = Costs(commission_bps=costs.commission_bps, slippage_bps=costs.slippage_bps, impact_coefficient=None)
    size = targets.fillna(0.0).shift(1)  # decided at close t, ordered at close t+1

    def theirs() -> Any:
        portfolio = vbt.Portfolio.from_orders(
            market.close,
            size=size,
            size_type="targetpercent",
            fees=costs.commission_bps / 1e4,
            slippage=costs.slippage_bps / 1e4,
            init_cash=settings.capital,
            cash_sharing=True,
            group_by=True,
            call_seq="auto",
            freq="1D",
        )
        return portfolio.value()

    def ours() -> Any:
        return run_backtest(
            targets,
            market,
            execution="next_close",
            costs=ours_costs,
            limits=loose,
            risk_free_rate=0.0,
            capital=settings.capital,
        ).equity

    start = time.perf_counter()
    theirs()
    first_call = time.perf_counter() - start
    their_s, their_all, their_equity = _median_time(theirs, repeats)
    our_s, our_all, our_equity = _median_time(ours, repeats)
    return {
        "available": True,
        "version": vbt.__version__,
        "first_call_s_with_numba_compile": round(first_call, 3),
        "vectorbt_s": round(their_s, 4),
        "vectorbt_all_s": [round(x, 4) for x in their_all],
        "ours_s": round(our_s, 4),
        "ours_all_s": [round(x, 4) for x in our_all],
        "ratio_ours_over_vectorbt": round(our_s / their_s, 3),
        "final_equity_ours": round(float(our_equity.iloc[-1]), 2),
        "final_equity_vectorbt": round(float(their_equity.iloc[-1]), 2),
        "setup": "next_close, commission + slippage from params, no impact, non-binding limits, rf 0 "
        "(vectorbt has no impact model, risk limits or cash interest; it pays slippage through "
        "the fill price and fees from cash, we charge both on the traded weight)",
    }


def bench_backtest(tickers: int = 500, years: int = 10, repeats: int = 3) -> dict[str, Any]:
    """Seconds for one backtest and for a 100-configuration sweep, peak RSS, vectorbt ratio."""
    config = load_config()
    settings = config.trade
    kwargs: dict[str, Any] = {
        "execution": settings.execution,
        "costs": settings.costs,
        "limits": Limits.from_params(settings.limits),
        "risk_free_rate": config.risk.risk_free_rate,
        "capital": settings.capital,
    }
    start = time.perf_counter()
    market = sample_market(tickers, years)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    _ = market._paths  # price paths, prepared once per market and shared by every run
    paths_s = time.perf_counter() - start
    rss_data = _peak_rss_mb()

    build_s, _, targets = _median_time(lambda: crossover_builder(market)({"fast": FAST, "slow": SLOW}), repeats)
    one_s, one_all, result = _median_time(lambda: run_backtest(targets, market, **kwargs), repeats)
    sweep_s, sweep_all, table = _median_time(lambda: sweep(crossover_builder(market), GRID, market, **kwargs), repeats)
    rss_backtests = _peak_rss_mb()
    best = table.loc[table["sharpe_ratio"].idxmax()]
    return {
        "benchmark": "backtest engine: one run and a 100-configuration sweep (SMA crossover)",
        "tickers": int(market.close.shape[1]),
        "years": years,
        "sessions": int(market.close.shape[0]),
        "repeats": repeats,
        "execution": settings.execution,
        "sample_prices_and_market_s": round(load_s, 3),
        "price_paths_s": round(paths_s, 4),
        "build_targets_s": round(build_s, 4),
        "backtest_s": round(one_s, 4),
        "backtest_all_s": [round(x, 4) for x in one_all],
        "target_backtest_s": TARGET_BACKTEST_S,
        "backtest_meets_target": one_s <= TARGET_BACKTEST_S,
        "backtest_summary": {
            "final_equity": round(float(result.equity.iloc[-1]), 2),
            "mean_turnover": round(float(result.turnover.mean()), 5),
            "trades": len(result.trades),
            "limit_events": int(len(result.limit_events)),
        },
        "sweep_configurations": len(table),
        "sweep_s": round(sweep_s, 3),
        "sweep_all_s": [round(x, 3) for x in sweep_all],
        "sweep_per_configuration_s": round(sweep_s / len(table), 4),
        "target_sweep_s": TARGET_SWEEP_S,
        "sweep_meets_target": sweep_s <= TARGET_SWEEP_S,
        "sweep_best": {"config": best["config"], "sharpe_ratio": round(float(best["sharpe_ratio"]), 3)},
        "peak_rss_mb_after_data": round(rss_data, 1),
        "peak_rss_mb": round(rss_backtests, 1),
        "vectorbt": bench_vectorbt(market, targets, settings, repeats),
        "machine": machine(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=500)
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(json.dumps(bench_backtest(args.tickers, args.years, args.repeats), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
