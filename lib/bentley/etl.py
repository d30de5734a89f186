"""The `etl` stage: read the lake partition of the logical date, clean, validate, load.

Cleaning only normalizes form (types, case, optional columns); it never invents or
drops observations. Validation runs on every dataset before anything is written: one
error anywhere stops the stage with the warehouse untouched. Loads are upserts on the
natural keys, one transaction per table, so a rerun changes nothing. Headlines (dataset
`news`) and social posts (dataset `social`) are validated apart and loaded together into
`news`, told apart by `source_kind` (a headline file written before social posts existed
has no such column: its rows are news).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from bentley import adjustment, calendar, schemas, sync, validation
from bentley.lake import Lake
from bentley.schemas import DATASET_ROLES, DATASET_TABLES, TableContract
from bentley.sync import read_cursors
from bentley.validation import CheckResult

if TYPE_CHECKING:
    from bentley.stage import Params
    from bentley.warehouse import Warehouse

NUMERIC_PRICE_COLUMNS = ["open", "high", "low", "close", "adj_close", "volume", "dividend", "split_ratio"]


@dataclass
class EtlResult:
    checks: pd.DataFrame
    loaded: pd.DataFrame


def read_lake(params: Params, lake: Lake, logical_date: dt.date) -> dict[str, pd.DataFrame]:
    """Every dataset's partition for the logical date, with the file each row came from."""
    frames = {}
    for dataset, role in DATASET_ROLES.items():
        source = getattr(params.sources, role).kind
        try:
            frames[dataset] = lake.read_raw(source, dataset, logical_date, with_file=True)
        except FileNotFoundError:
            if dataset == "prices":
                raise
            # An empty response lands no file; it loads nothing and deletes nothing.
            columns = [*schemas.RAW_DATASETS[dataset].column_names, "_lake_file"]
            frames[dataset] = pd.DataFrame(columns=columns)
    return frames


def clean_prices(raw: pd.DataFrame) -> pd.DataFrame:
    """Types and optional columns: adj_close defaults to close, no split, no dividend."""
    frame = raw.copy()
    frame["ticker"] = frame["ticker"].astype(str).str.strip().str.upper()
    frame["date"] = pd.to_datetime(frame["date"]).dt.tz_localize(None).dt.normalize()
    present = [c for c in NUMERIC_PRICE_COLUMNS if c in frame]
    frame["_raw_not_null"] = frame[[c for c in present if c not in ("dividend", "split_ratio")]].notna().all(axis=1)
    for column in present:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    if "adj_close" not in frame:
        frame["adj_close"] = frame["close"]
    frame["dividend"] = frame.get("dividend", pd.Series(0.0, index=frame.index)).fillna(0.0)
    frame["split_ratio"] = frame.get("split_ratio", pd.Series(1.0, index=frame.index)).fillna(1.0)
    return frame


def clean_generic(raw: pd.DataFrame, contract: TableContract) -> pd.DataFrame:
    frame = raw.copy()
    for column, kind in contract.columns.items():
        if column not in frame:
            frame[column] = None
        elif kind == "date":
            frame[column] = pd.to_datetime(frame[column]).dt.tz_localize(None).dt.normalize()
        elif kind == "timestamp":
            frame[column] = pd.to_datetime(frame[column], utc=True)
        elif kind == "float":
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    if "ticker" in frame:
        frame["ticker"] = frame["ticker"].astype(str).str.strip().str.upper()
    return frame


def validate(
    params: Params, frames: dict[str, pd.DataFrame], logical_date: dt.date
) -> tuple[dict[str, pd.DataFrame], list[CheckResult]]:
    """Clean and check every dataset; the cleaned frames come back with the results."""
    cal = params.workflow.calendar
    cleaned = {"prices": clean_prices(frames["prices"])}
    dates = cleaned["prices"]["date"]
    sessions = calendar.sessions(dates.min(), dates.max(), cal) if len(dates) else pd.DatetimeIndex([])
    expected_last = pd.Timestamp(calendar.latest_session_on_or_before(logical_date, cal))
    results = validation.run_checks(
        "prices",
        cleaned["prices"],
        schemas.PRICES,
        validation.price_checks(
            sessions,
            params.etl.max_abs_return_without_split,
            expected_last,
            max_range_atr=params.etl.max_range_atr,
            max_stale_sessions=params.etl.max_stale_sessions,
        ),
    )
    universe = sorted(set(cleaned["prices"]["ticker"]))
    for dataset, contract, checks in (
        ("news", schemas.NEWS, validation.news_checks(universe, "news")),
        ("social", schemas.NEWS, validation.news_checks(universe, "social")),
        ("transactions", schemas.TRANSACTIONS, validation.transaction_checks()),
        ("holdings", schemas.HOLDINGS, validation.holding_checks(universe)),
    ):
        cleaned[dataset] = clean_generic(frames[dataset], contract)
        results += validation.run_checks(dataset, cleaned[dataset], contract, checks)
    kinds = cleaned["news"]["source_kind"].astype(object)
    cleaned["news"]["source_kind"] = kinds.where(kinds.notna(), "news")
    return cleaned, results


def latest_rows(frame: pd.DataFrame, contract: TableContract, source: str) -> pd.DataFrame:
    """One row per key (the last lake file wins), in contract columns plus `source`."""
    deduplicated = frame.drop_duplicates(list(contract.key), keep="last")
    out = deduplicated[contract.column_names].copy()
    out["source"] = source
    return out.sort_values(list(contract.key), kind="stable").reset_index(drop=True)


def load(
    params: Params, warehouse: Warehouse, cleaned: dict[str, pd.DataFrame], results: list[CheckResult], run_id: str
) -> EtlResult:
    """Raise on any error check; otherwise upsert each table and record the checks.

    Datasets that share a table (news and social posts) are upserted together, in one
    transaction, and reported as one row of that table.
    """
    validation.raise_on_errors("etl", results)
    tables: dict[str, list[pd.DataFrame]] = {}
    for dataset, role in DATASET_ROLES.items():
        contract = schemas.RAW_DATASETS[dataset]
        table = latest_rows(cleaned[dataset], contract, getattr(params.sources, role).kind)
        if dataset == "prices":
            table = adjustment.rows_to_store(table)  # as traded: adjusted when read, as of the reader's date
        tables.setdefault(DATASET_TABLES[dataset], []).append(table)
    rows = []
    for name, parts in tables.items():
        non_empty = [part for part in parts if len(part)] or parts[:1]
        written = warehouse.upsert(
            name, pd.concat(non_empty, ignore_index=True) if len(non_empty) > 1 else non_empty[0]
        )
        rows.append({"table": name, "rows_upserted": written, "rows_in_table": warehouse.count(name)})
    checks = validation.results_table(results, run_id)
    warehouse.upsert("data_quality", checks)
    warehouse.upsert("sync_state", advanced_cursors(params, warehouse, cleaned, run_id))
    return EtlResult(checks=checks, loaded=pd.DataFrame(rows))


#: Datasets fetched incrementally, and whether their cursor is per ticker.
INCREMENTAL = {"prices": True, "news": True, "social": True, "transactions": False}


def advanced_cursors(
    params: Params, warehouse: Warehouse, cleaned: dict[str, pd.DataFrame], run_id: str
) -> pd.DataFrame:
    """`sync_state` rows after a successful load: cursors only ever move forward."""
    rows = []
    for dataset, by_ticker in INCREMENTAL.items():
        source = getattr(params.sources, DATASET_ROLES[dataset]).kind
        frame = cleaned[dataset]
        saved = read_cursors(warehouse, source, dataset)
        counts = frame["ticker"].value_counts() if by_ticker and len(frame) else pd.Series(dtype="int64")
        for key, cursor in sync.cursors_from_rows(frame, by_ticker=by_ticker).items():
            rows.append(
                {
                    "source": source,
                    "dataset": dataset,
                    "ticker": key,
                    "cursor_date": max(cursor, saved.get(key, cursor)),
                    "rows": int(counts.get(key, len(frame))),
                    "run_id": run_id,
                }
            )
    return pd.DataFrame(rows, columns=["source", "dataset", "ticker", "cursor_date", "rows", "run_id"])
