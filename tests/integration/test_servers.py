"""The warehouse on real MariaDB and PostgreSQL servers (SQLite alongside as the reference).

The servers are private throwaway instances (tests/servers.py), started once per session.
Part (a) repeats the warehouse's unit behaviours on each server; part (b) runs ingest, etl
and features through the runner's CLI against each server twice (as a user would, with
the password only in BENTLEY_WAREHOUSE_PASSWORD) and checks that the rerun changes nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from bentley import calendar
from bentley import warehouse as warehouse_module
from bentley.config import load_config
from bentley.warehouse import Warehouse

pytestmark = pytest.mark.integration

ALL = ["sqlite", "mariadb", "postgresql"]
SERVERS = ["mariadb", "postgresql"]
LOGICAL_DATE = "2025-06-02"
DATA_TABLES = ["prices", "news", "transactions", "holdings", "features"]


# ---------------------------------------------------------------- (a) warehouse behaviours


def prices(close: float, days: int = 3, tickers: tuple[str, ...] = ("NOVA",)) -> pd.DataFrame:
    dates = pd.bdate_range("2025-01-02", periods=days)
    return pd.DataFrame(
        {
            "ticker": np.repeat(tickers, days),
            "date": np.tile(dates, len(tickers)),
            "open": close,
            "high": close + 1,
            "low": close - 1,
            "close": close,
            "adj_close": close,
            "volume": 1000,
            "dividend": 0.0,
            "split_ratio": 1.0,
            "source": "sample",
        }
    )


#: Enough rows for PostgreSQL's COPY path (smaller frames use executemany).
BIG = {"days": 250, "tickers": tuple(f"T{i:02d}" for i in range(12))}


@pytest.fixture()
def warehouse(warehouse_target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Warehouse:
    """A Warehouse built the way stages build it: URL and password from the environment."""
    monkeypatch.delenv(warehouse_module.PASSWORD_ENV, raising=False)
    for key, value in warehouse_target.env().items():
        monkeypatch.setenv(key, value)
    built = Warehouse.from_settings(None, tmp_path)
    assert built.engine.dialect.name == ("mysql" if warehouse_target.dialect == "mariadb" else warehouse_target.dialect)
    yield built
    built.dispose()


@pytest.mark.parametrize("size", ["small", "big"])
@pytest.mark.parametrize("warehouse_target", ALL, indirect=True)
def test_upsert_inserts_then_updates_on_the_key(warehouse: Warehouse, size: str) -> None:
    shape = BIG if size == "big" else {"days": 3}
    n = shape["days"] * len(shape.get("tickers", ("NOVA",)))
    assert warehouse.upsert("prices", prices(10.0, **shape)) == n
    more = {**shape, "days": shape["days"] + 1}
    warehouse.upsert("prices", prices(11.0, **more))
    stored = warehouse.read("prices")
    assert len(stored) == n + len(shape.get("tickers", ("NOVA",)))
    assert set(stored["close"]) == {11.0}
    assert stored["date"].dtype.kind == "M" and stored["date"].iloc[0] == pd.Timestamp("2025-01-02")
    assert stored["volume"].dtype == np.int64


@pytest.mark.parametrize("size", ["small", "big"])
@pytest.mark.parametrize("warehouse_target", ALL, indirect=True)
def test_a_failing_load_rolls_back_the_whole_table(warehouse: Warehouse, size: str) -> None:
    shape = BIG if size == "big" else {"days": 3}
    warehouse.upsert("prices", prices(10.0, **shape))
    before = warehouse.read("prices")
    bad = prices(12.0, **{**shape, "days": shape["days"] + 3})
    bad.loc[len(bad) - 1, "ticker"] = None  # NOT NULL key violation on the last row
    with pytest.raises(sa.exc.IntegrityError):
        warehouse.upsert("prices", bad)
    pd.testing.assert_frame_equal(warehouse.read("prices"), before)


@pytest.mark.parametrize("warehouse_target", ALL, indirect=True)
def test_several_upserts_roll_back_together(warehouse: Warehouse) -> None:
    bad = prices(12.0, **BIG)
    bad.loc[7, "date"] = None
    with pytest.raises(sa.exc.IntegrityError), warehouse.begin() as conn:
        warehouse.upsert("prices", prices(10.0, **BIG), conn=conn)
        warehouse.upsert("prices", prices(11.0, **BIG), conn=conn)  # same staging name, same transaction
        warehouse.upsert("prices", bad, conn=conn)
    assert warehouse.count("prices") == 0


@pytest.mark.parametrize("warehouse_target", ALL, indirect=True)
def test_nan_is_stored_as_null_and_duplicates_keep_the_last_row(warehouse: Warehouse) -> None:
    frame = pd.concat([prices(10.0, **BIG), prices(13.0, **BIG)], ignore_index=True)
    frame.loc[len(frame) - 1, "adj_close"] = float("nan")
    frame.loc[len(frame) - 2, "volume"] = None
    warehouse.upsert("prices", frame)
    stored = warehouse.read("prices")
    assert len(stored) == len(frame) // 2 and set(stored["close"]) == {13.0}
    assert stored["adj_close"].isna().sum() == 1 and stored["volume"].isna().sum() == 1


@pytest.mark.parametrize("warehouse_target", ALL, indirect=True)
def test_feature_columns_are_added_with_full_double_precision(warehouse: Warehouse) -> None:
    values = [1 / 3, 0.1 + 0.2, 1e-300, 12345.678901234567, -2.5e300]
    base = pd.DataFrame({"ticker": "A", "date": pd.bdate_range("2025-01-02", periods=5), "sma_10": values})
    warehouse.upsert_extending("features", base)
    warehouse.upsert_extending("features", base.assign(sma_5=2.5, rsi_14=np.nan))
    stored = warehouse.read("features")
    assert list(stored.columns) == ["ticker", "date", "sma_10", "sma_5", "rsi_14"]
    assert stored["sma_10"].tolist() == values and stored["sma_5"].tolist() == [2.5] * 5
    assert stored["rsi_14"].isna().all()
    warehouse.upsert_extending("features", base.assign(sma_5=3.5))  # existing columns: no ALTER
    assert warehouse.read("features")["sma_5"].tolist() == [3.5] * 5


@pytest.mark.parametrize("warehouse_target", ALL, indirect=True)
def test_dates_and_utc_timestamps_round_trip(warehouse: Warehouse) -> None:
    news = pd.DataFrame(
        {
            "news_id": ["a", "b", "c"],
            "ticker": ["NOVA"] * 3,
            "published_at": pd.to_datetime(
                ["2025-06-02 09:30:00.123456-04:00", "2025-06-02 14:00:00+00:00", None], utc=True, format="ISO8601"
            ).tz_convert("America/New_York"),
            "date": [dt.date(2025, 6, 2), dt.date(1999, 12, 31), None],
            "headline": ['O\'Reilly "quoted" \\ back; DROP TABLE news; --', "ünïcødé ✓", None],
            "publisher": ["p", "q", "r"],
        }
    )
    warehouse.upsert("news", news)
    stored = warehouse.read("news")
    assert str(stored["published_at"].dtype).endswith(", UTC]")
    assert stored["published_at"].iloc[0] == pd.Timestamp("2025-06-02 13:30:00.123456", tz="UTC")
    assert stored["published_at"].iloc[1] == pd.Timestamp("2025-06-02 14:00:00", tz="UTC")
    assert pd.isna(stored["published_at"].iloc[2])
    assert stored["date"].dtype.kind == "M"
    assert stored["date"].iloc[:2].tolist() == [pd.Timestamp("2025-06-02"), pd.Timestamp("1999-12-31")]
    assert stored["headline"].iloc[:2].tolist() == news["headline"].iloc[:2].tolist()
    window = warehouse.read("news", start=dt.date(2025, 1, 1), end=dt.date(2025, 12, 31))
    assert window["news_id"].tolist() == ["a"]

    started = dt.datetime(2025, 6, 2, 12, 0, 0, 654321, tzinfo=dt.UTC)
    ledger = pd.DataFrame(
        [
            {
                "run_id": "r1",
                "profile": "ci",
                "logical_date": dt.date(2025, 6, 2),
                "status": "success",
                "started_at": started,
                "ended_at": None,
                "duration_s": 1.5,
            }
        ]
    )
    warehouse.upsert("pipeline_runs", ledger)
    row = warehouse.read("pipeline_runs", where={"run_id": "r1"}).iloc[0]
    assert row["started_at"] == pd.Timestamp(started) and pd.isna(row["ended_at"])
    assert row["logical_date"] == pd.Timestamp("2025-06-02")


@pytest.mark.parametrize("warehouse_target", ALL, indirect=True)
def test_booleans_integers_and_filters(warehouse: Warehouse) -> None:
    checks = pd.DataFrame(
        {
            "run_id": "r",
            "dataset": "prices",
            "check_name": ["a", "b", "c"],
            "severity": "error",
            "passed": [True, False, None],
            "n_failed": [0, 3, 1],
            "n_rows": [10, 10, 10],
        }
    )
    warehouse.upsert("data_quality", checks)
    stored = warehouse.read("data_quality", where={"run_id": "r"})
    assert stored["passed"].tolist() == [True, False, None]
    assert stored["n_failed"].tolist() == [0, 3, 1]
    warehouse.upsert("prices", prices(10.0, days=5, tickers=("NOVA", "QBIT")))
    window = warehouse.read("prices", tickers=["NOVA"], start=dt.date(2025, 1, 3), end=dt.date(2025, 1, 6))
    assert window["date"].dt.strftime("%Y-%m-%d").tolist() == ["2025-01-03", "2025-01-06"]
    assert warehouse.read("prices", tickers=["ZZZZ"]).empty
    assert warehouse.distinct("prices", "ticker") == ["NOVA", "QBIT"]
    assert warehouse.health().ok


# ---------------------------------------------------------------- (b) the pipeline through the CLI


@dataclass
class PipelineRuns:
    outputs: Path
    first: subprocess.CompletedProcess[str]
    second: subprocess.CompletedProcess[str]
    before: dict[str, tuple[int, str]]
    after: dict[str, tuple[int, str]]
    counts: dict[str, int]


def run_cli(run_id: str, outputs: Path, env: dict[str, str], root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
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
            str(outputs),
            "--stages",
            "ingest,etl,features",
            "--run-id",
            run_id,
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def table_fingerprints(warehouse: Warehouse) -> dict[str, tuple[int, str]]:
    """Row count and a content hash per table (rows in key order, floats to 12 significant digits)."""
    prints = {}
    for table in DATA_TABLES:
        frame = warehouse.read(table)
        key = [c.name for c in warehouse.reflect(table).primary_key.columns]
        frame = frame.sort_values(key, kind="stable").reset_index(drop=True)  # collations differ by server
        text = frame.to_csv(index=False, float_format="%.12g")
        prints[table] = (len(frame), hashlib.sha256(text.encode()).hexdigest())
    return prints


def _pipeline_twice(server, root: Path, env: dict[str, str], outputs: Path) -> PipelineRuns:
    from tests.servers import reset_database

    reset_database(server)
    results, prints = [], []
    for run_id in ("srv-first", "srv-second"):
        result = run_cli(run_id, outputs, env, root)
        assert result.returncode == 0, f"{server.dialect} {run_id}:\n{result.stdout}\n{result.stderr}"
        warehouse = Warehouse(server.url_with_password())
        try:
            prints.append(table_fingerprints(warehouse))
            counts = {t: warehouse.count(t) for t in DATA_TABLES}
        finally:
            warehouse.dispose()
        results.append(result)
    return PipelineRuns(outputs, results[0], results[1], prints[0], prints[1], counts)


@pytest.fixture(scope="module")
def pipeline_runs(
    request: pytest.FixtureRequest, root: Path, clean_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, PipelineRuns | str]:
    """Per server: two CLI runs of the same logical date (or why the server is unavailable).

    The runs are sequential: concurrent runner processes can race for kernel ports.
    """
    outcome: dict[str, PipelineRuns | str] = {}
    for dialect in SERVERS:
        try:
            server = request.getfixturevalue("mariadb_server" if dialect == "mariadb" else "postgres_server")
        except pytest.skip.Exception as skipped:
            outcome[dialect] = str(skipped)
            continue
        env = {**clean_env, **server.env()}
        outcome[dialect] = _pipeline_twice(server, root, env, tmp_path_factory.mktemp(f"outputs-{dialect}"))
    return outcome


def _runs(pipeline_runs: dict[str, PipelineRuns | str], dialect: str) -> PipelineRuns:
    runs = pipeline_runs[dialect]
    if isinstance(runs, str):
        pytest.skip(runs)
    return runs


@pytest.mark.parametrize("dialect", SERVERS)
def test_the_cli_loads_the_server_warehouse(pipeline_runs, dialect: str, root: Path) -> None:
    runs = _runs(pipeline_runs, dialect)
    scheme = "mysql+pymysql" if dialect == "mariadb" else "postgresql+psycopg"
    assert f"warehouse {scheme}://bentley:***@127.0.0.1:" in runs.first.stdout  # masked, on the server
    assert not (runs.outputs / "warehouse.db").exists(), "nothing went to the SQLite fallback"
    cfg = load_config("ci")
    start, end = cfg.history.window(dt.date.fromisoformat(LOGICAL_DATE))
    sessions = calendar.sessions(start, end)
    tickers = cfg.sample.n_tickers + 1  # the sample universe plus the benchmark
    assert runs.counts["prices"] == tickers * len(sessions)
    assert runs.counts["features"] == runs.counts["prices"]
    assert min(runs.counts["news"], runs.counts["transactions"], runs.counts["holdings"]) > 0


@pytest.mark.parametrize("dialect", SERVERS)
def test_a_rerun_of_the_same_logical_date_changes_no_table(pipeline_runs, dialect: str) -> None:
    runs = _runs(pipeline_runs, dialect)
    assert runs.after == runs.before
    assert {t: n for t, (n, _) in runs.after.items()} == runs.counts


def test_both_servers_hold_the_same_content(pipeline_runs) -> None:
    mariadb, postgres = (_runs(pipeline_runs, d) for d in SERVERS)
    assert mariadb.after == postgres.after


@pytest.mark.parametrize("dialect", SERVERS)
def test_the_password_never_reaches_an_output(pipeline_runs, dialect: str, request: pytest.FixtureRequest) -> None:
    runs = _runs(pipeline_runs, dialect)
    server = request.getfixturevalue("mariadb_server" if dialect == "mariadb" else "postgres_server")
    secret = server.password
    assert secret not in runs.first.stdout + runs.first.stderr + runs.second.stdout + runs.second.stderr
    leaks = [p for p in runs.outputs.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert not leaks, f"password found in {leaks}"


def test_a_missing_server_skips_locally_and_fails_on_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import servers

    monkeypatch.setattr(servers.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(servers.shutil, "which", lambda name: None)
    reason = servers.missing("postgresql")
    assert isinstance(reason, servers.ServerUnavailable) and reason.package == "postgresql"
    monkeypatch.setattr(servers, "_which", lambda name, *dirs: None)
    assert "Debian package 'mariadb-server'" in str(servers.missing("mariadb"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="initdb not found: install the Debian package 'postgresql'"):
        servers._unavailable(reason)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="initdb not found"):
        servers._unavailable(reason)
