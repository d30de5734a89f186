"""`runner gate`: an orchestrator's run goes ahead only on our ticks, as the tick's own run."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from bentley.config import Config
from bentley.warehouse import Warehouse
from runner import cli
from runner.gate import SKIP_EXIT, decide
from tests.schedules import with_schedule

NY = ZoneInfo("America/New_York")
UTC = dt.UTC


def ny(day: str, hhmm: str) -> dt.datetime:
    return dt.datetime.combine(dt.date.fromisoformat(day), dt.time.fromisoformat(hhmm), NY)


def scheduled(config: Config, at: dt.datetime, now: dt.datetime | None = None, run_type: str = "scheduled"):
    return decide(config, run_type=run_type, at=at, orchestrator_run_id="scheduled__x", now=now or at)


def test_a_tick_goes_ahead_as_the_ticks_own_run(config: Config) -> None:
    decision = scheduled(config, ny("2025-06-02", "10:05"), now=ny("2025-06-02", "10:05:40"))
    assert decision.go
    assert decision.run_id == "sched-20250602T1405Z"  # the id `runner schedule` gives the same tick
    assert decision.logical_date == dt.date(2025, 6, 2)
    payload = json.loads(decision.as_json())
    assert payload["args"] == "--run-id sched-20250602T1405Z --logical-date 2025-06-02"


@pytest.mark.parametrize(
    ("at", "why"),
    [
        (ny("2025-06-02", "10:06"), "not on the grid"),
        (ny("2025-06-02", "09:05"), "before the open"),
        (ny("2025-06-02", "16:05"), "after the close"),
        (ny("2025-07-04", "11:05"), "Independence Day"),
        (ny("2025-06-07", "11:05"), "a Saturday"),
        (ny("2025-11-28", "13:05"), "after the 13:00 early close"),
    ],
)
def test_anything_else_on_the_cron_grid_is_skipped(config: Config, at: dt.datetime, why: str) -> None:
    decision = scheduled(config, at)
    assert not decision.go, why
    assert "is not a fire time" in decision.reason


def test_the_last_tick_of_an_early_close_goes_ahead(config: Config) -> None:
    assert scheduled(config, ny("2025-11-28", "12:05")).go


def test_dst_is_local_time(config: Config) -> None:
    winter, summer = scheduled(config, ny("2025-03-07", "10:05")), scheduled(config, ny("2025-03-10", "10:05"))
    assert (winter.run_id, summer.run_id) == ("sched-20250307T1505Z", "sched-20250310T1405Z")


def test_catch_up_none_drops_a_tick_that_fires_late(config: Config) -> None:
    none = with_schedule(config, catch_up="none")
    at = ny("2025-06-02", "10:05")
    assert scheduled(none, at, now=at + dt.timedelta(minutes=4)).go
    late = scheduled(none, at, now=at + dt.timedelta(minutes=30))
    assert not late.go and "catch_up is none" in late.reason


def test_catch_up_latest_drops_a_tick_once_a_later_one_fired(config: Config) -> None:
    latest = with_schedule(config, catch_up="latest")
    at = ny("2025-06-02", "10:05")
    assert scheduled(latest, at, now=ny("2025-06-02", "11:04")).go
    stale = scheduled(latest, at, now=ny("2025-06-02", "11:05"))
    assert not stale.go and "sched-20250602T1505Z" in stale.reason


def test_catch_up_all_keeps_the_latest_max_catch_up_ticks(config: Config) -> None:
    capped = with_schedule(config, catch_up="all", max_catch_up=3)
    now = ny("2025-06-02", "13:30")  # 11:05, 12:05 and 13:05 fired after 10:05
    assert scheduled(capped, ny("2025-06-02", "11:05"), now=now).go
    dropped = scheduled(capped, ny("2025-06-02", "10:05"), now=now)
    assert not dropped.go and "3 later ticks" in dropped.reason


def test_a_backfill_of_a_tick_is_never_too_late(config: Config) -> None:
    at = ny("2025-06-02", "10:05")
    assert scheduled(with_schedule(config, catch_up="none"), at, now=at + dt.timedelta(days=90), run_type="backfill").go


def test_a_manual_run_is_for_the_session_of_its_date(config: Config) -> None:
    saturday = dt.datetime(2025, 1, 4, tzinfo=UTC)
    decision = decide(
        config,
        run_type="manual",
        at=saturday,
        orchestrator_run_id="manual__2025-01-04",
        now=dt.datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert decision.go and decision.logical_date == dt.date(2025, 1, 3)
    assert decision.run_id.startswith("airflow-20250104T000000Z-")
    again = decide(
        config,
        run_type="manual",
        at=saturday,
        orchestrator_run_id="manual__2025-01-04",
        now=dt.datetime(2026, 2, 1, tzinfo=UTC),
    )
    assert again.run_id == decision.run_id  # a cleared task rejoins its run
    other = decide(config, run_type="manual", at=saturday, orchestrator_run_id="manual__other", now=saturday)
    assert other.run_id != decision.run_id


def test_a_manual_run_never_asks_for_a_session_that_has_not_closed(config: Config) -> None:
    now = ny("2025-06-04", "11:00")  # Wednesday mid-session: Tuesday is the latest closed session
    decision = decide(config, run_type="manual", at=now, orchestrator_run_id="manual__now", now=now)
    assert decision.logical_date == dt.date(2025, 6, 3)
    undated = decide(config, run_type="manual", at=None, orchestrator_run_id="manual__undated", now=now)
    assert undated.logical_date == dt.date(2025, 6, 3)


def test_a_scheduled_run_without_a_date_is_skipped(config: Config) -> None:
    decision = decide(config, run_type="scheduled", at=None, orchestrator_run_id="x", now=ny("2025-06-02", "10:05"))
    assert not decision.go


# --------------------------------------------------------------------------- CLI


def gate(tmp_path: Path, root: Path, *args: str) -> int:
    return cli.main(["--root", str(root), "gate", "--outputs", str(tmp_path), "--orchestrator-run-id", "af-1", *args])


def test_the_cli_prints_one_json_line_or_exits_99(
    tmp_path: Path, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = gate(
        tmp_path,
        root,
        "--run-type",
        "scheduled",
        "--at",
        "2025-06-02T14:05:00+00:00",
        "--now",
        "2025-06-02T14:06:00+00:00",
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out.strip().splitlines()[-1])["run_id"] == "sched-20250602T1405Z"
    assert "go: tick sched-20250602T1405Z" in captured.err

    code = gate(tmp_path, root, "--run-type", "scheduled", "--at", "2025-06-02T14:06:00+00:00")
    captured = capsys.readouterr()
    assert code == SKIP_EXIT and captured.out == ""
    assert "skip: 2025-06-02 10:06 EDT is not a fire time" in captured.err


def test_the_cli_sets_retraining_as_the_scheduler_does(
    tmp_path: Path, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    warehouse = Warehouse(f"sqlite:///{tmp_path / 'warehouse.db'}")
    warehouse.upsert(
        "model_monitoring",
        pd.DataFrame(
            [
                {
                    "run_id": "r1",
                    "model_name": "m",
                    "model_version": "3",
                    "as_of": dt.date(2025, 5, 30),
                    "retraining_required": True,
                    "reason": "accuracy fell 12%",
                },
            ]
        ),
    )
    warehouse.dispose()
    code = gate(tmp_path, root, "--run-type", "manual", "--at", "2025-06-02T00:00:00+00:00")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    payload = json.loads(captured.out.strip().splitlines()[-1])
    assert payload["args"].endswith("--set ml.retrain=true")
    assert "needs retraining (accuracy fell 12%)" in captured.err


def test_a_time_without_an_offset_is_a_usage_error(
    tmp_path: Path, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        gate(tmp_path, root, "--run-type", "scheduled", "--at", "2025-06-02T14:05:00")
    assert exit_info.value.code == 2
    assert "has no UTC offset" in capsys.readouterr().err
