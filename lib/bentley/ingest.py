"""The `ingest` stage: fetch every configured source and land it in the raw lake.

Raw data is written exactly as the source returned it (never edited afterwards), one
Parquet file per dataset and run, partitioned by the logical date. An empty response
is reported and writes nothing, so it can never hide data landed earlier.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from types import SimpleNamespace

import pandas as pd

from bentley.lake import Lake
from bentley.sources import FetchRequest, MarketSource, market_source, news_source, portfolio_source

#: Which `sources.<role>` serves each dataset.
DATASET_ROLES: dict[str, str] = {
    "prices": "market",
    "news": "news",
    "transactions": "portfolio",
    "holdings": "portfolio",
}


@dataclass
class IngestResult:
    universe: list[str]
    benchmark: str
    frames: dict[str, pd.DataFrame]
    summary: pd.DataFrame


def resolve_universe(tickers: list[str] | None, market: MarketSource) -> list[str]:
    """`universe.tickers`, or every ticker the market source provides when it is null."""
    return list(tickers) if tickers is not None else market.available_tickers()


def ingest(params: SimpleNamespace, lake: Lake, logical_date: dt.date, run_id: str) -> IngestResult:
    """Fetch prices (universe + benchmark), news, transactions and holdings; write the lake."""
    start, end = params.history.window(logical_date)
    market = market_source(params)
    universe = resolve_universe(params.universe.tickers, market)
    benchmark = params.universe.benchmark
    with_benchmark = tuple(dict.fromkeys([*universe, benchmark]))
    sources = {"market": market, "news": news_source(params), "portfolio": portfolio_source(params)}
    requests = {
        "prices": FetchRequest(start, end, with_benchmark, as_of=logical_date),
        "news": FetchRequest(start, end, tuple(universe), as_of=logical_date),
        "transactions": FetchRequest(start, end, tuple(universe), as_of=logical_date),
        "holdings": FetchRequest(start, end, tuple(universe), as_of=logical_date),
    }
    frames: dict[str, pd.DataFrame] = {}
    rows = []
    for dataset, role in DATASET_ROLES.items():
        source = sources[role]
        frame = source.fetch(dataset, requests[dataset])
        frames[dataset] = frame
        path = None
        if not frame.empty:
            path = lake.write_raw(frame, source=source.name, dataset=dataset, ingest_date=logical_date, name=run_id)
        rows.append(_summary_row(dataset, source.name, frame, path))
    summary = pd.DataFrame(rows).astype({"rows": "int64", "tickers": "Int64"}).set_index("dataset")
    return IngestResult(universe=universe, benchmark=benchmark, frames=frames, summary=summary)


def _summary_row(dataset: str, source: str, frame: pd.DataFrame, path) -> dict:  # noqa: ANN001
    date_column = "as_of" if dataset == "holdings" else "date"
    dates = pd.to_datetime(frame[date_column]) if len(frame) else pd.Series(dtype="datetime64[ns]")
    return {
        "dataset": dataset,
        "source": source,
        "rows": len(frame),
        "tickers": int(frame["ticker"].nunique()) if "ticker" in frame else None,
        "first_date": dates.min().date() if len(dates) else None,
        "last_date": dates.max().date() if len(dates) else None,
        "lake_file": path.name if path else "(empty response: nothing written)",
    }
