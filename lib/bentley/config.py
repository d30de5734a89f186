"""Parameters: load, layer and validate; the only reader of `params/`.

Layers, later wins: `params/default.yaml` ← `params/profiles/<name>.yaml` ←
`params/local.yaml` (optional, git-ignored) ← `--set key.path=value`.

Every default lives in `default.yaml`, never in these models: the models only
say what a valid value is. So the same default is never written twice, and an
unknown key (a typo) is an error that names the file, the key and its line.
Secrets are never parameters; code reads them from the environment.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

PARAMS_DIR = "params"
PIPELINE_FILE = "pipeline.yaml"
#: PyYAML's safe loader, in C when libyaml is available (reading params is on every run's path).
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: Bounds on one params layer (a file, or every `--set` value of one command together). Real
#: params are far inside them (default.yaml: 13 KB, about 650 nodes, 5 levels), while they
#: keep a broken or hostile layer to a few MB of memory and about a second of parsing at most.
MAX_LAYER_BYTES = 1 << 20
MAX_LAYER_NODES = 100_000
MAX_DEPTH = 50
#: A ParamsError quotes keys and values from params; past this length it is cut.
MAX_MESSAGE_CHARS = 1000
_YAML_TAG = "tag:yaml.org,2002:"
_STR_TAG, _MAP_TAG, _SEQ_TAG, _MERGE_TAG = (f"{_YAML_TAG}{name}" for name in ("str", "map", "seq", "merge"))
#: What a plain params scalar may resolve to. Explicit tags other than `!!str` are refused:
#: they build what is not plain data (`!!set`, `!!binary`) or skip the resolver's format checks.
_SCALAR_TAGS = frozenset(f"{_YAML_TAG}{name}" for name in ("null", "bool", "int", "float", "str", "timestamp"))
_NO_ALIASES = "YAML anchors, aliases and merge keys are not allowed in params"
#: The origin of the `--set` layer in messages; its values have no line worth naming.
OVERRIDES = "--set"


class ParamsError(Exception):
    """A parameter problem, reported as one line naming the file, key and line.

    Messages quote keys and values from params, so the one line is enforced here, for every
    raiser: non-printable characters (a newline inside a quoted key) are escaped and an
    overlong message is cut, so a bad value can neither break the line nor flood a log.
    """

    def __init__(self, message: str) -> None:
        line = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in message)
        if len(line) > MAX_MESSAGE_CHARS:
            line = f"{line[: MAX_MESSAGE_CHARS - 1]}…"
        super().__init__(line)


# --------------------------------------------------------------------------- models


class Section(BaseModel):
    """Base for every params section: strict, immutable, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Weekday = Literal["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]


class MarketHours(Section):
    open: dt.time
    close: dt.time

    @model_validator(mode="after")
    def _open_before_close(self) -> MarketHours:
        if self.open >= self.close:
            raise ValueError(f"market opens at {self.open} but closes at {self.close}")
        return self


class Retention(Section):
    raw_days: PositiveInt
    processed_days: PositiveInt
    logs_days: PositiveInt


class Workflow(Section):
    """The seed's workflow settings: when the market trades and how long things may take."""

    timezone: str
    calendar: str
    market_hours: MarketHours
    trading_days: list[Weekday]
    retention: Retention
    max_execution_time_minutes: PositiveInt
    alert_after_failures: PositiveInt
    data_freshness_minutes: PositiveInt

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: a name too long for a path
            raise ValueError(f"unknown timezone {value!r}") from exc
        return value


class Sample(Section):
    """The embedded synthetic data: a pure function of the seed, ticker and date."""

    seed: int
    n_tickers: PositiveInt
    epoch: dt.date
    signal: Annotated[float, Field(ge=0.0, le=1.0)]  # the planted weekly reversal; 0: pure noise


def ticker_list(value: list[str] | None, key: str) -> list[str] | None:
    """A params ticker list: each symbol valid (the one pattern, also at the sources), none
    repeated, not empty (null means "every ticker the source has")."""
    if value is None:
        return None
    from bentley.sources.base import validate_ticker

    cleaned = [validate_ticker(t.strip(), f"{key}[{i}]") for i, t in enumerate(value)]
    if not cleaned:
        raise ValueError("an empty ticker list; use null for every ticker the source has")
    duplicates = sorted({t for t in cleaned if cleaned.count(t) > 1})
    if duplicates:
        raise ValueError(f"duplicate tickers {duplicates}")
    return cleaned


class Universe(Section):
    tickers: list[str] | None
    benchmark: str
    #: ticker -> equity | etf | fund | index, over what the market source says.
    instrument_types: dict[str, Literal["equity", "etf", "fund", "index"]]

    @field_validator("tickers")
    @classmethod
    def _clean_tickers(cls, value: list[str] | None) -> list[str] | None:
        return ticker_list(value, "universe.tickers")

    @field_validator("benchmark")
    @classmethod
    def _upper(cls, value: str) -> str:
        from bentley.sources.base import validate_ticker

        return validate_ticker(value.strip(), "universe.benchmark")

    @field_validator("instrument_types")
    @classmethod
    def _ticker_keys(cls, value: dict[str, str]) -> dict[str, str]:
        """Keys are tickers like any other: `{spy: etf}` must match SPY, and a key that is no
        ticker at all is refused here rather than silently matching nothing."""
        from bentley.sources.base import validate_ticker

        return {validate_ticker(t.strip(), f"universe.instrument_types.{t}"): kind for t, kind in value.items()}


class Http(Section):
    """How network sources behave: retries on transient failures only, and a rate limit."""

    timeout_s: PositiveFloat
    max_attempts: PositiveInt
    backoff_base_s: Annotated[float, Field(ge=0)]
    backoff_max_s: Annotated[float, Field(ge=0)]
    requests_per_second: PositiveFloat


class MarketSourceSettings(Section):
    """`sample` (embedded), `csv` (a folder of TICKER.csv/.parquet or one long file), `yahoo`."""

    kind: Literal["sample", "csv", "yahoo"]
    path: str | None  # csv: the folder or file, relative to sources.data_dir
    full_refresh: bool  # ignore the sync cursors and refetch the whole history window
    overlap_sessions: Annotated[int, Field(ge=0)]  # refetch this many sessions before each cursor
    max_failed_share: Annotated[float, Field(ge=0, le=1)]  # tickers that may fail before the stage fails

    @model_validator(mode="after")
    def _path_for_files(self) -> MarketSourceSettings:
        if self.kind == "csv" and not self.path:
            raise ValueError("kind csv needs a path (a folder of TICKER.csv files or one long file)")
        return self


class Feed(Section):
    url: str  # http(s) URL or a file under sources.data_dir; `{ticker}` expands per ticker
    ticker: str | None  # null: match tickers and company names in each headline


class NewsSourceSettings(Section):
    """`sample`, `rss` (RSS/Atom feeds), `csv` (exported posts in the news schema), `yahoo`."""

    kind: Literal["sample", "rss", "csv", "yahoo"]
    path: str | None  # csv: the file, relative to sources.data_dir
    feeds: list[Feed]

    @model_validator(mode="after")
    def _inputs_for_kind(self) -> NewsSourceSettings:
        if self.kind == "csv" and not self.path:
            raise ValueError("kind csv needs a path")
        if self.kind == "rss" and not self.feeds:
            raise ValueError("kind rss needs at least one feed")
        return self


#: A social platform's name: part of every post's id, and the `publisher` reports show.
Platform = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,31}$")]


class SocialFile(Section):
    path: str  # an export (.json, .jsonl, .csv) relative to sources.data_dir
    platform: Platform  # stocktwits, reddit, ...: a post is identified by (platform, id)


class SocialFeed(Section):
    url: str  # http(s) URL or a file under sources.data_dir; `{ticker}` expands per ticker
    ticker: str | None  # null: match cashtags ($MSFT) in each item's title and summary
    platform: Platform


class SocialSourceSettings(Section):
    """`none`, `sample` (synthetic posts), `social` (exported posts and social RSS/Atom feeds)."""

    kind: Literal["none", "sample", "social"]
    files: list[SocialFile]
    feeds: list[SocialFeed]
    #: A longer post refuses its whole file or feed (untrusted text). At most 64: a post is stored
    #: in `news.headline`, a TEXT column that holds 64 KB on MySQL/MariaDB.
    max_post_kb: Annotated[float, Field(gt=0, le=64)]

    @model_validator(mode="after")
    def _inputs_for_kind(self) -> SocialSourceSettings:
        if self.kind == "social" and not (self.files or self.feeds):
            raise ValueError("kind social needs at least one file or feed")
        return self


class PortfolioSourceSettings(Section):
    """`sample`, or `files`: bank/broker exports (transactions CSV/OFX/QFX, holdings CSV)."""

    kind: Literal["sample", "files"]
    transactions: str | None  # a file or folder, relative to sources.data_dir
    holdings: str | None

    @model_validator(mode="after")
    def _inputs_for_kind(self) -> PortfolioSourceSettings:
        if self.kind == "files" and not (self.transactions or self.holdings):
            raise ValueError("kind files needs a transactions or a holdings path")
        return self


class FileLimits(Section):
    """Bounds on one source file a user may point at by mistake (checked before reading it)."""

    max_mb: PositiveFloat
    max_rows: PositiveInt


class Sources(Section):
    """Which adapter serves each kind of data; each is chosen independently."""

    data_dir: str  # relative source paths resolve here and may not escape it
    market: MarketSourceSettings
    news: NewsSourceSettings
    social: SocialSourceSettings
    portfolio: PortfolioSourceSettings
    http: Http
    file_limits: FileLimits


class History(Section):
    start: dt.date | None
    end: dt.date | None
    years: PositiveInt

    def window(self, logical_date: dt.date) -> tuple[dt.date, dt.date]:
        """The [start, end] data window for a run; `end` may never pass the logical date."""
        end = self.end or logical_date
        if end > logical_date:
            raise ParamsError(f"history.end {end} is after the logical date {logical_date}: that would read the future")
        if not self.start and self.years >= end.year:
            raise ParamsError(f"history.years {self.years} reaches back past year 1 from {end}")
        start = self.start or _years_before(end, self.years)
        if start >= end:
            raise ParamsError(f"history.start {start} is not before history.end {end}")
        return start, end


class Etl(Section):
    max_abs_return_without_split: PositiveFloat
    max_range_atr: PositiveFloat  # true range over this many ATR(14) of the preceding sessions warns
    max_stale_sessions: PositiveInt  # more sessions in a row repeating the previous bar warns


class Macd(Section):
    fast: PositiveInt
    slow: PositiveInt
    signal: PositiveInt

    @model_validator(mode="after")
    def _fast_below_slow(self) -> Macd:
        if self.fast >= self.slow:
            raise ValueError(f"macd.fast ({self.fast}) must be below macd.slow ({self.slow})")
        return self


class Bollinger(Section):
    period: PositiveInt
    nbdev: PositiveFloat


class Stochastic(Section):
    fastk: PositiveInt
    slowk: PositiveInt
    slowd: PositiveInt


class Features(Section):
    sma_windows: list[PositiveInt]
    ema_windows: list[PositiveInt]
    rsi_period: PositiveInt
    macd: Macd
    bollinger: Bollinger
    atr_period: PositiveInt
    adx_period: PositiveInt
    stochastic: Stochastic
    return_horizons: list[PositiveInt]
    volatility_windows: list[Annotated[int, Field(ge=2)]]
    volume_zscore_window: Annotated[int, Field(ge=2)]


class Technical(Section):
    rsi_overbought: Annotated[float, Field(gt=50, lt=100)]
    rsi_oversold: Annotated[float, Field(gt=0, lt=50)]
    lookback_sessions: PositiveInt  # signals this recent are "current"
    chart_tickers: PositiveInt  # tickers charted in full in the report


class MinObservations(Section):
    """Daily returns a figure needs before it is published (risk_metrics, backtest_metrics, reports,
    KPIs); below, its value is NULL with a note saying so (`bentley.analytics.risk.published`)."""

    annualized: PositiveInt  # annual return, volatility, downside risk, Sharpe, Sortino, Calmar, alpha, cost drag
    var: PositiveInt  # VaR and CVaR (historical, parametric, Cornish-Fisher, GARCH) and the tail ratio
    estimate: PositiveInt  # beta, omega, skewness, kurtosis, PSR and DSR
    drawdown: PositiveInt  # maximum drawdown


class Risk(Section):
    """Risk metrics over [start, end]; null means the loaded history up to the logical date."""

    start: dt.date | None
    end: dt.date | None
    risk_free_rate: Annotated[float, Field(ge=-0.05, le=0.5)]  # annual; per period (1+rf)^(1/252)-1
    rolling_window: Annotated[int, Field(ge=5)]
    market_shock: Annotated[float, Field(gt=-1, lt=0)]
    garch: bool
    min_observations: MinObservations
    dsr_confidence: Annotated[float, Field(gt=0.5, lt=1)]  # a selected backtest is "more than luck" from this DSR

    def window(self, logical_date: dt.date, history: History) -> tuple[dt.date, dt.date]:
        start, end = history.window(logical_date)
        chosen_end = self.end or end
        if chosen_end > logical_date:
            raise ParamsError(f"risk.end {chosen_end} is after the logical date {logical_date}")
        return self.start or start, chosen_end


class Sentiment(Section):
    positive_threshold: float
    negative_threshold: float
    lexicon: dict[str, float]  # finance terms added to (or overriding) VADER's lexicon


class BudgetRule(Section):
    pattern: str  # case-insensitive regex on the description
    category: str


class EstimatorSpec(Section):
    """A scikit-learn classifier by dotted path (only `sklearn.` paths load) and its kwargs."""

    estimator: str
    kwargs: dict[str, Any]


class Bill(Section):
    description: str
    amount: PositiveFloat | None  # null: the latest ledger charge matching `match`
    match: str | None
    day_of_month: Annotated[int, Field(ge=1, le=31)]


class Budget(Section):
    rules: list[BudgetRule]
    classifier: EstimatorSpec
    holdout_share: Annotated[float, Field(gt=0, lt=1)]
    seed: int  # the holdout split
    limits: dict[str, PositiveFloat]  # monthly budget per category, USD
    emergency_fund_months: Annotated[float, Field(ge=0)]
    bills: list[Bill]
    horizon_days: PositiveInt
    transfer_categories: list[str]
    opening_balances: dict[str, float]  # USD per account before its first ledger row


class Anomaly(Section):
    """Anomaly detection on returns, volume and intraday range (bentley.models.anomaly)."""

    z_threshold: PositiveFloat  # |robust z| at or above this flags a day ("4" reads as 4 sigma)
    window: Annotated[int, Field(ge=20)] | None  # trailing sessions for median/MAD and each forest's fit; null: all
    contamination: Annotated[float, Field(gt=0, le=0.5)]  # IsolationForest's expected outlier share
    refit_sessions: PositiveInt  # a new IsolationForest every this many sessions, fitted on the window before
    seed: int
    top_n: PositiveInt  # rows in the report's top-anomalies table
    chart_tickers: PositiveInt  # tickers charted with their flagged days


class ModelSpec(Section):
    """A scikit-learn classifier by dotted path and its kwargs: `{class: ..., kwargs: {...}}`."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True)

    class_path: str = Field(alias="class")
    kwargs: dict[str, Any]


class Promotion(Section):
    """When a challenger replaces the champion (an A/B comparison on the same holdout), and
    the evidence any model, the first champion included, must show that it is not noise."""

    # a holdout metric where higher is better and no skill has a known value
    metric: Literal["roc_auc", "balanced_accuracy", "accuracy", "hit_rate", "ic", "rank_ic"]
    margin: Annotated[float, Field(ge=0)]  # the challenger must beat the champion by this much
    gates: dict[str, float]  # minimum holdout value per metric, for any model to become champion
    permutations: PositiveInt  # shuffled-label refits of the model's class behind its p-value
    bootstrap: Annotated[int, Field(ge=2)]  # resamples behind the metric's confidence interval
    confidence: Annotated[float, Field(gt=0, lt=1)]  # level of that interval
    min_holdout_rows: PositiveInt  # fewer scored holdout rows cannot tell skill from luck
    max_p_value: Annotated[float, Field(gt=0, le=1)]  # 1: the p-value is recorded, not required
    ci_lower_above_no_skill: bool  # the interval's lower end must clear the no-skill value
    beat_majority: bool  # holdout accuracy must exceed always predicting the common label


class Importance(Section):
    n_repeats: PositiveInt  # permutation importance repeats
    max_rows: PositiveInt  # holdout rows sampled for permutation importance


class ModelMonitoring(Section):
    recent_sessions: PositiveInt  # the latest labelled sessions the champion is checked on
    max_degradation: Annotated[float, Field(gt=0, lt=1)]  # accuracy drop vs holdout that requires retraining
    psi_bins: Annotated[int, Field(ge=2)]


class Ml(Section):
    """Return-direction prediction: dataset, purged walk-forward CV, models, registry, monitoring."""

    registered_model: str  # the registry name every trained model becomes a version of
    horizon: PositiveInt  # label: sign of the forward return over this many sessions
    embargo: Annotated[int, Field(ge=0)]  # sessions dropped after the purge gap (which is `horizon`)
    refit_every_months: PositiveInt  # walk-forward refits on the first session of every n-th month
    min_folds: Annotated[int, Field(ge=2)]  # fewer CV folds before the holdout is an error
    min_train_sessions: PositiveInt  # the first refit trains on at least this many sessions
    holdout_sessions: PositiveInt  # the most recent labelled sessions: the final, untouched test
    max_train_rows: PositiveInt | None  # a fit draws at most this many training rows (None: all)
    seed: int
    retrain: bool  # false: train only when there is no champion yet; true: train a challenger
    models: dict[str, ModelSpec]  # candidates; the best mean CV `promotion.metric` is the challenger
    promotion: Promotion
    importance: Importance
    monitoring: ModelMonitoring

    @field_validator("models")
    @classmethod
    def _some_models(cls, value: dict[str, ModelSpec]) -> dict[str, ModelSpec]:
        if not value:
            raise ValueError("declare at least one model")
        return value


class Optimize(Section):
    """Target weights (bentley.models.optimize): methods tried in order, constraints, cash."""

    methods: list[Literal["max_sharpe", "min_volatility", "hrp"]]  # the first that solves is used
    long_only: bool
    max_weight: Annotated[float, Field(gt=0, le=1)]
    min_names: PositiveInt  # the cap becomes min(max_weight, 1/min_names), so this many names hold weight
    risk_free_rate: Annotated[float, Field(ge=-0.05, le=0.5)]  # annual, as in risk
    lookback_sessions: Annotated[int, Field(ge=20)]  # returns used for the covariance and move sizes
    min_history_sessions: Annotated[int, Field(ge=2)]  # fewer returns than this leaves a ticker out
    frontier_points: Annotated[int, Field(ge=5)]

    @field_validator("methods")
    @classmethod
    def _some_methods(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("list at least one method")
        return value


class SignalWeights(Section):
    """How much each component moves the score (score = Σ weight × component, components in [-1, 1])."""

    model: Annotated[float, Field(ge=0)]
    technical: Annotated[float, Field(ge=0)]
    sentiment: Annotated[float, Field(ge=0)]


class Costs(Section):
    commission_bps: Annotated[float, Field(ge=0)]  # per unit of traded value
    slippage_bps: Annotated[float, Field(ge=0)]
    impact_coefficient: Annotated[float, Field(ge=0)] | None  # cost share per unit of volume share; null: off


class TradeLimits(Section):
    max_position_weight: Annotated[float, Field(gt=0, le=1)]
    max_gross_exposure: Annotated[float, Field(gt=0, le=3)]
    max_daily_turnover: Annotated[float, Field(gt=0)]  # Σ|Δw| per session
    daily_loss_limit: Annotated[float, Field(gt=0, lt=1)]  # a session loss this large stops new risk that day


class Sweep(Section):
    """The backtest grid: every combination is one configuration."""

    entry_threshold: list[float]
    model_weight: list[Annotated[float, Field(ge=0)]]  # technical and sentiment share the rest in their ratio


class Paper(Section):
    # The name in portfolio_values and risk_metrics scope portfolio:<name>; a backdated run books
    # `<name>@YYYY-MM-DD`, which must still fit the 64-character key.
    portfolio: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")]
    initial_cash: PositiveFloat | None  # null: the investable cash on the first paper day


class Trade(Section):
    """Signals, risk limits, backtest and paper trading (the trade stage)."""

    signal_weights: SignalWeights
    technical_decay_sessions: PositiveInt  # a technical event fades linearly over this many sessions
    sentiment_halflife_sessions: PositiveFloat  # daily tone is smoothed with this half-life
    entry_threshold: Annotated[float, Field(ge=0, lt=1)]  # |score| needed to hold a name
    long_only: bool
    vol_target: PositiveFloat | None  # annual portfolio volatility target; null: off
    vol_window: Annotated[int, Field(ge=5)]
    execution: Literal["next_open", "next_close"]  # a signal from session t trades at t+1, never on t
    capital: PositiveFloat  # backtest starting equity, USD (sizes the volume-share impact)
    costs: Costs
    limits: TradeLimits
    sweep: Sweep
    paper: Paper


class Warehouse(Section):
    """`url: null` means SQLite under the outputs folder; BENTLEY_WAREHOUSE_URL overrides."""

    url: str | None

    @field_validator("url")
    @classmethod
    def _no_password(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value)
        except ArgumentError as exc:  # pydantic only turns ValueError into a validation error
            raise ValueError(f"not a database URL ({exc})") from None
        if url.password is not None:
            raise ValueError("the URL contains a password; set BENTLEY_WAREHOUSE_PASSWORD in the environment instead")
        return value


class Tracking(Section):
    """`uri: null` means a SQLite MLflow store under the outputs folder; MLFLOW_TRACKING_URI overrides."""

    uri: str | None
    experiment: str


class Runner(Section):
    """How `runner run` executes the DAG; retries and per-stage limits live in pipeline.yaml."""

    kernel: str
    progress: bool
    max_workers: PositiveInt | None  # stages at once; null: the machine's core count
    prestart_kernels: bool  # start a stage's kernel while its upstreams still compute
    lease_ttl_s: PositiveFloat  # a run's warehouse lease lapses this long after its last heartbeat
    heartbeat_s: PositiveFloat  # how often the lease is renewed
    # An orchestrated run's lease outlives each of its tasks by this long, bridging the
    # orchestrator's queueing between tasks; `runner finish` releases it at the end.
    orchestrated_lease_s: PositiveFloat
    # Each pre-run infrastructure check (outputs folder, warehouse, MLflow) gives up after this.
    preflight_timeout_s: PositiveFloat

    @model_validator(mode="after")
    def _heartbeat_inside_ttl(self) -> Runner:
        if self.heartbeat_s * 2 > self.lease_ttl_s:
            raise ValueError(
                f"heartbeat_s {self.heartbeat_s} must be at most half of lease_ttl_s {self.lease_ttl_s}, "
                "or one late heartbeat loses the lease"
            )
        return self


class Schedule(Section):
    """`runner schedule`: fire times on the exchange calendar, in workflow.timezone.

    Ticks fall on midnight + offset_minutes + k * every_minutes, local time, and only inside
    each session's trading hours (the intersection of workflow.market_hours with the calendar's
    open and close, so early closes are honoured).
    """

    every_minutes: Annotated[int, Field(ge=1, le=1440)]
    offset_minutes: Annotated[int, Field(ge=0, lt=1440)]
    sessions_only: bool  # false: every day, around the clock
    catch_up: Literal["none", "latest", "all"]  # ticks missed while the scheduler was down
    max_catch_up: PositiveInt  # `all` runs at most this many missed ticks, the latest ones
    heartbeat_s: PositiveFloat  # the scheduler's own heartbeat row, read by `runner health`
    health_port: Annotated[int, Field(ge=0, le=65535)]  # 127.0.0.1:<port>/health; 0: any free port


AlertRuleName = Literal[
    "pipeline_failures",
    "model_degradation",
    "trading_loss",
    "resource_use",
    "data_delay",
    "stage_slow",
    "retraining_required",
    "disk_use",
]
#: Rules whose threshold is a setting that already exists elsewhere: one default, one place.
LINKED_THRESHOLDS: dict[str, str] = {
    "pipeline_failures": "workflow.alert_after_failures",
    "model_degradation": "ml.monitoring.max_degradation",
    "trading_loss": "trade.limits.daily_loss_limit",
    "data_delay": "workflow.data_freshness_minutes",
}


class AlertRule(Section):
    severity: Literal["critical", "warning"]
    enabled: bool
    threshold: float | None = None  # null for linked rules and for retraining_required


class Webhook(Section):
    """Alerts are POSTed as JSON to the URL in environment variable `url_env` (URLs carry tokens)."""

    url_env: str
    timeout_s: PositiveFloat
    max_attempts: PositiveInt
    backoff_s: Annotated[float, Field(ge=0)]


class Monitor(Section):
    """The monitor stage: KPIs, alert rules and where alerts go."""

    baseline_runs: Annotated[int, Field(ge=2)]  # stage durations are compared with this many runs' median
    renotify_minutes: PositiveInt  # an alert still active is sent again after this long
    rules: dict[AlertRuleName, AlertRule]
    webhook: Webhook

    @model_validator(mode="after")
    def _thresholds(self) -> Monitor:
        for name, rule in self.rules.items():
            linked = LINKED_THRESHOLDS.get(name)
            if linked and rule.threshold is not None:
                raise ValueError(f"rules.{name}.threshold: this rule uses {linked}; set it there")
            if not linked and name != "retraining_required" and rule.threshold is None:
                raise ValueError(f"rules.{name}.threshold is required")
        return self


# --------------------------------------------------------------------------- watch (runner watch)

WatchSeverity = Literal["critical", "warning"]


class LinkedRule(Section):
    severity: WatchSeverity
    enabled: bool


class VarRule(Section):
    severity: WatchSeverity
    enabled: bool
    metric: Literal[
        "var_95_historical",
        "var_99_historical",
        "var_95_parametric",
        "var_95_cornish_fisher",
        "var_95_garch",
        "cvar_95_historical",
        "cvar_99_historical",
    ]


class ThresholdRule(Section):
    severity: WatchSeverity
    enabled: bool
    threshold: PositiveFloat


class WatchRules(Section):
    daily_loss: LinkedRule
    var_breach: VarRule
    vol_move: ThresholdRule
    drawdown: ThresholdRule
    stale_feed: ThresholdRule
    bad_tick: ThresholdRule


class WatchSource(Section):
    kind: Literal["sample", "replay", "yahoo"]
    path: str | None
    interval: Literal["1m", "5m", "15m", "60m"]
    speed: Annotated[float, Field(ge=0)]
    poll_s: PositiveFloat

    @model_validator(mode="after")
    def _replay_needs_path(self) -> WatchSource:
        if self.kind == "replay" and not self.path:
            raise ValueError("source.path is required for kind replay")
        return self


class Watch(Section):
    source: WatchSource
    portfolio: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")] | None
    tickers: list[str] | None
    on_loss_limit: Literal["alert", "reduce", "flatten"]
    reduce_fraction: Annotated[float, Field(gt=0, le=1)]
    lease_ttl_s: PositiveFloat
    heartbeat_s: PositiveFloat
    idle_poll_s: PositiveFloat
    record_bars: bool
    rules: WatchRules

    @field_validator("tickers")
    @classmethod
    def _clean_tickers(cls, value: list[str] | None) -> list[str] | None:
        return ticker_list(value, "watch.tickers")

    @model_validator(mode="after")
    def _heartbeat_within_ttl(self) -> Watch:
        if self.heartbeat_s >= self.lease_ttl_s:
            raise ValueError(f"heartbeat_s ({self.heartbeat_s:g}) must be below lease_ttl_s ({self.lease_ttl_s:g})")
        return self


class Config(Section):
    workflow: Workflow
    sample: Sample
    universe: Universe
    sources: Sources
    history: History
    etl: Etl
    features: Features
    technical: Technical
    risk: Risk
    sentiment: Sentiment
    budget: Budget
    anomaly: Anomaly
    ml: Ml
    optimize: Optimize
    trade: Trade
    warehouse: Warehouse
    tracking: Tracking
    runner: Runner
    schedule: Schedule
    monitor: Monitor
    watch: Watch

    def section(self, name: str) -> dict[str, Any]:
        """One section as plain JSON-able data: what the runner injects into a notebook."""
        return getattr(self, name).model_dump(mode="json", by_alias=True)

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def params_hash(self) -> str:
        """SHA-256 of the canonical JSON of the resolved params."""
        return hashlib.sha256(canonical_json(self.as_dict()).encode()).hexdigest()


SECTION_NAMES: tuple[str, ...] = tuple(Config.model_fields)


def section_model(name: str) -> type[Section]:
    """The model class that validates section `name` (used by notebooks run standalone)."""
    if name not in Config.model_fields:
        raise ParamsError(f"unknown params section {name!r}; known: {', '.join(SECTION_NAMES)}")
    return Config.model_fields[name].annotation  # type: ignore[return-value]


# --------------------------------------------------------------------------- pipeline


class StageSpec(Section):
    """One stage of `params/pipeline.yaml`."""

    notebook: str
    upstream: list[str]
    sections: list[str]  # params sections injected as notebook parameters of the same name
    timeout_minutes: PositiveFloat | None  # null: workflow.max_execution_time_minutes
    retries: Annotated[int, Field(ge=0)]  # extra attempts after a transient failure
    # all_success: skipped when an upstream failed; all_done: runs once upstreams finished either way
    trigger: Literal["all_success", "all_done"] = "all_success"
    cache: bool = True  # false: always runs (never skipped as up to date)
    cache_max_age_minutes: PositiveFloat | None = None  # results that go stale with time (monitor)
    # true: keeps every core busy itself (train's fits), so no other stage starts while it runs
    exclusive: bool = False

    @field_validator("sections")
    @classmethod
    def _known_sections(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in Config.model_fields]
        if unknown:
            raise ValueError(f"unknown params sections {unknown}; known: {', '.join(Config.model_fields)}")
        return value


class RetryPolicy(Section):
    """Delay before retry n: min(backoff_max_s, backoff_base_s * 2**(n-1)), half of it random."""

    backoff_base_s: Annotated[float, Field(ge=0)] = 2.0
    backoff_max_s: Annotated[float, Field(ge=0)] = 60.0


class PipelineSpec(Section):
    retry: RetryPolicy = RetryPolicy()
    stages: dict[str, StageSpec]


def load_pipeline(path: Path) -> PipelineSpec:
    """Read and validate the stage DAG declaration (the graph checks live in the runner)."""
    layer = read_layer(path)
    try:
        return PipelineSpec.model_validate(layer.values)
    except ValidationError as exc:
        raise ParamsError(_describe(exc, [layer])) from None


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Layer:
    """One source of parameter values and where each key came from (for error messages)."""

    origin: str  # a file path, or "--set"
    values: dict[str, Any]
    lines: dict[tuple[str, ...], int]  # key path -> 1-based line number


def project_root(start: Path | None = None) -> Path:
    """The folder holding `params/pipeline.yaml`: searched upwards from `start` (or the cwd),
    then next to this package (an editable install in a clone). Notebooks run from
    `notebooks/` in JupyterLab, so searching upwards is what makes them work standalone."""
    candidates = [start or Path.cwd()]
    candidates.append(Path(__file__).resolve().parents[2])
    for base in candidates:
        for folder in (base, *base.resolve().parents):
            if (folder / PARAMS_DIR / PIPELINE_FILE).is_file():
                return folder
    raise ParamsError(f"no {PARAMS_DIR}/{PIPELINE_FILE} found above {candidates[0]}")


def load_config(
    profile: str = "default",
    overrides: Iterable[str] = (),
    root: Path | None = None,
) -> Config:
    """Layer and validate the params; raise ParamsError naming file, key and line."""
    root = root or project_root()
    layers = params_layers(root, profile, overrides)
    return validate_layers(layers)


def params_layers(root: Path, profile: str, overrides: Iterable[str] = ()) -> list[Layer]:
    params = root / PARAMS_DIR
    layers = [read_layer(params / "default.yaml")]
    if profile != "default":
        profile_file = params / "profiles" / f"{profile}.yaml"
        if not profile_file.is_file():
            known = sorted(p.stem for p in (params / "profiles").glob("*.yaml"))
            raise ParamsError(f"{profile_file}: no such profile {profile!r}; known: {', '.join(known)}")
        layers.append(read_layer(profile_file))
    local = params / "local.yaml"
    if local.is_file():
        layers.append(read_layer(local))
    overrides = list(overrides)
    if overrides:
        layers.append(override_layer(overrides))
    return layers


def validate_layers(layers: list[Layer]) -> Config:
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = deep_merge(merged, layer.values)
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        raise ParamsError(_describe(exc, layers)) from None


def read_layer(path: Path) -> Layer:
    """Read one params YAML file as plain data, keeping each key's line for errors.

    At most MAX_LAYER_BYTES + 1 bytes are read, so even a huge file costs no more than that.
    """
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_LAYER_BYTES + 1)
    except OSError as exc:
        raise ParamsError(f"{path}: cannot read ({exc.strerror})") from None
    if len(data) > MAX_LAYER_BYTES:
        raise ParamsError(f"{path}: larger than {MAX_LAYER_BYTES} bytes (1 MiB), the limit for one params layer")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ParamsError(f"{path}:{line}: not UTF-8 text (byte {exc.start + 1})") from None
    reader = _PlainYaml(str(path))
    values = reader.build(text)
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ParamsError(f"{path}:1: expected a mapping of sections, got {type(values).__name__}")
    return Layer(origin=str(path), values=values, lines=reader.lines)


def override_layer(assignments: Iterable[str]) -> Layer:
    """`--set a.b.c=value` pairs; values are YAML scalars/lists (`true`, `3`, `[A, B]`, `null`).

    The values together are one layer, so together they get one layer's size and node limits.
    """
    assignments = list(assignments)
    size = sum(len(assignment.encode("utf-8", "surrogatepass")) for assignment in assignments)
    if size > MAX_LAYER_BYTES:
        raise ParamsError(
            f"{OVERRIDES}: the values total {size} bytes, more than the limit for one params "
            f"layer ({MAX_LAYER_BYTES} bytes, 1 MiB)"
        )
    values: dict[str, Any] = {}
    nodes_left = MAX_LAYER_NODES
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        path = tuple(part.strip() for part in key.split("."))
        if not sep or not all(path):
            raise ParamsError(f"--set {assignment!r}: expected key.path=value")
        reader = _PlainYaml(OVERRIDES, path, nodes_left)
        value = reader.build(raw)
        nodes_left = reader.nodes_left
        target = values
        for part in path[:-1]:
            existing = target.setdefault(part, {})
            if not isinstance(existing, dict):
                raise ParamsError(f"--set {assignment!r}: {part} was already set to a value")
            target = existing
        target[path[-1]] = value
    return Layer(origin=OVERRIDES, values=values, lines={})


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Merge mappings recursively; any non-mapping value (lists included) replaces."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`; lists become JSON text (for MLflow params)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(value)
        else:
            flat[name] = value
    return flat


def canonical_json(values: Any) -> str:
    return json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)


#: Where a profile other than `default` keeps its store, under the outputs base folder.
PROFILE_STORES = "profiles"


def outputs_dir(
    explicit: str | os.PathLike[str] | None = None, root: Path | None = None, profile: str = "default"
) -> Path:
    """The store (lake, warehouse, MLflow, run folders) a profile's runs read and write.

    `--outputs` is taken exactly, whatever the profile: pointing two profiles at one folder
    shares their store on purpose. Otherwise the base is BENTLEY_OUTPUTS or
    `<project root>/outputs`; the default profile's store is the base itself and every other
    profile has its own under `<base>/profiles/<name>/`, so a `ci` run with relaxed promotion
    gates can never register the default profile's champion or widen its universe.
    """
    if explicit:
        return Path(explicit).expanduser().resolve()
    from_env = os.environ.get("BENTLEY_OUTPUTS")
    base = Path(from_env).expanduser().resolve() if from_env else (root or project_root()) / "outputs"
    return base if profile == "default" else base / PROFILE_STORES / profile


def profile_stores(explicit: str | os.PathLike[str] | None = None, root: Path | None = None) -> list[Path]:
    """Every store under the outputs base (the default profile's first), or just `--outputs`."""
    default = outputs_dir(explicit, root)
    if explicit:
        return [default]
    nested = sorted(p for p in (default / PROFILE_STORES).glob("*") if p.is_dir())
    return [default, *nested]


# --------------------------------------------------------------------------- helpers


def _years_before(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


@dataclass
class _Open:
    """A mapping or sequence being filled while its YAML events arrive."""

    path: tuple[str, ...]
    value: dict[str, Any] | list[Any]
    key: str | None = None  # in a mapping, the key whose value comes next; None: a key comes next


# Every node event PyYAML's parser emits: yaml.NodeEvent itself has no `tag`, its subclasses do
# (all but AliasEvent), so the union, unlike the base class, lets the tag be read once an alias is refused.
_NodeEvent = yaml.AliasEvent | yaml.ScalarEvent | yaml.CollectionStartEvent
_NODE_EVENTS = (yaml.AliasEvent, yaml.ScalarEvent, yaml.CollectionStartEvent)


class _PlainYaml:
    """Build plain params data from the YAML parser's events, refusing what cannot be bounded.

    Building from events, not with `yaml.load`, is what makes the limits hold: an anchor or
    alias is refused at its first event, so an alias bomb is never expanded (PyYAML would share
    its nodes, and deep_merge, pydantic and json would then walk every one of its 10^9 paths);
    depth and node count are checked as events arrive, before anything recursive sees the
    data; and each problem is reported with the key path and line it is about.
    """

    def __init__(self, origin: str, prefix: tuple[str, ...] = (), max_nodes: int = MAX_LAYER_NODES) -> None:
        self.origin = origin
        self.prefix = prefix  # a `--set` value sits under its key path, which counts towards the depth
        self.nodes_left = max_nodes
        self.lines: dict[tuple[str, ...], int] = {}  # key path -> 1-based line number
        self._open: list[_Open] = []
        self._root: Any = None

    def build(self, text: str) -> Any:
        """The document's data: None when empty, else a mapping, list or scalar of plain values."""
        try:
            loader = _SAFE_LOADER(text)
            try:
                self._read(loader)
            finally:
                loader.dispose()
        except UnicodeEncodeError as exc:  # libyaml reads UTF-8; a lone surrogate (from argv) is not
            raise self._error(None, self.prefix, f"not UTF-8 text (character {exc.start + 1})") from None
        except yaml.YAMLError as exc:
            line, problem = _parser_problem(exc, text)
            raise self._error(line, self.prefix, f"invalid YAML ({problem})") from None
        return self._root

    def _read(self, loader: Any) -> None:
        documents = 0
        while not loader.check_event(yaml.StreamEndEvent):
            event = loader.get_event()
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise self._error(
                        _line(event), self.prefix, "a second YAML document ('---'); a params layer is one mapping"
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                self._open.pop()
            elif isinstance(event, _NODE_EVENTS):
                self._node(loader, event)

    def _node(self, loader: Any, event: _NodeEvent) -> None:
        parent = self._open[-1] if self._open else None
        if parent is None:
            path = self.prefix
        elif isinstance(parent.value, list):
            path = (*parent.path, str(len(parent.value)))
        elif parent.key is None:  # this node is a key of the mapping
            path = (*parent.path, event.value) if isinstance(event, yaml.ScalarEvent) else parent.path
            self._check(event, path)
            parent.key = self._key(loader, event, parent.value, path)
            self.lines[path] = _line(event)
            return
        else:
            path = (*parent.path, parent.key)
        self._check(event, path)
        value: Any
        if isinstance(event, yaml.ScalarEvent):
            value = self._scalar(loader, event, path)
        else:
            value = {} if isinstance(event, yaml.MappingStartEvent) else []
            self._open.append(_Open(path, value))
        if parent is None:
            self._root = value
        elif isinstance(parent.value, list):
            parent.value.append(value)
        else:
            parent.value[path[-1]] = value
            parent.key = None

    def _check(self, event: _NodeEvent, path: tuple[str, ...]) -> None:
        """Refuse, at its first event, whatever could make a layer unbounded or not plain data."""
        line = _line(event)
        if isinstance(event, yaml.AliasEvent):
            raise self._error(line, path, f"{_NO_ALIASES} (found '*{event.anchor}')")
        if event.anchor is not None:
            raise self._error(line, path, f"{_NO_ALIASES} (found '&{event.anchor}')")
        self.nodes_left -= 1
        if self.nodes_left < 0:
            raise self._error(line, path, f"more than {MAX_LAYER_NODES} YAML nodes, the limit for one params layer")
        if len(path) > MAX_DEPTH:
            raise self._error(line, path, f"nested more than {MAX_DEPTH} levels deep, the limit for params")
        collection_tags: dict[type[yaml.Event], str] = {
            yaml.MappingStartEvent: _MAP_TAG,
            yaml.SequenceStartEvent: _SEQ_TAG,
        }
        expected = collection_tags.get(type(event), _STR_TAG)
        if event.tag not in (None, "!", expected):
            raise self._error(
                line,
                path,
                f"YAML tag {_short(event.tag)} is not allowed in params "
                "(write plain values; only !!str, to force text, is accepted)",
            )

    def _key(self, loader: Any, event: yaml.NodeEvent, mapping: dict[str, Any], path: tuple[str, ...]) -> str:
        """A mapping key: a string, once per mapping (PyYAML would silently keep the last)."""
        line = _line(event)
        if not isinstance(event, yaml.ScalarEvent):
            raise self._error(line, path, "a mapping key must be a string, not a list or mapping")
        tag = _STR_TAG if event.tag == _STR_TAG else loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        if tag == _MERGE_TAG:
            raise self._error(line, path, f"{_NO_ALIASES} (found '<<')")
        if tag != _STR_TAG:
            raise self._error(line, path, f"YAML reads this key as {_short(tag)}; quote it to use it as a name")
        if event.value in mapping:
            raise self._error(line, path, "duplicate key")
        return str(event.value)

    def _scalar(self, loader: Any, event: yaml.ScalarEvent, path: tuple[str, ...]) -> Any:
        """A plain value, built by PyYAML's safe constructor for the tag its resolver gives."""
        line = _line(event)
        tag = _STR_TAG if event.tag == _STR_TAG else loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        quoted = _clip(event.value)
        if tag not in _SCALAR_TAGS:  # `=` (!!value) or `<<` (!!merge) as a value
            raise self._error(line, path, f"YAML reads {quoted!r} as {_short(tag)}; quote it")
        # The stubs type a node's marks as yaml.Mark only, but libyaml's parser (CSafeLoader) gives
        # its events, and PyYAML's own C composer its nodes, the C-level yaml._yaml.Mark.
        start_mark = cast("yaml.Mark | None", event.start_mark)
        end_mark = cast("yaml.Mark | None", event.end_mark)
        node = yaml.ScalarNode(tag, event.value, start_mark, end_mark, event.style)
        try:
            return loader.yaml_constructors[tag](loader, node)
        except ValueError as exc:  # an impossible date (2025-13-45), an int past Python's 4300 digits
            raise self._error(line, path, f"cannot read {quoted!r} as {_short(tag)} ({exc})") from None

    def _error(self, line: int | None, path: tuple[str, ...], problem: str) -> ParamsError:
        """`file:line: key: problem`; a `--set` value's lines are not worth naming."""
        where = f"{self.origin}:{line}" if line and self.origin != OVERRIDES else self.origin
        return ParamsError(f"{where}: {'.'.join(path)}: {problem}" if path else f"{where}: {problem}")


def _line(event: yaml.Event) -> int:
    mark = event.start_mark
    assert mark is not None, "the parser gives every event a start mark"
    return int(mark.line) + 1


def _parser_problem(exc: yaml.YAMLError, text: str) -> tuple[int | None, str]:
    """The line and the one-line problem of a parser error (libyaml's reader errors carry no mark)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        return (mark.line + 1 if mark else None), exc.problem or exc.context or "unreadable"
    if isinstance(exc, yaml.reader.ReaderError):
        return text.count("\n", 0, exc.position) + 1, exc.reason
    return None, str(exc)


def _short(tag: str) -> str:
    """`tag:yaml.org,2002:int` -> `!!int`, as the tag is written in YAML."""
    return tag.replace(_YAML_TAG, "!!", 1)


def _clip(text: str, limit: int = 60) -> str:
    """A value quoted in a message: enough to recognise it, never the whole of a huge one."""
    return text if len(text) <= limit else f"{text[:limit]}…"


def _describe(exc: ValidationError, layers: list[Layer]) -> str:
    """The first validation error as `file:line: key: problem` (plus a count of the rest)."""
    errors = exc.errors()
    first = errors[0]
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = deep_merge(merged, layer.values)
    key_path = _key_path(tuple(str(p) for p in first["loc"]), merged)
    key = ".".join(key_path) or "(top level)"
    where = _where(key_path, layers)
    problem = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        problem = "unknown key"
    elif first["type"] == "missing":
        problem = "required key is missing"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {key}: {problem}{more}"


def _key_path(loc: tuple[str, ...], merged: Mapping[str, Any]) -> tuple[str, ...]:
    """Pydantic's error location minus its union tags: keep the parts that are params keys."""
    path: list[str] = []
    current: Any = merged
    for index, part in enumerate(loc):
        if isinstance(current, Mapping) and part in current:
            path.append(part)
            current = current[part]
        elif index == len(loc) - 1 or isinstance(current, list):
            path.append(part)  # the missing or unknown key itself, or a list index
            current = None
    return tuple(path)


def _where(key_path: tuple[str, ...], layers: list[Layer]) -> str:
    """The last layer that mentions the deepest existing prefix of `key_path`."""
    for depth in range(len(key_path), 0, -1):
        prefix = key_path[:depth]
        for layer in reversed(layers):
            if _has_path(layer.values, prefix):
                line = layer.lines.get(prefix)
                return f"{layer.origin}:{line}" if line else layer.origin
    return layers[0].origin


def _has_path(values: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    current: Any = values
    for part in path:
        if not isinstance(current, Mapping) or part not in current:
            return False
        current = current[part]
    return True
