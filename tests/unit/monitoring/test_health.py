"""Health checks against a temporary SQLite warehouse, and the HTTP endpoint on a real port."""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from collections import namedtuple
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from bentley.config import Config, load_config
from bentley.monitoring import health
from bentley.monitoring.health import (
    Check,
    check_disk,
    check_freshness,
    check_last_run,
    check_scheduler,
)
from bentley.warehouse import Warehouse
from runner.health import serve_health, server_url

NOW = dt.datetime(2025, 6, 3, 15, 0, tzinfo=dt.UTC)  # Tuesday 11:00 New York; latest closed session: 2025-06-02
NY = ZoneInfo("America/New_York")
Usage = namedtuple("Usage", "total used free")


@pytest.fixture(autouse=True)
def _no_shared_services(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BENTLEY_WAREHOUSE_URL", "BENTLEY_WAREHOUSE_PASSWORD", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def config(root: Path) -> Config:
    return load_config(root=root)


@pytest.fixture()
def outputs(tmp_path: Path) -> Path:
    return tmp_path / "outputs"


@pytest.fixture()
def warehouse(outputs: Path) -> Iterator[Warehouse]:
    w = Warehouse(f"sqlite:///{outputs / 'warehouse.db'}")
    yield w
    w.dispose()


def run_row(run_id: str, status: str, started: dt.datetime, minutes: float = 3.0) -> dict:
    return {
        "run_id": run_id,
        "status": status,
        "logical_date": dt.date(2025, 6, 2),
        "started_at": started,
        "ended_at": started + dt.timedelta(minutes=minutes),
    }


def by_component(checks: list[Check]) -> dict[str, Check]:
    return {c.component: c for c in checks}


def ny(day: str, hhmm: str) -> dt.datetime:
    return dt.datetime.combine(dt.date.fromisoformat(day), dt.time.fromisoformat(hhmm), NY).astimezone(dt.UTC)


def last_run(warehouse: Warehouse, config: Config, now: dt.datetime) -> Check:
    return check_last_run(warehouse, config.schedule, config.workflow, now)


def freshness(warehouse: Warehouse, config: Config, now: dt.datetime) -> Check:
    return check_freshness(warehouse, config.schedule, config.workflow, now)


# --------------------------------------------------------------------------- last_run


def test_no_runs_yet_is_degraded(warehouse: Warehouse, config: Config) -> None:
    check = last_run(warehouse, config, NOW)
    assert (check.status, check.detail) == ("degraded", "no runs yet")


def test_a_recent_successful_run_is_ok(warehouse: Warehouse, config: Config) -> None:
    warehouse.upsert(
        "pipeline_runs",
        pd.DataFrame(
            [
                run_row("old-failure", "failed", NOW - dt.timedelta(hours=5)),
                run_row("sched-20250603T1405Z", "success", NOW - dt.timedelta(minutes=55)),
            ]
        ),
    )
    check = last_run(warehouse, config, NOW)
    assert check.status == "ok", check.detail
    assert check.data["run_id"] == "sched-20250603T1405Z" and check.data["age_minutes"] == 52.0


def test_a_run_that_started_before_the_latest_due_tick_is_degraded_naming_that_tick(
    warehouse: Warehouse, config: Config
) -> None:
    """Stale means "a tick fired (more than the grace ago) and no run started for it", not "old".

    At 11:00 the 10:05 tick is due; a run that started at 08:56 cannot have been it.
    """
    warehouse.upsert("pipeline_runs", pd.DataFrame([run_row("r1", "success", NOW - dt.timedelta(minutes=124))]))
    check = last_run(warehouse, config, NOW)
    assert check.status == "degraded"
    assert check.detail == (
        "run r1 (success) started 2025-06-03 08:56 EDT; no run for tick sched-20250603T1405Z (2025-06-03 10:05 EDT)"
    )
    assert check.data["missed_ticks"] == 1 and check.data["first_missed_run_id"] == "sched-20250603T1405Z"


FRIDAY_LAST_TICK = ny("2025-06-06", "15:05")  # the last tick before the weekend


@pytest.mark.parametrize(
    "now",
    [ny("2025-06-06", "20:00"), ny("2025-06-07", "12:00"), ny("2025-06-08", "23:00"), ny("2025-06-09", "10:09")],
    ids=["friday-evening", "saturday", "sunday", "monday-before-the-first-tick-is-late"],
)
def test_the_run_of_fridays_last_tick_is_still_current_over_the_weekend(
    now: dt.datetime, warehouse: Warehouse, config: Config
) -> None:
    """No tick is due while the market is closed, so no run is missing however many wall hours pass
    (the old rule, older than 2 x every_minutes, read degraded every night and weekend)."""
    warehouse.upsert(
        "pipeline_runs",
        pd.DataFrame([run_row("sched-20250606T1905Z", "success", FRIDAY_LAST_TICK + dt.timedelta(seconds=1))]),
    )
    check = last_run(warehouse, config, now)
    assert check.status == "ok", check.detail
    assert check.data["missed_ticks"] == 0 and check.data["age_minutes"] > 4 * 60


def test_a_missed_weekday_tick_is_degraded_and_named(warehouse: Warehouse, config: Config) -> None:
    """13:10 with the latest run at 11:05: the 12:05 tick started nothing (and 13:05, 5 min ago, neither)."""
    warehouse.upsert(
        "pipeline_runs", pd.DataFrame([run_row("sched-20250603T1505Z", "success", ny("2025-06-03", "11:05"))])
    )
    check = last_run(warehouse, config, ny("2025-06-03", "13:10"))
    assert check.status == "degraded"
    assert check.detail == (
        "run sched-20250603T1505Z (success) started 2025-06-03 11:05 EDT; "
        "no run for tick sched-20250603T1605Z (2025-06-03 12:05 EDT) and 1 later tick"
    )
    assert check.data["missed_ticks"] == 2 and check.data["first_missed_run_id"] == "sched-20250603T1605Z"


def test_a_tick_has_a_few_minutes_grace_to_start(warehouse: Warehouse, config: Config) -> None:
    """At 13:09 the 13:05 tick may still be starting (slow poll, clock skew): not missed yet."""
    warehouse.upsert(
        "pipeline_runs", pd.DataFrame([run_row("sched-20250603T1605Z", "success", ny("2025-06-03", "12:05"))])
    )
    assert last_run(warehouse, config, ny("2025-06-03", "13:09")).status == "ok"
    late = last_run(warehouse, config, ny("2025-06-03", "13:11"))
    assert late.status == "degraded" and "sched-20250603T1705Z" in late.detail


def test_a_manual_run_after_the_latest_tick_counts(warehouse: Warehouse, config: Config) -> None:
    warehouse.upsert(
        "pipeline_runs", pd.DataFrame([run_row("20250603T163000Z-abcdef", "success", ny("2025-06-03", "12:30"))])
    )
    check = last_run(warehouse, config, ny("2025-06-03", "13:04"))
    assert check.status == "ok", check.detail


def test_in_every_day_mode_the_weekend_has_ticks_too(warehouse: Warehouse, config: Config) -> None:
    """`sessions_only: false` puts every day on the grid, so the same rule flags a Saturday gap."""
    daily = config.model_copy(update={"schedule": config.schedule.model_copy(update={"sessions_only": False})})
    warehouse.upsert(
        "pipeline_runs", pd.DataFrame([run_row("sched-20250607T1505Z", "success", ny("2025-06-07", "11:05"))])
    )
    assert last_run(warehouse, daily, ny("2025-06-07", "12:00")).status == "ok"
    check = last_run(warehouse, daily, ny("2025-06-07", "13:10"))
    assert check.status == "degraded" and "no run for tick sched-20250607T1605Z" in check.detail
    assert last_run(warehouse, config, ny("2025-06-07", "13:10")).status == "ok", "sessions only: no Saturday tick"


@pytest.mark.parametrize("status", ["failed", "crashed"])
def test_a_failed_or_crashed_latest_run_is_degraded(status: str, warehouse: Warehouse, config: Config) -> None:
    warehouse.upsert(
        "pipeline_runs",
        pd.DataFrame(
            [
                run_row("earlier", "success", NOW - dt.timedelta(minutes=70)),
                run_row("latest", status, NOW - dt.timedelta(minutes=10)),
            ]
        ),
    )
    check = last_run(warehouse, config, NOW)
    assert (check.status, check.detail) == ("degraded", f"run latest {status}")


# --------------------------------------------------------------------------- scheduler


def heartbeat(scheduler_id: str, at: dt.datetime, status: str = "running") -> dict:
    return {
        "scheduler_id": scheduler_id,
        "host": "h",
        "pid": 1,
        "started_at": at - dt.timedelta(hours=1),
        "heartbeat_at": at,
        "next_fire_at": dt.datetime(2025, 6, 3, 15, 5, tzinfo=dt.UTC),
        "last_run_id": "sched-20250603T1405Z",
        "status": status,
    }


def test_a_fresh_heartbeat_is_ok(warehouse: Warehouse, config: Config) -> None:
    warehouse.upsert(
        "scheduler_heartbeats",
        pd.DataFrame(
            [
                heartbeat("gone:1:aaa", NOW - dt.timedelta(days=2)),  # killed -9 long ago: still says running
                heartbeat("alive:2:bbb", NOW - dt.timedelta(seconds=20)),
            ]
        ),
    )
    check = check_scheduler(warehouse, config.schedule, NOW)
    assert check.status == "ok", check.detail
    assert "alive:2:bbb beat 20 s ago" in check.detail and "next fire 2025-06-03 15:05 UTC" in check.detail


def test_no_scheduler_ever_is_not_configured_and_ok(warehouse: Warehouse, config: Config) -> None:
    check = check_scheduler(warehouse, config.schedule, NOW)
    assert check.status == "ok" and check.detail.startswith("not configured") and check.data == {"configured": False}
    assert not health.schedule_expected(warehouse)


def test_a_cleanly_stopped_scheduler_is_not_expected(warehouse: Warehouse, config: Config) -> None:
    warehouse.upsert("scheduler_heartbeats", pd.DataFrame([heartbeat("done:1:aaa", NOW, status="stopped")]))
    check = check_scheduler(warehouse, config.schedule, NOW)
    assert check.status == "ok" and "done:1:aaa stopped cleanly" in check.detail
    assert not health.schedule_expected(warehouse)


def test_without_a_schedule_missed_ticks_do_not_count(
    warehouse: Warehouse, config: Config, outputs: Path, root: Path
) -> None:
    """A user who runs the pipeline by hand is not "degraded" because the scheduler's ticks pass:
    yesterday's ingest with its prices up to date, and a run 2 h ago, are fine; a scheduler that
    died without saying so makes the ticks since then due."""
    warehouse.upsert("pipeline_runs", pd.DataFrame([run_row("r1", "success", NOW - dt.timedelta(minutes=124))]))
    warehouse.upsert("prices", prices_for("2025-06-02"))
    warehouse.upsert("stage_runs", pd.DataFrame([ingest_row("r0", "success", ny("2025-06-02", "14:06"))]))
    found = by_component(health.run_checks(config, outputs, root, now=NOW))
    for component in ("last_run", "freshness", "scheduler"):
        assert found[component].status == "ok", (component, found[component].detail)
    assert found["last_run"].detail.endswith("(no schedule to keep)")
    warehouse.upsert("scheduler_heartbeats", pd.DataFrame([heartbeat("died:1:a", NOW - dt.timedelta(hours=3))]))
    found = by_component(health.run_checks(config, outputs, root, now=NOW))
    assert {found[c].status for c in ("last_run", "freshness", "scheduler")} == {"degraded"}


def test_the_tracking_check_of_a_sqlite_store_does_not_start_mlflow(tmp_path: Path, config: Config) -> None:
    import sqlite3
    import subprocess
    import sys

    store = tmp_path / "mlflow" / "mlflow.db"
    store.parent.mkdir()
    with sqlite3.connect(store) as conn:
        conn.execute("CREATE TABLE experiments (experiment_id INTEGER, name TEXT, lifecycle_stage TEXT)")
        conn.execute("INSERT INTO experiments VALUES (7, ?, 'active')", (config.tracking.experiment,))
    check = health.check_tracking(config, tmp_path)
    assert check.status == "ok" and check.data["experiment_id"] == "7"
    code = (
        "import sys; from pathlib import Path; from bentley.config import load_config; "
        "from bentley.monitoring import health; "
        f"c = health.check_tracking(load_config(), Path({str(tmp_path)!r})); "
        "assert c.status == 'ok', c; assert 'mlflow' not in sys.modules, 'MLflow was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_stale_heartbeat_is_degraded(warehouse: Warehouse, config: Config) -> None:
    stale = 3 * config.schedule.heartbeat_s + 1
    warehouse.upsert("scheduler_heartbeats", pd.DataFrame([heartbeat("s:1:a", NOW - dt.timedelta(seconds=stale))]))
    check = check_scheduler(warehouse, config.schedule, NOW)
    assert check.status == "degraded" and f"last beat {stale:.0f} s ago" in check.detail


# --------------------------------------------------------------------------- freshness


def ingest_row(run_id: str, status: str, ended: dt.datetime) -> dict:
    return {"run_id": run_id, "stage": "ingest", "attempt": 1, "status": status, "started_at": ended, "ended_at": ended}


def prices_for(day: str) -> pd.DataFrame:
    return pd.DataFrame([{"ticker": "NOVA", "date": pd.Timestamp(day), "close": 1.0}])


def test_fresh_prices_and_a_recent_ingest_are_ok(warehouse: Warehouse, config: Config) -> None:
    warehouse.upsert("prices", prices_for("2025-06-02"))
    warehouse.upsert(
        "stage_runs",
        pd.DataFrame(
            [
                ingest_row("a", "success", NOW - dt.timedelta(minutes=90)),
                ingest_row("b", "cached", NOW - dt.timedelta(minutes=20)),
                ingest_row("c", "failed", NOW - dt.timedelta(minutes=1)),
            ]
        ),
    )
    check = freshness(warehouse, config, NOW)
    assert check.status == "ok", check.detail
    assert check.data["latest_price_date"] == dt.date(2025, 6, 2) and check.data["ingest_age_minutes"] == 20.0


def test_old_prices_or_an_ingest_missing_due_ticks_are_degraded(warehouse: Warehouse, config: Config) -> None:
    """The ingest ended Monday 14:06, so Monday's 15:05 tick brought none: ~20 h overdue by Tuesday 11:00."""
    warehouse.upsert("prices", prices_for("2025-05-30"))
    warehouse.upsert("stage_runs", pd.DataFrame([ingest_row("a", "success", ny("2025-06-02", "14:06"))]))
    check = freshness(warehouse, config, NOW)
    assert check.status == "degraded"
    assert "latest prices are for 2025-05-30; the latest closed session is 2025-06-02" in check.detail
    assert (
        "last ingest 20.9 h ago; no ingest for tick sched-20250602T1905Z (2025-06-02 15:05 EDT) and 1 later "
        "tick, 19.9 h overdue (limit 60 min)"
    ) in check.detail
    assert check.data["first_missed_run_id"] == "sched-20250602T1905Z"


def test_an_ingest_is_late_only_from_the_first_tick_that_brought_none(warehouse: Warehouse, config: Config) -> None:
    """Ingest 09:59, 61 wall minutes before 11:00 (the old rule: degraded). Only the minutes since the
    10:05 tick count: 55 at 11:00 (within data_freshness_minutes), 61 at 11:06."""
    warehouse.upsert("prices", prices_for("2025-06-02"))
    warehouse.upsert("stage_runs", pd.DataFrame([ingest_row("a", "success", NOW - dt.timedelta(minutes=61))]))
    check = freshness(warehouse, config, NOW)
    assert check.status == "ok", check.detail
    assert check.data["ingest_age_minutes"] == 61.0 and check.data["overdue_minutes"] == 55.0
    late = freshness(warehouse, config, NOW + dt.timedelta(minutes=6))
    assert late.status == "degraded"
    assert late.detail == (
        "last ingest 67 min ago; no ingest for tick sched-20250603T1405Z (2025-06-03 10:05 EDT), "
        "61 min overdue (limit 60 min)"
    )


@pytest.mark.parametrize(
    "now",
    [ny("2025-06-06", "20:00"), ny("2025-06-07", "12:00"), ny("2025-06-08", "23:00")],
    ids=["friday-evening", "saturday", "sunday"],
)
def test_the_ingest_of_fridays_last_tick_stays_fresh_over_the_weekend(
    now: dt.datetime, warehouse: Warehouse, config: Config
) -> None:
    """The closed market's wall hours do not count: no tick has fired since that ingest."""
    warehouse.upsert("prices", prices_for("2025-06-06"))
    warehouse.upsert(
        "stage_runs", pd.DataFrame([ingest_row("a", "success", FRIDAY_LAST_TICK + dt.timedelta(minutes=1))])
    )
    check = freshness(warehouse, config, now)
    assert check.status == "ok", check.detail
    assert check.detail.endswith("ago, none due since") and check.data["overdue_minutes"] == 0.0


def test_a_weekday_ingest_that_missed_a_tick_is_degraded(warehouse: Warehouse, config: Config) -> None:
    """13:10 with the last ingest at 11:06: the 12:05 tick brought none, 65 min ago."""
    warehouse.upsert("prices", prices_for("2025-06-02"))
    warehouse.upsert("stage_runs", pd.DataFrame([ingest_row("a", "success", ny("2025-06-03", "11:06"))]))
    check = freshness(warehouse, config, ny("2025-06-03", "13:10"))
    assert check.status == "degraded"
    assert check.detail == (
        "last ingest 2.1 h ago; no ingest for tick sched-20250603T1605Z (2025-06-03 12:05 EDT) "
        "and 1 later tick, 65 min overdue (limit 60 min)"
    )


def test_no_data_yet_is_degraded(warehouse: Warehouse, config: Config) -> None:
    check = freshness(warehouse, config, NOW)
    assert check.status == "degraded" and check.detail == "no prices loaded yet; no successful ingest yet"


# --------------------------------------------------------------------------- disk, lake, warehouse


@pytest.mark.parametrize(("used_share", "status"), [(0.5, "ok"), (0.85, "degraded"), (0.95, "down")])
def test_disk_thresholds_come_from_the_monitor_rules(
    used_share: float, status: str, tmp_path: Path, config: Config
) -> None:
    total = 1000 * 2**30
    free = int(total * (1 - used_share))

    def usage(path: str) -> Usage:
        assert path == str(tmp_path), "the nearest existing folder of the outputs"
        return Usage(total, total - free, free)

    check = check_disk(tmp_path / "not-yet" / "outputs", config.monitor, usage=usage)
    assert check.status == status, check.detail
    assert check.data["degraded_above"] == 0.8 and check.data["down_above"] == 0.9


def test_disk_use_is_counted_as_df_and_the_monitor_count_it(tmp_path: Path, config: Config) -> None:
    """Blocks reserved for root are neither used nor free: 25 GiB used and 75 GiB available on a
    250 GiB filesystem is 25% in use (what `df` and the monitor report say), not 70%."""
    from bentley.monitoring import kpis
    from bentley.monitoring.resources import disk_use

    gib = 2**30

    def usage(_path: object) -> Usage:
        return Usage(250 * gib, 25 * gib, 75 * gib)

    assert disk_use(tmp_path, usage).share == 0.25
    check = check_disk(tmp_path, config.monitor, usage=usage)
    assert check.data["used_share"] == 0.25 and check.detail.startswith("25% in use")
    real = kpis.host_resources(tmp_path, cpu_interval_s=0.05)
    assert real.disk == pytest.approx(disk_use(tmp_path).share, abs=0.01)
    assert check_disk(tmp_path, config.monitor).data["used_share"] == pytest.approx(real.disk, abs=0.01)


def test_the_lake_is_degraded_before_the_first_run_and_down_when_unusable(tmp_path: Path) -> None:
    assert health.check_lake(tmp_path).status == "degraded"
    (tmp_path / "lake").mkdir()
    assert health.check_lake(tmp_path).status == "ok"
    other = tmp_path / "other"
    other.mkdir()
    (other / "lake").write_text("a file where the lake folder should be")
    assert health.check_lake(other).status == "down"


def test_an_unreachable_warehouse_is_down_and_everything_else_still_reports(
    tmp_path: Path, root: Path, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BENTLEY_WAREHOUSE_PASSWORD", "s3cret-pw")
    unreachable = config.model_copy(
        update={
            "warehouse": config.warehouse.model_copy(update={"url": "postgresql+psycopg://bentley@127.0.0.1:1/nowhere"})
        }
    )
    checks = health.run_checks(unreachable, tmp_path / "outputs", root, now=NOW)
    found = by_component(checks)
    assert [c.component for c in checks] == list(health.COMPONENTS)
    assert found["warehouse"].status == "down"
    assert found["warehouse"].detail.startswith("postgresql+psycopg://bentley:***@127.0.0.1:1/nowhere: ")
    assert found["last_run"].status == "degraded" and found["last_run"].detail.startswith("not checked")
    assert found["sources"].status == "ok", "the sample sources are healthy offline"
    assert health.overall(checks) == "down" and health.exit_code(checks) == 2
    assert "s3cret-pw" not in json.dumps([c.as_dict() for c in checks])


def test_a_sqlite_warehouse_that_cannot_be_opened_is_down(tmp_path: Path, config: Config) -> None:
    garbage = tmp_path / "warehouse.db"
    garbage.write_text("not a SQLite database, just text " * 20)
    broken = config.model_copy(
        update={"warehouse": config.warehouse.model_copy(update={"url": f"sqlite:///{garbage}"})}
    )
    check, warehouse = health.open_warehouse(broken, tmp_path)
    assert warehouse is None and check.status == "down", check.detail


def test_a_working_setup_reports_ok_from_the_warehouse_and_tracking(
    outputs: Path, warehouse: Warehouse, root: Path, config: Config
) -> None:
    from bentley.tracking import PipelineTracker, tracking_uri

    PipelineTracker(tracking_uri(None, outputs), config.tracking.experiment, outputs)  # creates the store
    (outputs / "lake").mkdir()
    warehouse.upsert("pipeline_runs", pd.DataFrame([run_row("r1", "success", NOW - dt.timedelta(minutes=30))]))
    found = by_component(health.run_checks(config, outputs, root, now=NOW))
    for component in ("warehouse", "tracking", "lake", "sources", "last_run"):
        assert found[component].status == "ok", (component, found[component].detail)
    assert found["tracking"].data["experiment_id"]
    assert found["scheduler"].status == "ok" and found["scheduler"].detail.startswith("not configured")
    json.dumps([c.as_dict() for c in found.values()])  # JSON-able throughout


def test_a_missing_tracking_store_is_degraded(tmp_path: Path, config: Config) -> None:
    check = health.check_tracking(config, tmp_path)
    assert check.status == "degraded" and "no tracking store yet" in check.detail
    assert check.data["store_exists"] is False
    assert not (tmp_path / "mlflow").exists(), "a health check creates nothing"


def test_tracking_health_creates_no_store_of_any_kind(tmp_path: Path, config: Config) -> None:
    from bentley import tracking

    default = tracking.health(tracking.tracking_uri(None, tmp_path), "x", tmp_path)
    assert (default.ok, default.store_exists) == (False, False)
    assert default.detail.endswith("mlflow.db (the first run creates it)")
    other = tracking.health(f"sqlite:///{tmp_path / 'elsewhere' / 'm.db'}", "x", tmp_path)
    assert not other.store_exists and "tracking.uri or MLFLOW_TRACKING_URI" in other.detail
    folder = tracking.health(str(tmp_path / "mlruns"), "x", tmp_path)
    assert not folder.store_exists
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "nothing created"


def test_an_unreachable_tracking_server_is_degraded_without_its_password(
    tmp_path: Path, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://bentley:s3cret-pw@127.0.0.1:1/mlflow")
    check = health.check_tracking(config, tmp_path)
    assert check.status == "degraded"
    assert check.detail.startswith("http://bentley:***@127.0.0.1:1/mlflow: ")
    assert "s3cret-pw" not in json.dumps(check.as_dict())


def test_only_bentley_tracking_talks_to_mlflow() -> None:
    import inspect

    source = inspect.getsource(health)
    assert "import mlflow" not in source and "from mlflow" not in source and "MlflowClient" not in source
    assert "tracking._" not in source and "import _" not in source


def test_a_source_that_cannot_be_built_makes_sources_degraded(tmp_path: Path, config: Config) -> None:
    sources = config.sources.model_copy(
        update={"market": config.sources.market.model_copy(update={"kind": "csv", "path": "../outside"})}
    )
    check = health.check_sources(config.model_copy(update={"sources": sources}), tmp_path)
    assert check.status == "degraded" and check.detail.startswith("market (csv): ")
    assert check.data["news"]["ok"] is True


def test_exit_codes_follow_the_worst_status() -> None:
    ok, degraded, down = (Check("a", "ok", ""), Check("b", "degraded", ""), Check("c", "down", ""))
    assert [health.exit_code(x) for x in ([], [ok], [ok, degraded], [degraded, down, ok])] == [0, 0, 1, 2]
    assert health.overall([down, ok]) == "down"


# --------------------------------------------------------------------------- HTTP


class Checks:
    """What the endpoint serves; tests change it between requests."""

    def __init__(self) -> None:
        self.checks = [Check("warehouse", "ok", "answers"), Check("scheduler", "degraded", "no scheduler")]

    def __call__(self) -> list[Check]:
        return self.checks


@pytest.fixture()
def server() -> Iterator[tuple[str, Checks]]:
    checks = Checks()
    httpd = serve_health("127.0.0.1", 0, checks)
    yield server_url(httpd), checks
    httpd.shutdown()
    httpd.server_close()


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_health_is_200_while_nothing_is_down(server: tuple[str, Checks]) -> None:
    url, _ = server
    code, body = get(f"{url}/health")
    assert code == 200 and body["status"] == "degraded"
    assert [c["component"] for c in body["checks"]] == ["warehouse", "scheduler"]


def test_health_is_503_when_a_check_is_down(server: tuple[str, Checks]) -> None:
    url, checks = server
    checks.checks = [*checks.checks, Check("disk", "down", "97% in use", {"used_share": 0.97})]
    code, body = get(f"{url}/health")
    assert code == 503 and body["status"] == "down"
    code, disk = get(f"{url}/health/disk")
    assert code == 503 and disk == {
        "component": "disk",
        "status": "down",
        "detail": "97% in use",
        "data": {"used_share": 0.97},
    }
    assert get(f"{url}/health/scheduler")[0] == 200  # degraded still answers 200


def test_one_component_and_unknown_paths(server: tuple[str, Checks]) -> None:
    url, _ = server
    code, body = get(f"{url}/health/warehouse")
    assert code == 200 and body["status"] == "ok"
    code, body = get(f"{url}/health/nope")
    assert code == 404 and body["components"] == ["warehouse", "scheduler"]
    assert get(f"{url}/metrics")[0] == 404


def test_the_server_logs_nothing(server: tuple[str, Checks], capfd: pytest.CaptureFixture[str]) -> None:
    url, _ = server
    get(f"{url}/health")
    get(f"{url}/health/nope")
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(
    ("latest", "now", "surely"),
    [
        ("2025-06-03", ny("2025-06-03", "11:00"), True),  # today's prices: nothing can be newer
        ("2025-06-02", ny("2025-06-03", "11:00"), False),  # the market is open: ask the calendar
        ("2025-06-02", ny("2025-06-03", "08:00"), True),  # before today's open, yesterday's close is the latest
        ("2025-06-06", ny("2025-06-09", "08:00"), True),  # Friday's prices on Monday morning
        ("2025-06-06", ny("2025-06-07", "15:00"), True),  # Friday's prices on Saturday
        ("2025-06-05", ny("2025-06-07", "15:00"), False),  # Thursday's on Saturday: the calendar decides
    ],
)
def test_fresh_prices_need_no_exchange_calendar(latest: str, now: dt.datetime, surely: bool, config: Config) -> None:
    assert health._surely_current(dt.date.fromisoformat(latest), now, config.workflow) is surely
