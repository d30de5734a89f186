"""What a whole pipeline run produces, shared by the local and the Airflow pipeline tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

from bentley.warehouse import Warehouse

STAGES = [
    "ingest",
    "etl",
    "features",
    "sentiment",
    "risk",
    "budget",
    "technical",
    "anomalies",
    "train",
    "optimize",
    "trade",
    "monitor",
]
DATA_TABLES = [
    "prices",
    "news",
    "transactions",
    "holdings",
    "features",
    "news_sentiment",
    "sentiment_daily",
    "transaction_categories",
    "budget_monthly",
    "net_worth",
    "investable_cash",
    "anomalies",
    "orders",
    "fills",
    "positions",
    "portfolio_values",
]


def table_fingerprints(outputs: Path) -> dict[str, tuple[int, str]]:
    warehouse = Warehouse(f"sqlite:///{outputs / 'warehouse.db'}")
    prints = {}
    for table in DATA_TABLES:
        frame = warehouse.read(table).drop(columns=["run_id"], errors="ignore")  # which run wrote it may change
        text = frame.to_csv(index=False, float_format="%.12g")
        prints[table] = (len(frame), hashlib.sha256(text.encode()).hexdigest())
    warehouse.dispose()
    return prints
