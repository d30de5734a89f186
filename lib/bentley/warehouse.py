"""The SQL warehouse: the only code that speaks SQL.

SQLAlchemy Core tables keyed on natural keys (ARCHITECTURE §5) are the schema of record
(`metadata.create_all`). Loads are upserts inside one transaction per call, using each
dialect's native statement, so a rerun never duplicates rows and a failed load leaves the
table as it was. Values are always bound parameters (or COPY data), never SQL text.

Loads are bulk loads: a frame is converted column by column with numpy (no per-cell Python
branching) into DBAPI rows, in chunks, and sent through the driver with a statement built
once per call, identifiers quoted by the dialect's preparer:

- SQLite: `INSERT ... ON CONFLICT (key) DO UPDATE SET c = excluded.c` with `executemany`.
  Dates and timestamps are stored as the text SQLAlchemy's SQLite types use
  ('YYYY-MM-DD', 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC), so typed reads parse them.
- PostgreSQL: small frames `executemany` (pipelined by psycopg); larger ones a binary
  `COPY` into a temporary table, then one `INSERT ... SELECT ... ON CONFLICT DO UPDATE`.
- MySQL/MariaDB: `INSERT ... VALUES (...) ON DUPLICATE KEY UPDATE c = VALUES(c)`, which
  PyMySQL's `executemany` folds into multi-row statements of at most ~1 MB (below any
  `max_allowed_packet`).

On SQLite and PostgreSQL the update is skipped for rows whose values are unchanged (MySQL
does that itself), so rerunning an overlapping load rewrites nothing.
Within one frame, the last row of a duplicated key wins on every dialect. Timestamps are
stored in UTC and read back as tz-aware UTC; dates are read back as datetime64.

The URL comes from BENTLEY_WAREHOUSE_URL, else params `warehouse.url`, else SQLite under
the outputs folder. A password is never a parameter: BENTLEY_WAREHOUSE_PASSWORD supplies it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import URL, Connection, Engine, make_url

from bentley.sources.base import Health

URL_ENV = "BENTLEY_WAREHOUSE_URL"
PASSWORD_ENV = "BENTLEY_WAREHOUSE_PASSWORD"
_CHUNK_ROWS = 50_000  # rows converted to Python and handed to the driver at a time
_COPY_MIN_ROWS = 300  # PostgreSQL: below this, pipelined executemany beats COPY + temporary table

#: Full double precision everywhere (a bare Float is single precision on MySQL/MariaDB).
FLOAT64: sa.Double[float] = sa.Double()
#: UTC instants; MySQL/MariaDB DATETIME keeps microseconds only with fsp=6.
TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

metadata = sa.MetaData()


def _key(name: str, length: int = 64) -> sa.Column:
    return sa.Column(name, sa.String(length), primary_key=True)


instruments = sa.Table(  # what each ticker is: only equity, etf and fund are ever traded
    "instruments",
    metadata,
    _key("ticker", 32),
    sa.Column("instrument_type", sa.String(16)),  # equity | etf | fund | index
    sa.Column("source", sa.String(32)),  # the market source, or "params" for an override
    sa.Column("updated_at", TIMESTAMP),
)

prices = sa.Table(
    "prices",
    metadata,
    _key("ticker", 32),
    sa.Column("date", sa.Date, primary_key=True),
    sa.Column("open", FLOAT64),
    sa.Column("high", FLOAT64),
    sa.Column("low", FLOAT64),
    sa.Column("close", FLOAT64, comment="as traded"),
    # NULL: derived when read, as of the reader's logical date (bentley.adjustment); a value
    # is what a source that only delivers adjusted prices gave.
    sa.Column("adj_close", FLOAT64, nullable=True, comment="NULL: adjusted as of the reader's date"),
    sa.Column("volume", sa.BigInteger),
    sa.Column("dividend", FLOAT64),
    sa.Column("split_ratio", FLOAT64),
    sa.Column("source", sa.String(32)),
)

news = sa.Table(
    "news",
    metadata,
    _key("news_id"),
    sa.Column("ticker", sa.String(32), index=True),
    sa.Column("published_at", TIMESTAMP),
    sa.Column("date", sa.Date, index=True),
    sa.Column("headline", sa.Text),
    sa.Column("publisher", sa.String(128)),
    sa.Column("url", sa.Text),
    sa.Column("source", sa.String(32)),
    # news | social: headlines and posts share one table and one scorer, told apart here.
    sa.Column("source_kind", sa.String(16), nullable=True, comment="NULL: news (rows from before social)"),
    sa.Column("author", sa.String(128), nullable=True),  # a social post's author; NULL for headlines
)

transactions = sa.Table(
    "transactions",
    metadata,
    _key("txn_id"),
    sa.Column("date", sa.Date, index=True),
    sa.Column("account", sa.String(64)),
    sa.Column("amount", FLOAT64),
    sa.Column("description", sa.Text),
    sa.Column("category", sa.String(64), nullable=True),
    sa.Column("source", sa.String(32)),
)

holdings = sa.Table(
    "holdings",
    metadata,
    sa.Column("as_of", sa.Date, primary_key=True),
    _key("account"),
    _key("ticker", 32),
    sa.Column("quantity", FLOAT64),
    sa.Column("cost_basis", FLOAT64),
    sa.Column("source", sa.String(32)),
)

#: Feature columns are added as the params ask for them (see `ensure_float_columns`).
features = sa.Table(
    "features",
    metadata,
    _key("ticker", 32),
    sa.Column("date", sa.Date, primary_key=True),
)

#: Incremental sync: the last date loaded per (source, dataset, ticker); "*" when a
#: dataset has no ticker. Written by `etl` after a successful load, read by `ingest`.
sync_state = sa.Table(
    "sync_state",
    metadata,
    _key("source", 32),
    _key("dataset", 32),
    _key("ticker", 32),
    sa.Column("cursor_date", sa.Date),
    sa.Column("rows", sa.Integer),
    sa.Column("run_id", sa.String(64)),
)

pipeline_runs = sa.Table(
    "pipeline_runs",
    metadata,
    _key("run_id"),
    sa.Column("profile", sa.String(64)),
    sa.Column("logical_date", sa.Date),
    sa.Column("status", sa.String(16)),
    sa.Column("params_hash", sa.String(64)),
    sa.Column("git_sha", sa.String(40)),
    sa.Column("started_at", TIMESTAMP),
    sa.Column("ended_at", TIMESTAMP),
    sa.Column("duration_s", FLOAT64),
    sa.Column("mlflow_run_id", sa.String(64)),
)

stage_runs = sa.Table(
    "stage_runs",
    metadata,
    _key("run_id"),
    _key("stage"),
    sa.Column("attempt", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("status", sa.String(16)),
    sa.Column("started_at", TIMESTAMP),
    sa.Column("ended_at", TIMESTAMP),
    sa.Column("duration_s", FLOAT64),
    sa.Column("cell_time_s", FLOAT64),
    sa.Column("notebook_path", sa.Text),
    sa.Column("report_path", sa.Text),
    sa.Column("mlflow_run_id", sa.String(64)),
    sa.Column("error", sa.Text),
)

data_quality = sa.Table(
    "data_quality",
    metadata,
    _key("run_id"),
    _key("dataset"),
    _key("check_name"),
    sa.Column("severity", sa.String(16)),
    sa.Column("passed", sa.Boolean),
    sa.Column("n_failed", sa.Integer),
    sa.Column("n_rows", sa.Integer),
    sa.Column("examples", sa.Text),
    sa.Column("detail", sa.Text),
)


# --------------------------------------------------------------------------- analytics

risk_metrics = sa.Table(
    "risk_metrics",
    metadata,
    _key("run_id"),
    _key("scope"),  # a ticker or `portfolio:<name>`
    _key("metric"),
    sa.Column("value", FLOAT64),  # NULL: undefined, or too few observations to publish (see note)
    sa.Column("window_start", sa.Date),
    sa.Column("window_end", sa.Date),
    sa.Column("n_obs", sa.Integer),
    sa.Column("note", sa.Text),  # why value is NULL, or what it rests on
)

technical_signals = sa.Table(
    "technical_signals",
    metadata,
    _key("run_id"),
    _key("ticker", 32),
    sa.Column("date", sa.Date, primary_key=True),
    _key("rule", 32),
    sa.Column("direction", sa.Integer),  # +1 bullish, -1 bearish
    sa.Column("strength", FLOAT64),  # 0..1, defined per rule in analytics/technical.py
    sa.Column("value", FLOAT64),  # the indicator value that fired
    sa.Column("reference", FLOAT64),  # the level it crossed
)

news_sentiment = sa.Table(
    "news_sentiment",
    metadata,
    _key("news_id"),
    sa.Column("ticker", sa.String(32)),
    sa.Column("date", sa.Date),
    sa.Column("compound", FLOAT64),
    sa.Column("pos", FLOAT64),
    sa.Column("neu", FLOAT64),
    sa.Column("neg", FLOAT64),
)

sentiment_daily = sa.Table(
    "sentiment_daily",
    metadata,
    _key("ticker", 32),
    sa.Column("date", sa.Date, primary_key=True),
    sa.Column("mean_compound", FLOAT64),
    sa.Column("n_headlines", sa.Integer),
    sa.Column("positive_share", FLOAT64),
    sa.Column("negative_share", FLOAT64),
)

transaction_categories = sa.Table(
    "transaction_categories",
    metadata,
    _key("txn_id"),
    sa.Column("category", sa.String(64)),
    sa.Column("method", sa.String(16)),  # given | rule | model
    sa.Column("model_confidence", FLOAT64),
)

budget_monthly = sa.Table(
    "budget_monthly",
    metadata,
    _key("month", 7),  # YYYY-MM
    _key("category"),
    sa.Column("spent", FLOAT64),
    sa.Column("budget_limit", FLOAT64),
    sa.Column("over", FLOAT64),
    sa.Column("over_budget", sa.Boolean),
)

net_worth = sa.Table(
    "net_worth",
    metadata,
    sa.Column("date", sa.Date, primary_key=True),
    sa.Column("cash", FLOAT64),
    sa.Column("holdings_value", FLOAT64),
    sa.Column("net_worth", FLOAT64),
)

investable_cash = sa.Table(
    "investable_cash",
    metadata,
    sa.Column("as_of", sa.Date, primary_key=True),
    sa.Column("cash", FLOAT64),
    sa.Column("monthly_expenses", FLOAT64),
    sa.Column("emergency_fund", FLOAT64),
    sa.Column("upcoming_bills", FLOAT64),
    sa.Column("investable_cash", FLOAT64),
    sa.Column("shortfall", FLOAT64),
)


# --------------------------------------------------------------------------- models

anomalies = sa.Table(
    "anomalies",
    metadata,
    _key("ticker", 32),
    sa.Column("date", sa.Date, primary_key=True),
    sa.Column("ret_1d", FLOAT64),
    sa.Column("volume_z", FLOAT64),
    sa.Column("range_pct", FLOAT64),
    sa.Column("z_ret", FLOAT64),
    sa.Column("z_volume", FLOAT64),
    sa.Column("z_range", FLOAT64),
    sa.Column("max_abs_z", FLOAT64),
    sa.Column("z_flag", sa.Boolean),
    sa.Column("if_score", FLOAT64),
    sa.Column("if_flag", sa.Boolean),
    sa.Column("flag", sa.Boolean),
    sa.Column("method", sa.String(16)),  # both | robust_z | isolation_forest | none
)

predictions = sa.Table(
    "predictions",
    metadata,
    _key("run_id"),
    _key("ticker", 32),
    sa.Column("date", sa.Date, primary_key=True),
    sa.Column("proba_up", FLOAT64),  # P(forward return over ml.horizon sessions > 0)
    sa.Column("predicted_up", sa.Boolean),
    sa.Column("horizon", sa.Integer),
    sa.Column("model_name", sa.String(128)),
    sa.Column("model_version", sa.String(16)),  # the registry version that produced the row
    sa.Column("predicted_at", TIMESTAMP),  # optimize reads the newest predictions for its date
    # live: the champion on sessions whose label is unknown; walk_forward: out-of-sample rows of
    # the CV folds and holdout (each from a model trained on earlier, purged sessions), for backtests
    sa.Column("kind", sa.String(16)),
)

model_decisions = sa.Table(
    "model_decisions",
    metadata,
    _key("run_id"),
    _key("model_name", 128),
    sa.Column("challenger_version", sa.String(16)),
    sa.Column("champion_version", sa.String(16)),  # before the decision; null on the first run
    sa.Column("metric", sa.String(32)),
    sa.Column("challenger_value", FLOAT64),
    sa.Column("champion_value", FLOAT64),
    sa.Column("margin", FLOAT64),
    sa.Column("promoted", sa.Boolean),
    sa.Column("reason", sa.Text),
    sa.Column("decided_at", TIMESTAMP),
    # The challenger's evidence on the holdout (bentley.models.registry.Evidence), and the verdict in words
    sa.Column("verdict", sa.Text),
    sa.Column("holdout_rows", sa.Integer),
    sa.Column("p_value", FLOAT64),  # share of its class refitted on shuffled labels reaching its metric (+1)
    sa.Column("ci_lower", FLOAT64),  # block-bootstrap percentile interval of the metric
    sa.Column("ci_upper", FLOAT64),
    sa.Column("accuracy", FLOAT64),
    sa.Column("majority_rate", FLOAT64),  # accuracy of always predicting the holdout's common label
    sa.Column("champion_p_value", FLOAT64),  # the champion's, on the same rows; null when not compared
    sa.Column("champion_ci_lower", FLOAT64),
    sa.Column("champion_ci_upper", FLOAT64),
)

model_monitoring = sa.Table(
    "model_monitoring",
    metadata,
    _key("run_id"),
    _key("model_name", 128),
    sa.Column("model_version", sa.String(16)),
    sa.Column("as_of", sa.Date),
    sa.Column("holdout_accuracy", FLOAT64),
    sa.Column("recent_accuracy", FLOAT64),
    sa.Column("degradation", FLOAT64),  # 1 - recent / holdout accuracy
    sa.Column("n_recent", sa.Integer),
    sa.Column("max_psi", FLOAT64),
    sa.Column("drifted_features", sa.Integer),  # PSI above the significant threshold
    sa.Column("retraining_required", sa.Boolean),
    sa.Column("reason", sa.Text),
)

target_weights = sa.Table(
    "target_weights",
    metadata,
    _key("run_id"),
    _key("ticker", 32),
    sa.Column("weight", FLOAT64),
    sa.Column("method", sa.String(32)),  # max_sharpe | min_volatility | hrp | equal_weight
    sa.Column("expected_return", FLOAT64),  # annual
    sa.Column("shares", sa.Integer),
    sa.Column("price", FLOAT64),
    sa.Column("value", FLOAT64),
)


# --------------------------------------------------------------------------- trading

signals = sa.Table(
    "signals",
    metadata,
    _key("run_id"),
    _key("ticker", 32),
    sa.Column("date", sa.Date, primary_key=True),
    sa.Column("score", FLOAT64),  # Σ contributions, in [-1, 1]
    sa.Column("model", FLOAT64),  # contribution = weight x component (2p - 1)
    sa.Column("technical", FLOAT64),
    sa.Column("sentiment", FLOAT64),
    sa.Column("target_weight", FLOAT64),  # before the risk limits
    sa.Column("weight", FLOAT64),  # after the risk limits (paper orders aim here)
)

backtest_positions = sa.Table(  # every session of every strategy: rebuild any figure with SQL
    "backtest_positions",
    metadata,
    _key("run_id"),
    _key("strategy"),  # signal | benchmark | sweep:best
    sa.Column("date", sa.Date, primary_key=True),
    _key("ticker", 32),
    sa.Column("score", FLOAT64),  # the strategy's signal score decided at this session's close
    sa.Column("target_weight", FLOAT64),  # what the signal asked for, before the risk limits
    sa.Column("weight_before", FLOAT64),  # held just before this session's execution
    sa.Column("weight_after", FLOAT64),  # held just after it
    sa.Column("weight", FLOAT64),  # held at this session's close (after drift)
    sa.Column("traded_value", FLOAT64),  # USD traded this session, 0 when none
)

backtest_equity = sa.Table(
    "backtest_equity",
    metadata,
    _key("run_id"),
    _key("strategy"),
    sa.Column("date", sa.Date, primary_key=True),
    sa.Column("gross_return", FLOAT64),  # before costs
    sa.Column("cost", FLOAT64),  # as a share of equity at execution
    sa.Column("net_return", FLOAT64),
    sa.Column("equity", FLOAT64),  # USD at the close
    sa.Column("turnover", FLOAT64),  # Σ|Δw| traded this session
    sa.Column("gross_exposure", FLOAT64),  # Σ|w| at the close
)

risk_limit_events = sa.Table(
    "risk_limit_events",
    metadata,
    _key("run_id"),
    sa.Column("date", sa.Date, primary_key=True),
    _key("ticker", 32),
    _key("rule", 32),  # max_position_weight | max_gross_exposure | daily_loss_limit | max_daily_turnover
    sa.Column("requested", FLOAT64),  # the weight asked for before this rule
    sa.Column("allowed", FLOAT64),  # the weight the rule let through
)

backtest_metrics = sa.Table(
    "backtest_metrics",
    metadata,
    _key("run_id"),
    _key("strategy"),  # signal | benchmark | sweep:best (the sweep's best configuration, named in note)
    _key("metric"),  # the names and conventions of risk_metrics, plus psr, dsr and trials
    sa.Column("value", FLOAT64),  # NULL: undefined, or too few observations to publish (see note)
    sa.Column("window_start", sa.Date),
    sa.Column("window_end", sa.Date),
    sa.Column("n_obs", sa.Integer),
    sa.Column("note", sa.Text),  # why value is NULL, or what it rests on
)

backtest_sweep = sa.Table(
    "backtest_sweep",
    metadata,
    _key("run_id"),
    _key("config", 128),  # e.g. entry_threshold=0.05,model_weight=0.4
    sa.Column("entry_threshold", FLOAT64),
    sa.Column("model_weight", FLOAT64),
    sa.Column("annual_return", FLOAT64),
    sa.Column("annual_volatility", FLOAT64),
    sa.Column("sharpe_ratio", FLOAT64),
    sa.Column("max_drawdown", FLOAT64),
    sa.Column("turnover", FLOAT64),  # mean Σ|Δw| per session
    sa.Column("cost_drag", FLOAT64),  # annual return lost to costs
)

orders = sa.Table(
    "orders",
    metadata,
    _key("order_id"),  # deterministic: portfolio, decision date and ticker, so a rerun creates no new order
    sa.Column("portfolio", sa.String(64)),
    sa.Column("decided_on", sa.Date),  # the logical date whose signals produced it
    sa.Column("ticker", sa.String(32)),
    sa.Column("quantity", FLOAT64),  # signed shares: + buy, - sell
    sa.Column("target_weight", FLOAT64),
    sa.Column("reference_price", FLOAT64),  # the decision day's close
    sa.Column("status", sa.String(16)),  # pending | filled
    sa.Column("run_id", sa.String(64)),
    sa.Column("decided_at", TIMESTAMP, nullable=True),  # intraday (runner watch) orders: the deciding batch
    sa.Column("reason", sa.String(32), nullable=True),  # intraday: reduce | flatten; NULL: the trade stage
)

fills = sa.Table(
    "fills",
    metadata,
    _key("fill_id"),
    sa.Column("order_id", sa.String(64)),
    sa.Column("portfolio", sa.String(64)),
    sa.Column("date", sa.Date),
    sa.Column("ticker", sa.String(32)),
    sa.Column("quantity", FLOAT64),
    sa.Column("price", FLOAT64),  # the execution price (next session's open or close), before costs
    sa.Column("commission", FLOAT64),
    sa.Column("slippage", FLOAT64),
    sa.Column("impact", FLOAT64),
    sa.Column("cash_change", FLOAT64),  # -(quantity x price) - costs
    sa.Column("run_id", sa.String(64)),
    sa.Column(
        "filled_at", TIMESTAMP, nullable=True
    ),  # intraday (runner watch) fills; NULL: at the session's open/close
)

positions = sa.Table(
    "positions",
    metadata,
    sa.Column("as_of", sa.Date, primary_key=True),
    _key("portfolio"),  # in the key beside ARCHITECTURE's (as_of, ticker): two portfolios may hold one ticker
    _key("ticker", 32),
    sa.Column("quantity", FLOAT64),
    sa.Column("price", FLOAT64),  # the as_of close
    sa.Column("market_value", FLOAT64),
    sa.Column("weight", FLOAT64),
)

portfolio_values = sa.Table(
    "portfolio_values",
    metadata,
    _key("portfolio"),
    sa.Column("date", sa.Date, primary_key=True),
    sa.Column("cash", FLOAT64),
    sa.Column("positions_value", FLOAT64),
    sa.Column("equity", FLOAT64),
    sa.Column("daily_return", FLOAT64),
    sa.Column("costs", FLOAT64),
    sa.Column("run_id", sa.String(64)),
)

# --------------------------------------------------------------------------- live (runner watch)

#: The book marked to market after every batch of bars.
intraday_marks = sa.Table(
    "intraday_marks",
    metadata,
    _key("portfolio"),
    sa.Column("ts", TIMESTAMP, primary_key=True),  # the batch's bar start (UTC)
    sa.Column("session", sa.Date, index=True),
    sa.Column("equity", FLOAT64),
    sa.Column("cash", FLOAT64),
    sa.Column("positions_value", FLOAT64),
    sa.Column("prev_equity", FLOAT64),  # the previous close's equity (portfolio_values)
    sa.Column("pnl", FLOAT64),
    sa.Column("pnl_pct", FLOAT64),
    sa.Column("high_water", FLOAT64),
    sa.Column("drawdown", FLOAT64),
    sa.Column("realised_vol", FLOAT64),  # sqrt(Σ squared log returns of equity) so far
    sa.Column("n_bars", sa.Integer),
    sa.Column("run_id", sa.String(64)),  # watch-<portfolio>-YYYYMMDD
)

#: Intraday risk figures per batch: the book's (scope portfolio:<book>) and each held ticker's.
intraday_risk = sa.Table(
    "intraday_risk",
    metadata,
    sa.Column("ts", TIMESTAMP, primary_key=True),
    _key("metric", 32),  # pnl_pct | drawdown | realised_vol | var_1d | day_return | move_sigma | realised_vol
    _key("scope"),  # portfolio:<book> or a ticker
    sa.Column("session", sa.Date, index=True),
    sa.Column("value", FLOAT64),
    sa.Column("threshold", FLOAT64),  # the rule's, when one reads this metric
    sa.Column("run_id", sa.String(64)),
)

intraday_orders = sa.Table(
    "intraday_orders",
    metadata,
    _key("order_id"),  # deterministic: (portfolio, decided_at, ticker)
    sa.Column("portfolio", sa.String(64)),
    sa.Column("decided_on", sa.Date),  # the session
    sa.Column("decided_at", TIMESTAMP),  # the batch that decided it
    sa.Column("ticker", sa.String(32)),
    sa.Column("quantity", FLOAT64),
    sa.Column("target_weight", FLOAT64),
    sa.Column("reference_price", FLOAT64),  # the last price when decided
    sa.Column("status", sa.String(16)),  # filled (paper de-risking fills at once)
    sa.Column("reason", sa.String(32)),  # reduce | flatten
    sa.Column("run_id", sa.String(64)),
)

intraday_fills = sa.Table(
    "intraday_fills",
    metadata,
    _key("fill_id"),
    sa.Column("order_id", sa.String(64)),
    sa.Column("portfolio", sa.String(64)),
    sa.Column("date", sa.Date),
    sa.Column("filled_at", TIMESTAMP),
    sa.Column("ticker", sa.String(32)),
    sa.Column("quantity", FLOAT64),
    sa.Column("price", FLOAT64),
    sa.Column("commission", FLOAT64),
    sa.Column("slippage", FLOAT64),
    sa.Column("impact", FLOAT64),
    sa.Column("cash_change", FLOAT64),
    sa.Column("run_id", sa.String(64)),
)

#: One row per `runner watch` process: `runner health` reads its heartbeat, session and last bar.
watch_heartbeats = sa.Table(
    "watch_heartbeats",
    metadata,
    _key("watch_id", 128),
    sa.Column("host", sa.String(128)),
    sa.Column("pid", sa.Integer),
    sa.Column("portfolio", sa.String(64)),
    sa.Column("source", sa.String(16)),
    sa.Column("session", sa.Date),
    sa.Column("started_at", TIMESTAMP),
    sa.Column("heartbeat_at", TIMESTAMP),
    sa.Column("last_bar_ts", TIMESTAMP),
    sa.Column("status", sa.String(16)),  # watching | idle | stopped
)


# --------------------------------------------------------------------------- operations

#: What the runner knows about each stage's last execution, so an unchanged stage can be
#: skipped: the cache key's parts (JSON, to say which one changed) and the products'
#: fingerprint that downstream keys include.
stage_cache = sa.Table(
    "stage_cache",
    metadata,
    _key("stage"),
    sa.Column("cache_key", sa.String(64)),
    sa.Column("fingerprint", sa.String(64)),
    sa.Column("components", sa.Text),
    sa.Column("products", sa.Text),
    sa.Column("run_id", sa.String(64)),
    sa.Column("updated_at", TIMESTAMP),
)

#: At most one active run: a lease with a heartbeat. `version` makes every change a
#: compare-and-swap, so two runners racing for a lapsed lease cannot both win.
leases = sa.Table(
    "leases",
    metadata,
    _key("name"),
    sa.Column("holder", sa.String(128)),
    sa.Column("run_id", sa.String(64)),
    sa.Column("acquired_at", TIMESTAMP),
    sa.Column("heartbeat_at", TIMESTAMP),
    sa.Column("expires_at", TIMESTAMP),
    sa.Column("version", sa.Integer),
)

#: One row per `runner schedule` process: health reads its heartbeat and next fire time.
scheduler_heartbeats = sa.Table(
    "scheduler_heartbeats",
    metadata,
    _key("scheduler_id", 128),
    sa.Column("host", sa.String(128)),
    sa.Column("pid", sa.Integer),
    sa.Column("started_at", TIMESTAMP),
    sa.Column("heartbeat_at", TIMESTAMP),
    sa.Column("next_fire_at", TIMESTAMP),
    sa.Column("last_run_id", sa.String(64)),
    sa.Column("status", sa.String(16)),  # running | stopped
)

monitor_kpis = sa.Table(
    "monitor_kpis",
    metadata,
    _key("run_id"),
    _key("kpi"),
    _key("scope"),  # `pipeline`, a stage, a ticker, a dataset, `paper`, `host`
    sa.Column("value", FLOAT64),
    sa.Column("unit", sa.String(16)),
    sa.Column("detail", sa.Text),
    sa.Column("measured_at", TIMESTAMP),
)

#: One row per alert episode: opened when a rule starts firing for a scope, kept active
#: (and re-sent only after monitor.renotify_minutes) while it keeps firing, then resolved.
alerts = sa.Table(
    "alerts",
    metadata,
    _key("alert_id"),
    sa.Column("rule", sa.String(32), index=True),
    sa.Column("severity", sa.String(16)),
    sa.Column("scope", sa.String(64)),
    sa.Column("status", sa.String(16), index=True),  # active | resolved
    sa.Column("message", sa.Text),
    sa.Column("value", FLOAT64),
    sa.Column("threshold", FLOAT64),
    sa.Column("first_seen_at", TIMESTAMP),
    sa.Column("last_seen_at", TIMESTAMP),
    sa.Column("last_sent_at", TIMESTAMP),
    sa.Column("resolved_at", TIMESTAMP),
    sa.Column("notifications", sa.Integer),
    sa.Column("run_id", sa.String(64)),  # the latest run that saw it firing
)


@dataclass(frozen=True)
class LeaseGrant:
    """The outcome of `acquire_lease`: won or not, and whose lease it was."""

    acquired: bool
    holder: str | None = None  # busy: the current holder
    run_id: str | None = None  # busy: the holder's run; acquired: the run whose lapsed lease was taken over
    heartbeat_at: dt.datetime | None = None
    taken_over: bool = False


def resolve_url(params_url: str | None, outputs: Path) -> URL:
    """Environment first, then params, then SQLite in the outputs folder; password from env."""
    raw = os.environ.get(URL_ENV) or params_url or f"sqlite:///{Path(outputs) / 'warehouse.db'}"
    url = make_url(raw)
    password = os.environ.get(PASSWORD_ENV)
    if password and url.password is None and not url.drivername.startswith("sqlite"):
        url = url.set(password=password)
    return url


class Warehouse:
    """One engine plus the upserts and reads the stages need."""

    def __init__(self, url: URL | str) -> None:
        self.url = make_url(url)
        self.engine: Engine = _create_engine(self.url)
        _create_tables(self.engine)
        #: Called with (table, frame) after each upsert: stages fingerprint what they wrote.
        self.on_write: Callable[[str, pd.DataFrame], None] | None = None

    @classmethod
    def from_settings(cls, params_url: str | None, outputs: Path) -> Warehouse:
        return cls(resolve_url(params_url, outputs))

    @property
    def display_url(self) -> str:
        """The URL with any password masked: the only form that may be printed or logged."""
        return self.url.render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ writes

    def upsert(self, table: str | sa.Table, frame: pd.DataFrame, *, conn: Connection | None = None) -> int:
        """Insert or update `frame` on the table's primary key in one transaction.

        NaN/NaT/None become NULL, dates are stored as dates and timestamps as UTC. With
        `conn`, the rows join that connection's transaction instead. Returns rows written.
        """
        target = self.table(table) if isinstance(table, str) else table
        missing = [c.name for c in target.primary_key.columns if c.name not in frame.columns]
        if missing:
            raise ValueError(f"{target.name}: rows lack key columns {missing}")
        unknown = [c for c in frame.columns if c not in target.columns]
        if unknown:
            raise ValueError(f"{target.name}: no such columns {unknown}")
        if frame.empty:
            return 0
        if conn is None:
            with self.engine.begin() as own:
                written = _upsert(own, target, frame)
        else:
            written = _upsert(conn, target, frame)
        if self.on_write is not None:
            self.on_write(target.name, frame)
        return written

    def replace_window(
        self,
        table: str,
        frame: pd.DataFrame,
        *,
        start: dt.date,
        end: dt.date,
        tickers: Iterable[str] | None,
        date_column: str = "date",
    ) -> int:
        """Make `frame` the table's rows for the tickers within [start, end], in one transaction.

        For derived tables a run owns over its history window: rows an earlier run wrote there
        (for another logical date) and this one does not produce must not stay beside it.
        """
        target = self.table(table)
        condition = [target.c[date_column] >= start, target.c[date_column] <= end]
        if tickers is not None:
            condition.append(target.c.ticker.in_(list(tickers)))
        with self.engine.begin() as conn:
            conn.execute(target.delete().where(*condition))
            return self.upsert(target, frame, conn=conn)

    def upsert_extending(self, table: str, frame: pd.DataFrame) -> int:
        """Upsert into a table whose non-key float columns follow the params (features)."""
        key = [c.name for c in self.table(table).primary_key.columns]
        self.ensure_float_columns(table, [c for c in frame.columns if c not in key])
        return self.upsert(self.reflect(table), frame)

    def ensure_float_columns(self, table: str, columns: Sequence[str]) -> None:
        """Add the missing columns as double precision floats (one ALTER where the dialect allows)."""
        existing = {c["name"] for c in sa.inspect(self.engine).get_columns(table)}
        new = [name for name in dict.fromkeys(columns) if name not in existing]
        if not new:
            return
        dialect = self.engine.dialect
        preparer = dialect.identifier_preparer
        float_type = FLOAT64.compile(dialect=dialect)
        if_not_exists = (
            "IF NOT EXISTS " if dialect.name == "postgresql" or getattr(dialect, "is_mariadb", False) else ""
        )
        clauses = [f"ADD COLUMN {if_not_exists}{preparer.quote(name)} {float_type}" for name in new]
        with self.engine.begin() as conn:
            if dialect.name == "sqlite":  # one column per ALTER TABLE
                for clause in clauses:
                    conn.exec_driver_sql(f"ALTER TABLE {preparer.quote(table)} {clause}")
            else:
                conn.exec_driver_sql(f"ALTER TABLE {preparer.quote(table)} {', '.join(clauses)}")

    def begin(self):
        """A transaction for several upserts that must land together."""
        return self.engine.begin()

    # ------------------------------------------------------------------ reads

    def table(self, name: str) -> sa.Table:
        try:
            return metadata.tables[name]
        except KeyError:
            raise ValueError(f"no warehouse table {name!r}") from None

    def reflect(self, name: str) -> sa.Table:
        """The table as it exists in the database (with columns added at run time)."""
        return sa.Table(name, sa.MetaData(), autoload_with=self.engine)

    def read(
        self,
        table: str,
        *,
        tickers: Iterable[str] | None = None,
        start: dt.date | None = None,
        end: dt.date | None = None,
        where: Mapping[str, Any] | None = None,
        date_column: str = "date",
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Rows filtered by ticker list, an inclusive date window and equality filters.

        Ordered by the primary key. Dates come back as datetime64, timestamps as tz-aware
        UTC datetime64, booleans as bool (object when NULLs are present). `columns` reads
        only those (default: all).
        """
        target = self.reflect(table)
        kinds = {c.name: _kind(_schema_type(target, c)) for c in target.columns}
        chosen = [target.c[name] for name in columns] if columns is not None else list(target.columns)
        # Raw values: the driver's own types are converted column-wise below, not per row.
        raw = [sa.type_coerce(c, sa.types.NULLTYPE).label(c.name) for c in chosen]
        query = sa.select(*raw)
        if tickers is not None:
            query = query.where(target.c.ticker.in_(list(tickers)))
        if start is not None:
            query = query.where(target.c[date_column] >= start)
        if end is not None:
            query = query.where(target.c[date_column] <= end)
        for column, value in (where or {}).items():
            query = query.where(target.c[column] == value)
        order = [c for c in target.primary_key.columns]
        with self.engine.connect() as conn, _gc_paused():
            result = conn.execute(query.order_by(*order))
            names = list(result.keys())
            rows = result.fetchall()
            column_values = list(zip(*rows, strict=True)) if rows else [() for _ in names]
            del rows
            return pd.DataFrame(
                {name: _from_driver(values, kinds[name]) for name, values in zip(names, column_values, strict=True)},
                columns=names,
            )

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self.reflect(table))).scalar_one())

    def has_rows(self, table: str) -> bool:
        """True when `table` exists and holds at least one row (a cheap product check)."""
        query = sa.select(sa.literal(1)).select_from(sa.table(table)).limit(1)
        try:
            with self.engine.connect() as conn:
                return conn.execute(query).first() is not None
        except (sa.exc.OperationalError, sa.exc.ProgrammingError):
            return False  # no such table

    def replace_where(self, table: str, frame: pd.DataFrame, **equals: Any) -> int:
        """Make `frame` the rows matching every `column=value` (e.g. one run's), in one
        transaction: the old rows are deleted and the new upserted together, so a reader or a
        crash never sees the rows half-replaced. Returns rows written."""
        target = self.table(table)
        with self.engine.begin() as conn:
            conn.execute(target.delete().where(*(target.c[k] == v for k, v in equals.items())))
            return self.upsert(target, frame, conn=conn)

    def delete_where(self, table: str, **equals: Any) -> int:
        """Delete the rows matching every `column=value`; returns rows deleted."""
        target = self.table(table)
        with self.engine.begin() as conn:
            return conn.execute(target.delete().where(*(target.c[k] == v for k, v in equals.items()))).rowcount

    def update_where(self, table: str, where: Mapping[str, Any], **values: Any) -> int:
        """Set `values` on the rows matching every `where` column; returns rows updated."""
        target = self.table(table)
        with self.engine.begin() as conn:
            return conn.execute(
                target.update().where(*(target.c[k] == v for k, v in where.items())).values(**values)
            ).rowcount

    def delete_book_from(
        self, portfolio: str, start: dt.date, book_tables: Mapping[str, str]
    ) -> tuple[int, dict[str, int]]:
        """Remove a paper book's rows dated on or after `start`, in one transaction (`runner paper rebook`).

        `book_tables` maps each book table to the column that dates its rows. Orders decided
        before `start` whose fills go become pending again, as they were before those days
        were booked. `risk_limit_events` has no portfolio column: a run's events belong to
        the book by the run id and date of the book's `portfolio_values` row. The update and
        that delete read rows the later deletes remove, so they run first. Returns the
        orders reopened and the rows deleted per table; a failure deletes nothing.
        """
        orders, fills, values, events = (
            self.table(name) for name in ("orders", "fills", "portfolio_values", "risk_limit_events")
        )
        refilled = sa.select(fills.c.order_id).where(fills.c.portfolio == portfolio, fills.c.date >= start)
        reopen = (
            sa.update(orders)
            .where(orders.c.order_id.in_(refilled), orders.c.decided_on < start)
            .values(status="pending")
        )
        booked_by_run = sa.exists().where(
            values.c.portfolio == portfolio,
            values.c.date >= start,
            values.c.run_id == events.c.run_id,
            values.c.date == events.c.date,
        )
        deletes = {"risk_limit_events": sa.delete(events).where(events.c.date >= start, booked_by_run)}
        for name, column in book_tables.items():
            table = self.table(name)
            deletes[name] = sa.delete(table).where(table.c.portfolio == portfolio, table.c[column] >= start)
        with self.engine.begin() as conn:
            reopened = conn.execute(reopen).rowcount
            deleted = {name: conn.execute(statement).rowcount for name, statement in deletes.items()}
        return reopened, deleted

    def distinct(self, table: str, column: str) -> list[Any]:
        target = self.reflect(table)
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(target.c[column]).distinct().order_by(target.c[column]))
            return [row[0] for row in rows]

    # ------------------------------------------------------------------ leases

    def acquire_lease(
        self,
        name: str,
        holder: str,
        run_id: str,
        ttl_s: float,
        *,
        now: dt.datetime | None = None,
        holder_alive: Callable[[str], bool] | None = None,
    ) -> LeaseGrant:
        """Take lease `name` if it is free, ours, lapsed, or held by a process known to be dead.

        `holder_alive(holder)` answers for holders on this machine (a pid check), so a runner
        killed with -9 does not block the next one for a whole TTL.
        """
        now = now or dt.datetime.now(dt.UTC)
        values = {
            "holder": holder,
            "run_id": run_id,
            "acquired_at": now,
            "heartbeat_at": now,
            "expires_at": now + dt.timedelta(seconds=ttl_s),
        }
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(leases).where(leases.c.name == name)).mappings().first()
            if row is None:
                try:
                    with conn.begin_nested():
                        conn.execute(leases.insert().values(name=name, version=1, **values))
                except sa.exc.IntegrityError:
                    return LeaseGrant(False, holder=None)  # another runner inserted it first
                return LeaseGrant(True)
            expires = _as_utc(row["expires_at"])
            lapsed = expires is None or expires <= now
            dead = row["holder"] != holder and holder_alive is not None and not holder_alive(row["holder"])
            if row["holder"] != holder and not lapsed and not dead:
                return LeaseGrant(
                    False, holder=row["holder"], run_id=row["run_id"], heartbeat_at=_as_utc(row["heartbeat_at"])
                )
            swapped = conn.execute(
                leases.update()
                .where(leases.c.name == name, leases.c.version == row["version"])
                .values(version=row["version"] + 1, **values)
            ).rowcount
            if swapped != 1:
                return LeaseGrant(False, holder=None)
            taken = row["holder"] != holder
            return LeaseGrant(True, run_id=row["run_id"] if taken else None, taken_over=taken)

    def renew_lease(self, name: str, holder: str, ttl_s: float, *, now: dt.datetime | None = None) -> bool:
        """Extend our lease; False when it is no longer ours (taken over after we went quiet)."""
        now = now or dt.datetime.now(dt.UTC)
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    leases.update()
                    .where(leases.c.name == name, leases.c.holder == holder)
                    .values(
                        heartbeat_at=now, expires_at=now + dt.timedelta(seconds=ttl_s), version=leases.c.version + 1
                    )
                ).rowcount
                == 1
            )

    def release_lease(self, name: str, holder: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(leases.delete().where(leases.c.name == name, leases.c.holder == holder))

    def health(self) -> Health:
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as exc:
            return Health("warehouse", False, f"{self.display_url}: {type(exc).__name__}")
        return Health("warehouse", True, self.display_url)


#: How long the run's engine waits for a server to accept a connection, and (MySQL/MariaDB) for
#: the server's answer to one read or write on an open connection. Unbounded, a warehouse host
#: that went silent held the runner past SIGTERM; the second bound is far above any statement
#: the pipeline sends.
CONNECT_TIMEOUT_S = 10.0
SOCKET_TIMEOUT_S = 600.0
_SQLITE_BUSY_S = 30.0


def driver_timeouts(url: URL, connect_s: float, wait_s: float) -> dict[str, Any]:
    """`connect_args` that bound the driver's waits: `connect_s` to connect, `wait_s` for a lock
    (SQLite) or for one socket read or write (MySQL/MariaDB).

    Drivers differ in names and units: libpq (psycopg, psycopg2) takes whole seconds, at least
    2. A value the URL's query sets itself is left to the URL. PostgreSQL reads are not bounded
    here: libpq has no read timeout (`runner.infra` probes the server before a run).
    """
    driver = url.get_driver_name()
    if url.get_backend_name() == "sqlite":
        wanted: dict[str, Any] = {"timeout": wait_s}
    elif driver in ("psycopg", "psycopg2"):
        wanted = {"connect_timeout": max(2, math.ceil(connect_s))}
    elif driver in ("pymysql", "mysqldb"):
        wanted = {
            "connect_timeout": math.ceil(connect_s),
            "read_timeout": math.ceil(wait_s),
            "write_timeout": math.ceil(wait_s),
        }
    else:
        wanted = {}
    return {key: value for key, value in wanted.items() if key not in url.query}


def _create_engine(url: URL) -> Engine:
    if url.drivername.startswith("sqlite"):
        database = url.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args=driver_timeouts(url, CONNECT_TIMEOUT_S, _SQLITE_BUSY_S))

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB: big upserts touch many index pages
            cursor.close()

        return engine
    return sa.create_engine(
        url, pool_pre_ping=True, connect_args=driver_timeouts(url, CONNECT_TIMEOUT_S, SOCKET_TIMEOUT_S)
    )


def _create_tables(engine: Engine, attempts: int = 20) -> None:
    """`create_all`, safe when several processes open a new warehouse at the same moment.

    They all see tables missing and create them; a loser gets "already exists" (PostgreSQL: a
    unique violation in its catalog) and checks again. Processes that start together create
    tables in the same order, so each could lose once per table: a short random pause
    before the next look breaks the lockstep.
    """
    for attempt in range(1, attempts + 1):
        try:
            metadata.create_all(engine)
            _add_missing_columns(engine)
            return
        except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.IntegrityError) as exc:
            text = str(exc).lower()
            if attempt == attempts or not ("already exists" in text or "duplicate" in text):
                raise
            time.sleep(random.uniform(0.05, 0.3))


def _add_missing_columns(engine: Engine) -> None:
    """Additive migration: a column a newer release declares is added to an older warehouse.

    Tables only ever gain nullable columns (a note, a statistic), so a store written by an
    earlier version keeps working; rows it already holds read NULL there. Columns a run adds
    itself (features) are left alone: only declared columns are compared.
    """
    inspector = sa.inspect(engine)
    existing_tables = set(inspector.get_table_names())
    dialect = engine.dialect
    quote = dialect.identifier_preparer.quote
    for table in metadata.sorted_tables:
        if table.name not in existing_tables:
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            kind = column.type.compile(dialect=dialect)
            with engine.begin() as conn:
                conn.exec_driver_sql(f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(column.name)} {kind}")


# ---------------------------------------------------------------------- upserts


def _upsert(conn: Connection, target: sa.Table, frame: pd.DataFrame) -> int:
    dialect = conn.dialect
    names = [str(c) for c in frame.columns]
    kinds = [_kind(_schema_type(target, target.c[name])) for name in names]
    keys = [c.name for c in target.primary_key.columns]
    n = len(frame)
    with _gc_paused():  # millions of short-lived tuples: cyclic GC passes would only cost time
        columns = [
            _Column.from_series(frame[name], kind, dialect.name) for name, kind in zip(names, kinds, strict=True)
        ]
        if dialect.name == "postgresql" and n >= _COPY_MIN_ROWS:
            _copy_upsert_postgresql(conn, target, names, kinds, keys, columns, n)
        else:
            statement = _upsert_statement(dialect, target, names, keys)
            for rows in _chunks(columns, n):
                conn.exec_driver_sql(statement, rows)
    return n


def _upsert_statement(dialect: sa.engine.Dialect, table: sa.Table, names: list[str], keys: list[str]) -> str:
    """The dialect's single-row upsert with positional placeholders, for executemany."""
    q = dialect.identifier_preparer.quote
    into = f"INSERT INTO {_table_name(dialect, table)}"
    column_list = ", ".join(q(c) for c in names)
    if dialect.name == "sqlite":
        values = f"VALUES ({', '.join(['?'] * len(names))})"
        return f"{into} ({column_list}) {values} {_on_conflict(dialect, table, names, keys)}"
    if dialect.name == "postgresql":
        values = f"VALUES ({', '.join(['%s'] * len(names))})"
        return f"{into} AS {_ALIAS} ({column_list}) {values} {_on_conflict(dialect, table, names, keys)}"
    if dialect.name in {"mysql", "mariadb"}:
        if any("%" in c for c in [table.name, *names]):  # PyMySQL would read it as a placeholder
            raise ValueError(f"{table.name}: '%' in a table or column name is not supported on MySQL")
        # Exactly the shape PyMySQL's executemany rewrites into multi-row INSERTs
        # (`INSERT ... VALUES (%s, ...) ON DUPLICATE ...`); VALUES() works on MariaDB and MySQL.
        # MySQL itself skips rows whose values do not change.
        values = f"VALUES ({', '.join(['%s'] * len(names))})"
        assignments = [c for c in names if c not in keys] or keys[:1]  # key = VALUES(key): keeps the row
        update = ", ".join(f"{q(c)} = VALUES({q(c)})" for c in assignments)
        return f"{into} ({column_list}) {values} ON DUPLICATE KEY UPDATE {update}"
    raise NotImplementedError(f"no upsert for SQL dialect {dialect.name!r}")


_ALIAS = "bentley_target"  # PostgreSQL: the upsert target's alias in ON CONFLICT ... WHERE


def _on_conflict(dialect: sa.engine.Dialect, table: sa.Table, names: list[str], keys: list[str]) -> str:
    """`ON CONFLICT (key) DO UPDATE SET c = excluded.c ... WHERE <some c changed>` (SQLite, PostgreSQL).

    The WHERE skips rows whose values are unchanged: a rerun over the same data then
    writes nothing (no new row versions on PostgreSQL, no page writes on SQLite).
    """
    q = dialect.identifier_preparer.quote
    conflict = f"ON CONFLICT ({', '.join(q(c) for c in keys)})"
    updates = [c for c in names if c not in keys]
    if not updates:
        return f"{conflict} DO NOTHING"
    assignments = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in updates)
    if dialect.name == "postgresql":
        current = ", ".join(f"{_ALIAS}.{q(c)}" for c in updates)
        incoming = ", ".join(f"excluded.{q(c)}" for c in updates)
        changed = f"ROW({current}) IS DISTINCT FROM ROW({incoming})"
    else:
        name = q(table.name)
        changed = " OR ".join(f"{name}.{q(c)} IS NOT excluded.{q(c)}" for c in updates)
    return f"{conflict} DO UPDATE SET {assignments} WHERE {changed}"


#: Binary COPY types per value kind (the staging table uses the same types).
_PG_COPY_TYPES = {
    "str": "text",
    "date": "date",
    "timestamp": "timestamptz",
    "float": "float8",
    "int": "int8",
    "bool": "bool",
}


def _copy_upsert_postgresql(
    conn: Connection,
    table: sa.Table,
    names: list[str],
    kinds: list[str],
    keys: list[str],
    columns: list[_Column],
    n: int,
) -> None:
    """Binary COPY into a temporary table, then one set-based upsert from it."""
    import psycopg

    dialect = conn.dialect
    q = dialect.identifier_preparer.quote
    staging = f"pg_temp.{q(f'_bentley_upsert_{table.name}'[:63])}"
    types = [_PG_COPY_TYPES[kind] for kind in kinds]
    # ON CONFLICT DO UPDATE may touch a row once per statement: keep the last of duplicated keys.
    keep = _last_of_duplicates([columns[names.index(k)] for k in keys], n)
    definition = ", ".join(f"{q(c)} {t}" for c, t in zip(names, types, strict=True))
    # Dropped again below; the IF EXISTS covers a failed load on an autocommit connection.
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {staging}")
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {staging} ({definition})")
    copy_sql = f"COPY {staging} ({', '.join(q(c) for c in names)}) FROM STDIN (FORMAT BINARY)"
    driver_connection = conn.connection.driver_connection
    assert driver_connection is not None, "a checked-out connection has its DBAPI connection"
    cursor = driver_connection.cursor()
    try:
        with cursor.copy(copy_sql) as copy:
            copy.set_types(types)
            for rows in _chunks(columns, n, keep):
                for row in rows:
                    copy.write_row(row)
    except psycopg.Error as exc:
        raise sa.exc.DBAPIError.instance(copy_sql, None, exc, psycopg.Error, dialect=dialect) from exc
    finally:
        cursor.close()
    # Assignment casts convert text/int8/float8 to the target's own types (with its checks);
    # text headed for a non-string column is cast explicitly.
    selected = []
    for name, kind in zip(names, kinds, strict=True):
        column_type = table.c[name].type
        if kind == "str" and not isinstance(column_type, sa.String):
            selected.append(f"CAST({q(name)} AS {column_type.compile(dialect=dialect)})")
        else:
            selected.append(q(name))
    conn.exec_driver_sql(
        f"INSERT INTO {_table_name(dialect, table)} AS {_ALIAS} ({', '.join(q(c) for c in names)}) "
        f"SELECT {', '.join(selected)} FROM {staging} {_on_conflict(dialect, table, names, keys)}"
    )
    conn.exec_driver_sql(f"DROP TABLE {staging}")


def _table_name(dialect: sa.engine.Dialect, table: sa.Table) -> str:
    preparer = dialect.identifier_preparer
    return preparer.format_table(table)


def _chunks(columns: list[_Column], n: int, keep: np.ndarray | None = None) -> Iterator[list[tuple]]:
    """DBAPI rows, `_CHUNK_ROWS` at a time (bounded memory), optionally only rows in `keep`."""
    for start in range(0, n, _CHUNK_ROWS):
        stop = min(start + _CHUNK_ROWS, n)
        select = None if keep is None else keep[start:stop]
        rows = list(zip(*(c.values_between(start, stop, select) for c in columns), strict=True))
        if rows:
            yield rows


def _last_of_duplicates(key_columns: list[_Column], n: int) -> np.ndarray | None:
    """A mask keeping the last row of each key, or None when keys are already unique."""
    keys = pd.DataFrame({i: c.hashable() for i, c in enumerate(key_columns)})
    duplicated = keys.duplicated(keep="last").to_numpy()
    return ~duplicated if duplicated.any() else None


# ---------------------------------------------------------------------- conversions


def _schema_type(table: sa.Table, column: sa.Column) -> sa.types.TypeEngine:
    """The type of record (metadata) when the column is ours, else the reflected one."""
    known = metadata.tables.get(table.name)
    if known is not None and column.name in known.c:
        return known.c[column.name].type
    return column.type


def _kind(column_type: sa.types.TypeEngine) -> str:
    if isinstance(column_type, sa.DateTime):
        return "timestamp"
    if isinstance(column_type, sa.Date):
        return "date"
    if isinstance(column_type, sa.Boolean):
        return "bool"
    if isinstance(column_type, sa.Integer):
        return "int"
    if isinstance(column_type, sa.Float):
        return "float"
    return "str"


class _Column:
    """One frame column as a numpy array of DBAPI-ready values plus a NULL mask."""

    __slots__ = ("values", "nulls")

    def __init__(self, values: np.ndarray, nulls: np.ndarray | None) -> None:
        self.values = values
        self.nulls = nulls if nulls is not None and nulls.any() else None

    def values_between(self, start: int, stop: int, select: np.ndarray | None = None) -> list[Any]:
        part = self.values[start:stop]
        nulls = None if self.nulls is None else self.nulls[start:stop]
        if select is not None:
            part = part[select]
            nulls = None if nulls is None else nulls[select]
        if nulls is not None and nulls.any():
            part = part.astype(object)
            part[nulls] = None
        return part.tolist()

    def hashable(self) -> np.ndarray:
        if self.nulls is None:
            return self.values
        out = self.values.astype(object)
        out[self.nulls] = None
        return out

    @classmethod
    def from_series(cls, series: pd.Series, kind: str, dialect: str) -> _Column:
        if kind == "float":
            values = series.to_numpy(dtype="float64", na_value=np.nan)
            return cls(values, np.isnan(values))
        if kind == "int":
            if pd.api.types.is_integer_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
                nulls = series.isna().to_numpy()
                return cls(series.to_numpy(dtype="int64", na_value=0), nulls)
            floats = series.to_numpy(dtype="float64", na_value=np.nan)
            nulls = np.isnan(floats)
            return cls(np.where(nulls, 0, floats).astype("int64"), nulls)  # truncates like int()
        if kind == "bool":
            nulls = series.isna().to_numpy()
            if series.dtype == object:
                flags = np.fromiter((bool(v) for v in series.where(~nulls, False)), dtype=bool, count=len(series))
            else:
                flags = series.to_numpy(dtype=bool, na_value=False)
            return cls(flags, nulls)
        if kind == "date":
            stamps = _to_datetime(series)
            if isinstance(stamps.dtype, pd.DatetimeTZDtype):
                stamps = stamps.dt.tz_localize(None)  # the local calendar date, like Timestamp.date()
            days = stamps.to_numpy().astype("datetime64[D]")
            return cls._mapped(days, _date_objects if dialect == "postgresql" else _iso_dates)
        if kind == "timestamp":
            stamps = _to_datetime(series, utc=True).dt.tz_localize(None)  # UTC wall time
            micros = stamps.to_numpy().astype("datetime64[us]")
            return cls._mapped(micros, _utc_datetimes if dialect == "postgresql" else _iso_timestamps)
        # Text: the frame's strings as they are, anything else through str().
        if isinstance(series.dtype, pd.StringDtype):
            return cls(series.to_numpy(dtype=object, na_value=None), None)
        nulls = series.isna().to_numpy()
        text = series.astype(str).to_numpy(dtype=object)
        text[nulls] = None
        return cls(text, None)

    @classmethod
    def _mapped(cls, stamps: np.ndarray, convert: Callable[[np.ndarray], Any]) -> _Column:
        """datetime64 -> driver values, converting each distinct value once (prices repeat dates)."""
        codes, uniques = pd.factorize(stamps)
        converted = np.empty(len(uniques) + 1, dtype=object)  # the last slot is NaT's code -1
        if len(uniques):
            converted[:-1] = convert(np.asarray(uniques, dtype=stamps.dtype))
        converted[-1] = None
        return cls(converted[codes], np.isnat(stamps))


def _to_datetime(series: pd.Series, utc: bool = False) -> pd.Series:
    """pd.to_datetime, falling back to per-value parsing for text in mixed formats."""
    try:
        return pd.to_datetime(series, utc=utc)
    except (ValueError, TypeError):
        return pd.to_datetime(series, utc=utc, format="mixed")


# Dates and timestamps as each driver takes them best: SQLite stores SQLAlchemy's own text
# forms ('YYYY-MM-DD', naive UTC 'YYYY-MM-DD HH:MM:SS.ffffff'); PyMySQL escapes text cheaply
# and MySQL DATETIME(6) takes the same naive UTC text; psycopg (binary COPY) wants objects.


def _iso_dates(days: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(days, unit="D").astype(object)


def _iso_timestamps(micros: np.ndarray) -> np.ndarray:
    return np.char.replace(np.datetime_as_string(micros, unit="us"), "T", " ").astype(object)


def _date_objects(days: np.ndarray) -> np.ndarray:
    return days.astype(object)


def _utc_datetimes(micros: np.ndarray) -> np.ndarray:
    return pd.DatetimeIndex(micros).tz_localize("UTC").to_pydatetime()


def _from_driver(values: Sequence[Any], kind: str) -> pd.Series:
    """A column of raw driver values -> the frame column `read()` promises."""
    if kind == "date":
        return _dates(values)
    if kind == "timestamp":
        return _timestamps(values)
    if kind == "float":
        return pd.Series(np.array(values, dtype="float64"), copy=False)
    if kind == "bool":
        if any(v is None for v in values):
            return pd.Series([None if v is None else bool(v) for v in values], dtype=object)
        return pd.Series(np.array(values, dtype=bool), copy=False)
    if not values:
        return pd.Series([], dtype=object)
    return pd.Series(list(values))


#: The unit pandas gives dates (datetime64[s] on pandas 3, [ns] on pandas 2).
_DATE_DTYPE = pd.to_datetime(pd.Series([dt.date(2000, 1, 3)])).dtype


def _dates(values: Sequence[Any]) -> pd.Series:
    first = next((v for v in values if v is not None), None)
    if isinstance(first, str):  # SQLite text 'YYYY-MM-DD': numpy parses ISO dates in C
        try:
            return pd.Series(np.array(values, dtype="datetime64[D]")).astype(_DATE_DTYPE)
        except ValueError:  # text written by something else, e.g. with a time of day
            parsed = pd.to_datetime(pd.Series(list(values), dtype=object), format="ISO8601")
            return parsed.dt.normalize().astype(_DATE_DTYPE)
    if isinstance(first, dt.datetime):
        values = [None if v is None else v.date() for v in values]
    return pd.to_datetime(pd.Series(list(values), dtype=object)).astype(_DATE_DTYPE)


def _timestamps(values: Sequence[Any]) -> pd.Series:
    series = pd.Series(list(values), dtype=object)
    first = next((v for v in values if v is not None), None)
    if isinstance(first, str):
        return pd.to_datetime(series, utc=True, format="ISO8601")
    return pd.to_datetime(series, utc=True)  # naive MySQL DATETIMEs are UTC wall times


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause cyclic garbage collection around bulk row building (restored on exit)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _as_utc(value: dt.datetime | str | None) -> dt.datetime | None:
    """A timestamp read through a raw select: SQLite hands back naive UTC or text."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
