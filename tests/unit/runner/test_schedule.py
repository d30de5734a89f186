"""`runner schedule`: fire times on the NYSE calendar, catch-up policy and the loop (frozen clock)."""

from __future__ import annotations

import argparse
import datetime as dt
import io
import threading
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from rich.console import Console

from bentley.config import Config
from bentley.warehouse import Warehouse
from runner import schedule as sched
from runner.schedule import (
    Scheduler,
    Tick,
    day_ticks,
    due_ticks,
    fire_times,
    next_tick,
    previous_ticks,
)
from tests.schedules import with_schedule

NY = ZoneInfo("America/New_York")
UTC = dt.UTC


def ny(day: str, hhmm: str) -> dt.datetime:
    return dt.datetime.combine(dt.date.fromisoformat(day), dt.time.fromisoformat(hhmm), NY).astimezone(UTC)


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def hours(ticks: list[Tick], zone: ZoneInfo = NY) -> list[str]:
    return [t.fire_at.astimezone(zone).strftime("%H:%M") for t in ticks]


def ticks_on(day: str, config: Config) -> list[Tick]:
    return day_ticks(dt.date.fromisoformat(day), config.schedule, config.workflow)


# --------------------------------------------------------------------------- fire times


def test_an_ordinary_session_fires_hourly_at_five_past_from_1005_to_1505(config: Config) -> None:
    ticks = ticks_on("2025-06-02", config)  # Monday, EDT (UTC-4)
    assert hours(ticks) == ["10:05", "11:05", "12:05", "13:05", "14:05", "15:05"]
    assert [t.fire_at for t in ticks] == [utc(f"2025-06-02T{h}:05") for h in (14, 15, 16, 17, 18, 19)]
    assert all(t.fire_at.tzinfo == UTC for t in ticks)
    assert {t.logical_date for t in ticks} == {dt.date(2025, 6, 2)}


def test_spring_forward_moves_the_utc_hour_by_one(config: Config) -> None:
    friday, monday = ticks_on("2025-03-07", config), ticks_on("2025-03-10", config)  # EST, then EDT
    assert hours(friday) == hours(monday) == ["10:05", "11:05", "12:05", "13:05", "14:05", "15:05"]
    assert friday[0].fire_at == utc("2025-03-07T15:05") and friday[-1].fire_at == utc("2025-03-07T20:05")
    assert monday[0].fire_at == utc("2025-03-10T14:05") and monday[-1].fire_at == utc("2025-03-10T19:05")


def test_fall_back_moves_the_utc_hour_by_one(config: Config) -> None:
    friday, monday = ticks_on("2025-10-31", config), ticks_on("2025-11-03", config)  # EDT, then EST
    assert hours(friday) == hours(monday)
    assert friday[0].fire_at == utc("2025-10-31T14:05")
    assert monday[0].fire_at == utc("2025-11-03T15:05")


def test_a_range_across_the_dst_weekend_has_both_offsets(config: Config) -> None:
    ticks = fire_times(utc("2025-03-07T00:00"), utc("2025-03-11T00:00"), config.schedule, config.workflow)
    assert [t.logical_date for t in ticks] == [dt.date(2025, 3, 7)] * 6 + [dt.date(2025, 3, 10)] * 6
    assert {t.fire_at.hour for t in ticks[:6]} == set(range(15, 21))
    assert {t.fire_at.hour for t in ticks[6:]} == set(range(14, 20))


@pytest.mark.parametrize("day", ["2025-07-04", "2025-12-25", "2025-01-01", "2025-06-07", "2025-06-08"])
def test_holidays_and_weekends_have_no_ticks(day: str, config: Config) -> None:
    assert ticks_on(day, config) == []


@pytest.mark.parametrize("day", ["2025-11-28", "2025-12-24", "2025-07-03"])
def test_an_early_close_at_13_ends_the_day_at_1205(day: str, config: Config) -> None:
    assert hours(ticks_on(day, config)) == ["10:05", "11:05", "12:05"]


def test_both_ends_of_the_trading_window_are_included(config: Config) -> None:
    half_hourly = with_schedule(config, every_minutes=30, offset_minutes=0)
    ordinary = hours(ticks_on("2025-06-02", half_hourly))
    assert ordinary[0] == "09:30" and ordinary[-1] == "16:00" and len(ordinary) == 14
    early = hours(ticks_on("2025-11-28", half_hourly))
    assert early[0] == "09:30" and early[-1] == "13:00" and len(early) == 8


def test_market_hours_narrower_than_the_session_win(config: Config) -> None:
    narrow = config.model_copy(
        update={
            "workflow": config.workflow.model_copy(
                update={
                    "market_hours": config.workflow.market_hours.model_copy(
                        update={"open": dt.time(11), "close": dt.time(14)}
                    ),
                }
            )
        }
    )
    assert hours(ticks_on("2025-06-02", narrow)) == ["11:05", "12:05", "13:05"]


def test_every_day_mode_fires_around_the_clock_with_the_latest_session_as_logical_date(config: Config) -> None:
    daily = with_schedule(config, sessions_only=False)
    saturday = ticks_on("2025-06-07", daily)
    assert len(saturday) == 24 and hours(saturday)[:2] == ["00:05", "01:05"]
    assert {t.logical_date for t in saturday} == {dt.date(2025, 6, 6)}
    assert {t.logical_date for t in ticks_on("2025-07-04", daily)} == {dt.date(2025, 7, 3)}
    assert {t.logical_date for t in ticks_on("2025-06-09", daily)} == {dt.date(2025, 6, 9)}


def test_every_day_mode_skips_the_missing_hour_and_fires_the_repeated_hour_once(config: Config) -> None:
    daily = with_schedule(config, sessions_only=False)
    spring = ticks_on("2025-03-09", daily)  # 02:05 does not exist in New York that night
    assert len(spring) == 23 and "02:05" not in hours(spring)
    fall = ticks_on("2025-11-02", daily)  # 01:05 happens twice; it fires at the first (EDT)
    assert len(fall) == 24 and hours(fall).count("01:05") == 1
    assert fall[1].fire_at == utc("2025-11-02T05:05") and fall[2].fire_at == utc("2025-11-02T07:05")
    for ticks in (spring, fall):
        fired = [t.fire_at for t in ticks]
        assert fired == sorted(set(fired))


def test_run_ids_are_deterministic_from_the_fire_time(config: Config) -> None:
    first = ticks_on("2025-06-02", config)
    again = fire_times(utc("2025-06-02T00:00"), utc("2025-06-03T00:00"), config.schedule, config.workflow)
    assert [t.run_id for t in first] == [t.run_id for t in again]
    assert first[0].run_id == "sched-20250602T1405Z"
    assert sched.fire_at_from_run_id(first[0].run_id) == first[0].fire_at
    assert sched.fire_at_from_run_id("20250602T140501Z-abc123") is None
    assert sched.fire_at_from_run_id("sched-nonsense") is None


def test_next_and_previous_ticks_step_over_weekends_and_holidays(config: Config) -> None:
    s, w = config.schedule, config.workflow
    assert next_tick(ny("2025-07-03", "12:05"), s, w).fire_at == ny("2025-07-07", "10:05")  # early close + holiday
    assert next_tick(ny("2025-06-02", "10:04"), s, w).fire_at == ny("2025-06-02", "10:05")
    assert next_tick(ny("2025-06-02", "10:05"), s, w).fire_at == ny("2025-06-02", "11:05")  # strictly after
    back = previous_ticks(ny("2025-06-02", "10:30"), 3, s, w)
    assert [t.fire_at for t in back] == [
        ny("2025-05-30", "14:05"),
        ny("2025-05-30", "15:05"),
        ny("2025-06-02", "10:05"),
    ]
    assert previous_ticks(ny("2025-06-02", "10:05"), 1, s, w)[0].fire_at == ny("2025-06-02", "10:05")  # inclusive


def test_session_hours_are_the_exchanges_own_in_utc() -> None:
    from bentley.calendar import session_hours

    assert session_hours(dt.date(2025, 6, 2), "XNYS") == (utc("2025-06-02T13:30"), utc("2025-06-02T20:00"))
    assert session_hours(dt.date(2025, 12, 1), "XNYS") == (utc("2025-12-01T14:30"), utc("2025-12-01T21:00"))  # EST
    assert session_hours(dt.date(2025, 11, 28), "XNYS") == (utc("2025-11-28T14:30"), utc("2025-11-28T18:00"))  # early
    assert session_hours(dt.date(2025, 7, 4), "XNYS") is None and session_hours(dt.date(2025, 6, 7), "XNYS") is None
    opened, closed = session_hours(dt.date(2025, 6, 2), "XNYS")
    assert opened.utcoffset() == closed.utcoffset() == dt.timedelta(0)


def test_the_runner_uses_the_librarys_fire_time_math() -> None:
    """One grid for the scheduler and the health checks; runner.schedule re-exports its names."""
    from bentley import schedule_times

    for name in (
        "Tick",
        "day_ticks",
        "fire_times",
        "next_tick",
        "previous_ticks",
        "upcoming_ticks",
        "due_ticks",
        "run_id_for",
        "fire_at_from_run_id",
        "trading_window",
        "RUN_ID_PREFIX",
        "DUE_WINDOW",
    ):
        assert getattr(sched, name) is getattr(schedule_times, name), name


def test_the_trading_window_is_market_hours_inside_the_session(config: Config) -> None:
    from bentley.schedule_times import trading_window

    assert trading_window(dt.date(2025, 6, 2), config.workflow) == (
        ny("2025-06-02", "09:30"),
        ny("2025-06-02", "16:00"),
    )
    assert trading_window(dt.date(2025, 11, 28), config.workflow)[1] == ny("2025-11-28", "13:00")
    assert trading_window(dt.date(2025, 7, 4), config.workflow) is None


def test_missed_ticks_follow_the_schedule_not_the_wall_clock(config: Config) -> None:
    from bentley.schedule_times import MISSED_GRACE, missed_ticks

    s, w = config.schedule, config.workflow
    friday_last = ny("2025-06-06", "15:05")
    for now in (ny("2025-06-06", "23:00"), ny("2025-06-08", "23:59"), ny("2025-06-09", "10:09")):
        assert missed_ticks(friday_last, now, s, w) == [], now  # the weekend has no ticks
    assert [t.run_id for t in missed_ticks(friday_last, ny("2025-06-09", "10:11"), s, w)] == ["sched-20250609T1405Z"]
    weekday = missed_ticks(ny("2025-06-03", "11:05"), ny("2025-06-03", "13:10"), s, w)
    assert [t.fire_at for t in weekday] == [ny("2025-06-03", "12:05"), ny("2025-06-03", "13:05")]
    assert missed_ticks(ny("2025-06-03", "12:01"), ny("2025-06-03", "12:30"), s, w) == [], "started within the grace"
    assert MISSED_GRACE == dt.timedelta(minutes=5)
    holiday = missed_ticks(ny("2025-07-03", "12:05"), ny("2025-07-05", "12:00"), s, w)  # early close, then July 4th
    assert holiday == []
    long_outage = missed_ticks(ny("2025-01-02", "10:05"), ny("2025-06-03", "13:10"), s, w)
    assert long_outage[0].fire_at == ny("2025-01-02", "11:05")
    assert long_outage[-1].fire_at <= ny("2025-01-02", "11:05") + dt.timedelta(days=31), "the first month only"


# --------------------------------------------------------------------------- catch-up


def test_catch_up_none_runs_only_a_tick_that_just_fired(config: Config) -> None:
    s, w = config.schedule, config.workflow
    just = due_ticks(ny("2025-06-02", "10:05"), ny("2025-06-02", "11:05:30"), s, w, catch_up="none")
    assert [t.fire_at for t in just] == [ny("2025-06-02", "11:05")]
    late = due_ticks(ny("2025-06-02", "10:05"), ny("2025-06-02", "11:30"), s, w, catch_up="none")
    assert late == []  # missed while down: dropped
    wider = due_ticks(None, ny("2025-06-02", "11:30"), s, w, catch_up="none", window=dt.timedelta(minutes=30))
    assert [t.run_id for t in wider] == ["sched-20250602T1505Z"]
    done = due_ticks(ny("2025-06-02", "11:05"), ny("2025-06-02", "11:05:30"), s, w, catch_up="none")
    assert done == []


def test_catch_up_latest_runs_the_most_recent_missed_tick_only(config: Config) -> None:
    s, w = config.schedule, config.workflow
    now = ny("2025-06-02", "13:30")
    assert [t.fire_at for t in due_ticks(ny("2025-05-30", "12:05"), now, s, w, catch_up="latest")] == [
        ny("2025-06-02", "13:05")
    ]
    assert due_ticks(ny("2025-06-02", "13:05"), now, s, w, catch_up="latest") == []
    assert [t.fire_at for t in due_ticks(None, now, s, w, catch_up="latest")] == [ny("2025-06-02", "13:05")]
    overnight = due_ticks(ny("2025-06-02", "14:05"), ny("2025-06-02", "22:00"), s, w, catch_up="latest")
    assert [t.fire_at for t in overnight] == [ny("2025-06-02", "15:05")]


def test_catch_up_all_runs_every_missed_tick_in_order_capped_to_the_latest(config: Config) -> None:
    s, w = config.schedule, config.workflow
    now = ny("2025-06-02", "12:30")
    missed = due_ticks(ny("2025-05-30", "13:05"), now, s, w, catch_up="all", max_catch_up=24)
    assert [t.fire_at for t in missed] == [
        ny("2025-05-30", "14:05"),
        ny("2025-05-30", "15:05"),
        ny("2025-06-02", "10:05"),
        ny("2025-06-02", "11:05"),
        ny("2025-06-02", "12:05"),
    ]
    capped = due_ticks(ny("2025-05-30", "13:05"), now, s, w, catch_up="all", max_catch_up=2)
    assert [t.fire_at for t in capped] == [ny("2025-06-02", "11:05"), ny("2025-06-02", "12:05")]
    assert due_ticks(ny("2025-06-02", "12:05"), now, s, w, catch_up="all") == []
    first_start = due_ticks(None, now, s, w, catch_up="all")  # nothing done yet: nothing counts as missed
    assert [t.fire_at for t in first_start] == [ny("2025-06-02", "12:05")]


def test_catch_up_defaults_come_from_params(config: Config) -> None:
    assert config.schedule.catch_up == "latest"
    now = ny("2025-06-02", "13:30")
    assert due_ticks(ny("2025-06-02", "10:05"), now, config.schedule, config.workflow) == due_ticks(
        ny("2025-06-02", "10:05"), now, config.schedule, config.workflow, catch_up="latest"
    )
    with pytest.raises(ValueError, match="unknown catch_up"):
        due_ticks(None, now, config.schedule, config.workflow, catch_up="sometimes")


# --------------------------------------------------------------------------- the CLI's dry run


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sched.add_arguments(parser)
    return parser.parse_args(argv)


def test_dry_run_prints_the_next_fire_times_and_touches_nothing(
    tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BENTLEY_WAREHOUSE_URL", raising=False)
    outputs = tmp_path / "out"
    console = Console(record=True, width=200, file=io.StringIO())
    code = sched.command(
        parse(["--dry-run", "4", "--now", "2025-11-27T09:00", "--outputs", str(outputs)]), root, console
    )
    text = console.export_text()
    assert code == 0
    lines = [line.split() for line in text.splitlines() if line.strip().startswith("sched-")]
    # Thanksgiving (closed), then the early close on Friday, then Monday
    assert [line[0] for line in lines] == [
        "sched-20251128T1505Z",
        "sched-20251128T1605Z",
        "sched-20251128T1705Z",
        "sched-20251201T1505Z",
    ]
    assert lines[0][1:4] == ["2025-11-28", "10:05", "EST"]
    assert lines[0][4:7] == ["2025-11-28", "15:05", "UTC"]
    assert lines[-1][-1] == "2025-12-01"  # logical date
    assert not outputs.exists()


def test_dry_run_defaults_to_ten(root: Path, tmp_path: Path) -> None:
    console = Console(record=True, width=200, file=io.StringIO())
    assert sched.command(parse(["--dry-run", "--now", "2025-06-02T08:00-04:00"]), root, console) == 0
    assert sum(line.strip().startswith("sched-") for line in console.export_text().splitlines()) == 10


def test_bad_flags_are_usage_errors() -> None:
    for argv in (["--dry-run", "0"], ["--now", "yesterday"]):
        with pytest.raises(SystemExit):
            parse(argv)


# --------------------------------------------------------------------------- the loop (frozen clock)


class FrozenClock:
    """Time moves only when the scheduler sleeps; `until` sets the stop event."""

    def __init__(self, start: dt.datetime, until: dt.datetime | None = None) -> None:
        self.current = start
        self.until = until
        self.slept = 0.0

    def now(self) -> dt.datetime:
        return self.current

    def sleep(self, seconds: float, stop: threading.Event) -> None:
        assert seconds <= sched.STEP_S, "the loop must wake at least every second"
        self.current += dt.timedelta(seconds=max(seconds, 0.001))
        self.slept += seconds
        if self.until is not None and self.current >= self.until:
            stop.set()


class FakeRuns:
    """Stands in for run_pipeline: records calls, writes the ledger row, answers a fixed code."""

    def __init__(self, warehouse: Warehouse, code: int = 0, stop_after: int | None = None) -> None:
        self.warehouse = warehouse
        self.code = code
        self.stop_after = stop_after
        self.calls: list[tuple[str, dt.date, list[str]]] = []

    def __call__(self, tick: Tick, overrides: list[str], stop: threading.Event) -> int:
        self.calls.append((tick.run_id, tick.logical_date, list(overrides)))
        if self.code != sched.EXIT_BUSY:
            self.warehouse.upsert(
                "pipeline_runs",
                pd.DataFrame(
                    [
                        {
                            "run_id": tick.run_id,
                            "status": "success" if self.code == 0 else "failed",
                            "logical_date": tick.logical_date,
                            "started_at": tick.fire_at,
                            "ended_at": tick.fire_at,
                        }
                    ]
                ),
            )
        if self.stop_after is not None and len(self.calls) >= self.stop_after:
            stop.set()
        return self.code


@pytest.fixture()
def warehouse(tmp_path: Path) -> Warehouse:
    w = Warehouse(f"sqlite:///{tmp_path / 'warehouse.db'}")
    yield w
    w.dispose()


def scheduler(
    config: Config,
    warehouse: Warehouse,
    runs: FakeRuns,
    clock: FrozenClock,
    tmp_path: Path,
    overrides: tuple[str, ...] = (),
) -> tuple[Scheduler, Console]:
    console = Console(record=True, width=240, file=io.StringIO())
    return Scheduler(
        config,
        tmp_path,
        runs,
        console,
        overrides=overrides,
        clock=clock,
        warehouse=warehouse,
        scheduler_id="testhost:1:abc",
    ), console


def test_the_loop_fires_the_due_tick_once_and_writes_heartbeats(
    config: Config, warehouse: Warehouse, tmp_path: Path
) -> None:
    runs = FakeRuns(warehouse)
    clock = FrozenClock(ny("2025-06-02", "10:04:50"), until=ny("2025-06-02", "10:06:30"))
    loop, console = scheduler(
        with_schedule(config, catch_up="none"), warehouse, runs, clock, tmp_path, overrides=("sample.n_tickers=3",)
    )
    assert loop.loop() == 0
    assert runs.calls == [("sched-20250602T1405Z", dt.date(2025, 6, 2), ["sample.n_tickers=3"])]
    beat = warehouse.read("scheduler_heartbeats").iloc[0]
    assert beat["scheduler_id"] == "testhost:1:abc" and beat["status"] == "stopped"
    assert beat["last_run_id"] == "sched-20250602T1405Z"
    assert beat["next_fire_at"] == pd.Timestamp(ny("2025-06-02", "11:05"))
    assert beat["heartbeat_at"] == pd.Timestamp(clock.current)
    assert "tick sched-20250602T1405Z" in console.export_text()


def test_the_loop_catches_up_on_start_then_waits(config: Config, warehouse: Warehouse, tmp_path: Path) -> None:
    warehouse.upsert("pipeline_runs", pd.DataFrame([{"run_id": "sched-20250602T1405Z", "status": "success"}]))
    runs = FakeRuns(warehouse)
    clock = FrozenClock(ny("2025-06-02", "12:30"), until=ny("2025-06-02", "12:31"))
    loop, _ = scheduler(with_schedule(config, catch_up="all"), warehouse, runs, clock, tmp_path)
    loop.loop()
    assert [c[0] for c in runs.calls] == ["sched-20250602T1505Z", "sched-20250602T1605Z"]


@pytest.mark.parametrize("status", ["interrupted", "crashed", "running"])
def test_a_tick_whose_run_did_not_finish_runs_again(
    status: str, config: Config, warehouse: Warehouse, tmp_path: Path
) -> None:
    warehouse.upsert(
        "pipeline_runs",
        pd.DataFrame(
            [
                {"run_id": "sched-20250530T1905Z", "status": "success"},
                {"run_id": "sched-20250602T1405Z", "status": status},
                {"run_id": "20250602T150000Z-abcdef", "status": "success"},  # a manual run is not a tick
            ]
        ),
    )
    runs = FakeRuns(warehouse)
    loop, _ = scheduler(config, warehouse, runs, FrozenClock(ny("2025-06-02", "10:45")), tmp_path)
    assert loop.last_done() == ny("2025-05-30", "15:05")
    assert loop.once() == 0
    assert [c[0] for c in runs.calls] == ["sched-20250602T1405Z"]


def test_a_run_stopped_by_the_scheduler_says_so(config: Config, warehouse: Warehouse, tmp_path: Path) -> None:
    def stopped(tick: Tick, overrides: list[str], stop: threading.Event) -> int:
        stop.set()  # SIGTERM arrived mid-run: run_pipeline finishes the running stage and returns 1
        return sched.EXIT_FAILED

    loop, console = scheduler(config, warehouse, stopped, FrozenClock(ny("2025-06-02", "10:05:01")), tmp_path)
    assert loop.loop() == 0
    assert "tick sched-20250602T1405Z: stopped before every stage ran (status interrupted)" in console.export_text()
    assert warehouse.read("scheduler_heartbeats")["status"].tolist() == ["stopped"]


def test_a_busy_tick_is_logged_with_its_holder_and_not_retried(
    config: Config, warehouse: Warehouse, tmp_path: Path
) -> None:
    warehouse.upsert(
        "leases", pd.DataFrame([{"name": "pipeline", "holder": "otherhost:77:def", "run_id": "manual-1", "version": 1}])
    )
    runs = FakeRuns(warehouse, code=sched.EXIT_BUSY)
    clock = FrozenClock(ny("2025-06-02", "10:04:59"), until=ny("2025-06-02", "10:08"))
    loop, console = scheduler(with_schedule(config, catch_up="none"), warehouse, runs, clock, tmp_path)
    assert loop.loop() == 0
    assert [c[0] for c in runs.calls] == ["sched-20250602T1405Z"], "moved on: not retried every second"
    assert "tick sched-20250602T1405Z skipped: otherhost:77:def (run manual-1) is running" in console.export_text()


def test_retraining_required_adds_the_override_to_that_run(
    config: Config, warehouse: Warehouse, tmp_path: Path
) -> None:
    warehouse.upsert(
        "model_monitoring",
        pd.DataFrame(
            [
                {
                    "run_id": "r1",
                    "model_name": "m",
                    "model_version": "3",
                    "as_of": dt.date(2025, 5, 29),
                    "retraining_required": False,
                    "reason": "fine",
                },
                {
                    "run_id": "r2",
                    "model_name": "m",
                    "model_version": "3",
                    "as_of": dt.date(2025, 5, 30),
                    "retraining_required": True,
                    "reason": "accuracy fell 12%",
                },
            ]
        ),
    )
    runs = FakeRuns(warehouse, stop_after=1)
    loop, console = scheduler(
        config, warehouse, runs, FrozenClock(ny("2025-06-02", "10:05:01")), tmp_path, overrides=("a.b=1",)
    )
    loop.loop()
    assert runs.calls[0][2] == ["a.b=1", "ml.retrain=true"]
    assert "needs retraining (accuracy fell 12%); this run sets ml.retrain=true" in console.export_text()


def test_no_retraining_override_when_the_latest_row_is_fine(
    config: Config, warehouse: Warehouse, tmp_path: Path
) -> None:
    warehouse.upsert(
        "model_monitoring",
        pd.DataFrame(
            [
                {"run_id": "r1", "model_name": "m", "as_of": dt.date(2025, 5, 29), "retraining_required": True},
                {"run_id": "r2", "model_name": "m", "as_of": dt.date(2025, 5, 30), "retraining_required": False},
            ]
        ),
    )
    runs = FakeRuns(warehouse, stop_after=1)
    loop, _ = scheduler(config, warehouse, runs, FrozenClock(ny("2025-06-02", "10:05:01")), tmp_path)
    loop.loop()
    assert runs.calls[0][2] == []


def test_once_runs_the_latest_past_tick_when_nothing_is_due(
    config: Config, warehouse: Warehouse, tmp_path: Path
) -> None:
    runs = FakeRuns(warehouse, code=1)
    loop, _ = scheduler(
        with_schedule(config, catch_up="none"), warehouse, runs, FrozenClock(ny("2025-06-02", "10:45")), tmp_path
    )
    assert loop.once() == 1, "the run's exit code"
    assert [c[0] for c in runs.calls] == ["sched-20250602T1405Z"]
    assert warehouse.read("scheduler_heartbeats").empty, "--once keeps no heartbeat"


def test_once_treats_busy_as_done_elsewhere(config: Config, warehouse: Warehouse, tmp_path: Path) -> None:
    runs = FakeRuns(warehouse, code=sched.EXIT_BUSY)
    loop, console = scheduler(config, warehouse, runs, FrozenClock(ny("2025-06-02", "10:45")), tmp_path)
    assert loop.once() == 0
    assert "tick sched-20250602T1405Z skipped: another runner is running" in console.export_text()


@pytest.mark.parametrize(
    "error",
    [
        "ParamsError: params/default.yaml:3: sample.seed: bad",
        # A data cell `[/]` or `[bold]` in an error used to crash the console and end the scheduler.
        "ValueError: data/prices/NOVA.csv:3: close: '[/]' and '[bold]x' are not numbers",
    ],
)
def test_a_tick_that_raises_does_not_end_the_loop(
    error: str, config: Config, warehouse: Warehouse, tmp_path: Path
) -> None:
    from bentley.config import ParamsError

    kind, message = error.split(": ", 1)
    calls: list[str] = []

    def broken(tick: Tick, overrides: list[str], stop: threading.Event) -> int:
        calls.append(tick.run_id)
        raise {"ParamsError": ParamsError, "ValueError": ValueError}[kind](message)

    clock = FrozenClock(ny("2025-06-02", "10:04:59"), until=ny("2025-06-02", "11:05:02"))
    loop, console = scheduler(with_schedule(config, catch_up="none"), warehouse, broken, clock, tmp_path)
    assert loop.loop() == 0
    assert calls == ["sched-20250602T1405Z", "sched-20250602T1505Z"], "the next tick was served"
    assert console.export_text().count(f"error: {error}") == 2, "shown literally, once per tick"
    with pytest.raises(ParamsError if kind == "ParamsError" else ValueError):
        scheduler(config, warehouse, broken, FrozenClock(ny("2025-06-02", "10:45")), tmp_path)[0].once()


def test_the_stop_event_ends_the_loop_with_status_stopped(config: Config, warehouse: Warehouse, tmp_path: Path) -> None:
    runs = FakeRuns(warehouse)
    stop = threading.Event()
    stop.set()  # e.g. SIGTERM before the first poll
    console = Console(record=True, width=200, file=io.StringIO())
    loop = Scheduler(
        config, tmp_path, runs, console, clock=FrozenClock(ny("2025-06-02", "10:05:01")), stop=stop, warehouse=warehouse
    )
    assert loop.loop() == 0
    assert runs.calls == []
    beats = warehouse.read("scheduler_heartbeats")
    assert beats["status"].tolist() == ["stopped"] and beats["scheduler_id"][0] == loop.scheduler_id
