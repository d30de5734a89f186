"""Signal components, the score and target weights: hand-checked values and no lookahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bentley.features import TRADING_DAYS
from bentley.trading import signals

SESSIONS = pd.bdate_range("2025-01-01", periods=30, name="date")
TICKERS = pd.Index(["AAA", "BBB", "CCC"], name="ticker")
WEIGHTS = {"model": 0.4, "technical": 0.35, "sentiment": 0.25}


def test_technical_events_fade_linearly():
    events = pd.DataFrame({"ticker": ["AAA"], "date": [SESSIONS[3]], "direction": [1], "strength": [1.0]})
    component = signals.technical_component(events, SESSIONS, TICKERS, decay_sessions=5)
    np.testing.assert_allclose(component["AAA"].iloc[2:10], [0, 1.0, 0.8, 0.6, 0.4, 0.2, 0, 0])
    assert (component[["BBB", "CCC"]] == 0).all().all()


def test_model_component_is_two_p_minus_one_and_zero_without_a_prediction():
    predictions = pd.DataFrame({"ticker": ["AAA", "BBB"], "date": [SESSIONS[5]] * 2, "proba_up": [0.7, 0.4]})
    component = signals.model_component(predictions, SESSIONS, TICKERS)
    assert component.loc[SESSIONS[5]].tolist() == pytest.approx([0.4, -0.2, 0.0])
    assert component.loc[SESSIONS[4]].abs().sum() == 0


def test_score_is_the_sum_of_normalized_contributions():
    rng = np.random.default_rng(1)
    components = {
        name: pd.DataFrame(rng.uniform(-1, 1, (30, 3)), index=SESSIONS, columns=TICKERS) for name in signals.COMPONENTS
    }
    doubled = {name: 2 * w for name, w in WEIGHTS.items()}
    parts = signals.contributions(components, doubled)
    total = signals.score(components, doubled)
    pd.testing.assert_frame_equal(total, parts["model"] + parts["technical"] + parts["sentiment"])
    assert total.abs().max().max() <= 1.0
    pd.testing.assert_frame_equal(parts["model"], components["model"] * 0.4)


def test_sweep_knob_keeps_the_other_components_in_ratio():
    shares = signals.with_model_weight(WEIGHTS, 0.6)
    assert shares["model"] == 0.6
    assert shares["technical"] / shares["sentiment"] == pytest.approx(0.35 / 0.25)
    assert sum(shares.values()) == pytest.approx(1.0)


def test_target_weights_gate_on_the_threshold_and_follow_the_base():
    scores = pd.DataFrame([[0.2, 0.04, 0.3]] * 30, index=SESSIONS, columns=TICKERS)
    base = pd.DataFrame([[1.0, 5.0, 3.0]] * 30, index=SESSIONS, columns=TICKERS)
    returns = pd.DataFrame(0.0, index=SESSIONS, columns=TICKERS)
    weights = signals.target_weights(
        scores, base, returns, entry_threshold=0.05, long_only=True, vol_target=None, vol_window=10, max_gross=1.0
    )
    assert weights.iloc[0].tolist() == pytest.approx([0.25, 0.0, 0.75])
    shorting = signals.target_weights(
        -scores, base, returns, entry_threshold=0.05, long_only=False, vol_target=None, vol_window=10, max_gross=1.0
    )
    assert shorting.iloc[0].tolist() == pytest.approx([-0.25, 0.0, -0.75])
    flat = signals.target_weights(
        scores * 0, base, returns, entry_threshold=0.05, long_only=True, vol_target=None, vol_window=10, max_gross=1.0
    )
    assert (flat == 0).all().all()


def test_volatility_target_scales_the_book_and_never_levers_past_the_cap():
    rng = np.random.default_rng(2)
    returns = pd.DataFrame(rng.normal(0, 0.02, (30, 3)), index=SESSIONS, columns=TICKERS)
    scores = pd.DataFrame(1.0, index=SESSIONS, columns=TICKERS)
    base = pd.DataFrame(1.0, index=SESSIONS, columns=TICKERS)
    weights = signals.target_weights(
        scores, base, returns, entry_threshold=0.0, long_only=True, vol_target=0.10, vol_window=10, max_gross=1.0
    )
    day = SESSIONS[-1]
    book = returns.loc[:day].tail(10).mean(axis=1)  # equal weights of 1/3
    expected_scale = min(0.10 / (book.std(ddof=1) * np.sqrt(TRADING_DAYS)), 1.0)
    assert weights.loc[day].sum() == pytest.approx(expected_scale)
    levered = signals.target_weights(
        scores, base, returns * 0.01, entry_threshold=0.0, long_only=True, vol_target=0.10, vol_window=10, max_gross=1.0
    )
    assert levered.iloc[-1].sum() == pytest.approx(1.0), "a quiet market hits the gross cap, not 100x"


def test_signals_at_t_ignore_everything_after_t():
    rng = np.random.default_rng(4)
    returns = pd.DataFrame(rng.normal(0, 0.02, (30, 3)), index=SESSIONS, columns=TICKERS)
    tone = pd.DataFrame(
        {"ticker": np.repeat(TICKERS, 30), "date": np.tile(SESSIONS, 3), "mean_compound": rng.uniform(-1, 1, 90)}
    )
    cut = SESSIONS[19]

    def decide(r: pd.DataFrame, t: pd.DataFrame) -> pd.DataFrame:
        component = signals.sentiment_component(t, SESSIONS, TICKERS, halflife=3)
        scores = signals.score({"model": component * 0, "technical": component * 0, "sentiment": component}, WEIGHTS)
        base = signals.inverse_volatility(r, 10)
        return signals.target_weights(
            scores, base, r, entry_threshold=0.0, long_only=True, vol_target=0.15, vol_window=10, max_gross=1.0
        )

    before = decide(returns, tone)
    later_returns = returns.copy()
    later_returns.loc[later_returns.index > cut] *= -5
    later_tone = tone.assign(mean_compound=np.where(tone["date"] > cut, -tone["mean_compound"], tone["mean_compound"]))
    after = decide(later_returns, later_tone)
    pd.testing.assert_frame_equal(before.loc[:cut], after.loc[:cut])
    assert not before.loc[cut:].iloc[1:].equals(after.loc[cut:].iloc[1:])
