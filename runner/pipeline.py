"""One pipeline run: plan, execute the DAG, record everything, render the index.

The order of side effects is deliberate: all checks (params, DAG, notebook parameters,
data window) happen before the run folder exists, so a bad invocation leaves nothing
behind. Then the run takes the warehouse lease (one active run at a time) and executes:

- independent stages run at the same time, up to `runner.max_workers`, the ready stage with the
  longest path of work after it first (`dag.critical_path`), and the kernels of stages about to
  become ready are started and warmed (their imports loaded, `runner.execute`) while their
  upstreams still compute; each kernel's numerical thread pools share the cores
  (`runner.execute.kernel_threads`);
- while a stage runs, what it reports (`StageContext.progress`) reaches the terminal and the log
  every few seconds, and a stage that says nothing gets a line with its cell count every 30 s;
- each stage's time is split into kernel wait, import, compute, charts and report in the
  manifest (`breakdown`);
- a stage whose cache key and products are unchanged is skipped as up to date (runner.cache),
  and the manifest says why every stage ran or was skipped;
- transient failures are retried with capped exponential backoff and jitter;
- SIGTERM (the `stop` event) lets running stages finish and starts nothing new; a wait on
  MLflow in progress is abandoned at once (`runner.infra.wait_for`), and MLflow failing
  mid-run stops the run with one line instead of a traceback (`runner resume` finishes it).

Only the main thread writes records (manifest, ledger, MLflow, index pages); worker threads
execute notebooks and render their reports. After each stage the records are brought up to
date, so a crash mid-run still leaves a readable record, and `runner resume` can finish it.

**Orchestrated runs** (`runner run --orchestrated`, what an exported Airflow DAG calls): an
external orchestrator runs each stage as its own task, possibly on other machines, and owns
ordering, retries and timeouts. Every task process contributes its stages to one run record:
- the run lease is shared: its holder is the run (`run:<run_id>`), not the process, so the
  tasks of one run run side by side while any other run stays excluded; `runner finish`
  releases it (or it lapses after `runner.lease_ttl_s` when the orchestrator died);
- manifest, ledger and index are read, merged and written under a short per-run mutex in the
  warehouse (the one service every worker shares), so concurrent tasks never lose an update;
- the MLflow parent run is created once, by the first task that executes a stage;
- the run stays `running` until `runner finish RUN_ID` records the stages the orchestrator
  never started, sets the final status, ends the MLflow parent run and releases the lease.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import re
import secrets
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.markup import escape

from bentley import calendar, reporting
from bentley.config import (
    PARAMS_DIR,
    PIPELINE_FILE,
    PROFILE_STORES,
    Config,
    RetryPolicy,
    load_config,
    load_pipeline,
    profile_stores,
)
from bentley.ingest import with_resolved_universe
from bentley.lake import atomic_write_json, atomic_write_text, orphaned_temp_files, read_json
from bentley.tracking import display_uri, tracking_uri
from bentley.warehouse import Warehouse
from runner import cache
from runner.dag import DagError, Stage, build_dag, check_notebooks, critical_path, select
from runner.infra import (
    Interrupted,
    ServiceFailed,
    check_infrastructure,
    configured_timeout,
    describe,
    wait_for,
)
from runner.lease import (
    PIPELINE_LEASE,
    LeaseKeeper,
    RunRecordLock,
    holder_alive,
    new_holder,
    run_holder,
)
from runner.outcomes import EXIT_BUSY, EXIT_FAILED, EXIT_LEASE_LOST, EXIT_OK, RUN_FINISHED
from runner.outcomes import STAGE_DONE as DONE
from runner.preflight import check_run

T = TypeVar("T")
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_NOTEBOOK_PARAMETERS = "cache/notebook_parameters.json"
_STAGE_IMPORTS = "cache/stage_imports.json"
_MAX_LEARNED = 200  # modules remembered per stage


@dataclass
class RunRequest:
    root: Path
    outputs: Path
    profile: str = "default"
    overrides: Sequence[str] = ()
    stages: Sequence[str] | None = None
    start: str | None = None
    stop: str | None = None
    run_id: str | None = None
    logical_date: dt.date | None = None
    pipeline_file: Path | None = None
    force: bool = False  # run every selected stage, whatever the cache says
    skip_if_done: bool = False  # the scheduler: a run id that already finished is not run again
    orchestrated: bool = False  # one task of a run an external orchestrator drives (module docstring)
    attempt: int = 1  # the orchestrator's try number of this task, recorded as the stage's attempt


@dataclass
class Plan:
    """Everything checked and resolved before the first side effect."""

    request: RunRequest
    config: Config
    stages: list[Stage]
    dag: list[Stage]  # the whole pipeline, selected or not
    run_id: str
    logical_date: dt.date
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    resumed: bool = False
    later_runs: list[str] = field(default_factory=list)  # runs that used the store after a resumed run
    run_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.run_dir = self.request.outputs / "runs" / self.run_id


def plan_run(request: RunRequest) -> Plan:
    """Validate params, DAG, notebooks and window; raise ParamsError/DagError on any problem."""
    config = load_config(request.profile, request.overrides, request.root)
    stages, dag, retry, inspected = _stages(request, config)
    logical_date = request.logical_date or _default_logical_date(config)
    # Dates and params that cannot work: one line, exit 2, before anything is written.
    check_run(
        config,
        logical_date,
        logical_date_given=request.logical_date is not None,
        stages_arg=request.stages,
        selected=stages,
        run_id=request.run_id,
        root=request.root,
        now=dt.datetime.now(dt.UTC),
    )
    config.history.window(logical_date)  # a window that reads the future fails here
    config = with_resolved_universe(config, request.root)
    run_id = request.run_id or new_run_id()
    if not RUN_ID_PATTERN.match(run_id):
        raise DagError(f"run id {run_id!r} must be 1-64 letters, digits, '.', '_' or '-'")
    # Outputs, warehouse and MLflow answer: one line, exit 2, before anything is written.
    check_infrastructure(config, request.outputs, timeout_s=configured_timeout(config))
    _remember_parameters(request, inspected)
    return Plan(
        request=request, config=config, stages=stages, dag=dag, run_id=run_id, logical_date=logical_date, retry=retry
    )


def plan_resume(root: Path, outputs: Path, run_id: str) -> Plan:
    """The stages of `run_id` that did not finish, with the run's own params and logical date.

    The params are the resolved ones the run saved (`params.json`), so editing params/ after
    a failure does not change what the resumed stages see.
    """
    manifest, saved = _saved_run(outputs, run_id, "resume")
    unfinished = [name for name, stage in manifest["stages"].items() if stage["status"] not in DONE]
    if not unfinished:
        if manifest.get("status") == "success":
            raise DagError(f"run {run_id} has nothing to resume: it succeeded")
        # Every stage finished, but the runner died writing the run's own record: conclude it.
        return _saved_plan(root, outputs, manifest, saved, [], resumed=True, orchestrated=False)
    later = sorted(
        m["run_id"]
        for m in all_manifests(outputs)
        if m["run_id"] != run_id and (m.get("started_at") or "") > (manifest.get("started_at") or "")
    )
    if later:
        # A later run rewrote the date-keyed tables (features, anomalies, budget) over its own
        # window: every stage of this run is looked at again, and the cache reruns those whose
        # inputs that run changed, so the resumed stages never read another date's results.
        unfinished = list(manifest["stages"])
    plan = _saved_plan(root, outputs, manifest, saved, unfinished, resumed=True, orchestrated=False)
    plan.later_runs = later
    return plan


def plan_finish(root: Path, outputs: Path, run_id: str) -> Plan:
    """An orchestrated run as its tasks left it, to be concluded by `PipelineRun.finish`."""
    manifest, saved = _saved_run(outputs, run_id, "finish")
    if not manifest.get("orchestrated"):
        raise DagError(f"run {run_id} was not started with --orchestrated: it finished on its own")
    return _saved_plan(root, outputs, manifest, saved, [], resumed=False, orchestrated=True)


def _saved_run(outputs: Path, run_id: str, verb: str) -> tuple[dict[str, Any], dict[str, Any]]:
    run_dir = outputs / "runs" / run_id
    try:
        return read_json(run_dir / "manifest.json"), read_json(run_dir / "params.json")
    except (OSError, ValueError):
        raise DagError(f"no run {run_id!r} to {verb} under {outputs / 'runs'}") from None


def _saved_plan(
    root: Path,
    outputs: Path,
    manifest: dict[str, Any],
    saved: dict[str, Any],
    stages: list[str],
    *,
    resumed: bool,
    orchestrated: bool,
) -> Plan:
    request = RunRequest(
        root=root,
        outputs=outputs,
        profile=manifest["profile"],
        overrides=tuple(manifest.get("overrides", ())),
        stages=stages,
        run_id=manifest["run_id"],
        logical_date=dt.date.fromisoformat(manifest["logical_date"]),
        pipeline_file=Path(manifest["pipeline_file"]) if manifest.get("pipeline_file") else None,
        orchestrated=orchestrated,
    )
    config = Config.model_validate(saved)
    selected, dag, retry, inspected = _stages(request, config)
    check_infrastructure(config, outputs, timeout_s=configured_timeout(config))
    _remember_parameters(request, inspected)
    return Plan(
        request=request,
        config=config,
        stages=selected if stages else [],
        dag=dag,
        run_id=manifest["run_id"],
        logical_date=dt.date.fromisoformat(manifest["logical_date"]),
        retry=retry,
        resumed=resumed,
    )


def _stages(
    request: RunRequest, config: Config
) -> tuple[list[Stage], list[Stage], RetryPolicy, dict[str, list[str]] | None]:
    pipeline_file = request.pipeline_file or request.root / PARAMS_DIR / PIPELINE_FILE
    spec = load_pipeline(pipeline_file)
    dag = build_dag(spec, request.root, config.workflow.max_execution_time_minutes, str(pipeline_file))
    stages = select(dag, request.stages, request.start, request.stop)
    memo_file = request.outputs / _NOTEBOOK_PARAMETERS
    known: dict[str, list[str]] = _read_memo(memo_file)
    before = dict(known)
    check_notebooks(stages, request.root, known)
    return stages, dag, spec.retry, (known if known != before else None)


def _remember_parameters(request: RunRequest, known: dict[str, list[str]] | None) -> None:
    """Keep what papermill found in each notebook, once every check passed (nothing is written before)."""
    if known is not None:
        atomic_write_json(request.outputs / _NOTEBOOK_PARAMETERS, known)


def _read_memo(path: Path) -> dict[str, list[str]]:
    try:
        return dict(read_json(path)) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def run_pipeline(request: RunRequest, console: Console, stop: threading.Event | None = None) -> int:
    """Plan and execute: the scheduler's entry point (ParamsError/DagError propagate)."""
    return PipelineRun(plan_run(request), console, stop).execute()


def new_run_id() -> str:
    """Sortable by start time, unique across machines: `20261130T120501Z-a1b2c3`."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def _default_logical_date(config: Config) -> dt.date:
    """The latest session that has closed: the only place a run looks at the clock."""
    return calendar.latest_closed_session(dt.datetime.now(dt.UTC), config.workflow.calendar)


@dataclass
class _Attempted:
    """What a worker thread hands back: the attempt and where its files are.

    The HTML report is rendered after the worker hands back (`rendering`), while the stages
    downstream of it already run: `rendered` waits for it when the stage is recorded.
    """

    attempt: Any  # runner.execute.Attempt
    notebook: Path
    report: Path | None
    report_error: str | None
    rendering: Future[tuple[Path | None, str | None, float]] | None = None

    def rendered(self) -> None:
        """The report's path (or error) once it is written; its seconds join the stage's time."""
        if self.rendering is None:
            return
        self.report, self.report_error, seconds = self.rendering.result()
        self.rendering = None
        attempt = self.attempt
        attempt.report_s = seconds
        attempt.duration_s += seconds
        attempt.ended_at = attempt.ended_at + dt.timedelta(seconds=seconds)
        if attempt.breakdown:
            attempt.breakdown["report"] = round(attempt.breakdown.get("report", 0.0) + seconds, 3)


class PipelineRun:
    """Executes a plan and keeps manifest, ledger, MLflow and index pages in step."""

    def __init__(self, plan: Plan, console: Console, stop: threading.Event | None = None) -> None:
        self.plan = plan
        self.console = console
        self.config = plan.config
        self.outputs = plan.request.outputs
        self.stop = stop or threading.Event()
        self.lost = threading.Event()
        self.warehouse = Warehouse.from_settings(self.config.warehouse.url, self.outputs)
        self.orchestrated = plan.request.orchestrated
        self.holder = run_holder(plan.run_id) if self.orchestrated else new_holder()
        # Tasks of one orchestrated run write the same record: serialise their read-merge-writes.
        self._record: Any = RunRecordLock(self.warehouse, plan.run_id) if self.orchestrated else nullcontext()
        self.max_workers = self.config.runner.max_workers or os.cpu_count() or 1
        from runner.execute import kernel_threads

        self.kernel_threads = kernel_threads(self.max_workers)
        self._tracker: Any = None
        self._tracking = threading.Event()  # set once MLflow's parent run exists (or could not be created)
        self._tracking_failed = False
        self._creating: Future[Any] | None = None  # a local store's parent run, created in the background
        self._forks: Any = None  # runner.execute.ForkServer: forks the stages' kernels (None: new processes)
        self._by_priority: list[Stage] = list(plan.stages)
        self._starter: Any = None  # the thread pools that start (and warm) kernels, shut them down,
        self._reaper: Any = None  # and render reports
        self._renderer: Any = None
        self._learned: dict[str, list[str]] | None = None  # what each stage imported in its cells last time
        self._mlflow_error: str | None = None  # MLflow failed mid-run (or SIGTERM gave up on it): no more calls
        self._kernels: set[Any] = set()
        self._kernels_lock = threading.Lock()
        self._dirty = False
        self.manifest: dict[str, Any] = {}

    # ------------------------------------------------------------------ lifecycle

    def execute(self) -> int:
        plan = self.plan
        grant = self._acquire_lease()
        if not grant.acquired:
            since = f" (heartbeat {grant.heartbeat_at:%H:%M:%S} UTC)" if grant.heartbeat_at else ""
            who = f"run {grant.run_id} by {grant.holder}{since}" if grant.holder else "another runner"
            self.console.print(
                f"[yellow]busy:[/] {escape(who)} holds the warehouse lease; run {plan.run_id} not started"
            )
            self.warehouse.dispose()
            return EXIT_BUSY
        keeper = LeaseKeeper(
            self.warehouse,
            self.holder,
            self.config.runner.lease_ttl_s,
            self.config.runner.heartbeat_s,
            self._on_lease_lost,
        )
        keeper.start()
        try:
            if plan.request.skip_if_done and self._already_finished():
                self.console.print(f"run {plan.run_id} already finished; nothing to do")
                return EXIT_OK
            if grant.taken_over and grant.run_id:
                self._mark_crashed(grant.run_id)
            if not self.orchestrated:  # a sibling task may be writing its temp files right now
                self._remove_orphaned_temp_files()
            return self._execute()
        finally:
            keeper.stop()
            if not self.lost.is_set():
                try:
                    self._leave_lease()
                except Exception as exc:  # noqa: BLE001 - the warehouse failed too (a full disk): say so, once
                    self.console.print(
                        f"[yellow]![/] the warehouse lease was not released ({escape(describe(exc))}); "
                        f"it lapses {self.config.runner.lease_ttl_s:.0f} s after the last heartbeat"
                    )
            self.warehouse.dispose()

    def finish(self) -> int:
        """Conclude an orchestrated run once its orchestrator is done with it (`runner finish`).

        Stages the orchestrator never started (an upstream failed) are recorded as skipped, a
        stage whose task died without a word as failed; then the run gets its final status,
        the MLflow parent run ends, and the shared lease is released. Exit 0 only on success,
        so the orchestrator's view of the run matches ours.
        """
        plan = self.plan
        grant = self._acquire_lease()
        try:
            with self._record:
                self.manifest = read_json(plan.run_dir / "manifest.json")
                self._record_unstarted()
                if self.manifest["mlflow"].get("parent_run_id"):
                    self._tracker_started()  # attaches to the parent run the tasks created
                return self._conclude()
        finally:
            if grant.acquired:
                self.warehouse.release_lease(PIPELINE_LEASE, self.holder)
            self.warehouse.dispose()

    def _acquire_lease(self) -> Any:
        """Take (or, orchestrated, join) the run lease; tasks of one run joining at once may race."""
        for _ in range(20 if self.orchestrated else 1):
            grant = self.warehouse.acquire_lease(
                PIPELINE_LEASE,
                self.holder,
                self.plan.run_id,
                self.config.runner.lease_ttl_s,
                holder_alive=holder_alive,
            )
            if grant.acquired or grant.holder is not None:
                return grant
            time.sleep(0.1)  # lost a compare-and-swap, most likely to a sibling task: look again
        return grant

    def _leave_lease(self) -> None:
        """Release the lease; an orchestrated task keeps it for its siblings instead.

        The orchestrator may queue the next task for a while, so the shared lease is extended by
        `runner.orchestrated_lease_s`; `runner finish` releases it, and if the orchestrator never
        gets there the lease lapses then.
        """
        runner = self.config.runner
        if self.orchestrated:
            bridge_s = max(runner.lease_ttl_s, runner.orchestrated_lease_s)
            self.warehouse.renew_lease(PIPELINE_LEASE, self.holder, bridge_s)
        else:
            self.warehouse.release_lease(PIPELINE_LEASE, self.holder)

    def _remove_orphaned_temp_files(self) -> None:
        """Temp files a killed writer left in this store; other profiles' stores nested in it have
        their own lease and may be writing right now."""
        nested = self.outputs / PROFILE_STORES
        for orphan in orphaned_temp_files(self.outputs):
            if orphan.is_relative_to(nested):
                continue
            orphan.unlink(missing_ok=True)
            self.console.print(f"removed {escape(str(orphan))}: a write interrupted by a crash")

    def _execute(self) -> int:
        plan = self.plan
        self.manifest = self._initial_manifest()
        if not (plan.run_dir / "params.json").is_file():
            atomic_write_json(plan.run_dir / "params.json", self.config.as_dict())
        self.manifest.update(
            status="running", started_at=self.manifest.get("started_at") or _now().isoformat(), ended_at=None
        )
        self._save()
        verb = "resuming" if plan.resumed else "run"
        self.console.print(
            f"{verb} [bold]{plan.run_id}[/] · logical date {plan.logical_date} · profile {plan.request.profile} "
            f"· {len(plan.stages)} stage(s) · {self.max_workers} worker(s) · warehouse {escape(self.warehouse.display_url)}"
        )
        if plan.resumed:
            self.console.print(escape(self._reused_text()))
        self._run_dag()
        if self.lost.is_set():
            self.console.print(
                f"[red]lease lost:[/] {escape(str(self.manifest.get('lease_lost')))}; stopped without writing"
            )
            self._write_log()
            return EXIT_LEASE_LOST
        if self.orchestrated:
            return self._task_done()
        return self._conclude()

    def _task_done(self) -> int:
        """An orchestrated task's end: its stages are recorded; the run stays open for its siblings."""
        self._save()
        failed = [s.name for s in self.plan.stages if self.manifest["stages"][s.name]["status"] not in DONE]
        if failed:
            self.console.print(
                f"[red]{', '.join(failed)} did not succeed[/] · run {self.plan.run_id} stays open "
                f"until `runner finish {self.plan.run_id}`"
            )
        else:
            self.console.print(
                f"[green]done[/] · {', '.join(s.name for s in self.plan.stages)} · "
                f"run {self.plan.run_id} · report {escape(str(self.plan.run_dir / 'index.html'))}"
            )
        self._write_log()
        return EXIT_FAILED if failed else EXIT_OK

    def _conclude(self) -> int:
        """The run's final status, alerts, MLflow parent and log; the exit code."""
        plan = self.plan
        statuses = [s["status"] for s in self.manifest["stages"].values()]
        ended = _now()
        if "failed" in statuses:
            status = "failed"
        elif all(s in DONE for s in statuses):
            status = "success"
        else:
            status = "interrupted"  # stopped (SIGTERM) before every stage ran: `runner resume` finishes it
        self.manifest.update(
            status=status,
            ended_at=ended.isoformat(),
            duration_s=(ended - dt.datetime.fromisoformat(self.manifest["started_at"])).total_seconds(),
            alerts=self._active_alerts(),
        )
        for alert in self.manifest["alerts"]:
            colour = "red" if alert["severity"] == "critical" else "yellow"
            text = escape(f"[{alert['severity']}] {alert['rule']} {alert['scope']}: {alert['message']}")
            self.console.print(f"[{colour}]ALERT[/] {text}")
        self._save()
        try:
            if self._tracker is None and plan.resumed and self.manifest["mlflow"].get("parent_run_id"):
                self._tracker_started()  # a resume that only concludes the record still ends the parent run
            if self._tracker is not None and self._mlflow_error is None:
                tracker = self._tracker
                self._mlflow(
                    lambda: tracker.finish_pipeline(
                        status,
                        metrics={"duration_s": self.manifest["duration_s"]},
                        artifacts=[plan.run_dir / "manifest.json", plan.run_dir / "index.html"],
                    )
                )
        except (ServiceFailed, Interrupted) as exc:
            self.console.print(f"[yellow]![/] MLflow's parent run was not ended: {escape(str(exc))}")
        executed = sum(1 for s in statuses if s not in ("cached", "skipped"))
        cached = statuses.count("cached")
        colour = {"success": "green", "failed": "red"}.get(status, "yellow")
        self.console.print(
            f"[{colour}]{status}[/] in {self.manifest['duration_s']:.1f} s · {executed} ran, {cached} up to date "
            f"· report {escape(str(plan.run_dir / 'index.html'))}"
        )
        if status != "success":
            self.console.print(f"to finish it: {escape(self.resume_command(plan.run_id))}")
        self._write_log()
        return EXIT_OK if status == "success" else EXIT_FAILED

    def resume_command(self, run_id: str) -> str:
        """The exact command that finishes `run_id` (with `--outputs` when its store is not a profile's)."""
        command = f"python -m runner resume {run_id}"
        if self.outputs not in profile_stores(None, self.plan.request.root):
            command += f" --outputs {shlex.quote(str(self.outputs))}"
        return command

    def _reused_text(self) -> str:
        """What a resumed run keeps: the stages that finished, its saved params and logical date."""
        selected = {stage.name for stage in self.plan.stages}
        kept = [
            name for name, stage in self.manifest["stages"].items() if name not in selected and stage["status"] in DONE
        ]
        kept_text = ", ".join(kept) if kept else "no finished stage"
        checked = (
            f"rechecking every stage, since {', '.join(self.plan.later_runs[:3])} used the store after "
            "this run started; "
            if self.plan.later_runs
            else ""
        )
        return (
            f"{checked}reusing {kept_text} (their products stay as written); rerunning what is not up to date "
            f"of {', '.join(sorted(selected))} with the run's saved params (runs/{self.plan.run_id}/params.json) "
            f"and logical date {self.plan.logical_date}"
        )

    # ------------------------------------------------------------------ the DAG

    def _run_dag(self) -> None:
        plan = self.plan
        from runner.execute import resolve_kernel, transient_error_names

        selected = {s.name for s in plan.stages}
        status = {s.name: "pending" for s in plan.stages}
        # Ready stages start in order of the work on their longest path to the end (stable: DAG order on ties).
        priority = critical_path(plan.stages, self._last_durations())
        ordered = self._by_priority = sorted(plan.stages, key=lambda s: -priority[s.name])
        progress = _Progress(self.console, plan.run_dir, enabled=self.config.runner.progress)
        entries = self._cache_entries()
        fingerprints: dict[str, str | None] = {name: e.fingerprint for name, e in entries.items()}
        keys = cache.KeyBuilder(plan.request.root, self.config)
        kernel_name: str | None = None
        transient: frozenset[str] = frozenset()
        attempts: dict[str, int] = {}
        decided: dict[str, tuple[cache.StageKey, cache.CacheEntry | None, cache.Decision]] = {}
        running: dict[Future[_Attempted], Stage] = {}
        unrecorded: list[tuple[Stage, int, _Attempted]] = []  # finished, not yet logged (`_record_stage`)
        prestarted: dict[str, Future[Any]] = {}
        workers = ThreadPoolExecutor(self.max_workers, thread_name_prefix="stage")
        # Kernels are forked (runner.execute.ForkServer): a slow warm-up (train's MLflow) must not hold up the next.
        starter = self._starter = ThreadPoolExecutor(self.max_workers, thread_name_prefix="kernel-start")
        reaper = self._reaper = ThreadPoolExecutor(self.max_workers, thread_name_prefix="kernel-stop")
        renderer = self._renderer = ThreadPoolExecutor(self.max_workers, thread_name_prefix="report")

        def upstream_state(stage: Stage) -> list[str]:
            return [status[u] for u in stage.upstream if u in selected]

        try:
            while True:
                for stage in ordered:
                    if status[stage.name] != "pending":
                        continue
                    states = upstream_state(stage)
                    if any(s in ("pending", "running") for s in states):
                        continue
                    if self.stop.is_set():
                        status[stage.name] = "skipped"
                        self._mark_skipped(stage, "not started: the run was stopped")
                        self._discard_kernel(prestarted.pop(stage.name, None))
                        continue
                    blocked = [u for u in stage.upstream if u in selected and status[u] not in DONE]
                    if blocked and stage.trigger == "all_success":
                        status[stage.name] = "skipped"
                        self._mark_skipped(stage, f"upstream {', '.join(blocked)} did not succeed")
                        self._discard_kernel(prestarted.pop(stage.name, None))
                        continue
                    if stage.name not in decided:  # upstreams are final here: decide once, not per wait
                        key = keys.key(stage, self._parameters(stage), {u: fingerprints.get(u) for u in stage.upstream})
                        entry = entries.get(stage.name)
                        decided[stage.name] = (
                            key,
                            entry,
                            cache.decide(
                                stage,
                                key,
                                entry,
                                force=plan.request.force,
                                now=_now(),
                                missing_product=self._missing_product(entry)
                                if entry and entry.key == key.key
                                else None,
                            ),
                        )
                    key, entry, decision = decided[stage.name]
                    if not decision.run:
                        status[stage.name] = "cached"
                        self._mark_cached(stage, decision.reason, entry)  # type: ignore[arg-type]
                        self._discard_kernel(prestarted.pop(stage.name, None))
                        continue
                    if len(running) >= self.max_workers:
                        continue
                    if kernel_name is None:
                        _import_in_background("papermill", "nbconvert")  # the workers' first execution and report
                        kernel_name = resolve_kernel(self.config.runner.kernel)
                        transient = transient_error_names()
                        self._forks = self._fork_server(kernel_name)
                    self._invalidate(stage.name)
                    entries.pop(stage.name, None)
                    fingerprints[stage.name] = None
                    status[stage.name] = "running"
                    attempts[stage.name] = plan.request.attempt
                    self._mark_running(stage, decision.reason, key)
                    self.console.print(f"[blue]▶[/] {stage.name} started: {escape(decision.reason)}")
                    future = workers.submit(
                        self._attempt, stage, kernel_name, transient, 0.0, prestarted.pop(stage.name, None)
                    )
                    running[future] = stage
                    progress.started(stage)
                    self._start_tracking()
                # The stages that just finished, now that the next ones are running; while a new store's
                # parent run is still being created, later (recording waits for it: starting stages does not).
                while unrecorded and (not running or self._creating is None or self._creating.done()):
                    self._record_stage(*unrecorded.pop(0))
                self._flush()
                if not running and not unrecorded:
                    break
                if self.config.runner.prestart_kernels and kernel_name is not None and not self.stop.is_set():
                    self._prestart(ordered, status, selected, prestarted, starter, kernel_name)
                if self.orchestrated and self.stop.is_set():
                    self._kill_kernels()  # the orchestrator stops this task (timeout, kill): stop now
                done, _ = wait(list(running), timeout=1.0, return_when=FIRST_COMPLETED)
                self._poll_tracking()
                progress.poll([running[f] for f in running if f not in done])
                for future in done:
                    stage = running.pop(future)
                    progress.finished(stage)
                    result = future.result()
                    attempt = result.attempt
                    retry = (
                        attempt.status != "success"
                        and attempt.transient
                        and not self.stop.is_set()
                        and not self.lost.is_set()
                        and attempts[stage.name] <= self._retries(stage)
                    )
                    if retry:
                        delay = backoff_delay(plan.retry, attempts[stage.name])
                        result.rendered()
                        self._record_attempt(stage, attempts[stage.name], result, None, retrying=True)
                        self.console.print(
                            f"[yellow]↻[/] {stage.name} {escape(str(attempt.error))}; retry in {delay:.1f} s"
                        )
                        attempts[stage.name] += 1
                        assert kernel_name is not None  # resolved when this stage first ran
                        running[workers.submit(self._attempt, stage, kernel_name, transient, delay, None)] = stage
                        continue
                    if self.lost.is_set():
                        status[stage.name] = "failed"
                        continue
                    status[stage.name] = attempt.status
                    fingerprints[stage.name] = self._settle_stage(stage, result)
                    unrecorded.append((stage, attempts[stage.name], result))
        except BaseException:
            self.stop.set()
            self._kill_kernels()  # nobody would record what the running stages do: do not wait for them
            raise
        finally:
            with contextlib.suppress(Exception):
                self._poll_tracking(block=True)  # a parent run created in the background is recorded
            self._tracking.set()  # nothing executes without a parent run, and nothing waits for one forever
            if self._tracker is None:
                self._tracking_failed = True
            for pending in prestarted.values():
                self._discard_kernel(pending)
            workers.shutdown(wait=True)  # no stage executes after this
            reaper.shutdown(wait=True)  # every kernel that ran a stage is shut down
            renderer.shutdown(wait=True)
            if self._forks is not None:
                self._forks.close()  # kernels still starting (a stop request) fail at once
            starter.shutdown(wait=True)

    def _attempt(
        self, stage: Stage, kernel_name: str, transient: frozenset[str], delay: float, prestarted: Future[Any] | None
    ) -> _Attempted:
        """Worker thread: (wait out a backoff,) get a warm kernel, execute, render the report."""
        from runner.execute import Attempt, execute_stage, start_kernel

        notebook = self.plan.run_dir / "notebooks" / f"{stage.name}.ipynb"
        if delay and self.stop.wait(delay):
            now = _now()
            return _Attempted(
                Attempt("failed", now, now, 0.0, 0.0, "not retried: the run was stopped"), notebook, None, None
            )
        clock = _now()
        starting = prestarted or self._starter.submit(
            start_kernel, kernel_name, stage.notebook.parent, self._warm_up(stage), self.kernel_threads, self._forks
        )
        try:  # the stage was announced as started: a stop request lets it finish, kernel start included
            kernel = starting.result()
        except Exception as exc:  # noqa: BLE001 - a kernel that cannot start is a transient failure
            now = _now()
            failed = Attempt(
                "failed",
                clock,
                now,
                (now - clock).total_seconds(),
                0.0,
                f"kernel did not start: {type(exc).__name__}: {exc}",
                transient=True,
            )
            return _Attempted(failed, notebook, None, None)
        if self._creating is None or "tracking" in stage.sections:
            self._tracking.wait()  # a stage may nest MLflow runs under the parent (train)
        waited = (_now() - clock).total_seconds()
        with self._kernels_lock:
            self._kernels.add(kernel)
        try:
            if self.lost.is_set() or self._tracking_failed:
                kernel.shutdown()
                now = _now()
                why = (
                    "lease lost"
                    if self.lost.is_set()
                    else f"not started: {self._mlflow_error or 'MLflow tracking failed'}"
                )
                return _Attempted(Attempt("failed", now, now, 0.0, 0.0, why), notebook, None, None)
            attempt = execute_stage(
                stage,
                notebook,
                self._parameters(stage),
                kernel=kernel,
                kernel_name=kernel_name,
                cwd=stage.notebook.parent,
                transient_errors=transient,
                timing_file=self._timing_file(stage),
                shutdown=lambda used: self._reaper.submit(used.shutdown),
            )  # off the critical path
        finally:
            with self._kernels_lock:
                self._kernels.discard(kernel)
        # The stage's wall time as the run sees it: kernel wait (0 when it was started and warmed
        # ahead) and execution; its HTML report (rendered while downstream stages start) is added
        # when it is written (`_Attempted.rendered`).
        attempt.duration_s += waited
        attempt.started_at = clock
        attempt.ended_at = _now()
        parts = {"kernel": round(waited, 3), **attempt.breakdown}
        cpu = parts.pop("cpu", None)
        parts["other"] = round(max(attempt.duration_s - sum(parts.values()), 0.0), 3)
        if cpu is not None:
            parts["cpu"] = cpu  # not a part of the wall time: the CPU seconds the cells used
        attempt.breakdown = parts
        attempt.warm_up = {
            "seconds": round(kernel.warm_s, 3),
            "modules": kernel.warmed,
            "ahead": prestarted is not None,
        }
        rendering = None
        if notebook.is_file() and not self.lost.is_set():
            rendering = self._renderer.submit(
                self._render, notebook, self.plan.run_dir / "reports" / f"{stage.name}.html"
            )
        return _Attempted(attempt, notebook, None, None, rendering)

    @staticmethod
    def _render(notebook: Path, report: Path) -> tuple[Path | None, str | None, float]:
        """A stage's HTML report: its path, or the error that stopped it, and the seconds it took."""
        clock = time.perf_counter()
        try:
            reporting.export_html(notebook, report)
        except Exception as exc:  # noqa: BLE001 - a broken report must not hide the stage outcome
            return None, str(exc), time.perf_counter() - clock
        return report, None, time.perf_counter() - clock

    def _fork_server(self, kernel_name: str) -> Any:
        """The run's kernel fork server (runner.execute); None when kernels cannot be forked (another
        kernelspec, no fork on this platform) or are cold.

        Before its first fork it imports the kernel machinery and what the first stages import
        (those with no upstream in the run: the first kernel waits for this); then, between
        requests, what two or more stages import (earlier runs taught the lazy imports,
        `_learned_imports`). What one stage alone needs (train's MLflow) its own kernel imports
        while warming: in the server, one long import would hold up every fork behind it.
        """
        from runner.execute import KERNEL_MODULES, ForkServer, kernel_environment, shared_imports

        if _cold_kernels():
            return None
        selected = {stage.name for stage in self.plan.stages}
        lists = {stage.name: self._warm_up(stage).modules for stage in self._by_priority}
        first = [
            *KERNEL_MODULES,
            *(
                name
                for stage in self._by_priority
                if not any(u in selected for u in stage.upstream)
                for name in lists[stage.name]
            ),
        ]
        later = [name for name in shared_imports(list(lists.values())) if name not in first]
        try:
            return ForkServer.for_kernel(
                kernel_name,
                list(dict.fromkeys(first)),
                kernel_environment(self.kernel_threads),
                self.plan.request.root,
                later=later,
            )
        except OSError as exc:
            self.console.print(f"[yellow]![/] kernels start as new processes: {escape(str(exc))}")
            return None

    def _warm_up(self, stage: Stage) -> Any:
        """What a kernel for `stage` loads before it gets its parameters (runner.execute); None for a
        cold kernel (`BENTLEY_COLD_KERNELS=1`: nothing preloaded, no sampler, no fork server)."""
        from runner.execute import WarmUp, notebook_imports

        if _cold_kernels():
            return None
        try:
            modules = notebook_imports(stage.notebook)
        except (OSError, ValueError):
            modules = ()  # an unreadable notebook fails in papermill, with its own message
        learned = self._learned_imports().get(stage.name, [])
        return WarmUp(modules=tuple(dict.fromkeys([*modules, *learned])), timing_file=self._timing_file(stage))

    def _learned_imports(self) -> dict[str, list[str]]:
        """Per stage, the modules its cells imported beyond its warm-up in earlier runs of this store
        (lazy imports inside library functions): the next warm-up imports them too."""
        if self._learned is None:
            self._learned = _read_memo(self.outputs / _STAGE_IMPORTS)
        return self._learned

    def _learn_imports(self, stage: Stage) -> None:
        """Main thread, after a stage succeeded: remember what its cells imported (runner.execute)."""
        try:
            imported = read_json(self._timing_file(stage)).get("imported", [])
        except (OSError, ValueError):
            return
        known = self._learned_imports()
        merged = list(dict.fromkeys([*known.get(stage.name, []), *map(str, imported)]))[:_MAX_LEARNED]
        if merged != known.get(stage.name, []):
            known[stage.name] = merged
            with contextlib.suppress(OSError):
                atomic_write_json(self.outputs / _STAGE_IMPORTS, known)

    def _timing_file(self, stage: Stage) -> Path:
        return self.plan.run_dir / "stage_results" / f"{stage.name}.timing.json"

    #: Kernels started ahead and not yet used, beyond one per worker: a kernel warmed early
    #: (train's imports MLflow) is ready when its stage is, and costs only memory meanwhile.
    AHEAD = 2

    def _prestart(
        self,
        stages: list[Stage],
        status: dict[str, str],
        selected: set[str],
        prestarted: dict[str, Future[Any]],
        starter: ThreadPoolExecutor,
        kernel_name: str,
    ) -> None:
        """Start kernels for the stages next in line, highest priority first (`stages` is in that
        order): a stage whose upstreams all run, are done (none failed), or have kernels started
        ahead themselves; at most `max_workers + AHEAD` of them unused at a time.
        """
        from runner.execute import start_kernel

        idle = sum(1 for name in prestarted if status[name] == "pending")
        for stage in stages:
            if idle >= self.max_workers + self.AHEAD:
                return
            if status[stage.name] != "pending" or stage.name in prestarted:
                continue
            ahead = [u for u in stage.upstream if u in selected]
            if all(status[u] in ("running", *DONE) or u in prestarted for u in ahead):
                prestarted[stage.name] = starter.submit(
                    start_kernel,
                    kernel_name,
                    stage.notebook.parent,
                    self._warm_up(stage),
                    self.kernel_threads,
                    self._forks,
                )
                idle += 1

    @staticmethod
    def _discard_kernel(pending: Future[Any] | None) -> None:
        """Shut down a kernel started ahead for a stage that will not execute after all."""
        if pending is not None:
            pending.add_done_callback(lambda f: f.exception() is None and f.result().shutdown())

    def _retries(self, stage: Stage) -> int:
        """Attempts after the first; an orchestrator retries its tasks itself (the exported DAG does)."""
        return 0 if self.orchestrated else stage.retries

    def _on_lease_lost(self, reason: str) -> None:
        """The heartbeat thread: someone else owns the run now. Stop writing, kill our kernels."""
        self.manifest["lease_lost"] = reason
        self.lost.set()
        self.stop.set()
        self._kill_kernels()

    def _kill_kernels(self) -> None:
        with self._kernels_lock:
            for kernel in list(self._kernels):
                kernel.kill()

    def _last_durations(self) -> dict[str, float]:
        """Each stage's wall time in its latest successful execution in this store (the ledger)."""
        try:
            frame = self.warehouse.read(
                "stage_runs", where={"status": "success"}, columns=["stage", "ended_at", "duration_s"]
            )
        except Exception:  # noqa: BLE001 - a priority is a hint: without history, declared limits do
            return {}
        frame = frame[frame["duration_s"] > 0].sort_values("ended_at", kind="stable")
        return {str(k): float(v) for k, v in frame.groupby("stage")["duration_s"].last().items()}

    # ------------------------------------------------------------------ cache

    def _cache_entries(self) -> dict[str, cache.CacheEntry]:
        frame = self.warehouse.read("stage_cache")
        entries = {}
        for row in frame.to_dict("records"):
            entries[row["stage"]] = cache.CacheEntry(
                stage=row["stage"],
                key=row["cache_key"],
                fingerprint=row["fingerprint"],
                components=json.loads(row["components"]),
                products=json.loads(row["products"]),
                run_id=row["run_id"],
                updated_at=row["updated_at"].to_pydatetime(),
            )
        return entries

    def _missing_product(self, entry: cache.CacheEntry) -> str | None:
        """The first product of the entry that is gone (a dropped table, an emptied partition)."""
        for product, written in entry.products.items():
            kind, _, name = product.partition(":")
            if kind == "table" and written.get("rows") and not self.warehouse.has_rows(name):
                return f"table {name} is empty or missing"
            if kind == "lake" and not any((self.outputs / "lake" / name).glob("*.parquet")):
                return f"lake partition {name} has no files"
        return None

    def _invalidate(self, stage: str) -> None:
        """A stage about to run changes its products: its old entry no longer describes them."""
        self.warehouse.delete_where("stage_cache", stage=stage)

    def _store_entry(self, stage: Stage, results: dict[str, Any]) -> str:
        products = results.get("products", {})
        fingerprint = cache.products_fingerprint(products)
        key = self.manifest["stages"][stage.name].pop("_key")
        self.warehouse.upsert(
            "stage_cache",
            _frame(
                [
                    {
                        "stage": stage.name,
                        "cache_key": key.key,
                        "fingerprint": fingerprint,
                        "components": json.dumps(key.components, sort_keys=True),
                        "products": json.dumps(products, sort_keys=True),
                        "run_id": self.plan.run_id,
                        "updated_at": _now(),
                    }
                ]
            ),
        )
        return fingerprint

    # ------------------------------------------------------------------ records

    def _tracker_started(self) -> Any:
        """MLflow's parent run, created when the first stage executes (a run of cached stages logs nothing).

        A resumed run, or a task of an orchestrated run whose sibling got there first, reuses
        the parent run its manifest names.
        """
        if self._tracker is None and self._creating is not None:
            self._poll_tracking(block=True)
            if self._tracker is None:
                raise ServiceFailed(self._mlflow_error or "MLflow's parent run was not created")
        if self._tracker is None:
            from bentley.tracking import PipelineTracker

            plan = self.plan
            uri = tracking_uri(self.config.tracking.uri, self.outputs)
            with self._record:
                tracker = self._mlflow(lambda: PipelineTracker(uri, self.config.tracking.experiment, self.outputs))
                self._tracker = tracker
                self.manifest["mlflow"]["experiment_id"] = tracker.experiment_id
                parent = self._existing_parent_run()
                if parent:
                    tracker.parent_run_id = parent
                    self.manifest["mlflow"]["parent_run_id"] = parent
                    return tracker
                self.manifest["mlflow"]["parent_run_id"] = self._mlflow(
                    lambda: tracker.start_pipeline(
                        plan.run_id,
                        tags={
                            "run_id": plan.run_id,
                            "profile": plan.request.profile,
                            "logical_date": str(plan.logical_date),
                        },
                        params={"run_id": plan.run_id, "logical_date": str(plan.logical_date), **self.config.as_dict()},
                    )
                )
                self._save()  # siblings (and this stage's own kernel) find the parent in the manifest
        return self._tracker

    def _start_tracking(self) -> None:
        """Create (or find) MLflow's parent run while the first stage's kernel starts.

        Stages wait for it before executing, so nothing nests under a parent that does not
        exist yet; if it cannot be created (or SIGTERM gives up waiting for MLflow), the run
        stops with one line and the waiting stages fail.
        """
        if self._tracking.is_set() or self._creating is not None:
            return
        uri = tracking_uri(self.config.tracking.uri, self.outputs)
        if not uri.startswith(("http://", "https://")) and self._existing_parent_run() is None:
            # A local store waits on no server, and only stages that nest runs under the parent
            # (the `tracking` section: train) need it: the others start while it is created
            # (on a new store, MLflow's import and migrations take seconds).
            creator = ThreadPoolExecutor(1, thread_name_prefix="mlflow-parent")
            self._creating = creator.submit(self._new_parent_run, uri)
            creator.shutdown(wait=False)
            return
        with self._settling_tracking():
            self._tracker_started()

    def _new_parent_run(self, uri: str) -> tuple[Any, str]:
        """A background thread: connect to a local store and create the parent run (no records written)."""
        from bentley.tracking import PipelineTracker

        plan, what = self.plan, f"MLflow at {display_uri(uri)}"
        tracker = wait_for(
            what, lambda: PipelineTracker(uri, self.config.tracking.experiment, self.outputs), remote=False
        )
        parent = wait_for(
            what,
            lambda: tracker.start_pipeline(
                plan.run_id,
                tags={"run_id": plan.run_id, "profile": plan.request.profile, "logical_date": str(plan.logical_date)},
                params={"run_id": plan.run_id, "logical_date": str(plan.logical_date), **self.config.as_dict()},
            ),
            remote=False,
        )
        return tracker, parent

    def _poll_tracking(self, block: bool = False) -> None:
        """Main thread: record the parent run created in the background once it exists (`block`: wait for it)."""
        creating = self._creating
        if creating is None or self._tracking.is_set() or (not block and not creating.done()):
            return
        with self._settling_tracking():
            tracker, parent = creating.result()
            with self._record:
                self._tracker = tracker
                self.manifest["mlflow"].update(experiment_id=tracker.experiment_id, parent_run_id=parent)
                self._save()  # this run's train kernel finds the parent in the manifest

    @contextlib.contextmanager
    def _settling_tracking(self) -> Iterator[None]:
        """Around the step that makes the parent run exist: a service that failed stops the run
        with its one line, anything else marks tracking failed and propagates; either way the
        stages waiting on tracking are released."""
        try:
            yield
        except (ServiceFailed, Interrupted) as exc:
            self._stop_tracking(exc)
        except BaseException:
            self._tracking_failed = True
            self.stop.set()
            raise
        finally:
            self._tracking.set()

    def _stop_tracking(self, exc: ServiceFailed | Interrupted) -> None:
        """MLflow failed, or a stop request gave up waiting for it: nothing executes or is logged to it from now on."""
        if self._mlflow_error is not None:
            return  # said once already
        self._tracking_failed = True
        self._mlflow_error = str(exc)
        self.stop.set()
        self.console.print(
            f"[red]✘[/] {escape(self._mlflow_error)} (MLFLOW_TRACKING_URI or tracking.uri); the run stops"
        )

    def _mlflow(self, call: Callable[[], T]) -> T:
        """An MLflow call from the main thread: bounded by the client's timeouts, a failure is one line
        (`ServiceFailed`), and SIGTERM abandons a wait on a tracking server (`runner.infra.wait_for`)."""
        uri = tracking_uri(self.config.tracking.uri, self.outputs)
        return wait_for(f"MLflow at {display_uri(uri)}", call, remote=uri.startswith(("http://", "https://")))

    def _existing_parent_run(self) -> str | None:
        if self.orchestrated:
            path = self.plan.run_dir / "manifest.json"
            return (read_json(path) if path.is_file() else {}).get("mlflow", {}).get("parent_run_id")
        return self.manifest["mlflow"].get("parent_run_id") if self.plan.resumed else None

    def _settle_stage(self, stage: Stage, result: _Attempted) -> str | None:
        """What downstream stages need at once: the cache entry (its fingerprint) on success, and the
        outcome on the terminal. `_record_stage` logs it to MLflow and the records right after the
        next stages have started."""
        from bentley.stage import read_results

        attempt = result.attempt
        if attempt.status == "success":
            self._learn_imports(stage)
            fingerprint = self._store_entry(stage, read_results(self.plan.run_dir, stage.name))
            parts = " · ".join(
                f"{part} {attempt.breakdown[part]:.1f}"
                for part in ("import", "compute", "charts", "report")
                if part in attempt.breakdown
            )
            self.console.print(
                f"[green]✔[/] {stage.name} {attempt.duration_s:.1f} s "
                f"(cells {attempt.cell_time_s:.1f} s, overhead {attempt.overhead_s:.1f} s{'; ' + parts if parts else ''})"
            )
            return fingerprint
        self.manifest["stages"][stage.name].pop("_key", None)
        self.console.print(
            f"[red]✘ {stage.name} failed[/] after {attempt.duration_s:.1f} s: {escape(str(attempt.error))}"
        )
        self.console.print(f"  notebook: {escape(str(result.notebook))}")
        return None

    def _record_stage(self, stage: Stage, attempt_no: int, result: _Attempted) -> None:
        """Log the final attempt to MLflow and the ledger (main thread)."""
        from bentley.stage import read_results

        plan = self.plan
        attempt = result.attempt
        result.rendered()
        if result.report_error:
            self.console.print(f"[yellow]![/] {stage.name}: HTML report failed: {escape(str(result.report_error))}")
        results = read_results(plan.run_dir, stage.name)
        mlflow_run = None
        if self._mlflow_error is None:  # after MLflow failed, stages are recorded without it
            try:
                tracker = self._tracker_started()
                mlflow_run = self._mlflow(
                    lambda: tracker.log_stage(
                        stage.name,
                        status=attempt.status,
                        start_ms=int(attempt.started_at.timestamp() * 1000),
                        end_ms=int(attempt.ended_at.timestamp() * 1000),
                        params={
                            "run_id": plan.run_id,
                            "logical_date": str(plan.logical_date),
                            "profile": plan.request.profile,
                            **{name: self.config.section(name) for name in stage.sections},
                        },
                        metrics={
                            **results.get("metrics", {}),
                            "duration_s": attempt.duration_s,
                            "overhead_s": attempt.overhead_s,
                            "attempts": attempt_no,
                            **{f"time_{part}_s": seconds for part, seconds in attempt.breakdown.items()},
                        },
                        tags={"run_id": plan.run_id, "status": attempt.status},
                        artifacts=[p for p in (result.notebook, result.report) if p]
                        + list(map(Path, results.get("artifacts", []))),
                    )
                )
            except (ServiceFailed, Interrupted) as exc:
                self._stop_tracking(exc)
        self._record_attempt(stage, attempt_no, result, mlflow_run)

    def _write_log(self) -> None:
        """The terminal lines of this run, kept as `outputs/logs/<run_id>.log` (retention prunes).

        Each task of an orchestrated run appends its own lines.
        """
        log = self.outputs / "logs" / f"{self.plan.run_id}.log"
        text = self.console.export_text(clear=False)
        with self._record:
            if self.orchestrated and log.is_file():
                text = log.read_text(encoding="utf-8") + text
            atomic_write_text(log, text)

    def _parameters(self, stage: Stage) -> dict[str, Any]:
        """What papermill injects: identity, paths and the stage's params sections (no secrets)."""
        plan = self.plan
        values: dict[str, Any] = {
            "run_id": plan.run_id,
            "logical_date": plan.logical_date.isoformat(),
            "outputs_dir": str(self.outputs),
            "profile": plan.request.profile,
        }
        values.update({name: self.config.section(name) for name in stage.sections})
        return values

    def _mark_running(self, stage: Stage, reason: str, key: cache.StageKey) -> None:
        self.manifest["stages"][stage.name] = {
            "status": "running",
            "reason": reason,
            "notebook": None,
            "report": None,
            "_key": key,
        }
        self._dirty = True

    def _record_attempt(
        self, stage: Stage, attempt_no: int, result: _Attempted, mlflow_run: str | None, *, retrying: bool = False
    ) -> None:
        if self.lost.is_set():
            return
        run_dir = self.plan.run_dir
        attempt, notebook, report = result.attempt, result.notebook, result.report
        entry = self.manifest["stages"][stage.name]
        entry.update(
            {
                "status": "retrying" if retrying else attempt.status,
                "attempts": attempt_no,
                "started_at": attempt.started_at.isoformat(),
                "ended_at": attempt.ended_at.isoformat(),
                "duration_s": round(attempt.duration_s, 3),
                "cell_time_s": round(attempt.cell_time_s, 3),
                "overhead_s": round(attempt.overhead_s, 3),
                # Wall seconds by part: kernel wait, import, compute, charts, report (in cells + HTML), other;
                # and `cpu`, the CPU seconds the kernel used inside cells (a busy machine's share aside).
                "breakdown": attempt.breakdown,
                "warm_up": attempt.warm_up,  # the kernel's imports before the stage: seconds, modules, ahead of it
                "notebook": str(notebook.relative_to(run_dir)) if notebook.is_file() else None,
                "report": str(report.relative_to(run_dir)) if report and report.is_file() else None,
                "mlflow_run_id": mlflow_run,
                "error": attempt.error,
            }
        )
        self.warehouse.upsert(
            "stage_runs",
            _frame(
                [
                    {
                        "run_id": self.plan.run_id,
                        "stage": stage.name,
                        "attempt": attempt_no,
                        "status": attempt.status,
                        "started_at": attempt.started_at,
                        "ended_at": attempt.ended_at,
                        "duration_s": attempt.duration_s,
                        "cell_time_s": attempt.cell_time_s,
                        "notebook_path": str(notebook) if notebook.is_file() else None,
                        "report_path": str(report) if report and report.is_file() else None,
                        "mlflow_run_id": mlflow_run,
                        "error": attempt.error,
                    }
                ]
            ),
        )
        self._save()

    def _mark_skipped(self, stage: Stage, reason: str) -> None:
        self._mark_not_run(stage, "skipped", reason, None)
        self.console.print(f"[yellow]↷[/] {stage.name} skipped: {escape(reason)}")

    def _mark_cached(self, stage: Stage, reason: str, entry: cache.CacheEntry) -> None:
        self._mark_not_run(stage, "cached", reason, entry.run_id)
        self.console.print(f"[dim]=[/] {stage.name} {escape(reason)}")

    def _mark_not_run(self, stage: Stage, status: str, reason: str, from_run: str | None) -> None:
        if self.lost.is_set():
            return
        entry: dict[str, Any] = {"status": status, "reason": reason, "notebook": None, "report": None}
        if from_run:
            # The report that produced the reused results, relative to this run's folder.
            previous = self.outputs / "runs" / from_run / "reports" / f"{stage.name}.html"
            entry.update(
                from_run=from_run, report=f"../{from_run}/reports/{stage.name}.html" if previous.is_file() else None
            )
        self.manifest["stages"][stage.name] = entry
        now = _now()
        self.warehouse.upsert(
            "stage_runs",
            _frame(
                [
                    {
                        "run_id": self.plan.run_id,
                        "stage": stage.name,
                        "attempt": 1,
                        "status": status,
                        "started_at": now,
                        "ended_at": now,
                        "duration_s": 0.0,
                        "cell_time_s": 0.0,
                        "error": None if status == "cached" else reason,
                    }
                ]
            ),
        )
        self._dirty = True

    def _flush(self) -> None:
        if self._dirty:
            self._save()

    def _initial_manifest(self) -> dict[str, Any]:
        """A new manifest, or the existing one when a run id is reused or resumed.

        An orchestrated run lists every stage of the pipeline from its first task on, so the
        run reads as `running` with its pending stages until `runner finish` concludes it.
        """
        plan = self.plan
        path = plan.run_dir / "manifest.json"
        with self._record:
            manifest: dict[str, Any] = read_json(path) if path.is_file() else {"stages": {}}
        if self.orchestrated:
            for stage in plan.dag:
                manifest["stages"].setdefault(stage.name, {"status": "pending", "notebook": None, "report": None})
        sha, dirty = _git_state(plan.request.root)
        uri = tracking_uri(self.config.tracking.uri, self.outputs)
        request = plan.request
        manifest.update(
            run_id=plan.run_id,
            profile=request.profile,
            overrides=list(request.overrides),
            pipeline_file=str(request.pipeline_file) if request.pipeline_file else None,
            logical_date=plan.logical_date.isoformat(),
            params_hash=self.config.params_hash(),
            git_sha=sha,
            git_dirty=dirty,
            outputs=str(self.outputs),
            force=request.force,
            max_workers=self.max_workers,
            orchestrated=self.orchestrated,
        )
        mlflow = manifest.setdefault("mlflow", {})
        mlflow.update(tracking_uri=display_uri(uri), experiment=self.config.tracking.experiment)
        mlflow.setdefault("experiment_id", None)
        mlflow.setdefault("parent_run_id", None)
        if plan.resumed:
            manifest.setdefault("resumes", []).append(_now().isoformat())
        manifest.setdefault("started_at", None)
        manifest.pop("lease_lost", None)
        for stage in plan.stages:
            manifest["stages"][stage.name] = {"status": "pending", "notebook": None, "report": None}
        return manifest

    def _save(self) -> None:
        """Manifest, ledger row and index pages, all brought up to date together."""
        if self.lost.is_set():
            return
        plan = self.plan
        stored = {
            **self.manifest,
            "stages": {
                name: {k: v for k, v in stage.items() if not k.startswith("_")}
                for name, stage in self.manifest["stages"].items()
            },
        }
        with self._record:
            m = self._merged(stored) if self.orchestrated else stored
            atomic_write_json(plan.run_dir / "manifest.json", m)
            self.warehouse.upsert(
                "pipeline_runs",
                _frame(
                    [
                        {
                            "run_id": plan.run_id,
                            "profile": m["profile"],
                            "logical_date": plan.logical_date,
                            "status": m.get("status"),
                            "params_hash": m["params_hash"],
                            "git_sha": m["git_sha"],
                            "started_at": m.get("started_at"),
                            "ended_at": m.get("ended_at"),
                            "duration_s": m.get("duration_s"),
                            "mlflow_run_id": m["mlflow"].get("parent_run_id"),
                        }
                    ]
                ),
            )
            reporting.write_index_pages(self.outputs, m, all_manifests(self.outputs))
        self._dirty = False

    def _merged(self, ours: dict[str, Any]) -> dict[str, Any]:
        """The manifest on disk with this task's stages and run fields laid over it (the record lock is held)."""
        path = self.plan.run_dir / "manifest.json"
        disk: dict[str, Any] = read_json(path) if path.is_file() else {"stages": {}, "mlflow": {}}
        merged = {**disk, **{k: v for k, v in ours.items() if k not in ("stages", "mlflow", "started_at")}}
        merged["started_at"] = disk.get("started_at") or ours.get("started_at")
        merged["mlflow"] = {**disk.get("mlflow", {}), **{k: v for k, v in ours["mlflow"].items() if v is not None}}
        stages = {**ours["stages"], **disk.get("stages", {})}  # the disk wins for others' stages...
        stages.update({name: ours["stages"][name] for name in self._owned if name in ours["stages"]})  # ...not ours
        ordered = {s.name: stages.pop(s.name) for s in self.plan.dag if s.name in stages}  # in DAG order
        merged["stages"] = {**ordered, **stages}
        return merged

    @property
    def _owned(self) -> list[str]:
        """The stages whose entries this process writes: its own, or all of them when concluding."""
        return [s.name for s in (self.plan.stages or self.plan.dag)]

    def _record_unstarted(self) -> None:
        """`finish`: say what became of the stages no task of the run recorded."""
        stages = self.manifest["stages"]
        for stage in self.plan.dag:
            status = stages.get(stage.name, {}).get("status", "pending")
            if status == "pending":
                blocked = [u for u in stage.upstream if stages.get(u, {}).get("status") not in DONE]
                reason = (
                    f"upstream {', '.join(blocked)} did not succeed"
                    if blocked
                    else "not started: the orchestrator did not run this stage"
                )
                self._mark_skipped(stage, reason)
            elif status in ("running", "retrying"):
                reason = "its task ended without recording a result (killed by the orchestrator?)"
                self._mark_not_run(stage, "failed", reason, None)
                self.manifest["stages"][stage.name]["error"] = reason
                self.console.print(f"[red]✘ {stage.name} failed[/]: {escape(reason)}")

    def _already_finished(self) -> bool:
        done = self.warehouse.read("pipeline_runs", where={"run_id": self.plan.run_id})
        return not done.empty and done["status"].iloc[0] in RUN_FINISHED

    def _mark_crashed(self, run_id: str) -> None:
        """The run whose lapsed lease we took: it died mid-way. Say so in its ledger and manifest.

        Model versions it registered while `train` was still running are tagged crashed, so
        they never predict or become champion; a resume that trains the same model reuses them.
        """
        path = self.outputs / "runs" / run_id / "manifest.json"
        if path.is_file():
            manifest = read_json(path)
            if manifest.get("stages", {}).get("train", {}).get("status") in ("running", "retrying"):
                self._mark_crashed_versions(run_id)
            if manifest.get("status") == "running":
                manifest["status"] = "crashed"
                for stage in manifest["stages"].values():
                    if stage["status"] in ("running", "retrying"):
                        stage.update(status="crashed", error="the runner stopped without finishing this stage")
                atomic_write_json(path, manifest)
        self.warehouse.update_where("pipeline_runs", {"run_id": run_id, "status": "running"}, status="crashed")
        self.console.print(
            f"[yellow]![/] run {run_id} held a lapsed lease: marked crashed "
            f"(`{escape(self.resume_command(run_id))}` finishes it)"
        )

    def _mark_crashed_versions(self, run_id: str) -> None:
        from bentley.models.registry import mark_crashed_versions
        from bentley.tracking import ModelStore

        uri = tracking_uri(self.config.tracking.uri, self.outputs)
        marked = self._mlflow(
            lambda: mark_crashed_versions(
                ModelStore(uri, self.config.tracking.experiment, self.outputs), self.config.ml.registered_model, run_id
            )
        )
        if marked:
            self.console.print(
                f"[yellow]![/] model version(s) {', '.join(marked)} of the crashed run {run_id} "
                "tagged crashed: never used for predictions"
            )

    def _active_alerts(self) -> list[dict[str, Any]]:
        """Alerts the monitor stage left active, for the index banner and the log."""
        frame = self.warehouse.read("alerts", where={"status": "active"})
        if frame.empty:
            return []
        frame = frame.sort_values(["severity", "first_seen_at"])
        return [
            {
                "rule": r.rule,
                "severity": r.severity,
                "scope": r.scope,
                "message": r.message,
                "since": str(r.first_seen_at)[:19],
            }
            for r in frame.itertuples()
        ]


class _Progress:
    """What running stages say while they work, on the terminal and in the log (main thread only).

    A stage writes lines with `StageContext.progress` to `stage_results/<stage>.progress`;
    the newest is printed when `EVERY_S` have passed since the stage's last line (fast stages
    print none), and a stage that said nothing for `QUIET_S` gets a line with its elapsed time
    and the cell it is at (from the kernel's sampler file, `runner.execute.cells_done`).
    `runner.progress: false` turns both off.
    """

    EVERY_S = 5.0
    QUIET_S = 30.0

    def __init__(self, console: Console, run_dir: Path, *, enabled: bool) -> None:
        self.console = console
        self.run_dir = run_dir
        self.enabled = enabled
        self.state: dict[str, dict[str, Any]] = {}

    def started(self, stage: Stage) -> None:
        now = time.monotonic()
        self.state[stage.name] = {"stage": stage, "since": now, "printed": now, "offset": 0, "latest": None}

    def finished(self, stage: Stage) -> None:
        self.state.pop(stage.name, None)

    def poll(self, running: Sequence[Stage]) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        for stage in running:
            state = self.state.get(stage.name)
            if state is None:
                continue
            self._read(stage, state)
            quiet = now - state["printed"]
            if state["latest"] and quiet >= self.EVERY_S:
                self._line(stage, state, now, escape(state["latest"]))
                state["latest"] = None
            elif quiet >= self.QUIET_S:
                self._line(stage, state, now, self._cell_text(stage))

    def _line(self, stage: Stage, state: dict[str, Any], now: float, text: str) -> None:
        self.console.print(f"[dim]·[/] {stage.name} {now - state['since']:.0f} s: {text}")
        state["printed"] = now

    def _read(self, stage: Stage, state: dict[str, Any]) -> None:
        from bentley.stage import progress_file

        try:
            with progress_file(self.run_dir, stage.name).open("rb") as handle:
                handle.seek(state["offset"])
                chunk = handle.read()
        except OSError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits for the next look
        state["offset"] += len(complete)
        lines = [line for line in complete.decode("utf-8", "replace").splitlines() if line.strip()]
        if lines:
            state["latest"] = lines[-1].partition("\t")[2] or lines[-1]

    def _cell_text(self, stage: Stage) -> str:
        from runner.execute import cells_done, code_cells

        done = cells_done(self.run_dir / "stage_results" / f"{stage.name}.timing.json")
        try:
            total = code_cells(stage.notebook)
        except (OSError, ValueError):
            return "running"
        return "running" if done is None else f"running cell {min(done + 1, total)} of {total}"


def _cold_kernels() -> bool:
    """`BENTLEY_COLD_KERNELS=1`: every kernel a new process that imports nothing before its notebook,
    as before issue 19 (what the cold/warm comparison test runs; a way out should warming misbehave)."""
    return os.environ.get("BENTLEY_COLD_KERNELS", "") == "1"


def _import_in_background(*modules: str) -> None:
    """Import modules on a daemon thread while the main thread goes on (a stage's worker that needs
    one first waits for that import instead of starting its own)."""
    import importlib

    def load() -> None:
        for name in modules:
            with contextlib.suppress(Exception):
                importlib.import_module(name)

    threading.Thread(target=load, name="preimport", daemon=True).start()


def backoff_delay(policy: RetryPolicy, attempt: int, rng: random.Random | None = None) -> float:
    """Capped exponential backoff with equal jitter: half fixed, half random."""
    capped = min(policy.backoff_max_s, policy.backoff_base_s * 2 ** (attempt - 1))
    return capped / 2 + (rng or random).uniform(0, capped / 2)


def all_manifests(outputs: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted((outputs / "runs").glob("*/manifest.json")):
        try:
            found.append(read_json(path))
        except (OSError, ValueError):
            continue  # a manifest being replaced right now; the next write lists it
    return found


def _frame(rows: list[dict[str, Any]]):  # a pandas DataFrame
    import pandas as pd

    return pd.DataFrame(rows)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _git_state(root: Path) -> tuple[str | None, bool]:
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None, False
    return sha or None, bool(status)
