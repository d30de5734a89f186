"""Risk limits: what stands between a target portfolio and the orders that reach it.

One function decides one session for the whole universe, so the backtest (a loop over
sessions, vectorized across tickers) and the paper broker (the logical date only) apply
exactly the same rules in the same order:

1. `max_position_weight` — no weight beyond ±cap (the target is clipped);
2. `max_gross_exposure` — Σ|w| at most the limit (every weight scaled down together);
3. `daily_loss_limit` — once the portfolio lost at least the limit on the session the
   decision is made, no new risk that day: a position may shrink or close, never grow or
   open or flip;
4. `max_daily_turnover` — Σ|w − previous| at most the limit: every trade is scaled by the
   same factor, so the portfolio moves part of the way to the target.

Steps 3 and 4 move the weights between the previous portfolio and the (clipped) target;
when the previous portfolio satisfied 1 and 2, so does any point between, so a later rule
never undoes an earlier one. Every weight a rule changed is reported with the rule, the
weight asked for and the weight allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from bentley.config import TradeLimits

#: Rules in the order they apply; the names recorded for blocked or resized actions.
RULES: tuple[str, ...] = ("max_position_weight", "max_gross_exposure", "daily_loss_limit", "max_daily_turnover")
EVENT_COLUMNS: tuple[str, ...] = ("ticker", "rule", "requested", "allowed")
_TOLERANCE = 1e-12


@dataclass(frozen=True)
class Limits:
    max_position_weight: float  # |w| per ticker, a share of equity
    max_gross_exposure: float  # Σ|w|
    max_daily_turnover: float  # Σ|w - previous| per session
    daily_loss_limit: float  # a positive share of equity: a session return <= -limit stops new risk

    @classmethod
    def from_params(cls, settings: TradeLimits) -> Limits:
        return cls(
            max_position_weight=settings.max_position_weight,
            max_gross_exposure=settings.max_gross_exposure,
            max_daily_turnover=settings.max_daily_turnover,
            daily_loss_limit=settings.daily_loss_limit,
        )


@dataclass(frozen=True)
class Events:
    """One rule's resized or blocked actions: ticker positions, weights asked for and allowed.

    Arrays rather than one object per action: a binding gross cap resizes every position of
    a 500-name book, every session of a ten-year backtest.
    """

    rule: str
    positions: np.ndarray
    requested: np.ndarray
    allowed: np.ndarray


@dataclass(frozen=True)
class Decision:
    """The weights a session may hold, and the actions the rules resized or blocked."""

    weights: np.ndarray
    events: list[Events]  # in rule order, only rules that changed something

    def events_frame(self, tickers: pd.Index | list[Any]) -> pd.DataFrame:
        labels = np.asarray(list(tickers), dtype=object)
        if not self.events:
            return pd.DataFrame(columns=list(EVENT_COLUMNS))
        return pd.DataFrame(
            {
                "ticker": np.concatenate([labels[e.positions] for e in self.events]),
                "rule": np.concatenate([np.full(e.positions.size, e.rule, dtype=object) for e in self.events]),
                "requested": np.concatenate([e.requested for e in self.events]),
                "allowed": np.concatenate([e.allowed for e in self.events]),
            },
            columns=list(EVENT_COLUMNS),
        )


def apply_limits(previous: np.ndarray, target: np.ndarray, session_return: float, limits: Limits) -> Decision:
    """The weights to hold after this session's decision, given the weights held before it.

    `previous` and `target` are weights per ticker (NaN is 0); `session_return` is the
    portfolio's return on the session the decision is made (NaN: not known, no loss rule).
    """
    previous = _zero_nan(previous)
    asked = _zero_nan(target)
    events: list[Events] = []

    weights = np.clip(asked, -limits.max_position_weight, limits.max_position_weight)
    _record(events, "max_position_weight", asked, weights)

    gross = np.abs(weights).sum()
    if gross > limits.max_gross_exposure + _TOLERANCE:
        before = weights
        weights = weights * (limits.max_gross_exposure / gross)
        _record(events, "max_gross_exposure", before, weights)

    if np.isfinite(session_return) and session_return <= -limits.daily_loss_limit:
        before = weights
        same_side = np.sign(weights) == np.sign(previous)
        weights = np.where(same_side, np.sign(weights) * np.minimum(np.abs(weights), np.abs(previous)), 0.0)
        _record(events, "daily_loss_limit", before, weights)

    trades = weights - previous
    turnover = np.abs(trades).sum()
    if turnover > limits.max_daily_turnover + _TOLERANCE:
        before = weights
        weights = previous + trades * (limits.max_daily_turnover / turnover)
        _record(events, "max_daily_turnover", before, weights)
    return Decision(weights=weights, events=events)


def _zero_nan(values: np.ndarray) -> np.ndarray:
    """float64 with NaN as 0 (np.where is faster than np.nan_to_num on the backtest's hot path)."""
    array = np.asarray(values, dtype=np.float64)
    return np.where(np.isnan(array), 0.0, array)


def _record(events: list[Events], rule: str, before: np.ndarray, after: np.ndarray) -> None:
    changed = np.flatnonzero(np.abs(before - after) > _TOLERANCE)
    if changed.size:
        events.append(Events(rule, changed, before[changed], after[changed]))
