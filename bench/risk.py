"""`python -m bench.risk`: speed of the vectorized risk metrics against a per-ticker empyrical loop.

Generates `tickers` x `years`·252 seeded fat-tailed daily returns (Student t, a market factor,
a few NaN gaps, a quarter of the names listed later), then times, as medians over --repeats:

* `risk_metrics(..., garch=False)`: every metric for every ticker, vectorized (target <= 5 s);
* the GARCH(1,1) fits, one per ticker: `risk_metrics(..., garch=True)` minus the above,
  reported in total and per series;
* the same metrics computed by looping empyrical-reloaded (plus scipy skew/kurtosis and the
  parametric / Cornish-Fisher VaR) one ticker at a time. That loop runs on the first
  `loop_tickers` names and is scaled linearly to `tickers`; the output says so.

JSON goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from bench.sample import machine
from bentley.analytics import risk

TARGET_VECTORIZED_S = 5.0
RISK_FREE_ANNUAL = 0.04


def sample_returns(tickers: int = 500, years: int = 10, seed: int = 42) -> tuple[pd.DataFrame, pd.Series]:
    """Seeded wide returns (sessions x tickers) and a benchmark: fat tails, gaps, late listings."""
    rng = np.random.default_rng(seed)
    sessions = years * 252
    dates = pd.bdate_range("2016-01-04", periods=sessions, name="date")
    market = rng.standard_t(4, sessions) * 0.008 + 0.0003
    betas = rng.uniform(0.4, 1.6, tickers)
    scales = rng.uniform(0.006, 0.025, tickers)
    noise = rng.standard_t(4, (sessions, tickers)) * scales
    values = market[:, None] * betas + noise
    values[rng.random((sessions, tickers)) < 0.002] = np.nan  # scattered data gaps
    late = rng.choice(tickers, tickers // 4, replace=False)
    starts = rng.integers(0, sessions // 2, late.size)
    for column, start in zip(late, starts, strict=True):
        values[:start, column] = np.nan
    columns = pd.Index([f"T{i:04d}" for i in range(tickers)], name="ticker")
    return pd.DataFrame(values, index=dates, columns=columns), pd.Series(market, index=dates, name="BENCH")


def empyrical_row(s: pd.Series, benchmark: pd.Series, rf: float) -> dict[str, float]:
    """The same metrics for one ticker the way a user would compute them with empyrical."""
    import empyrical as ep
    from scipy import stats

    s = s.loc[s.first_valid_index() : s.last_valid_index()]
    observed = s.dropna().to_numpy()
    alpha, beta = ep.alpha_beta(s, benchmark, risk_free=rf)
    mean, std = observed.mean(), observed.std(ddof=1)
    skew, kurt = stats.skew(observed, bias=False), stats.kurtosis(observed, bias=False)
    return {
        "annual_return": ep.annual_return(s),
        "cumulative_return": ep.cum_returns_final(s),
        "annual_volatility": ep.annual_volatility(s),
        "downside_risk": ep.downside_risk(s),
        "max_drawdown": ep.max_drawdown(s),
        "sharpe_ratio": ep.sharpe_ratio(s, risk_free=rf),
        "sortino_ratio": ep.sortino_ratio(s),
        "calmar_ratio": ep.calmar_ratio(s),
        "omega_ratio": ep.omega_ratio(s),
        "tail_ratio": ep.tail_ratio(s),
        "var_95_historical": ep.value_at_risk(observed, 0.05),
        "cvar_95_historical": ep.conditional_value_at_risk(s, 0.05),
        "var_99_historical": ep.value_at_risk(observed, 0.01),
        "cvar_99_historical": ep.conditional_value_at_risk(s, 0.01),
        "var_95_parametric": mean + risk.Z_05 * std,
        "var_95_cornish_fisher": mean + risk.cornish_fisher_z(risk.Z_05, skew, kurt) * std,
        "beta": beta,
        "alpha": alpha,
        "skew": skew,
        "kurtosis": kurt,
    }


def _median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def bench_risk(tickers: int = 500, years: int = 10, repeats: int = 3, loop_tickers: int = 50) -> dict[str, Any]:
    """Seconds for the vectorized metrics, the GARCH fits and the scaled empyrical loop."""
    returns, benchmark = sample_returns(tickers, years)
    rf = risk.per_period_rate(RISK_FREE_ANNUAL)
    warnings.simplefilter("ignore", risk.RiskWarning)
    warnings.filterwarnings("ignore", "Sorting by default when concatenating")  # empyrical on pandas 3

    start = time.perf_counter()
    import arch  # noqa: F401 - risk imports arch lazily on the first fit; keep that out of the timings

    arch_import = time.perf_counter() - start
    vectorized, vectorized_all, table = _median_time(
        lambda: risk.risk_metrics(returns, benchmark, RISK_FREE_ANNUAL, garch=False), repeats
    )
    with_garch, with_garch_all, garch_table = _median_time(
        lambda: risk.risk_metrics(returns, benchmark, RISK_FREE_ANNUAL, garch=True), repeats
    )
    fits = int((table["n_obs"] >= risk.GARCH_MIN_OBS).sum())
    garch_total = max(with_garch - vectorized, 0.0)

    subset = returns.iloc[:, : min(loop_tickers, tickers)]
    loop, loop_all, rows = _median_time(
        lambda: {c: empyrical_row(subset[c], benchmark, rf) for c in subset.columns}, repeats
    )
    scaled_loop = loop * tickers / subset.shape[1]

    reference = pd.DataFrame(rows).T
    shared = list(reference.columns)
    ours = table.loc[reference.index, shared].to_numpy(dtype=float)
    theirs = reference.to_numpy(dtype=float)
    max_rel = float(np.nanmax(np.abs(ours - theirs) / np.abs(theirs)))

    return {
        "benchmark": "risk metrics: vectorized risk_metrics vs a per-ticker empyrical loop",
        "tickers": tickers,
        "years": years,
        "sessions": len(returns),
        "cells": int(returns.size),
        "metrics": len(risk.METRICS),
        "repeats": repeats,
        "vectorized_s": round(vectorized, 4),
        "vectorized_all_s": [round(x, 4) for x in vectorized_all],
        "target_vectorized_s": TARGET_VECTORIZED_S,
        "vectorized_meets_target": vectorized <= TARGET_VECTORIZED_S,
        "garch": {
            "fits": fits,
            "total_s": round(garch_total, 3),
            "per_series_ms": round(1000 * garch_total / max(fits, 1), 2),
            "with_garch_all_s": [round(x, 3) for x in with_garch_all],
            "finite": int(np.isfinite(garch_table["var_95_garch"]).sum()),
            "arch_import_s_not_included": round(arch_import, 3),
            "method": "risk_metrics(garch=True) minus risk_metrics(garch=False), medians",
        },
        "empyrical_loop": {
            "timed_tickers": subset.shape[1],
            "timed_s": round(loop, 4),
            "timed_all_s": [round(x, 4) for x in loop_all],
            "scaled_to_tickers_s": round(scaled_loop, 3),
            "note": f"empyrical loop timed on {subset.shape[1]} tickers and scaled linearly to {tickers}",
            "metrics": shared,
        },
        "speedup_vs_empyrical_loop": round(scaled_loop / vectorized, 1),
        "max_relative_difference_vs_empyrical": max_rel,
        "machine": machine(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=500)
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loop-tickers", type=int, default=50)
    args = parser.parse_args(argv)
    print(json.dumps(bench_risk(args.tickers, args.years, args.repeats, args.loop_tickers), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
