"""Risk metrics per ticker and per portfolio, from a wide frame of daily simple returns.

Users check our numbers against empyrical and QuantStats, so the conventions are theirs
(ARCHITECTURE.md §6): daily simple returns, 252 sessions a year, standard deviations with
ddof=1, Sharpe on returns in excess of a per-period risk-free rate, CAGR for the annual
return, a negative maximum drawdown measured from a wealth of 1 before the first return, and
historical VaR as a linearly interpolated percentile (a negative return). Every metric that
empyrical-reloaded also computes equals its value to ~1e-12 relative; the tests prove it.

The input is wide: index = sessions, one column per *scope* (a ticker, or `portfolio:<name>`
built with `portfolio_returns`), NaN where a scope has no return. A scope's window runs from
its first to its last observed return; NaN inside the window is a gap. Gaps are handled the
way empyrical's nan-aware functions handle them (nanmean, nanstd, NaN as a flat day in the
wealth curve), which is what applying empyrical to the column cut to its window gives. Two
places where empyrical itself would give NaN or inf on such data are made explicit:

* `value_at_risk` in empyrical is `np.percentile`, which returns NaN as soon as one value is
  NaN; ours is the same percentile over the observed returns (empyrical on `s.dropna()`).
* a zero denominator (constant returns, no losing day, a constant benchmark) gives NaN and a
  `RiskWarning` naming the scopes, never ±inf.

The computations are numpy reductions over the whole (sessions x scopes) matrix: 500 tickers
x 10 years take well under a second, against many seconds for a per-ticker empyrical loop
(see bench/risk.py). Only the GARCH forecast fits one model per series, so it is optional.

Metrics empyrical does not have, and how they are defined here (z = Φ⁻¹(0.05) ≈ −1.645):

* skew / kurtosis: sample skewness G1 and *excess* kurtosis G2, bias corrected
  (`scipy.stats.skew/kurtosis(bias=False)`); NaN below 3 (skew) or 4 (kurtosis) observations.
* var_95_parametric: mean + z·std (normal VaR, ddof=1).
* var_95_cornish_fisher: mean + z_cf·std with
  z_cf = z + (z²−1)·S/6 + (z³−3z)·K/24 − (2z³−5z)·S²/36, S = skew, K = excess kurtosis
  (the bias-corrected values above). The expansion is an approximation that stops being
  monotone for very large |S| or K, so read it next to the historical VaR.
* var_95_garch: one-day-ahead VaR from a GARCH(1,1) with constant mean and normal errors,
  fitted with `arch` on 100·r (the scale the optimizer expects): (μ + z·σ_{t+1})/100.

Computing a figure is not publishing it. A Sharpe ratio annualized from four daily returns is
a number (it can read 14), but it says nothing about the strategy, so every figure that is
written (`risk_metrics`, `backtest_metrics`, KPIs) or shown (sentences, tables) goes through
`published`: below the minimum number of daily returns for its kind (params
`risk.min_observations`) the value is NULL and a note says why, e.g. "4 daily returns: too
few for a Sharpe ratio; 63 needed"; reports print "n/a (that note)".

Selection bias gets its own figures (Bailey & López de Prado):

* PSR, the probabilistic Sharpe ratio (2012): the probability that the true Sharpe ratio
  exceeds a benchmark SR*, Φ((SR − SR*)·√(n−1) / √(1 − γ3·SR + (γ4−1)/4·SR²)), with SR the
  per-period (not annualized) Sharpe of the excess returns, γ3 the skewness and γ4 the
  (Pearson, normal = 3) kurtosis of the returns, both bias-corrected as above.
* DSR, the deflated Sharpe ratio (2014): the PSR against the Sharpe ratio the best of N
  skill-free trials would show, SR* = √V·((1−γ)Φ⁻¹(1−1/N) + γΦ⁻¹(1−1/(N·e))), with V the
  variance of the N trials' per-period Sharpe ratios and γ the Euler–Mascheroni constant.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Collection, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from scipy.special import ndtri

from bentley.features import TRADING_DAYS
from bentley.reporting import md_escape

if TYPE_CHECKING:  # matplotlib is imported by the chart helpers only, when they are called
    from matplotlib.figure import Figure

    from bentley.config import MinObservations

#: Imported lazily here (arch for the GARCH VaR, scipy.stats for PSR/DSR, about 1.5 s together),
#: so the runner imports them into a kernel warmed ahead of a stage that uses this module
#: (runner.execute): off the stage's critical path, and never in a process that only lists metrics.
WARM_IMPORTS: tuple[str, ...] = ("arch", "scipy.stats")

#: Metric names, in the order of the wide table's columns and the warehouse rows.
METRICS: tuple[str, ...] = (
    "annual_return",
    "cumulative_return",
    "annual_volatility",
    "downside_risk",
    "max_drawdown",
    "sharpe_ratio",
    "sortino_ratio",
    "calmar_ratio",
    "omega_ratio",
    "tail_ratio",
    "var_95_historical",
    "cvar_95_historical",
    "var_99_historical",
    "cvar_99_historical",
    "var_95_parametric",
    "var_95_cornish_fisher",
    "var_95_garch",
    "beta",
    "alpha",
    "skew",
    "kurtosis",
)

#: Columns of the wide table after the metrics: how much data each row rests on.
WINDOW_COLUMNS: tuple[str, ...] = ("n_obs", "window_start", "window_end")

#: Columns of `long_metrics`, the rows of the warehouse table risk_metrics(run_id, scope, metric).
LONG_COLUMNS: tuple[str, ...] = (
    "run_id",
    "scope",
    "metric",
    "value",
    "window_start",
    "window_end",
    "n_obs",
    "note",
)

#: Figures that need a minimum of daily returns to mean anything: metric -> (the kind in
#: `risk.min_observations`, how a note names the figure). Figures not listed (cumulative return,
#: a number of trials) are counts or realized outcomes, true at any length.
PUBLISHED: dict[str, tuple[str, str]] = {
    "annual_return": ("annualized", "an annual return"),
    "annual_volatility": ("annualized", "an annual volatility"),
    "downside_risk": ("annualized", "an annual downside risk"),
    "sharpe_ratio": ("annualized", "a Sharpe ratio"),
    "sortino_ratio": ("annualized", "a Sortino ratio"),
    "calmar_ratio": ("annualized", "a Calmar ratio"),
    "alpha": ("annualized", "an annual alpha"),
    "cost_drag": ("annualized", "an annual cost drag"),
    "max_drawdown": ("drawdown", "a maximum drawdown"),
    "tail_ratio": ("var", "a tail ratio"),
    "var_95_historical": ("var", "a 95% VaR"),
    "cvar_95_historical": ("var", "a 95% CVaR"),
    "var_99_historical": ("var", "a 99% VaR"),
    "cvar_99_historical": ("var", "a 99% CVaR"),
    "var_95_parametric": ("var", "a parametric VaR"),
    "var_95_cornish_fisher": ("var", "a Cornish-Fisher VaR"),
    "var_95_garch": ("var", "a GARCH VaR"),
    "beta": ("estimate", "a beta"),
    "omega_ratio": ("estimate", "an omega ratio"),
    "skew": ("estimate", "a skewness"),
    "kurtosis": ("estimate", "a kurtosis"),
    "psr": ("estimate", "a probabilistic Sharpe ratio"),
    "dsr": ("estimate", "a deflated Sharpe ratio"),
}

#: GARCH(1,1) has four parameters; fewer sessions than this give estimates that mean nothing.
GARCH_MIN_OBS = 100

#: Standard normal quantile at 5%: the z of the parametric, Cornish-Fisher and GARCH VaR.
Z_05: float = float(ndtri(0.05))

#: empyrical's threshold below which a benchmark variance counts as zero (beta undefined).
_MIN_VARIANCE = 1.0e-30


class RiskWarning(UserWarning):
    """A metric could not be computed for some scopes and is NaN; the message names them."""


def per_period_rate(annual_rate: float) -> float:
    """The daily rate that compounds to `annual_rate` over 252 sessions: (1+rf)^(1/252) − 1.

    Params state the risk-free rate per year; Sharpe and alpha subtract it per period, as
    empyrical's `risk_free` argument expects.
    """
    return float((1.0 + annual_rate) ** (1.0 / TRADING_DAYS) - 1.0)


# --------------------------------------------------------------------------------------------
# Inputs


def returns_from_prices(prices: pd.DataFrame, start: Any = None, end: Any = None) -> pd.DataFrame:
    """Wide daily simple returns (index date, one column per ticker) from adjusted closes.

    Prices are cut to [start, end] first, so the first session of the window has no return
    and is dropped (as `empyrical.simple_returns` does). A missing close is not filled: the
    returns of that day and the next are NaN (`fill_method=None`), because a forward-filled
    price would invent a flat day followed by a jump.
    """
    missing = {"ticker", "date", "adj_close"} - set(prices.columns)
    if missing:
        raise ValueError(f"prices lacks columns {sorted(missing)}")
    frame = prices[["ticker", "date", "adj_close"]].copy()
    frame["date"] = pd.to_datetime(frame["date"])
    if start is not None:
        frame = frame[frame["date"] >= pd.Timestamp(start)]
    if end is not None:
        frame = frame[frame["date"] <= pd.Timestamp(end)]
    duplicated = frame.duplicated(["ticker", "date"])
    if duplicated.any():
        examples = frame.loc[duplicated, ["ticker", "date"]].head(5).to_dict("records")
        raise ValueError(f"prices has duplicate (ticker, date) rows, e.g. {examples}")
    closes = frame.pivot(index="date", columns="ticker", values="adj_close").sort_index()
    closes = closes.astype(np.float64)
    returns = closes.pct_change(fill_method=None).iloc[1:]
    returns.columns.name = "ticker"
    return returns


@dataclass(frozen=True)
class _Panel:
    """The returns as a float matrix plus, per column, where its window lies."""

    values: np.ndarray  # (sessions, scopes), NaN = no return
    n_obs: np.ndarray  # observed returns per scope
    length: np.ndarray  # sessions from first to last observation, gaps included
    first: np.ndarray  # row of the first observation (-1 when none)
    last: np.ndarray  # row of the last observation (-1 when none)


def _sorted_returns(returns: pd.DataFrame) -> pd.DataFrame:
    """Returns in date order; duplicated dates are an error (the wealth curve needs an order)."""
    if returns.index.has_duplicates:
        raise ValueError("returns has duplicated dates")
    return returns if returns.index.is_monotonic_increasing else returns.sort_index()


def _panel(returns: pd.DataFrame) -> _Panel:
    """Float64 matrix of the returns, ±inf (a zero price) counted as missing."""
    values = returns.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    values[~np.isfinite(values)] = np.nan
    observed = ~np.isnan(values)
    n_obs = observed.sum(axis=0)
    has = n_obs > 0
    if values.shape[0] == 0:  # no sessions: every scope is empty
        first = last = np.full(values.shape[1], -1)
    else:
        first = np.where(has, observed.argmax(axis=0), -1)
        last = np.where(has, values.shape[0] - 1 - observed[::-1].argmax(axis=0), -1)
    length = np.where(has, last - first + 1, 0)
    return _Panel(values=values, n_obs=n_obs, length=length, first=first, last=last)


def _benchmark_values(benchmark: pd.Series, index: pd.Index) -> np.ndarray:
    """The benchmark on the returns' sessions (NaN where it has none).

    Dates the scopes do not have cannot pair with any return, so dropping them changes no
    beta (empyrical's outer join leaves them unpaired too). No shared date at all is
    almost always a type mismatch (dates vs timestamps), so it is an error, not NaN betas.
    """
    aligned = benchmark.reindex(index)
    if len(index) and len(benchmark) and aligned.isna().all() and not benchmark.isna().all():
        raise ValueError("benchmark shares no date with returns (check both indexes are datetimes)")
    values = aligned.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    values[~np.isfinite(values)] = np.nan
    return values


def _warn(scopes: Iterable[Hashable], what: str) -> None:
    """One RiskWarning naming every scope concerned (none: no warning)."""
    names = [str(s) for s in scopes]
    if names:
        warnings.warn(f"{what}: {', '.join(names)}", RiskWarning, stacklevel=3)


# --------------------------------------------------------------------------------------------
# Vectorized building blocks (columns = scopes)


def _drawdown_matrix(values: np.ndarray) -> np.ndarray:
    """wealth / running peak − 1 with wealth 1 before the first row; NaN is a flat day.

    The peak starts at 1, not at the first day's wealth, so a loss on the first day is a
    drawdown (empyrical anchors its curve the same way).
    """
    wealth = np.cumprod(1.0 + np.nan_to_num(values, nan=0.0), axis=0)
    peak = np.maximum(np.maximum.accumulate(wealth, axis=0), 1.0)
    return wealth / peak - 1.0


def _quantile(sorted_values: np.ndarray, n_obs: np.ndarray, p: float) -> np.ndarray:
    """Linear-interpolation percentile per column of an ascending sort with NaN last.

    Same definition as `np.percentile(x, 100p)` on the observed values (position (n−1)·p),
    computed for all columns at once.
    """
    position = (n_obs - 1) * p
    lower = np.clip(np.floor(position).astype(np.int64), 0, None)
    upper = np.minimum(lower + 1, np.maximum(n_obs - 1, 0))
    a = np.take_along_axis(sorted_values, lower[None, :], axis=0)[0]
    b = np.take_along_axis(sorted_values, upper[None, :], axis=0)[0]
    out = a + (b - a) * (position - lower)
    out[n_obs == 0] = np.nan
    return out


def _tail_mean(cumulative: np.ndarray, n_obs: np.ndarray, cutoff: float) -> np.ndarray:
    """Mean of the lowest ⌊(n−1)·cutoff⌋+1 returns, from cumulative sums of the ascending sort.

    That count is empyrical's `conditional_value_at_risk`: the returns at or below the
    historical VaR (the VaR lies between the last of them and the next), so CVaR ≤ VaR.
    """
    count = np.floor((n_obs - 1) * cutoff).astype(np.int64) + 1
    index = np.clip(count - 1, 0, None)
    out = np.take_along_axis(cumulative, index[None, :], axis=0)[0] / np.maximum(count, 1)
    out[n_obs == 0] = np.nan
    return out


def _alpha_beta(
    values: np.ndarray, bench: np.ndarray, rf: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """empyrical's alpha_beta for every column: (annualized alpha, beta, benchmark variance,
    number of paired sessions).

    Only sessions where both the scope and the benchmark have a return count. Beta is
    cov/var (population moments on both sides, so the ddof cancels, as in empyrical);
    alpha = (1 + mean((r − rf) − β(b − rf)))^252 − 1.
    """
    pair = ~np.isnan(values) & ~np.isnan(bench)[:, None]
    x = np.where(pair, bench[:, None], np.nan)
    y = np.where(pair, values, np.nan)
    x_res = x - np.nanmean(x, axis=0)
    covariance = np.nanmean(x_res * y, axis=0)
    variance = np.nanmean(np.square(x_res), axis=0)
    defined = variance >= _MIN_VARIANCE  # False for NaN too
    beta = np.where(defined, covariance / np.where(defined, variance, 1.0), np.nan)
    daily = np.nanmean((y - rf) - beta * (x - rf), axis=0)
    alpha = np.power(1.0 + daily, TRADING_DAYS) - 1.0
    return alpha, beta, variance, pair.sum(axis=0)


def _moments(values: np.ndarray, n_obs: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bias-corrected sample skewness and excess kurtosis (scipy's bias=False formulas)."""
    centred = np.nan_to_num(values - mean, nan=0.0)  # a gap adds 0 to the sums, as in nanmean
    square = centred * centred  # products, not **: float powers are several times slower
    count = np.maximum(n_obs, 1)
    m2 = square.sum(axis=0) / count
    m3 = (square * centred).sum(axis=0) / count
    m4 = (square * square).sum(axis=0) / count
    n = n_obs.astype(np.float64)
    skew = np.sqrt((n - 1.0) * n) / (n - 2.0) * m3 / m2**1.5
    kurt = ((n**2 - 1.0) * m4 / m2**2 - 3.0 * (n - 1.0) ** 2) / ((n - 2.0) * (n - 3.0))
    skew[n_obs < 3] = np.nan
    kurt[n_obs < 4] = np.nan
    return skew, kurt


def cornish_fisher_z(z: float, skew: Any, excess_kurtosis: Any) -> Any:
    """z_cf = z + (z²−1)S/6 + (z³−3z)K/24 − (2z³−5z)S²/36 (Cornish–Fisher, to the S² term)."""
    s, k = skew, excess_kurtosis
    return z + (z**2 - 1) * s / 6 + (z**3 - 3 * z) * k / 24 - (2 * z**3 - 5 * z) * s**2 / 36


# --------------------------------------------------------------------------------------------
# GARCH


def _garch_fit(values: np.ndarray) -> float:
    """(μ + z·σ_{t+1})/100 from a GARCH(1,1) on 100·r; raises when the optimizer fails."""
    from arch import arch_model  # 1+ s to import: only when a forecast is asked for

    model = arch_model(100.0 * values, vol="GARCH", p=1, q=1, mean="Constant", dist="normal")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence is checked below, by the flag
        result = model.fit(disp="off", show_warning=False)
    if result.convergence_flag != 0:
        raise RuntimeError(f"optimizer did not converge (flag {result.convergence_flag})")
    forecast = result.forecast(horizon=1, reindex=False)
    mu = float(forecast.mean.to_numpy()[-1, 0])
    sigma = float(np.sqrt(forecast.variance.to_numpy()[-1, 0]))
    if not (np.isfinite(mu) and np.isfinite(sigma) and sigma > 0):
        raise RuntimeError(f"forecast is not usable (mean {mu}, sigma {sigma})")
    return (mu + Z_05 * sigma) / 100.0


#: Below this many series, forking workers costs more than it saves.
_PARALLEL_GARCH_MIN = 64


def _garch_or_error(values: np.ndarray) -> tuple[float, str | None]:
    try:
        return _garch_fit(values), None
    except Exception as error:  # noqa: BLE001 - a failed fit is NaN for that scope only
        return np.nan, f"{type(error).__name__}: {error}"


def _garch_fits(series: list[np.ndarray]) -> list[tuple[float, str | None]]:
    """One GARCH fit per series; the fits are independent, so many go to one worker per core.

    Workers are forked after arch is imported, so they start warm (arch takes ~1 s to import).
    """
    workers = min(os.cpu_count() or 1, len(series) // (_PARALLEL_GARCH_MIN // 2) or 1)
    if len(series) < _PARALLEL_GARCH_MIN or workers < 2:
        return [_garch_or_error(values) for values in series]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import arch  # noqa: F401 - imported before the fork so workers inherit it

    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return list(pool.map(_garch_or_error, series, chunksize=max(len(series) // (4 * workers), 1)))


def garch_var(returns: pd.Series, scope: Hashable | None = None) -> float:
    """One-day-ahead 95% VaR of one series from a GARCH(1,1) fit (a negative return).

    NaN gaps are dropped (the model sees the observed returns in order). Fewer than
    GARCH_MIN_OBS returns, or a fit that fails or does not converge, give NaN and a
    RiskWarning naming the scope: one bad series must not stop a 500-ticker report.
    """
    name = returns.name if scope is None else scope
    values = returns.to_numpy(dtype=np.float64, na_value=np.nan)
    values = values[np.isfinite(values)]
    if values.size < GARCH_MIN_OBS:
        _warn([name], f"GARCH VaR needs >= {GARCH_MIN_OBS} returns, NaN for scope")
        return np.nan
    try:
        return _garch_fit(values)
    except Exception as error:  # noqa: BLE001 - any failure of the fit means "no estimate"
        _warn([name], f"GARCH fit failed ({type(error).__name__}: {error}), NaN for scope")
        return np.nan


# --------------------------------------------------------------------------------------------
# The metrics table


def risk_metrics(
    returns: pd.DataFrame,
    benchmark: pd.Series,
    risk_free_annual: float,
    garch: bool,
) -> pd.DataFrame:
    """One row per scope (column of `returns`): METRICS, then n_obs, window_start, window_end.

    Each metric is computed over the scope's own window (first to last observed return),
    so a ticker listed two years ago is not diluted by eight empty years. Values equal
    empyrical's on `returns[scope].loc[window_start:window_end]` with risk_free =
    per_period_rate(risk_free_annual) for Sharpe and alpha; Sortino, downside risk and
    omega use a required return of 0 (empyrical's defaults). Historical VaR is
    empyrical's on the observed returns (its np.percentile would be NaN on any gap).
    annual_return, like empyrical, counts the sessions of the window (gaps included) as
    elapsed time.

    Awkward data never raises: an all-NaN column, one observation, constant returns or a
    constant benchmark give NaN metrics (with a RiskWarning naming the scopes) where a
    formula has no value, never ±inf. Only malformed input does (duplicated dates, a
    benchmark sharing no date with the returns). garch=False skips the per-series GARCH
    fits (the column is NaN): they are ~20 ms per series, the rest is vectorized.
    """
    returns = _sorted_returns(returns)
    panel = _panel(returns)
    values, n_obs, length = panel.values, panel.n_obs, panel.length
    scopes = list(returns.columns)
    rf = per_period_rate(risk_free_annual)
    bench = _benchmark_values(benchmark, returns.index)
    if values.shape[0] == 0:  # reductions need a row; an all-NaN one changes nothing
        values, bench = np.full((1, values.shape[1]), np.nan), np.full(1, np.nan)
    root_year = np.sqrt(TRADING_DAYS)

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # empty slices: handled by the masks
        one, two = n_obs >= 1, n_obs >= 2
        mean = np.nanmean(values, axis=0)
        std = np.nanstd(values, axis=0, ddof=1)
        constant = two & (np.nanmax(values, axis=0) == np.nanmin(values, axis=0))
        ok_std = two & ~constant

        ending = np.nanprod(1.0 + values, axis=0)
        cumulative = np.where(one, ending - 1.0, np.nan)
        annual = np.where(one, ending ** (1.0 / (length / TRADING_DAYS)) - 1.0, np.nan)
        volatility = np.where(two, std * root_year, np.nan)
        downside = np.where(one, np.sqrt(np.nanmean(np.square(np.minimum(values, 0.0)), axis=0)) * root_year, np.nan)
        max_dd = np.where(one, _drawdown_matrix(values).min(axis=0), np.nan)

        excess = values - rf
        sharpe = np.where(ok_std, np.nanmean(excess, axis=0) / np.nanstd(excess, axis=0, ddof=1) * root_year, np.nan)
        ok_downside = two & (downside > 0)
        sortino = np.where(ok_downside, mean * TRADING_DAYS / np.where(ok_downside, downside, 1.0), np.nan)
        ok_calmar = one & (max_dd < 0)
        calmar = np.where(ok_calmar, annual / np.abs(np.where(ok_calmar, max_dd, 1.0)), np.nan)
        gains = np.nansum(np.where(values > 0, values, 0.0), axis=0)
        losses = -np.nansum(np.where(values < 0, values, 0.0), axis=0)
        ok_omega = two & (losses > 0)
        omega = np.where(ok_omega, gains / np.where(ok_omega, losses, 1.0), np.nan)

        ascending = np.sort(values, axis=0)  # NaN sorts last
        running = np.cumsum(ascending, axis=0)
        var95, var99 = _quantile(ascending, n_obs, 0.05), _quantile(ascending, n_obs, 0.01)
        p95 = _quantile(ascending, n_obs, 0.95)
        ok_tail = np.abs(var95) > 0  # False for NaN too
        tail = np.where(ok_tail, np.abs(p95) / np.abs(np.where(ok_tail, var95, 1.0)), np.nan)
        cvar95, cvar99 = _tail_mean(running, n_obs, 0.05), _tail_mean(running, n_obs, 0.01)

        skew, kurt = _moments(values, n_obs, mean)
        skew[~ok_std], kurt[~ok_std] = np.nan, np.nan
        parametric = np.where(two, mean + Z_05 * std, np.nan)
        cornish_fisher = mean + cornish_fisher_z(Z_05, skew, kurt) * std

        alpha, beta, bench_variance, pairs = _alpha_beta(values, bench, rf)

    columns: dict[str, np.ndarray] = {
        "annual_return": annual,
        "cumulative_return": cumulative,
        "annual_volatility": volatility,
        "downside_risk": downside,
        "max_drawdown": max_dd,
        "sharpe_ratio": sharpe,
        "sortino_ratio": sortino,
        "calmar_ratio": calmar,
        "omega_ratio": omega,
        "tail_ratio": tail,
        "var_95_historical": var95,
        "cvar_95_historical": cvar95,
        "var_99_historical": var99,
        "cvar_99_historical": cvar99,
        "var_95_parametric": parametric,
        "var_95_cornish_fisher": cornish_fisher,
        "var_95_garch": np.full(len(scopes), np.nan),
        "beta": beta,
        "alpha": alpha,
        "skew": skew,
        "kurtosis": kurt,
    }
    for column in columns.values():
        column[~np.isfinite(column)] = np.nan  # the contract: NaN, never ±inf

    names = np.array(scopes, dtype=object)
    _warn(names[n_obs == 0], "no returns, every metric is NaN for scope(s)")
    _warn(
        names[constant],
        "zero variance (constant returns): sharpe_ratio, skew, kurtosis and var_95_cornish_fisher are NaN for scope(s)",
    )
    _warn(names[two & ~(downside > 0)], "no losing day: sortino_ratio is NaN for scope(s)")
    _warn(
        names[(pairs >= 2) & ~(bench_variance >= _MIN_VARIANCE)],
        "benchmark has zero variance over the scope's sessions: beta and alpha are NaN for scope(s)",
    )

    if garch:
        garch_column = columns["var_95_garch"]
        short = (n_obs > 0) & (n_obs < GARCH_MIN_OBS)
        _warn(names[short], f"GARCH VaR needs >= {GARCH_MIN_OBS} returns, NaN for scope(s)")
        fit_columns = np.flatnonzero(n_obs >= GARCH_MIN_OBS)
        series = [values[:, j][~np.isnan(values[:, j])] for j in fit_columns]
        for j, (estimate, error) in zip(fit_columns, _garch_fits(series), strict=True):
            garch_column[j] = estimate
            if error:
                _warn([scopes[j]], f"GARCH fit failed ({error}), NaN for scope")

    table = pd.DataFrame(columns, index=pd.Index(scopes, name="scope"))
    table["n_obs"] = n_obs.astype(np.int64)
    table["window_start"] = _window_dates(returns.index, panel.first, table.index)
    table["window_end"] = _window_dates(returns.index, panel.last, table.index)
    return table


def _window_dates(dates: pd.Index, rows: np.ndarray, scopes: pd.Index) -> pd.Series:
    """The date at each scope's row (first or last observation); NaT for scopes without any."""
    has = rows >= 0
    if not has.any():
        return pd.Series(pd.NaT, index=scopes, dtype="datetime64[ns]")
    picked = pd.Series(dates.take(np.where(has, rows, 0)), index=scopes)
    return picked.where(has)


def long_metrics(table: pd.DataFrame, run_id: str, minimums: MinObservations) -> pd.DataFrame:
    """The wide table as warehouse rows (LONG_COLUMNS), each value as `published` lets it out.

    One row per (scope, metric) in METRICS order, the key of risk_metrics(run_id, scope,
    metric). value is NaN where a metric is undefined or rests on fewer daily returns than
    `minimums` asks for its kind; the row stays (with the reason in `note` for the latter) so
    a report can say why there is no number rather than silently omitting it.
    """
    missing = [c for c in (*METRICS, *WINDOW_COLUMNS) if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks columns {missing}; pass the output of risk_metrics")
    k, m = len(table), len(METRICS)
    values = table[list(METRICS)].to_numpy(dtype=np.float64, na_value=np.nan).ravel()
    n_obs = np.repeat(table["n_obs"].to_numpy(dtype=np.int64), m)
    metrics = np.tile(np.array(METRICS, dtype=object), k)
    shown = [published(v, int(n), metric, minimums) for v, n, metric in zip(values, n_obs, metrics, strict=True)]
    return pd.DataFrame(
        {
            "run_id": np.full(k * m, run_id, dtype=object),
            "scope": np.repeat(table.index.astype(str).to_numpy(dtype=object), m),
            "metric": metrics,
            "value": np.array([np.nan if v is None else v for v, _ in shown], dtype=np.float64),
            "window_start": np.repeat(table["window_start"].to_numpy(), m),
            "window_end": np.repeat(table["window_end"].to_numpy(), m),
            "n_obs": n_obs,
            "note": np.array([note for _, note in shown], dtype=object),
        }
    )


# --------------------------------------------------------------------------------------------
# Publishing: a figure only where it means something


def published(
    value: float | None, n_obs: int, metric: str, minimums: MinObservations
) -> tuple[float | None, str | None]:
    """(value, None) when `metric` may be published on `n_obs` daily returns, else (None, the reason).

    The one place that decides, so the warehouse, the sentences, the tables and the KPIs
    agree: a metric in PUBLISHED needs `minimums.<its kind>` daily returns; others always
    pass. A NaN or infinite value is (None, None): undefined, which is not a length problem.
    """
    number = None if value is None or not np.isfinite(value) else float(value)
    rule = PUBLISHED.get(metric)
    if rule is None:
        return number, None
    kind, label = rule
    needed = int(getattr(minimums, kind))
    if n_obs >= needed:
        return number, None
    returns = "daily return" if n_obs == 1 else "daily returns"
    return None, f"{n_obs} {returns}: too few for {label}; {needed} needed"


def text(value: float | None, note: str | None, spec: str) -> str:
    """How a published figure reads in a sentence: the number, "n/a (the note)", or "n/a"."""
    if value is not None and np.isfinite(value):
        return format(value, spec)
    return f"n/a ({note})" if note else "n/a"


def published_table(rows: pd.DataFrame, index: str, metrics: Sequence[str], digits: int = 4) -> pd.DataFrame:
    """Warehouse rows (`long_metrics`, `backtest_metrics`) as an `index` x metric table for a report.

    Values are rounded; a NULL value shows as "n/a" (its row's note says why), so a reader
    never mistakes a missing figure for a blank cell or a zero.
    """
    chosen = rows[rows["metric"].isin(metrics)]
    shown = chosen["value"].round(digits).astype(object).where(chosen["value"].notna(), "n/a")
    table = chosen.assign(shown=shown).pivot(index=index, columns="metric", values="shown")
    table.columns.name = None
    return table.reindex(columns=[m for m in metrics if m in table.columns])


def row_text(rows: pd.DataFrame, metric: str, spec: str) -> str:
    """`text` of one metric among one scope's warehouse rows (n/a when the row is missing)."""
    match = rows[rows["metric"] == metric]
    if match.empty:
        return "n/a"
    value, note = match["value"].iloc[0], match["note"].iloc[0]
    return text(None if pd.isna(value) else float(value), note if isinstance(note, str) else None, spec)


# --------------------------------------------------------------------------------------------
# Probabilistic and deflated Sharpe ratios (Bailey & López de Prado 2012, 2014)


def sharpe_statistics(returns: pd.DataFrame, risk_free_annual: float) -> pd.DataFrame:
    """What a PSR needs, per column: n_obs, sharpe (per period, excess of the per-period
    risk-free rate, ddof=1), skew (G1) and kurtosis (Pearson: G2 + 3), bias-corrected.

    The moments are the risk table's (`skew`, `kurtosis` + 3), from scipy.stats; NaN below 3
    (skew) or 4 (kurtosis) returns, and for constant returns (no Sharpe ratio either).
    """
    from scipy import stats  # ~1 s to import: only when a PSR is asked for

    rf = per_period_rate(risk_free_annual)
    rows = []
    for scope in returns.columns:
        values = returns[scope].to_numpy(dtype=np.float64, na_value=np.nan)
        values = values[np.isfinite(values)]
        n = values.size
        std = values.std(ddof=1) if n >= 2 else 0.0
        varies = std > 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # tiny samples: masked just below
            skew = float(stats.skew(values, bias=False)) if varies and n >= 3 else np.nan
            kurt = float(stats.kurtosis(values, fisher=False, bias=False)) if varies and n >= 4 else np.nan
        sharpe = float((values.mean() - rf) / std) if varies else np.nan
        rows.append({"n_obs": n, "sharpe": sharpe, "skew": skew, "kurtosis": kurt})
    return pd.DataFrame(rows, index=returns.columns, columns=["n_obs", "sharpe", "skew", "kurtosis"])


def probabilistic_sharpe_ratio(
    sharpe: npt.ArrayLike,
    n_obs: npt.ArrayLike,
    skew: npt.ArrayLike,
    kurtosis: npt.ArrayLike,
    benchmark: npt.ArrayLike = 0.0,
) -> float | np.ndarray:
    """PSR = Φ((SR − SR*)·√(n−1) / √(1 − γ3·SR + (γ4−1)/4·SR²)), elementwise.

    SR and SR* per period, γ4 the Pearson kurtosis (normal: 3). The Sharpe ratio of a short or
    fat-tailed sample has a wide sampling distribution; the PSR says how likely the true one
    is above SR* given that width. NaN when n < 2 or the variance term is not positive (an
    extreme skew the asymptotic formula cannot handle).
    """
    from scipy import stats  # ~1 s to import: only when a PSR is asked for

    sr, n = np.asarray(sharpe, dtype=np.float64), np.asarray(n_obs, dtype=np.float64)
    g3, g4 = np.asarray(skew, dtype=np.float64), np.asarray(kurtosis, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        variance = 1.0 - g3 * sr + (g4 - 1.0) / 4.0 * sr**2
        z = (sr - np.asarray(benchmark, dtype=np.float64)) * np.sqrt(n - 1.0) / np.sqrt(variance)
    out = np.where((n >= 2) & (variance > 0), stats.norm.cdf(z), np.nan)
    return out[()] if out.ndim == 0 else out


def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float:
    """SR* of the DSR: the per-period Sharpe ratio the best of `n_trials` skill-free trials shows,
    √V·((1−γ)Φ⁻¹(1−1/N) + γΦ⁻¹(1−1/(N·e))), V the variance of the trials' Sharpe ratios.

    One trial is no selection: 0 (the DSR is then the PSR against 0).
    """
    from scipy import stats  # ~1 s to import: only when a DSR is asked for

    if n_trials < 1:
        raise ValueError(f"need at least one trial, got {n_trials}")
    if n_trials == 1:
        return 0.0
    gamma = np.euler_gamma
    z = (1.0 - gamma) * stats.norm.ppf(1.0 - 1.0 / n_trials) + gamma * stats.norm.ppf(1.0 - 1.0 / (n_trials * np.e))
    return float(np.sqrt(sharpe_variance) * z)


def deflated_sharpe_ratio(
    sharpe: npt.ArrayLike,
    n_obs: npt.ArrayLike,
    skew: npt.ArrayLike,
    kurtosis: npt.ArrayLike,
    n_trials: int,
    sharpe_variance: float,
) -> float | np.ndarray:
    """DSR: the PSR against `expected_max_sharpe(n_trials, sharpe_variance)`, elementwise.

    The best of many backtests looks good by construction; the DSR is the probability that
    its true Sharpe ratio beats what the luckiest of as many skill-free trials would show.
    """
    benchmark = expected_max_sharpe(n_trials, sharpe_variance)
    return probabilistic_sharpe_ratio(sharpe, n_obs, skew, kurtosis, benchmark)


# --------------------------------------------------------------------------------------------
# Portfolios


def _normalized(weights: pd.Series) -> pd.Series:
    """Weights scaled to sum to 1; a zero or undefined total is an error, not a silent NaN."""
    weights = weights.astype(np.float64)
    if weights.isna().any():
        raise ValueError(f"weights have NaN for {list(weights.index[weights.isna()])}")
    total = weights.sum()
    if not np.isfinite(total) or total == 0:
        raise ValueError(f"weights must have a non-zero finite sum, got {total}")
    return weights / total


def _members(returns: pd.DataFrame, weights: pd.Series) -> pd.DataFrame:
    """The returns columns of the weighted tickers (missing ones are an error, by name)."""
    missing = [t for t in weights.index if t not in returns.columns]
    if missing:
        raise ValueError(f"no returns for weighted tickers {missing}")
    return returns[list(weights.index)]


def portfolio_returns(returns: pd.DataFrame, weights: pd.Series) -> pd.Series:
    """Daily returns of a portfolio rebalanced to `weights` every session: Σ wᵢ·rᵢ.

    Weights are normalized to sum 1. A member without a return on a day (not yet listed,
    a data gap) counts as 0 that day, i.e. its weight sits in cash; a day on which no
    member has a return is NaN, so the portfolio's window starts when its data does.
    """
    w = _normalized(weights)
    members = _members(returns, w)
    values = members.to_numpy(dtype=np.float64, na_value=np.nan)
    observed = ~np.isnan(values)
    out = np.nan_to_num(values, nan=0.0) @ w.to_numpy()
    out[~observed.any(axis=1)] = np.nan
    return pd.Series(out, index=returns.index, name="portfolio")


def holdings_weights(holdings: pd.DataFrame, last_prices: pd.Series) -> pd.Series:
    """Market-value weights per ticker: Σ_accounts quantity × last price, over the total.

    Uses the latest `as_of` in `holdings` (the table keeps a history of snapshots). A held
    ticker without a price is an error: valuing it at 0 would quietly understate its risk.
    Positions with zero quantity are dropped.
    """
    missing = {"as_of", "ticker", "quantity"} - set(holdings.columns)
    if missing:
        raise ValueError(f"holdings lacks columns {sorted(missing)}")
    if holdings.empty:
        raise ValueError("holdings is empty")
    as_of = pd.to_datetime(holdings["as_of"])
    latest = holdings[as_of == as_of.max()]
    quantity = latest.groupby("ticker")["quantity"].sum().astype(np.float64)
    quantity = quantity[quantity != 0]
    prices = last_prices.reindex(quantity.index).astype(np.float64)
    unpriced = list(prices.index[prices.isna()])
    if unpriced:
        raise ValueError(f"no last price for held tickers {unpriced}")
    value = quantity * prices
    total = value.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError(f"holdings have no positive market value (total {total})")
    weights = (value / total).sort_index()
    weights.index.name = "ticker"
    return weights.rename("weight")


# --------------------------------------------------------------------------------------------
# Time series tables for the report


def rolling_volatility(returns: pd.DataFrame, window: int, min_periods: int | None = None) -> pd.DataFrame:
    """Annualized rolling volatility per scope (ddof=1, √252) over `window` sessions (params `risk.rolling_window`).

    By default a window needs all `window` returns (a gap gives NaN until it leaves the
    window); pass min_periods to accept fewer.
    """
    return _sorted_returns(returns).rolling(window, min_periods=min_periods).std() * np.sqrt(TRADING_DAYS)


def rolling_beta(
    returns: pd.DataFrame, benchmark: pd.Series, window: int, min_periods: int | None = None
) -> pd.DataFrame:
    """Rolling beta per scope: rolling cov(r, b) / rolling var(b) over sessions where both exist.

    The benchmark is masked to each scope's observed sessions first, so numerator and
    denominator use the same days (as the full-sample beta does). A window whose benchmark
    variance is zero gives NaN.
    """
    returns = _sorted_returns(returns)
    bench = _benchmark_values(benchmark, returns.index)
    values = returns.to_numpy(dtype=np.float64, na_value=np.nan)
    pair = ~np.isnan(values) & ~np.isnan(bench)[:, None]
    y = pd.DataFrame(np.where(pair, values, np.nan), index=returns.index, columns=returns.columns)
    x = pd.DataFrame(np.where(pair, bench[:, None], np.nan), index=returns.index, columns=returns.columns)
    covariance = y.rolling(window, min_periods=min_periods).cov(x)
    variance = x.rolling(window, min_periods=min_periods).var()
    return covariance / variance.where(variance >= _MIN_VARIANCE)


def drawdowns(returns: pd.DataFrame) -> pd.DataFrame:
    """Drawdown per scope and session: wealth / running peak − 1, wealth 1 before day one.

    NaN outside each scope's window (no position yet, or no more data); a gap inside the
    window is a flat day.
    """
    returns = _sorted_returns(returns)
    panel = _panel(returns)
    dd = _drawdown_matrix(panel.values)
    rows = np.arange(len(returns))[:, None]
    dd[(rows < panel.first[None, :]) | (rows > panel.last[None, :]) | (panel.n_obs[None, :] == 0)] = np.nan
    return pd.DataFrame(dd, index=returns.index, columns=returns.columns)


def worst_days(returns: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """The n lowest daily returns of each scope, long: scope, date, return (worst first)."""
    stacked = returns.rename_axis(index="date", columns="scope").stack().dropna()
    stacked = stacked[np.isfinite(stacked.astype(np.float64))]
    if stacked.empty:
        return pd.DataFrame({"scope": [], "date": pd.to_datetime([]), "return": []})
    long = stacked.rename("return").reset_index()
    long = long.sort_values(["scope", "return", "date"], kind="stable")
    long = long.groupby("scope", sort=False).head(n).reset_index(drop=True)
    return long[["scope", "date", "return"]]


def correlation(returns: pd.DataFrame, min_periods: int = 20) -> pd.DataFrame:
    """Pearson correlation of daily returns over the sessions each pair shares.

    A pair with fewer than `min_periods` common sessions is NaN: a correlation on a handful
    of days is noise that a heatmap would show as if it were signal.
    """
    return returns.corr(min_periods=min_periods)


# --------------------------------------------------------------------------------------------
# Stress


#: The stress table's "worst week": this many consecutive sessions of the benchmark.
WORST_WEEK_SESSIONS = 5


def stress_table(
    returns: pd.DataFrame,
    benchmark: pd.Series,
    weights: pd.Series,
    shock: float,
    *,
    portfolio_value: float,
) -> pd.DataFrame:
    """What the current holdings would lose in a market shock, per ticker and in total.

    Rows: the weighted tickers, then "portfolio". Columns:
    weight, held_value (weight × portfolio_value), beta (full-sample, as in risk_metrics),
    shock_return = beta × shock and shock_value = shock_return × held_value (the move a
    benchmark fall of `shock`, params `risk.market_shock`, implies through beta); then the worst
    `WORST_WEEK_SESSIONS`-session run of the benchmark in the data (worst_week_start/end, benchmark_worst_week) replayed on the
    holdings: worst_week_return is each ticker's actual compounded return over those same
    sessions (a gap counts as flat) and worst_week_value = worst_week_return × held_value.

    The portfolio row adds the currency columns up (buy-and-hold over the window) and
    divides by portfolio_value for its returns; its beta is Σ wᵢβᵢ. A ticker whose number is
    missing (no beta, no data in that window) is left out of the sum, with a RiskWarning
    naming it. `portfolio_value` is keyword-only because it has no sensible default.
    """
    returns = _sorted_returns(returns)
    w = _normalized(weights)
    members = _members(returns, w)
    tickers = list(w.index)
    held = w.to_numpy() * float(portfolio_value)
    panel = _panel(members)
    bench_on_returns = _benchmark_values(benchmark, members.index)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        _, beta, _, _ = _alpha_beta(panel.values, bench_on_returns, 0.0)

    bench = benchmark.dropna().sort_index().astype(np.float64)
    start = end = pd.NaT
    bench_week = np.nan
    week = np.full(len(tickers), np.nan)
    window = WORST_WEEK_SESSIONS
    if len(bench) >= window:
        compounded = sliding_window_view(1.0 + bench.to_numpy(), window).prod(axis=1) - 1.0
        worst = int(np.argmin(compounded))
        start, end = bench.index[worst], bench.index[worst + window - 1]
        bench_week = float(compounded[worst])
        inside = members.loc[start:end].to_numpy(dtype=np.float64, na_value=np.nan)
        has = (~np.isnan(inside)).any(axis=0)
        week = np.where(has, np.nanprod(1.0 + inside, axis=0) - 1.0, np.nan)
    else:
        _warn(["benchmark"], f"fewer than {window} benchmark returns, no worst-week replay for")

    table = pd.DataFrame(
        {
            "weight": w.to_numpy(),
            "held_value": held,
            "beta": beta,
            "shock_return": beta * shock,
            "shock_value": beta * shock * held,
            "worst_week_start": start,
            "worst_week_end": end,
            "benchmark_worst_week": bench_week,
            "worst_week_return": week,
            "worst_week_value": week * held,
        },
        index=pd.Index(tickers, name="scope"),
    )
    _warn(table.index[table["beta"].isna()], "no beta, left out of the portfolio's shock_value")
    if not np.isnan(bench_week):
        _warn(table.index[table["worst_week_return"].isna()], "no returns in the worst week, left out of the replay")
    shock_total = table["shock_value"].sum(min_count=1)
    week_total = table["worst_week_value"].sum(min_count=1)
    total = pd.DataFrame(
        {
            "weight": 1.0,
            "held_value": float(portfolio_value),
            "beta": (table["weight"] * table["beta"]).sum(min_count=1),
            "shock_return": shock_total / portfolio_value,
            "shock_value": shock_total,
            "worst_week_start": start,
            "worst_week_end": end,
            "benchmark_worst_week": bench_week,
            "worst_week_return": week_total / portfolio_value,
            "worst_week_value": week_total,
        },
        index=pd.Index(["portfolio"], name="scope"),
    )
    return pd.concat([table, total])


# --------------------------------------------------------------------------------------------
# Charts (tables in, Figure out; the notebook shows them)


#: Heatmaps write each cell's value up to this many rows (more text than this costs more than it tells).
ANNOTATE_UP_TO = 10


def correlation_heatmap(corr: pd.DataFrame, title: str = "Correlation of daily returns") -> Figure:
    """Correlation matrix as a diverging heatmap fixed to [−1, 1], values written when the matrix
    is small (`ANNOTATE_UP_TO`). Fixed margins and a fixed colour-bar axes: one draw."""
    from bentley import charts

    n = len(corr)
    labels = [str(c) for c in corr.columns]
    longest = max((len(label) for label in labels), default=4)
    margin = 0.35 + 0.065 * min(longest, 24)  # room for the tick labels, in inches
    side = max(2.6, min(8.0, 0.34 * n + 1.2))
    width, height = side + margin + 1.3, side + margin + 0.5
    fig, ax = charts.figure(width, height, legend=False, left=margin + 0.35, bottom=margin + 0.15, top=0.4, right=1.2)
    image = ax.imshow(corr.to_numpy(dtype=np.float64), cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
    if n <= 40:
        ax.set_xticks(range(n), labels, rotation=90)
        ax.set_yticks(range(len(corr.index)), [str(i) for i in corr.index])
    ax.grid(False)
    if n <= ANNOTATE_UP_TO:
        values = corr.to_numpy(dtype=np.float64)
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                if np.isfinite(values[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{values[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if abs(values[i, j]) > 0.6 else "black",
                    )
    box = ax.get_position()
    cax = fig.add_axes((box.x1 + 0.25 / width, box.y0, 0.15 / width, box.height))
    fig.colorbar(image, cax=cax, label="Correlation")
    ax.set_title(title)
    ax.set_xlabel("Ticker")
    ax.set_ylabel("Ticker")
    return fig


def rolling_chart(
    frame: pd.DataFrame, title: str, ylabel: str, keep: Sequence[str] = (), percent: bool = False
) -> Figure:
    """One line per column over sessions (rolling volatility, rolling beta...): the columns in `keep`
    (portfolios, the benchmark) and the most extreme others in colour (`charts.MAX_SERIES` in all),
    the rest as grey lines; the legend outside the data."""
    from matplotlib.ticker import PercentFormatter

    from bentley import charts

    fig, ax = charts.figure(9, 4)
    charts.plot_series(
        ax, frame, keep=keep, emphasize=[k for k in keep if str(k).startswith("portfolio:")], others="other tickers"
    )
    ax.set_title(title)
    ax.set_xlabel("Session")
    ax.set_ylabel(ylabel)
    if percent:
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    charts.date_axis(ax)
    charts.legend_outside(ax)
    return fig


def drawdown_chart(dd: pd.DataFrame, title: str = "Drawdown from the running peak", keep: Sequence[str] = ()) -> Figure:
    """Drawdowns (output of `drawdowns`) as percentages below the peak: `keep` and the deepest
    others in colour, the rest grey; the legend outside the data."""
    from matplotlib.ticker import PercentFormatter

    from bentley import charts

    fig, ax = charts.figure(9, 4)
    if dd.shape[1] == 1:
        column = dd.columns[0]
        ax.fill_between(dd.index, dd[column].to_numpy(dtype=np.float64), 0.0, alpha=0.3)
    charts.plot_series(
        ax, dd, keep=keep, emphasize=[k for k in keep if str(k).startswith("portfolio:")], others="other tickers"
    )
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_title(title)
    ax.set_xlabel("Session")
    ax.set_ylabel("Drawdown (below peak)")
    charts.date_axis(ax)
    charts.legend_outside(ax)
    return fig


# --------------------------------------------------------------------------- stage helpers

HOLDINGS_SCOPE = "portfolio:holdings"
EQUAL_SCOPE = "portfolio:equal_weight"
HEADLINE_METRICS = (
    "annual_return",
    "annual_volatility",
    "sharpe_ratio",
    "sortino_ratio",
    "max_drawdown",
    "var_95_historical",
    "cvar_95_historical",
    "var_95_garch",
    "beta",
)


def last_prices(prices: pd.DataFrame) -> pd.Series:
    """The last as-traded close per ticker: what current share counts are worth today."""
    return prices.sort_values("date").groupby("ticker")["close"].last()


def with_portfolios(
    returns: pd.DataFrame,
    holdings: pd.DataFrame,
    prices: pd.DataFrame,
    benchmark: str,
    tradable: Collection[str] | None = None,
) -> tuple[pd.DataFrame, pd.Series]:
    """Add the holdings-weighted and the equal-weighted portfolio as scopes; return the weights.

    The equal-weighted portfolio holds the `tradable` tickers (`bentley.inputs.tradable_tickers`;
    None: every column but the benchmark): an index is a yardstick, not something to hold.
    """
    stocks = [c for c in returns.columns if c != benchmark and (tradable is None or c in tradable)]
    out = returns.copy()
    weights = pd.Series(dtype="float64")
    priced = holdings[holdings["ticker"].isin(out.columns)]
    unpriced = sorted(set(holdings["ticker"]) - set(priced["ticker"]))
    if unpriced:
        _warn(unpriced, "holding has no prices in the universe; left out of portfolio:holdings for scope(s)")
    holdings = priced
    if not holdings.empty:
        weights = holdings_weights(holdings, last_prices(prices))
        held = [t for t in weights.index if t in out.columns]
        out[HOLDINGS_SCOPE] = portfolio_returns(out[held], weights[held])
    out[EQUAL_SCOPE] = portfolio_returns(out[stocks], pd.Series(1.0, index=stocks))
    return out, weights


def headline_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The published metrics (`long_metrics` rows) a reader looks at first, portfolios on top."""
    table = published_table(rows, "scope", HEADLINE_METRICS)
    order = sorted(table.index, key=lambda scope: (not str(scope).startswith("portfolio:"), str(scope)))
    return table.loc[order]


def na_notes(rows: pd.DataFrame, metrics: Sequence[str] = HEADLINE_METRICS) -> list[str]:
    """Why figures of `headline_table` read n/a: each distinct note once, with the scopes it applies to."""
    missing = rows[rows["metric"].isin(metrics) & rows["value"].isna()]
    notes: dict[str, list[str]] = {}
    for row in missing.itertuples():
        why = row.note if isinstance(row.note, str) and row.note else "undefined (no variation in the returns?)"
        notes.setdefault(why, [])
        label = f"`{row.metric}` of {row.scope}"
        if label not in notes[why]:
            notes[why].append(label)
    return [
        f"n/a: {why} ({', '.join(where[:4])}{' and more' if len(where) > 4 else ''})" for why, where in notes.items()
    ]


def stress_sentence(stress: pd.DataFrame, shock: float) -> str:
    """The stress table's portfolio row in words (amounts in USD)."""
    if "portfolio" not in stress.index:
        return "No holdings to stress."
    row = stress.loc["portfolio"]
    parts = [
        f"A {abs(shock):.0%} {'fall' if shock < 0 else 'rise'} of the market would move the holdings by about "
        f"{row['shock_value']:+,.0f} USD ({row['shock_return']:+.1%}) through their beta of {row['beta']:.2f}"
    ]
    if pd.notna(row.get("worst_week_return")):
        parts.append(
            f"replaying the benchmark's worst week ({pd.Timestamp(row['worst_week_start']):%Y-%m-%d} to "
            f"{pd.Timestamp(row['worst_week_end']):%Y-%m-%d}, {row['benchmark_worst_week']:+.1%}) moves them by "
            f"{row['worst_week_value']:+,.0f} USD ({row['worst_week_return']:+.1%})"
        )
    return "; ".join(parts) + "."


def risk_sentence(rows: pd.DataFrame, benchmark: str) -> str:
    """The holdings portfolio against the benchmark in one sentence, from the published rows
    (`long_metrics`): a figure too short to publish reads "n/a (why)". Markdown; names escaped."""
    scopes = set(rows["scope"])
    scope = HOLDINGS_SCOPE if HOLDINGS_SCOPE in scopes else EQUAL_SCOPE
    mine = rows[rows["scope"] == scope]
    loss = mine.assign(value=-mine["value"])  # VaR is a negative return; the sentence says "loses more than"
    versus = ""
    if benchmark in scopes:
        bench = rows[rows["scope"] == benchmark]
        versus = (
            f" (benchmark {md_escape(benchmark)}: Sharpe {row_text(bench, 'sharpe_ratio', '.2f')}, "
            f"max drawdown {row_text(bench, 'max_drawdown', '.1%')})"
        )
    return (
        f"The {scope.split(':')[1].replace('_', '-')} portfolio returned {row_text(mine, 'annual_return', '.1%')} "
        f"a year at {row_text(mine, 'annual_volatility', '.1%')} volatility: Sharpe "
        f"{row_text(mine, 'sharpe_ratio', '.2f')}, beta {row_text(mine, 'beta', '.2f')}, max drawdown "
        f"{row_text(mine, 'max_drawdown', '.1%')}, and on 1 day in 20 it loses more than "
        f"{row_text(loss, 'var_95_historical', '.2%')}{versus}."
    )


def holdings_value(holdings: pd.DataFrame, prices: pd.DataFrame) -> float:
    """Market value of the latest holdings snapshot at the last close (0 with no holdings)."""
    if holdings.empty:
        return 0.0
    latest = holdings[holdings["as_of"] == holdings["as_of"].max()]
    quantity = latest.groupby("ticker")["quantity"].sum()
    return float((quantity * last_prices(prices).reindex(quantity.index)).sum())


def without_portfolios(returns: pd.DataFrame) -> pd.DataFrame:
    return returns.drop(columns=[c for c in returns.columns if str(c).startswith("portfolio:")])


def correlation_sentence(corr: pd.DataFrame) -> str:
    """The most and least correlated pair of distinct scopes (Markdown; names escaped)."""
    pairs = corr.where(~np.eye(len(corr), dtype=bool)).stack()
    pairs = pairs[[a < b for a, b in pairs.index]]
    if pairs.empty:
        return "Too little overlap to measure correlations."
    high, low = pairs.idxmax(), pairs.idxmin()
    return (
        f"The most correlated pair is {md_escape(high[0])} and {md_escape(high[1])} ({pairs[high]:.2f}); "
        f"the least is {md_escape(low[0])} and {md_escape(low[1])} ({pairs[low]:.2f}). "
        "Low correlations are what diversification is made of."
    )


def volatility_sentence(volatility: pd.DataFrame) -> str:
    """Who is more volatile now than on average over the window (Markdown; names escaped)."""
    last_vol, mean_vol = volatility.ffill().iloc[-1], volatility.mean()
    rising = sorted(last_vol[last_vol > 1.2 * mean_vol].index.astype(str))
    named = ", ".join(map(md_escape, rising)) or "no scope"
    return f"Volatility is more than 20% above its window average for {named}."


def beta_sentence(beta: pd.DataFrame) -> str:
    """The highest and lowest current beta (Markdown; names escaped)."""
    last_beta = beta.ffill().iloc[-1].dropna() if len(beta) else pd.Series(dtype=float)
    if last_beta.empty:
        return "Too few sessions for a rolling beta yet."
    high, low = last_beta.idxmax(), last_beta.idxmin()
    text = f"The highest current beta is {md_escape(high)} ({last_beta[high]:.2f})"
    if low != high:
        text += f", the lowest {md_escape(low)} ({last_beta[low]:.2f})"
    return text + ": a beta of 1 moves with the benchmark, above 1 amplifies it."


def rolling_sentence(volatility: pd.DataFrame, beta: pd.DataFrame) -> str:
    """Where volatility and beta stand now against their averages over the window (Markdown;
    names escaped)."""
    last_vol, mean_vol = volatility.ffill().iloc[-1], volatility.mean()
    rising = sorted(last_vol[last_vol > 1.2 * mean_vol].index.astype(str))
    last_beta = beta.ffill().iloc[-1].dropna()
    highest = last_beta.idxmax() if len(last_beta) else None
    named = ", ".join(map(md_escape, rising)) or "no scope"
    parts = [f"Volatility is more than 20% above its window average for {named}."]
    if highest is not None:
        parts.append(f"The highest current beta is {md_escape(highest)} ({last_beta[highest]:.2f}).")
    return " ".join(parts)


def drawdown_sentence(dd: pd.DataFrame) -> str:
    """The deepest drawdown and who is still far from their peak (Markdown; names escaped)."""
    deepest = dd.min()
    worst = deepest.idxmin()
    current = dd.ffill().iloc[-1]
    return (
        f"The deepest fall from a peak was {deepest[worst]:.1%} for {md_escape(worst)} "
        f"(on {dd[worst].idxmin():%Y-%m-%d}); "
        f"at the end of the window the holdings are {-current.get(HOLDINGS_SCOPE, float('nan')):.1%} below their peak."
    )
