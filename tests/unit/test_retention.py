"""Retention deletes only what is outside its window, and nothing inside it is touched."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from bentley import retention
from bentley.lake import Lake, atomic_write_json, atomic_write_text

TODAY = dt.date(2026, 11, 27)
WINDOWS = SimpleNamespace(raw_days=365, processed_days=1095, logs_days=30)


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def populate(outputs: Path) -> None:
    lake = Lake(outputs / "lake")
    for days_ago in (0, 364, 365, 366, 800):
        day = TODAY - dt.timedelta(days=days_ago)
        lake.write_raw(
            pd.DataFrame({"x": [days_ago]}), source="sample", dataset="prices", ingest_date=day, name=f"run-{days_ago}"
        )
    for run_id, days_ago in (("new", 10), ("edge", 1095), ("old", 1096), ("older", 2000)):
        day = TODAY - dt.timedelta(days=days_ago)
        atomic_write_json(outputs / "runs" / run_id / "manifest.json", {"run_id": run_id, "logical_date": str(day)})
        atomic_write_text(outputs / "logs" / f"{run_id}.log", f"log of {run_id}\n")
    atomic_write_text(outputs / "logs" / "month.log", "x")  # no run of that name: never touched


def test_only_expired_paths_are_planned_and_the_rest_is_byte_identical(tmp_path: Path) -> None:
    populate(tmp_path)
    planned = retention.plan(tmp_path, WINDOWS, TODAY)
    kinds = {(e.kind, e.path.name) for e in planned}
    raw = {("raw", f"ingest_date={TODAY - dt.timedelta(days=d)}") for d in (366, 800)}  # 365 is on the edge
    assert kinds == raw | {
        ("processed", "old"),
        ("processed", "older"),  # 1095 days is still inside
        ("logs", "edge.log"),
        ("logs", "old.log"),
        ("logs", "older.log"),  # 10 days is inside
    }
    keep = {p for p in tree_digest(tmp_path) if not any(str(e.path.relative_to(tmp_path)) in p for e in planned)}
    before = tree_digest(tmp_path)
    assert retention.apply(planned) == len(planned)
    after = tree_digest(tmp_path)
    assert set(after) == keep
    assert all(after[p] == before[p] for p in keep)


def test_dry_run_plan_deletes_nothing(tmp_path: Path) -> None:
    populate(tmp_path)
    before = tree_digest(tmp_path)
    assert retention.plan(tmp_path, WINDOWS, TODAY)
    assert tree_digest(tmp_path) == before
