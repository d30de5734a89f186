"""One pipeline run: plan, execute stages in order, record everything, render the index.

The order of side effects is deliberate: all checks (params, DAG, notebook parameters,
data window) happen before the run folder exists, so a bad invocation leaves nothing
behind. After each stage the manifest, the warehouse ledger, MLflow and the index pages
are brought up to date, so a crash mid-run still leaves a readable record.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from bentley import calendar, reporting
from bentley.config import PARAMS_DIR, PIPELINE_FILE, Config, load_config, load_pipeline
from bentley.lake import atomic_write_json, atomic_write_text, read_json
from bentley.stage import read_results
from bentley.tracking import PipelineTracker, display_uri, tracking_uri
from bentley.warehouse import Warehouse
from runner.dag import DagError, Stage, build_dag, check_notebooks, select
from runner.execute import Attempt, execute_stage, resolve_kernel

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


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


@dataclass
class Plan:
    """Everything checked and resolved before the first side effect."""

    request: RunRequest
    config: Config
    stages: list[Stage]
    run_id: str
    logical_date: dt.date
    run_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.run_dir = self.request.outputs / "runs" / self.run_id


def plan_run(request: RunRequest) -> Plan:
    """Validate params, DAG, notebooks and window; raise ParamsError/DagError on any problem."""
    config = load_config(request.profile, request.overrides, request.root)
    pipeline_file = request.pipeline_file or request.root / PARAMS_DIR / PIPELINE_FILE
    dag = build_dag(
        load_pipeline(pipeline_file), request.root, config.workflow.max_execution_time_minutes, str(pipeline_file)
    )
    stages = select(dag, request.stages, request.start, request.stop)
    check_notebooks(stages, request.root)
    logical_date = request.logical_date or _default_logical_date(config)
    config.history.window(logical_date)  # a window that reads the future fails here
    run_id = request.run_id or new_run_id()
    if not RUN_ID_PATTERN.match(run_id):
        raise DagError(f"run id {run_id!r} must be 1-64 letters, digits, '.', '_' or '-'")
    return Plan(request=request, config=config, stages=stages, run_id=run_id, logical_date=logical_date)


def new_run_id() -> str:
    """Sortable by start time, unique across machines: `20261130T120501Z-a1b2c3`."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def _default_logical_date(config: Config) -> dt.date:
    """The latest session that has closed: the only place a run looks at the clock."""
    return calendar.latest_closed_session(dt.datetime.now(dt.UTC), config.workflow.calendar)


class PipelineRun:
    """Executes a plan and keeps manifest, ledger, MLflow and index pages in step."""

    def __init__(self, plan: Plan, console: Console) -> None:
        self.plan = plan
        self.console = console
        self.config = plan.config
        self.outputs = plan.request.outputs
        self.warehouse = Warehouse.from_settings(self.config.warehouse.url, self.outputs)
        uri = tracking_uri(self.config.tracking.uri, self.outputs)
        self.tracker = PipelineTracker(uri, self.config.tracking.experiment, self.outputs)
        self.manifest = self._initial_manifest(display_uri(uri))

    # ------------------------------------------------------------------ lifecycle

    def execute(self) -> int:
        plan = self.plan
        started = _now()
        self.manifest.update(status="running", started_at=self.manifest.get("started_at") or started.isoformat())
        parent = self.tracker.start_pipeline(
            plan.run_id,
            tags={"run_id": plan.run_id, "profile": plan.request.profile, "logical_date": str(plan.logical_date)},
            params={"run_id": plan.run_id, "logical_date": str(plan.logical_date), **self.config.as_dict()},
        )
        self.manifest["mlflow"]["parent_run_id"] = parent
        self._save()
        self.console.print(
            f"run [bold]{plan.run_id}[/] · logical date {plan.logical_date} · profile {plan.request.profile} "
            f"· {len(plan.stages)} stage(s) · warehouse {self.warehouse.display_url}"
        )
        kernel_name = resolve_kernel(self.config.runner.kernel)
        blocked: set[str] = set()
        for stage in plan.stages:
            if blocked & set(stage.upstream):
                blocked.add(stage.name)
                self._mark_skipped(stage)
                continue
            if not self._run_stage(stage, kernel_name):
                blocked.add(stage.name)
        ended = _now()
        failed = any(s["status"] == "failed" for s in self.manifest["stages"].values())
        self.manifest.update(
            status="failed" if failed else "success",
            ended_at=ended.isoformat(),
            duration_s=(ended - dt.datetime.fromisoformat(self.manifest["started_at"])).total_seconds(),
        )
        self._save()
        self.tracker.finish_pipeline(
            self.manifest["status"],
            metrics={"duration_s": self.manifest["duration_s"]},
            artifacts=[plan.run_dir / "manifest.json", plan.run_dir / "index.html"],
        )
        self.warehouse.dispose()
        index = plan.run_dir / "index.html"
        colour = "red" if failed else "green"
        self.console.print(
            f"[{colour}]{self.manifest['status']}[/] in {self.manifest['duration_s']:.1f} s · report {index}"
        )
        self._write_log()
        return 1 if failed else 0

    def _run_stage(self, stage: Stage, kernel_name: str) -> bool:
        plan = self.plan
        notebook_out = plan.run_dir / "notebooks" / f"{stage.name}.ipynb"
        report = plan.run_dir / "reports" / f"{stage.name}.html"
        parameters = self._parameters(stage)
        attempt_no = 0
        self.manifest["stages"][stage.name] = {"status": "running", "notebook": None, "report": None}
        self._save()
        while True:
            attempt_no += 1
            self.console.print(f"[blue]▶[/] {stage.name} started" + (f" (attempt {attempt_no})" if attempt_no > 1 else ""))
            attempt = execute_stage(stage, notebook_out, parameters, kernel_name=kernel_name, cwd=stage.notebook.parent)
            if attempt.status == "success" or not attempt.transient or attempt_no > stage.retries:
                break
            self._record_attempt(stage, attempt_no, attempt, notebook_out, None, None)
            self.console.print(f"[yellow]↻[/] {stage.name} {attempt.error}; retrying")
        if notebook_out.is_file():
            try:
                reporting.export_html(notebook_out, report)
            except Exception as exc:  # noqa: BLE001 - a broken report must not hide the stage outcome
                self.console.print(f"[yellow]![/] {stage.name}: HTML report failed: {exc}")
        results = read_results(plan.run_dir, stage.name)
        mlflow_run = self.tracker.log_stage(
            stage.name,
            status=attempt.status,
            start_ms=int(attempt.started_at.timestamp() * 1000),
            end_ms=int(attempt.ended_at.timestamp() * 1000),
            params={"run_id": plan.run_id, "logical_date": str(plan.logical_date), "profile": plan.request.profile,
                    **{name: self.config.section(name) for name in stage.sections}},
            metrics={**results.get("metrics", {}), "duration_s": attempt.duration_s,
                     "overhead_s": attempt.overhead_s, "attempts": attempt_no},
            tags={"run_id": plan.run_id, "status": attempt.status},
            artifacts=[notebook_out, report, *map(Path, results.get("artifacts", []))],
        )
        self._record_attempt(stage, attempt_no, attempt, notebook_out, report, mlflow_run)
        if attempt.status == "success":
            self.console.print(
                f"[green]✔[/] {stage.name} {attempt.duration_s:.1f} s "
                f"(cells {attempt.cell_time_s:.1f} s, overhead {attempt.overhead_s:.1f} s)"
            )
            return True
        self.console.print(f"[red]✘ {stage.name} failed[/] after {attempt.duration_s:.1f} s: {attempt.error}")
        self.console.print(f"  notebook: {notebook_out}")
        return False

    # ------------------------------------------------------------------ records

    def _write_log(self) -> None:
        """The terminal lines of this run, kept as `outputs/logs/<run_id>.log` (retention prunes)."""
        log = self.outputs / "logs" / f"{self.plan.run_id}.log"
        atomic_write_text(log, self.console.export_text(clear=False))

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

    def _record_attempt(
        self, stage: Stage, attempt_no: int, attempt: Attempt, notebook: Path, report: Path | None,
        mlflow_run: str | None,
    ) -> None:
        run_dir = self.plan.run_dir
        entry = {
            "status": attempt.status,
            "attempts": attempt_no,
            "started_at": attempt.started_at.isoformat(),
            "ended_at": attempt.ended_at.isoformat(),
            "duration_s": round(attempt.duration_s, 3),
            "cell_time_s": round(attempt.cell_time_s, 3),
            "overhead_s": round(attempt.overhead_s, 3),
            "notebook": str(notebook.relative_to(run_dir)) if notebook.is_file() else None,
            "report": str(report.relative_to(run_dir)) if report and report.is_file() else None,
            "mlflow_run_id": mlflow_run,
            "error": attempt.error,
        }
        self.manifest["stages"][stage.name] = entry
        self.warehouse.upsert(
            "stage_runs",
            _frame([{
                "run_id": self.plan.run_id, "stage": stage.name, "attempt": attempt_no,
                "status": attempt.status, "started_at": attempt.started_at, "ended_at": attempt.ended_at,
                "duration_s": attempt.duration_s, "cell_time_s": attempt.cell_time_s,
                "notebook_path": str(notebook) if notebook.is_file() else None,
                "report_path": str(report) if report and report.is_file() else None,
                "mlflow_run_id": mlflow_run, "error": attempt.error,
            }]),
        )
        self._save()

    def _mark_skipped(self, stage: Stage) -> None:
        self.manifest["stages"][stage.name] = {
            "status": "skipped", "error": "an upstream stage failed", "notebook": None, "report": None,
        }
        now = _now()
        self.warehouse.upsert(
            "stage_runs",
            _frame([{"run_id": self.plan.run_id, "stage": stage.name, "attempt": 1, "status": "skipped",
                     "started_at": now, "ended_at": now, "duration_s": 0.0, "cell_time_s": 0.0,
                     "error": "an upstream stage failed"}]),
        )
        self.console.print(f"[yellow]↷[/] {stage.name} skipped: an upstream stage failed")
        self._save()

    def _initial_manifest(self, tracking: str) -> dict[str, Any]:
        """A new manifest, or the existing one when a run id is reused (stage by stage runs)."""
        plan = self.plan
        path = plan.run_dir / "manifest.json"
        manifest: dict[str, Any] = read_json(path) if path.is_file() else {"stages": {}}
        sha, dirty = _git_state(plan.request.root)
        manifest.update(
            run_id=plan.run_id,
            profile=plan.request.profile,
            logical_date=plan.logical_date.isoformat(),
            params_hash=self.config.params_hash(),
            git_sha=sha,
            git_dirty=dirty,
            outputs=str(self.outputs),
            mlflow={"tracking_uri": tracking, "experiment_id": self.tracker.experiment_id,
                    "experiment": self.config.tracking.experiment},
        )
        manifest.setdefault("started_at", None)
        for stage in plan.stages:
            manifest["stages"][stage.name] = {"status": "pending", "notebook": None, "report": None}
        return manifest

    def _save(self) -> None:
        """Manifest, ledger row and index pages, all brought up to date together."""
        plan = self.plan
        atomic_write_json(plan.run_dir / "manifest.json", self.manifest)
        m = self.manifest
        self.warehouse.upsert(
            "pipeline_runs",
            _frame([{
                "run_id": plan.run_id, "profile": m["profile"], "logical_date": plan.logical_date,
                "status": m.get("status"), "params_hash": m["params_hash"], "git_sha": m["git_sha"],
                "started_at": m.get("started_at"), "ended_at": m.get("ended_at"),
                "duration_s": m.get("duration_s"), "mlflow_run_id": m["mlflow"].get("parent_run_id"),
            }]),
        )
        reporting.write_index_pages(self.outputs, m, all_manifests(self.outputs))


def all_manifests(outputs: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted((outputs / "runs").glob("*/manifest.json")):
        try:
            found.append(read_json(path))
        except (OSError, ValueError):
            continue  # a manifest being replaced right now; the next write lists it
    return found


def _frame(rows: list[dict[str, Any]]):  # noqa: ANN202 - a pandas DataFrame
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
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None, False
    return sha or None, bool(status)
