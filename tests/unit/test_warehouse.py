"""The warehouse: transactional upserts on natural keys, URL and secret handling."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from bentley.warehouse import Warehouse, resolve_url
from bentley.warehouse import convert as warehouse_convert
from bentley.warehouse import store as warehouse_store
from bentley.warehouse.dialects import upsert_statement
from bentley.warehouse.tables import news as news_table
from bentley.warehouse.tables import prices as prices_table


def prices(close: float, days: int = 3) -> pd.DataFrame:
    dates = pd.bdate_range("2025-01-02", periods=days)
    return pd.DataFrame(
        {
            "ticker": "NOVA",
            "date": dates,
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


@pytest.fixture()
def warehouse(tmp_path: Path) -> Warehouse:
    return Warehouse(f"sqlite:///{tmp_path / 'w.db'}")


def test_upsert_inserts_then_updates_on_the_key(warehouse: Warehouse) -> None:
    assert warehouse.upsert("prices", prices(10.0)) == 3
    warehouse.upsert("prices", prices(11.0, days=4))
    stored = warehouse.read("prices")
    assert len(stored) == 4
    assert stored["close"].tolist() == [11.0] * 4
    assert stored["date"].dt.date.tolist()[0] == dt.date(2025, 1, 2)


def test_a_failing_load_rolls_back_the_whole_table(warehouse: Warehouse) -> None:
    warehouse.upsert("prices", prices(10.0))
    bad = prices(12.0, days=6)
    bad.loc[5, "ticker"] = None  # NOT NULL key violation on the last row
    with pytest.raises(sa.exc.IntegrityError):
        warehouse.upsert("prices", bad)
    stored = warehouse.read("prices")
    assert len(stored) == 3 and stored["close"].tolist() == [10.0] * 3


def test_nan_is_stored_as_null(warehouse: Warehouse) -> None:
    frame = prices(10.0)
    frame.loc[0, "adj_close"] = float("nan")
    warehouse.upsert("prices", frame)
    assert warehouse.read("prices")["adj_close"].isna().sum() == 1


def test_unknown_columns_and_missing_keys_are_named(warehouse: Warehouse) -> None:
    with pytest.raises(ValueError, match=r"prices: no such columns \['colour'\]"):
        warehouse.upsert("prices", prices(1.0).assign(colour="red"))
    with pytest.raises(ValueError, match=r"prices: rows lack key columns \['date'\]"):
        warehouse.upsert("prices", prices(1.0).drop(columns="date"))


def test_feature_columns_follow_the_frame(warehouse: Warehouse) -> None:
    base = pd.DataFrame({"ticker": ["A"], "date": [pd.Timestamp("2025-01-02")], "sma_10": [1.5]})
    warehouse.upsert_extending("features", base)
    warehouse.upsert_extending("features", base.assign(sma_5=2.5))
    stored = warehouse.read("features")
    assert stored[["sma_10", "sma_5"]].iloc[0].tolist() == [1.5, 2.5]


def test_read_filters(warehouse: Warehouse) -> None:
    warehouse.upsert("prices", prices(10.0, days=5))
    window = warehouse.read("prices", tickers=["NOVA"], start=dt.date(2025, 1, 3), end=dt.date(2025, 1, 6))
    assert window["date"].dt.strftime("%Y-%m-%d").tolist() == ["2025-01-03", "2025-01-06"]
    assert warehouse.read("prices", tickers=["QBIT"]).empty


def test_url_precedence_and_password_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BENTLEY_WAREHOUSE_URL", raising=False)
    monkeypatch.delenv("BENTLEY_WAREHOUSE_PASSWORD", raising=False)
    assert resolve_url(None, tmp_path).database == str(tmp_path / "warehouse.db")
    assert resolve_url("sqlite:///x.db", tmp_path).database == "x.db"
    monkeypatch.setenv("BENTLEY_WAREHOUSE_URL", "postgresql+psycopg://bot@127.0.0.1:5432/bentley")
    monkeypatch.setenv("BENTLEY_WAREHOUSE_PASSWORD", "s3cret")
    url = resolve_url("sqlite:///x.db", tmp_path)
    assert url.password == "s3cret"
    assert "s3cret" not in url.render_as_string(hide_password=True)


def test_health(warehouse: Warehouse) -> None:
    health = warehouse.health()
    assert health.ok and health.component == "warehouse"


# ---------------------------------------------------------------- bulk upserts (SQLite)


def test_timestamps_are_stored_in_utc_and_read_back_tz_aware(warehouse: Warehouse) -> None:
    frame = pd.DataFrame(
        {
            "news_id": ["a", "b", "c"],
            "ticker": ["NOVA"] * 3,
            "published_at": ["2025-06-02T09:30:00.123456-04:00", "2025-06-02 14:00:00", None],  # naive = UTC
            "date": [dt.date(2025, 6, 2), pd.Timestamp("2025-06-02"), None],
            "headline": ["up", "down", "flat"],
        }
    )
    warehouse.upsert("news", frame)
    stored = warehouse.read("news")
    assert str(stored["published_at"].dtype).endswith(", UTC]")
    assert stored["published_at"].tolist()[:2] == [
        pd.Timestamp("2025-06-02 13:30:00.123456", tz="UTC"),
        pd.Timestamp("2025-06-02 14:00:00", tz="UTC"),
    ]
    assert pd.isna(stored["published_at"].iloc[2]) and pd.isna(stored["date"].iloc[2])
    assert stored["date"].dtype.kind == "M"
    # SQLAlchemy's own SQLite types parse what was stored (the text formats match).
    with warehouse.engine.connect() as conn:
        typed = conn.execute(sa.select(news_table.c.published_at, news_table.c.date).order_by(news_table.c.news_id))
        first = typed.first()
    assert first == (dt.datetime(2025, 6, 2, 13, 30, 0, 123456), dt.date(2025, 6, 2))


def test_all_null_timestamps_and_dates(warehouse: Warehouse) -> None:
    warehouse.upsert(
        "pipeline_runs",
        pd.DataFrame(
            [{"run_id": "r1", "status": "running", "started_at": None, "ended_at": None, "logical_date": None}]
        ),
    )
    stored = warehouse.read("pipeline_runs")
    assert stored["started_at"].isna().all() and stored["logical_date"].isna().all()


def test_the_last_row_of_a_duplicated_key_wins(warehouse: Warehouse) -> None:
    frame = pd.concat([prices(10.0), prices(12.0)], ignore_index=True)
    assert warehouse.upsert("prices", frame) == 6
    stored = warehouse.read("prices")
    assert len(stored) == 3 and stored["close"].tolist() == [12.0] * 3


def test_chunked_loads_round_trip_exactly(warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warehouse_convert, "_CHUNK_ROWS", 7)
    frame = pd.concat([prices(10.0 + i / 3, days=10).assign(ticker=f"T{i:02d}") for i in range(5)], ignore_index=True)
    frame.loc[[3, 17, 44], "adj_close"] = np.nan
    frame.loc[[5, 30], "volume"] = None  # an int column with gaps (float64 with NaN)
    warehouse.upsert("prices", frame)
    stored = warehouse.read("prices")
    assert len(stored) == 50
    expected = frame.sort_values(["ticker", "date"]).reset_index(drop=True)
    pd.testing.assert_series_equal(stored["adj_close"], expected["adj_close"], check_names=False)
    assert stored["volume"].isna().sum() == 2 and stored["volume"].dropna().eq(1000).all()
    assert stored["date"].tolist() == expected["date"].tolist()


def test_a_read_in_chunks_equals_a_read_in_one(warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    """`read` fetches a chunk of rows at a time (memory); the frame, dtypes included, is the one a
    single fetch gives: floats with gaps, dates, a nullable int, text, booleans NULL in one chunk
    only, timestamps NULL in a whole chunk."""
    frame = pd.concat([prices(10.0 + i / 3, days=10).assign(ticker=f"T{i:02d}") for i in range(5)], ignore_index=True)
    frame.loc[[3, 17, 44], "adj_close"] = np.nan
    frame.loc[[5, 30], "volume"] = None
    warehouse.upsert("prices", frame)
    checks = pd.DataFrame(
        {
            "run_id": "r",
            "dataset": "prices",
            "check_name": [f"c{k:02d}" for k in range(12)],
            "severity": "error",
            "passed": [True, None, False] + [True] * 9,
            "n_failed": [0, 3, None] + list(range(9)),
            "n_rows": 10,
            "examples": None,
        }
    )
    warehouse.upsert("data_quality", checks)
    runs = pd.DataFrame(
        {
            "run_id": [f"r{k:02d}" for k in range(12)],
            "status": "success",
            "started_at": [None] * 6 + [pd.Timestamp("2025-06-02 14:00", tz="UTC")] * 6,
            "logical_date": [dt.date(2025, 6, 2)] * 12,
        }
    )
    warehouse.upsert("pipeline_runs", runs)
    whole = {table: warehouse.read(table) for table in ("prices", "data_quality", "pipeline_runs")}
    monkeypatch.setattr(warehouse_store, "READ_CHUNK_ROWS", 6)
    for table, expected in whole.items():
        pd.testing.assert_frame_equal(warehouse.read(table), expected)
        assert len(expected) > 6, table


def test_doubles_keep_full_precision(warehouse: Warehouse) -> None:
    values = [1 / 3, 0.1 + 0.2, 1e-300, 12345.678901234567, -2.5e300]
    frame = pd.DataFrame({"ticker": "A", "date": pd.bdate_range("2025-01-02", periods=5), "x": values})
    warehouse.upsert_extending("features", frame)
    assert warehouse.read("features")["x"].tolist() == values


def test_booleans_integers_and_text(warehouse: Warehouse) -> None:
    frame = pd.DataFrame(
        {
            "run_id": "r",
            "dataset": "prices",
            "check_name": ["a", "b", "c"],
            "severity": "error",
            "passed": [True, False, None],
            "n_failed": [0, 3, None],
            "n_rows": [10, 10, 10],
            "examples": [["x", 1], None, "O'Reilly; DROP TABLE prices; --"],
        }
    )
    warehouse.upsert("data_quality", frame)
    stored = warehouse.read("data_quality")
    assert stored["passed"].tolist() == [True, False, None]
    assert stored["n_failed"].iloc[:2].tolist() == [0, 3] and pd.isna(stored["n_failed"].iloc[2])
    assert stored["examples"].iloc[[0, 2]].tolist() == ["['x', 1]", "O'Reilly; DROP TABLE prices; --"]
    assert pd.isna(stored["examples"].iloc[1])
    assert warehouse.count("prices") == 0  # values are bound, never SQL


def test_several_upserts_share_the_callers_transaction(warehouse: Warehouse) -> None:
    bad = prices(12.0)
    bad.loc[2, "date"] = None  # NOT NULL key violation
    with pytest.raises(sa.exc.IntegrityError), warehouse.begin() as conn:
        warehouse.upsert("prices", prices(10.0, days=5), conn=conn)
        warehouse.upsert("news", pd.DataFrame({"news_id": ["n1"], "headline": ["h"]}), conn=conn)
        warehouse.upsert("prices", bad, conn=conn)
    assert warehouse.count("prices") == 0 and warehouse.count("news") == 0


def test_reading_an_empty_table_gives_its_columns(warehouse: Warehouse) -> None:
    stored = warehouse.read("sync_state", where={"source": "sample", "dataset": "prices"})
    assert stored.empty and list(stored.columns) == ["source", "dataset", "ticker", "cursor_date", "rows", "run_id"]


def test_a_rerun_of_the_same_rows_leaves_the_table_as_it_was(warehouse: Warehouse) -> None:
    warehouse.upsert("prices", prices(10.0, days=20))
    before = warehouse.read("prices")
    warehouse.upsert("prices", prices(10.0, days=20))
    pd.testing.assert_frame_equal(warehouse.read("prices"), before)


def test_mysql_statement_is_batched_by_pymysql() -> None:
    from pymysql.cursors import RE_INSERT_VALUES
    from sqlalchemy.dialects import mysql

    columns = list(prices(1.0).columns)
    statement = upsert_statement(mysql.dialect(), prices_table, columns, ["ticker", "date"])
    assert RE_INSERT_VALUES.match(statement), statement
    assert "ON DUPLICATE KEY UPDATE open = VALUES(open)" in statement and "%s" in statement


def test_schema_uses_doubles_and_microsecond_timestamps_on_mysql() -> None:
    from sqlalchemy.dialects import mysql, postgresql
    from sqlalchemy.schema import CreateTable

    ddl = str(CreateTable(prices_table).compile(dialect=mysql.dialect()))
    assert "DOUBLE" in ddl and "FLOAT" not in ddl
    assert "DATETIME(6)" in str(CreateTable(news_table).compile(dialect=mysql.dialect()))
    assert "TIMESTAMP WITH TIME ZONE" in str(CreateTable(news_table).compile(dialect=postgresql.dialect()))


def test_replace_window_leaves_no_row_of_an_earlier_run_inside_the_window(warehouse: Warehouse) -> None:
    warehouse.upsert("prices", prices(10.0, days=5))
    warehouse.upsert("prices", prices(10.0).assign(ticker="QBIT"))
    fewer = prices(12.0, days=5).iloc[3:]  # this run produces only the last two days
    written = warehouse.replace_window(
        "prices", fewer, start=dt.date(2025, 1, 3), end=dt.date(2025, 1, 8), tickers=["NOVA"]
    )
    nova = warehouse.read("prices", tickers=["NOVA"])
    assert written == 2
    assert nova["date"].dt.date.tolist() == [dt.date(2025, 1, 2), dt.date(2025, 1, 7), dt.date(2025, 1, 8)]
    assert nova["close"].tolist() == [10.0, 12.0, 12.0]
    assert len(warehouse.read("prices", tickers=["QBIT"])) == 3, "other tickers are not touched"


def test_read_selected_columns(warehouse: Warehouse) -> None:
    warehouse.upsert("prices", prices(10.0))
    assert list(warehouse.read("prices", columns=["ticker", "date"]).columns) == ["ticker", "date"]


def test_an_older_warehouse_gains_the_columns_a_newer_release_declares(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # `prices` as an earlier release created it: no `source` column yet
        conn.exec_driver_sql(
            "CREATE TABLE prices (ticker VARCHAR(32) NOT NULL, date DATE NOT NULL, "
            "close FLOAT, PRIMARY KEY (ticker, date))"
        )
        conn.exec_driver_sql("INSERT INTO prices (ticker, date, close) VALUES ('NOVA', '2025-01-02', 10.0)")
    engine.dispose()
    warehouse = Warehouse(url)
    warehouse.upsert("prices", prices(11.0, days=2))
    stored = warehouse.read("prices")
    assert stored["close"].tolist() == [11.0, 11.0] and stored["source"].tolist() == ["sample", "sample"]
    warehouse.dispose()
