"""The monitor stage's KPIs: how the pipeline, the data, the model, the paper book and the host are doing.

Every KPI is a row of the warehouse table `monitor_kpis(run_id, kpi, scope)` with a value, a
unit, a one-line detail and the time it was measured (`KPI_COLUMNS`). The functions are pure:
they take the run ledger and the other tables as DataFrames (`History`), the params, and an
explicit UTC `now` (the wall clock is what these KPIs measure, so tests freeze it). Only
`load_history` reads the warehouse and only `host_resources` asks the operating system.

Definitions (the alert rules in `bentley.monitoring.alerts` read these rows):

* **Run outcomes** — a pipeline run's verdict is its recorded status: `success`, or `failed` /
  `crashed` (a failure). `running` and `interrupted` say nothing about health and are ignored
  (they neither count nor break a streak). The run being monitored is still `running`: it counts
  as failed as soon as one of its stages failed (the latest attempt of each stage, the monitor's
  own rows left out), and has no verdict otherwise.
* **success_rate** — successes among the last `monitor.baseline_runs` runs with a verdict.
* **consecutive_failures** — the current run if it has failed so far, plus the unbroken streak of
  failed/crashed runs just before it (ordered by `started_at`), stopping at the first success.
* **stage_duration_ratio** — each stage's duration in this run (latest attempt, status success)
  over the median duration of its last `baseline_runs` successful executions in earlier runs;
  `cached` rows (no work done) and the monitor stage are left out. NaN with fewer than
  `MIN_BASELINE` executions: a median of one or two is noise.
* **minutes_since_ingest** — minutes from the end of the last ingest attempt with status
  success or cached to `now`. **dataset_lag_sessions** — exchange sessions between a dataset's
  latest date and the logical date (0: up to date).
* **Model** — the latest `model_monitoring` row per model (by `as_of`, then run start):
  recent and holdout accuracy, degradation (1 − recent / holdout), max PSI, drifted features and
  the retraining flag (1/0). No champion yet: no rows, so no model KPIs.
* **Paper book** — cumulative return, Sharpe and max drawdown of `portfolio_values.daily_return`,
  computed by `bentley.analytics.risk.risk_metrics` (ARCHITECTURE §6: 252 sessions, ddof=1,
  drawdown from a wealth of 1 before day one), the latest daily return and the latest equity.
  Published like every other figure (`risk.published`, params `risk.min_observations`): a
  Sharpe ratio of a book with a handful of returns is NaN, with the reason as its `detail`,
  so neither the report nor an alert rule reads it as a number.
* **Host** — CPU, memory and disk (the outputs folder's filesystem) in use, as shares in 0..1.
"""

from __future__ import annotations

import datetime as dt
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bentley import calendar
from bentley.analytics import risk
from bentley.monitoring import drift
from bentley.reporting import md_escape

if TYPE_CHECKING:  # matplotlib is imported by the chart helpers only, when they are called
    from matplotlib.figure import Figure

    from bentley.config import MinObservations
    from bentley.stage import Params
    from bentley.warehouse import Warehouse

#: Columns of `kpi_table`: the rows of the warehouse table monitor_kpis(run_id, kpi, scope).
KPI_COLUMNS: tuple[str, ...] = ("run_id", "kpi", "scope", "value", "unit", "detail", "measured_at")

#: The monitor stage's own name: its rows are never part of a run's outcome or a baseline.
MONITOR_STAGE = "monitor"
INGEST_STAGE = "ingest"
#: Run statuses that are a failure, and the one that breaks a failure streak.
FAILED_STATUSES = frozenset({"failed", "crashed"})
SUCCESS = "success"
#: Ingest statuses after which the data is as fresh as the sources allow.
INGEST_DONE = frozenset({"success", "cached"})
#: Fewer successful executions than this give no stage baseline (the ratio is NaN).
MIN_BASELINE = 3
#: Datasets whose freshness is measured: warehouse table -> its session-date column.
DATASETS: dict[str, str] = {"prices": "date", "news": "date"}

#: Scopes that are not a stage, a model, a dataset or a portfolio.
PIPELINE, HOST = "pipeline", "host"

_DURATION_COLUMNS = ["stage", "status", "duration_s", "baseline_median_s", "baseline_n", "ratio"]
_OUTCOME_COLUMNS = ["run_id", "started_at", "ended_at", "duration_s", "status", "outcome", "current"]
_TREND_COLUMNS = [
    "model_name",
    "model_version",
    "as_of",
    "recent_accuracy",
    "holdout_accuracy",
    "degradation",
    "max_psi",
    "drifted_features",
    "retraining_required",
    "reason",
    "run_id",
]


@dataclass(frozen=True)
class History:
    """What the KPIs are computed from: warehouse tables as read (any may be empty)."""

    pipeline_runs: pd.DataFrame
    stage_runs: pd.DataFrame
    model_monitoring: pd.DataFrame = field(default_factory=pd.DataFrame)
    portfolio_values: pd.DataFrame = field(default_factory=pd.DataFrame)  # one portfolio's rows
    dataset_dates: Mapping[str, dt.date | None] = field(default_factory=dict)  # dataset -> latest date


@dataclass(frozen=True)
class Resources:
    """Host resources in use, as shares in 0..1 (NaN when unknown)."""

    cpu: float
    memory: float
    disk: float
    disk_path: str = ""
    cpu_detail: str = "used by processes other than the pipeline"
    disk_detail: str = ""


# --------------------------------------------------------------------------------------------
# Reading (the only functions here that touch the warehouse or the operating system)


def load_history(warehouse: Warehouse, params: Params, logical_date: dt.date) -> History:
    """The run ledger, and as of the logical date: model checks, the paper book, each dataset's latest date.

    The ledger is wall-clock history and is read whole; the data tables stop at the logical
    date, so monitoring a past date (a backfill) sees that date's book and model, not today's.
    """
    return History(
        pipeline_runs=warehouse.read("pipeline_runs"),
        stage_runs=warehouse.read("stage_runs"),
        model_monitoring=warehouse.read("model_monitoring", end=logical_date, date_column="as_of"),
        portfolio_values=warehouse.read(
            "portfolio_values", end=logical_date, where={"portfolio": params.trade.paper.portfolio}
        ),
        dataset_dates={
            name: _latest(warehouse.distinct(name, column), logical_date) for name, column in DATASETS.items()
        },
    )


def _latest(values: Iterable[Any], on_or_before: dt.date) -> dt.date | None:
    dates = [pd.Timestamp(v).date() for v in values if v is not None and not pd.isna(v)]
    dates = [d for d in dates if d <= on_or_before]
    return max(dates) if dates else None


def host_resources(path: str | Path, cpu_interval_s: float = 0.5) -> Resources:
    """CPU, memory, and disk use of the filesystem holding `path`, as shares of the machine.

    Measured by `bentley.monitoring.resources`, as `runner health` measures them: CPU is what
    other processes keep busy, sustained over minutes (the pipeline's own processes left out;
    the detail names the busiest others), disk is `df`'s share of the filesystem in use. A
    `path` not created yet is measured at its nearest existing parent (same filesystem).
    """
    from bentley.monitoring import resources  # psutil only here: tests pass crafted Resources instead

    cpu = resources.cpu_use(cpu_interval_s)
    disk = resources.disk_use(path)
    return Resources(
        cpu=cpu.share,
        memory=resources.memory_use(),
        disk=disk.share,
        disk_path=str(path),
        cpu_detail=cpu.detail(),
        disk_detail=disk.text(),
    )


# --------------------------------------------------------------------------------------------
# Pipeline runs


def _utc(values: pd.Series) -> pd.Series:
    """Timestamps as tz-aware UTC, index kept."""
    return pd.to_datetime(values, utc=True)


def latest_attempts(stage_runs: pd.DataFrame) -> pd.DataFrame:
    """The last attempt of each (run, stage): a retried stage's outcome is its final attempt's."""
    if stage_runs.empty:
        return stage_runs.copy()
    rows = stage_runs.sort_values(["run_id", "stage", "attempt"], kind="stable")
    return rows.drop_duplicates(["run_id", "stage"], keep="last").reset_index(drop=True)


def run_outcomes(pipeline_runs: pd.DataFrame, stage_runs: pd.DataFrame, run_id: str) -> pd.DataFrame:
    """One row per run in start order: recorded `status` and `outcome` (success | failed | None).

    The current run is added when the ledger does not have it yet (the monitor run on its own).
    Its outcome is `failed` once a stage of it failed, else that of a final recorded status,
    else None (still running).
    """
    runs = pipeline_runs.reindex(columns=["run_id", "started_at", "ended_at", "duration_s", "status"]).copy()
    if run_id not in set(runs["run_id"]):
        extra = pd.DataFrame({"run_id": [run_id], "status": ["running"]})
        runs = (
            pd.concat([runs, extra.reindex(columns=runs.columns)], ignore_index=True)
            if len(runs)
            else extra.reindex(columns=runs.columns)
        )
    runs["started_at"] = _utc(runs["started_at"])
    runs["ended_at"] = _utc(runs["ended_at"])
    runs["duration_s"] = pd.to_numeric(runs["duration_s"], errors="coerce")
    runs["status"] = runs["status"].astype(object).where(runs["status"].notna(), None)
    outcome = runs["status"].map(lambda s: "failed" if s in FAILED_STATUSES else (SUCCESS if s == SUCCESS else None))
    runs["current"] = runs["run_id"] == run_id
    stages = latest_attempts(stage_runs)
    if not stages.empty:
        mine = stages[(stages["run_id"] == run_id) & (stages["stage"] != MONITOR_STAGE)]
        if (mine["status"] == "failed").any():
            outcome = outcome.where(~runs["current"], "failed")
    runs["outcome"] = outcome.astype(object).where(outcome.notna(), None)
    # the current run goes last when it has no start time (not in the ledger yet)
    runs = runs.sort_values(["started_at", "run_id"], kind="stable", na_position="last")
    return runs.reindex(columns=_OUTCOME_COLUMNS).reset_index(drop=True)


def consecutive_failures(outcomes: pd.DataFrame) -> int:
    """The current run if it failed so far, plus the failed runs right before it, up to a success."""
    if outcomes.empty:
        return 0
    position = int(np.flatnonzero(outcomes["current"].to_numpy())[-1]) if outcomes["current"].any() else len(outcomes)
    streak = 0
    for outcome in reversed(outcomes["outcome"].iloc[: position + 1].tolist()):
        if outcome == "failed":
            streak += 1
        elif outcome == SUCCESS:
            break
    return streak


def success_rate(outcomes: pd.DataFrame, last_n: int) -> tuple[float, int]:
    """(share of successes, runs counted) among the last `last_n` runs with a verdict; NaN when none."""
    verdicts = outcomes["outcome"].dropna().tail(last_n) if not outcomes.empty else pd.Series(dtype=object)
    if verdicts.empty:
        return math.nan, 0
    return float((verdicts == SUCCESS).mean()), int(len(verdicts))


# --------------------------------------------------------------------------------------------
# Stage durations


def stage_durations(stage_runs: pd.DataFrame, run_id: str, baseline_runs: int) -> pd.DataFrame:
    """Per stage of this run: status, duration, baseline median, executions behind it, ratio.

    Stages of this run that did no work (cached, skipped) or failed have no ratio; the baseline
    is the median `duration_s` of the stage's last `baseline_runs` successful executions in runs
    started before this one (by start time), needing at least MIN_BASELINE of them.
    """
    stages = latest_attempts(stage_runs)
    if stages.empty:
        return pd.DataFrame(columns=_DURATION_COLUMNS)
    stages = stages[stages["stage"] != MONITOR_STAGE]
    current = stages[stages["run_id"] == run_id].sort_values("started_at", kind="stable")
    done = stage_runs[
        (stage_runs["run_id"] != run_id) & (stage_runs["status"] == SUCCESS) & (stage_runs["stage"] != MONITOR_STAGE)
    ]
    done = done.assign(started_at=_utc(done["started_at"])).sort_values("started_at", kind="stable")
    began = _utc(current["started_at"]).min()
    if pd.notna(began):  # a past run monitored again: only executions before it are its baseline
        done = done[done["started_at"] < began]
    rows = []
    for record in current.itertuples(index=False):
        history = pd.to_numeric(done.loc[done["stage"] == record.stage, "duration_s"], errors="coerce").dropna()
        history = history.tail(baseline_runs)
        median = float(history.median()) if len(history) >= MIN_BASELINE else math.nan
        duration = float(record.duration_s) if record.status == SUCCESS and pd.notna(record.duration_s) else math.nan
        ratio = duration / median if math.isfinite(duration) and median > 0 else math.nan
        rows.append(
            {
                "stage": record.stage,
                "status": record.status,
                "duration_s": duration,
                "baseline_median_s": median,
                "baseline_n": len(history),
                "ratio": ratio,
            }
        )
    return pd.DataFrame(rows, columns=_DURATION_COLUMNS)


# --------------------------------------------------------------------------------------------
# Data freshness


def minutes_since_ingest(stage_runs: pd.DataFrame, now: dt.datetime) -> tuple[float, pd.Timestamp | None]:
    """(minutes from the end of the last successful or cached ingest to `now`, its end time)."""
    if stage_runs.empty:
        return math.nan, None
    ingests = stage_runs[(stage_runs["stage"] == INGEST_STAGE) & stage_runs["status"].isin(INGEST_DONE)]
    ended = _utc(ingests["ended_at"]).dropna()
    if ended.empty:
        return math.nan, None
    last = ended.max()
    return (pd.Timestamp(now) - last).total_seconds() / 60.0, last


def session_lag(latest: dt.date | None, logical_date: dt.date, market: str = calendar.DEFAULT_CALENDAR) -> float:
    """Exchange sessions after `latest` up to the logical date (0: up to date; NaN: no data)."""
    if latest is None:
        return math.nan
    if latest >= logical_date:
        return 0.0
    return float(len(calendar.sessions(latest + dt.timedelta(days=1), logical_date, market)))


# --------------------------------------------------------------------------------------------
# Model


def model_trend(model_monitoring: pd.DataFrame, pipeline_runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """model_monitoring rows in time order (as_of, then the run's start): the accuracy trend."""
    if model_monitoring.empty:
        return pd.DataFrame(columns=_TREND_COLUMNS)
    rows = model_monitoring.copy()
    rows["as_of"] = pd.to_datetime(rows["as_of"])
    rows["_start"] = pd.NaT
    if pipeline_runs is not None and not pipeline_runs.empty:
        starts = _utc(pipeline_runs["started_at"]).set_axis(pipeline_runs["run_id"].to_numpy())
        rows["_start"] = rows["run_id"].map(starts)
    rows["_start"] = _utc(rows["_start"])
    rows = rows.sort_values(["as_of", "_start", "run_id"], kind="stable", na_position="first")
    return rows.reindex(columns=_TREND_COLUMNS).reset_index(drop=True)


def latest_model_rows(trend: pd.DataFrame) -> pd.DataFrame:
    """The latest row of each model in `model_trend`'s order."""
    return trend.drop_duplicates("model_name", keep="last").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Paper book


def paper_returns(portfolio_values: pd.DataFrame) -> pd.Series:
    """The book's daily simple returns by session (the first session has none)."""
    if portfolio_values.empty:
        return pd.Series(dtype=np.float64, index=pd.DatetimeIndex([], name="date"), name="daily_return")
    rows = portfolio_values.sort_values("date")
    series = pd.Series(
        pd.to_numeric(rows["daily_return"], errors="coerce").to_numpy(dtype=np.float64),
        index=pd.DatetimeIndex(pd.to_datetime(rows["date"]), name="date"),
        name="daily_return",
    )
    return series.dropna()


def paper_performance(portfolio_values: pd.DataFrame, risk_free_annual: float) -> dict[str, float]:
    """cumulative_return, sharpe_ratio, max_drawdown (risk.risk_metrics), latest return and equity, n."""
    returns = paper_returns(portfolio_values)
    out = {
        "cumulative_return": math.nan,
        "sharpe_ratio": math.nan,
        "max_drawdown": math.nan,
        "latest_daily_return": math.nan,
        "equity": math.nan,
        "n_returns": float(len(returns)),
    }
    if not portfolio_values.empty:
        last = portfolio_values.sort_values("date").iloc[-1]
        out["equity"] = float(last["equity"]) if pd.notna(last["equity"]) else math.nan
        out["latest_daily_return"] = float(last["daily_return"]) if pd.notna(last["daily_return"]) else math.nan
    if returns.empty:
        return out
    with warnings.catch_warnings():  # one return or a flat book: NaN metrics, said in the KPI detail
        warnings.simplefilter("ignore", risk.RiskWarning)
        table = risk.risk_metrics(returns.to_frame("paper"), pd.Series(dtype=np.float64), risk_free_annual, garch=False)
    row = table.loc["paper"]
    for name in ("cumulative_return", "sharpe_ratio", "max_drawdown"):
        out[name] = float(row[name])
    return out


# --------------------------------------------------------------------------------------------
# The KPI table


def _row(kpi: str, scope: str, value: float, unit: str, detail: str) -> dict[str, Any]:
    number = float(value) if value is not None else math.nan
    return {"kpi": kpi, "scope": scope, "value": number, "unit": unit, "detail": detail}


def _pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.1%}"


def pipeline_kpis(history: History, run_id: str, baseline_runs: int) -> list[dict[str, Any]]:
    outcomes = run_outcomes(history.pipeline_runs, history.stage_runs, run_id)
    rate, counted = success_rate(outcomes, baseline_runs)
    streak = consecutive_failures(outcomes)
    current = outcomes.loc[outcomes["current"], "outcome"]
    state = "has failed so far" if len(current) and current.iloc[-1] == "failed" else "has not failed so far"
    return [
        _row(
            "success_rate",
            PIPELINE,
            rate,
            "share",
            f"{round(rate * counted)} of the last {counted} finished runs succeeded"
            if counted
            else "no finished run yet",
        ),
        _row("consecutive_failures", PIPELINE, streak, "count", f"this run {state}"),
    ]


def duration_kpis(durations: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for record in durations.itertuples(index=False):
        basis = f"median of {record.baseline_n} successful runs"
        if record.baseline_n < MIN_BASELINE:
            basis = f"{record.baseline_n} successful runs so far; {MIN_BASELINE} needed for a baseline"
        rows.append(_row("stage_duration_s", record.stage, record.duration_s, "seconds", f"status {record.status}"))
        rows.append(_row("stage_baseline_s", record.stage, record.baseline_median_s, "seconds", basis))
        rows.append(_row("stage_duration_ratio", record.stage, record.ratio, "ratio", basis))
    return rows


def freshness_kpis(history: History, logical_date: dt.date, now: dt.datetime, workflow: Any) -> list[dict[str, Any]]:
    minutes, last = minutes_since_ingest(history.stage_runs, now)
    detail = "no successful ingest recorded"
    if last is not None:
        detail = f"last ingest success or cached at {last.tz_convert(workflow.timezone):%Y-%m-%d %H:%M %Z}"
    market = workflow.calendar
    rows = [_row("minutes_since_ingest", INGEST_STAGE, minutes, "minutes", detail)]
    for dataset, latest in history.dataset_dates.items():
        text = f"latest date {latest:%Y-%m-%d}, logical date {logical_date:%Y-%m-%d}" if latest else "no rows"
        rows.append(_row("dataset_lag_sessions", dataset, session_lag(latest, logical_date, market), "sessions", text))
    return rows


def model_kpis(history: History) -> list[dict[str, Any]]:
    rows = []
    for record in latest_model_rows(model_trend(history.model_monitoring, history.pipeline_runs)).itertuples(
        index=False
    ):
        scope, version = str(record.model_name), f"version {record.model_version}, as of {record.as_of:%Y-%m-%d}"
        flag = record.retraining_required
        rows += [
            _row("recent_accuracy", scope, _float(record.recent_accuracy), "share", version),
            _row("holdout_accuracy", scope, _float(record.holdout_accuracy), "share", version),
            _row("degradation", scope, _float(record.degradation), "share", "1 - recent / holdout accuracy"),
            _row("max_psi", scope, _float(record.max_psi), "psi", "largest feature drift (PSI)"),
            _row(
                "drifted_features",
                scope,
                _float(record.drifted_features),
                "count",
                f"features with PSI above {drift.SIGNIFICANT:g}",
            ),
            _row(
                "retraining_required",
                scope,
                math.nan if flag is None or pd.isna(flag) else float(bool(flag)),
                "flag",
                str(record.reason) if record.reason is not None and not pd.isna(record.reason) else "",
            ),
        ]
    return rows


def _float(value: Any) -> float:
    return math.nan if value is None or pd.isna(value) else float(value)


def paper_kpis(
    history: History, portfolio: str, risk_free_annual: float, minimums: MinObservations
) -> list[dict[str, Any]]:
    """The paper book's KPIs; a figure `risk.published` holds back is NaN with the reason as detail."""
    if history.portfolio_values.empty:
        return []
    perf = paper_performance(history.portfolio_values, risk_free_annual)
    n = int(perf["n_returns"])
    basis = f"{n} daily return(s), risk-free {risk_free_annual:.2%} a year"
    last = pd.Timestamp(history.portfolio_values["date"].max())

    def published(kpi: str, unit: str) -> dict[str, Any]:
        value, note = risk.published(perf[kpi], n, kpi, minimums)
        return _row(kpi, portfolio, math.nan if value is None else value, unit, note or basis)

    return [
        published("cumulative_return", "return"),
        published("sharpe_ratio", "ratio"),
        published("max_drawdown", "return"),
        _row("latest_daily_return", portfolio, perf["latest_daily_return"], "return", f"session {last:%Y-%m-%d}"),
        _row("equity", portfolio, perf["equity"], "usd", f"session {last:%Y-%m-%d}"),
    ]


def resource_kpis(resources: Resources) -> list[dict[str, Any]]:
    return [
        _row("cpu_use", HOST, resources.cpu, "share", resources.cpu_detail),
        _row("memory_use", HOST, resources.memory, "share", "memory in use"),
        _row(
            "disk_use",
            HOST,
            resources.disk,
            "share",
            (f"filesystem of {resources.disk_path}" if resources.disk_path else "outputs filesystem")
            + (f": {resources.disk_detail}" if resources.disk_detail else ""),
        ),
    ]


def kpi_table(
    history: History,
    params: Params,
    *,
    run_id: str,
    logical_date: dt.date,
    now: dt.datetime,
    resources: Resources,
    risk_free_annual: float = 0.0,
) -> pd.DataFrame:
    """Every KPI as rows of monitor_kpis (KPI_COLUMNS), measured at `now` (UTC).

    `params` carries the `monitor`, `workflow`, `trade` and `risk` sections (a stage's
    ctx.params). NaN values are kept: "not measurable yet" is worth a row with its reason in
    `detail`.
    """
    if now.tzinfo is None:
        raise ValueError("`now` must be timezone-aware (UTC)")
    durations = stage_durations(history.stage_runs, run_id, params.monitor.baseline_runs)
    rows = [
        *pipeline_kpis(history, run_id, params.monitor.baseline_runs),
        *duration_kpis(durations),
        *freshness_kpis(history, logical_date, now, params.workflow),
        *model_kpis(history),
        *paper_kpis(history, params.trade.paper.portfolio, risk_free_annual, params.risk.min_observations),
        *resource_kpis(resources),
    ]
    table = pd.DataFrame(rows, columns=[c for c in KPI_COLUMNS if c not in ("run_id", "measured_at")])
    table.insert(0, "run_id", run_id)
    table["measured_at"] = pd.Timestamp(now).tz_convert("UTC")
    table["value"] = table["value"].astype(np.float64)
    return table.reindex(columns=list(KPI_COLUMNS))


def kpi_value(kpis: pd.DataFrame, kpi: str, scope: str | None = None) -> float:
    """One KPI's value (the first scope when `scope` is None); NaN when absent or NULL."""
    rows = kpis[kpis["kpi"] == kpi]
    if scope is not None:
        rows = rows[rows["scope"] == scope]
    return _float(rows["value"].iloc[0]) if len(rows) else math.nan


def kpi_text(kpis: pd.DataFrame, kpi: str, scope: str, spec: str) -> str:
    """One KPI for a sentence: the number, or "n/a (its detail)" when it has none."""
    value = kpi_value(kpis, kpi, scope)
    if math.isfinite(value):
        return format(value, spec)
    rows = kpis[(kpis["kpi"] == kpi) & (kpis["scope"] == scope)]
    detail = str(rows["detail"].iloc[0]) if len(rows) and pd.notna(rows["detail"].iloc[0]) else ""
    return risk.text(None, detail, spec)


#: KPIs shown per stage in the report's stage-duration chart, not in its KPI table.
STAGE_KPIS = frozenset({"stage_duration_s", "stage_baseline_s", "stage_duration_ratio"})


def kpi_display(kpis: pd.DataFrame, per_stage: bool = True) -> pd.DataFrame:
    """The KPI table for a report: kpi, scope, value (as text, in its unit), detail.

    KPIs with a value come first, those without one ("n/a") after, with the reason in `detail`.
    `per_stage=False` leaves out the three per-stage duration KPIs (the report charts them).
    """
    shown = kpis if per_stage else kpis[~kpis["kpi"].isin(STAGE_KPIS)]
    shown = shown[["kpi", "scope", "value", "unit", "detail"]].copy()
    shown["value"] = [_in_unit(v, u) for v, u in zip(shown["value"], shown["unit"], strict=True)]
    measured = shown["value"] != "n/a"
    shown = pd.concat([shown[measured], shown[~measured]])
    return shown.drop(columns="unit").reset_index(drop=True)


def _in_unit(value: float, unit: str) -> str:
    """A KPI value as a reader expects it: shares and returns in %, durations in s/min, money in USD."""
    value = _float(value)
    if not math.isfinite(value):
        return "n/a"
    if unit in ("share", "return"):
        return f"{value:.1%}" if unit == "share" else f"{value:+.2%}"
    if unit == "seconds":
        return f"{value:,.1f} s"
    if unit == "minutes":
        return f"{value:,.0f} min" if abs(value) >= 10 else f"{value:.1f} min"
    if unit in ("count", "sessions", "flag"):
        return f"{value:,.0f}"
    if unit == "usd":
        return f"{value:,.0f} USD"
    return _number(value) + ("" if unit in ("ratio", "") else f" {unit}")


# --------------------------------------------------------------------------------------------
# Sentences and charts


def pipeline_sentence(kpis: pd.DataFrame, baseline_runs: int) -> str:
    rate, streak = kpi_value(kpis, "success_rate", PIPELINE), int(kpi_value(kpis, "consecutive_failures", PIPELINE))
    if not math.isfinite(rate):
        head = "No pipeline run has finished yet, so there is no success rate."
    else:
        head = f"{_pct(rate)} of the last runs succeeded (up to {baseline_runs} finished runs are counted)."
    tail = "no failure streak is open" if streak == 0 else f"{streak} run(s) in a row have failed"
    return f"{head} Right now {tail}."


def durations_sentence(durations: pd.DataFrame, slow_ratio: float | None) -> str:
    measured = durations.dropna(subset=["ratio"])
    if durations.empty:
        return "No stage of this run has finished yet, so there is nothing to compare."
    if measured.empty:
        return (
            f"{len(durations)} stage(s) finished in this run, but none has {MIN_BASELINE} earlier successful "
            "runs yet to compare with: the bars show this run's durations only."
        )
    worst = measured.loc[measured["ratio"].idxmax()]
    limit = f" (the stage_slow rule fires above {slow_ratio:g}x)" if slow_ratio else ""
    return (
        f"Against their baselines, {len(measured)} stage(s) ran at a median of {measured['ratio'].median():.2f}x "
        f"their usual time; the slowest relative to its history is **{md_escape(worst['stage'])}** at "
        f"{worst['ratio']:.2f}x{limit}."
    )


def durations_chart(durations: pd.DataFrame, slow_ratio: float | None = None) -> Figure | None:
    """This run's duration per stage next to its baseline median, stages slower than
    `slow_ratio` times their baseline in red (None: no stage finished)."""
    from matplotlib.patches import Patch

    from bentley import charts

    shown = durations.dropna(subset=["duration_s"])
    if shown.empty:
        return None
    positions = np.arange(len(shown))
    slow = (shown["ratio"] > slow_ratio).to_numpy() if slow_ratio else np.zeros(len(shown), dtype=bool)
    baseline = shown["baseline_median_s"].notna().any()
    fig, ax = charts.figure(9, 0.32 * len(shown) + 1.2, left=1.0, right=2.3)
    height = 0.4 if baseline else 0.7
    ax.barh(
        positions - (0.2 if baseline else 0.0),
        shown["duration_s"],
        height=height,
        color=np.where(slow, "tab:red", "tab:blue"),
    )
    if baseline:
        ax.barh(positions + 0.2, shown["baseline_median_s"].fillna(0.0), height=0.4, color="tab:gray")
    ax.set_yticks(positions, shown["stage"])
    ax.invert_yaxis()
    ax.grid(axis="y", visible=False)
    ax.set_title("Stage durations: this run" + (" against the median of earlier successful runs" if baseline else ""))
    ax.set_xlabel("Seconds")
    handles = [Patch(color="tab:blue", label="this run")]
    if baseline:
        handles.append(Patch(color="tab:gray", label=f"baseline median\n(needs {MIN_BASELINE}+ runs)"))
    if slow.any():
        handles.insert(1, Patch(color="tab:red", label=f"above {slow_ratio:g}x\nits baseline"))
    charts.legend_outside(ax, handles, [str(h.get_label()) for h in handles])
    return fig


_STATUS_COLOURS = {
    "success": "tab:green",
    "failed": "tab:red",
    "crashed": "darkred",
    "running": "tab:blue",
    "interrupted": "tab:orange",
}


#: Fewer finished runs than this: no run-history chart (a sentence says so instead).
MIN_CHARTED_RUNS = 3


def run_history_chart(outcomes: pd.DataFrame, last_n: int, timezone: str) -> Figure | None:
    """The last `last_n` runs: duration bars coloured by status, start times in `timezone`.

    None while fewer than `MIN_CHARTED_RUNS` runs have a duration (a chart of one or two bars
    says less than `pipeline_sentence`); the figure is as wide as its runs need."""
    from matplotlib.patches import Patch

    from bentley import charts

    shown = outcomes.tail(last_n).reset_index(drop=True)
    if shown.empty or shown["duration_s"].notna().sum() < MIN_CHARTED_RUNS:
        return None
    status = [
        ("failed" if o == "failed" and s not in FAILED_STATUSES else s) or "running"
        for s, o in zip(shown["status"], shown["outcome"], strict=True)
    ]
    heights = shown["duration_s"].fillna(0.0).to_numpy(dtype=np.float64)
    width = min(9.0, 3.4 + 0.42 * len(shown))
    fig, ax = charts.figure(width, 3.4, left=0.8, bottom=0.95, right=1.4)
    ax.bar(np.arange(len(shown)), heights, width=0.7, color=[_STATUS_COLOURS.get(s, "tab:gray") for s in status])
    labels = [f"{t.tz_convert(timezone):%m-%d %H:%M}" if pd.notna(t) else "this run" for t in shown["started_at"]]
    step = max(1, len(shown) // 10)
    ax.set_xticks(np.arange(len(shown))[::step], labels[::step], rotation=30, ha="right")
    ax.set_xlim(-0.6, len(shown) - 0.4)
    ax.grid(axis="x", visible=False)
    used = [s for s in _STATUS_COLOURS if s in status] + sorted(set(status) - set(_STATUS_COLOURS))
    handles = [Patch(color=_STATUS_COLOURS.get(s, "tab:gray"), label=s) for s in used]
    charts.legend_outside(ax, handles, used)
    ax.set_title(f"The last {len(shown)} pipeline runs: duration and status")
    ax.set_xlabel(f"Run start ({timezone})")
    ax.set_ylabel("Seconds (0: still running)")
    return fig


def history_sentence(outcomes: pd.DataFrame, last_n: int) -> str:
    """The run-history chart in words, or why there is none."""
    shown = outcomes.tail(last_n)
    timed = shown["duration_s"].dropna() if len(shown) else pd.Series(dtype=float)
    if len(timed) < MIN_CHARTED_RUNS:
        return (
            f"{len(timed)} finished run(s) with a duration so far: the run-history chart starts at {MIN_CHARTED_RUNS}."
        )
    failed = int(shown["outcome"].eq("failed").sum()) if "outcome" in shown else 0
    return (
        f"The last {len(timed)} finished runs took {timed.median():,.0f} s at the median "
        f"(shortest {timed.min():,.0f} s: usually a run whose stages were up to date, longest "
        f"{timed.max():,.0f} s); {failed} of the {len(shown)} runs shown failed."
    )


def _date_axis(ax: Any, dates: pd.Series) -> None:
    """Session dates as YYYY-MM-DD: every date when there are few, else matplotlib's choice."""
    import matplotlib.dates as mdates

    unique = pd.DatetimeIndex(pd.to_datetime(dates).dropna().unique()).sort_values()
    if len(unique) <= 12:
        ax.set_xticks(unique)
    else:
        ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=10))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    for label in ax.get_xticklabels():
        label.set_rotation(30)
        label.set_horizontalalignment("right")


def model_sentence(trend: pd.DataFrame, max_degradation: float) -> str:
    if trend.empty:
        return "No champion model has been monitored yet (the train stage writes `model_monitoring` once one exists)."
    last = trend.iloc[-1]
    flag = "requires retraining" if bool(last["retraining_required"]) else "does not require retraining"
    psi, drifted = _float(last["max_psi"]), _float(last["drifted_features"])
    drift_text = (
        ""
        if not math.isfinite(psi)
        else (
            f" Its largest input drift is a PSI of {psi:.2f}, with {int(drifted) if math.isfinite(drifted) else 0} "
            f"feature(s) above {drift.SIGNIFICANT:g} (a significant shift)."
        )
    )
    return (
        f"The latest check ({last['as_of']:%Y-%m-%d}) puts **{md_escape(last['model_name'])}** at "
        f"{_pct(_float(last['recent_accuracy']))} recent accuracy against {_pct(_float(last['holdout_accuracy']))} "
        f"on its holdout, a degradation of {_pct(_float(last['degradation']))} (limit {max_degradation:.0%}); "
        f"the model {flag}.{drift_text}"
    )


def model_trend_chart(trend: pd.DataFrame) -> Figure | None:
    """Recent and holdout accuracy over the monitoring checks (None: no checks yet)."""
    from matplotlib.ticker import PercentFormatter

    from bentley import charts

    if trend.empty:
        return None
    fig, ax = charts.figure(9, 3.4, bottom=0.95)
    for i, (name, rows) in enumerate(trend.groupby("model_name", sort=True)):
        colour = charts.COLOURS[i % len(charts.COLOURS)]
        ax.plot(rows["as_of"], rows["recent_accuracy"], marker="o", color=colour, label=f"{name}:\nrecent")
        ax.plot(rows["as_of"], rows["holdout_accuracy"], linestyle="--", color=colour, label=f"{name}:\nholdout")
        flagged = rows[rows["retraining_required"].fillna(False).astype(bool)]
        if len(flagged):
            ax.scatter(
                flagged["as_of"],
                flagged["recent_accuracy"],
                color="tab:red",
                zorder=3,
                s=40,
                label="retraining\nrequired",
            )
    ax.set_title("Champion accuracy: latest labelled sessions against its holdout")
    ax.set_xlabel("As of")
    ax.set_ylabel("Accuracy")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    charts.legend_outside(ax)
    _date_axis(ax, trend["as_of"])
    return fig


def paper_sentence(kpis: pd.DataFrame, portfolio: str) -> str:
    """The paper book's performance so far (Markdown; the portfolio name is escaped, not code:
    a code span shows backslashes as written, and math is parsed before code spans)."""
    n = kpis[(kpis["kpi"] == "cumulative_return") & (kpis["scope"] == portfolio)]
    name = md_escape(repr(portfolio))
    if n.empty:
        return f"The paper portfolio {name} has no booked session yet."
    cum, last = kpi_value(kpis, "cumulative_return", portfolio), kpi_value(kpis, "latest_daily_return", portfolio)
    if not math.isfinite(cum):
        return f"The paper portfolio {name} has no daily return yet (its first session only sets the base)."
    return (
        f"The paper portfolio {name} returned {cum:+.2%} so far, with a max drawdown of "
        f"{kpi_text(kpis, 'max_drawdown', portfolio, '.2%')}; its latest session returned "
        f"{_pct(last) if math.isfinite(last) else 'n/a'}. Its Sharpe ratio is "
        f"{kpi_text(kpis, 'sharpe_ratio', portfolio, '.2f')}."
    )


def equity_chart(portfolio_values: pd.DataFrame, portfolio: str) -> Figure | None:
    """The paper book's equity by session (None: fewer than two sessions, nothing to draw)."""
    from matplotlib.ticker import StrMethodFormatter

    from bentley import charts

    if len(portfolio_values) < 2:
        return None
    rows = portfolio_values.sort_values("date")
    fig, ax = charts.figure(9, 3.4, legend=False, left=1.0, bottom=0.95)
    ax.plot(pd.to_datetime(rows["date"]), rows["equity"], color="tab:blue", marker="o" if len(rows) <= 30 else None)
    ax.set_title(f"Paper portfolio {portfolio}: equity by session")
    ax.set_xlabel("Session")
    ax.set_ylabel("Equity (USD)")
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    _date_axis(ax, rows["date"])
    return fig


def _number(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.4g}"


def resources_sentence(kpis: pd.DataFrame) -> str:
    """Host use in words: CPU others keep busy (sustained), memory, and the disk as `df` shows it."""
    cpu, memory, disk = (kpi_value(kpis, name, HOST) for name in ("cpu_use", "memory_use", "disk_use"))
    rows = kpis[(kpis["kpi"] == "cpu_use") & (kpis["scope"] == HOST)]
    who = str(rows["detail"].iloc[0]) if len(rows) and pd.notna(rows["detail"].iloc[0]) else ""
    busiest = f" (busiest: {md_escape(who.split('busiest: ', 1)[1])})" if "busiest: " in who else ""
    return (
        f"Other processes keep {_pct(cpu)} of the CPU busy, sustained over the last minutes{busiest}; memory "
        f"is {_pct(memory)} in use and the outputs disk {_pct(disk)} full (as `df` and `runner health` "
        "count it)."
    )
