"""`runner gate`: should an orchestrator's run go ahead, and as which pipeline run?

An exported Airflow DAG fires on a cron grid that covers our fire times (Airflow's cron
cannot say "NYSE sessions, between the open and the close, early closes included"). Its
first task asks this gate, which answers with the same calendar code `runner schedule` uses
(`bentley.schedule_times`):

- a **scheduled** (or backfill) run goes ahead only when its time is one of our ticks, and
  only as far as `schedule.catch_up` allows (`none`: not when it fires more than
  MISSED_GRACE late; `latest`: not when a later tick has fired; `all`: not when
  `max_catch_up` later ticks have). It runs as the tick's own run id (`sched-…`), so a
  tick is the same run whoever fires it, and `runner health` sees it ran;
- any other run (manual, asset-triggered) is a request for a date: it runs for the latest
  session on or before that date (or the latest closed session, if that one has not closed), as `airflow-<time>-<hash of the orchestrator's run id>`.

Either way, when the champion's latest monitoring row asks for retraining the run sets
`ml.retrain=true`, as `runner schedule` does. The answer is one JSON line on stdout (run id,
logical date and the `runner run` arguments); a run that must not go ahead exits SKIP_EXIT.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

from rich.console import Console

from bentley.config import Config
from bentley.schedule_times import MISSED_GRACE, Tick, day_ticks, fire_times, next_tick

#: Airflow's BashOperator skips a task on this exit code; the DAG's gate short-circuits on it.
SKIP_EXIT = 99
#: Orchestrator run types that stand for a tick of the schedule (anything else is on request).
TICK_RUN_TYPES = ("scheduled", "backfill")


@dataclass(frozen=True)
class GateDecision:
    go: bool
    reason: str
    run_id: str | None = None
    logical_date: dt.date | None = None
    overrides: tuple[str, ...] = field(default=())

    def as_json(self) -> str:
        args = ["--run-id", str(self.run_id), "--logical-date", str(self.logical_date)]
        for override in self.overrides:
            args += ["--set", override]
        return json.dumps(
            {
                "run_id": self.run_id,
                "logical_date": str(self.logical_date),
                "args": shlex.join(args),
                "reason": self.reason,
            }
        )


def tick_at(at: dt.datetime, config: Config) -> Tick | None:
    """The tick firing at `at` (to the minute), or None when `at` is not on the grid."""
    at = at.astimezone(dt.UTC).replace(second=0, microsecond=0)
    local_day = at.astimezone(ZoneInfo(config.workflow.timezone)).date()
    return next((t for t in day_ticks(local_day, config.schedule, config.workflow) if t.fire_at == at), None)


def decide(
    config: Config, *, run_type: str, at: dt.datetime | None, orchestrator_run_id: str, now: dt.datetime
) -> GateDecision:
    """The gate's answer without the retraining flag (pure: no warehouse, clock passed in)."""
    from bentley import calendar

    zone = ZoneInfo(config.workflow.timezone)
    if run_type in TICK_RUN_TYPES:
        if at is None:
            return GateDecision(False, f"a {run_type} run without a logical date cannot be placed on the schedule")
        tick = tick_at(at, config)
        local = at.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")
        if tick is None:
            return GateDecision(
                False,
                f"{local} is not a fire time: not on the schedule grid, not a "
                f"{config.workflow.calendar} session, or outside its trading hours",
            )
        late = _too_late(tick, config, now) if run_type == "scheduled" else None
        if late:
            return GateDecision(False, f"tick {tick.run_id} ({local}): {late}")
        return GateDecision(True, f"tick {tick.run_id} ({local})", tick.run_id, tick.logical_date)
    asked = (at or now).astimezone(dt.UTC)
    # The session of the date asked for; a date whose session has not closed yet gets the latest closed one.
    logical_date = min(
        calendar.latest_session_on_or_before(asked.date(), config.workflow.calendar),
        calendar.latest_closed_session(now, config.workflow.calendar),
    )
    digest = hashlib.sha256(orchestrator_run_id.encode()).hexdigest()[:6]
    run_id = f"airflow-{asked:%Y%m%dT%H%M%SZ}-{digest}"
    return GateDecision(
        True, f"{run_type} run {orchestrator_run_id}: logical date {logical_date}", run_id, logical_date
    )


def _too_late(tick: Tick, config: Config, now: dt.datetime) -> str | None:
    """Why `schedule.catch_up` drops this tick at `now`, or None when it may run."""
    schedule = config.schedule
    if schedule.catch_up == "none" and now - tick.fire_at > MISSED_GRACE:
        return f"fired {(now - tick.fire_at).total_seconds() / 60:.0f} min ago and catch_up is none"
    if schedule.catch_up == "latest":
        later = next_tick(tick.fire_at, schedule, config.workflow)
        if later is not None and later.fire_at <= now:
            return f"a later tick ({later.run_id}) has fired and catch_up is latest"
    if schedule.catch_up == "all":
        later_ticks = fire_times(tick.fire_at + dt.timedelta(minutes=1), now, schedule, config.workflow)
        if len(later_ticks) >= schedule.max_catch_up:
            return (
                f"{len(later_ticks)} later ticks have fired and catch_up all keeps the latest {schedule.max_catch_up}"
            )
    return None


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="default")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    parser.add_argument(
        "--run-type",
        required=True,
        help="the orchestrator's run type: scheduled and backfill runs must be ticks; "
        "manual (or anything else) runs for the latest session on or before --at",
    )
    parser.add_argument("--at", type=_instant, help="the orchestrator run's logical time (ISO 8601 with an offset)")
    parser.add_argument("--orchestrator-run-id", required=True, help="the orchestrator's own id for the run")
    parser.add_argument("--outputs", type=Path)
    parser.add_argument("--now", type=_instant, help=argparse.SUPPRESS)  # testing: the clock


def command(args: argparse.Namespace, root: Path, console: Console) -> int:
    from bentley.config import load_config, outputs_dir
    from runner.outcomes import EXIT_OK

    config = load_config(args.profile, args.overrides, root)
    now = args.now or dt.datetime.now(dt.UTC)
    decision = decide(config, run_type=args.run_type, at=args.at, orchestrator_run_id=args.orchestrator_run_id, now=now)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if not decision.go:
        err.print(f"skip: {decision.reason}", markup=False)
        return SKIP_EXIT
    decision = _with_retraining(decision, config, outputs_dir(args.outputs, root, args.profile), err)
    err.print(f"go: {decision.reason}", markup=False)
    console.print(decision.as_json(), markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK


def _with_retraining(decision: GateDecision, config: Config, outputs: Path, err: Console) -> GateDecision:
    from bentley.warehouse import Warehouse
    from runner.schedule import RETRAIN_OVERRIDE, retraining_required

    warehouse = Warehouse.from_settings(config.warehouse.url, outputs)
    try:
        monitoring = retraining_required(warehouse)
    finally:
        warehouse.dispose()
    if not monitoring:
        return decision
    err.print(
        f"model {monitoring.get('model_name')} v{monitoring.get('model_version')} needs retraining "
        f"({monitoring.get('reason') or 'retraining_required is set'}): this run sets {RETRAIN_OVERRIDE}",
        markup=False,
    )
    return GateDecision(
        True, decision.reason, decision.run_id, decision.logical_date, (*decision.overrides, RETRAIN_OVERRIDE)
    )


def _instant(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset; give one, e.g. 2025-06-02T14:05:00+00:00")
    return moment
