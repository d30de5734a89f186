"""`stage_cache` through `CacheStore`: what a run reads back is what it stored, per stage."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from bentley.warehouse import Warehouse
from runner.cache import CacheEntry, CacheStore, StageKey, products_fingerprint

NOW = dt.datetime(2025, 6, 2, 15, 0, tzinfo=dt.UTC)
KEY = StageKey(key="k1", components={"notebook": "n1", "params": {"ml.retrain": "abc"}})
PRODUCTS = {"table:sync_state": {"rows": 1, "digest": 11}, "lake:raw/sample/prices/ingest_date=2025-06-02": {"rows": 3}}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CacheStore]:
    warehouse = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    yield CacheStore(warehouse, tmp_path)
    warehouse.dispose()


def test_a_stored_entry_reads_back_whole(store: CacheStore) -> None:
    fingerprint = store.store("etl", KEY, PRODUCTS, "run-1", NOW)
    assert fingerprint == products_fingerprint(PRODUCTS)
    assert store.entries() == {
        "etl": CacheEntry(
            stage="etl",
            key="k1",
            fingerprint=fingerprint,
            components=KEY.components,
            products=PRODUCTS,
            run_id="run-1",
            updated_at=NOW,
        )
    }


def test_one_entry_per_stage_the_latest_success_wins(store: CacheStore) -> None:
    store.store("etl", KEY, PRODUCTS, "run-1", NOW)
    store.store("features", KEY, {}, "run-1", NOW)
    newer = StageKey(key="k2", components={"notebook": "n2"})
    store.store("etl", newer, {"table:prices": {"rows": 5, "digest": 2}}, "run-2", NOW + dt.timedelta(hours=1))
    entries = store.entries()
    assert sorted(entries) == ["etl", "features"]
    assert (entries["etl"].key, entries["etl"].run_id) == ("k2", "run-2")
    assert entries["etl"].products == {"table:prices": {"rows": 5, "digest": 2}}


def test_same_products_give_the_same_fingerprint_whoever_wrote_them(store: CacheStore) -> None:
    """The early cutoff: an upstream that reran and wrote the same rows looks unchanged downstream."""
    first = store.store("etl", KEY, PRODUCTS, "run-1", NOW)
    again = store.store("etl", StageKey("k9", {}), dict(reversed(list(PRODUCTS.items()))), "run-2", NOW)
    changed = store.store("etl", KEY, {**PRODUCTS, "table:sync_state": {"rows": 1, "digest": 12}}, "run-3", NOW)
    assert first == again != changed


def test_invalidating_a_stage_forgets_only_its_entry(store: CacheStore) -> None:
    store.store("etl", KEY, PRODUCTS, "run-1", NOW)
    store.store("features", KEY, {}, "run-1", NOW)
    store.invalidate("etl")
    assert list(store.entries()) == ["features"]


def test_a_product_that_is_gone_is_named(store: CacheStore, tmp_path: Path) -> None:
    partition = tmp_path / "lake" / "raw/sample/prices/ingest_date=2025-06-02"
    entry = CacheEntry("ingest", "k", "fp", {}, PRODUCTS, "run-1", NOW)
    assert store.missing_product(entry) == "table sync_state is empty or missing"
    store.warehouse.upsert("sync_state", pd.DataFrame([{"source": "s", "dataset": "d", "ticker": "*", "rows": 1}]))
    assert store.missing_product(entry) == "lake partition raw/sample/prices/ingest_date=2025-06-02 has no files"
    partition.mkdir(parents=True)
    (partition / "run-1.parquet").write_bytes(b"")
    assert store.missing_product(entry) is None


def test_a_table_the_stage_wrote_no_rows_to_may_be_empty(store: CacheStore) -> None:
    entry = CacheEntry("etl", "k", "fp", {}, {"table:news": {"rows": 0, "digest": 0}}, "run-1", NOW)
    assert store.missing_product(entry) is None
