"""`python -m runner` / `bentley`: run the stage DAG and look at its runs.

Exit codes: 0 success, 1 a stage failed (or the run was stopped, or its storage or a service
failed mid-run), 2 a params, DAG or usage problem, or an outputs folder, warehouse or MLflow
store that cannot be reached or written (nothing ran), 3 another run holds the warehouse lease,
4 the lease was lost mid-run. Infrastructure failures are one line, not a traceback.
`runner health` exits 0 healthy, 1 degraded, 2 down.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from rich.console import Console
from rich.markup import escape

from bentley.config import (
    PARAMS_DIR,
    PIPELINE_FILE,
    ParamsError,
    load_config,
    load_pipeline,
    outputs_dir,
    profile_stores,
    project_root,
)
from runner.dag import DagError, build_dag
from runner.infra import InfraError, Interrupted, abandon_wait, failure_line
from runner.outcomes import EXIT_FAILED, EXIT_OK, EXIT_USAGE


def program_name(argv0: str | None = None) -> str:
    """`bentley` for the console script (`[project.scripts] bentley = "runner.cli:entry_point"`),
    `python -m runner` for the module: what the user typed, so `--help` shows a command that works."""
    name = Path(argv0 if argv0 is not None else (sys.argv[0] if sys.argv else "")).name
    return "bentley" if name.removesuffix(".exe") == "bentley" else "python -m runner"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=program_name(), description="Bentley Budget Bot pipeline runner")
    parser.add_argument("--root", type=Path, help="project folder holding params/ (default: found from cwd)")
    verbs = parser.add_subparsers(dest="verb", required=True)

    run = verbs.add_parser("run", help="execute the stage notebooks in dependency order")
    run.add_argument("--profile", default="default", help="params/profiles/<name>.yaml layered on default.yaml")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override one param (repeatable); the value is YAML",
    )
    run.add_argument("--stages", type=_csv, help="only these stages, e.g. etl,features")
    run.add_argument("--from", dest="start", metavar="STAGE", help="this stage and everything downstream")
    run.add_argument("--to", dest="stop", metavar="STAGE", help="this stage and everything upstream")
    run.add_argument("--run-id", help="name the run (reuse one to add stages to it)")
    run.add_argument("--logical-date", type=_date, help="as-of date YYYY-MM-DD (default: latest NYSE session)")
    run.add_argument(
        "--outputs",
        type=Path,
        help="this run's store, exactly (default: $BENTLEY_OUTPUTS or ./outputs for the default "
        "profile, <that>/profiles/<name> for any other)",
    )
    run.add_argument("--pipeline", type=Path, help="an alternative pipeline.yaml")
    run.add_argument("--force", action="store_true", help="run every selected stage, even when up to date")
    run.add_argument(
        "--orchestrated",
        action="store_true",
        help="one task of a run an orchestrator (Airflow) drives: join the run's shared lease and "
        "record, leave retries to the orchestrator, keep the run open for `runner finish`",
    )
    run.add_argument(
        "--attempt",
        type=int,
        default=1,
        metavar="N",
        help="with --orchestrated: the orchestrator's try number, recorded as the stage's attempt",
    )

    resume = verbs.add_parser(
        "resume", help="rerun a run's failed, skipped and unfinished stages with the run's own params and logical date"
    )
    resume.add_argument("run_id")
    resume.add_argument("--outputs", type=Path)

    status = verbs.add_parser("status", help="show a run's stages (default: the latest run)")
    status.add_argument("run_id", nargs="?")
    status.add_argument("--outputs", type=Path)

    dag = verbs.add_parser("dag", help="print the stages in order with their upstreams")
    dag.add_argument("--pipeline", type=Path)

    report = verbs.add_parser(
        "report",
        help="write the home page (outputs/index.html: the latest complete run's "
        "overview, then every run) and print its path",
    )
    report.add_argument("--outputs", type=Path)
    report.add_argument("--open", action="store_true", help="also open it in a browser when there is a display")

    finish = verbs.add_parser(
        "finish",
        help="conclude an --orchestrated run: record the stages it never "
        "started, set its status, end its MLflow run, release its lease",
    )
    finish.add_argument("run_id")
    finish.add_argument("--outputs", type=Path)

    export = verbs.add_parser("export", help="write the stage DAG for an orchestrator (Airflow)")
    export.add_argument("target", choices=["airflow"])
    export.add_argument("--out", type=Path, required=True, help="folder for the DAG file and its README")
    export.add_argument("--profile", default="default", help="the profile every task runs with")
    export.add_argument("--dag-id", default="bentley_pipeline")
    export.add_argument("--python", help="the project's Python on the workers (default: this interpreter)")
    export.add_argument("--project", type=Path, help="the project checkout on the workers (default: --root)")
    export.add_argument(
        "--outputs", type=Path, help="bake an outputs folder into the tasks (default: $BENTLEY_OUTPUTS on the worker)"
    )

    paper = verbs.add_parser("paper", help="the paper book: replay it from a date")
    paper_verbs = paper.add_subparsers(dest="paper_verb", required=True)
    rebook = paper_verbs.add_parser(
        "rebook", help="delete a paper book's sessions from a date on, so that runs for that date and later replay it"
    )
    rebook.add_argument("--from", dest="from_date", type=_date, required=True, metavar="YYYY-MM-DD")
    rebook.add_argument("--portfolio", help="the book (default: trade.paper.portfolio)")
    rebook.add_argument("--profile", default="default")
    rebook.add_argument("--outputs", type=Path)

    from runner import gate, health, schedule

    gate.add_arguments(
        verbs.add_parser(
            "gate",
            help="is an orchestrator's run one of our ticks? print its run id and logical date (exit "
            f"{gate.SKIP_EXIT}: skip it)",
        )
    )

    schedule.add_arguments(
        verbs.add_parser(
            "schedule",
            help="run the pipeline on its trigger (hourly in market hours by default), with a health endpoint",
        )
    )
    watch = verbs.add_parser(
        "watch", help="watch the paper book intraday in market hours: marks, risk rules, alerts, de-risking"
    )
    watch.add_argument("--profile", default="default")
    watch.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    watch.add_argument("--outputs", type=Path)
    watch.add_argument("--day", type=_date, help="replay this session now (sample or replay source) and exit")
    watch.add_argument(
        "--once",
        action="store_true",
        help="watch the current session if the market is open, else say when it opens; then exit",
    )
    watch.add_argument("--max-batches", type=int, help=argparse.SUPPRESS)  # tests: stop as if killed
    watch.add_argument("--now", type=dt.datetime.fromisoformat, help=argparse.SUPPRESS)  # rehearse a moment
    health.add_arguments(
        verbs.add_parser(
            "health", help="check warehouse, MLflow, lake, sources, disk, last run, freshness and scheduler"
        )
    )

    retention = verbs.add_parser(
        "retention",
        help="delete raw lake partitions, run folders and logs "
        "older than workflow.retention (relative to the logical date)",
    )
    retention.add_argument("--profile", default="default")
    retention.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    retention.add_argument("--logical-date", type=_date, help="default: latest closed NYSE session")
    retention.add_argument("--outputs", type=Path)
    retention.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    return parser


def entry_point() -> NoReturn:
    """`python -m runner` and the `bentley` script: `main`, then exit without the heap teardown.

    When `main` returns, every file is written and closed, every kernel is shut down and the
    warehouse is disposed. What is left is the interpreter freeing pandas, MLflow and
    SQLAlchemy objects one by one: about a second of CPU per process, and every task an
    orchestrator runs pays it. Exit handlers still run; only that teardown is skipped.
    """
    code = main()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(highlight=False, soft_wrap=True, record=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        root = (args.root or project_root()).resolve()
        handler = {
            "run": _run,
            "resume": _resume,
            "status": _status,
            "dag": _dag,
            "report": _report,
            "retention": _retention,
            "schedule": _schedule,
            "health": _health,
            "finish": _finish,
            "export": _export,
            "gate": _gate,
            "paper": _paper,
            "watch": _watch,
        }[args.verb]
        return handler(args, root, console)
    except (ParamsError, DagError, InfraError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", markup=True)
        return EXIT_USAGE
    except (Exception, Interrupted) as exc:
        line = failure_line(exc)  # a full disk, a warehouse gone, MLflow down; None: a bug, keep its traceback
        if line is None:
            raise
        err.print(f"[red]error:[/] {escape(line)}", markup=True)
        return EXIT_FAILED


def _stop_on_signals() -> threading.Event:
    """SIGTERM or Ctrl-C: running stages finish, nothing new starts (a second Ctrl-C aborts).

    A wait on MLflow in progress is given up at once (`runner.infra.abandon_wait`): the stop
    never waits for a service that does not answer.
    """
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        if signum == signal.SIGINT and stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print(f"{signal.Signals(signum).name}: finishing the running stage(s), then stopping", file=sys.stderr)
        abandon_wait()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


def _schedule(args: argparse.Namespace, root: Path, console: Console) -> int:
    from runner import schedule

    return schedule.command(args, root, console)


def _watch(args: argparse.Namespace, root: Path, console: Console) -> int:
    """SIGTERM or Ctrl-C ends the watch after the batch in progress (each batch is one transaction).
    A bad bar file is one line naming it, exit 1."""
    from bentley.live.bars import BarError
    from runner import watch

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        return watch.command(args, root, say=lambda line: console.print(escape(line), highlight=False), stop=stop)
    except BarError as exc:
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"[red]error:[/] {escape(str(exc))}", markup=True)
        return EXIT_FAILED


def _health(args: argparse.Namespace, root: Path, console: Console) -> int:
    from runner import health

    return health.command(args, root, console)


def _gate(args: argparse.Namespace, root: Path, console: Console) -> int:
    from runner import gate

    return gate.command(args, root, console)


def _finish(args: argparse.Namespace, root: Path, console: Console) -> int:
    from runner.pipeline import PipelineRun, plan_finish

    return PipelineRun(plan_finish(root, _store_of(args.outputs, root, args.run_id), args.run_id), console).finish()


def _export(args: argparse.Namespace, root: Path, console: Console) -> int:
    from runner import airflow

    config = load_config(args.profile, root=root)
    pipeline_file = root / PARAMS_DIR / PIPELINE_FILE
    spec = load_pipeline(pipeline_file)
    stages = build_dag(spec, root, config.workflow.max_execution_time_minutes, str(pipeline_file))
    options = airflow.ExportOptions(
        dag_id=args.dag_id,
        profile=args.profile,
        python=args.python or airflow.default_python(),
        project=(args.project or root).resolve(),
        outputs=args.outputs.resolve() if args.outputs else None,
    )
    for path in airflow.export(stages, spec.retry, config, options, args.out.resolve()):
        console.print(escape(str(path)))
    return EXIT_OK


def _paper(args: argparse.Namespace, root: Path, console: Console) -> int:
    """`paper rebook`: under the pipeline lease, so no run books the same portfolio meanwhile."""
    from bentley.trading.broker import rebook
    from bentley.warehouse import Warehouse
    from runner.lease import PIPELINE_LEASE, holder_alive, new_holder
    from runner.outcomes import EXIT_BUSY

    config = load_config(args.profile, root=root)
    portfolio = args.portfolio or config.trade.paper.portfolio
    warehouse = Warehouse.from_settings(config.warehouse.url, outputs_dir(args.outputs, root, args.profile))
    holder = new_holder()
    try:
        grant = warehouse.acquire_lease(
            PIPELINE_LEASE, holder, f"rebook-{portfolio}", config.runner.lease_ttl_s, holder_alive=holder_alive
        )
        if not grant.acquired:
            console.print(f"busy: run {grant.run_id} holds the warehouse lease; nothing was deleted")
            return EXIT_BUSY
        try:
            summary = rebook(warehouse, portfolio, args.from_date)
        except ValueError as exc:
            raise DagError(str(exc)) from None
        finally:
            warehouse.release_lease(PIPELINE_LEASE, holder)
        console.print(escape(summary.sentence()))
        return EXIT_OK
    finally:
        warehouse.dispose()


def _resume(args: argparse.Namespace, root: Path, console: Console) -> int:
    from runner.pipeline import PipelineRun, plan_resume

    plan = plan_resume(root, _store_of(args.outputs, root, args.run_id), args.run_id)
    return PipelineRun(plan, console, _stop_on_signals()).execute()


def _run(args: argparse.Namespace, root: Path, console: Console) -> int:
    # Params first, before pandas, SQLAlchemy and MLflow are imported: a bad params file (an
    # alias bomb, a typo) is refused in a small, fast process.
    load_config(args.profile, args.overrides, root)
    from runner.pipeline import PipelineRun, RunRequest, plan_run

    request = RunRequest(
        root=root,
        outputs=outputs_dir(args.outputs, root, args.profile),
        profile=args.profile,
        overrides=args.overrides,
        stages=args.stages,
        start=args.start,
        stop=args.stop,
        run_id=args.run_id,
        logical_date=args.logical_date,
        pipeline_file=args.pipeline.resolve() if args.pipeline else None,
        force=args.force,
        orchestrated=args.orchestrated,
        attempt=max(args.attempt, 1),
    )
    plan = plan_run(request)
    return PipelineRun(plan, console, _stop_on_signals()).execute()


def _status(args: argparse.Namespace, root: Path, console: Console) -> int:
    from runner.pipeline import all_manifests

    manifests = [m for store in profile_stores(args.outputs, root) for m in all_manifests(store)]
    if args.run_id:
        chosen = [m for m in manifests if m["run_id"] == args.run_id]
        if not chosen:
            raise DagError(f"no run {args.run_id!r} under {_store_of(args.outputs, root, args.run_id) / 'runs'}")
        manifest = chosen[0]
    elif manifests:
        manifest = max(manifests, key=lambda m: m.get("started_at") or "")
    else:
        console.print("no runs yet: try `make pipeline`")
        return EXIT_OK
    console.print(
        f"run {manifest['run_id']}: {manifest['status']} · logical date {manifest['logical_date']} "
        f"· profile {manifest['profile']} · {manifest.get('duration_s') or 0:.1f} s"
    )
    for name, stage in manifest["stages"].items():
        duration = stage.get("duration_s")
        shown = f"{duration:6.1f} s" if isinstance(duration, (int, float)) else "        "
        note = stage.get("error") or stage.get("reason") or ""
        console.print(escape(f"  {name:<12} {stage['status']:<8} {shown}  {note}".rstrip()))
    return EXIT_OK


def _dag(args: argparse.Namespace, root: Path, console: Console) -> int:
    pipeline_file = args.pipeline.resolve() if args.pipeline else root / PARAMS_DIR / PIPELINE_FILE
    config = load_config(root=root)
    stages = build_dag(
        load_pipeline(pipeline_file), root, config.workflow.max_execution_time_minutes, str(pipeline_file)
    )
    for number, stage in enumerate(stages, start=1):
        upstream = ", ".join(stage.upstream) or "-"
        console.print(f"{number:>2}. {stage.name:<12} <- {upstream:<24} {stage.notebook.relative_to(root)}")
    return EXIT_OK


def _report(args: argparse.Namespace, root: Path, console: Console) -> int:
    """The home page of the store with the newest run, rebuilt (so notebooks run in JupyterLab
    since the last run are listed, and a missing overview is read from the warehouse)."""
    from bentley import home
    from runner.pipeline import all_manifests

    stores = [(store, all_manifests(store)) for store in profile_stores(args.outputs, root)]
    stores = [(store, manifests) for store, manifests in stores if manifests]
    if not stores:
        console.print("no runs yet: try `make pipeline`")
        return EXIT_FAILED
    store, manifests = max(stores, key=lambda item: max(m.get("started_at") or "" for m in item[1]))
    page = home.write_home(store, manifests)
    console.print(escape(str(page)))
    if args.open and (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform == "darwin"):
        import webbrowser

        webbrowser.open(page.resolve().as_uri())
    return EXIT_OK


def _retention(args: argparse.Namespace, root: Path, console: Console) -> int:
    from bentley import calendar, retention

    config = load_config(args.profile, args.overrides, root)
    logical_date = args.logical_date or calendar.latest_closed_session(
        dt.datetime.now(dt.UTC), config.workflow.calendar
    )
    outputs = outputs_dir(args.outputs, root, args.profile)
    expired = retention.plan(outputs, config.workflow.retention, logical_date)
    verb = "would delete" if args.dry_run else "deleting"
    for item in expired:
        console.print(escape(f"{verb} {item.kind:<9} {item.dated}  (before {item.cutoff})  {item.path}"))
    if not args.dry_run:
        retention.apply(expired)
    console.print(f"{len(expired)} path(s) {'expired' if args.dry_run else 'deleted'}; logical date {logical_date}")
    return EXIT_OK


def _store_of(explicit: Path | None, root: Path, run_id: str) -> Path:
    """The store holding `run_id`: `--outputs`, else whichever profile's store has the run."""
    stores = profile_stores(explicit, root)
    return next((store for store in stores if (store / "runs" / run_id).is_dir()), stores[0])


def _csv(text: str) -> list[str]:
    """`a, b` -> ["a", "b"]; `--stages ""` gives [], not None, so the preflight refuses it instead
    of running every stage (None means the flag was left out)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a YYYY-MM-DD date") from None


if __name__ == "__main__":
    sys.exit(main())
