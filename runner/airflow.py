"""`runner export airflow`: the stage DAG as an Apache Airflow DAG file, with a README.

The exported DAG is a thin shell around our own CLI, so Airflow schedules, distributes and
retries while the project keeps every rule:

- `session_gate` (a ShortCircuitOperator) asks `runner gate` whether the run is one of our
  ticks (exchange sessions, market hours, early closes, catch-up) and as which run id and
  logical date it runs; on "no" every task of the run is skipped;
- one BashOperator per stage runs `runner run --orchestrated --stages <stage> --run-id …
  --logical-date …`, with the stage's retries, timeout and trigger rule from
  `params/pipeline.yaml` and the `retry` backoff (Airflow retries, so the runner does not);
- `finish` (all_done) runs `runner finish <run id>`: the run's final status, MLflow parent
  run and lease; it fails when a stage failed, so Airflow's run state matches ours.

The file is generated from the resolved params and pipeline, holds no secret (tasks inherit
the worker's environment), and imports the Airflow 3 task SDK, falling back to the Airflow
2.10 module paths.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import get_args

from bentley.config import Config, RetryPolicy, Weekday
from bentley.lake import atomic_write_text
from runner.dag import Stage
from runner.gate import SKIP_EXIT

#: What the DAG was written for and tested with (`tests/integration/test_airflow.py`).
AIRFLOW_REQUIREMENT = "apache-airflow>=3.0,<4"
DAG_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")
GATE_TASK = "session_gate"
FINISH_TASK = "finish"
#: The DAG's start_date unless catch-up is `all` (`_start_date`).
EARLIEST_LOGICAL_DATE = dt.date(2000, 1, 1)
#: `runner gate` and `runner finish` only read and write records: a short limit. The gate
#: retries a failed try (a warehouse hiccup); `finish` does not, because it fails on purpose
#: when the pipeline failed, and a retry would only conclude the run again.
FINISH_TIMEOUT_MINUTES = 10
GATE_RETRIES = 2
#: Variables a deployment sets on every Airflow worker (none has a default in the DAG file
#: except where noted); the README next to the DAG explains each.
DEPLOYMENT_ENVIRONMENT = (
    (
        "BENTLEY_WAREHOUSE_URL",
        "the shared warehouse, e.g. `postgresql+psycopg://bot@db:5432/bentley` or "
        "`mysql+pymysql://bot@db:3306/bentley` (default: SQLite under the outputs folder: one machine only)",
    ),
    ("BENTLEY_WAREHOUSE_PASSWORD", "its password (never in the URL, never in params)"),
    (
        "MLFLOW_TRACKING_URI",
        "the shared MLflow server, e.g. `http://mlflow:5000` (default: SQLite under the "
        "outputs folder: one machine only)",
    ),
    (
        "BENTLEY_OUTPUTS",
        "the outputs folder (lake, run folders, reports): shared storage every worker mounts at the same path",
    ),
    ("YAHOO_API_KEY, NEWS_API_KEY, BANKING_API_KEY", "keys of the live sources the profile uses"),
    ("BENTLEY_ALERT_WEBHOOK_URL", "where the monitor stage POSTs alerts (unset: none)"),
    (
        "BENTLEY_PYTHON, BENTLEY_PROJECT_DIR",
        "read where the DAG file is parsed: the project's Python and "
        "checkout on the workers, when they differ from the paths baked in at export",
    ),
)


@dataclass(frozen=True)
class ExportOptions:
    dag_id: str
    profile: str
    python: str  # the project's interpreter on the workers
    project: Path  # the project checkout on the workers (holds params/ and notebooks/)
    outputs: Path | None = None  # baked in as --outputs; None: $BENTLEY_OUTPUTS or <project>/outputs


def cron_for(config: Config) -> str:
    """A cron line that fires at every tick of `schedule` (in `workflow.timezone`), and as few
    other times as cron can manage; the gate drops the others.

    It is exact when `every_minutes` divides an hour or is a whole number of hours dividing
    a day; otherwise it fires every gcd(every_minutes, 60) minutes on the tick's phase.
    With `sessions_only`, hours outside `workflow.market_hours` and days outside
    `workflow.trading_days` are left out (holidays and early closes are the gate's job).
    """
    schedule, workflow = config.schedule, config.workflow
    every, offset = schedule.every_minutes, schedule.offset_minutes
    ticks = range(offset, 24 * 60, every)
    if every % 60 == 0 and (24 * 60) % every == 0:
        minutes = [offset % 60]
        hours: list[int] | None = sorted({m // 60 for m in ticks})
    else:
        step = math.gcd(every, 60)
        minutes = list(range(offset % step, 60, step))
        hours = None  # every hour
    days = "*"
    if schedule.sessions_only:
        opens, closes = workflow.market_hours.open, workflow.market_hours.close
        hours = [
            h
            for h in (hours if hours is not None else range(24))
            if any(opens <= dt.time(h, m) <= closes for m in minutes)
        ]
        order = list(get_args(Weekday))
        days = _cron_list(sorted(order.index(d) for d in workflow.trading_days), names=order)
    hour_field = "*" if hours is None or hours == list(range(24)) else _cron_list(hours)
    minute_field = "*" if minutes == list(range(60)) else _cron_list(minutes)
    return f"{minute_field} {hour_field} * * {days}"


def _cron_list(values: list[int], names: list[str] | None = None) -> str:
    """`5`, `0,15,30,45`, `10-15` or `MON-FRI`: the shortest plain form cron reads."""
    shown = [names[v] for v in values] if names else [str(v) for v in values]
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"{shown[0]}-{shown[-1]}"
    return ",".join(shown)


def render_dag(
    stages: list[Stage], retry: RetryPolicy, config: Config, options: ExportOptions, generated_on: dt.date
) -> str:
    """The DAG file's text: stage settings as literals, everything else a call to our CLI."""
    rows = "\n".join(
        f"    {s.name!r}: {{'upstream': {list(s.upstream)!r}, 'retries': {s.retries}, "
        f"'timeout_minutes': {s.timeout_s / 60:g}, 'trigger_rule': {s.trigger!r}}},"
        for s in stages
    )
    return _DAG_TEMPLATE.substitute(
        dag_id=repr(options.dag_id),
        profile=repr(options.profile),
        profile_name=options.profile,
        python=repr(options.python),
        project=repr(str(options.project)),
        outputs=repr(str(options.outputs) if options.outputs else None),
        generated_on=generated_on.isoformat(),
        stages=rows,
        cron=repr(cron_for(config)),
        timezone=repr(config.workflow.timezone),
        catchup=repr(config.schedule.catch_up == "all"),
        start=repr(_start_date(config, generated_on).isoformat()),
        backoff_base_s=f"{retry.backoff_base_s:g}",
        backoff_max_s=f"{retry.backoff_max_s:g}",
        skip_exit=SKIP_EXIT,
        gate_task=repr(GATE_TASK),
        gate_name=GATE_TASK,
        finish_task=repr(FINISH_TASK),
        finish_timeout=FINISH_TIMEOUT_MINUTES,
        gate_retries=GATE_RETRIES,
        schedule_text=_schedule_text(config),
        requirement=AIRFLOW_REQUIREMENT,
    )


def _start_date(config: Config, generated_on: dt.date) -> dt.date:
    """Airflow runs no task for a logical date before `start_date`.

    With catch-up `all`, Airflow creates a run for every interval since `start_date`, so it is
    the export date; otherwise no run is created retroactively and an early date lets manual
    runs ask for any session.
    """
    return generated_on if config.schedule.catch_up == "all" else EARLIEST_LOGICAL_DATE


def _schedule_text(config: Config) -> str:
    s, w = config.schedule, config.workflow
    where = (
        f"on {w.calendar} sessions between {w.market_hours.open:%H:%M} and {w.market_hours.close:%H:%M}"
        if s.sessions_only
        else "every day"
    )
    return f"every {s.every_minutes} min from {s.offset_minutes} min past midnight {where}, {w.timezone}"


def render_readme(stages: list[Stage], config: Config, options: ExportOptions, dag_file: str) -> str:
    variables = "\n".join(f"| `{name}` | {meaning} |" for name, meaning in DEPLOYMENT_ENVIRONMENT)
    tasks = " → ".join([GATE_TASK, *(s.name for s in stages), FINISH_TASK])
    outputs = f"`{options.outputs}`" if options.outputs else "`$BENTLEY_OUTPUTS`, else `<project>/outputs`"
    return _README_TEMPLATE.substitute(
        dag_id=options.dag_id,
        dag_file=dag_file,
        profile=options.profile,
        python=options.python,
        project=options.project,
        outputs=outputs,
        tasks=tasks,
        cron=cron_for(config),
        timezone=config.workflow.timezone,
        schedule_text=_schedule_text(config),
        catch_up=config.schedule.catch_up,
        variables=variables,
        requirement=AIRFLOW_REQUIREMENT,
        skip_exit=SKIP_EXIT,
    )


def export(
    stages: list[Stage],
    retry: RetryPolicy,
    config: Config,
    options: ExportOptions,
    out: Path,
    today: dt.date | None = None,
) -> list[Path]:
    """Write `<dag_id>.py` and `README.md` into `out`; return their paths."""
    if not DAG_ID_PATTERN.match(options.dag_id):
        from runner.dag import DagError

        raise DagError(f"dag id {options.dag_id!r} must be letters, digits, '_', '.' or '-'")
    today = today or dt.date.today()
    dag_file = out / f"{options.dag_id.replace('-', '_').replace('.', '_')}.py"
    atomic_write_text(dag_file, render_dag(stages, retry, config, options, today))
    readme = out / "README.md"
    atomic_write_text(readme, render_readme(stages, config, options, dag_file.name))
    return [dag_file, readme]


def default_python() -> str:
    """The interpreter running this export: the project's own, with every dependency installed."""
    return sys.executable


_DAG_TEMPLATE = Template('''\
"""Bentley Budget Bot: the stage pipeline as an Apache Airflow DAG.

Generated by `runner export airflow` on $generated_on from params/pipeline.yaml and the
`$profile_name` profile: export again after changing either. Every task calls the project's own
runner, so no stage logic lives here. Secrets are not in this file: tasks inherit the
worker's environment (see the README.md written next to it). Written for $requirement,
with the Airflow 2.10 import paths as a fallback.

Schedule: $schedule_text.
The cron line below covers every tick; the first task (`session_gate`) asks the project's exchange calendar whether this run is a tick, so holidays,
early closes and DST follow the same rules as `runner schedule`.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import os
import shlex
import subprocess

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.providers.standard.operators.python import ShortCircuitOperator
    from airflow.sdk import DAG, BaseOperator
except ImportError:  # Airflow 2.10
    from airflow import DAG
    from airflow.models.baseoperator import BaseOperator
    from airflow.operators.bash import BashOperator
    from airflow.operators.python import ShortCircuitOperator
try:
    from airflow.sdk import CronTriggerTimetable
except ImportError:
    from airflow.timetables.trigger import CronTriggerTimetable

DAG_ID = $dag_id
PROFILE = $profile
PYTHON = os.environ.get("BENTLEY_PYTHON", $python)
PROJECT_DIR = os.environ.get("BENTLEY_PROJECT_DIR", $project)
OUTPUTS = $outputs  # None: $$BENTLEY_OUTPUTS on the worker, else <project>/outputs
RUNNER = [PYTHON, "-m", "runner", "--root", PROJECT_DIR]
OUTPUTS_ARGS = ["--outputs", OUTPUTS] if OUTPUTS else []
SKIP_EXIT = $skip_exit  # `runner gate`: this run is not a tick

# From params/pipeline.yaml: upstream stages, retries, timeout and trigger rule per stage.
STAGES = {
$stages
}
BACKOFF_BASE_S = $backoff_base_s  # pipeline.yaml `retry`: the first retry waits this long, then doubles
BACKOFF_MAX_S = $backoff_max_s
# Doubling delays: Airflow 2.10 takes a flag, Airflow 3 the factor each retry multiplies by.
_BACKOFF_DEFAULT = inspect.signature(BaseOperator.__init__).parameters["retry_exponential_backoff"].default
EXPONENTIAL_BACKOFF = True if isinstance(_BACKOFF_DEFAULT, bool) else 2.0


def session_gate(**context):
    """Ask the project's calendar whether this run goes ahead, and as which pipeline run."""
    dag_run = context["dag_run"]
    command = [*RUNNER, "gate", "--profile", PROFILE, *OUTPUTS_ARGS,
               "--run-type", str(getattr(dag_run.run_type, "value", dag_run.run_type)),
               "--orchestrator-run-id", dag_run.run_id]
    logical_date = context.get("logical_date")
    if logical_date is not None:
        command += ["--at", logical_date.isoformat()]
    done = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, check=False)
    print(done.stderr, end="")
    if done.returncode == SKIP_EXIT:
        return False
    if done.returncode != 0:
        raise RuntimeError(f"runner gate exited {done.returncode}: {done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# What the gate decided, as Jinja rendered into each task's command line. Without a decision
# (the gate failed) the all_done tasks say so instead of running anything.
DECIDED = "{% if ti.xcom_pull(task_ids='$gate_name') %}"
UNDECIDED = "{% else %}echo 'session_gate failed: this run has no run id, nothing to do' >&2; exit 1{% endif %}"
RUN_ARGS = "{{ ti.xcom_pull(task_ids='$gate_name')['args'] }} --attempt {{ ti.try_number }}"
RUN_ID = "{{ ti.xcom_pull(task_ids='$gate_name')['run_id'] }}"

with DAG(
    dag_id=DAG_ID,
    description="Bentley Budget Bot: ingest to monitor, one task per stage notebook",
    doc_md=__doc__,
    schedule=CronTriggerTimetable($cron, timezone=$timezone),
    start_date=dt.datetime.fromisoformat($start).replace(tzinfo=dt.timezone.utc),
    catchup=$catchup,
    max_active_runs=1,
    params={"force": False},  # trigger with {"force": true} to run every stage, up to date or not
    tags=["bentley"],
    default_args={"owner": "bentley", "depends_on_past": False},
) as dag:
    gate = ShortCircuitOperator(task_id=$gate_task, python_callable=session_gate, retries=$gate_retries,
                                retry_delay=dt.timedelta(seconds=BACKOFF_BASE_S),
                                execution_timeout=dt.timedelta(minutes=$finish_timeout))
    tasks = {}
    for name, stage in STAGES.items():
        tasks[name] = BashOperator(
            task_id=name,
            bash_command=DECIDED + shlex.join([*RUNNER, "run", "--orchestrated", "--profile", PROFILE,
                                               *OUTPUTS_ARGS, "--stages", name])
            + " " + RUN_ARGS + "{{ ' --force' if params.force else '' }}" + UNDECIDED,
            cwd=PROJECT_DIR,
            do_xcom_push=False,
            retries=stage["retries"],
            retry_delay=dt.timedelta(seconds=BACKOFF_BASE_S),
            retry_exponential_backoff=EXPONENTIAL_BACKOFF,
            max_retry_delay=dt.timedelta(seconds=BACKOFF_MAX_S),
            execution_timeout=dt.timedelta(minutes=stage["timeout_minutes"]),
            trigger_rule=stage["trigger_rule"],
        )
    for name, stage in STAGES.items():
        for upstream in stage["upstream"]:
            tasks[upstream] >> tasks[name]
        if not stage["upstream"]:
            gate >> tasks[name]
    finish = BashOperator(
        task_id=$finish_task,
        bash_command=DECIDED + shlex.join([*RUNNER, "finish", *OUTPUTS_ARGS]) + " " + RUN_ID + UNDECIDED,
        cwd=PROJECT_DIR,
        do_xcom_push=False,
        retries=0,
        execution_timeout=dt.timedelta(minutes=$finish_timeout),
        trigger_rule="all_done",
    )
    list(tasks.values()) >> finish
''')

_README_TEMPLATE = Template("""\
# Airflow DAG `$dag_id`

`$dag_file` runs the Bentley Budget Bot pipeline on Apache Airflow ($requirement; the
imports fall back to Airflow 2.10 paths). It was generated by `runner export airflow` for the
`$profile` profile; export again after changing `params/`.

Tasks: $tasks.

- `session_gate` runs `runner gate`: a scheduled run goes ahead only on one of our ticks
  ($schedule_text; catch-up `$catch_up`), as the tick's run id (`sched-…`). A manual run goes
  ahead for the session of its logical date. Anything else exits $skip_exit and skips the whole
  run. The cron line `$cron` ($timezone) only has to cover the ticks.
- Each stage task runs `runner run --orchestrated --stages <stage>`. Reports, warehouse tables
  and MLflow runs are the ones a local run writes, and the run index
  (`<outputs>/runs/<run id>/index.html`) collects every task's stage. Retries (with
  exponential backoff), timeouts and trigger rules come from `params/pipeline.yaml`. Airflow
  retries a task, so the runner does not retry inside it.
- `finish` (trigger rule `all_done`) runs `runner finish`. It records the stages that never
  started, sets the run's final status, ends the MLflow parent run and releases the lease. It
  fails when a stage failed, so a failed pipeline is a failed DAG run.
- `max_active_runs=1`. The warehouse lease also keeps a local `runner run` and this DAG from
  writing at the same time.
- Trigger with config `{"force": true}` to run every stage, even those that are up to date.

## Install

1. Put this folder's `$dag_file` in the Airflow `dags/` folder of the scheduler, the DAG
   processor and every worker.
2. Every worker needs the project checkout at `$project` and its environment
   (`make setup`) at `$python`. If they live elsewhere, set `BENTLEY_PROJECT_DIR` and
   `BENTLEY_PYTHON` where the DAG is parsed.
3. Outputs: $outputs.

## Environment (set on every worker; the DAG file contains no secret)

| Variable | Meaning |
|---|---|
$variables

Airflow connections can hold the same values. Export them into the worker's environment
(for example from a secrets backend); the DAG never renders them into a command line.

## More than one machine (CeleryExecutor, Redis, MySQL)

The seed's deployment uses:
- `AIRFLOW__CORE__EXECUTOR=CeleryExecutor`;
- Redis as the Celery broker (`AIRFLOW__CELERY__BROKER_URL=redis://redis:6379/0`);
- MySQL as the Airflow metadata database and Celery result backend
  (`AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=mysql+mysqldb://airflow@mysql/airflow`,
  `AIRFLOW__CELERY__RESULT_BACKEND=db+mysql://airflow@mysql/airflow`).

Run `airflow scheduler`, `airflow dag-processor`, `airflow api-server` and one
`airflow celery worker` per machine. Tasks of one run may land on different machines, so
everything they share must be shared:
- `BENTLEY_WAREHOUSE_URL` must point at one MySQL or PostgreSQL warehouse. It holds the data
  tables, the stage cache, the run lease and the per-run record lock.
- `MLFLOW_TRACKING_URI` must point at one MLflow tracking server.
- `BENTLEY_OUTPUTS` must be one shared folder (NFS, EFS and the like) at the same path on
  every worker. It holds the lake, the run folders, the reports and the run index.
- The default SQLite warehouse and MLflow store work for a single machine only
  (LocalExecutor, or `airflow dags test`).
""")
