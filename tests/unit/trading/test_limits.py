"""Every risk limit fires, is recorded with its rule, and never undoes an earlier one."""

from __future__ import annotations

import numpy as np
import pytest

from bentley.trading.limits import RULES, Limits, apply_limits

LIMITS = Limits(max_position_weight=0.4, max_gross_exposure=1.0, max_daily_turnover=0.5, daily_loss_limit=0.03)


def _rules(decision) -> set[str]:
    return {events.rule for events in decision.events}


def test_a_target_within_every_limit_passes_unchanged():
    previous = np.array([0.3, 0.3, 0.0])
    target = np.array([0.35, 0.25, 0.1])
    decision = apply_limits(previous, target, 0.01, LIMITS)
    np.testing.assert_allclose(decision.weights, target)
    assert decision.events == []
    assert decision.events_frame(["A", "B", "C"]).empty


def test_max_position_weight_clips_and_records():
    decision = apply_limits(np.array([0.4, 0.0]), np.array([0.6, 0.0]), 0.0, Limits(0.4, 1.0, 10.0, 0.03))
    np.testing.assert_allclose(decision.weights, [0.4, 0.0])
    assert decision.events_frame(["A", "B"]).values.tolist() == [["A", "max_position_weight", 0.6, 0.4]]


def test_max_gross_exposure_scales_the_book():
    limits = Limits(max_position_weight=1.0, max_gross_exposure=1.0, max_daily_turnover=10.0, daily_loss_limit=0.5)
    decision = apply_limits(np.zeros(3), np.array([0.6, 0.6, -0.3]), 0.0, limits)
    assert np.abs(decision.weights).sum() == pytest.approx(1.0)
    np.testing.assert_allclose(decision.weights, np.array([0.6, 0.6, -0.3]) / 1.5)
    assert _rules(decision) == {"max_gross_exposure"}


def test_daily_loss_limit_blocks_new_risk_but_lets_positions_shrink():
    previous = np.array([0.3, 0.2, 0.0, 0.2])
    target = np.array([0.4, 0.1, 0.2, -0.2])  # grow, shrink, open, flip
    limits = Limits(max_position_weight=1.0, max_gross_exposure=2.0, max_daily_turnover=10.0, daily_loss_limit=0.03)
    decision = apply_limits(previous, target, -0.031, limits)
    np.testing.assert_allclose(decision.weights, [0.3, 0.1, 0.0, 0.0])
    frame = decision.events_frame(["A", "B", "C", "D"])
    assert list(zip(frame["ticker"], frame["rule"], strict=True)) == [
        ("A", "daily_loss_limit"),
        ("C", "daily_loss_limit"),
        ("D", "daily_loss_limit"),
    ]
    calm = apply_limits(previous, target, -0.029, limits)
    np.testing.assert_allclose(calm.weights, target)


def test_max_daily_turnover_moves_part_of_the_way():
    previous = np.array([0.5, 0.0])
    target = np.array([0.0, 0.5])  # turnover 1.0, limit 0.5
    decision = apply_limits(previous, target, 0.0, Limits(1.0, 1.0, 0.5, 0.03))
    np.testing.assert_allclose(decision.weights, [0.25, 0.25])
    assert np.abs(decision.weights - previous).sum() == pytest.approx(0.5)
    assert _rules(decision) == {"max_daily_turnover"}


def test_later_rules_keep_earlier_limits():
    rng = np.random.default_rng(3)
    for _ in range(200):
        previous = apply_limits(np.zeros(6), rng.normal(0, 0.5, 6), 0.0, LIMITS).weights
        decision = apply_limits(previous, rng.normal(0, 0.5, 6), rng.normal(0, 0.03), LIMITS)
        w = decision.weights
        assert np.abs(w).max() <= LIMITS.max_position_weight + 1e-12
        assert np.abs(w).sum() <= LIMITS.max_gross_exposure + 1e-12
        assert np.abs(w - previous).sum() <= LIMITS.max_daily_turnover + 1e-12


def test_events_frame_names_tickers_and_rules_are_the_documented_ones():
    decision = apply_limits(np.zeros(2), np.array([0.9, 0.3]), 0.0, LIMITS)  # clip to 0.4, then turnover 0.7
    frame = decision.events_frame(["AAA", "BBB"])
    assert frame["ticker"].tolist() == ["AAA", "AAA", "BBB"]
    assert frame["rule"].tolist() == ["max_position_weight", "max_daily_turnover", "max_daily_turnover"]
    assert decision.weights.sum() == pytest.approx(0.5)
    assert set(frame["rule"]) <= set(RULES)
