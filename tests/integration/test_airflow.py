"""The exported DAG in a real Apache Airflow: it loads, it mirrors pipeline.yaml, and
`airflow dags test` on the ci profile gives the same run a local `runner run` gives.

Slow on purpose, and part of `make test`. Airflow runs in a virtual environment of its own
(`tests/airflow_env.py`: `.venv-airflow`, built here when `make airflow-env` has not built it
yet). If pip cannot install Airflow, the test fails with pip's error.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

from bentley.config import load_config, load_pipeline
from bentley.warehouse import Warehouse
from tests.airflow_env import AirflowInstallFailed, airflow_venv
from tests.pipeline_facts import STAGES, table_fingerprints

pytestmark = pytest.mark.integration

LOGICAL_DATE = "2025-06-02"
DAG_ID = "bentley_pipeline"
SECRET = "sentinel-Airflow-Secret-8152"

#: Run inside the Airflow environment: what the DagBag parsed, as JSON.
DAGBAG_REPORT = """
import json, sys
try:
    from airflow.dag_processing.dagbag import DagBag  # Airflow 3
except ImportError:
    from airflow.models.dagbag import DagBag  # Airflow 2
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags.get(sys.argv[2])
seconds = lambda delta: None if delta is None else delta.total_seconds()
zone = dag and (getattr(dag.timetable, "timezone", None) or getattr(dag.timetable, "_timezone", None))
print(json.dumps({
    "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
    "dag_ids": sorted(bag.dags),
    "max_active_runs": dag and dag.max_active_runs,
    "catchup": dag and dag.catchup,
    "timetable": dag and [getattr(dag.timetable, "expression", None) or getattr(dag.timetable, "_expression", None),
                          str(getattr(zone, "name", zone))],
    "tasks": dag and {t.task_id: {
        "upstream": sorted(t.upstream_task_ids), "retries": t.retries, "retry_delay_s": seconds(t.retry_delay),
        "backoff": float(t.retry_exponential_backoff), "max_retry_delay_s": seconds(t.max_retry_delay),
        "timeout_s": seconds(t.execution_timeout), "trigger_rule": str(getattr(t.trigger_rule, "value", t.trigger_rule)),
        "command": getattr(t, "bash_command", None),
    } for t in dag.tasks},
}))
"""


@dataclass
class Deployment:
    venv: Path
    dags: Path
    env: dict[str, str]  # what the Airflow processes (and so every task) see
    airflow_outputs: Path
    local_outputs: Path


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, root: Path, clean_env: dict[str, str]) -> Deployment:
    base = tmp_path_factory.mktemp("airflow")
    local_outputs = base / "local"
    # The local reference run computes while pip installs Airflow.
    local = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runner",
            "run",
            "--profile",
            "ci",
            "--logical-date",
            LOGICAL_DATE,
            "--outputs",
            str(local_outputs),
            "--run-id",
            "local",
        ],
        cwd=root,
        env=clean_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        venv = airflow_venv(root)
    except AirflowInstallFailed as exc:
        pytest.fail(str(exc))
    finally:
        output, _ = local.communicate(timeout=900)
    assert local.returncode == 0, output

    dags = base / "dags"
    exported = subprocess.run(
        [
            sys.executable,
            "-m",
            "runner",
            "export",
            "airflow",
            "--out",
            str(dags),
            "--profile",
            "ci",
            "--dag-id",
            DAG_ID,
            "--project",
            str(root),
        ],
        cwd=root,
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert exported.returncode == 0, exported.stdout + exported.stderr
    env = {
        **clean_env,
        "AIRFLOW_HOME": str(base / "home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "BENTLEY_OUTPUTS": str(base / "airflow-outputs"),
        "BENTLEY_WAREHOUSE_PASSWORD": SECRET,  # a secret in the workers' environment must not leak anywhere
        "NEWS_API_KEY": SECRET,
    }
    # BENTLEY_OUTPUTS is the outputs base: the ci profile's store is profiles/ci inside it.
    return Deployment(venv, dags, env, base / "airflow-outputs" / "profiles" / "ci", local_outputs)


def airflow(deployment: Deployment, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(deployment.venv / "bin" / "airflow"), *args],
        env=deployment.env,
        cwd=deployment.env["AIRFLOW_HOME"] if Path(deployment.env["AIRFLOW_HOME"]).is_dir() else None,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_dag_loads_with_one_task_per_stage_and_the_pipelines_settings(deployment: Deployment, root: Path) -> None:
    parsed = subprocess.run(
        [str(deployment.venv / "bin" / "python"), "-c", DAGBAG_REPORT, str(deployment.dags), DAG_ID],
        env=deployment.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert parsed.returncode == 0, parsed.stderr[-4000:]
    report = json.loads(parsed.stdout.strip().splitlines()[-1])
    assert report["import_errors"] == {}
    assert report["dag_ids"] == [DAG_ID]
    assert report["max_active_runs"] == 1 and report["catchup"] is False
    assert report["timetable"] == ["5 10-15 * * MON-FRI", "America/New_York"]

    spec = load_pipeline(root / "params" / "pipeline.yaml")
    default_timeout = load_config("ci", root=root).workflow.max_execution_time_minutes
    tasks = report["tasks"]
    assert set(tasks) == {"session_gate", *STAGES, "finish"}
    for name, stage in spec.stages.items():
        task = tasks[name]
        assert task["upstream"] == sorted(stage.upstream or ["session_gate"]), name
        assert task["retries"] == stage.retries
        assert task["retry_delay_s"] == spec.retry.backoff_base_s
        assert task["backoff"] == 2.0 and task["max_retry_delay_s"] == spec.retry.backoff_max_s
        assert task["timeout_s"] == 60 * (stage.timeout_minutes or default_timeout)
        assert task["trigger_rule"] == stage.trigger
        assert f"-m runner --root {root} run --orchestrated --profile ci --stages {name} " in task["command"]
    assert tasks["finish"]["upstream"] == sorted(STAGES) and tasks["finish"]["trigger_rule"] == "all_done"
    assert tasks["session_gate"]["upstream"] == []


def test_airflow_dags_test_runs_every_stage_as_a_local_run_does(deployment: Deployment) -> None:
    migrated = airflow(deployment, "db", "migrate", timeout=300)
    assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
    tested = airflow(deployment, "dags", "test", DAG_ID, LOGICAL_DATE)
    screen = tested.stdout + tested.stderr
    assert tested.returncode == 0, screen[-8000:]

    outputs = deployment.airflow_outputs
    (run_dir,) = (outputs / "runs").iterdir()
    assert run_dir.name.startswith("airflow-20250602T000000Z-")  # a manual run, for the session of its date
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["orchestrated"] is True and manifest["status"] == "success"
    assert manifest["logical_date"] == LOGICAL_DATE
    assert {name: s["status"] for name, s in manifest["stages"].items()} == dict.fromkeys(STAGES, "success")
    index = (run_dir / "index.html").read_text()
    for stage in STAGES:
        assert (run_dir / "reports" / f"{stage}.html").stat().st_size > 10_000, stage
        assert (run_dir / "notebooks" / f"{stage}.ipynb").is_file()
        assert f"reports/{stage}.html" in index

    warehouse = Warehouse(f"sqlite:///{outputs / 'warehouse.db'}")
    try:
        assert warehouse.read("pipeline_runs")["status"].tolist() == ["success"]
        ledger = warehouse.read("stage_runs")
        assert sorted(ledger["stage"]) == sorted(STAGES) and set(ledger["status"]) == {"success"}
        assert warehouse.read("leases").empty
        assert not warehouse.read("monitor_kpis").empty
    finally:
        warehouse.dispose()
    assert table_fingerprints(outputs) == table_fingerprints(deployment.local_outputs), (
        "Airflow and the local runner wrote the same rows"
    )

    client = MlflowClient(tracking_uri=f"sqlite:///{outputs / 'mlflow' / 'mlflow.db'}")
    parent = client.get_run(manifest["mlflow"]["parent_run_id"])
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert set(STAGES) <= {run.info.run_name for run in children}

    leaked = [
        str(p)
        for folder in (outputs, Path(deployment.env["AIRFLOW_HOME"]), deployment.dags)
        for p in folder.rglob("*")
        if p.is_file() and SECRET.encode() in p.read_bytes()
    ]
    assert leaked == [] and SECRET not in screen
