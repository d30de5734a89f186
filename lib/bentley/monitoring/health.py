"""Health checks: is each part of the bot able to do its job right now?

One `Check` per component, each `ok`, `degraded` (works, but something needs attention) or
`down` (cannot work). `runner health` prints them and exits 0/1/2 for the worst status; the
scheduler serves the same checks over HTTP. Checks read state and never change it (no
network calls to data sources, no database created where there is none). Details never
carry a password: URLs are shown through `Warehouse.display_url` / `tracking.display_uri`.

Components:
- `warehouse`: connects and runs `SELECT 1`; down when unreachable.
- `tracking`: `bentley.tracking.health`: the MLflow store answers; degraded when it does not or
  when a local store has not been created yet (the check never creates it).
- `lake`: `<outputs>/lake` is a writable folder; degraded before the first run, down when not writable.
- `sources`: each configured source's own `health()` (configuration only, never the network).
- `disk`: share of the outputs filesystem in use, as `df` and the monitor stage count it
  (`bentley.monitoring.resources.disk_use`), against monitor.rules.disk_use (degraded) and
  monitor.rules.resource_use (down).
- `last_run`: the latest `pipeline_runs` row: degraded when it failed or crashed, or when a
  scheduled tick that should have started a run since it did not (`schedule_times.missed_ticks`:
  it fired more than a few minutes ago and the latest run started before it).
- `freshness`: the latest prices date against the latest closed session, and the last successful
  ingest against the schedule: degraded when the first tick after it that brought no ingest
  fired more than workflow.data_freshness_minutes ago.

Staleness follows the schedule, not the wall clock: overnight, at weekends and on holidays no
tick is expected, so a run from Friday's last tick is still current on Sunday evening.
- `scheduler`: the freshest running `scheduler_heartbeats` row is at most 3 x schedule.heartbeat_s old.
  A warehouse where no scheduler ever ran, or where every scheduler stopped cleanly, has no
  schedule to keep: the check is ok ("not configured" / "stopped"), and `last_run` and
  `freshness` do not count missed ticks (runs are started by hand or by an orchestrator).

Fast: `runner health` answers in about a second. Nothing heavy is imported before it is needed,
and a local SQLite MLflow store is checked with the standard library (read-only) instead of by
starting MLflow's client, which takes several seconds to import.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from bentley.config import Config, Monitor, Schedule, Workflow
    from bentley.schedule_times import Tick
    from bentley.warehouse import Warehouse

Status = Literal["ok", "degraded", "down"]
OK: Status = "ok"
DEGRADED: Status = "degraded"
DOWN: Status = "down"
#: Worse is higher; also the exit code of `runner health`.
EXIT_CODES: dict[str, int] = {OK: 0, DEGRADED: 1, DOWN: 2}
COMPONENTS = ("warehouse", "tracking", "lake", "sources", "disk", "last_run", "freshness", "scheduler", "watch")
#: Run statuses that make the latest run a problem.
BAD_RUN_STATUSES = frozenset({"failed", "crashed"})
#: Stage statuses that count as a fresh ingest.
INGEST_DONE_STATUSES = frozenset({"success", "cached"})
HEARTBEAT_PERIODS = 3  # a scheduler is alive if its heartbeat is at most this many heartbeat_s old
_DETAIL_CHARS = 300


@dataclass(frozen=True)
class Check:
    component: str
    status: Status
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (timestamps as ISO 8601 text)."""
        return {
            "component": self.component,
            "status": self.status,
            "detail": self.detail,
            "data": {k: _jsonable(v) for k, v in self.data.items()},
        }


def overall(checks: Iterable[Check]) -> Status:
    """The worst status (ok when there are no checks)."""
    return max((c.status for c in checks), key=EXIT_CODES.__getitem__, default=OK)


def exit_code(checks: Iterable[Check]) -> int:
    """0 all ok, 1 something degraded, 2 something down."""
    return EXIT_CODES[overall(checks)]


# --------------------------------------------------------------------------- all checks


def run_checks(config: Config, outputs: Path, root: Path, *, now: dt.datetime | None = None) -> list[Check]:
    """Every component's check, in `COMPONENTS` order; a check that crashes reports degraded."""
    now = now or dt.datetime.now(dt.UTC)
    outputs = Path(outputs)
    warehouse_check, warehouse = open_warehouse(config, outputs)
    try:
        checks = [
            warehouse_check,
            _guarded("tracking", lambda: check_tracking(config, outputs)),
            _guarded("lake", lambda: check_lake(outputs)),
            _guarded("sources", lambda: check_sources(config, root)),
            _guarded("disk", lambda: check_disk(outputs, config.monitor)),
        ]
        expected = warehouse is not None and _guarded_flag(lambda: schedule_expected(warehouse))
        dependent: dict[str, Callable[[Warehouse], Check]] = {
            "last_run": lambda w: check_last_run(w, config.schedule, config.workflow, now, scheduled=expected),
            "freshness": lambda w: check_freshness(w, config.schedule, config.workflow, now, scheduled=expected),
            "scheduler": lambda w: check_scheduler(w, config.schedule, now),
            "watch": lambda w: _watch_check(w, config, now),
        }
        for component, check in dependent.items():
            if warehouse is None:
                checks.append(Check(component, DEGRADED, f"not checked: {warehouse_check.detail}"))
            else:
                checks.append(_guarded(component, functools.partial(check, warehouse)))
        return checks
    finally:
        if warehouse is not None:
            warehouse.dispose()


def _watch_check(warehouse: Warehouse, config: Config, now: dt.datetime) -> Check:
    """`runner watch` (bentley.live.health imports this module, so it is imported here, late)."""
    from bentley.live.health import check_watch

    return check_watch(
        warehouse,
        heartbeat_s=config.watch.heartbeat_s,
        stale_minutes=config.watch.rules.stale_feed.threshold,
        now=now,
        calendar=config.workflow.calendar,
        timezone=config.workflow.timezone,
    )


def _guarded_flag(question: Callable[[], bool]) -> bool:
    try:
        return question()
    except Exception:  # noqa: BLE001 - unknown: assume a schedule, the stricter reading
        return True


def schedule_expected(warehouse: Warehouse) -> bool:
    """Is a scheduler supposed to be running? Yes when some `scheduler_heartbeats` row still says
    running (a live scheduler, or one that died without saying so); no when no scheduler ever ran
    here or every one stopped cleanly."""
    beats = warehouse.read("scheduler_heartbeats", columns=["scheduler_id", "status"])
    return bool((beats["status"] == "running").any())


def _guarded(component: str, check: Callable[[], Check]) -> Check:
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others
        return Check(component, DEGRADED, f"check failed: {_error(exc)}")


# --------------------------------------------------------------------------- components


def open_warehouse(config: Config, outputs: Path) -> tuple[Check, Warehouse | None]:
    """The `warehouse` check and, when it is reachable, an open Warehouse (the caller disposes it).

    A SQLite file that does not exist yet is reported as degraded instead of being created.
    """
    from bentley.warehouse import Warehouse, resolve_url

    url = resolve_url(config.warehouse.url, outputs)
    shown = url.render_as_string(hide_password=True)
    data = {"url": shown, "dialect": url.get_backend_name()}
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        if not Path(url.database).is_file():
            return Check("warehouse", DEGRADED, f"no database yet at {shown} (the first run creates it)", data), None
    try:
        warehouse = Warehouse(url)
    except Exception as exc:  # noqa: BLE001 - unreachable, refused, bad credentials, unwritable file
        return Check("warehouse", DOWN, f"{shown}: {_error(exc)}", data), None
    health = warehouse.health()
    if not health.ok:
        warehouse.dispose()
        return Check("warehouse", DOWN, health.detail, data), None
    return Check("warehouse", OK, f"{warehouse.display_url} answers", data), warehouse


def check_tracking(config: Config, outputs: Path) -> Check:
    """MLflow: a local SQLite store is opened read-only with the standard library (its
    `experiments` table answers); any other store goes through `bentley.tracking.health`."""
    from bentley import tracking

    uri = tracking.tracking_uri(config.tracking.uri, outputs)
    fast = _sqlite_store_check(uri, config.tracking.experiment, outputs)
    if fast is not None:
        return fast
    found = tracking.health(uri, config.tracking.experiment, outputs)
    data: dict[str, Any] = {
        "uri": found.uri,
        "experiment": config.tracking.experiment,
        "store_exists": found.store_exists,
    }
    if found.experiment_id is not None:
        data["experiment_id"] = found.experiment_id
    return Check("tracking", OK if found.ok else DEGRADED, found.detail, data)


def _sqlite_store_check(uri: str, experiment: str, outputs: Path) -> Check | None:
    """The tracking check for an existing SQLite store, in milliseconds; None: not one (use MLflow)."""
    import sqlite3

    from bentley import tracking

    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
    if not path.is_file():
        return None  # `tracking.health` words the missing store
    shown = tracking.display_uri(uri)
    data: dict[str, Any] = {"uri": shown, "experiment": experiment, "store_exists": True}
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5)) as conn:
            row = conn.execute(
                "SELECT experiment_id FROM experiments WHERE name = ? AND lifecycle_stage = 'active'", (experiment,)
            ).fetchone()
    except sqlite3.Error as exc:
        return Check("tracking", DEGRADED, f"{shown}: {_error(exc)}", data)
    if row is None:
        return Check("tracking", OK, f"{shown} answers; experiment {experiment!r} not created yet", data)
    data["experiment_id"] = str(row[0])
    return Check("tracking", OK, f"{shown} answers; experiment {experiment!r}", data)


def check_lake(outputs: Path) -> Check:
    lake = Path(outputs) / "lake"
    data = {"path": str(lake)}
    if not lake.exists():
        return Check("lake", DEGRADED, f"no lake yet at {lake} (the first run creates it)", data)
    if not lake.is_dir():
        return Check("lake", DOWN, f"{lake} is not a folder", data)
    if not os.access(lake, os.W_OK | os.X_OK):
        return Check("lake", DOWN, f"{lake} is not writable", data)
    return Check("lake", OK, f"{lake} is writable", data)


def check_sources(config: Config, root: Path) -> Check:
    """Each configured source's `health()`, built exactly as the ingest stage builds them."""
    from bentley.sources import market_source, news_source, portfolio_source

    data_dir = Path(root) / config.sources.data_dir
    results: dict[str, dict[str, Any]] = {}
    for role, build in {"market": market_source, "news": news_source, "portfolio": portfolio_source}.items():
        kind = getattr(config.sources, role).kind
        try:
            health = build(config, data_dir).health()
            results[role] = {"kind": kind, "ok": health.ok, "detail": health.detail}
        except Exception as exc:  # noqa: BLE001 - a source that cannot even be built is unhealthy
            results[role] = {"kind": kind, "ok": False, "detail": _error(exc)}
    bad = [role for role, result in results.items() if not result["ok"]]
    if bad:
        detail = "; ".join(f"{role} ({results[role]['kind']}): {results[role]['detail']}" for role in bad)
        return Check("sources", DEGRADED, detail, results)
    return Check("sources", OK, " · ".join(f"{role}: {r['kind']}" for role, r in results.items()), results)


def check_disk(outputs: Path, monitor: Monitor, usage: Callable[[str], Any] = shutil.disk_usage) -> Check:
    """Share of the outputs filesystem in use (the nearest existing folder when outputs is new),
    counted as `df` and the monitor stage count it (`resources.disk_use`)."""
    from bentley.monitoring.resources import disk_use

    measured = disk_use(outputs, usage)
    share = measured.share
    degraded_above = _threshold(monitor, "disk_use")
    down_above = _threshold(monitor, "resource_use")
    data = {
        "path": measured.path,
        "total_bytes": measured.total_bytes,
        "used_bytes": measured.used_bytes,
        "free_bytes": measured.free_bytes,
        "used_share": round(share, 4),
        "degraded_above": degraded_above,
        "down_above": down_above,
    }
    detail = f"{measured.text()} ({measured.path})"
    if down_above is not None and share > down_above:
        return Check("disk", DOWN, f"{detail}: above {down_above:.0%}", data)
    if degraded_above is not None and share > degraded_above:
        return Check("disk", DEGRADED, f"{detail}: above {degraded_above:.0%}", data)
    return Check("disk", OK, detail, data)


def check_last_run(
    warehouse: Warehouse, schedule: Schedule, workflow: Workflow, now: dt.datetime, scheduled: bool = True
) -> Check:
    """The latest run: degraded when it failed or crashed, or (`scheduled`: a scheduler is expected)
    when a tick since it started brought no run."""
    from bentley.schedule_times import fire_at_from_run_id, missed_ticks

    runs = warehouse.read("pipeline_runs")
    if runs.empty:
        return Check("last_run", DEGRADED, "no runs yet")
    latest = runs.sort_values(["started_at", "run_id"], na_position="first").iloc[-1]
    run_id = str(latest["run_id"])
    started = _timestamp(latest["started_at"]) or fire_at_from_run_id(run_id)
    ended = _timestamp(latest["ended_at"])
    status = latest["status"] or "unknown"
    last_seen = ended or started
    age = None if last_seen is None else now - last_seen
    data = {
        "run_id": run_id,
        "status": status,
        "logical_date": latest["logical_date"],
        "started_at": latest["started_at"],
        "ended_at": latest["ended_at"],
        "age_minutes": None if age is None else round(age.total_seconds() / 60, 1),
    }
    if status in BAD_RUN_STATUSES:
        return Check("last_run", DEGRADED, f"run {run_id} {status}", data)
    if started is None:
        return Check("last_run", DEGRADED, f"run {run_id} ({status}) has no start time", data)
    if not scheduled:
        return Check(
            "last_run", OK, f"run {run_id} {status}, {_minutes(age or dt.timedelta())} ago (no schedule to keep)", data
        )
    missed = missed_ticks(started, now, schedule, workflow)
    data["missed_ticks"] = len(missed)
    if missed:
        data["first_missed_run_id"] = missed[0].run_id
        return Check(
            "last_run",
            DEGRADED,
            f"run {run_id} ({status}) started {_local(started, workflow)}; "
            f"no run for {_missed_text(missed, now, workflow)}",
            data,
        )
    return Check("last_run", OK, f"run {run_id} {status}, {_minutes(age or dt.timedelta())} ago", data)


def check_freshness(
    warehouse: Warehouse, schedule: Schedule, workflow: Workflow, now: dt.datetime, scheduled: bool = True
) -> Check:
    """Prices up to the latest closed session, and (`scheduled`) an ingest for every tick that is due by now.

    The ingest's age counts only from the first tick after it that brought no ingest, so the
    hours the market is closed (no ticks) never make the data stale. Without a schedule to keep,
    only the prices' date counts.
    """
    from bentley import calendar
    from bentley.schedule_times import missed_ticks

    problems: list[str] = []
    facts: list[str] = []
    dates = warehouse.distinct("prices", "date")
    latest_price = _date(dates[-1]) if dates else None
    # Building the exchange calendar costs more than the rest of `runner health`: skip it when
    # the prices are certainly up to date (see `_surely_current`).
    expected = (
        latest_price
        if latest_price is not None and _surely_current(latest_price, now, workflow)
        else calendar.latest_closed_session(now, workflow.calendar)
    )
    if latest_price is None:
        problems.append("no prices loaded yet")
    elif latest_price < expected:
        problems.append(f"latest prices are for {latest_price}; the latest closed session is {expected}")
    else:
        facts.append(f"prices up to {latest_price}")
    ingests = warehouse.read("stage_runs", where={"stage": "ingest"})
    done = ingests[ingests["status"].isin(list(INGEST_DONE_STATUSES))]
    ended = done["ended_at"].dropna()
    last_ingest = _timestamp(ended.max()) if not ended.empty else None
    limit = dt.timedelta(minutes=workflow.data_freshness_minutes)
    age = None if last_ingest is None else now - last_ingest
    missed = [] if last_ingest is None or not scheduled else missed_ticks(last_ingest, now, schedule, workflow)
    overdue = now - missed[0].fire_at if missed else dt.timedelta()
    if age is None:
        problems.append("no successful ingest yet")
    elif overdue > limit:
        problems.append(
            f"last ingest {_minutes(age)} ago; no ingest for {_missed_text(missed, now, workflow)}, "
            f"{_minutes(overdue)} overdue (limit {workflow.data_freshness_minutes} min)"
        )
    elif missed:
        facts.append(
            f"last ingest {_minutes(age)} ago; tick {missed[0].run_id} fired {_minutes(overdue)} ago "
            f"without one yet (limit {workflow.data_freshness_minutes} min)"
        )
    elif not scheduled:
        facts.append(f"last ingest {_minutes(age)} ago")
    else:
        facts.append(f"last ingest {_minutes(age)} ago, none due since")
    data = {
        "latest_price_date": latest_price,
        "latest_closed_session": expected,
        "last_ingest_at": last_ingest,
        "ingest_age_minutes": None if age is None else round(age.total_seconds() / 60, 1),
        "overdue_minutes": round(overdue.total_seconds() / 60, 1),
        "first_missed_run_id": missed[0].run_id if missed else None,
        "limit_minutes": workflow.data_freshness_minutes,
    }
    if problems:
        return Check("freshness", DEGRADED, "; ".join(problems), data)
    return Check("freshness", OK, "; ".join(facts), data)


def check_scheduler(warehouse: Warehouse, schedule: Schedule, now: dt.datetime) -> Check:
    beats = warehouse.read("scheduler_heartbeats")
    running = beats[beats["status"] == "running"]
    if running.empty:
        if beats.empty:
            return Check(
                "scheduler",
                OK,
                "not configured: no scheduler has run against this warehouse (`runner schedule` starts one)",
                {"configured": False},
            )
        stopped = beats.sort_values("heartbeat_at", na_position="first").iloc[-1]
        at = _timestamp(stopped["heartbeat_at"])
        when = f" at {at:%Y-%m-%d %H:%M} UTC" if at is not None else ""
        return Check(
            "scheduler",
            OK,
            f"not running: scheduler {stopped['scheduler_id']} stopped cleanly{when}; "
            "no schedule is kept (`runner schedule` starts one)",
            {"configured": True, "running": 0},
        )
    beats = running
    latest = beats.sort_values("heartbeat_at", na_position="first").iloc[-1]
    at = _timestamp(latest["heartbeat_at"])
    data = {
        "scheduler_id": latest["scheduler_id"],
        "heartbeat_at": at,
        "next_fire_at": latest["next_fire_at"],
        "last_run_id": latest["last_run_id"],
        "running": len(beats),
    }
    limit = dt.timedelta(seconds=HEARTBEAT_PERIODS * schedule.heartbeat_s)
    age = None if at is None else now - at
    data["heartbeat_age_s"] = None if age is None else round(age.total_seconds(), 1)
    if age is None or age > limit:
        shown = "never" if age is None else f"{age.total_seconds():.0f} s ago"
        return Check(
            "scheduler",
            DEGRADED,
            f"scheduler {latest['scheduler_id']} last beat {shown} "
            f"(limit {limit.total_seconds():.0f} s): stopped without saying so?",
            data,
        )
    next_fire = _timestamp(latest["next_fire_at"])
    upcoming = f"; next fire {next_fire:%Y-%m-%d %H:%M} UTC" if next_fire is not None else ""
    return Check(
        "scheduler", OK, f"scheduler {latest['scheduler_id']} beat {age.total_seconds():.0f} s ago{upcoming}", data
    )


# --------------------------------------------------------------------------- helpers


def _surely_current(latest: dt.date, now: dt.datetime, workflow: Workflow) -> bool:
    """Can no closed session be newer than `latest`? True when `latest` is today (exchange time),
    or the last weekday before today and today's market has not opened yet (or today is no
    weekday): every session is a weekday, and none closes before it opens. False means "ask the
    exchange calendar", never "stale"."""
    from zoneinfo import ZoneInfo

    local = now.astimezone(ZoneInfo(workflow.timezone))
    today = local.date()
    if latest >= today:
        return True
    previous = today - dt.timedelta(days=1)
    while previous.weekday() >= 5:
        previous -= dt.timedelta(days=1)
    before_open = today.weekday() >= 5 or local.time() < workflow.market_hours.open
    return latest >= previous and before_open


def _missed_text(missed: list[Tick], now: dt.datetime, workflow: Workflow) -> str:
    """`tick sched-... (2025-06-03 12:05 EDT)`, plus how many later ticks since."""
    from bentley.schedule_times import MISSED_GRACE, SEARCH_DAYS

    first = missed[0]
    text = f"tick {first.run_id} ({_local(first.fire_at, workflow)})"
    if first.fire_at + dt.timedelta(days=SEARCH_DAYS) < now - MISSED_GRACE:
        return text + " and every tick since"  # a long outage: missed_ticks lists its first month
    later = len(missed) - 1
    return text + (f" and {later} later tick{'s' if later > 1 else ''}" if later else "")


def _local(moment: dt.datetime, workflow: Workflow) -> str:
    from zoneinfo import ZoneInfo

    return moment.astimezone(ZoneInfo(workflow.timezone)).strftime("%Y-%m-%d %H:%M %Z")


def _threshold(monitor: Monitor, rule: str) -> float | None:
    found = monitor.rules.get(rule)  # type: ignore[call-overload]
    return None if found is None or found.threshold is None else float(found.threshold)


def _error(exc: BaseException) -> str:
    """`Type: first line of the message`, short, with the warehouse password masked if present."""
    from bentley.warehouse import PASSWORD_ENV

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    password = os.environ.get(PASSWORD_ENV)
    if password:
        text = text.replace(password, "***")
    shown = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return shown if len(shown) <= _DETAIL_CHARS else shown[: _DETAIL_CHARS - 3] + "..."


def _timestamp(value: Any) -> dt.datetime | None:
    """A UTC datetime from what `Warehouse.read` returns (tz-aware pandas Timestamp or NaT)."""
    import pandas as pd

    if value is None or (not isinstance(value, dt.datetime) and pd.isna(value)):
        return None
    stamp = pd.Timestamp(value)
    if pd.isna(stamp):
        return None
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()


def _date(value: Any) -> dt.date:
    """A date from a raw driver value (SQLite text, a date or a datetime)."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def _minutes(delta: dt.timedelta) -> str:
    minutes = delta.total_seconds() / 60
    if abs(minutes) < 120:
        return f"{minutes:.0f} min"
    if abs(minutes) < 48 * 60:
        return f"{minutes / 60:.1f} h"
    return f"{minutes / 1440:.1f} days"


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    try:
        import pandas as pd

        if pd.isna(value):
            return None
        if isinstance(value, pd.Timestamp):
            return value.isoformat()
    except (TypeError, ValueError):
        pass
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)
