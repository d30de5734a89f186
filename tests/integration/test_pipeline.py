"""The whole pipeline through the runner's CLI on the tiny ci profile.

These tests run real notebooks in real kernels and check what a user relies on: the run
folder, the reports, the warehouse rows, the MLflow runs, and that a rerun changes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from bentley import calendar, inputs
from bentley.config import load_config
from bentley.warehouse import Warehouse
from tests.pipeline_facts import STAGES, table_fingerprints
from tests.tiny_pipeline import write_pipeline

pytestmark = pytest.mark.integration

LOGICAL_DATE = "2025-06-02"
TITLES = {
    "ingest": "Ingest: sources to the raw data lake",
    "etl": "ETL: validate and load the warehouse",
    "features": "Features: technical indicators and returns",
    "technical": "Technical analysis: trend, momentum, volatility and volume signals",
    "risk": "Portfolio risk: returns, volatility, drawdowns, VaR and stress",
    "sentiment": "News and social sentiment: tone and next-day returns",
    "budget": "Budget: spending, savings, net worth and investable cash",
    "anomalies": "Anomalies: unusual days in returns, volume and range",
    "train": "Train: return-direction models, champion and challenger",
    "optimize": "Optimize: target portfolio weights",
    "trade": "Trade: signals, risk limits, backtest and paper portfolio",
    "monitor": "Monitor: KPIs, alerts and health",
}
#: Plots each report must carry (embedded PNGs).
MIN_IMAGES = {
    "ingest": 1,
    "etl": 1,
    "features": 1,
    "technical": 2,
    "risk": 4,
    "sentiment": 1,
    "budget": 2,
    "anomalies": 1,
    "train": 3,
    "optimize": 1,
    "trade": 7,
    "monitor": 1,
}
MODEL = "bentley-return-direction"


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("outputs")


SECRET = "sentinel-Secret-4711"


@pytest.fixture(scope="module")
def first_run(outputs: Path, root: Path, clean_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**clean_env, "BENTLEY_WAREHOUSE_PASSWORD": SECRET, "YAHOO_API_KEY": SECRET, "NEWS_API_KEY": SECRET}
    result = run_cli(
        ["run", "--profile", "ci", "--logical-date", LOGICAL_DATE, "--outputs", str(outputs), "--run-id", "ci-first"],
        env,
        root,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_run_folder_holds_manifest_notebooks_reports_and_index(first_run, outputs: Path) -> None:
    run_dir = outputs / "runs" / "ci-first"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "success"
    assert manifest["logical_date"] == LOGICAL_DATE
    assert re.fullmatch(r"[0-9a-f]{64}", manifest["params_hash"])
    assert list(manifest["stages"]) == STAGES
    for stage in STAGES:
        entry = manifest["stages"][stage]
        assert entry["status"] == "success"
        assert entry["duration_s"] > 0 and entry["started_at"] < entry["ended_at"]
        assert (run_dir / "notebooks" / f"{stage}.ipynb").is_file()
        assert (run_dir / entry["report"]).is_file()
    index = (run_dir / "index.html").read_text()
    for stage in STAGES:
        assert f"reports/{stage}.html" in index
    assert "ci-first" in (outputs / "index.html").read_text()
    for stage in STAGES:
        assert f"✔ {stage}" in first_run.stdout  # one progress line per stage


def test_reports_show_title_date_source_and_an_embedded_image(first_run, outputs: Path) -> None:
    for stage, title in TITLES.items():
        html = (outputs / "runs" / "ci-first" / "reports" / f"{stage}.html").read_text()
        assert title in html
        assert LOGICAL_DATE in html
        assert "SAMPLE DATA" in html
        assert html.count("data:image/png;base64,") >= MIN_IMAGES[stage], stage
        assert "stage.open_stage(" not in html, "code cells are hidden"
        assert "Warning" not in html, f"{stage}: a warning leaked into the report"


def test_prices_has_one_row_per_ticker_and_session(first_run, outputs: Path) -> None:
    cfg = load_config("ci")
    start, end = cfg.history.window(dt.date.fromisoformat(LOGICAL_DATE))
    sessions = calendar.sessions(start, end)
    warehouse = Warehouse(f"sqlite:///{outputs / 'warehouse.db'}")
    prices = warehouse.read("prices")
    tickers = sorted(prices["ticker"].unique())
    assert len(tickers) == cfg.sample.n_tickers + 1 and cfg.universe.benchmark in tickers
    assert len(prices) == len(tickers) * len(sessions)
    assert prices["adj_close"].isna().all(), "sample prices are stored as traded (point in time)"
    as_of = inputs.load_prices(warehouse, cfg, dt.date.fromisoformat(LOGICAL_DATE))
    assert (as_of["adj_close"] > 0).all() and len(as_of) == len(prices)
    features = warehouse.read("features")
    assert len(features) == len(prices)
    assert {
        "sma_200",
        "rsi_14",
        "macd",
        "bb_upper",
        "atr_14",
        "obv",
        "adx_14",
        "stoch_k",
        "ret_21d",
        "vol_63d",
        "volume_z_21",
    } <= set(features.columns)
    assert warehouse.count("news") > 0 and warehouse.count("transactions") > 0 and warehouse.count("holdings") > 0
    ledger = warehouse.read("stage_runs", where={"run_id": "ci-first"})
    assert sorted(ledger["stage"]) == sorted(STAGES) and set(ledger["status"]) == {"success"}
    assert warehouse.read("pipeline_runs", where={"run_id": "ci-first"})["status"].tolist() == ["success"]
    quality = warehouse.read("data_quality", where={"run_id": "ci-first"})
    assert {"prices", "news", "transactions", "holdings"} <= set(quality["dataset"])
    warehouse.dispose()


def test_analytics_tables(first_run, outputs: Path) -> None:
    from bentley.analytics.risk import METRICS

    warehouse = Warehouse(f"sqlite:///{outputs / 'warehouse.db'}")
    risk = warehouse.read("risk_metrics", where={"run_id": "ci-first"})
    scopes = set(risk["scope"])
    assert {"portfolio:holdings", "portfolio:equal_weight", "BBIX"} <= scopes
    assert set(risk["metric"]) == set(METRICS)
    assert len(risk) == len(scopes) * len(METRICS)
    held = risk[risk["scope"] == "portfolio:holdings"].set_index("metric")["value"]
    assert held["var_95_historical"] < 0 and held["cvar_95_historical"] <= held["var_95_historical"]
    assert held["max_drawdown"] < 0
    daily = warehouse.read("sentiment_daily")
    assert len(daily) > 0 and daily["mean_compound"].between(-1, 1).all()
    assert set(warehouse.read("technical_signals", where={"run_id": "ci-first"})["rule"]) >= {"macd_bullish_cross"}
    assert warehouse.count("transaction_categories") == warehouse.count("transactions")
    assert warehouse.count("budget_monthly") > 0 and warehouse.count("net_worth") > 0
    cash = warehouse.read("investable_cash")
    assert cash["as_of"].dt.strftime("%Y-%m-%d").tolist() == [LOGICAL_DATE]
    assert (cash["investable_cash"] >= 0).all()
    warehouse.dispose()


def test_mlflow_has_a_parent_and_one_nested_run_per_stage(first_run, outputs: Path) -> None:
    manifest = json.loads((outputs / "runs" / "ci-first" / "manifest.json").read_text())
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs / 'mlflow' / 'mlflow.db'}")
    parent_id = manifest["mlflow"]["parent_run_id"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["sample.n_tickers"] == "3"
    children = client.search_runs(
        [manifest["mlflow"]["experiment_id"]], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    stage_runs = [run for run in children if run.info.run_name in STAGES]
    assert sorted(run.info.run_name for run in stage_runs) == sorted(STAGES)
    candidates = sorted(run.info.run_name for run in children if run.info.run_name not in STAGES)
    assert candidates == ["train:boosted", "train:logistic"], "one nested run per trained candidate"
    for child in stage_runs:
        assert child.data.params["logical_date"] == LOGICAL_DATE
        assert "duration_s" in child.data.metrics
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {f"{child.info.run_name}.ipynb", f"{child.info.run_name}.html"} <= artifacts
    ingest = next(c for c in children if c.info.run_name == "ingest")
    assert ingest.data.metrics["rows_prices"] > 0
    assert ingest.data.params["history.years"] == "1"
    optimize = next(c for c in children if c.info.run_name == "optimize")
    assert {"efficient_frontier.png", "target_weights.csv"} <= {
        a.path for a in client.list_artifacts(optimize.info.run_id)
    }
    boosted = next(c for c in children if c.info.run_name == "train:boosted")
    assert boosted.data.params["ml.horizon"] == "5" and "holdout_roc_auc" in boosted.data.metrics
    assert any(key.startswith("importance/") for key in boosted.data.metrics)
    assert {"model", "fold_metrics.csv", "feature_importances.csv", "config.json"} <= {
        a.path for a in client.list_artifacts(boosted.info.run_id)
    }


def test_first_run_registers_both_candidates_and_crowns_a_champion(first_run, outputs: Path) -> None:
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs / 'mlflow' / 'mlflow.db'}")
    versions = {str(v.version): v for v in client.search_model_versions(f"name = '{MODEL}'")}
    assert {"1", "2"} <= set(versions)
    for version in versions.values():
        assert re.fullmatch(r"[0-9a-f]{64}", version.tags["sha256"])
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert str(champion.version) in {"1", "2"}
    assert champion.tags["promotion_decision"] == "promoted"
    warehouse = Warehouse(f"sqlite:///{outputs / 'warehouse.db'}")
    decision = warehouse.read("model_decisions", where={"run_id": "ci-first"})
    assert decision["promoted"].tolist() == [True] and decision["champion_version"].isna().all()
    assert decision["reason"].iloc[0].startswith("first champion")
    predictions = warehouse.read("predictions", where={"run_id": "ci-first"})
    assert set(predictions["model_version"]) == {str(champion.version)}
    assert predictions["date"].max() == pd.Timestamp(LOGICAL_DATE)
    assert predictions["proba_up"].between(0, 1).all() and predictions["ticker"].nunique() == 3
    assert len(warehouse.read("anomalies")) > 0
    weights = warehouse.read("target_weights", where={"run_id": "ci-first"})
    assert weights["weight"].sum() == pytest.approx(1.0) and (weights["weight"] >= 0).all()
    assert weights["weight"].max() <= 0.5 + 1e-9, "min(max_weight 0.6, 1/min_names 2)"
    warehouse.dispose()


def test_kill_9_mid_stage_then_resume_equals_a_clean_run(
    first_run, outputs: Path, tmp_path: Path, root: Path, clean_env: dict[str, str]
) -> None:
    import psutil

    clean = table_fingerprints(outputs)
    crashed = tmp_path / "crashed"
    runner = subprocess.Popen(
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
            str(crashed),
            "--run-id",
            "ci-killed",
        ],
        cwd=root,
        env=clean_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    manifest_file = crashed / "runs" / "ci-killed" / "manifest.json"
    deadline = time.monotonic() + 300
    while _stage_status(manifest_file, "features") != "running":
        assert time.monotonic() < deadline and runner.poll() is None, "features never started"
        time.sleep(0.05)
    kernels = psutil.Process(runner.pid).children(recursive=True)
    runner.kill()  # SIGKILL: no cleanup of any kind
    runner.wait()
    gone, alive = psutil.wait_procs(kernels, timeout=15)
    assert not alive, "orphaned kernels exit on their own once the runner is gone"

    resumed = run_cli(["resume", "ci-killed", "--outputs", str(crashed)], clean_env, root)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    manifest = json.loads(manifest_file.read_text())
    assert manifest["status"] == "success" and "resumes" in manifest
    assert {s["status"] for s in manifest["stages"].values()} == {"success"}
    assert table_fingerprints(crashed) == clean
    assert not [p for p in crashed.rglob("*") if p.name.endswith(".tmp")], "no temp files left behind"


def _stage_status(manifest_file: Path, stage: str) -> str | None:
    try:
        return json.loads(manifest_file.read_text())["stages"][stage]["status"]
    except (OSError, ValueError, KeyError):
        return None


def test_a_rerun_with_nothing_changed_skips_every_stage(
    first_run, outputs: Path, root: Path, clean_env: dict[str, str]
) -> None:
    again = run_cli(
        [
            "run",
            "--profile",
            "ci",
            "--logical-date",
            LOGICAL_DATE,
            "--outputs",
            str(outputs),
            "--run-id",
            "ci-unchanged",
        ],
        clean_env,
        root,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    manifest = json.loads((outputs / "runs" / "ci-unchanged" / "manifest.json").read_text())
    assert {name: s["status"] for name, s in manifest["stages"].items()} == dict.fromkeys(STAGES, "cached")
    assert all(s["reason"] == "up to date: unchanged since run ci-first" for s in manifest["stages"].values())
    assert manifest["mlflow"]["parent_run_id"] is None, "nothing executed, nothing to track"
    assert "0 ran, 12 up to date" in again.stdout
    index = (outputs / "runs" / "ci-unchanged" / "index.html").read_text()
    assert "../ci-first/reports/train.html" in index, "a skipped stage links the report that made its results"


def test_same_logical_date_twice_gives_identical_tables(
    first_run, outputs: Path, root: Path, clean_env: dict[str, str]
) -> None:
    before = table_fingerprints(outputs)
    again = run_cli(
        [
            "run",
            "--profile",
            "ci",
            "--logical-date",
            LOGICAL_DATE,
            "--outputs",
            str(outputs),
            "--run-id",
            "ci-second",
            "--force",
        ],
        clean_env,
        root,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert table_fingerprints(outputs) == before
    index = (outputs / "index.html").read_text()
    assert index.index("ci-second") < index.index("ci-first"), "newest run first"


def test_secrets_in_the_environment_never_reach_an_output(first_run, outputs: Path) -> None:
    assert SECRET not in first_run.stdout + first_run.stderr
    leaks = [p for p in outputs.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not leaks, f"secret found in {leaks}"


def test_status_and_dag_verbs(first_run, outputs: Path, root: Path, clean_env: dict[str, str]) -> None:
    status = run_cli(["status", "ci-first", "--outputs", str(outputs)], clean_env, root)
    assert status.returncode == 0 and "ci-first: success" in status.stdout
    assert all(stage in status.stdout for stage in STAGES)
    dag = run_cli(["dag"], clean_env, root)
    assert dag.returncode == 0
    assert re.search(r"1\. ingest\s+<- -", dag.stdout) and re.search(r"2\. etl\s+<- ingest", dag.stdout)


def run_scratch(tmp_path: Path, pipeline: Path, run_id: str, root: Path, env: dict[str, str]):
    outputs = tmp_path / "out"
    result = run_cli(
        [
            "run",
            "--pipeline",
            str(pipeline),
            "--outputs",
            str(outputs),
            "--run-id",
            run_id,
            "--logical-date",
            LOGICAL_DATE,
        ],
        env,
        root,
    )
    manifest = json.loads((outputs / "runs" / run_id / "manifest.json").read_text())
    return result, outputs, manifest


def test_a_failing_stage_fails_the_run_and_skips_downstream(
    tmp_path: Path, root: Path, clean_env: dict[str, str]
) -> None:
    pipeline = write_pipeline(
        tmp_path,
        {
            "boom": {"code": 'raise ValueError("planted failure for the test")'},
            "after": {"code": "print('never runs')", "upstream": ["boom"]},
        },
    )
    result, outputs, manifest = run_scratch(tmp_path, pipeline, "bad", root, clean_env)
    assert result.returncode == 1
    kept = outputs / "runs" / "bad" / "notebooks" / "boom.ipynb"
    assert str(kept) in result.stdout
    assert "ValueError: planted failure for the test" in result.stdout
    assert "An Exception was encountered" in kept.read_text()  # papermill's error banner
    assert manifest["status"] == "failed"
    assert manifest["stages"]["boom"]["status"] == "failed"
    assert manifest["stages"]["after"]["status"] == "skipped"
    assert (outputs / "runs" / "bad" / "reports" / "boom.html").is_file()
    warehouse = Warehouse(f"sqlite:///{outputs / 'warehouse.db'}")
    statuses = dict(warehouse.read("stage_runs")[["stage", "status"]].itertuples(index=False))
    assert statuses == {"boom": "failed", "after": "skipped"}
    warehouse.dispose()


def test_a_stage_over_its_time_limit_is_killed(tmp_path: Path, root: Path, clean_env: dict[str, str]) -> None:
    pid_file = tmp_path / "kernel.pid"
    body = f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(120)"
    pipeline = write_pipeline(tmp_path, {"slow": {"code": body, "timeout": 0.1}})
    result, _, manifest = run_scratch(tmp_path, pipeline, "slow", root, clean_env)
    assert result.returncode == 1
    assert "timed out after 6 s" in result.stdout
    assert manifest["stages"]["slow"]["status"] == "failed"
    assert manifest["stages"]["slow"]["duration_s"] < 60
    kernel_pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(kernel_pid, 0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "sample.n_tickrs=3"], "sample.n_tickrs: unknown key"),
        (["--stages", "ingest,featurs"], "unknown stage 'featurs'"),
        (["--profile", "nope"], "no such profile 'nope'"),
        (["--set", "history.end=2030-01-01"], "after the logical date"),
    ],
)
def test_bad_invocations_exit_2_before_anything_runs(
    args: list[str], message: str, tmp_path: Path, root: Path, clean_env: dict[str, str]
) -> None:
    outputs = tmp_path / "out"
    result = run_cli(["run", "--outputs", str(outputs), "--logical-date", LOGICAL_DATE, *args], clean_env, root)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, "one clear line"
    assert not outputs.exists(), "nothing is written after a params or DAG error"


def test_notebook_runs_standalone_with_its_defaults(tmp_path: Path, root: Path, clean_env: dict[str, str]) -> None:
    """What JupyterLab does: execute the committed notebook with no injected parameters."""
    import papermill

    env_outputs = tmp_path / "standalone"
    clean_env_local = {**clean_env, "BENTLEY_OUTPUTS": str(env_outputs)}
    monkey = pytest.MonkeyPatch()
    for key, value in clean_env_local.items():
        monkey.setenv(key, value)
    try:
        papermill.execute_notebook(
            str(root / "notebooks" / "01_ingest.ipynb"),
            str(tmp_path / "ingest.ipynb"),
            kernel_name="python3",
            progress_bar=False,
            cwd=str(root / "notebooks"),
        )
    finally:
        monkey.undo()
    files = list((env_outputs / "lake" / "raw" / "sample" / "prices").glob("ingest_date=*/*.parquet"))
    assert len(files) == 1
    prices = pd.read_parquet(files[0])
    assert prices["ticker"].nunique() == load_config().sample.n_tickers + 1


def test_the_next_day_fetches_only_the_overlap_and_completes_the_history(
    first_run, outputs: Path, root: Path, clean_env: dict[str, str]
) -> None:
    """Runs after the idempotency test on purpose: it moves the cursors forward."""
    next_day = "2025-06-04"
    result = run_cli(
        [
            "run",
            "--profile",
            "ci",
            "--logical-date",
            next_day,
            "--outputs",
            str(outputs),
            "--run-id",
            "ci-next",
            "--stages",
            "ingest,etl",
        ],
        clean_env,
        root,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    landed = pd.read_parquet(
        outputs / "lake" / "raw" / "sample" / "prices" / f"ingest_date={next_day}" / "ci-next.parquet"
    )
    tickers = landed["ticker"].nunique()
    overlap = load_config("ci").sources.market.overlap_sessions
    assert len(landed) == tickers * (overlap + 3), "5 overlap sessions + 2 June + 3 June + 4 June"
    cfg = load_config("ci")
    first_start, _ = cfg.history.window(dt.date.fromisoformat(LOGICAL_DATE))
    warehouse = Warehouse(f"sqlite:///{outputs / 'warehouse.db'}")
    prices = warehouse.read("prices")
    assert len(prices) == tickers * len(calendar.sessions(first_start, next_day))
    cursors = warehouse.read("sync_state", where={"dataset": "prices"})
    assert set(cursors["cursor_date"].dt.strftime("%Y-%m-%d")) == {next_day}
    warehouse.dispose()


def test_retention_dry_run_lists_and_keeps(first_run, outputs: Path, root: Path, clean_env: dict[str, str]) -> None:
    lake_files = sorted((outputs / "lake").rglob("*.parquet"))
    result = run_cli(
        ["retention", "--dry-run", "--profile", "ci", "--logical-date", "2030-01-02", "--outputs", str(outputs)],
        clean_env,
        root,
    )
    assert result.returncode == 0, result.stderr
    assert "would delete raw" in result.stdout and "ingest_date=2025-06-02" in result.stdout
    assert sorted((outputs / "lake").rglob("*.parquet")) == lake_files
    kept = run_cli(
        ["retention", "--profile", "ci", "--logical-date", "2025-06-04", "--outputs", str(outputs)], clean_env, root
    )
    assert kept.returncode == 0 and "0 path(s) deleted" in kept.stdout
    assert sorted((outputs / "lake").rglob("*.parquet")) == lake_files


def test_retraining_evaluates_a_challenger_against_the_champion(
    first_run, outputs: Path, root: Path, clean_env: dict[str, str]
) -> None:
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs / 'mlflow' / 'mlflow.db'}")
    champion_before = str(client.get_model_version_by_alias(MODEL, "champion").version)
    result = run_cli(
        [
            "run",
            "--profile",
            "ci",
            "--logical-date",
            LOGICAL_DATE,
            "--outputs",
            str(outputs),
            "--run-id",
            "ci-retrain",
            "--stages",
            "train",
            "--set",
            "ml.retrain=true",
        ],
        clean_env,
        root,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    challenger = client.get_model_version_by_alias(MODEL, "challenger")
    assert challenger.tags["pipeline_run_id"] == "ci-retrain", "the challenger is a version trained by this run"
    warehouse = Warehouse(f"sqlite:///{outputs / 'warehouse.db'}")
    decision = warehouse.read("model_decisions", where={"run_id": "ci-retrain"}).iloc[0]
    assert decision["champion_version"] == champion_before
    assert decision["challenger_version"] == str(challenger.version)
    # Same data, same seed: the challenger ties the champion, and a tie is below the margin.
    assert decision["challenger_value"] == pytest.approx(decision["champion_value"])
    assert not decision["promoted"] and "below the margin" in decision["reason"]
    assert challenger.tags["promotion_decision"] == "rejected"
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == champion_before
    monitoring = warehouse.read("model_monitoring", where={"run_id": "ci-retrain"}).iloc[0]
    assert monitoring["model_version"] == champion_before and 0 <= monitoring["recent_accuracy"] <= 1
    assert "retraining_required" in monitoring and monitoring["max_psi"] >= 0
    warehouse.dispose()
    report = (outputs / "runs" / "ci-retrain" / "reports" / "train.html").read_text()
    assert "Not promoted" in report and f"{MODEL} v{champion_before}" in report


def test_a_tampered_champion_artifact_stops_the_train_stage(
    first_run, outputs: Path, root: Path, clean_env: dict[str, str]
) -> None:
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs / 'mlflow' / 'mlflow.db'}")
    champion = client.get_model_version_by_alias(MODEL, "champion")
    stored = next((outputs / "mlflow" / "artifacts").glob(f"**/{champion.run_id}/artifacts/model/model.skops"))
    original = stored.read_bytes()
    stored.write_bytes(original + b"tampered")
    try:
        result = run_cli(
            [
                "run",
                "--profile",
                "ci",
                "--logical-date",
                LOGICAL_DATE,
                "--outputs",
                str(outputs),
                "--run-id",
                "ci-tampered",
                "--stages",
                "train",
                "--force",
            ],
            clean_env,
            root,  # forced: the model must be loaded
        )
    finally:
        stored.write_bytes(original)
    assert result.returncode == 1
    assert "ModelIntegrityError" in result.stdout and "does not match" in result.stdout
    warehouse = Warehouse(f"sqlite:///{outputs / 'warehouse.db'}")
    assert warehouse.read("predictions", where={"run_id": "ci-tampered"}).empty
    warehouse.dispose()


def test_trade_writes_signals_backtest_and_a_reconciled_paper_book(first_run, outputs: Path) -> None:
    from bentley.analytics.risk import METRICS

    warehouse = Warehouse(f"sqlite:///{outputs / 'warehouse.db'}")
    signals = warehouse.read("signals", where={"run_id": "ci-first"})
    assert len(signals) == 3 and set(signals["date"]) == {pd.Timestamp(LOGICAL_DATE)}
    parts = signals["model"] + signals["technical"] + signals["sentiment"]
    assert (parts - signals["score"]).abs().max() < 1e-12
    assert (signals["weight"] <= 0.25 + 1e-12).all(), "trade.limits.max_position_weight"
    metrics = warehouse.read("backtest_metrics", where={"run_id": "ci-first"})
    assert set(metrics["strategy"]) == {"signal", "benchmark", "sweep:best"}
    assert set(metrics["metric"]) == {*METRICS, "psr", "dsr", "trials"}
    selection = metrics[metrics["strategy"] == "signal"].set_index("metric")["value"]
    assert 0 <= selection["psr"] <= 1 and 0 <= selection["dsr"] <= 1 and selection["trials"] == 16
    assert len(warehouse.read("backtest_sweep", where={"run_id": "ci-first"})) == 16
    orders = warehouse.read("orders")
    held = signals.loc[signals["weight"] > 0, "ticker"]
    assert set(orders["ticker"]) == set(held) and (orders["status"] == "pending").all()
    value = warehouse.read("portfolio_values").iloc[0]
    assert value["equity"] == pytest.approx(100000) and value["cash"] == pytest.approx(100000)
    warehouse.dispose()


def test_sql_rebuilds_the_stored_backtest_figures(first_run, outputs: Path) -> None:
    """From backtest_equity and backtest_positions alone: each strategy's final equity, its
    published Sharpe ratio (or why it is n/a), the sweep's best figures and the turnover."""
    warehouse = Warehouse(f"sqlite:///{outputs / 'warehouse.db'}")
    metrics = warehouse.read("backtest_metrics", where={"run_id": "ci-first"}).set_index(["strategy", "metric"])
    capital = load_config("ci").trade.capital
    rf = (1 + load_config("ci").risk.risk_free_rate) ** (1 / 252) - 1

    def query(sql: str, **params: object) -> pd.DataFrame:
        with warehouse.engine.connect() as conn:
            return pd.read_sql(sql, conn.connection.driver_connection, params={"run": "ci-first", **params})

    curves = query("SELECT strategy, date, net_return, equity FROM backtest_equity WHERE run_id = :run ORDER BY date")
    assert set(curves["strategy"]) == {"signal", "benchmark", "sweep:best"}
    stats = query(
        """
        SELECT strategy, COUNT(net_return) AS n, SUM(net_return - :rf) AS s,
               SUM((net_return - :rf) * (net_return - :rf)) AS ss, AVG(turnover) AS turnover
        FROM backtest_equity WHERE run_id = :run GROUP BY strategy""",
        rf=rf,
    ).set_index("strategy")
    for strategy, curve in curves.groupby("strategy"):
        growth = (1 + curve["net_return"].fillna(0.0)).prod()
        assert curve["equity"].iloc[0] == pytest.approx(capital, rel=1e-12)
        assert curve["equity"].iloc[-1] == pytest.approx(capital * growth, rel=1e-10), strategy
        n, s, ss = int(stats.loc[strategy, "n"]), stats.loc[strategy, "s"], stats.loc[strategy, "ss"]
        stats.loc[strategy, "sharpe"] = (s / n) / ((ss - s * s / n) / (n - 1)) ** 0.5 * 252**0.5
    for strategy in ("signal", "benchmark"):
        stored = metrics.loc[(strategy, "sharpe_ratio")]
        assert int(stats.loc[strategy, "n"]) == stored["n_obs"]
        if pd.isna(stored["value"]):
            assert "too few for a Sharpe ratio" in stored["note"]
        else:
            assert stats.loc[strategy, "sharpe"] == pytest.approx(stored["value"], rel=0, abs=1e-10)
        equity = curves[curves["strategy"] == strategy]["equity"]
        cumulative = metrics.loc[(strategy, "cumulative_return"), "value"]
        assert equity.iloc[-1] / equity.iloc[0] - 1 == pytest.approx(cumulative, rel=0, abs=1e-10)
    config = metrics.loc[("sweep:best", "dsr"), "note"].split(":")[0]
    best = warehouse.read("backtest_sweep", where={"run_id": "ci-first", "config": config}).iloc[0]
    assert stats.loc["sweep:best", "turnover"] == pytest.approx(best["turnover"], rel=0, abs=1e-12)
    if not pd.isna(best["sharpe_ratio"]):
        assert stats.loc["sweep:best", "sharpe"] == pytest.approx(best["sharpe_ratio"], rel=0, abs=1e-10)
    turnover = query("""
        SELECT e.strategy, e.date, e.turnover, COALESCE(SUM(ABS(p.weight_after - p.weight_before)), 0) AS traded
        FROM backtest_equity e LEFT JOIN backtest_positions p
          ON p.run_id = e.run_id AND p.strategy = e.strategy AND p.date = e.date
        WHERE e.run_id = :run AND e.turnover IS NOT NULL GROUP BY e.strategy, e.date, e.turnover""")
    assert len(turnover) > 0 and (turnover["turnover"] - turnover["traded"]).abs().max() < 1e-10
    warehouse.dispose()


def test_the_paper_book_fills_yesterdays_orders_the_next_session(
    first_run, outputs: Path, root: Path, clean_env: dict[str, str]
) -> None:
    next_day = "2025-06-03"
    result = run_cli(
        ["run", "--profile", "ci", "--logical-date", next_day, "--outputs", str(outputs), "--run-id", "ci-paper-2"],
        clean_env,
        root,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    warehouse = Warehouse(f"sqlite:///{outputs / 'warehouse.db'}")
    first_orders = warehouse.read(
        "orders", start=dt.date(2025, 6, 2), end=dt.date(2025, 6, 2), date_column="decided_on"
    )
    fills = warehouse.read("fills").set_index("order_id")
    assert len(first_orders) > 0 and set(first_orders["order_id"]) <= set(fills.index)
    assert (first_orders["status"] == "filled").all()
    prices = warehouse.read("prices", start=dt.date(2025, 6, 3), end=dt.date(2025, 6, 3)).set_index("ticker")
    for order in first_orders.itertuples():
        fill = fills.loc[order.order_id]
        assert fill["date"] == pd.Timestamp(next_day), "a signal from day t executes on t+1, never on t"
        assert fill["price"] == pytest.approx(prices.loc[order.ticker, "open"]), "trade.execution: next_open"
        assert fill["quantity"] == order.quantity
    positions = warehouse.read("positions", start=dt.date(2025, 6, 3), end=dt.date(2025, 6, 3), date_column="as_of")
    value = warehouse.read("portfolio_values", start=dt.date(2025, 6, 3), end=dt.date(2025, 6, 3)).iloc[0]
    assert value["cash"] + (positions["quantity"] * positions["price"]).sum() == pytest.approx(value["equity"])
    warehouse.dispose()
