"""Execution semantics through the CLI on throwaway notebooks: caching, retries, parallel
stages, trigger rules, stopping, leases, resume, and orchestrated runs (one process per stage).

Each test writes its own tiny pipeline, so what it checks is the runner, not the stages.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bentley.warehouse import Warehouse
from tests.tiny_pipeline import rendezvous, write_pipeline

pytestmark = pytest.mark.integration

LOGICAL_DATE = "2025-06-02"


def runner_args(pipeline: Path, outputs: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "runner",
        "run",
        "--pipeline",
        str(pipeline),
        "--outputs",
        str(outputs),
        "--logical-date",
        LOGICAL_DATE,
        *extra,
    ]


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def manifest(outputs: Path, run_id: str) -> dict:
    return json.loads((outputs / "runs" / run_id / "manifest.json").read_text())


def statuses(outputs: Path, run_id: str) -> dict[str, str]:
    return {name: s["status"] for name, s in manifest(outputs, run_id)["stages"].items()}


def reasons(outputs: Path, run_id: str) -> dict[str, str]:
    return {name: s.get("reason", "") for name, s in manifest(outputs, run_id)["stages"].items()}


#: Stage `a` writes the number in value.txt to sync_state; `b` (downstream) writes holdings.
WRITER = """
    from pathlib import Path
    import pandas as pd
    from bentley.stage import open_stage
    ctx = open_stage("{name}", run_id=run_id, logical_date=logical_date, outputs_dir=outputs_dir, profile=profile,
                     warehouse=warehouse)
    {body}
"""
A_BODY = (
    'value = int(Path({value!r}).read_text())\n    ctx.warehouse.upsert("sync_state", pd.DataFrame(['
    '{{"source": "test", "dataset": "a", "ticker": "*", "rows": value}}]))'
)
B_BODY = (
    'ctx.warehouse.upsert("holdings", pd.DataFrame([{"as_of": pd.Timestamp("2025-06-02"), "account": "x", '
    '"ticker": "AAA", "quantity": 1.0}]))'
)


def test_content_hash_cache_hits_and_misses(tmp_path: Path, root: Path, clean_env: dict[str, str]) -> None:
    value = tmp_path / "value.txt"
    value.write_text("1")
    stages = {
        "a": {
            "code": WRITER.format(name="a", body=A_BODY.format(value=str(value))),
            "sections": ["warehouse"],
            "cache": False,
        },
        "b": {"code": WRITER.format(name="b", body=B_BODY), "upstream": ["a"], "sections": ["warehouse"]},
        "c": {"code": "print('reads nothing')", "upstream": ["b"], "sections": ["sample"]},
    }
    pipeline = write_pipeline(tmp_path, stages)
    outputs = tmp_path / "out"

    def go(run_id: str, *extra: str) -> dict[str, str]:
        result = run(runner_args(pipeline, outputs, "--run-id", run_id, *extra), clean_env, root)
        assert result.returncode == 0, result.stdout + result.stderr
        return statuses(outputs, run_id)

    assert go("first") == {"a": "success", "b": "success", "c": "success"}
    # a always runs (cache: false) and writes the same row: b and c stay up to date (early cutoff).
    assert go("same") == {"a": "success", "b": "cached", "c": "cached"}
    assert reasons(outputs, "same")["a"] == "always runs (cache: false)"
    assert reasons(outputs, "same")["b"] == "up to date: unchanged since run first"
    value.write_text("2")
    assert go("upstream") == {"a": "success", "b": "success", "c": "cached"}
    assert reasons(outputs, "upstream")["b"] == "upstream products changed: a"
    assert go("params", "--set", "sample.seed=43") == {"a": "success", "b": "cached", "c": "success"}
    assert reasons(outputs, "params")["c"] == "params changed: sample.seed"
    warehouse = Warehouse(f"sqlite:///{outputs / 'warehouse.db'}")
    warehouse.delete_where("holdings", account="x")
    warehouse.dispose()
    assert go("missing", "--set", "sample.seed=43") == {"a": "success", "b": "success", "c": "cached"}
    assert reasons(outputs, "missing")["b"] == "product missing: table holdings is empty or missing"
    notebook = tmp_path / "c.ipynb"
    notebook.write_text(notebook.read_text().replace("reads nothing", "reads nothing at all"))
    assert go("notebook", "--set", "sample.seed=43")["c"] == "success"
    assert reasons(outputs, "notebook")["c"] == "notebook source changed"
    assert go("forced", "--set", "sample.seed=43", "--force") == {"a": "success", "b": "success", "c": "success"}
    index = (outputs / "runs" / "forced" / "index.html").read_text()
    assert "forced (--force)" in index
    assert "up to date: unchanged since run" in (outputs / "runs" / "same" / "index.html").read_text()


def test_a_transient_failure_is_retried_and_a_validation_error_is_not(
    tmp_path: Path, root: Path, clean_env: dict[str, str]
) -> None:
    counter = tmp_path / "attempts.txt"
    flaky = f"""
        from pathlib import Path
        from bentley.sources.base import TransientSourceError
        counter = Path({str(counter)!r})
        n = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(n))
        if n == 1:
            raise TransientSourceError("HTTP 503 from the quote server")
    """
    invalid = """
        from bentley.sources.base import SourceError
        raise SourceError("prices.csv: column 'close' is missing")
    """
    pipeline = write_pipeline(
        tmp_path,
        {
            "flaky": {"code": flaky, "retries": 2},
            "invalid": {"code": invalid, "retries": 2},
        },
    )
    outputs = tmp_path / "out"
    result = run(runner_args(pipeline, outputs, "--run-id", "r"), clean_env, root)
    assert result.returncode == 1
    stages = manifest(outputs, "r")["stages"]
    assert stages["flaky"]["status"] == "success" and stages["flaky"]["attempts"] == 2
    assert "TransientSourceError: HTTP 503" in result.stdout and "retry in" in result.stdout
    assert stages["invalid"]["status"] == "failed" and stages["invalid"]["attempts"] == 1
    assert "SourceError: prices.csv: column 'close' is missing" in stages["invalid"]["error"]
    warehouse = Warehouse(f"sqlite:///{outputs / 'warehouse.db'}")
    rows = warehouse.read("stage_runs").sort_values(["stage", "attempt"])
    warehouse.dispose()
    assert list(zip(rows["stage"], rows["attempt"], rows["status"], strict=True)) == [
        ("flaky", 1, "failed"),
        ("flaky", 2, "success"),
        ("invalid", 1, "failed"),
    ]


def test_a_timeout_kills_the_kernel_and_its_children(tmp_path: Path, root: Path, clean_env: dict[str, str]) -> None:
    pids = tmp_path / "pids.txt"
    slow = f"""
        import os, subprocess, time
        child = subprocess.Popen(["sleep", "300"])
        open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
        time.sleep(300)
    """
    # 12 s: long enough for a busy machine's kernel to write its pids before the watchdog fires.
    pipeline = write_pipeline(tmp_path, {"slow": {"code": slow, "timeout": 0.2, "retries": 0}})
    outputs = tmp_path / "out"
    result = run(runner_args(pipeline, outputs, "--run-id", "t"), clean_env, root)
    assert result.returncode == 1
    assert "timed out after 12 s; kernel killed" in result.stdout
    for pid in map(int, pids.read_text().split()):
        assert not _running(pid), f"process {pid} outlived the timeout"


def test_independent_stages_run_at_the_same_time_and_all_done_runs_after_a_failure(
    tmp_path: Path, root: Path, clean_env: dict[str, str]
) -> None:
    marks = tmp_path / "marks"
    pipeline = write_pipeline(
        tmp_path,
        {
            "left": {"code": rendezvous(marks, "left", ["right"])},
            "right": {"code": rendezvous(marks, "right", ["left"]) + "raise RuntimeError('right broke')"},
            "after": {"code": "print('needs both')", "upstream": ["left", "right"]},
            "report": {"code": "print('always reports')", "upstream": ["after"], "trigger": "all_done"},
        },
    )
    outputs = tmp_path / "out"
    result = run(runner_args(pipeline, outputs, "--run-id", "p", "--set", "runner.max_workers=2"), clean_env, root)
    assert result.returncode == 1
    stages = manifest(outputs, "p")["stages"]
    assert {n: s["status"] for n, s in stages.items()} == {
        "left": "success",
        "right": "failed",
        "after": "skipped",
        "report": "success",
    }
    assert stages["after"]["reason"] == "upstream right did not succeed"
    left = [dt.datetime.fromisoformat(stages["left"][k]) for k in ("started_at", "ended_at")]
    right = [dt.datetime.fromisoformat(stages["right"][k]) for k in ("started_at", "ended_at")]
    assert left[0] < right[1] and right[0] < left[1], "the two independent stages overlapped"


def test_no_stage_starts_while_an_exclusive_stage_runs(tmp_path: Path, root: Path, clean_env: dict[str, str]) -> None:
    """`exclusive: true` (train: its fits keep every core busy): ready stages wait for it to end."""
    pipeline = write_pipeline(
        tmp_path,
        {
            # the longest time limit: with no history, the first stage the loop starts
            "wide": {"code": "import time\ntime.sleep(2)", "exclusive": True, "timeout": 3},
            "x": {"code": "print('x')"},
            "y": {"code": "print('y')"},
        },
    )
    outputs = tmp_path / "out"
    result = run(runner_args(pipeline, outputs, "--run-id", "e", "--set", "runner.max_workers=2"), clean_env, root)
    assert result.returncode == 0, result.stdout + result.stderr

    def executed(name: str) -> dict[str, str]:  # papermill's start and end of the stage's notebook
        return json.loads((outputs / "runs" / "e" / "notebooks" / f"{name}.ipynb").read_text())["metadata"]["papermill"]

    wide_ended = dt.datetime.fromisoformat(executed("wide")["end_time"])
    for name in ("x", "y"):
        assert dt.datetime.fromisoformat(executed(name)["start_time"]) > wide_ended, f"{name} ran beside wide"


def test_sigterm_finishes_the_running_stage_then_resume_runs_the_rest(
    tmp_path: Path, root: Path, clean_env: dict[str, str]
) -> None:
    started = tmp_path / "started"
    pipeline = write_pipeline(
        tmp_path,
        {
            "first": {"code": f"import time; open({str(started)!r}, 'w').write('x'); time.sleep(4)"},
            "second": {"code": "print('second')", "upstream": ["first"]},
        },
    )
    outputs = tmp_path / "out"
    process = subprocess.Popen(
        runner_args(pipeline, outputs, "--run-id", "s"),
        cwd=root,
        env=clean_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(started.exists, 60)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1, out + err
    assert "SIGTERM: finishing the running stage(s)" in err
    assert statuses(outputs, "s") == {"first": "success", "second": "skipped"}
    assert manifest(outputs, "s")["status"] == "interrupted"
    resumed = run([sys.executable, "-m", "runner", "resume", "s", "--outputs", str(outputs)], clean_env, root)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert statuses(outputs, "s") == {"first": "success", "second": "success"}
    assert manifest(outputs, "s")["status"] == "success"


def test_a_run_killed_while_writing_its_record_is_concluded_by_resume(
    tmp_path: Path, root: Path, clean_env: dict[str, str]
) -> None:
    """Every stage finished, the runner died writing the record: `resume` concludes it."""
    pipeline = write_pipeline(tmp_path, {"only": {"code": "print('only')"}})
    outputs = tmp_path / "out"
    assert run(runner_args(pipeline, outputs, "--run-id", "k"), clean_env, root).returncode == 0
    run_dir = outputs / "runs" / "k"
    record = manifest(outputs, "k")
    record.update(status="crashed", ended_at=None)  # what the next run's lease takeover leaves
    (run_dir / "manifest.json").write_text(json.dumps(record))
    (run_dir / "index.html").unlink()
    (run_dir / ".index.html.x1.tmp").write_text("half an index")
    resumed = run([sys.executable, "-m", "runner", "resume", "k", "--outputs", str(outputs)], clean_env, root)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert manifest(outputs, "k")["status"] == "success" and manifest(outputs, "k")["ended_at"]
    assert (run_dir / "index.html").is_file() and not list(run_dir.glob(".*.tmp"))
    again = run([sys.executable, "-m", "runner", "resume", "k", "--outputs", str(outputs)], clean_env, root)
    assert again.returncode == 2 and "it succeeded" in again.stderr


class _SilentMlflow:
    """An MLflow server that answers its health check and then never answers again."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.release = threading.Event()
        release = self.release

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/health"):
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(b"OK")
                else:
                    release.wait(120)

            do_POST = do_GET  # noqa: N815

            def log_message(self, *args: object) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


def test_sigterm_while_mlflow_does_not_answer_ends_the_run_at_once(
    tmp_path: Path, root: Path, clean_env: dict[str, str]
) -> None:
    pipeline = write_pipeline(tmp_path, {"only": {"code": "print('only')"}})
    outputs = tmp_path / "out"
    silent = _SilentMlflow()
    try:
        process = subprocess.Popen(
            runner_args(pipeline, outputs, "--run-id", "m"),
            cwd=root,
            env={**clean_env, "MLFLOW_TRACKING_URI": silent.url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_for((outputs / "runs" / "m" / "manifest.json").is_file, 60)  # past the preflight, waiting on MLflow
        time.sleep(1)
        process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        out, err = process.communicate(timeout=60)
        elapsed = time.monotonic() - stopped
    finally:
        silent.close()
    assert elapsed < 10, f"SIGTERM took {elapsed:.1f} s"
    assert process.returncode == 1, out + err
    assert "stopped while waiting for MLflow" in out and "Traceback" not in out + err, out + err
    assert manifest(outputs, "m")["status"] != "running"


def test_one_active_run_a_busy_lease_and_a_lost_lease(tmp_path: Path, root: Path, clean_env: dict[str, str]) -> None:
    started, finished = tmp_path / "started", tmp_path / "finished"
    long = f"import time; open({str(started)!r}, 'w').write('x'); time.sleep(600); open({str(finished)!r}, 'w')"
    pipeline = write_pipeline(
        tmp_path,
        {
            "long": {"code": long},
            "next": {"code": "print('never')", "upstream": ["long"]},
        },
    )
    outputs = tmp_path / "out"
    lease = ["--set", "runner.heartbeat_s=0.5", "--set", "runner.lease_ttl_s=2"]
    process = subprocess.Popen(
        runner_args(pipeline, outputs, "--run-id", "holder", *lease),
        cwd=root,
        env=clean_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(started.exists, 60)
    busy = run(runner_args(pipeline, outputs, "--run-id", "second"), clean_env, root)
    assert busy.returncode == 3, busy.stdout + busy.stderr
    assert "run holder" in busy.stdout and "holds the warehouse lease" in busy.stdout
    assert not (outputs / "runs" / "second").exists()
    warehouse = Warehouse(f"sqlite:///{outputs / 'warehouse.db'}")
    warehouse.update_where("leases", {"name": "pipeline"}, holder="another-host:1:abcdef")
    try:
        out, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 4, out + err
    assert not finished.exists(), "the runner noticed at its next heartbeat and killed the stage, not after it"
    assert "lease lost" in out
    assert manifest(outputs, "holder")["status"] == "running", "nothing written after the lease was lost"
    assert statuses(outputs, "holder") == {"long": "running", "next": "pending"}
    assert warehouse.read("stage_runs").empty
    warehouse.dispose()


def test_orchestrated_tasks_share_one_run_record_lease_and_mlflow_parent(
    tmp_path: Path, root: Path, clean_env: dict[str, str]
) -> None:
    """What an Airflow DAG does, without Airflow: one process per stage, three of them at once."""
    from mlflow.tracking import MlflowClient

    marks = tmp_path / "marks"
    pipeline = write_pipeline(
        tmp_path,
        {
            "a": {"code": "print('a')"},
            "b": {"code": rendezvous(marks, "b", ["c", "d"]), "upstream": ["a"]},
            "c": {"code": rendezvous(marks, "c", ["b", "d"]), "upstream": ["a"]},
            "d": {
                "code": rendezvous(marks, "d", ["b", "c"]) + "raise ValueError('bad rows in d')",
                "upstream": ["a"],
                "retries": 2,
            },
            "e": {"code": "print('e')", "upstream": ["b", "d"]},
        },
    )
    outputs = tmp_path / "out"

    def task(stage: str, *extra: str) -> list[str]:
        return runner_args(pipeline, outputs, "--orchestrated", "--run-id", "af", "--stages", stage, *extra)

    first = run(task("a"), clean_env, root)
    assert first.returncode == 0, first.stdout + first.stderr
    assert manifest(outputs, "af")["status"] == "running"
    assert statuses(outputs, "af") == {"a": "success", "b": "pending", "c": "pending", "d": "pending", "e": "pending"}
    warehouse = Warehouse(f"sqlite:///{outputs / 'warehouse.db'}")
    lease = warehouse.read("leases", where={"name": "pipeline"})
    assert lease["holder"].tolist() == ["run:af"]
    expires = lease["expires_at"].iloc[0].to_pydatetime().replace(tzinfo=dt.UTC)
    assert expires - dt.datetime.now(dt.UTC) > dt.timedelta(minutes=10), "it bridges the queueing until the next task"
    busy = run(runner_args(pipeline, outputs, "--run-id", "local"), clean_env, root)
    assert busy.returncode == 3, "a local run waits for the orchestrated run"

    tries = {"b": (), "c": (), "d": ("--attempt", "2")}  # d is the orchestrator's second try
    processes = {
        stage: subprocess.Popen(
            task(stage, *tries[stage]),
            cwd=root,
            env=clean_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for stage in ("b", "c", "d")
    }
    codes = {stage: process.wait(timeout=300) for stage, process in processes.items()}
    assert codes == {"b": 0, "c": 0, "d": 1}
    recorded = manifest(outputs, "af")
    assert statuses(outputs, "af") == {"a": "success", "b": "success", "c": "success", "d": "failed", "e": "pending"}, (
        "no task's update was lost"
    )
    assert recorded["stages"]["d"]["attempts"] == 2, "one execution, the orchestrator's try 2: no retry inside"
    assert "bad rows in d" in recorded["stages"]["d"]["error"]
    spans = [
        (
            dt.datetime.fromisoformat(recorded["stages"][s]["started_at"]),
            dt.datetime.fromisoformat(recorded["stages"][s]["ended_at"]),
        )
        for s in ("b", "c", "d")
    ]
    assert max(start for start, _ in spans) < min(end for _, end in spans), "the three tasks overlapped"

    finish = run([sys.executable, "-m", "runner", "finish", "af", "--outputs", str(outputs)], clean_env, root)
    assert finish.returncode == 1, "a run with a failed stage fails its orchestrator's run too"
    concluded = manifest(outputs, "af")
    assert concluded["status"] == "failed" and concluded["ended_at"]
    assert concluded["stages"]["e"] == {
        "status": "skipped",
        "reason": "upstream d did not succeed",
        "notebook": None,
        "report": None,
    }
    assert warehouse.read("leases").empty, "finish released the shared lease"
    assert warehouse.read("pipeline_runs", where={"run_id": "af"})["status"].tolist() == ["failed"]
    ledger = warehouse.read("stage_runs", where={"run_id": "af"})
    assert sorted(zip(ledger["stage"], ledger["attempt"], strict=True)) == [
        ("a", 1),
        ("b", 1),
        ("c", 1),
        ("d", 2),
        ("e", 1),
    ]
    warehouse.dispose()

    client = MlflowClient(tracking_uri=f"sqlite:///{outputs / 'mlflow' / 'mlflow.db'}")
    runs = client.search_runs([recorded["mlflow"]["experiment_id"]])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.run_id for p in parents] == [concluded["mlflow"]["parent_run_id"]], "one parent run"
    assert parents[0].info.status == "FAILED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(r.data.tags["stage"] for r in children) == ["a", "b", "c", "d"]

    log = (outputs / "logs" / "af.log").read_text()
    assert all(f"{stage} started" in log for stage in "abcd") and "failed in" in log, "every task appended"
    index = (outputs / "runs" / "af" / "index.html").read_text()
    assert all(f"reports/{stage}.html" in index for stage in "abc")

    after = run(runner_args(pipeline, outputs, "--run-id", "local", "--stages", "a"), clean_env, root)
    assert after.returncode == 0, "the lease is free again"


def _running(pid: int) -> bool:
    """Alive and not a zombie: an orphan the runner killed is dead before init gets to reap it."""
    try:
        os.kill(pid, 0)
        status = Path(f"/proc/{pid}/status").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return False
    return "\nState:\tZ" not in status


def _wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.1)
