"""One pipeline run: plan, lease, execute the DAG, the MLflow parent run, conclude.

The parts it is made of live beside it: the DAG loop (`runner.dag_loop`: scheduling, kernels,
retries), the run record (`runner.record`: manifest, ledger, index pages, log, the
orchestrated merge) and the cache store (`runner.cache.CacheStore`: `stage_cache`).

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
- transient failures are retried with capped exponential backoff and full jitter
  (`bentley.retry.Backoff`);
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
import os
import re
import secrets
import shlex
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.markup import escape

from bentley import calendar
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
from bentley.lake import atomic_write_json, orphaned_temp_files, read_json
from bentley.tracking import display_uri, tracking_uri
from bentley.warehouse import Warehouse
from runner.cache import CacheStore
from runner.dag import DagError, Stage, build_dag, check_notebooks, select
from runner.dag_loop import Attempted, DagLoop, read_memo
from runner.infra import (
    Interrupted,
    ServiceFailed,
    check_infrastructure,
    configured_timeout,
    describe,
    wait_for,
)
from runner.lease import PIPELINE_LEASE, LeaseKeeper, holder_alive, new_holder, run_holder
from runner.outcomes import EXIT_BUSY, EXIT_FAILED, EXIT_LEASE_LOST, EXIT_OK
from runner.outcomes import STAGE_DONE as DONE
from runner.preflight import check_run
from runner.record import IN_FLIGHT, RunRecord, all_manifests, git_state, in_flight, mark_crashed

T = TypeVar("T")
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_NOTEBOOK_PARAMETERS = "cache/notebook_parameters.json"


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
    if config.universe.tickers is None:  # asks the market source (bentley.sources, without pandera)
        from bentley.sources import with_resolved_universe

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
    known: dict[str, list[str]] = read_memo(memo_file)
    before = dict(known)
    check_notebooks(stages, request.root, known)
    return stages, dag, spec.retry, (known if known != before else None)


def _remember_parameters(request: RunRequest, known: dict[str, list[str]] | None) -> None:
    """Keep what papermill found in each notebook, once every check passed (nothing is written before)."""
    if known is not None:
        atomic_write_json(request.outputs / _NOTEBOOK_PARAMETERS, known)


def run_pipeline(request: RunRequest, console: Console, stop: threading.Event | None = None) -> int:
    """Plan and execute: the scheduler's entry point (ParamsError/DagError propagate)."""
    return PipelineRun(plan_run(request), console, stop).execute()


def new_run_id() -> str:
    """Sortable by start time, unique across machines: `20261130T120501Z-a1b2c3`."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def _default_logical_date(config: Config) -> dt.date:
    """The latest session that has closed: the only place a run looks at the clock."""
    return calendar.latest_closed_session(dt.datetime.now(dt.UTC), config.workflow.calendar)


class PipelineRun:
    """One run's life around its DAG loop: the lease, the MLflow parent run, the conclusion.

    What it is made of: the run record (`runner.record.RunRecord`: manifest, ledger, index,
    log), the cache store (`runner.cache.CacheStore`) and the DAG loop (`runner.dag_loop`).
    """

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
        self.max_workers = self.config.runner.max_workers or os.cpu_count() or 1
        self.record = RunRecord(
            self.warehouse,
            self.outputs,
            plan.run_id,
            order=[s.name for s in plan.dag],
            # The stages whose entries this process writes: its own, or all of them when concluding.
            owned=[s.name for s in (plan.stages or plan.dag)],
            orchestrated=self.orchestrated,
            lost=self.lost,
        )
        self.cache = CacheStore(self.warehouse, self.outputs)
        self.loop = DagLoop(self)
        self._tracker: Any = None
        self._tracking = threading.Event()  # set once MLflow's parent run exists (or could not be created)
        self._tracking_failed = False
        self._creating: Future[Any] | None = None  # a local store's parent run, created in the background
        self._mlflow_error: str | None = None  # MLflow failed mid-run (or SIGTERM gave up on it): no more calls

    @property
    def manifest(self) -> dict[str, Any]:
        return self.record.manifest

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
            if plan.request.skip_if_done and self.record.finished():
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
        grant = self._acquire_lease()
        try:
            with self.record.lock:
                self.record.load()
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

    def _on_lease_lost(self, reason: str) -> None:
        """The heartbeat thread: someone else owns the run now. Stop writing, kill our kernels."""
        self.manifest["lease_lost"] = reason
        self.lost.set()
        self.stop.set()
        self.loop.kill_kernels()

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
        self._open_record()
        if not (plan.run_dir / "params.json").is_file():
            atomic_write_json(plan.run_dir / "params.json", self.config.as_dict())
        self.manifest.update(
            status="running", started_at=self.manifest.get("started_at") or _now().isoformat(), ended_at=None
        )
        self.record.save()
        verb = "resuming" if plan.resumed else "run"
        self.console.print(
            f"{verb} [bold]{plan.run_id}[/] · logical date {plan.logical_date} · profile {plan.request.profile} "
            f"· {len(plan.stages)} stage(s) · {self.max_workers} worker(s) · warehouse {escape(self.warehouse.display_url)}"
        )
        if plan.resumed:
            self.console.print(escape(self._reused_text()))
        self.loop.run_stages()
        if self.lost.is_set():
            self.console.print(
                f"[red]lease lost:[/] {escape(str(self.manifest.get('lease_lost')))}; stopped without writing"
            )
            self._write_log()
            return EXIT_LEASE_LOST
        if self.orchestrated:
            return self._task_done()
        return self._conclude()

    def _open_record(self) -> None:
        """The run's manifest: new, or the existing one when a run id is reused or resumed."""
        plan, request = self.plan, self.plan.request
        sha, dirty = git_state(request.root)
        uri = tracking_uri(self.config.tracking.uri, self.outputs)
        self.record.open(
            {
                "run_id": plan.run_id,
                "profile": request.profile,
                "overrides": list(request.overrides),
                "pipeline_file": str(request.pipeline_file) if request.pipeline_file else None,
                "logical_date": plan.logical_date.isoformat(),
                "params_hash": self.config.params_hash(),
                "git_sha": sha,
                "git_dirty": dirty,
                "outputs": str(self.outputs),
                "force": request.force,
                "max_workers": self.max_workers,
                "orchestrated": self.orchestrated,
            },
            {"tracking_uri": display_uri(uri), "experiment": self.config.tracking.experiment},
            [stage.name for stage in plan.stages],
            resumed=plan.resumed,
        )

    def _task_done(self) -> int:
        """An orchestrated task's end: its stages are recorded; the run stays open for its siblings."""
        self.record.save()
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
        self.record.save()
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

    def parameters(self, stage: Stage) -> dict[str, Any]:
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

    def mark_skipped(self, stage: str, reason: str) -> None:
        self.record.not_run(stage, "skipped", reason)
        self.console.print(f"[yellow]↷[/] {stage} skipped: {escape(reason)}")

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
                self.mark_skipped(stage.name, reason)
            elif status in IN_FLIGHT:
                reason = "its task ended without recording a result (killed by the orchestrator?)"
                self.record.not_run(stage.name, "failed", reason)
                self.manifest["stages"][stage.name]["error"] = reason
                self.console.print(f"[red]✘ {stage.name} failed[/]: {escape(reason)}")

    def _write_log(self) -> None:
        self.record.write_log(self.console.export_text(clear=False))

    def _mark_crashed(self, run_id: str) -> None:
        """The run whose lapsed lease we took: it died mid-way. Say so in its ledger and manifest.

        Model versions it registered while `train` was still running are tagged crashed, so
        they never predict or become champion; a resume that trains the same model reuses them.
        """
        if in_flight(self.outputs, run_id, "train"):
            self._mark_crashed_versions(run_id)
        mark_crashed(self.warehouse, self.outputs, run_id)
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

    # ------------------------------------------------------------------ MLflow

    def _tracker_started(self) -> Any:
        """MLflow's parent run, created when the first stage executes (a run of cached stages logs nothing).

        A resumed run, or a task of an orchestrated run whose sibling got there first, reuses
        the parent run its manifest names.
        """
        if self._tracker is None and self._creating is not None:
            self.poll_tracking(block=True)
            if self._tracker is None:
                raise ServiceFailed(self._mlflow_error or "MLflow's parent run was not created")
        if self._tracker is None:
            from bentley.tracking import PipelineTracker

            plan = self.plan
            uri = tracking_uri(self.config.tracking.uri, self.outputs)
            with self.record.lock:
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
                self.record.save()  # siblings (and this stage's own kernel) find the parent in the manifest
        return self._tracker

    def start_tracking(self) -> None:
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

    def parent_pending(self) -> bool:
        """The parent run is being created in the background right now (recording a stage waits for it)."""
        return self._creating is not None and not self._creating.done()

    def wait_for_parent(self, stage: Stage) -> None:
        """Worker thread: wait for the parent run when `stage` may nest runs under it (its `tracking`
        section), or when it is created synchronously (a tracking server, a resumed run)."""
        if self._creating is None or "tracking" in stage.sections:
            self._tracking.wait()

    def cannot_start(self) -> str | None:
        """Worker thread: why a stage whose kernel is ready must not execute (a lost lease, MLflow failed)."""
        if self.lost.is_set():
            return "lease lost"
        if self._tracking_failed:
            return f"not started: {self._mlflow_error or 'MLflow tracking failed'}"
        return None

    def release_tracking(self) -> None:
        """The DAG loop's end: a parent run created in the background is recorded, and nothing waits
        for one any more (a stage that would need it fails instead)."""
        with contextlib.suppress(Exception):
            self.poll_tracking(block=True)
        self._tracking.set()
        if self._tracker is None:
            self._tracking_failed = True

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

    def poll_tracking(self, block: bool = False) -> None:
        """Main thread: record the parent run created in the background once it exists (`block`: wait for it)."""
        creating = self._creating
        if creating is None or self._tracking.is_set() or (not block and not creating.done()):
            return
        with self._settling_tracking():
            tracker, parent = creating.result()
            with self.record.lock:
                self._tracker = tracker
                self.manifest["mlflow"].update(experiment_id=tracker.experiment_id, parent_run_id=parent)
                self.record.save()  # this run's train kernel finds the parent in the manifest

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

    def log_stage(self, stage: Stage, attempt_no: int, result: Attempted) -> str | None:
        """A stage's final attempt as a run nested under the parent (main thread); its MLflow run id,
        or None once MLflow failed (stages are then recorded without it)."""
        from bentley.stage import read_results

        if self._mlflow_error is not None:
            return None
        plan, attempt = self.plan, result.attempt
        results = read_results(plan.run_dir, stage.name)
        try:
            tracker = self._tracker_started()
            return self._mlflow(
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
            return None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
