"""A logical date's results as one digest per table: what the order-independence test compares.

`date_digests(outputs, run_id)`, called right after the run, reads what the store shows for
the run's logical date D, its history window [S, D] and its universe U, never "what this run
happened to write" (a run for another date later rewrites the derived date-keyed tables over
its own window: they hold the latest run's computation, and `resume` reruns them when
another run used the store in between):

- rows of the run itself in the per-run tables (`signals`, `risk_metrics`, ...);
- rows dated in [S, D] for U in the date-keyed tables (`prices`, `features`, ...), because
  every run rewrites its own window and a store may hold other dates' rows beside it;
- the live predictions of the run and the walk-forward rows of the model version that
  made them (the backtest is built on those);
- the paper book up to D, under the name the run booked it (a backdated run books a
  separate `<book>@<D>`; the name is normalized away);
- the numbers the reports publish (stage metrics), for the stages named in
  `REPORT_STAGES`.

Excluded, and why:
- `pipeline_runs`, `stage_runs`, `stage_cache`, `leases`, `scheduler_heartbeats`: the run
  ledger and orchestration state (ids, wall-clock times, which stage was cached);
- `sync_state`, `data_quality`, and the ingest/etl metrics: they describe what this run
  fetched incrementally (a store that already holds the window fetches five sessions, a
  fresh one the whole window), not the date's data;
- `monitor_kpis`, `alerts`, the monitor's metrics: they measure the system (run history,
  durations, machine load), which is meant to differ between a fresh and a busy store;
- `model_decisions`, `model_monitoring` and the train stage's metrics: the registry's
  decision log. A date that already has its model writes no decision (nothing to decide);
  the model's effect is compared through its predictions;
- columns `run_id`, `predicted_at`, `decided_at`, `model_version`: who wrote a row, when, and
  the registry's running version number (it counts every registration in the store's life);
  `portfolio`, `order_id`, `fill_id`: the book's name and the ids derived from it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pandas as pd

from bentley.config import Config
from bentley.warehouse import Warehouse

RUN_TABLES = [
    "technical_signals",
    "risk_metrics",
    "target_weights",
    "signals",
    "risk_limit_events",
    "backtest_metrics",
    "backtest_sweep",
    "backtest_positions",
    "backtest_equity",
]
#: table -> (date column, has a ticker column)
WINDOW_TABLES = {
    "prices": ("date", True),
    "features": ("date", True),
    "anomalies": ("date", True),
    "sentiment_daily": ("date", True),
    "news": ("date", True),
    "news_sentiment": ("date", True),
    "transactions": ("date", False),
    "net_worth": ("date", False),
    "budget_monthly": ("month", False),
}
BOOK_TABLES = {"orders": "decided_on", "fills": "date", "positions": "as_of", "portfolio_values": "date"}
REPORT_STAGES = ["features", "technical", "sentiment", "risk", "budget", "anomalies", "optimize", "trade"]
VOLATILE_COLUMNS = ["run_id", "predicted_at", "decided_at", "model_version", "portfolio", "order_id", "fill_id"]


def digest(frame: pd.DataFrame) -> str:
    """Order-free digest of a frame's content (12 significant digits, volatile columns dropped)."""
    frame = frame.drop(columns=[c for c in VOLATILE_COLUMNS if c in frame.columns])
    frame = frame[sorted(frame.columns)]
    frame = frame.sort_values(list(frame.columns), kind="stable").reset_index(drop=True)
    text = frame.to_csv(index=False, float_format="%.12g")
    return f"{len(frame)}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def date_digests(outputs: Path, run_id: str) -> dict[str, str]:
    run_dir = outputs / "runs" / run_id
    manifest = json.loads((run_dir / "manifest.json").read_text())
    config = Config.model_validate(json.loads((run_dir / "params.json").read_text()))
    day = dt.date.fromisoformat(manifest["logical_date"])
    start, end = config.history.window(day)
    universe = [*config.universe.tickers, config.universe.benchmark]
    warehouse = Warehouse(f"sqlite:///{outputs / 'warehouse.db'}")
    try:
        out = {table: digest(warehouse.read(table, where={"run_id": run_id})) for table in RUN_TABLES}
        for table, (column, by_ticker) in WINDOW_TABLES.items():
            rows = warehouse.read(
                table, start=start, end=end, date_column=column, tickers=universe if by_ticker else None
            )
            out[table] = digest(rows)
        categories = warehouse.read("transaction_categories")
        in_window = warehouse.read("transactions", start=start, end=end)["txn_id"]
        out["transaction_categories"] = digest(categories[categories["txn_id"].isin(in_window)])
        out["holdings"] = digest(warehouse.read("holdings", start=day, end=day, date_column="as_of"))
        out["investable_cash"] = digest(warehouse.read("investable_cash", start=day, end=day, date_column="as_of"))
        out.update(_predictions(warehouse, run_id))
        out.update(_book(warehouse, run_id, day))
    finally:
        warehouse.dispose()
    out.update(_report_numbers(run_dir))
    return out


def _predictions(warehouse: Warehouse, run_id: str) -> dict[str, str]:
    live = warehouse.read("predictions", where={"run_id": run_id, "kind": "live"})
    history = pd.DataFrame()
    if not live.empty:
        model, version = live["model_name"].iloc[0], live["model_version"].iloc[0]
        history = warehouse.read(
            "predictions", where={"model_name": model, "model_version": version, "kind": "walk_forward"}
        )
    return {"predictions:live": digest(live), "predictions:walk_forward": digest(history)}


def _book(warehouse: Warehouse, run_id: str, day: dt.date) -> dict[str, str]:
    """The book this run traded (named by its orders or values), up to the logical date."""
    values = warehouse.read("portfolio_values", where={"run_id": run_id})
    if values.empty:
        return {table: digest(pd.DataFrame()) for table in BOOK_TABLES}
    book = values["portfolio"].iloc[0]
    return {
        table: digest(warehouse.read(table, end=day, date_column=column, where={"portfolio": book}))
        for table, column in BOOK_TABLES.items()
    }


def _report_numbers(run_dir: Path) -> dict[str, str]:
    out = {}
    for stage in REPORT_STAGES:
        metrics = json.loads((run_dir / "stage_results" / f"{stage}.json").read_text())["metrics"]
        out[f"report:{stage}"] = hashlib.sha256(
            json.dumps({k: float(f"{v:.12g}") for k, v in sorted(metrics.items())}).encode()
        ).hexdigest()[:16]
    return out
