"""The run lease and product digests: the pieces a crash-safe run relies on."""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path

import pandas as pd
import pytest

from bentley.stage import frame_digest
from bentley.warehouse import Warehouse
from runner.lease import holder_alive

T0 = dt.datetime(2025, 6, 2, 14, 5, tzinfo=dt.UTC)


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    store = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    yield store
    store.dispose()


def test_one_holder_at_a_time_until_the_lease_lapses(warehouse: Warehouse) -> None:
    assert warehouse.acquire_lease("pipeline", "a", "run-a", 60, now=T0).acquired
    busy = warehouse.acquire_lease("pipeline", "b", "run-b", 60, now=T0 + dt.timedelta(seconds=30))
    assert not busy.acquired and busy.holder == "a" and busy.run_id == "run-a"
    assert warehouse.renew_lease("pipeline", "a", 60, now=T0 + dt.timedelta(seconds=50))
    assert not warehouse.acquire_lease("pipeline", "b", "run-b", 60, now=T0 + dt.timedelta(seconds=100)).acquired
    taken = warehouse.acquire_lease("pipeline", "b", "run-b", 60, now=T0 + dt.timedelta(seconds=111))
    assert taken.acquired and taken.taken_over and taken.run_id == "run-a", "the crashed run is named"
    assert not warehouse.renew_lease("pipeline", "a", 60), "the old holder learns it lost the lease"
    warehouse.release_lease("pipeline", "a")  # not ours any more: a no-op
    assert not warehouse.acquire_lease("pipeline", "c", "run-c", 60, now=T0 + dt.timedelta(seconds=120)).acquired
    warehouse.release_lease("pipeline", "b")
    assert warehouse.acquire_lease("pipeline", "c", "run-c", 60, now=T0 + dt.timedelta(seconds=121)).acquired


def test_a_dead_holder_on_this_host_is_taken_over_at_once(warehouse: Warehouse) -> None:
    assert warehouse.acquire_lease("pipeline", "a", "run-a", 60, now=T0).acquired
    grant = warehouse.acquire_lease("pipeline", "b", "run-b", 60, now=T0, holder_alive=lambda holder: False)
    assert grant.acquired and grant.taken_over


def test_holder_alive_checks_pids_on_this_host_only() -> None:
    host = socket.gethostname()
    assert holder_alive(f"{host}:1:abc"), "pid 1 exists"
    assert not holder_alive(f"{host}:999999999:abc")
    assert holder_alive("another-machine:999999999:abc"), "only its heartbeat can tell"


def test_frame_digest_ignores_row_and_column_order_but_not_values() -> None:
    frame = pd.DataFrame({"ticker": ["A", "B"], "close": [1.0, 2.0]})
    shuffled = frame.iloc[::-1][["close", "ticker"]]
    assert frame_digest(frame) == frame_digest(shuffled)
    assert frame_digest(frame) != frame_digest(frame.assign(close=[1.0, 2.5]))
    assert frame_digest(frame) != frame_digest(frame.rename(columns={"close": "open"}))
