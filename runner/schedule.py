"""`runner schedule`: run the pipeline on the exchange calendar, for as long as it is left running.

Fire times are local wall-clock times in `workflow.timezone`: midnight + `offset_minutes` +
k x `every_minutes`, with `schedule.sessions_only` only inside each session's trading window
(holidays give no ticks, early closes end the day early), DST-correct. The grid itself is
`bentley.schedule_times` (the health checks use the same one); its names are re-exported here.

A tick's run id is a pure function of its fire time (`sched-YYYYMMDDTHHMMZ`), so two
schedulers computing the same tick name the same run; the warehouse lease lets one of them
run it and `skip_if_done` makes the other (or a restart) a no-op.

Module-level imports stay light (stdlib only): `python -m runner` imports this module to
build its parser. pandas, SQLAlchemy and exchange_calendars are imported where used.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from rich.markup import escape

# The fire-time math lives in the library (the health checks need it too); re-exported
# (`__all__`) because the CLI and tests use these names from runner.schedule.
from bentley.schedule_times import (
    DUE_WINDOW,
    RUN_ID_FORMAT,
    RUN_ID_PREFIX,
    SEARCH_DAYS,
    Tick,
    day_ticks,
    due_ticks,
    fire_at_from_run_id,
    fire_times,
    next_tick,
    previous_ticks,
    require_aware,
    run_id_for,
    trading_window,
    upcoming_ticks,
)
from runner.outcomes import (
    EXIT_BUSY,
    EXIT_FAILED,
    EXIT_LEASE_LOST,
    EXIT_OK,
    EXIT_USAGE,
    RUN_FINISHED,
)

if TYPE_CHECKING:
    from rich.console import Console

    from bentley.config import Config, Schedule, Workflow
    from bentley.warehouse import Warehouse

__all__ = [
    # bentley.schedule_times
    "DUE_WINDOW",
    "RUN_ID_FORMAT",
    "RUN_ID_PREFIX",
    "SEARCH_DAYS",
    "Tick",
    "day_ticks",
    "due_ticks",
    "fire_at_from_run_id",
    "fire_times",
    "next_tick",
    "previous_ticks",
    "run_id_for",
    "trading_window",
    "upcoming_ticks",
    # the scheduler
    "EXIT_BUSY",
    "EXIT_FAILED",
    "EXIT_LEASE_LOST",
    "EXIT_OK",
    "EXIT_USAGE",
    "FINAL_STATUSES",
    "RETRAIN_OVERRIDE",
    "STEP_S",
    "Clock",
    "Scheduler",
    "ShiftedClock",
    "SystemClock",
    "TickRunner",
    "add_arguments",
    "command",
    "new_scheduler_id",
    "pipeline_tick_runner",
    "print_fire_times",
]

#: The loop wakes at least this often, so a signal or a due tick is handled promptly.
STEP_S = 1.0
RETRAIN_OVERRIDE = "ml.retrain=true"
#: `pipeline_runs` statuses after which a tick is done; an interrupted or crashed tick runs again
#: (same run id: its finished stages are up to date), as `run_pipeline(skip_if_done=True)` decides.
FINAL_STATUSES = RUN_FINISHED

UTC = dt.UTC


# --------------------------------------------------------------------------- clocks


class Clock(Protocol):
    def now(self) -> dt.datetime: ...

    def sleep(self, seconds: float, stop: threading.Event) -> None: ...


class SystemClock:
    """The wall clock; sleeping ends early when `stop` is set."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(UTC)

    def sleep(self, seconds: float, stop: threading.Event) -> None:
        stop.wait(max(0.0, seconds))


class ShiftedClock(SystemClock):
    """Starts at `start` and advances in real time (`--now`: rehearse a given moment)."""

    def __init__(self, start: dt.datetime) -> None:
        require_aware(start)
        self._start = start.astimezone(UTC)
        self._origin = time.monotonic()

    def now(self) -> dt.datetime:
        return self._start + dt.timedelta(seconds=time.monotonic() - self._origin)


# --------------------------------------------------------------------------- the scheduler

#: Runs one tick: (tick, overrides, stop event) -> run_pipeline's exit code.
TickRunner = Callable[[Tick, list[str], threading.Event], int]


def new_scheduler_id() -> str:
    """`host:pid:random` like a lease holder: unique per process, and says where to look."""
    from runner.lease import new_holder

    return new_holder()


def pipeline_tick_runner(
    root: Path, outputs: Path, profile: str, pipeline_file: Path | None, console: Console
) -> TickRunner:
    """The real thing: one `run_pipeline` per tick, skipped when the run id is already final."""

    def run(tick: Tick, overrides: list[str], stop: threading.Event) -> int:
        from runner.pipeline import RunRequest, run_pipeline

        request = RunRequest(
            root=root,
            outputs=outputs,
            profile=profile,
            overrides=tuple(overrides),
            run_id=tick.run_id,
            logical_date=tick.logical_date,
            pipeline_file=pipeline_file,
            skip_if_done=True,
        )
        return run_pipeline(request, _run_console(console), stop)

    return run


def retraining_required(warehouse: Warehouse) -> dict[str, Any] | None:
    """The latest `model_monitoring` row when it asks for retraining, else None."""
    import pandas as pd

    frame = warehouse.read("model_monitoring")
    if frame.empty:
        return None
    runs = warehouse.read("pipeline_runs")[["run_id", "started_at"]]
    frame = frame.merge(runs, on="run_id", how="left")
    latest = frame.sort_values(["as_of", "started_at", "run_id"], na_position="first").iloc[-1]
    flag = latest["retraining_required"]
    return latest.to_dict() if pd.notna(flag) and bool(flag) else None


class Scheduler:
    """Fires ticks through `run_tick`, keeps a heartbeat row, and stops cleanly on `stop`."""

    def __init__(
        self,
        config: Config,
        outputs: Path,
        run_tick: TickRunner,
        console: Console,
        *,
        overrides: Sequence[str] = (),
        clock: Clock | None = None,
        stop: threading.Event | None = None,
        scheduler_id: str | None = None,
        warehouse: Warehouse | None = None,
    ) -> None:
        self.config = config
        self.schedule = config.schedule
        self.workflow = config.workflow
        self.outputs = outputs
        self.run_tick = run_tick
        self.console = console
        self.overrides = list(overrides)
        self.clock = clock or SystemClock()
        self.stop = stop or threading.Event()
        self.host, self.pid = socket.gethostname()[:128], os.getpid()
        self.scheduler_id = scheduler_id or new_scheduler_id()
        self._warehouse = warehouse
        self.started_at = self.clock.now()
        self.last_handled: dt.datetime | None = None  # fire time of the last tick run or skipped here
        self.last_run_id: str | None = None
        self.next_fire_at: dt.datetime | None = None
        self._last_warning: str | None = None

    @property
    def warehouse(self) -> Warehouse:
        if self._warehouse is None:
            from bentley.warehouse import Warehouse

            self._warehouse = Warehouse.from_settings(self.config.warehouse.url, self.outputs)
        return self._warehouse

    def close(self) -> None:
        if self._warehouse is not None:
            self._warehouse.dispose()

    # ------------------------------------------------------------------ warehouse state

    def last_done(self) -> dt.datetime | None:
        """The latest fire time handled here, or of a scheduled run `pipeline_runs` has as final."""
        frame = self.warehouse.read("pipeline_runs")
        final = frame[frame["status"].isin(FINAL_STATUSES)] if not frame.empty else frame
        recorded = [fire_at_from_run_id(str(r)) for r in final["run_id"]]
        known = [t for t in [*recorded, self.last_handled] if t is not None]
        return max(known, default=None)

    def retraining_required(self) -> dict[str, Any] | None:
        return retraining_required(self.warehouse)

    def lease_holder(self) -> str:
        from runner.lease import PIPELINE_LEASE

        frame = self.warehouse.read("leases", where={"name": PIPELINE_LEASE})
        if frame.empty:
            return "another runner"
        row = frame.iloc[0]
        return f"{row['holder']} (run {row['run_id']})" if row["run_id"] else str(row["holder"])

    def beat(self, status: str = "running") -> None:
        """Upsert this scheduler's heartbeat row; a warehouse hiccup is reported, not fatal."""
        import pandas as pd

        row = {
            "scheduler_id": self.scheduler_id,
            "host": self.host,
            "pid": self.pid,
            "started_at": self.started_at,
            "heartbeat_at": self.clock.now(),
            "next_fire_at": self.next_fire_at,
            "last_run_id": self.last_run_id,
            "status": status,
        }
        self._guard("heartbeat", lambda: self.warehouse.upsert("scheduler_heartbeats", pd.DataFrame([row])))

    # ------------------------------------------------------------------ running ticks

    def run_ticks(self, ticks: Sequence[Tick], *, keep_going: bool = False) -> list[int]:
        """Run each tick in order (until `stop`); busy ticks are logged and count as 0.

        `keep_going` (the long-running loop): a tick that raises (bad params, a crash) is
        reported and counts as exit 2 instead of ending the scheduler.
        """
        codes = []
        for tick in ticks:
            if self.stop.is_set():
                break
            overrides = list(self.overrides)
            monitoring = self._guard("model_monitoring", self.retraining_required)
            if monitoring:
                overrides.append(RETRAIN_OVERRIDE)
                reason = monitoring.get("reason") or "retraining_required is set"
                self.say(
                    f"tick {tick.run_id}: model {monitoring.get('model_name')} "
                    f"v{monitoring.get('model_version')} needs retraining ({reason}); "
                    f"this run sets {RETRAIN_OVERRIDE}"
                )
            self.say(
                f"tick {tick.run_id}: fire time {_local(tick.fire_at, self.workflow.timezone)}, "
                f"logical date {tick.logical_date}"
            )
            self.last_handled = max(tick.fire_at, self.last_handled or tick.fire_at)
            self.last_run_id = tick.run_id
            try:
                code = self.run_tick(tick, overrides, self.stop)
            except Exception as exc:
                if not keep_going:
                    raise
                self.say(f"tick {tick.run_id}: error: {type(exc).__name__}: {exc}")
                codes.append(EXIT_USAGE)
                continue
            if code == EXIT_BUSY:
                holder = self._guard("leases", self.lease_holder) or "another runner"
                self.say(f"tick {tick.run_id} skipped: {holder} is running")
                code = EXIT_OK
            elif code == EXIT_LEASE_LOST:
                self.say(f"tick {tick.run_id}: the run lost its warehouse lease (exit {code})")
            elif code == EXIT_FAILED and self.stop.is_set():
                self.say(f"tick {tick.run_id}: stopped before every stage ran (status interrupted)")
            elif code != EXIT_OK:
                self.say(f"tick {tick.run_id}: the run failed (exit {code})")
            codes.append(code)
        return codes

    def once(self) -> int:
        """Run what is due now (per catch_up), else the latest past tick; the worst exit code."""
        now = self.clock.now()
        ticks = due_ticks(self.last_done(), now, self.schedule, self.workflow)
        if not ticks:
            ticks = previous_ticks(now, 1, self.schedule, self.workflow)
            if not ticks:
                self.say("no past tick to run")
                return EXIT_OK
        return max(self.run_ticks(ticks), default=EXIT_OK)

    def loop(self, *, serve: Callable[[], Any] | None = None) -> int:
        """Run until `stop`: poll every <= 1 s, fire due ticks, heartbeat every heartbeat_s."""
        upcoming = next_tick(self.clock.now(), self.schedule, self.workflow)
        if upcoming is None:
            from bentley.config import ParamsError

            raise ParamsError(
                f"schedule: no fire time in the next {SEARCH_DAYS} days; check schedule and workflow.market_hours"
            )
        self.next_fire_at = upcoming.fire_at
        self.say(
            f"scheduler {self.scheduler_id} · every {self.schedule.every_minutes} min at "
            f"+{self.schedule.offset_minutes} · catch-up {self.schedule.catch_up} · next "
            f"{upcoming.run_id} at {_local(upcoming.fire_at, self.workflow.timezone)}"
        )
        beating = threading.Event()
        heart = threading.Thread(target=self._heartbeats, args=(beating,), name="bentley-heartbeat", daemon=True)
        server = None
        last_poll: dt.datetime | None = None
        try:
            self.beat()  # before the health server answers, so its first answer sees this scheduler
            server = serve() if serve else None
            heart.start()
            while not self.stop.is_set():
                now = self.clock.now()
                window = max(DUE_WINDOW, now - last_poll) if last_poll else DUE_WINDOW
                last_poll = now
                self._poll(now, window)
                upcoming = next_tick(self.clock.now(), self.schedule, self.workflow)
                self.next_fire_at = upcoming.fire_at if upcoming else None
                wait = STEP_S if upcoming is None else (upcoming.fire_at - self.clock.now()).total_seconds()
                self.clock.sleep(min(STEP_S, max(wait, 0.0)), self.stop)
        finally:
            beating.set()
            if heart.is_alive():
                heart.join(timeout=10)
            if server is not None:
                server.shutdown()
                server.server_close()
            self.beat("stopped")
            self.say(f"scheduler {self.scheduler_id} stopped")
        return EXIT_OK

    def _poll(self, now: dt.datetime, window: dt.timedelta) -> None:
        # Cheap first: ticks after the last one handled here; the warehouse is read only when one is due.
        if not due_ticks(self.last_handled, now, self.schedule, self.workflow, window=window):
            return
        last_done = self._guard("pipeline_runs", self.last_done)
        if last_done is None and self._last_warning:
            return  # the warehouse is unreachable: try again on the next poll
        ticks = due_ticks(last_done, now, self.schedule, self.workflow, window=window)
        if ticks:
            self.run_ticks(ticks, keep_going=True)
            upcoming = next_tick(self.clock.now(), self.schedule, self.workflow)
            self.next_fire_at = upcoming.fire_at if upcoming else None
            self.beat()
        else:
            self.last_handled = max((t for t in [last_done, self.last_handled] if t is not None), default=None)

    def _heartbeats(self, beating: threading.Event) -> None:
        while not beating.wait(self.schedule.heartbeat_s):
            self.beat()

    def _guard(self, what: str, action: Callable[[], Any]) -> Any:
        """Run a warehouse action; report a failure once (until it recovers) and return None."""
        try:
            result = action()
        except Exception as exc:  # noqa: BLE001 - a long-running scheduler outlives warehouse hiccups
            message = f"warning: {what}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if message != self._last_warning:
                self.say(message)
            self._last_warning = message
            return None
        self._last_warning = None
        return result

    def say(self, text: str) -> None:
        stamp = _local(self.clock.now(), self.workflow.timezone, seconds=True)
        self.console.print(f"[dim]{stamp}[/] schedule · {escape(text)}", markup=True, highlight=False)


def _local(moment: dt.datetime, timezone: str, *, seconds: bool = False) -> str:
    return moment.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z")


def _run_console(console: Console) -> Console:
    """A fresh recording console per run on the same terminal: each run's log holds only that run."""
    from rich.console import Console

    return Console(file=console.file, highlight=False, soft_wrap=True, record=True)


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="default", help="params/profiles/<name>.yaml layered on default.yaml")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override one param for every scheduled run (repeatable); the value is YAML",
    )
    parser.add_argument("--outputs", type=Path, help="outputs folder (default: $BENTLEY_OUTPUTS or ./outputs)")
    parser.add_argument("--pipeline", type=Path, help="an alternative pipeline.yaml")
    parser.add_argument(
        "--once",
        action="store_true",
        help="run the due tick(s) now (per schedule.catch_up; else the latest past tick) and exit "
        "with the run's exit code",
    )
    parser.add_argument(
        "--dry-run",
        nargs="?",
        type=_positive_int,
        const=10,
        default=None,
        metavar="N",
        help="print the next N fire times (default 10) and exit; touches nothing",
    )
    parser.add_argument("--now", type=_instant, help=argparse.SUPPRESS)  # testing: the clock starts here


def command(args: argparse.Namespace, root: Path, console: Console) -> int:
    from bentley.config import load_config, outputs_dir

    config = load_config(args.profile, args.overrides, root)
    clock: Clock = SystemClock()
    if args.now is not None:
        start = args.now if args.now.tzinfo else args.now.replace(tzinfo=ZoneInfo(config.workflow.timezone))
        clock = ShiftedClock(start)
    if args.dry_run is not None:
        print_fire_times(clock.now(), args.dry_run, config.schedule, config.workflow, console)
        return EXIT_OK
    outputs = outputs_dir(args.outputs, root, args.profile)
    pipeline_file = args.pipeline.resolve() if args.pipeline else None
    run_tick = pipeline_tick_runner(root, outputs, args.profile, pipeline_file, console)
    scheduler = Scheduler(config, outputs, run_tick, console, overrides=args.overrides, clock=clock)
    try:
        with _SignalStop(scheduler):
            if args.once:
                return scheduler.once()
            return scheduler.loop(serve=lambda: _start_health_server(scheduler, root, console))
    finally:
        scheduler.close()


def print_fire_times(now: dt.datetime, count: int, schedule: Schedule, workflow: Workflow, console: Console) -> None:
    ticks = upcoming_ticks(now, count, schedule, workflow)
    zone = workflow.timezone
    console.print(
        f"next {len(ticks)} fire time(s) after {_local(now, zone)} ({workflow.timezone}, "
        f"{'sessions of ' + workflow.calendar if schedule.sessions_only else 'every day'}):",
        highlight=False,
    )
    for tick in ticks:
        console.print(
            f"  {tick.run_id}  {_local(tick.fire_at, zone):<22}  "
            f"{tick.fire_at.strftime('%Y-%m-%d %H:%M UTC')}  logical date {tick.logical_date}",
            highlight=False,
        )


def _start_health_server(scheduler: Scheduler, root: Path, console: Console) -> Any:
    from bentley.monitoring.health import run_checks
    from runner.health import serve_health, server_url

    def checks() -> list:
        return run_checks(scheduler.config, scheduler.outputs, root, now=scheduler.clock.now())

    try:
        server = serve_health("127.0.0.1", scheduler.schedule.health_port, checks)
    except OSError as exc:
        scheduler.say(f"warning: health server not started on port {scheduler.schedule.health_port}: {exc}")
        return None
    scheduler.say(f"health at {server_url(server)}/health")
    return server


class _SignalStop:
    """SIGTERM/SIGINT set the stop event (the running stages finish); a second signal interrupts."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _SignalStop:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGTERM, signal.SIGINT):
                self.previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, _frame: object) -> None:
        if self.scheduler.stop.is_set():
            raise KeyboardInterrupt
        self.scheduler.stop.set()
        self.scheduler.say(
            f"{signal.Signals(number).name}: stopping after the running stage(s) finish (signal again to interrupt)"
        )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def _instant(text: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
