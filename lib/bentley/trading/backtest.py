"""Backtest: replay target weights through execution, risk limits and costs, session by session.

A research score only matters if it survives the frictions between a decision and a fill, so
this module answers one question: what would the equity curve have been had the targets been
traded under the rules the paper broker uses? Three things make that honest:

* **No lookahead.** `targets` holds the weights *decided at the close* of each session. They
  execute on the next session, never the same one: at its open (`execution="next_open"`) or
  at its close (`"next_close"`). With next_open the overnight move (close t → open t+1) is
  earned by the old holdings, the trade happens at the open and the intraday move (open →
  close t+1) by the new ones; with next_close the trade happens at close t+1 and the new
  holdings earn from t+2 on. Nothing after session t enters the result at t (a test proves it).
* **The same risk rules as the broker.** Every decision goes through
  `bentley.trading.limits.apply_limits(held, target, session_return, limits)`, with the
  weights held at close t (after drift and after any trade executed that session) and the
  portfolio's net return on t. Every resized or blocked action is kept in `limit_events`.
* **Costs where trades happen.** At execution each ticker pays |Δw| × (commission + slippage)
  bps, plus, when `impact_coefficient` is set, coefficient × volume share × traded value with
  volume share = traded value / the execution session's dollar volume (raw close × raw
  volume) and traded value = |Δw| × equity in USD (equity starts at `capital`). A session
  without a positive dollar volume (NaN or 0) has no impact term for that ticker: the cost is
  understated there rather than made up.

Conventions, so the numbers can be checked by hand:

* Prices are adjusted like the features (open × adj_close / close; close = adj_close), so
  splits and dividends are not returns. A missing price is the last known one (a gap, a halt
  or a delisting is a flat day, the next print carries the whole move), and a ticker without
  a print at the execution price (open or close) cannot trade that session: it keeps its
  weight, and its target waits for the next decision.
* Weights drift with prices between trades (shares are held): after a move r,
  wᵢ ← wᵢ(1 + rᵢ)/(1 + r_p). A trade sets the weights to the decided ones, as shares of the
  equity after that trade's costs (costs are paid from the whole book, so
  1 + net = (1 + gross) × (1 − cost) every session). Constant targets therefore rebalance
  the drift every session, and pay for it.
* Cash is 1 − Σw (negative when levered or short) and earns the per-period risk-free rate
  (1 + rf)^(1/252) − 1 (`risk.per_period_rate`); a session's interest accrues on the cash
  held at the previous close.
* The first session has no return (there is no previous close); decisions of the last session
  have nowhere to execute and are not made, so neither are their limit events. The turnover
  limit is checked against the weights held at the decision; the executed trade starts from
  the weights drifted to the execution price, so the turnover actually traded can differ from
  the limit by that session's drift.

Speed: limits and drift are path dependent, so the simulation is one loop over sessions with
numpy operations across tickers and no pandas inside; price paths are prepared once per
`Market` and shared by every run of a sweep (bench/backtest.py measures both).

Metrics use the risk stage's functions (`risk.risk_metrics`, `risk.long_metrics`), so names
and conventions (ARCHITECTURE.md §6) are the same in both reports, and so is what gets
published: a figure resting on fewer daily returns than `risk.min_observations` asks for is
stored as NULL with a note and reads "n/a (why)" (`risk.published`).

Every published figure can be rebuilt from the warehouse: `position_rows` and `equity_rows`
turn a run into the rows of backtest_positions (decided, held and traded per session and
ticker) and backtest_equity (returns, costs, equity, turnover and exposure per session), keyed
by run and strategy like backtest_metrics; `benchmark_result` makes the benchmark a run of its
own for them.

The sweep tries many configurations, and the best of many looks good by construction. Each
configuration gets its probabilistic Sharpe ratio (PSR: how likely its true Sharpe is above 0)
and its deflated Sharpe ratio (DSR: how likely it is above what the best of that many
skill-free configurations would show, given the spread of their Sharpe ratios); the verdict on
the best configuration follows from its DSR (`overfitting_note`), and `selection_metrics`
stores PSR, DSR and the number of trials for the signal and for the sweep's best.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from bentley import charts
from bentley.analytics import risk
from bentley.config import Costs, MinObservations
from bentley.features import TRADING_DAYS
from bentley.reporting import md_escape
from bentley.trading.limits import Events, Limits, apply_limits

if TYPE_CHECKING:  # matplotlib is imported by the chart helpers only, when they are called
    from matplotlib.figure import Figure

Execution = Literal["next_open", "next_close"]
EXECUTIONS: tuple[str, ...] = ("next_open", "next_close")
#: Columns of BacktestResult.trades and .limit_events.
TRADE_COLUMNS: tuple[str, ...] = ("date", "ticker", "weight_before", "weight_after", "traded_value", "cost")
EVENT_COLUMNS: tuple[str, ...] = ("date", "ticker", "rule", "requested", "allowed")
#: Columns of the audit tables backtest_positions and backtest_equity (`position_rows`, `equity_rows`).
POSITION_COLUMNS: tuple[str, ...] = (
    "run_id",
    "strategy",
    "date",
    "ticker",
    "score",
    "target_weight",
    "weight_before",
    "weight_after",
    "weight",
    "traded_value",
)
EQUITY_COLUMNS: tuple[str, ...] = (
    "run_id",
    "strategy",
    "date",
    "gross_return",
    "cost",
    "net_return",
    "equity",
    "turnover",
    "gross_exposure",
)
#: The sweep table's metric columns, after config and the grid parameters.
SWEEP_METRICS: tuple[str, ...] = (
    "annual_return",
    "annual_volatility",
    "sharpe_ratio",
    "max_drawdown",
    "turnover",
    "cost_drag",
)
#: The sweep table's last columns: the returns each row rests on, and its PSR and DSR.
SWEEP_EVIDENCE: tuple[str, ...] = ("n_obs", "psr", "dsr")
#: backtest_metrics rows of `selection_metrics`, for the signal and for SWEEP_BEST.
SELECTION_METRICS: tuple[str, ...] = ("psr", "dsr", "trials")
#: Strategy names of backtest_metrics and the audit tables: the signal's backtest, the benchmark.
SIGNAL_STRATEGY = "signal"
BENCHMARK_STRATEGY = "benchmark"
#: The strategy name of the sweep's best configuration in backtest_metrics (its note names it).
SWEEP_BEST = "sweep:best"

#: A weight change smaller than this is float noise from drift arithmetic, not a trade.
_TRADE_TOLERANCE = 1e-12


# --------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class _Paths:
    """Float arrays (sessions x tickers) the simulation reads; row t is session t."""

    close_return: np.ndarray  # close t-1 → close t, 0 where unknown
    overnight: np.ndarray  # close t-1 → open t
    intraday: np.ndarray  # open t → close t
    open_ok: np.ndarray  # a print at the open: the ticker can trade at next_open
    close_ok: np.ndarray  # a print at the close
    inverse_dollar_volume: np.ndarray  # 1 / dollar volume, 0 where there is none


@dataclass(frozen=True)
class Market:
    """Adjusted open and close and raw dollar volume: index sorted sessions, one column per ticker.

    Treat it as read-only: the price paths every run reads are derived from the frames once,
    on the first backtest, and kept.
    """

    open: pd.DataFrame
    close: pd.DataFrame
    dollar_volume: pd.DataFrame

    def __post_init__(self) -> None:
        index, columns = self.close.index, self.close.columns
        for name in ("open", "dollar_volume"):
            frame = getattr(self, name)
            if not (frame.index.equals(index) and frame.columns.equals(columns)):
                raise ValueError(f"market.{name} must have the sessions and tickers of market.close")
        if not index.is_monotonic_increasing or index.has_duplicates:
            raise ValueError("market sessions must be sorted and unique")
        if columns.has_duplicates:
            raise ValueError("market tickers must be unique")

    @classmethod
    def from_prices(cls, prices: pd.DataFrame) -> Market:
        """From the warehouse prices table (ticker, date, open, close, adj_close, volume, ...).

        open is adjusted by adj_close / close like the features; a zero or missing close
        leaves the adjusted open missing rather than inventing a factor.
        """
        needed = {"ticker", "date", "open", "close", "adj_close", "volume"}
        missing = needed - set(prices.columns)
        if missing:
            raise ValueError(f"prices lacks columns {sorted(missing)}")
        if prices.duplicated(["ticker", "date"]).any():
            raise ValueError("prices has duplicate (ticker, date) rows")
        frame = pd.DataFrame(
            {c: prices[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in ("open", "close", "adj_close", "volume")}
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            factor = frame["adj_close"] / frame["close"]
        factor[~np.isfinite(factor)] = np.nan
        frame["adj_open"] = frame["open"] * factor
        frame["dollar_volume"] = frame["close"] * frame["volume"]
        frame["ticker"] = prices["ticker"].to_numpy()
        frame["date"] = pd.to_datetime(prices["date"].to_numpy())
        wide = frame.pivot(index="date", columns="ticker", values=["adj_open", "adj_close", "dollar_volume"])
        wide = wide.sort_index()

        def part(name: str) -> pd.DataFrame:
            out = wide[name].sort_index(axis=1)
            out.columns.name = "ticker"
            return out

        return cls(open=part("adj_open"), close=part("adj_close"), dollar_volume=part("dollar_volume"))

    @property
    def returns(self) -> pd.DataFrame:
        """Close-to-close simple returns (NaN next to a missing close), first session dropped."""
        return self.close.pct_change(fill_method=None).iloc[1:]

    @cached_property
    def _paths(self) -> _Paths:
        """Returns of each leg on last-known prices, computed once and shared by every run."""
        raw_open = self.open.to_numpy(dtype=np.float64, na_value=np.nan)
        raw_close = self.close.to_numpy(dtype=np.float64, na_value=np.nan)
        open_ok = np.isfinite(raw_open) & (raw_open > 0)
        close_ok = np.isfinite(raw_close) & (raw_close > 0)
        # last known price at each close: the close, else that session's open, else earlier
        known = np.where(close_ok, raw_close, np.where(open_ok, raw_open, np.nan))
        last = pd.DataFrame(known).ffill().to_numpy()
        previous = np.vstack([np.full((1, last.shape[1]), np.nan), last[:-1]])
        at_open = np.where(open_ok, raw_open, previous)
        with np.errstate(divide="ignore", invalid="ignore"):
            legs = [last / previous - 1.0, at_open / previous - 1.0, last / at_open - 1.0]
            volume = self.dollar_volume.to_numpy(dtype=np.float64, na_value=np.nan)
            inverse = np.where(np.isfinite(volume) & (volume > 0), 1.0 / volume, 0.0)
        for leg in legs:
            leg[~np.isfinite(leg)] = 0.0  # before the listing: nothing held can move
        return _Paths(
            close_return=legs[0],
            overnight=legs[1],
            intraday=legs[2],
            open_ok=open_ok,
            close_ok=close_ok,
            inverse_dollar_volume=inverse,
        )


# --------------------------------------------------------------------------------------------
# The simulation


@dataclass(frozen=True)
class BacktestResult:
    """One backtest. Per-session flows are indexed by the sessions after the first (the first
    has no return); states at each close (equity, weights, exposure) by every session.

    returns / gross_returns: net / before-cost daily returns, (1 + net) = (1 + gross)(1 − costs).
    equity / gross_equity: USD, capital at the first close.
    weights: held at each close (after that session's trades and drift), sessions x tickers.
    weights_before / weights_after: just before / just after each session's execution, sessions
    x tickers; equal where nothing traded (a ticker without a print, and the first session,
    which has no execution).
    turnover: Σ|Δw| traded per session; costs: cost per session as a share of the equity at
    execution. exposure: gross Σ|w| and net Σw at each close.
    trades: date (execution session), ticker, weight_before, weight_after, traded_value (USD),
    cost (USD). limit_events: date (decision session), ticker, rule, requested, allowed.
    """

    returns: pd.Series
    gross_returns: pd.Series
    equity: pd.Series
    gross_equity: pd.Series
    weights: pd.DataFrame
    weights_before: pd.DataFrame
    weights_after: pd.DataFrame
    turnover: pd.Series
    costs: pd.Series
    exposure: pd.DataFrame
    trades: pd.DataFrame
    limit_events: pd.DataFrame
    capital: float


def _aligned(targets: pd.DataFrame, market: Market) -> tuple[slice, np.ndarray]:
    """Market rows spanned by the targets' sessions, and the market column of each target ticker.

    A session inside that span missing from targets, or a date or ticker the market does not
    have, is an error: each is far more likely a join bug than a decision to go flat.
    """
    sessions, tickers = market.close.index, market.close.columns
    if targets.index.empty:
        raise ValueError("targets has no sessions")
    if targets.index.has_duplicates or targets.columns.has_duplicates:
        raise ValueError("targets has duplicated sessions or tickers")
    columns = tickers.get_indexer(targets.columns)
    if (columns < 0).any():
        raise ValueError(f"targets has tickers without prices: {list(targets.columns[columns < 0])[:5]}")
    rows = sessions.get_indexer(targets.index)
    if (rows < 0).any():
        raise ValueError(f"targets has dates that are not market sessions: {list(targets.index[rows < 0])[:5]}")
    first, last = int(rows.min()), int(rows.max())
    if len(rows) != last - first + 1:
        raise ValueError("targets skips market sessions inside its span; give every session a row")
    return slice(first, last + 1), columns


def _columns(matrix: np.ndarray, rows: slice, columns: np.ndarray) -> np.ndarray:
    """matrix[rows, columns], a view when the columns are the market's own in order."""
    if len(columns) == matrix.shape[1] and (columns == np.arange(matrix.shape[1])).all():
        return matrix[rows]
    return matrix[rows][:, columns]


@dataclass(frozen=True)
class _Path:
    """What the session loop records, as arrays (row t = session t of the run)."""

    held: np.ndarray  # weights at each close
    before: np.ndarray  # weights just before each session's execution
    after: np.ndarray  # weights just after it
    equity: np.ndarray  # USD at each close
    at_execution: np.ndarray  # USD just before each session's trade
    gross: np.ndarray  # return before costs
    cost: np.ndarray  # cost as a share of at_execution
    inverse_volume: np.ndarray  # 1 / dollar volume of each session, 0 where there is none


def run_backtest(
    targets: pd.DataFrame,
    market: Market,
    *,
    execution: Execution,
    costs: Costs,
    limits: Limits,
    risk_free_rate: float,
    capital: float,
) -> BacktestResult:
    """Trade `targets` (weights decided at each close, NaN = 0) on `market`; see the module doc.

    The run spans the market sessions from the first to the last row of `targets` (sorted by
    date), one column per target ticker; risk_free_rate is annual, capital in USD.
    """
    if execution not in EXECUTIONS:
        raise ValueError(f"execution must be one of {EXECUTIONS}, got {execution!r}")
    if not capital > 0:
        raise ValueError(f"capital must be positive, got {capital}")
    targets = targets.sort_index()
    rows, columns = _aligned(targets, market)
    paths = market._paths
    next_open = execution == "next_open"
    path, events = _simulate(
        np.nan_to_num(targets.to_numpy(dtype=np.float64, na_value=np.nan)),
        first_leg=_columns(paths.overnight if next_open else paths.close_return, rows, columns),
        intraday=_columns(paths.intraday, rows, columns) if next_open else None,
        tradable=_columns(paths.open_ok if next_open else paths.close_ok, rows, columns),
        inverse_volume=_columns(paths.inverse_dollar_volume, rows, columns),
        costs=costs,
        limits=limits,
        rf=risk.per_period_rate(risk_free_rate),
        capital=float(capital),
    )
    return _result(market.close.index[rows], targets.columns, path, events, costs, float(capital))


def _simulate(
    wanted: np.ndarray,
    *,
    first_leg: np.ndarray,
    intraday: np.ndarray | None,
    tradable: np.ndarray,
    inverse_volume: np.ndarray,
    costs: Costs,
    limits: Limits,
    rf: float,
    capital: float,
) -> tuple[_Path, list[tuple[int, list[Events]]]]:
    """The session loop: move (first leg), trade, [move intraday], decide.

    first_leg is the close-to-close return (next_close) or the overnight one (next_open, then
    `intraday` is the open-to-close leg); only the decision is path dependent, the rest of
    each step is a handful of vector operations across tickers.
    """
    n_sessions, n_tickers = wanted.shape
    held = np.zeros((n_sessions, n_tickers))
    before = np.zeros((n_sessions, n_tickers))
    after = np.zeros((n_sessions, n_tickers))
    equity = np.empty(n_sessions)
    at_execution = np.zeros(n_sessions)
    gross = np.zeros(n_sessions)
    cost = np.zeros(n_sessions)
    events: list[tuple[int, list[Events]]] = []  # (session, its events)
    linear = (costs.commission_bps + costs.slippage_bps) / 1e4
    impact = costs.impact_coefficient

    w = np.zeros(n_tickers)
    value = capital
    decided = w
    session_return = np.nan
    for t in range(n_sessions):
        if t:
            move = first_leg[t]
            growth = 1.0 + (w @ move + (1.0 - w.sum()) * rf)
            w = w * (1.0 + move) / growth
            value *= growth
            new = np.where(tradable[t], decided, w)
            traded = np.abs(new - w)
            cost_t = linear * traded.sum()
            if impact is not None:
                cost_t += impact * value * (traded * traded * inverse_volume[t]).sum()
            before[t], after[t], at_execution[t], cost[t] = w, new, value, cost_t
            value *= 1.0 - cost_t
            w = new
            if intraday is not None:
                leg = intraday[t]
                inside = 1.0 + w @ leg
                w = w * (1.0 + leg) / inside
                value *= inside
                growth *= inside
            gross[t] = growth - 1.0
            session_return = growth * (1.0 - cost_t) - 1.0
        held[t], equity[t] = w, value
        if t + 1 < n_sessions:
            decision = apply_limits(w, wanted[t], session_return, limits)
            decided = decision.weights
            if decision.events:
                events.append((t, decision.events))
    path = _Path(
        held=held,
        before=before,
        after=after,
        equity=equity,
        at_execution=at_execution,
        gross=gross,
        cost=cost,
        inverse_volume=inverse_volume,
    )
    return path, events


def _result(
    sessions: pd.Index,
    tickers: pd.Index,
    path: _Path,
    events: list[tuple[int, list[Events]]],
    costs: Costs,
    capital: float,
) -> BacktestResult:
    """The arrays of the loop as labelled tables."""
    flows = sessions[1:]
    delta = path.after - path.before
    turnover = np.abs(delta).sum(axis=1)
    row, column = np.nonzero(np.abs(delta) > _TRADE_TOLERANCE)
    traded_value = np.abs(delta[row, column]) * path.at_execution[row]
    trade_cost = traded_value * (costs.commission_bps + costs.slippage_bps) / 1e4
    if costs.impact_coefficient is not None:
        trade_cost += costs.impact_coefficient * traded_value**2 * path.inverse_volume[row, column]
    trades = pd.DataFrame(
        {
            "date": sessions.take(row),
            "ticker": tickers.take(column),
            "weight_before": path.before[row, column],
            "weight_after": path.after[row, column],
            "traded_value": traded_value,
            "cost": trade_cost,
        },
        columns=list(TRADE_COLUMNS),
    )
    flat = [(t, e) for t, session in events for e in session]
    if flat:
        limit_events = pd.DataFrame(
            {
                "date": sessions.take(np.concatenate([np.full(e.positions.size, t) for t, e in flat])),
                "ticker": tickers.take(np.concatenate([e.positions for _, e in flat])),
                "rule": np.concatenate([np.full(e.positions.size, e.rule, dtype=object) for _, e in flat]),
                "requested": np.concatenate([e.requested for _, e in flat]),
                "allowed": np.concatenate([e.allowed for _, e in flat]),
            },
            columns=list(EVENT_COLUMNS),
        )
    else:
        limit_events = pd.DataFrame(columns=list(EVENT_COLUMNS))
    equity, held = path.equity, path.held
    gross_equity = capital * np.cumprod(np.concatenate([[1.0], 1.0 + path.gross[1:]]))
    return BacktestResult(
        returns=pd.Series(equity[1:] / equity[:-1] - 1.0, index=flows, name="returns"),
        gross_returns=pd.Series(path.gross[1:], index=flows, name="gross_returns"),
        equity=pd.Series(equity, index=sessions, name="equity"),
        gross_equity=pd.Series(gross_equity, index=sessions, name="gross_equity"),
        weights=pd.DataFrame(held, index=sessions, columns=tickers),
        weights_before=pd.DataFrame(path.before, index=sessions, columns=tickers),
        weights_after=pd.DataFrame(path.after, index=sessions, columns=tickers),
        turnover=pd.Series(turnover[1:], index=flows, name="turnover"),
        costs=pd.Series(path.cost[1:], index=flows, name="costs"),
        exposure=pd.DataFrame({"gross": np.abs(held).sum(axis=1), "net": held.sum(axis=1)}, index=sessions),
        trades=trades,
        limit_events=limit_events,
        capital=capital,
    )


# --------------------------------------------------------------------------------------------
# Metrics


def _metrics_table(returns: pd.DataFrame, risk_free_rate: float) -> pd.DataFrame:
    """risk.risk_metrics without GARCH nor benchmark (beta and alpha are NaN); its RiskWarnings
    (a flat all-cash run has no losing day) are the risk stage's business, not a summary's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", risk.RiskWarning)
        return risk.risk_metrics(returns, pd.Series(np.nan, index=returns.index), risk_free_rate, garch=False)


def backtest_metrics(
    result: BacktestResult,
    benchmark_returns: pd.Series,
    risk_free_rate: float,
    run_id: str,
    strategy: str,
    *,
    minimums: MinObservations,
    garch: bool,
) -> pd.DataFrame:
    """Warehouse rows for the strategy and the benchmark over the same sessions.

    Columns run_id, strategy, metric, value, window_start, window_end, n_obs, note: the rows
    of `risk.long_metrics` with `scope` renamed `strategy`, so every name, convention and
    publishing rule is the risk stage's (beta and alpha against `benchmark_returns`). The
    benchmark rows are named "benchmark" and cover the backtest's sessions only.
    """
    if strategy == BENCHMARK_STRATEGY:
        raise ValueError(f"strategy cannot be named {BENCHMARK_STRATEGY!r}: that name is the benchmark's rows")
    frame = pd.DataFrame(
        {strategy: result.returns, BENCHMARK_STRATEGY: benchmark_returns.reindex(result.returns.index)}
    )
    table = risk.risk_metrics(frame, benchmark_returns, risk_free_rate, garch=garch)
    return risk.long_metrics(table, run_id, minimums).rename(columns={"scope": "strategy"})


def cost_drag(result: BacktestResult) -> float:
    """Annual return lost to costs: CAGR before costs minus CAGR after (risk.py's CAGR)."""
    frame = pd.DataFrame({"gross": result.gross_returns, "net": result.returns})
    annual = _metrics_table(frame, 0.0)["annual_return"]
    return float(annual["gross"] - annual["net"])


def published_cost_drag(result: BacktestResult, minimums: MinObservations) -> tuple[float | None, str | None]:
    """`cost_drag` as `risk.published` lets it out: an annualized figure like any other."""
    return risk.published(cost_drag(result), int(result.returns.notna().sum()), "cost_drag", minimums)


def trade_list(result: BacktestResult, n: int = 20, *, latest: bool = False) -> pd.DataFrame:
    """The n largest trades by traded value (latest=True: the n most recent, largest first per day)."""
    trades = result.trades
    order = ["date", "traded_value"] if latest else ["traded_value", "date"]
    return trades.sort_values(order, ascending=False, kind="stable").head(n).reset_index(drop=True)


def summary_sentence(
    result: BacktestResult, benchmark_returns: pd.Series, risk_free_rate: float, minimums: MinObservations
) -> str:
    """One sentence of interpretation for the report: return, risk, costs, limits, vs benchmark.

    A backtest too short for annualized figures is described by what it did (cumulative
    return, drawdown) and says why the rest is n/a, instead of extrapolating days to a year.
    """
    frame = pd.DataFrame(
        {"strategy": result.returns, BENCHMARK_STRATEGY: benchmark_returns.reindex(result.returns.index)}
    )
    table = _metrics_table(frame, risk_free_rate)

    def figure(scope: str, metric: str) -> tuple[float | None, str | None]:
        row = table.loc[scope]
        return risk.published(row[metric], int(row["n_obs"]), metric, minimums)

    ours_sharpe, note = figure("strategy", "sharpe_ratio")
    drawdown = risk.text(*figure("strategy", "max_drawdown"), ".1%")
    resized = f"the risk limits resized {len(result.limit_events)} actions"
    if note:
        bench_total = table.loc[BENCHMARK_STRATEGY, "cumulative_return"]
        return (
            f"After costs the strategy returned {table.loc['strategy', 'cumulative_return']:+.2%} in total "
            f"(benchmark {bench_total:+.2%}), max drawdown {drawdown}; its Sharpe ratio and the other annualized "
            f"figures are n/a ({note}), and {resized}."
        )
    bench_sharpe, _ = figure(BENCHMARK_STRATEGY, "sharpe_ratio")
    if ours_sharpe is None or bench_sharpe is None:
        verdict = "not comparable with the benchmark's Sharpe of"
    else:
        verdict = (
            "ahead of the benchmark's Sharpe of" if ours_sharpe > bench_sharpe else "behind the benchmark's Sharpe of"
        )
    return (
        f"After costs the strategy returned {risk.text(*figure('strategy', 'annual_return'), '.1%')} a year at "
        f"{risk.text(*figure('strategy', 'annual_volatility'), '.1%')} volatility (Sharpe "
        f"{risk.text(ours_sharpe, note, '.2f')}, max drawdown {drawdown}), {verdict} "
        f"{risk.text(bench_sharpe, None, '.2f')}; trading {result.turnover.mean():.1%} of the book a session cost "
        f"{risk.text(*published_cost_drag(result, minimums), '.2%')} a year, and {resized}."
    )


# --------------------------------------------------------------------------------------------
# Audit rows: every session of a backtest, so any published figure can be rebuilt with SQL


def position_rows(
    result: BacktestResult, targets: pd.DataFrame, scores: pd.DataFrame | None, run_id: str, strategy: str
) -> pd.DataFrame:
    """backtest_positions rows (POSITION_COLUMNS) of one backtest: what was decided, held and traded.

    Row (date t, ticker): `score` and `target_weight` decided at t's close from `scores` and
    `targets` (the targets given to run_backtest, NaN = 0); they execute on t+1 through the
    limits, so the target of the last session is never traded. `weight_before` and
    `weight_after` surround t's execution (of t−1's limited decision; equal when nothing
    traded), `weight` is held at t's close, `traded_value` the USD of `result.trades` at t, 0
    when none. `scores` None (the benchmark has none) stores NULL.

    Kept: the (session, ticker) pairs where a weight (before, after or at the close), the
    target or the traded value is non-zero. Every other pair is zero in every column but the
    score, so a missing row reads as zeros and a SQL aggregate over the stored rows equals the
    one over the full grid: Σ|weight_after − weight_before| per date is the turnover, Σ|weight|
    the gross exposure, Σ traded_value the USD traded. A score alone does not keep a row: a
    name scored below the entry threshold moved no figure, and keeping it would store the whole
    sessions x tickers grid.
    """
    sessions, tickers = result.weights.index, result.weights.columns
    target = np.nan_to_num(targets.reindex(index=sessions, columns=tickers).to_numpy(dtype=np.float64, na_value=np.nan))
    score = (
        np.full(target.shape, np.nan)
        if scores is None
        else scores.reindex(index=sessions, columns=tickers).to_numpy(dtype=np.float64, na_value=np.nan)
    )
    before, after, held = (
        frame.to_numpy(dtype=np.float64) for frame in (result.weights_before, result.weights_after, result.weights)
    )
    traded = np.zeros(target.shape)
    trades = result.trades
    traded[sessions.get_indexer(trades["date"]), tickers.get_indexer(trades["ticker"])] = trades[
        "traded_value"
    ].to_numpy(dtype=np.float64)
    row, column = np.nonzero((target != 0) | (before != 0) | (after != 0) | (held != 0) | (traded != 0))
    return pd.DataFrame(
        {
            "run_id": run_id,
            "strategy": strategy,
            "date": sessions.take(row),
            "ticker": tickers.take(column),
            "score": score[row, column],
            "target_weight": target[row, column],
            "weight_before": before[row, column],
            "weight_after": after[row, column],
            "weight": held[row, column],
            "traded_value": traded[row, column],
        },
        columns=list(POSITION_COLUMNS),
    )


def equity_rows(result: BacktestResult, run_id: str, strategy: str) -> pd.DataFrame:
    """backtest_equity rows (EQUITY_COLUMNS) of one backtest: one per session, flows and state.

    The first session has no flows (no previous close): its gross_return, cost, net_return and
    turnover are NULL and its equity is the capital. So, over a strategy's rows, COUNT(net_return)
    is the n_obs of backtest_metrics, AVG(turnover) the sweep's turnover, and each equity is the
    first one times Π(1 + net_return) up to it. Costs are a share of the equity at execution,
    paid from the whole book, so the relation is multiplicative: 1 + net = (1 + gross)(1 − cost)
    (net = gross − cost − gross × cost, not gross − cost). A NULL net_return after the first
    session is a session without a return (the benchmark without a print): a flat day in equity
    and a gap in the metrics, as in `risk.risk_metrics`.
    """
    sessions = result.equity.index

    def flow(series: pd.Series) -> np.ndarray:
        return series.reindex(sessions).to_numpy(dtype=np.float64, na_value=np.nan)

    return pd.DataFrame(
        {
            "run_id": run_id,
            "strategy": strategy,
            "date": sessions,
            "gross_return": flow(result.gross_returns),
            "cost": flow(result.costs),
            "net_return": flow(result.returns),
            "equity": result.equity.to_numpy(dtype=np.float64),
            "turnover": flow(result.turnover),
            "gross_exposure": result.exposure["gross"].to_numpy(dtype=np.float64),
        },
        columns=list(EQUITY_COLUMNS),
    )


def benchmark_result(result: BacktestResult, benchmark_returns: pd.Series) -> BacktestResult:
    """The benchmark over `result`'s sessions as a backtest of its own, for its audit rows: the
    capital is in it from the first close and stays, with no trade, cost or cash (weights 1).

    Its returns are the ones `backtest_metrics` scores as BENCHMARK_STRATEGY (NaN where the
    benchmark has none), its equity the equity chart's (such a day is flat), so the rows rebuild
    those figures. The ticker is the series' name.
    """
    if benchmark_returns.name is None:
        raise ValueError("benchmark_returns must be named after the benchmark's ticker")
    sessions, flows = result.equity.index, result.returns.index
    returns = benchmark_returns.reindex(flows).astype(np.float64)
    equity = _benchmark_equity(result, benchmark_returns)
    held = pd.DataFrame(1.0, index=sessions, columns=pd.Index([benchmark_returns.name], name="ticker"))
    nothing = pd.Series(0.0, index=flows)
    return BacktestResult(
        returns=returns.rename("returns"),
        gross_returns=returns.rename("gross_returns"),
        equity=equity.rename("equity"),
        gross_equity=equity.rename("gross_equity"),
        weights=held,
        weights_before=held,
        weights_after=held,
        turnover=nothing.rename("turnover"),
        costs=nothing.rename("costs"),
        exposure=pd.DataFrame({"gross": 1.0, "net": 1.0}, index=sessions),
        trades=pd.DataFrame(columns=list(TRADE_COLUMNS)),
        limit_events=pd.DataFrame(columns=list(EVENT_COLUMNS)),
        capital=result.capital,
    )


# --------------------------------------------------------------------------------------------
# Tearsheet charts (tables in, Figure out; matplotlib is imported when one is drawn)


def _benchmark_equity(result: BacktestResult, benchmark_returns: pd.Series) -> pd.Series:
    """The capital invested in the benchmark at the first close (a missing day is flat)."""
    bench = benchmark_returns.reindex(result.returns.index).fillna(0.0).to_numpy(dtype=np.float64)
    path = result.capital * np.cumprod(np.concatenate([[1.0], 1.0 + bench]))
    return pd.Series(path, index=result.equity.index, name=BENCHMARK_STRATEGY)


def equity_chart(result: BacktestResult, benchmark_returns: pd.Series, *, log_scale: bool = False) -> Figure:
    """Growth of the capital, net of costs, against the same capital in the benchmark."""
    fig, ax = charts.figure(9, 4)
    ax.plot(result.equity.index, result.equity, label="Strategy (net of costs)", linewidth=1.2)
    bench = _benchmark_equity(result, benchmark_returns)
    ax.plot(bench.index, bench, label="Benchmark", linewidth=1.0, color="grey")
    if log_scale:
        ax.set_yscale("log")
    ax.set_title(f"Growth of {result.capital:,.0f} USD")
    ax.set_xlabel("Session")
    ax.set_ylabel("Equity (USD)")
    charts.legend_outside(ax)
    return fig


def drawdown_chart(result: BacktestResult, benchmark_returns: pd.Series | None = None) -> Figure:
    """The strategy's drawdown from its running peak (and the benchmark's), via the risk stage's chart."""
    frame = pd.DataFrame({"strategy": result.returns})
    if benchmark_returns is not None:
        frame[BENCHMARK_STRATEGY] = benchmark_returns.reindex(result.returns.index)
    return risk.drawdown_chart(risk.drawdowns(frame), title="Backtest drawdown from the running peak")


def monthly_returns(returns: pd.Series) -> pd.DataFrame:
    """Compounded return per calendar month: years x months 1..12, NaN where there is no session."""
    index = pd.DatetimeIndex(returns.index)
    monthly = (1.0 + returns).groupby([index.year, index.month]).prod() - 1.0
    table = monthly.unstack().reindex(columns=range(1, 13))
    table.index.name, table.columns.name = "year", "month"
    return table


def monthly_returns_heatmap(returns: pd.Series) -> Figure:
    """Monthly compounded returns, years x months, annotated in percent, diverging around 0."""
    from matplotlib.ticker import PercentFormatter

    table = monthly_returns(returns)
    values = table.to_numpy(dtype=np.float64)
    limit = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 0.01
    fig, ax = charts.figure(10, max(2.5, 0.45 * len(table) + 1.5), legend=False, right=1.4)
    image = ax.imshow(values, cmap="RdYlGn", vmin=-limit, vmax=limit, aspect="auto")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.1%}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(12), ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"])
    ax.set_yticks(range(len(table)), [str(y) for y in table.index])
    fig.colorbar(image, ax=ax, label="Monthly return", format=PercentFormatter(1.0))
    ax.set_title("Monthly returns (compounded, net of costs)")
    return fig


#: Tearsheet conventions, not settings (no params key): a half-year rolling Sharpe ratio and a
#: month's mean turnover, as QuantStats draws them.
ROLLING_SHARPE_SESSIONS = 126
TURNOVER_MEAN_SESSIONS = 21


def rolling_sharpe(returns: pd.Series, risk_free_rate: float, window: int) -> pd.Series:
    """Annualized Sharpe over a rolling window, risk.py's definition (excess returns, ddof=1)."""
    excess = returns - risk.per_period_rate(risk_free_rate)
    rolling = excess.rolling(window)
    return (rolling.mean() / rolling.std() * np.sqrt(TRADING_DAYS)).rename("rolling_sharpe")


def rolling_sharpe_chart(
    returns: pd.Series, risk_free_rate: float, minimums: MinObservations, window: int = ROLLING_SHARPE_SESSIONS
) -> Figure:
    """Rolling annualized Sharpe ratio with the whole period's as a reference line, drawn only
    when `risk.published` lets it out (the title says why otherwise)."""
    series = rolling_sharpe(returns, risk_free_rate, window)
    row = _metrics_table(returns.to_frame("strategy"), risk_free_rate).loc["strategy"]
    full, note = risk.published(row["sharpe_ratio"], int(row["n_obs"]), "sharpe_ratio", minimums)
    fig, ax = charts.figure(9, 3.8, top=0.6)
    ax.plot(series.index, series, linewidth=1.0, label=f"{window}-session Sharpe")
    title = f"Rolling Sharpe ratio ({window} sessions, annualized)"
    if full is not None:
        ax.axhline(full, color="black", linestyle="--", linewidth=0.8, label=f"Whole period {full:.2f}")
    else:
        title += f"\nwhole period: {risk.text(None, note, '')}"
    ax.axhline(0.0, color="grey", linewidth=0.6)
    ax.set_title(title)
    ax.set_xlabel("Session")
    ax.set_ylabel("Sharpe ratio")
    charts.legend_outside(ax)
    return fig


def exposure_turnover_chart(result: BacktestResult, window: int = TURNOVER_MEAN_SESSIONS) -> Figure:
    """Gross and net exposure at each close above, daily turnover and its rolling mean below."""
    from matplotlib.ticker import PercentFormatter

    fig, (top, bottom) = charts.figure(9, 5, rows=2, sharex=True)
    top.plot(result.exposure.index, result.exposure["gross"], label="Gross Σ|w|", linewidth=1.0)
    top.plot(result.exposure.index, result.exposure["net"], label="Net Σw", linewidth=1.0)
    top.yaxis.set_major_formatter(PercentFormatter(1.0))
    top.set_ylabel("Exposure")
    top.set_title("Exposure and turnover")
    charts.legend_outside(top)
    bottom.plot(result.turnover.index, result.turnover, linewidth=0.5, color="grey", label="Daily")
    bottom.plot(
        result.turnover.index, result.turnover.rolling(window).mean(), linewidth=1.2, label=f"{window}-session mean"
    )
    bottom.yaxis.set_major_formatter(PercentFormatter(1.0))
    bottom.set_ylabel("Turnover Σ|Δw|")
    bottom.set_xlabel("Session")
    charts.legend_outside(bottom)
    return fig


def cost_drag_chart(result: BacktestResult, minimums: MinObservations) -> Figure:
    """Equity before and after costs: the gap between the lines is what trading cost."""
    drag, note = published_cost_drag(result, minimums)
    fig, ax = charts.figure(9, 4)
    ax.plot(result.gross_equity.index, result.gross_equity, label="Before costs", linewidth=1.0)
    ax.plot(result.equity.index, result.equity, label="After costs", linewidth=1.0)
    ax.fill_between(
        result.equity.index,
        result.equity.to_numpy(),
        result.gross_equity.to_numpy(),
        alpha=0.25,
        color="tab:red",
        label="Costs",
    )
    ax.set_title(
        f"Cost drag: {drag:.2%} a year" if drag is not None else f"Cost drag a year: {risk.text(None, note, '')}"
    )
    ax.set_xlabel("Session")
    ax.set_ylabel("Equity (USD)")
    charts.legend_outside(ax)
    return fig


def tearsheet_sentences(
    result: BacktestResult, benchmark_returns: pd.Series, minimums: MinObservations
) -> dict[str, str]:
    """One sentence under each tearsheet chart (keys: drawdown, monthly, exposure, costs), saying
    what the chart shows in figures, so a reader need not read it off the axes."""
    frame = pd.DataFrame({"strategy": result.returns})
    frame[BENCHMARK_STRATEGY] = benchmark_returns.reindex(result.returns.index)
    drawn = risk.drawdowns(frame)
    worst = drawn["strategy"]
    bottom = worst.idxmin() if worst.notna().any() else None
    drawdown = (
        f"The deepest fall from a peak was {worst.min():.1%} (on {pd.Timestamp(bottom):%Y-%m-%d}); "
        f"the benchmark's was {drawn[BENCHMARK_STRATEGY].min():.1%}."
        if bottom is not None
        else "No session to measure a drawdown on yet."
    )
    months = monthly_returns(result.returns).stack()
    monthly = (
        f"{(months > 0).sum()} of {len(months)} months gained; the best {months.max():+.1%}, "
        f"the worst {months.min():+.1%}."
        if len(months)
        else "No complete month yet."
    )
    exposure = (
        f"On average {result.exposure['gross'].mean():.0%} of the equity was invested and "
        f"{result.turnover.mean():.1%} of it traded per session ({int((result.turnover > 0).sum())} "
        f"of {len(result.turnover)} sessions traded)."
    )
    drag, note = published_cost_drag(result, minimums)
    paid = result.gross_equity.iloc[-1] - result.equity.iloc[-1]
    costs = f"Costs took {paid:,.0f} USD from the final equity" + (
        f", {drag:.2%} a year." if drag is not None else f"; a yearly figure is n/a ({note})."
    )
    return {"drawdown": drawdown, "monthly": monthly, "exposure": exposure, "costs": costs}


# --------------------------------------------------------------------------------------------
# Parameter sweep


def config_name(params: Mapping[str, float]) -> str:
    """ "entry_threshold=0.05,model_weight=0.4": a configuration's label, in grid order."""
    return ",".join(f"{name}={value}" for name, value in params.items())


def sweep(
    build_targets: Callable[[Mapping[str, float]], pd.DataFrame],
    grid: Mapping[str, Sequence[float]],
    market: Market,
    **backtest_kwargs: Any,
) -> pd.DataFrame:
    """One backtest per combination of the grid (itertools.product in grid order).

    Rows: config, one column per grid parameter, then SWEEP_METRICS: annual_return,
    annual_volatility, sharpe_ratio, max_drawdown (risk.py conventions, net of costs),
    turnover (mean Σ|Δw| per session) and cost_drag (CAGR before minus after costs); then
    SWEEP_EVIDENCE: n_obs (daily returns), psr (against 0) and dsr (against the best of all
    the configurations by luck, `luck_bar`). `backtest_kwargs` go to run_backtest unchanged
    (execution, costs, limits, risk_free_rate, capital). The market's price paths are
    prepared once for all runs.

    The figures are raw, whatever the length of the runs: pass the table through
    `published_sweep` before storing or showing it.
    """
    names = list(grid)
    for name in names:
        if len(set(grid[name])) != len(grid[name]):
            raise ValueError(f"grid[{name!r}] repeats a value")
    net: dict[str, pd.Series] = {}
    gross: dict[str, pd.Series] = {}
    rows: list[dict[str, Any]] = []
    for combo in itertools.product(*(grid[name] for name in names)):
        params = dict(zip(names, combo, strict=True))
        config = config_name(params)
        result = run_backtest(build_targets(params), market, **backtest_kwargs)
        net[config], gross[config] = result.returns, result.gross_returns
        rows.append({"config": config, **params, "turnover": float(result.turnover.mean())})
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=["config", *names, *SWEEP_METRICS, *SWEEP_EVIDENCE])
    rf = backtest_kwargs["risk_free_rate"]
    metrics = _metrics_table(pd.DataFrame(net), rf)
    gross_annual = _metrics_table(pd.DataFrame(gross), rf)["annual_return"]
    for column in ("annual_return", "annual_volatility", "sharpe_ratio", "max_drawdown"):
        table[column] = metrics[column].reindex(table["config"]).to_numpy()
    table["cost_drag"] = gross_annual.reindex(table["config"]).to_numpy() - table["annual_return"].to_numpy()
    moments = risk.sharpe_statistics(pd.DataFrame(net), rf).reindex(table["config"])
    sharpe, n_obs, skew, kurtosis = (moments[c].to_numpy() for c in ("sharpe", "n_obs", "skew", "kurtosis"))
    table["n_obs"] = moments["n_obs"].to_numpy(dtype=np.int64)
    table["psr"] = risk.probabilistic_sharpe_ratio(sharpe, n_obs, skew, kurtosis)
    table["dsr"] = risk.probabilistic_sharpe_ratio(sharpe, n_obs, skew, kurtosis, benchmark=luck_bar(table))
    return table[["config", *names, *SWEEP_METRICS, *SWEEP_EVIDENCE]]


def best_configuration(table: pd.DataFrame) -> pd.Series | None:
    """The `sweep` row with the highest Sharpe ratio (the first of a tie), None when no row has
    one: the configuration stored as SWEEP_BEST in backtest_metrics and the audit tables."""
    sharpe = table["sharpe_ratio"].astype(np.float64)
    return table.loc[sharpe.idxmax()] if sharpe.notna().any() else None


def sweep_parameters(table: pd.DataFrame, row: pd.Series) -> dict[str, Any]:
    """The grid values of one `sweep` row by name (its columns between config and the metrics):
    what `build_targets` was given for that configuration, to run it again."""
    names = table.columns[1 : table.columns.get_loc(SWEEP_METRICS[0])]
    return {name: row[name] for name in names}


def luck_bar(table: pd.DataFrame) -> float:
    """The per-period Sharpe ratio the best of the sweep's configurations would show with no
    skill: `risk.expected_max_sharpe` over all of them (a configuration without a Sharpe ratio
    was still a try), with the variance (ddof=1) of the Sharpe ratios they have. NaN when
    fewer than two have one and more than one was tried: there is no spread to judge luck by.
    """
    per_period = table["sharpe_ratio"].astype(np.float64).dropna() / math.sqrt(TRADING_DAYS)
    variance = float(per_period.var(ddof=1)) if len(per_period) >= 2 else math.nan
    return risk.expected_max_sharpe(len(table), variance)


def published_sweep(table: pd.DataFrame, minimums: MinObservations) -> pd.DataFrame:
    """The sweep table with every figure `risk.published` holds back set to NaN (turnover, a
    plain average of what was traded, always stays): what is stored and shown."""
    out = table.copy()
    for column in ("annual_return", "annual_volatility", "sharpe_ratio", "max_drawdown", "cost_drag", "psr", "dsr"):
        values = [
            risk.published(v, int(n), column, minimums)[0] for v, n in zip(out[column], out["n_obs"], strict=True)
        ]
        out[column] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return out


def sweep_heatmap(table: pd.DataFrame, x: str, y: str, metric: str = "sharpe_ratio") -> Figure:
    """A sweep metric over two grid parameters (each (x, y) pair must appear once)."""
    import matplotlib.pyplot as plt

    if table.duplicated([x, y]).any():
        raise ValueError(f"several configurations share each ({x}, {y}) pair; filter the other parameters first")
    grid = table.pivot(index=y, columns=x, values=metric).sort_index().sort_index(axis=1)
    values = grid.to_numpy(dtype=np.float64)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * grid.shape[1] + 2.5), max(3.0, 0.5 * grid.shape[0] + 1.5)))
    image = ax.imshow(values, cmap="viridis", aspect="auto", origin="lower")
    if values.size <= 144:
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                if np.isfinite(values[i, j]):
                    # the stubs type image.norm as the abstract Norm (ArrayLike out); a scalar in is one out
                    bright = bool(np.asarray(image.norm(values[i, j])) > 0.6)  # viridis turns yellow: dark text there
                    ax.text(
                        j,
                        i,
                        f"{values[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="black" if bright else "white",
                    )
    ax.set_xticks(range(grid.shape[1]), [str(v) for v in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [str(v) for v in grid.index])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    fig.colorbar(image, ax=ax, label=metric)
    ax.set_title(f"{metric} per configuration")
    fig.tight_layout()
    return fig


def _versus(value: float, bar: float) -> tuple[str, str]:
    """value and bar with enough decimals (2 or more) that a reader sees which side it is on."""
    digits = 2
    while digits < 6 and round(value, digits) == round(bar, digits) and value != bar:
        digits += 1
    return f"{value:.{digits}f}", f"{bar:.{digits}f}"


def overfitting_note(table: pd.DataFrame, minimums: MinObservations, confidence: float) -> str:
    """The sweep's verdict on its best configuration (Markdown; the config is escaped).

    The best Sharpe ratio of many tries is biased upwards, so the verdict follows from the
    best configuration's DSR against `confidence` (params `risk.dsr_confidence`), with the
    DSR printed: a verdict that changes between two runs shows by how little it did.
    Pass the raw `sweep` table; figures are published here.
    """
    n = len(table)
    best = best_configuration(table)
    if best is None:
        return (
            f"{n} configurations were tried and none has a Sharpe ratio (their returns do not vary): nothing to select."
        )
    sharpe = table["sharpe_ratio"].astype(np.float64)
    n_obs = int(best["n_obs"])
    best_sharpe, note = risk.published(best["sharpe_ratio"], n_obs, "sharpe_ratio", minimums)
    if note:
        return (
            f"{n} configurations were tried; their Sharpe ratios are n/a ({note}), so neither a best "
            "configuration nor whether it beats luck can be told yet."
        )
    median, _ = risk.published(float(sharpe.median()), n_obs, "sharpe_ratio", minimums)
    bar = luck_bar(table) * math.sqrt(TRADING_DAYS)
    head = (
        f"{n} configurations were tried; the best ({md_escape(best['config'])}) has a Sharpe ratio of "
        f"{best_sharpe:.2f} against a median of {risk.text(median, None, '.2f')}"
    )
    if math.isfinite(bar):
        head += (
            f", where the best of {n} configurations with no skill and this spread of results would show "
            f"about {bar:.2f}"
        )
    dsr, dsr_note = risk.published(best["dsr"], n_obs, "dsr", minimums)
    if dsr_note:
        verdict = f"DSR n/a ({dsr_note}): whether it is more than luck cannot be told yet."
    elif dsr is None:
        verdict = (
            "DSR n/a: fewer than two configurations have a Sharpe ratio, so there is no spread to judge luck by."
            if not math.isfinite(bar)
            else "DSR n/a: the skewness and kurtosis of its returns leave it undefined."
        )
    else:
        shown, limit = _versus(dsr, confidence)
        verdict = (
            f"DSR {shown} ≥ {limit}: the best of {n} configurations is likely more than luck."
            if dsr >= confidence
            else f"DSR {shown} < {limit}: the best of {n} configurations is indistinguishable from luck."
        )
    return f"{head}. {verdict}"


def selection_metrics(
    result: BacktestResult,
    table: pd.DataFrame,
    risk_free_rate: float,
    run_id: str,
    strategy: str,
    minimums: MinObservations,
) -> pd.DataFrame:
    """backtest_metrics rows psr, dsr and trials for `strategy` (the backtest in `result`) and
    for SWEEP_BEST, the sweep's best Sharpe ratio (named in its rows' note).

    `table` is the raw `sweep` over the backtest's sessions: the trials that set the DSR's
    bar (`luck_bar`), whether or not the backtest's own configuration is one of them. Values
    go through `risk.published`, so a short backtest stores NULL and the reason.
    """
    returns = result.returns.dropna()
    n_obs = len(returns)
    if len(table) and (table["n_obs"] != n_obs).any():
        raise ValueError(f"the sweep must run on the backtest's {n_obs} sessions with a return")
    ours = risk.sharpe_statistics(returns.to_frame(strategy), risk_free_rate).iloc[0]
    args = (ours["sharpe"], n_obs, ours["skew"], ours["kurtosis"])
    bar = luck_bar(table) if len(table) else math.nan
    trials = float(len(table))
    # strategy -> (its psr, dsr, trials in SELECTION_METRICS order, what its rows rest on)
    figures: dict[str, tuple[tuple[float, float, float], str | None]] = {
        strategy: (
            (
                float(risk.probabilistic_sharpe_ratio(*args)),
                float(risk.probabilistic_sharpe_ratio(*args, benchmark=bar)),
                trials,
            ),
            None,
        )
    }
    best = best_configuration(table)
    if best is not None:
        figures[SWEEP_BEST] = (
            (float(best["psr"]), float(best["dsr"]), trials),
            f"{best['config']}: the best Sharpe ratio of {len(table)} configurations",
        )
    rows = []
    for name, (values, named) in figures.items():
        for metric, value in zip(SELECTION_METRICS, values, strict=True):
            shown, note = risk.published(value, n_obs, metric, minimums)
            rows.append(
                {
                    "run_id": run_id,
                    "strategy": name,
                    "metric": metric,
                    "value": np.nan if shown is None else shown,
                    "window_start": returns.index.min(),
                    "window_end": returns.index.max(),
                    "n_obs": n_obs,
                    "note": note or named,
                }
            )
    return pd.DataFrame(rows, columns=["run_id", "strategy", "metric", *risk.LONG_COLUMNS[3:]])
