"""The `watch` health component."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from bentley.live.health import check_watch
from bentley.live.tables import watch_heartbeats
from bentley.warehouse import Warehouse

NOW = dt.datetime(2024, 6, 3, 15, 0, tzinfo=dt.UTC)  # 11:00 New York, in the session


def _beat(warehouse: Warehouse, status: str, age_s: float, bar_age_min: float | None) -> None:
    warehouse.upsert(
        watch_heartbeats,
        pd.DataFrame(
            [
                {
                    "watch_id": "host:1:abc",
                    "host": "host",
                    "pid": 1,
                    "portfolio": "paper",
                    "source": "yahoo",
                    "session": pd.Timestamp("2024-06-03"),
                    "started_at": NOW - dt.timedelta(hours=1),
                    "heartbeat_at": NOW - dt.timedelta(seconds=age_s),
                    "status": status,
                    "last_bar_ts": None if bar_age_min is None else NOW - dt.timedelta(minutes=bar_age_min),
                }
            ]
        ),
    )


def _status(warehouse: Warehouse) -> str:
    return check_watch(
        warehouse, heartbeat_s=10, stale_minutes=15, now=NOW, calendar="XNYS", timezone="America/New_York"
    ).status


def test_the_watch_component(warehouse: Warehouse) -> None:
    assert _status(warehouse) == "ok"  # never ran
    _beat(warehouse, "watching", 5, 5)
    assert _status(warehouse) == "ok"
    _beat(warehouse, "watching", 5, 40)
    assert _status(warehouse) == "degraded"
    _beat(warehouse, "watching", 120, 5)
    assert _status(warehouse) == "down"
    _beat(warehouse, "stopped", 3600, 5)
    assert _status(warehouse) == "ok"
