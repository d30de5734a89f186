"""Trading signals: one score per ticker and session, and the target weights it implies.

The score blends three views, each scaled to [-1, 1] so the weights in params mean what
they say:

* **model** — 2p − 1 from the champion's probability of a higher close `ml.horizon`
  sessions ahead (0 for a coin flip or no prediction). For history, the probabilities are
  the model's out-of-sample walk-forward rows, never in-sample fits.
* **technical** — the technical stage's rule events (crosses, RSI extremes, breakouts) as
  Σ direction × strength on the day, fading linearly over `technical_decay_sessions`.
* **sentiment** — the daily mean headline tone (VADER compound, 0 without news), smoothed
  with an exponential half-life of `sentiment_halflife_sessions`.

score = Σ wᵢ · componentᵢ / Σ wᵢ, and each term is reported as the component's
contribution. Every value at session t uses data at or before t; execution happens later
(the backtest and the paper broker trade a score from t at t+1 at the earliest).

Target weights gate and size: a name is held long when its score reaches the entry
threshold (short at −threshold when shorting is allowed), the held names share the book in
proportion to a base allocation (point-in-time inverse volatility in the backtest, the
optimizer's target weights live), and with a volatility target the whole book is scaled to
the target volatility estimated from the held portfolio's trailing returns, never above the
gross-exposure limit. Risk limits come after (bentley.trading.limits).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from bentley.features import TRADING_DAYS

COMPONENTS: tuple[str, ...] = ("model", "technical", "sentiment")
SIGNAL_COLUMNS: tuple[str, ...] = ("ticker", "date", "score", *COMPONENTS, "target_weight", "weight")


def _wide(rows: pd.DataFrame, column: str, sessions: pd.Index, tickers: pd.Index) -> pd.DataFrame:
    """A long (ticker, date, value) table as sessions × tickers, 0 where there is no row."""
    if rows.empty:
        return pd.DataFrame(0.0, index=sessions, columns=tickers)
    table = rows.assign(date=pd.to_datetime(rows["date"])).pivot_table(
        index="date", columns="ticker", values=column, aggfunc="sum"
    )
    return table.reindex(index=sessions, columns=tickers).fillna(0.0).astype(np.float64)


def model_component(predictions: pd.DataFrame, sessions: pd.Index, tickers: pd.Index) -> pd.DataFrame:
    """2p − 1 per session and ticker; 0 where the model has no probability."""
    rows = (
        predictions.assign(edge=2.0 * predictions["proba_up"].astype(np.float64) - 1.0)
        if len(predictions)
        else predictions
    )
    return _wide(rows, "edge", sessions, tickers)


def technical_component(
    events: pd.DataFrame, sessions: pd.Index, tickers: pd.Index, decay_sessions: int
) -> pd.DataFrame:
    """Σ direction × strength of the day's rule events, fading linearly to 0 after `decay_sessions`."""
    rows = (
        events.assign(push=events["direction"].astype(np.float64) * events["strength"].astype(np.float64))
        if len(events)
        else events
    )
    daily = _wide(rows, "push", sessions, tickers).to_numpy()
    kernel = 1.0 - np.arange(decay_sessions) / decay_sessions  # today 1, then 1 - k/decay
    faded = np.zeros_like(daily)
    for lag, weight in enumerate(kernel):
        faded[lag:] += weight * daily[: daily.shape[0] - lag]
    return pd.DataFrame(np.clip(faded, -1.0, 1.0), index=sessions, columns=tickers)


def sentiment_component(daily: pd.DataFrame, sessions: pd.Index, tickers: pd.Index, halflife: float) -> pd.DataFrame:
    """Exponentially smoothed daily tone (a day without headlines counts as neutral, 0)."""
    tone = _wide(daily, "mean_compound", sessions, tickers)
    return tone.ewm(halflife=halflife, adjust=True).mean().clip(-1.0, 1.0)


def normalized_weights(weights: Mapping[str, float]) -> dict[str, float]:
    total = float(sum(weights[name] for name in COMPONENTS))
    if total <= 0:
        raise ValueError("trade.signal_weights: at least one component needs a positive weight")
    return {name: weights[name] / total for name in COMPONENTS}


def with_model_weight(weights: Mapping[str, float], model_weight: float) -> dict[str, float]:
    """The sweep's knob: the model gets `model_weight`, the others share the rest in their ratio."""
    others = weights["technical"] + weights["sentiment"]
    if others <= 0:
        return {"model": 1.0, "technical": 0.0, "sentiment": 0.0}
    rest = 1.0 - model_weight
    return {
        "model": model_weight,
        "technical": rest * weights["technical"] / others,
        "sentiment": rest * weights["sentiment"] / others,
    }


def contributions(components: Mapping[str, pd.DataFrame], weights: Mapping[str, float]) -> dict[str, pd.DataFrame]:
    """Each component times its normalized weight; the score is their sum."""
    shares = normalized_weights(weights)
    return {name: components[name] * shares[name] for name in COMPONENTS}


def score(components: Mapping[str, pd.DataFrame], weights: Mapping[str, float]) -> pd.DataFrame:
    parts = contributions(components, weights)
    return parts["model"] + parts["technical"] + parts["sentiment"]


def inverse_volatility(returns: pd.DataFrame, window: int) -> pd.DataFrame:
    """1 / trailing daily volatility (ddof=1) per session, from returns up to that session only."""
    vol = returns.rolling(window, min_periods=max(5, window // 2)).std(ddof=1)
    return (1.0 / vol.where(vol > 0)).fillna(0.0)


def target_weights(
    scores: pd.DataFrame,
    base: pd.DataFrame,
    returns: pd.DataFrame,
    *,
    entry_threshold: float,
    long_only: bool,
    vol_target: float | None,
    vol_window: int,
    max_gross: float,
) -> pd.DataFrame:
    """Weights decided at each session's close, before risk limits.

    Held names (score ≥ threshold long; ≤ −threshold short when allowed) share a gross book
    of 1 in proportion to `base` (non-negative); a session with no held name is all cash.
    With `vol_target`, the book is scaled by target / the held portfolio's trailing
    volatility (its returns over the last `vol_window` sessions, ddof=1, annualized), capped
    at `max_gross` so a quiet market never levers the book beyond the limit.
    """
    s = scores.to_numpy(dtype=np.float64)
    side = np.where(s >= entry_threshold, 1.0, 0.0)
    if not long_only:
        side = np.where(s <= -entry_threshold, -1.0, side)
    size = np.nan_to_num(base.reindex_like(scores).to_numpy(dtype=np.float64)).clip(min=0.0) * np.abs(side)
    total = size.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        weights = np.where(total > 0, side * size / total, 0.0)
    if vol_target is not None:
        weights *= _vol_scale(
            weights, returns.reindex_like(scores).to_numpy(dtype=np.float64), vol_target, vol_window, max_gross
        )[:, None]
    return pd.DataFrame(weights, index=scores.index, columns=scores.columns)


def _vol_scale(weights: np.ndarray, returns: np.ndarray, target: float, window: int, cap: float) -> np.ndarray:
    """target / annualized volatility of today's weights over the trailing window, in [0, cap]."""
    sessions = weights.shape[0]
    scale = np.ones(sessions)
    if sessions < window:
        return scale
    clean = np.nan_to_num(returns)
    windows = sliding_window_view(clean, window, axis=0)  # (sessions - window + 1, tickers, window)
    path = np.einsum("stw,st->sw", windows, weights[window - 1 :])  # each day's weights over its past
    vol = path.std(axis=1, ddof=1) * np.sqrt(TRADING_DAYS)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale[window - 1 :] = np.where(vol > 0, np.minimum(target / vol, cap), 1.0)
    return scale


def signal_rows(
    scores: pd.DataFrame, parts: Mapping[str, pd.DataFrame], target: pd.Series, held: pd.Series, day: Any
) -> pd.DataFrame:
    """One session's signals per ticker: score, each contribution, target and limited weight."""
    when = pd.Timestamp(day)
    out = pd.DataFrame({"ticker": scores.columns, "date": when})
    out["score"] = scores.loc[when].to_numpy()
    for name in COMPONENTS:
        out[name] = parts[name].loc[when].to_numpy()
    out["target_weight"] = target.reindex(scores.columns).fillna(0.0).to_numpy()
    out["weight"] = held.reindex(scores.columns).fillna(0.0).to_numpy()
    return out[list(SIGNAL_COLUMNS)]
