"""Incremental sync: where fetches resume, and when a ticker must be refetched in full."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from bentley import sync
from bentley.ingest import _enforce_failure_threshold
from bentley.sources.base import SourceError

WINDOW = (dt.date(2024, 6, 3), dt.date(2025, 6, 2))


def test_new_tickers_start_at_the_window_and_known_ones_at_cursor_minus_overlap() -> None:
    cursors = {"NOVA": dt.date(2025, 5, 30), "OLD": dt.date(2020, 1, 2)}
    plan = sync.plan_fetch(["NOVA", "QBIT", "OLD"], cursors, WINDOW, overlap_sessions=5, full_refresh=False)
    assert plan.starts["QBIT"] == WINDOW[0]  # never loaded
    assert plan.starts["OLD"] == WINDOW[0]  # cursor before the window
    assert plan.starts["NOVA"] == dt.date(2025, 5, 22)  # 5 sessions before Fri 30 May (26 May is a holiday)
    assert plan.groups() == {WINDOW[0]: ("OLD", "QBIT"), dt.date(2025, 5, 22): ("NOVA",)}
    assert plan.is_incremental("NOVA", WINDOW[0]) and not plan.is_incremental("QBIT", WINDOW[0])


def test_full_refresh_ignores_cursors() -> None:
    plan = sync.plan_fetch(["NOVA"], {"NOVA": dt.date(2025, 5, 30)}, WINDOW, 5, full_refresh=True)
    assert plan.starts == {"NOVA": WINDOW[0]}


def test_a_backdated_window_is_fetched_whole() -> None:
    """The cursor is after the window: nothing says the window's earlier sessions were ever loaded."""
    plan = sync.plan_fetch(["NOVA"], {"NOVA": dt.date(2025, 6, 10)}, WINDOW, 2, full_refresh=False)
    assert plan.starts == {"NOVA": WINDOW[0]}


def test_a_ticker_missing_a_session_of_the_window_starts_there() -> None:
    held = pd.DataFrame(
        {
            "ticker": ["NOVA"] * 3 + ["QBIT"] * 2,
            "date": pd.to_datetime(["2025-05-28", "2025-05-29", "2025-05-30", "2025-05-29", "2025-05-30"]),
        }
    )
    window = (dt.date(2025, 5, 28), dt.date(2025, 6, 2))
    gaps = sync.first_missing_sessions(held, ["NOVA", "QBIT", "MEDX"], window, "XNYS")
    assert gaps == {"NOVA": dt.date(2025, 6, 2), "QBIT": dt.date(2025, 5, 28), "MEDX": dt.date(2025, 5, 28)}
    cursors = dict.fromkeys(["NOVA", "QBIT"], dt.date(2025, 5, 30))
    plan = sync.plan_fetch(["NOVA", "QBIT"], cursors, window, 1, full_refresh=False, first_missing=gaps)
    assert plan.starts == {"NOVA": dt.date(2025, 5, 29), "QBIT": dt.date(2025, 5, 28)}


def test_new_corporate_actions_after_the_cursor() -> None:
    prices = pd.DataFrame(
        {
            "ticker": ["NOVA", "NOVA", "QBIT", "MEDX"],
            "date": pd.to_datetime(["2025-05-29", "2025-06-02", "2025-06-02", "2025-06-02"]),
            "split_ratio": [2.0, 1.0, 1.0, 1.0],
            "dividend": [0.0, 0.0, 0.25, 0.0],
        }
    )
    cursors = {"NOVA": dt.date(2025, 5, 30), "QBIT": dt.date(2025, 5, 30), "MEDX": dt.date(2025, 5, 30)}
    # NOVA's split is before its cursor (already loaded); QBIT's dividend is new.
    assert sync.new_corporate_actions(prices, cursors) == ["QBIT"]


def test_cursors_from_rows() -> None:
    frame = pd.DataFrame(
        {"ticker": ["A", "A", "B"], "date": pd.to_datetime(["2025-01-02", "2025-01-03", "2025-01-02"])}
    )
    assert sync.cursors_from_rows(frame) == {"A": dt.date(2025, 1, 3), "B": dt.date(2025, 1, 2)}
    assert sync.cursors_from_rows(frame, by_ticker=False) == {"*": dt.date(2025, 1, 3)}


class FailingSource:
    def __init__(self, failures: dict[str, str]) -> None:
        self.failures = failures


def test_a_few_failing_tickers_are_tolerated_and_too_many_fail_by_name() -> None:
    _enforce_failure_threshold(FailingSource({"ZZZZ": "no rows returned"}), requested=10, max_share=0.2)
    with pytest.raises(SourceError, match=r"3 of 10 tickers failed .*AAA: timeout; BBB: 404; ZZZZ: no rows"):
        _enforce_failure_threshold(
            FailingSource({"ZZZZ": "no rows returned", "AAA": "timeout", "BBB": "404"}), requested=10, max_share=0.2
        )


def test_a_null_universe_is_resolved_to_the_sources_tickers_before_any_stage(root) -> None:
    from bentley.config import load_config
    from bentley.sources import with_resolved_universe

    config = load_config("ci", root=root)
    assert config.universe.tickers is None
    resolved = with_resolved_universe(config, root)
    assert resolved.universe.tickers == ["NOVA", "QBIT", "MEDX"]  # sample.n_tickers: 3
    listed = load_config("ci", ["universe.tickers=[QBIT, BANQ]"], root=root)
    assert with_resolved_universe(listed, root) is listed
