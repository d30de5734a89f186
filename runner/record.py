"""A run's record: `runs/<run_id>/manifest.json`, the ledger rows (`pipeline_runs`,
`stage_runs`), the run's and the home index pages, and `logs/<run_id>.log`.

They are brought up to date together, from the runner's main thread only, after every stage,
so a crash mid-run still leaves a readable record and `runner resume` can finish it.

An orchestrated run (`runner run --orchestrated`) has one record written by several task
processes, possibly on several machines: each reads the manifest on disk, lays its own stages
and run fields over it (`merge_manifests`) and writes it back, all under a short per-run mutex
in the warehouse (`runner.lease.RunRecordLock`), so concurrent tasks never lose an update.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import threading
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bentley.lake import atomic_write_json, atomic_write_text, read_json
from runner.lease import RunRecordLock
from runner.outcomes import RUN_FINISHED

if TYPE_CHECKING:
    from bentley.warehouse import Warehouse
    from runner.execute import Attempt

#: Statuses of a stage that was executing when its runner stopped.
IN_FLIGHT = ("running", "retrying")


def pending_entry() -> dict[str, Any]:
    """A stage's manifest entry before it runs."""
    return {"status": "pending", "notebook": None, "report": None}


class RunRecord:
    """One run's manifest, kept in memory and written with its ledger row and index pages.

    `owned` are the stages whose manifest entries this process writes (an orchestrated task's
    own stages, or all of them when `runner finish` concludes the run); `order` is the whole
    pipeline in DAG order, which the merged manifest keeps. Once `lost` is set (another runner
    took the lease) nothing is written any more.
    """

    def __init__(
        self,
        warehouse: Warehouse,
        outputs: Path,
        run_id: str,
        *,
        order: Iterable[str],
        owned: Iterable[str],
        orchestrated: bool = False,
        lost: threading.Event | None = None,
    ) -> None:
        self.warehouse = warehouse
        self.outputs = outputs
        self.run_id = run_id
        self.run_dir = outputs / "runs" / run_id
        self.order = list(order)
        self.owned = list(owned)
        self.orchestrated = orchestrated
        self.lost = lost or threading.Event()
        # Tasks of one orchestrated run write the same record: their read-merge-writes are serialised.
        self.lock: AbstractContextManager[Any] = RunRecordLock(warehouse, run_id) if orchestrated else nullcontext()
        self.manifest: dict[str, Any] = {}
        self.dirty = False  # an entry changed since the last save
        self._unsaved_stage_rows: list[dict[str, Any]] = []  # not_run's ledger rows, upserted by `save`

    @property
    def path(self) -> Path:
        return self.run_dir / "manifest.json"

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        return self.manifest["stages"]

    def open(
        self, fields: Mapping[str, Any], mlflow: Mapping[str, Any], pending: Iterable[str], *, resumed: bool
    ) -> None:
        """A new manifest, or the existing one when a run id is reused or resumed.

        `fields` are the run's own (identity, params hash, git state, ...); the `pending` stages
        start over. An orchestrated run lists every stage of the pipeline from its first task
        on, so the run reads as `running` with its pending stages until `runner finish`.
        """
        with self.lock:
            manifest: dict[str, Any] = read_json(self.path) if self.path.is_file() else {"stages": {}}
        if self.orchestrated:
            for name in self.order:
                manifest["stages"].setdefault(name, pending_entry())
        manifest.update(fields)
        tracking = manifest.setdefault("mlflow", {})
        tracking.update(mlflow)
        tracking.setdefault("experiment_id", None)
        tracking.setdefault("parent_run_id", None)
        if resumed:
            manifest.setdefault("resumes", []).append(_now().isoformat())
        manifest.setdefault("started_at", None)
        manifest.pop("lease_lost", None)
        for name in pending:
            manifest["stages"][name] = pending_entry()
        self.manifest = manifest

    def load(self) -> None:
        """The manifest as the run's tasks left it (`runner finish`; the lock is held)."""
        self.manifest = read_json(self.path)

    def save(self) -> None:
        """Manifest, ledger row and index pages, all brought up to date together."""
        if self.lost.is_set():
            return
        from bentley import reporting

        with self.lock:
            manifest = self.merged(self.manifest) if self.orchestrated else self.manifest
            atomic_write_json(self.path, manifest)
            if self._unsaved_stage_rows:
                import pandas as pd

                self.warehouse.upsert("stage_runs", pd.DataFrame(self._unsaved_stage_rows))
                self._unsaved_stage_rows = []
            self._upsert(
                "pipeline_runs",
                {
                    "run_id": self.run_id,
                    "profile": manifest["profile"],
                    "logical_date": dt.date.fromisoformat(manifest["logical_date"]),
                    "status": manifest.get("status"),
                    "params_hash": manifest["params_hash"],
                    "git_sha": manifest["git_sha"],
                    "started_at": manifest.get("started_at"),
                    "ended_at": manifest.get("ended_at"),
                    "duration_s": manifest.get("duration_s"),
                    "mlflow_run_id": manifest["mlflow"].get("parent_run_id"),
                },
            )
            reporting.write_index_pages(self.outputs, manifest, all_manifests(self.outputs))
        self.dirty = False

    def flush(self) -> None:
        """Save when an entry changed since the last save."""
        if self.dirty:
            self.save()

    def merged(self, ours: dict[str, Any]) -> dict[str, Any]:
        """The manifest on disk with this process's stages and run fields laid over it (the lock is held)."""
        disk: dict[str, Any] = read_json(self.path) if self.path.is_file() else {"stages": {}, "mlflow": {}}
        return merge_manifests(disk, ours, self.owned, self.order)

    def running(self, stage: str, reason: str) -> None:
        self.stages[stage] = {"status": "running", "reason": reason, "notebook": None, "report": None}
        self.dirty = True

    def attempt(
        self,
        stage: str,
        number: int,
        attempt: Attempt,
        notebook: Path,
        report: Path | None,
        mlflow_run: str | None,
        *,
        retrying: bool = False,
    ) -> None:
        """One attempt of a stage in the manifest and its `stage_runs` row, saved at once.

        The row's key is `(run_id, stage, attempt)`: a rerun of the same attempt number (an
        orchestrator's retried task, a resume) replaces its row, a retry adds one.
        """
        if self.lost.is_set():
            return
        notebook_kept = notebook.is_file()
        report_kept = report is not None and report.is_file()
        self.stages[stage].update(
            {
                "status": "retrying" if retrying else attempt.status,
                "attempts": number,
                "started_at": attempt.started_at.isoformat(),
                "ended_at": attempt.ended_at.isoformat(),
                "duration_s": round(attempt.duration_s, 3),
                "cell_time_s": round(attempt.cell_time_s, 3),
                "overhead_s": round(attempt.overhead_s, 3),
                # Wall seconds by part: kernel wait, import, compute, charts, report (in cells + HTML), other;
                # and `cpu`, the CPU seconds the kernel used inside cells (a busy machine's share aside).
                "breakdown": attempt.breakdown,
                "warm_up": attempt.warm_up,  # the kernel's imports before the stage: seconds, modules, ahead of it
                "notebook": str(notebook.relative_to(self.run_dir)) if notebook_kept else None,
                "report": str(report.relative_to(self.run_dir)) if report is not None and report_kept else None,
                "mlflow_run_id": mlflow_run,
                "error": attempt.error,
            }
        )
        self._upsert(
            "stage_runs",
            {
                "run_id": self.run_id,
                "stage": stage,
                "attempt": number,
                "status": attempt.status,
                "started_at": attempt.started_at,
                "ended_at": attempt.ended_at,
                "duration_s": attempt.duration_s,
                "cell_time_s": attempt.cell_time_s,
                "notebook_path": str(notebook) if notebook_kept else None,
                "report_path": str(report) if report_kept else None,
                "mlflow_run_id": mlflow_run,
                "error": attempt.error,
            },
        )
        self.save()

    def not_run(self, stage: str, status: str, reason: str, from_run: str | None = None) -> None:
        """A stage that did not execute: `skipped`, `cached` (reusing `from_run`'s results) or `failed`."""
        if self.lost.is_set():
            return
        entry: dict[str, Any] = {"status": status, "reason": reason, "notebook": None, "report": None}
        if from_run:
            # The report that produced the reused results, relative to this run's folder.
            previous = self.outputs / "runs" / from_run / "reports" / f"{stage}.html"
            entry.update(
                from_run=from_run, report=f"../{from_run}/reports/{stage}.html" if previous.is_file() else None
            )
        self.stages[stage] = entry
        now = _now()
        # Upserted with the manifest (`save`): a no-change run writes one frame, not one per stage.
        self._unsaved_stage_rows.append(
            {
                "run_id": self.run_id,
                "stage": stage,
                "attempt": 1,
                "status": status,
                "started_at": now,
                "ended_at": now,
                "duration_s": 0.0,
                "cell_time_s": 0.0,
                "error": None if status == "cached" else reason,
            }
        )
        self.dirty = True

    def write_log(self, text: str) -> None:
        """The terminal lines of this run, kept as `logs/<run_id>.log` (retention prunes).

        Each task of an orchestrated run appends its own lines.
        """
        log = self.outputs / "logs" / f"{self.run_id}.log"
        with self.lock:
            if self.orchestrated and log.is_file():
                text = log.read_text(encoding="utf-8") + text
            atomic_write_text(log, text)

    def finished(self) -> bool:
        """The ledger says this run ended (the scheduler's `skip_if_done`)."""
        done = self.warehouse.read("pipeline_runs", where={"run_id": self.run_id})
        return not done.empty and done["status"].iloc[0] in RUN_FINISHED

    def _upsert(self, table: str, row: dict[str, Any]) -> None:
        import pandas as pd

        self.warehouse.upsert(table, pd.DataFrame([row]))


def merge_manifests(
    disk: Mapping[str, Any], ours: Mapping[str, Any], owned: Iterable[str], order: Iterable[str]
) -> dict[str, Any]:
    """An orchestrated task's manifest laid over the one on disk.

    Run fields are ours (the latest task's view), except `started_at`, which the first task
    set; MLflow ids the disk has are kept unless we know them too. Stage entries: the disk's
    for stages other tasks own, ours for the `owned` ones (a rerun replaces its earlier
    entry); stages in `order` (the DAG's) first, any others after.
    """
    merged = {**disk, **{k: v for k, v in ours.items() if k not in ("stages", "mlflow", "started_at")}}
    merged["started_at"] = disk.get("started_at") or ours.get("started_at")
    merged["mlflow"] = {**disk.get("mlflow", {}), **{k: v for k, v in ours["mlflow"].items() if v is not None}}
    stages = {**ours["stages"], **disk.get("stages", {})}  # the disk wins for others' stages...
    stages.update({name: ours["stages"][name] for name in owned if name in ours["stages"]})  # ...not ours
    ordered = {name: stages.pop(name) for name in order if name in stages}
    merged["stages"] = {**ordered, **stages}
    return merged


def all_manifests(outputs: Path) -> list[dict[str, Any]]:
    """Every run's manifest in the store, oldest run id first."""
    found = []
    for path in sorted((outputs / "runs").glob("*/manifest.json")):
        try:
            found.append(read_json(path))
        except (OSError, ValueError):
            continue  # a manifest being replaced right now; the next write lists it
    return found


def in_flight(outputs: Path, run_id: str, stage: str) -> bool:
    """`stage` of `run_id` was executing when its runner stopped (per its manifest)."""
    path = outputs / "runs" / run_id / "manifest.json"
    return path.is_file() and read_json(path).get("stages", {}).get(stage, {}).get("status") in IN_FLIGHT


def mark_crashed(warehouse: Warehouse, outputs: Path, run_id: str) -> None:
    """A run whose runner died mid-way (its lapsed lease was taken): `crashed` in its manifest,
    on the stages it was executing, and in its ledger row."""
    path = outputs / "runs" / run_id / "manifest.json"
    if path.is_file():
        manifest = read_json(path)
        if manifest.get("status") == "running":
            manifest["status"] = "crashed"
            for stage in manifest["stages"].values():
                if stage["status"] in IN_FLIGHT:
                    stage.update(status="crashed", error="the runner stopped without finishing this stage")
            atomic_write_json(path, manifest)
    warehouse.update_where("pipeline_runs", {"run_id": run_id, "status": "running"}, status="crashed")


def git_state(root: Path) -> tuple[str | None, bool]:
    """The checkout's commit and whether tracked files differ from it (None, False outside git)."""
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


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
