"""Each intraday rule fires on a crafted case and stays quiet on a calm one."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bentley.live.bars import split_batches, validate_bars
from bentley.live.rules import RiskContext, evaluate, findings_frame, stored_risk
from bentley.live.settings import watch_settings
from bentley.live.stream import StreamState, load_book
from bentley.warehouse import Warehouse

from .conftest import DAY, OPEN_UTC, crafted_bars, seed_book

RULES = watch_settings().rules
CLOSE = OPEN_UTC + pd.Timedelta(hours=6, minutes=30)


def _run(warehouse: Warehouse, paths: dict[str, list[float]], **context: object) -> list:
    seed_book(warehouse)  # AAA 100 x 100, BBB 200 x 50, cash 10,000: equity 30,000
    state = StreamState.start(load_book(warehouse, "paper", DAY))
    ctx = RiskContext(
        **{
            "portfolio": "paper",
            "daily_loss_limit": 0.03,
            "var_1d": -0.02,
            "daily_vol": {"AAA": 0.01, "BBB": 0.01},
            "expected_tickers": ("AAA", "BBB"),
            "session_open": OPEN_UTC,
            "session_close": CLOSE,
            **context,
        }
    )
    found = []
    for batch in split_batches(validate_bars(crafted_bars(paths, first_open={t: p[0] for t, p in paths.items()}))):
        found = evaluate(state.update(batch), state, ctx, RULES)
    return found


def _rules(found: list) -> set[str]:
    return {f.rule for f in found}


def test_a_calm_session_fires_nothing(warehouse: Warehouse) -> None:
    assert _run(warehouse, {"AAA": [100.0, 100.2, 100.1, 100.3], "BBB": [50.0, 50.1, 49.95, 50.05]}) == []


def test_daily_loss_names_the_positions_responsible(warehouse: Warehouse) -> None:
    # AAA -8% (-800), BBB -2% (-200): 1,000 of 30,000 = -3.33% < -3%
    found = _run(warehouse, {"AAA": [100.0, 96.0, 92.0], "BBB": [50.0, 49.5, 49.0]}, daily_vol={}, var_1d=math.nan)
    loss = [f for f in found if f.rule == "watch_daily_loss"]
    assert len(loss) == 1 and loss[0].scope == "portfolio:paper"
    assert loss[0].value == pytest.approx(-1000 / 30000) and loss[0].threshold == 0.03
    assert loss[0].tickers == ("AAA", "BBB") and "AAA -800" in loss[0].message
    assert "watch_var_breach" not in _rules(found)  # no VaR stored: never fires


def test_var_breach_fires_between_the_var_and_the_loss_limit(warehouse: Warehouse) -> None:
    found = _run(warehouse, {"AAA": [100.0, 95.0], "BBB": [50.0, 50.0]}, daily_vol={})  # -500 = -1.67%
    assert _rules(found) == set()
    found = _run(warehouse, {"AAA": [100.0, 93.0], "BBB": [50.0, 50.0]}, daily_vol={})  # -700 = -2.33%
    assert _rules(found) == {"watch_var_breach", "watch_drawdown"}  # from a high of 30,000 too; not the loss limit


def test_a_position_moving_k_times_its_daily_volatility(warehouse: Warehouse) -> None:
    found = _run(warehouse, {"AAA": [100.0, 103.5], "BBB": [50.0, 50.0]}, var_1d=math.nan)  # +3.5% > 3 x 1%
    move = [f for f in found if f.rule == "watch_vol_move"]
    assert [f.scope for f in move] == ["AAA"] and move[0].value == pytest.approx(3.5)
    assert _run(warehouse, {"AAA": [100.0, 102.5], "BBB": [50.0, 50.0]}, var_1d=math.nan) == []


def test_intraday_drawdown_from_the_days_high(warehouse: Warehouse) -> None:
    # up 1,000 (AAA 110), then back to 103: 700 below a 31,000 high = -2.26% < -2%, still +1% on the day
    found = _run(warehouse, {"AAA": [100.0, 110.0, 103.0], "BBB": [50.0, 50.0, 50.0]}, daily_vol={})
    assert _rules(found) == {"watch_drawdown"}


def test_a_stale_feed_during_the_session(warehouse: Warehouse) -> None:
    paths = {"AAA": [100.0 + 0.01 * i for i in range(20)]}
    found = _run(warehouse, paths | {"BBB": [50.0]}, daily_vol={})  # BBB's only bar is 19 minutes old
    stale = [f for f in found if f.rule == "watch_stale_feed"]
    assert len(stale) == 1 and stale[0].tickers == ("BBB",) and stale[0].value == pytest.approx(19.0)
    assert _run(warehouse, paths | {"BBB": [50.0]}, daily_vol={}, session_open=None) == []  # outside the session


def test_a_jump_that_looks_like_a_bad_tick(warehouse: Warehouse) -> None:
    found = _run(
        warehouse,
        {"AAA": [100.0, 100.1, 120.0], "BBB": [50.0, 50.0, 50.0]},
        daily_vol={},
        daily_loss_limit=0.5,
        var_1d=math.nan,
    )
    assert _rules(found) == {"watch_bad_tick"} and found[0].scope == "AAA"


def test_findings_feed_the_alert_episodes(warehouse: Warehouse) -> None:
    frame = findings_frame(_run(warehouse, {"AAA": [100.0, 92.0], "BBB": [50.0, 49.0]}, daily_vol={}))
    assert list(frame.columns) == ["rule", "scope", "severity", "value", "threshold", "message"]
    assert set(frame["rule"]) == {"watch_daily_loss", "watch_var_breach", "watch_drawdown"}


def test_the_stored_var_and_volatility_are_the_latest_before_the_session(warehouse: Warehouse) -> None:
    rows = []
    for run, end, var, vol in (
        ("r1", "2024-05-30", -0.01, 0.16),
        ("r2", "2024-05-31", -0.02, 0.32),
        ("r3", "2024-06-03", -0.09, 0.99),
    ):  # r3 is the session's own: not read
        rows += [
            {
                "run_id": run,
                "scope": "portfolio:paper",
                "metric": "var_95_historical",
                "value": var,
                "window_end": pd.Timestamp(end),
            },
            {
                "run_id": run,
                "scope": "AAA",
                "metric": "annual_volatility",
                "value": vol,
                "window_end": pd.Timestamp(end),
            },
        ]
    warehouse.upsert("risk_metrics", pd.DataFrame(rows))
    var, vols = stored_risk(warehouse, "paper", ["AAA", "BBB"], DAY, "var_95_historical")
    assert var == -0.02 and vols == {"AAA": pytest.approx(0.32 / math.sqrt(252))}
