"""The lake: atomic writes, append-only partitions, safe names."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from bentley.lake import Lake, atomic_write_json, read_json

DAY = dt.date(2025, 6, 2)


def test_layout_and_write_order(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    first = lake.write_raw(
        pd.DataFrame({"x": [1]}), source="sample", dataset="prices", ingest_date=DAY, name="20250602T1-a"
    )
    lake.write_raw(pd.DataFrame({"x": [2]}), source="sample", dataset="prices", ingest_date=DAY, name="20250602T2-b")
    assert first == tmp_path / "raw" / "sample" / "prices" / "ingest_date=2025-06-02" / "20250602T1-a.parquet"
    both = lake.read_raw("sample", "prices", DAY, with_file=True)
    assert both["x"].tolist() == [1, 2]
    assert both["_lake_file"].tolist() == ["20250602T1-a.parquet", "20250602T2-b.parquet"]


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    unwritable = pd.DataFrame({"x": [object()]})  # pyarrow cannot serialize a bare object
    with pytest.raises((TypeError, ValueError, ArithmeticError, OSError)):
        lake.write_raw(unwritable, source="sample", dataset="prices", ingest_date=DAY, name="run")
    partition = lake.partition("sample", "prices", DAY)
    assert list(partition.iterdir()) == []


def test_names_that_escape_the_lake_are_refused(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    frame = pd.DataFrame({"x": [1]})
    with pytest.raises(ValueError, match="not a plain"):
        lake.write_raw(frame, source="../etc", dataset="prices", ingest_date=DAY, name="run")
    with pytest.raises(ValueError, match="not a plain"):
        lake.write_raw(frame, source="sample", dataset="prices", ingest_date=DAY, name="../../x")


def test_missing_partition_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run the ingest stage first"):
        Lake(tmp_path).read_raw("sample", "prices", DAY)


def test_atomic_json_round_trip(tmp_path: Path) -> None:
    path = atomic_write_json(tmp_path / "a" / "m.json", {"b": 1, "a": [1, 2]})
    assert list(read_json(path)) == ["b", "a"], "key order is kept (stage order in manifests)"
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]
