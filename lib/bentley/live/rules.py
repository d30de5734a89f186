"""Intraday risk rules, evaluated on every batch: findings that name the rule, the figure, the
threshold and the positions responsible.

| rule (alerts.rule)   | fires when (strictly beyond the threshold)                                  | scope              |
|----------------------|-----------------------------------------------------------------------------|--------------------|
| `watch_daily_loss`   | intraday return vs the previous close < −`trade.limits.daily_loss_limit`     | `portfolio:<book>` |
| `watch_var_breach`   | that return < the 1-day VaR the risk stage stored (`risk_metrics`, scope     | `portfolio:<book>` |
|                      | `portfolio:<book>`, metric `watch.rules.var_breach.metric`, a negative return)|                    |
| `watch_vol_move`     | a held ticker's |return vs previous close| > k × its daily volatility         | the ticker         |
|                      | (risk_metrics `annual_volatility` / √252 of the ticker)                      |                    |
| `watch_drawdown`     | equity below the day's high-water mark by more than the threshold            | `portfolio:<book>` |
| `watch_stale_feed`   | during the session, tickers without a bar for more than the threshold (min)  | `feed`             |
| `watch_bad_tick`     | one bar's |log return| above the threshold (a jump that looks like a bad tick) | the ticker         |

A figure that could not be measured (no VaR stored, a NULL volatility, no previous equity)
never fires, as in `bentley.monitoring.alerts`. Findings become alert episodes through
`bentley.monitoring.alerts.reconcile` (`findings_frame`), one row per (rule, scope).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bentley.features import TRADING_DAYS
from bentley.live.settings import WatchRules
from bentley.live.stream import Snapshot, StreamState
from bentley.warehouse import Warehouse

#: Positions named in a message.
_NAMED = 5


@dataclass(frozen=True)
class Finding:
    rule: str
    scope: str
    severity: str
    value: float
    threshold: float
    message: str
    tickers: tuple[str, ...] = ()


@dataclass(frozen=True)
class RiskContext:
    """What the rules need besides the stream: limits and the risk stage's stored figures."""

    portfolio: str
    daily_loss_limit: float  # trade.limits.daily_loss_limit (a positive share)
    var_1d: float = math.nan  # a negative return; NaN: none stored
    daily_vol: dict[str, float] = field(default_factory=dict)  # ticker -> daily volatility (a share)
    expected_tickers: tuple[str, ...] = ()
    session_open: pd.Timestamp | None = None
    session_close: pd.Timestamp | None = None


def stored_risk(
    warehouse: Warehouse, portfolio: str, tickers: list[str], day: dt.date, var_metric: str
) -> tuple[float, dict[str, float]]:
    """(1-day VaR of the book, daily volatility per ticker) from the latest `risk_metrics` before `day`."""
    frame = warehouse.read("risk_metrics", columns=["run_id", "scope", "metric", "value", "window_end"])
    if frame.empty:
        return math.nan, {}
    frame = frame[pd.to_datetime(frame["window_end"]) < pd.Timestamp(day)]
    frame = frame.sort_values(["window_end", "run_id"], kind="stable")

    def latest(scope: str, metric: str) -> float:
        rows = frame[(frame["scope"] == scope) & (frame["metric"] == metric)]
        value = rows["value"].iloc[-1] if len(rows) else math.nan
        return float(value) if value is not None and pd.notna(value) else math.nan

    var = latest(f"portfolio:{portfolio}", var_metric)
    vols = {t: latest(t, "annual_volatility") / math.sqrt(TRADING_DAYS) for t in tickers}
    return var, {t: v for t, v in vols.items() if math.isfinite(v) and v > 0}


def _responsible(snapshot: Snapshot) -> tuple[str, ...]:
    """Held tickers losing money, worst first (at most _NAMED)."""
    losers = sorted((pnl, t) for t, pnl in snapshot.position_pnl.items() if pnl < 0)
    return tuple(t for _, t in losers[:_NAMED])


def _naming(snapshot: Snapshot, tickers: tuple[str, ...]) -> str:
    if not tickers:
        return ""
    parts = [f"{t} {snapshot.position_pnl[t]:+,.0f}" for t in tickers]
    return f"; largest losses: {', '.join(parts)}"


def evaluate(snapshot: Snapshot, state: StreamState, context: RiskContext, rules: WatchRules) -> list[Finding]:
    """Every enabled rule's findings on the state after one batch."""
    found: list[Finding] = []
    book = f"portfolio:{context.portfolio}"
    pnl = snapshot.pnl_pct
    losers = _responsible(snapshot)
    at = snapshot.ts.strftime("%H:%M UTC")

    rule: Any = rules.daily_loss
    if rule.enabled and math.isfinite(pnl) and pnl < -context.daily_loss_limit:
        found.append(
            Finding(
                "watch_daily_loss",
                book,
                rule.severity,
                pnl,
                context.daily_loss_limit,
                f"Paper portfolio {context.portfolio} is down {-pnl:.2%} ({snapshot.pnl:+,.0f}) since "
                f"the previous close at {at} (daily loss limit {context.daily_loss_limit:.2%})"
                f"{_naming(snapshot, losers)}.",
                losers,
            )
        )
    rule = rules.var_breach
    if rule.enabled and math.isfinite(pnl) and math.isfinite(context.var_1d) and pnl < context.var_1d:
        found.append(
            Finding(
                "watch_var_breach",
                book,
                rule.severity,
                pnl,
                context.var_1d,
                f"Paper portfolio {context.portfolio} is down {-pnl:.2%} at {at}, beyond its 1-day "
                f"{rules.var_breach.metric} of {context.var_1d:.2%}{_naming(snapshot, losers)}.",
                losers,
            )
        )
    rule = rules.vol_move
    if rule.enabled:
        k = float(rule.threshold)
        for ticker in sorted(state.quantities):
            vol = context.daily_vol.get(ticker, math.nan)
            move = state.tickers[ticker].day_return if ticker in state.tickers else math.nan
            if math.isfinite(vol) and math.isfinite(move) and abs(move) > k * vol:
                found.append(
                    Finding(
                        "watch_vol_move",
                        ticker,
                        rule.severity,
                        move / vol,
                        k,
                        f"{ticker} moved {move:+.2%} since the previous close at {at}, "
                        f"{abs(move) / vol:.1f} times its daily volatility of {vol:.2%} "
                        f"(limit {k:g}x); position P&L {snapshot.position_pnl.get(ticker, 0.0):+,.0f}.",
                        (ticker,),
                    )
                )
    rule = rules.drawdown
    if rule.enabled and snapshot.drawdown < -float(rule.threshold):
        found.append(
            Finding(
                "watch_drawdown",
                book,
                rule.severity,
                snapshot.drawdown,
                float(rule.threshold),
                f"Paper portfolio {context.portfolio} is {-snapshot.drawdown:.2%} below the day's high "
                f"of {snapshot.high_water:,.0f} at {at} (limit {float(rule.threshold):.2%})"
                f"{_naming(snapshot, losers)}.",
                losers,
            )
        )
    rule = rules.stale_feed
    if rule.enabled and _in_session(snapshot.ts, context):
        limit = float(rule.threshold)
        assert context.session_open is not None
        since_open = (snapshot.ts - context.session_open).total_seconds() / 60.0
        ages = state.staleness_minutes(snapshot.ts, list(context.expected_tickers))
        stale = sorted(t for t, age in ages.items() if age > limit and (math.isfinite(age) or since_open > limit))
        if stale:
            worst = max(min(ages[t], since_open) for t in stale)
            found.append(
                Finding(
                    "watch_stale_feed",
                    "feed",
                    rule.severity,
                    worst,
                    limit,
                    f"No bar for more than {limit:g} minutes at {at} from {len(stale)} ticker(s): "
                    f"{', '.join(stale[:_NAMED])}{' and more' if len(stale) > _NAMED else ''}.",
                    tuple(stale),
                )
            )
    rule = rules.bad_tick
    if rule.enabled:
        limit = float(rule.threshold)
        for ticker, r in sorted(snapshot.bar_returns.items()):
            if abs(r) > limit:
                found.append(
                    Finding(
                        "watch_bad_tick",
                        ticker,
                        rule.severity,
                        r,
                        limit,
                        f"{ticker} jumped {math.expm1(r):+.2%} in one bar at {at} (limit "
                        f"{math.expm1(limit):.2%}): check the feed before trusting the marks.",
                        (ticker,),
                    )
                )
    return found


def _in_session(ts: pd.Timestamp, context: RiskContext) -> bool:
    if context.session_open is None or context.session_close is None:
        return False
    return context.session_open <= ts < context.session_close


def findings_frame(findings: list[Finding]) -> pd.DataFrame:
    """Findings in `bentley.monitoring.alerts.FINDING_COLUMNS`, for `alerts.reconcile`."""
    from bentley.monitoring.alerts import FINDING_COLUMNS

    rows = [
        {
            "rule": f.rule,
            "scope": f.scope,
            "severity": f.severity,
            "value": f.value,
            "threshold": f.threshold,
            "message": f.message,
        }
        for f in findings
    ]
    frame = pd.DataFrame(rows, columns=list(FINDING_COLUMNS))
    return frame.drop_duplicates(["rule", "scope"], keep="last").reset_index(drop=True)
