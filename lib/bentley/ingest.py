"""The `ingest` stage: fetch every configured source and land it in the raw lake.

Raw data is written exactly as the source returned it (never edited afterwards), one
Parquet file per dataset and run, partitioned by the logical date. Data that fails an
error-severity check is rejected before anything is written, so bad input leaves the lake
as it was. Fetches are
incremental (see `sync`). One failing ticker never fails the universe: failures are
reported by name, and the stage fails only past `sources.market.max_failed_share`. An
empty response is reported and writes nothing, so it can never hide data landed earlier.

Each requested ticker's instrument type (equity, etf, fund, index) goes to the warehouse
table `instruments`: `universe.instrument_types` where it names the ticker (source
"params"), else what the market source says. Later stages read it through
`bentley.inputs.tradable_tickers`, so an index is never held, ordered, optimized or a
model row.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from bentley import etl, sync, validation
from bentley.lake import Lake
from bentley.reporting import md_escape
from bentley.schemas import DATASET_ROLES, RAW_DATASETS
from bentley.sources import (
    FetchRequest,
    MarketSource,
    Source,
    market_source,
    news_source,
    portfolio_source,
    resolve_universe,
    social_source,
)
from bentley.sources.base import TRADABLE_TYPES, SourceError

if TYPE_CHECKING:
    from bentley.stage import Params
    from bentley.warehouse import Warehouse

log = logging.getLogger(__name__)

#: Columns of the warehouse table `instruments`.
INSTRUMENT_COLUMNS: list[str] = ["ticker", "instrument_type", "source", "updated_at"]


@dataclass
class IngestResult:
    universe: list[str]
    benchmark: str
    frames: dict[str, pd.DataFrame]
    summary: pd.DataFrame
    failures: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["source", "item", "reason"]))
    instruments: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=INSTRUMENT_COLUMNS))


def instrument_rows(
    tickers: Iterable[str], market: MarketSource, overrides: Mapping[str, str], updated_at: dt.datetime
) -> pd.DataFrame:
    """One `instruments` row per ticker: its type and who said so.

    `universe.instrument_types` (`overrides`) wins, recorded with source "params", because
    only the user can correct a source that calls an ETF an equity; every other type is the
    market source's, recorded under its name.
    """
    tickers = list(dict.fromkeys(tickers))
    said = market.instrument_types(tickers)
    rows = [
        {
            "ticker": t,
            "instrument_type": overrides.get(t, said[t]),
            "source": "params" if t in overrides else market.name,
            "updated_at": updated_at,
        }
        for t in tickers
    ]
    return pd.DataFrame(rows, columns=INSTRUMENT_COLUMNS)


def instruments_sentence(instruments: pd.DataFrame, benchmark: str) -> str:
    """What the types mean for the run, in words (Markdown; tickers are escaped data).

    Names the tickers that will never be traded, and the types the params set over the
    source's, so a reader sees at once why a ticker has no weight in later reports.
    """

    def listed(tickers: pd.Series) -> str:
        names = [md_escape(t) + (" (the benchmark)" if t == benchmark else "") for t in tickers]
        return ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")

    kept = instruments["instrument_type"].isin(TRADABLE_TYPES) & (instruments["ticker"] != benchmark)
    counts = instruments.loc[kept, "instrument_type"].value_counts().sort_index()
    mix = ", ".join(f"{n} {kind}" for kind, n in counts.items()) or "none"
    out = instruments.loc[~kept]
    text = f"{int(kept.sum())} of {len(instruments)} tickers may be traded ({mix})."
    if len(out):
        text += (
            f" Never held, ordered, optimized or used as model rows: {listed(out['ticker'])}; "
            "they keep their prices, as the benchmark or as feature inputs."
        )
    overridden = instruments.loc[instruments["source"] == "params", "ticker"]
    if len(overridden):
        text += f" Types set by universe.instrument_types: {listed(overridden)}."
    return text


def ingest(
    params: Params, lake: Lake, warehouse: Warehouse, logical_date: dt.date, run_id: str, root: Path
) -> IngestResult:
    """Fetch prices (universe + benchmark), news, social posts, transactions and holdings; write the lake."""
    window = params.history.window(logical_date)
    settings = params.sources.market
    data_dir = root / params.sources.data_dir
    market = market_source(params, data_dir)
    universe = resolve_universe(params.universe.tickers, market)
    benchmark = params.universe.benchmark
    sources: dict[str, Source] = {
        "market": market,
        "news": news_source(params, data_dir),
        "social": social_source(params, data_dir),
        "portfolio": portfolio_source(params, data_dir),
    }
    cursors = {d: sync.read_cursors(warehouse, sources[r].name, d) for d, r in DATASET_ROLES.items()}
    full = settings.full_refresh
    overlap = settings.overlap_sessions
    cal = params.workflow.calendar

    frames: dict[str, pd.DataFrame] = {}
    tickers = [*universe, benchmark]
    held = warehouse.read("prices", tickers=tickers, start=window[0], end=window[1], columns=["ticker", "date"])
    gaps = sync.first_missing_sessions(held, tickers, window, cal)
    frames["prices"], starts = _fetch_prices(
        market, tickers, cursors["prices"], window, overlap, full, cal, logical_date, gaps
    )
    _enforce_failure_threshold(market, len(set(universe) | {benchmark}), settings.max_failed_share)
    news_plan = sync.plan_fetch(universe, cursors["news"], window, overlap, full, cal)
    frames["news"] = _fetch_planned(sources["news"], "news", news_plan, logical_date)
    social_plan = sync.plan_fetch(universe, cursors["social"], window, overlap, full, cal)
    frames["social"] = _fetch_planned(sources["social"], "social", social_plan, logical_date)
    txn_plan = sync.plan_fetch([sync.ALL_TICKERS], cursors["transactions"], window, overlap, full, cal)
    txn_start = txn_plan.starts[sync.ALL_TICKERS]
    frames["transactions"] = sources["portfolio"].fetch(
        "transactions", FetchRequest(txn_start, window[1], tuple(universe), as_of=logical_date)
    )
    frames["holdings"] = sources["portfolio"].fetch(
        "holdings", FetchRequest(window[0], window[1], tuple(universe), as_of=logical_date)
    )

    # Bad data never lands: the load's error checks run before the first lake write.
    _, results = etl.validate(params, {d: f.assign(_lake_file="(fetched)") for d, f in frames.items()}, logical_date)
    where = f" from {settings.path}" if settings.path else ""
    validation.raise_on_errors(f"ingest ({settings.kind} data{where})", results)

    rows = []
    for dataset, role in DATASET_ROLES.items():
        source, frame = sources[role], frames[dataset]
        path = None
        if not frame.empty:
            path = lake.write_raw(frame, source=source.name, dataset=dataset, ingest_date=logical_date, name=run_id)
        fetched_from = {
            "prices": min(starts.values(), default=window[0]),
            "news": min(news_plan.starts.values(), default=window[0]),
            "social": min(social_plan.starts.values(), default=window[0]),
            "transactions": txn_start,
            "holdings": logical_date,
        }[dataset]
        rows.append(_summary_row(dataset, source.name, frame, path, fetched_from, window[0]))
    failures = [
        {"source": f"{role}:{source.name}", "item": item, "reason": reason}
        for role, source in sources.items()
        for item, reason in sorted(source.failures.items())
    ]
    summary = pd.DataFrame(rows).astype({"rows": "int64", "tickers": "Int64"}).set_index("dataset")
    instruments = instrument_rows(tickers, market, params.universe.instrument_types, dt.datetime.now(dt.UTC))
    warehouse.upsert("instruments", instruments)
    return IngestResult(
        universe=universe,
        benchmark=benchmark,
        frames=frames,
        summary=summary,
        failures=pd.DataFrame(failures, columns=["source", "item", "reason"]),
        instruments=instruments,
    )


def _fetch_prices(
    market: MarketSource,
    tickers: list[str],
    cursors: dict[str, dt.date],
    window: tuple[dt.date, dt.date],
    overlap: int,
    full_refresh: bool,
    cal: str,
    logical_date: dt.date,
    gaps: dict[str, dt.date],
) -> tuple[pd.DataFrame, dict[str, dt.date]]:
    """Incremental fetch; tickers with a new split or dividend are refetched in full.

    Prices stored as traded do not need it (they are adjusted when read), but a source that
    delivers only adjusted prices has just changed that ticker's whole history.
    """
    tickers = list(dict.fromkeys(tickers))
    plan = sync.plan_fetch(tickers, cursors, window, overlap, full_refresh, cal, first_missing=gaps)
    prices = _fetch_planned(market, "prices", plan, logical_date)
    failures = dict(market.failures)
    changed = [t for t in sync.new_corporate_actions(prices, cursors) if plan.is_incremental(t, window[0])]
    starts = dict(plan.starts)
    if changed:
        log.info("refetching %s over the whole window: new split or dividend", ", ".join(changed))
        refetched = market.fetch("prices", FetchRequest(window[0], window[1], tuple(changed), as_of=logical_date))
        failures.update(market.failures)
        prices = pd.concat([prices[~prices["ticker"].isin(changed)], refetched], ignore_index=True)
        starts.update({t: window[0] for t in changed})
    market.failures = failures
    return prices, starts


def _fetch_planned(source: Source, dataset: str, plan: sync.FetchPlan, logical_date: dt.date) -> pd.DataFrame:
    frames, failures = [], {}
    for start, tickers in plan.groups().items():
        frames.append(source.fetch(dataset, FetchRequest(start, plan.end, tickers, as_of=logical_date)))
        failures.update(source.failures)
    source.failures = failures
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=RAW_DATASETS[dataset].column_names)
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _enforce_failure_threshold(market: MarketSource, requested: int, max_share: float) -> None:
    failed = sorted(market.failures)
    if requested and len(failed) / requested > max_share:
        details = "; ".join(f"{t}: {market.failures[t]}" for t in failed)
        raise SourceError(
            f"{len(failed)} of {requested} tickers failed (more than sources.market.max_failed_share="
            f"{max_share:.0%}): {details}"
        )


def _summary_row(
    dataset: str, source: str, frame: pd.DataFrame, path: Path | None, fetched_from: dt.date, window_start: dt.date
) -> dict:
    date_column = "as_of" if dataset == "holdings" else "date"
    dates = pd.to_datetime(frame[date_column]) if len(frame) else pd.Series(dtype="datetime64[ns]")
    return {
        "dataset": dataset,
        "source": source,
        "mode": "snapshot" if dataset == "holdings" else ("incremental" if fetched_from > window_start else "full"),
        "fetched_from": fetched_from,
        "rows": len(frame),
        "tickers": int(frame["ticker"].nunique()) if "ticker" in frame else None,
        "first_date": dates.min().date() if len(dates) else None,
        "last_date": dates.max().date() if len(dates) else None,
        "lake_file": path.name if path else "(empty response: nothing written)",
    }
