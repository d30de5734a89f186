"""The warehouse: transactional upserts on natural keys, URL and secret handling."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from bentley.warehouse import Warehouse, resolve_url


def prices(close: float, days: int = 3) -> pd.DataFrame:
    dates = pd.bdate_range("2025-01-02", periods=days)
    return pd.DataFrame({
        "ticker": "NOVA", "date": dates, "open": close, "high": close + 1, "low": close - 1, "close": close,
        "adj_close": close, "volume": 1000, "dividend": 0.0, "split_ratio": 1.0, "source": "sample",
    })


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
