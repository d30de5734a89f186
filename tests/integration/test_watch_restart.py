"""`runner watch` really killed: SIGKILL at three moments of a replayed session, restarts, and the
warehouse ends up exactly as after one uninterrupted replay (no duplicate mark, alert or order).

The kills are placed by polling the warehouse for the number of marks written, never by sleeping
a fixed time, so the test is as fast as the machine and cannot miss its moment.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bentley.warehouse import Warehouse
from tests.live_book import DAY, PREVIOUS, crafted_bars, seed_book

pytestmark = pytest.mark.integration

BARS = 60
#: Marks stored when each run is killed: early, around the loss breach (bar 19), and after it.
KILL_AFTER = (8, 19, 40)
TABLES = ("intraday_marks", "intraday_risk", "alerts", "orders", "fills")
#: A batch every 0.2 s: slow enough to land a kill between batches, a session in about 12 s.
SPEED = 300


def _recording(folder: Path) -> Path:
    """AAA loses 0.5 a minute from 100 (the book breaches its 3% daily loss at bar 19), BBB and the
    benchmark BBIX are flat."""
    bars = crafted_bars(
        {"AAA": [100.0 - 0.5 * (i + 1) for i in range(BARS)], "BBB": [50.0] * BARS, "BBIX": [400.0] * BARS},
        first_open={"AAA": 100.0, "BBB": 50.0, "BBIX": 400.0},
    )
    path = folder / "day.csv"
    bars.assign(ts=bars["ts"].map(lambda t: t.isoformat())).to_csv(path, index=False)
    return path


def _seed(outputs: Path) -> Path:
    """The store `runner watch --outputs` uses, holding the book's previous close: AAA 100 x 100,
    BBB 200 x 50 and 10,000 cash on 2024-05-31."""
    path = outputs / "warehouse.db"
    store = Warehouse(f"sqlite:///{path}")
    seed_book(store)
    store.upsert(
        "prices",
        pd.DataFrame(
            [{"ticker": "BBIX", "date": pd.Timestamp(PREVIOUS), "close": 400.0, "source": "test"}]
        ),  # the benchmark's previous close: the report draws the day against it
    )
    store.dispose()
    return path


def _watch(root: Path, outputs: Path, recording: Path, speed: float) -> list[str]:
    return [
        sys.executable,
        "-m",
        "runner",
        "--root",
        str(root),
        "watch",
        "--outputs",
        str(outputs),
        "--day",
        DAY.isoformat(),
        "--set",
        "warehouse.url=null",
        "--set",
        "watch.source.kind=replay",
        "--set",
        f"watch.source.path={recording}",
        "--set",
        f"watch.source.speed={speed}",
        "--set",
        "watch.on_loss_limit=flatten",
        "--set",
        "watch.record_bars=false",
    ]


def _marks(database: Path) -> int:
    with sqlite3.connect(database, timeout=5) as conn:
        return int(conn.execute("SELECT count(*) FROM intraday_marks").fetchone()[0])


def _kill_after(args: list[str], env: dict[str, str], root: Path, database: Path, marks: int) -> None:
    """Start the watch and SIGKILL it as soon as `marks` marks are stored (it must not finish first)."""
    process = subprocess.Popen(args, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    try:
        while _marks(database) < marks:
            assert process.poll() is None, f"the watch ended before {marks} marks: {process.stderr.read()}"
            assert time.monotonic() < deadline, f"no {marks} marks within 30 s"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL


def _tables(database: Path) -> dict[str, pd.DataFrame]:
    store = Warehouse(f"sqlite:///{database}")
    try:
        return {name: store.read(name) for name in TABLES}
    finally:
        store.dispose()


def test_a_watch_killed_three_times_resumes_to_what_one_replay_writes(
    tmp_path: Path, root: Path, clean_env: dict[str, str]
) -> None:
    recording = _recording(tmp_path)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight_db, killed_db = _seed(straight), _seed(killed)

    done = subprocess.run(_watch(root, straight, recording, 0), cwd=root, env=clean_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for marks in KILL_AFTER:
        _kill_after(_watch(root, killed, recording, SPEED), clean_env, root, killed_db, marks)
    last = subprocess.run(_watch(root, killed, recording, 0), cwd=root, env=clean_env, capture_output=True, text=True)
    assert last.returncode == 0, last.stderr
    assert "resumed after" in last.stdout

    expected, got = _tables(straight_db), _tables(killed_db)
    assert len(expected["intraday_marks"]) == BARS and len(expected["orders"]) == 2
    assert (expected["alerts"]["rule"] == "watch_daily_loss").sum() == 1
    for name in TABLES:
        pd.testing.assert_frame_equal(got[name], expected[name], obj=name)
    report = (killed / "intraday" / f"{DAY}_paper.html").read_text()
    assert "BBIX, % on its previous close" in report and "watch_daily_loss" in report
