"""`runner export airflow`: the DAG file mirrors pipeline.yaml and params, and holds no secret.

Loading the file into a real Airflow DagBag and running it is `tests/integration/test_airflow.py`.
"""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bentley.config import Config, load_config, load_pipeline
from bentley.schedule_times import fire_times
from runner import cli
from runner.airflow import DEPLOYMENT_ENVIRONMENT, ExportOptions, cron_for, render_dag
from runner.dag import build_dag
from tests.schedules import with_schedule

SECRETS = {
    "BENTLEY_WAREHOUSE_PASSWORD": "wh-pass-4d1f9c",
    "BENTLEY_WAREHOUSE_URL": "postgresql+psycopg://bot:url-pass-77ab@db:5432/bentley",
    "MLFLOW_TRACKING_URI": "https://user:mlflow-pass-2e8d@mlflow.example",
    "NEWS_API_KEY": "news-key-9a0b11",
    "BENTLEY_ALERT_WEBHOOK_URL": "https://hooks.example/T000/secret-hook-5c3e",
}


def cron_matches(cron: str, moment: dt.datetime) -> bool:
    """Enough of cron for the forms `cron_for` writes: `*`, numbers, names, lists and ranges."""
    minute, hour, _, _, weekday = cron.split()
    days = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]

    def field_has(field: str, value: int, names: list[str] | None = None) -> bool:
        def number(text: str) -> int:
            return names.index(text) if names and text in names else int(text)

        if field == "*":
            return True
        for part in field.split(","):
            low, _, high = part.partition("-")
            if number(low) <= value <= number(high or low):
                return True
        return False

    return (
        field_has(minute, moment.minute)
        and field_has(hour, moment.hour)
        and field_has(weekday, (moment.weekday() + 1) % 7, days)
    )


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, "5 10-15 * * MON-FRI"),
        ({"every_minutes": 15, "offset_minutes": 0}, "0,15,30,45 9-16 * * MON-FRI"),
        ({"every_minutes": 120, "offset_minutes": 30}, "30 10,12,14 * * MON-FRI"),
        ({"every_minutes": 45, "offset_minutes": 5}, "5,20,35,50 9-15 * * MON-FRI"),
        ({"sessions_only": False}, "5 * * * *"),
    ],
)
def test_the_cron_line_covers_every_tick_of_a_month(config: Config, changes: dict, expected: str) -> None:
    chosen = with_schedule(config, **changes)
    cron = cron_for(chosen)
    assert cron == expected
    zone = ZoneInfo(chosen.workflow.timezone)
    ticks = fire_times(
        dt.datetime(2025, 3, 1, tzinfo=dt.UTC),
        dt.datetime(2025, 4, 30, tzinfo=dt.UTC),
        chosen.schedule,
        chosen.workflow,
    )  # across the spring DST change
    assert ticks
    assert all(cron_matches(cron, t.fire_at.astimezone(zone)) for t in ticks)


def export(tmp_path: Path, root: Path, *args: str) -> tuple[str, str]:
    out = tmp_path / "dags"
    code = cli.main(
        [
            "--root",
            str(root),
            "export",
            "airflow",
            "--out",
            str(out),
            "--profile",
            "ci",
            "--python",
            "/opt/bentley/.venv/bin/python",
            "--project",
            "/opt/bentley",
            *args,
        ]
    )
    assert code == 0
    return (out / "bentley_pipeline.py").read_text(), (out / "README.md").read_text()


def literal(source: str, name: str) -> object:
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} is not assigned in the DAG file")


def test_the_dag_file_declares_every_stage_with_its_pipeline_settings(tmp_path: Path, root: Path) -> None:
    source, _ = export(tmp_path, root)
    compile(source, "bentley_pipeline.py", "exec")
    spec = load_pipeline(root / "params" / "pipeline.yaml")
    default_timeout = load_config("ci", root=root).workflow.max_execution_time_minutes
    stages = literal(source, "STAGES")
    assert list(stages) == [
        "ingest",
        "etl",
        "features",
        "sentiment",
        "risk",
        "budget",
        "technical",
        "anomalies",
        "train",
        "optimize",
        "trade",
        "monitor",
    ]  # a topological order
    for name, declared in spec.stages.items():
        assert stages[name] == {
            "upstream": list(declared.upstream),
            "retries": declared.retries,
            "timeout_minutes": declared.timeout_minutes or default_timeout,
            "trigger_rule": declared.trigger,
        }
    assert literal(source, "BACKOFF_BASE_S") == spec.retry.backoff_base_s
    assert literal(source, "BACKOFF_MAX_S") == spec.retry.backoff_max_s
    assert literal(source, "PROFILE") == "ci"
    assert "CronTriggerTimetable('5 10-15 * * MON-FRI', timezone='America/New_York')" in source
    assert "max_active_runs=1" in source and "catchup=False" in source


def test_every_task_calls_the_runner_cli(tmp_path: Path, root: Path) -> None:
    source, _ = export(tmp_path, root, "--outputs", "/mnt/shared/bentley")
    assert 'RUNNER = [PYTHON, "-m", "runner", "--root", PROJECT_DIR]' in source
    assert '"run", "--orchestrated", "--profile", PROFILE,' in source
    assert "--attempt {{ ti.try_number }}" in source  # each Airflow try is its own attempt in the ledger
    assert "session_gate failed: this run has no run id, nothing to do" in source
    assert '"finish", *OUTPUTS_ARGS' in source and '"gate", "--profile", PROFILE' in source
    assert literal(source, "OUTPUTS") == "/mnt/shared/bentley"
    assert "os.environ.get(\"BENTLEY_PYTHON\", '/opt/bentley/.venv/bin/python')" in source
    assert "import bentley" not in source and "notebook" not in source.lower().replace("stage notebook", "")


def test_catch_up_all_becomes_airflow_catchup_from_the_export_date(tmp_path: Path, root: Path, config: Config) -> None:
    source, _ = export(tmp_path, root)
    assert "catchup=False" in source
    assert "fromisoformat('2000-01-01')" in source  # no catch-up: manual runs may ask for any past session
    spec = load_pipeline(root / "params" / "pipeline.yaml")
    stages = build_dag(spec, root, 30, "pipeline.yaml")
    options = ExportOptions(dag_id="bentley_pipeline", profile="default", python="python", project=root)
    catching_up = render_dag(stages, spec.retry, with_schedule(config, catch_up="all"), options, dt.date(2026, 12, 1))
    assert "catchup=True" in catching_up
    assert "fromisoformat('2026-12-01')" in catching_up  # not a run for every tick since 2000


def test_neither_file_contains_a_secret_and_the_readme_names_the_variables(
    tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    source, readme = export(tmp_path, root)
    for value in SECRETS.values():
        for fragment in (value, value.split("@")[0].rsplit(":", 1)[-1]):
            assert fragment not in source and fragment not in readme
    for names, _ in DEPLOYMENT_ENVIRONMENT:
        for name in names.split(", "):
            assert f"`{name}`" in readme or name in readme
    assert "CeleryExecutor" in readme and "Redis" in readme and "MySQL" in readme


def test_a_bad_dag_id_is_a_usage_error(tmp_path: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--root", str(root), "export", "airflow", "--out", str(tmp_path), "--dag-id", "no spaces"])
    assert code == 2
    assert "dag id 'no spaces'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
