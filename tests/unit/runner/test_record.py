"""The run record: what the manifest, the ledger and the log say after each kind of update,
and how an orchestrated run's tasks merge into one manifest without losing each other's work."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bentley.warehouse import Warehouse
from runner.execute import Attempt
from runner.record import RunRecord, all_manifests, in_flight, mark_crashed, merge_manifests

T0 = dt.datetime(2025, 6, 2, 14, 0, tzinfo=dt.UTC)
DAG = ["a", "b", "c", "d", "e"]
FIELDS = {
    "run_id": "af",
    "profile": "ci",
    "logical_date": "2025-06-02",
    "params_hash": "p1",
    "git_sha": None,
    "git_dirty": False,
    "orchestrated": True,
}
MLFLOW = {"tracking_uri": "sqlite:///m.db", "experiment": "bentley"}


def entry(status: str, **extra: object) -> dict:
    return {"status": status, "notebook": None, "report": None, **extra}


# ------------------------------------------------------------------ merge_manifests


def test_a_task_keeps_the_other_tasks_stages_and_writes_its_own() -> None:
    disk = {
        "status": "running",
        "started_at": "2025-06-02T14:00:00+00:00",
        "stages": {"a": entry("success"), "b": entry("success"), "c": entry("running"), "d": entry("pending")},
        "mlflow": {"experiment_id": "1", "parent_run_id": "parent"},
    }
    ours = {
        "status": "running",
        "started_at": "2025-06-02T14:05:00+00:00",
        "stages": {"a": entry("pending"), "b": entry("pending"), "c": entry("pending"), "d": entry("failed")},
        "mlflow": {"experiment_id": "1", "parent_run_id": None},
    }
    merged = merge_manifests(disk, ours, owned=["d"], order=DAG)
    assert merged["stages"] == {
        "a": entry("success"),
        "b": entry("success"),
        "c": entry("running"),
        "d": entry("failed"),
    }, "what other tasks recorded is never overwritten by our stale view of it"
    assert merged["started_at"] == "2025-06-02T14:00:00+00:00", "the run started when its first task did"
    assert merged["mlflow"]["parent_run_id"] == "parent", "a parent another task created is kept"


def test_a_rerun_of_a_task_replaces_its_stage_entry() -> None:
    """The orchestrator's second try of `d` replaces the first try's failure, attempts and all."""
    disk = {"stages": {"a": entry("success"), "d": entry("failed", attempts=1, error="boom")}, "mlflow": {}}
    ours = {"stages": {"d": entry("success", attempts=2)}, "mlflow": {"parent_run_id": None}}
    merged = merge_manifests(disk, ours, owned=["d"], order=DAG)
    assert merged["stages"]["d"] == entry("success", attempts=2)
    assert merged["stages"]["a"] == entry("success")


def test_run_fields_are_the_latest_tasks_and_stages_keep_the_dag_order() -> None:
    disk = {"status": "running", "params_hash": "old", "stages": {"e": entry("pending"), "a": entry("success")}}
    ours = {
        "status": "failed",
        "params_hash": "new",
        "stages": {"zz": entry("success"), "c": entry("success")},
        "mlflow": {"parent_run_id": "p2", "experiment_id": None},
    }
    merged = merge_manifests(disk, ours, owned=["c", "zz"], order=DAG)
    assert (merged["status"], merged["params_hash"]) == ("failed", "new")
    assert list(merged["stages"]) == ["a", "c", "e", "zz"], "DAG order, stages the DAG no longer has last"
    assert merged["mlflow"] == {"parent_run_id": "p2"}, "an id we do not know yet never erases one"


def test_concluding_owns_every_stage() -> None:
    """`runner finish` writes the whole record: its view wins for every stage."""
    disk = {"stages": {"a": entry("success"), "e": entry("pending")}, "mlflow": {}}
    ours = {"stages": {"a": entry("success"), "e": entry("skipped", reason="upstream d")}, "mlflow": {}}
    assert merge_manifests(disk, ours, owned=DAG, order=DAG)["stages"]["e"]["status"] == "skipped"


# ------------------------------------------------------------------ RunRecord


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[Warehouse]:
    store = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    yield store
    store.dispose()


def task_record(warehouse: Warehouse, outputs: Path, stages: list[str], **kwargs: object) -> RunRecord:
    """What `runner run --orchestrated --stages ...` opens."""
    record = RunRecord(warehouse, outputs, "af", order=DAG, owned=stages, orchestrated=True, **kwargs)  # type: ignore[arg-type]
    record.open(FIELDS, MLFLOW, stages, resumed=False)
    record.manifest.update(status="running", started_at=T0.isoformat())
    return record


def attempt(status: str, minutes: int = 0, error: str | None = None) -> Attempt:
    start = T0 + dt.timedelta(minutes=minutes)
    return Attempt(status, start, start + dt.timedelta(seconds=2), 2.0, 1.5, error, transient=error is not None)


def on_disk(outputs: Path) -> dict:
    return json.loads((outputs / "runs" / "af" / "manifest.json").read_text())


def test_tasks_saving_in_turn_lose_no_update(warehouse: Warehouse, tmp_path: Path) -> None:
    notebook = tmp_path / "missing.ipynb"
    first = task_record(warehouse, tmp_path, ["a"])
    first.save()
    assert {n: s["status"] for n, s in on_disk(tmp_path)["stages"].items()} == dict.fromkeys(DAG, "pending")
    b, d = task_record(warehouse, tmp_path, ["b"]), task_record(warehouse, tmp_path, ["d"])  # opened side by side
    first.attempt("a", 1, attempt("success"), notebook, None, None)
    b.running("b", "no earlier successful run")
    b.save()
    d.attempt("d", 1, attempt("failed", error="bad rows in d"), notebook, None, None)
    stages = on_disk(tmp_path)["stages"]
    assert {n: s["status"] for n, s in stages.items()} == {
        "a": "success",
        "b": "running",
        "c": "pending",
        "d": "failed",
        "e": "pending",
    }
    assert stages["d"]["error"] == "bad rows in d" and stages["d"]["attempts"] == 1
    ledger = warehouse.read("pipeline_runs")
    assert ledger[["run_id", "status"]].values.tolist() == [["af", "running"]]
    assert (tmp_path / "runs" / "af" / "index.html").is_file()


def test_a_retry_adds_a_ledger_row_and_a_rerun_of_an_attempt_replaces_its_row(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    record = task_record(warehouse, tmp_path, ["d"])
    notebook = tmp_path / "runs" / "af" / "notebooks" / "d.ipynb"
    notebook.parent.mkdir(parents=True)
    notebook.write_text("{}")
    record.attempt("d", 1, attempt("failed", error="kernel died"), notebook, None, None, retrying=True)
    assert on_disk(tmp_path)["stages"]["d"]["status"] == "retrying"
    record.attempt("d", 2, attempt("failed", 1, error="kernel died"), notebook, None, None)
    record.attempt("d", 2, attempt("success", 2), notebook, None, "mlflow-run")  # the orchestrator's rerun of try 2
    rows = warehouse.read("stage_runs").sort_values("attempt")
    assert rows[["stage", "attempt", "status"]].values.tolist() == [["d", 1, "failed"], ["d", 2, "success"]]
    assert rows["notebook_path"].tolist() == [str(notebook)] * 2
    stage = on_disk(tmp_path)["stages"]["d"]
    assert (stage["status"], stage["attempts"], stage["error"]) == ("success", 2, None)
    assert (stage["notebook"], stage["mlflow_run_id"]) == ("notebooks/d.ipynb", "mlflow-run")


def test_a_cached_stage_links_the_report_that_made_its_results(warehouse: Warehouse, tmp_path: Path) -> None:
    record = RunRecord(warehouse, tmp_path, "again", order=DAG, owned=DAG)
    record.open({**FIELDS, "run_id": "again", "orchestrated": False}, MLFLOW, DAG, resumed=False)
    record.manifest.update(status="running", started_at=T0.isoformat())
    report = tmp_path / "runs" / "first" / "reports" / "a.html"
    report.parent.mkdir(parents=True)
    report.write_text("<html>")
    record.not_run("a", "cached", "up to date: unchanged since run first", "first")
    record.not_run("b", "cached", "up to date: unchanged since run gone", "gone")
    record.not_run("c", "skipped", "upstream b did not succeed")
    assert record.dirty, "saved with the next flush, not per stage"
    record.flush()
    stages = json.loads((tmp_path / "runs" / "again" / "manifest.json").read_text())["stages"]
    assert stages["a"]["report"] == "../first/reports/a.html" and stages["a"]["from_run"] == "first"
    assert stages["b"]["report"] is None, "no link to a report that is gone"
    ledger = warehouse.read("stage_runs").set_index("stage")
    assert ledger["error"].isna()["a"] and ledger.loc["c", "error"] == "upstream b did not succeed"


def test_after_the_lease_is_lost_nothing_is_written(warehouse: Warehouse, tmp_path: Path) -> None:
    lost = threading.Event()
    record = task_record(warehouse, tmp_path, ["a"], lost=lost)
    record.save()
    lost.set()
    record.attempt("a", 1, attempt("success"), tmp_path / "a.ipynb", None, None)
    record.not_run("b", "skipped", "the run was stopped")
    record.manifest["status"] = "failed"
    record.save()
    assert on_disk(tmp_path)["status"] == "running"
    assert on_disk(tmp_path)["stages"]["a"]["status"] == "pending"
    assert warehouse.read("stage_runs").empty


def test_a_reopened_run_keeps_its_start_and_lists_its_resumes(warehouse: Warehouse, tmp_path: Path) -> None:
    record = RunRecord(warehouse, tmp_path, "r", order=DAG, owned=["a", "b"])
    record.open({**FIELDS, "run_id": "r"}, MLFLOW, ["a", "b"], resumed=False)
    record.manifest.update(status="failed", started_at=T0.isoformat(), lease_lost="someone took it")
    record.stages["a"] = entry("success")
    record.stages["b"] = entry("failed")
    record.manifest["mlflow"]["parent_run_id"] = "parent"
    record.save()
    again = RunRecord(warehouse, tmp_path, "r", order=DAG, owned=["b"])
    again.open({**FIELDS, "run_id": "r"}, MLFLOW, ["b"], resumed=True)
    manifest = again.manifest
    assert manifest["started_at"] == T0.isoformat() and len(manifest["resumes"]) == 1
    assert manifest["stages"] == {"a": entry("success"), "b": entry("pending")}
    assert manifest["mlflow"]["parent_run_id"] == "parent" and "lease_lost" not in manifest


def test_each_task_appends_to_the_log_a_local_run_replaces_it(warehouse: Warehouse, tmp_path: Path) -> None:
    log = tmp_path / "logs" / "af.log"
    task_record(warehouse, tmp_path, ["a"]).write_log("a started\n")
    task_record(warehouse, tmp_path, ["b"]).write_log("b started\n")
    assert log.read_text() == "a started\nb started\n"
    RunRecord(warehouse, tmp_path, "af", order=DAG, owned=DAG).write_log("rerun\n")
    assert log.read_text() == "rerun\n"


def test_a_crashed_run_is_marked_in_its_manifest_and_ledger(warehouse: Warehouse, tmp_path: Path) -> None:
    record = task_record(warehouse, tmp_path, ["a", "b", "c"])
    record.running("a", "no earlier successful run")
    record.stages["b"] = entry("retrying")
    record.stages["c"] = entry("success")
    record.save()
    assert in_flight(tmp_path, "af", "a") and in_flight(tmp_path, "af", "b")
    assert not in_flight(tmp_path, "af", "c") and not in_flight(tmp_path, "nope", "a")
    mark_crashed(warehouse, tmp_path, "af")
    manifest = on_disk(tmp_path)
    assert manifest["status"] == "crashed"
    assert [manifest["stages"][s]["status"] for s in "abcd"] == ["crashed", "crashed", "success", "pending"]
    assert warehouse.read("pipeline_runs")["status"].tolist() == ["crashed"]
    assert [m["run_id"] for m in all_manifests(tmp_path)] == ["af"]


def test_a_finished_run_is_never_marked_crashed(warehouse: Warehouse, tmp_path: Path) -> None:
    record = task_record(warehouse, tmp_path, ["a"])
    record.manifest["status"] = "success"
    record.save()
    mark_crashed(warehouse, tmp_path, "af")
    assert on_disk(tmp_path)["status"] == "success"
    assert warehouse.read("pipeline_runs")["status"].tolist() == ["success"]
    assert record.finished()
