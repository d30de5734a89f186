"""The data dictionary: every warehouse table, its natural key and what each column means.

SQLAlchemy Core tables keyed on natural keys (ARCHITECTURE §5) are the schema of record:
`bentley.warehouse.engine.create_tables` creates them and adds columns a newer release
declares. The raw datasets' contracts (`bentley.schemas`) are derived from these tables.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

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
    sa.Column("date", sa.Date, primary_key=True),  # the exchange session
    sa.Column("open", FLOAT64),  # open, high, low and close as traded (not adjusted)
    sa.Column("high", FLOAT64),
    sa.Column("low", FLOAT64),
    sa.Column("close", FLOAT64, comment="as traded"),
    # NULL: derived when read, as of the reader's logical date (bentley.adjustment); a value
    # is what a source that only delivers adjusted prices gave.
    sa.Column("adj_close", FLOAT64, nullable=True, comment="NULL: adjusted as of the reader's date"),
    sa.Column("volume", sa.BigInteger),  # shares as traded
    sa.Column("dividend", FLOAT64),  # cash per share on the ex-date, else 0
    sa.Column("split_ratio", FLOAT64),  # new shares per old share on the ex-date, else 1
    sa.Column("source", sa.String(32)),  # added by the loader (not in the source contract)
)

news = sa.Table(
    "news",
    metadata,
    _key("news_id"),
    sa.Column("ticker", sa.String(32), index=True),
    sa.Column("published_at", TIMESTAMP),  # UTC
    sa.Column("date", sa.Date, index=True),  # the session the text belongs to
    sa.Column("headline", sa.Text),  # plain text, never rendered as HTML; a social post's body
    sa.Column("publisher", sa.String(128)),  # a social post's platform
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
    sa.Column("amount", FLOAT64),  # USD; negative is money out
    sa.Column("description", sa.Text),
    sa.Column("category", sa.String(64), nullable=True),  # missing: the budget stage classifies it
    sa.Column("source", sa.String(32)),
)

holdings = sa.Table(
    "holdings",
    metadata,
    sa.Column("as_of", sa.Date, primary_key=True),
    _key("account"),
    _key("ticker", 32),
    sa.Column("quantity", FLOAT64),
    sa.Column("cost_basis", FLOAT64),  # total USD paid for the position
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
