"""Retention: delete what is older than the windows in `workflow.retention`.

Three kinds of files, each dated by what it describes, never by when it was touched:
- raw: lake partitions, by their `ingest_date`;
- processed: run folders (executed notebooks, reports, manifest), by the run's logical date;
- logs: run logs, by the logical date of their run.
A file is expired when its date is strictly before `logical_date - days`; everything inside
the window is left alone. Warehouse tables are the system of record and are not pruned.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from bentley.lake import Lake, read_json, remove_path


@dataclass(frozen=True)
class Expired:
    kind: str  # raw | processed | logs
    path: Path
    dated: dt.date
    cutoff: dt.date


def plan(outputs: Path, retention, logical_date: dt.date) -> list[Expired]:
    """Everything outside the retention windows, oldest first (nothing is deleted here)."""
    cutoffs = {
        "raw": logical_date - dt.timedelta(days=retention.raw_days),
        "processed": logical_date - dt.timedelta(days=retention.processed_days),
        "logs": logical_date - dt.timedelta(days=retention.logs_days),
    }
    expired = [
        Expired("raw", partition.path, partition.ingest_date, cutoffs["raw"])
        for partition in Lake(outputs / "lake").raw_partitions()
        if partition.ingest_date < cutoffs["raw"]
    ]
    run_dates = _run_dates(outputs)
    for run_id, day in run_dates.items():
        if day < cutoffs["processed"]:
            expired.append(Expired("processed", outputs / "runs" / run_id, day, cutoffs["processed"]))
    for log in sorted((outputs / "logs").glob("*.log")):
        log_day = run_dates.get(log.stem)
        if log_day is not None and log_day < cutoffs["logs"]:
            expired.append(Expired("logs", log, log_day, cutoffs["logs"]))
    return sorted(expired, key=lambda e: (e.dated, e.kind, str(e.path)))


def apply(expired: list[Expired]) -> int:
    """Delete the planned paths; returns how many were removed."""
    for item in expired:
        remove_path(item.path)
    return len(expired)


def _run_dates(outputs: Path) -> dict[str, dt.date]:
    dates = {}
    for manifest in (outputs / "runs").glob("*/manifest.json"):
        try:
            dates[manifest.parent.name] = dt.date.fromisoformat(read_json(manifest)["logical_date"])
        except (OSError, ValueError, KeyError):
            continue  # a run folder without a readable manifest is left for a person to look at
    return dates
