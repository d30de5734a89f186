"""Monitor KPIs on small, hand-checkable ledgers with a frozen `now`: run outcomes and failure
streaks, stage baselines, freshness, the model trend, paper metrics against empyrical, the table."""

from __future__ import annotations

import datetime as dt
import math
import time
from types import SimpleNamespace

import empyrical as ep
import matplotlib
import numpy as np
import pandas as pd
import pytest

from bentley.analytics.risk import per_period_rate
from bentley.config import load_config
from bentley.monitoring import kpis
from bentley.monitoring.kpis import History, Resources
from bentley.stage import StageParams

matplotlib.use("Agg")

NOW = dt.datetime(2025, 6, 2, 20, 0, tzinfo=dt.UTC)
CURRENT = "run-now"
RESOURCES = Resources(cpu=0.25, memory=0.5, disk=0.75, disk_path="/outputs")


def ts(minutes_ago: float) -> pd.Timestamp:
    return pd.Timestamp(NOW) - pd.Timedelta(minutes=minutes_ago)


def ledger(statuses: list[str | None], current: str = CURRENT) -> pd.DataFrame:
    """pipeline_runs: earlier runs one hour apart (oldest first), then the current run, running."""
    rows = [
        {
            "run_id": f"r{i}",
            "status": s,
            "started_at": ts(60 * (len(statuses) - i) + 30),
            "ended_at": ts(60 * (len(statuses) - i) + 20),
            "duration_s": 600.0,
        }
        for i, s in enumerate(statuses)
    ]
    rows.append({"run_id": current, "status": "running", "started_at": ts(10), "ended_at": None, "duration_s": None})
    frame = pd.DataFrame(rows)
    frame["started_at"] = pd.to_datetime(frame["started_at"], utc=True)
    frame["ended_at"] = pd.to_datetime(frame["ended_at"], utc=True)
    return frame


def stage_rows(rows: list[tuple]) -> pd.DataFrame:
    """stage_runs from (run_id, stage, attempt, status, duration_s, started minutes ago)."""
    frame = pd.DataFrame(rows, columns=["run_id", "stage", "attempt", "status", "duration_s", "ago"])
    frame["started_at"] = [ts(a) for a in frame["ago"]]
    frame["ended_at"] = [
        ts(a) + pd.Timedelta(seconds=d) for a, d in zip(frame["ago"], frame["duration_s"], strict=True)
    ]
    return frame.drop(columns="ago")


NO_STAGES = stage_rows([])


@pytest.fixture(scope="module")
def params() -> StageParams:
    cfg = load_config("default", overrides=["monitor.baseline_runs=4"])
    return StageParams(monitor=cfg.monitor, workflow=cfg.workflow, ml=cfg.ml, trade=cfg.trade, risk=cfg.risk)


# --------------------------------------------------------------------------------------------
# Run outcomes


def test_failure_streak_counts_current_run_and_failed_or_crashed_runs_before_it():
    runs = ledger(["failed", "success", "failed", "crashed", "interrupted", "failed"])
    stages = stage_rows([(CURRENT, "ingest", 1, "success", 3.0, 9), (CURRENT, "etl", 1, "failed", 2.0, 8)])
    outcomes = kpis.run_outcomes(runs, stages, CURRENT)
    # current (failed so far) + failed + (interrupted: no verdict) + crashed + failed, then a success
    assert kpis.consecutive_failures(outcomes) == 4
    assert outcomes["outcome"].tolist() == ["failed", "success", "failed", "failed", None, "failed", "failed"]


def test_a_success_breaks_the_streak_and_a_healthy_current_run_adds_nothing():
    runs = ledger(["failed", "failed", "success", "failed"])
    stages = stage_rows([(CURRENT, "ingest", 1, "success", 3.0, 9)])
    assert kpis.consecutive_failures(kpis.run_outcomes(runs, stages, CURRENT)) == 1
    assert kpis.consecutive_failures(kpis.run_outcomes(ledger(["failed", "success"]), stages, CURRENT)) == 0


def test_a_retried_stage_counts_by_its_last_attempt_and_the_monitor_rows_not_at_all():
    runs = ledger(["failed"])
    stages = stage_rows(
        [
            (CURRENT, "ingest", 1, "failed", 3.0, 9),
            (CURRENT, "ingest", 2, "success", 3.0, 8),
            (CURRENT, "monitor", 1, "failed", 1.0, 1),
        ]
    )
    outcomes = kpis.run_outcomes(runs, stages, CURRENT)
    assert outcomes.loc[outcomes["current"], "outcome"].tolist() == [None]
    assert kpis.consecutive_failures(outcomes) == 1


def test_a_current_run_missing_from_the_ledger_is_added_last():
    runs = ledger(["failed", "failed"]).iloc[:-1]  # the monitor run on its own: no ledger row
    stages = stage_rows([("solo", "etl", 1, "failed", 1.0, 2)])
    outcomes = kpis.run_outcomes(runs, stages, "solo")
    assert outcomes["run_id"].tolist() == ["r0", "r1", "solo"]
    assert kpis.consecutive_failures(outcomes) == 3


def test_success_rate_counts_the_last_n_runs_with_a_verdict():
    runs = ledger(["failed", "success", "interrupted", "crashed", "success", "success"])
    outcomes = kpis.run_outcomes(runs, NO_STAGES, CURRENT)
    assert kpis.success_rate(outcomes, 4) == (0.75, 4)  # success, crashed, success, success
    assert kpis.success_rate(outcomes, 10) == (0.6, 5)
    rate, counted = kpis.success_rate(kpis.run_outcomes(ledger([]), NO_STAGES, CURRENT), 4)
    assert math.isnan(rate) and counted == 0


# --------------------------------------------------------------------------------------------
# Stage durations


def test_stage_ratio_against_the_median_of_the_last_successful_executions():
    rows = [(f"r{i}", "etl", 1, "success", d, 600 - 60 * i) for i, d in enumerate([100.0, 10.0, 20.0, 30.0, 40.0])]
    rows += [
        ("r5", "etl", 1, "cached", 0.1, 200),  # no work done: not a baseline
        ("r6", "etl", 1, "failed", 500.0, 150),  # not successful
        ("r7", "monitor", 1, "success", 1.0, 100),
        (CURRENT, "etl", 1, "success", 75.0, 5),
        (CURRENT, "monitor", 1, "running", 0.0, 1),  # its own row: left out
        (CURRENT, "ingest", 1, "cached", 0.2, 9),
    ]
    table = kpis.stage_durations(stage_rows(rows), CURRENT, baseline_runs=4).set_index("stage")
    assert list(table.index) == ["ingest", "etl"]
    # last 4 successes: 10, 20, 30, 40 (the 100 is older) -> median 25
    assert table.loc["etl", "baseline_median_s"] == 25.0
    assert table.loc["etl", "baseline_n"] == 4
    assert table.loc["etl", "ratio"] == 3.0
    assert math.isnan(table.loc["ingest", "ratio"])  # cached in this run, and no baseline


def test_stage_ratio_needs_three_baseline_executions():
    rows = [
        ("r0", "etl", 1, "success", 10.0, 300),
        ("r1", "etl", 1, "success", 10.0, 200),
        (CURRENT, "etl", 1, "success", 50.0, 5),
    ]
    table = kpis.stage_durations(stage_rows(rows), CURRENT, baseline_runs=20)
    assert table["baseline_n"].tolist() == [2]
    assert math.isnan(table["ratio"].iloc[0])
    rows.append(("r2", "etl", 1, "success", 10.0, 100))
    assert kpis.stage_durations(stage_rows(rows), CURRENT, baseline_runs=20)["ratio"].tolist() == [5.0]


def test_no_stage_rows_give_an_empty_table():
    assert kpis.stage_durations(NO_STAGES, CURRENT, 20).empty


# --------------------------------------------------------------------------------------------
# Freshness


def test_minutes_since_the_last_successful_or_cached_ingest():
    stages = stage_rows(
        [
            ("r0", "ingest", 1, "success", 60.0, 240),  # ended 239 minutes ago
            ("r1", "ingest", 1, "cached", 60.0, 121),  # ended 120 minutes ago
            ("r2", "ingest", 1, "failed", 60.0, 31),  # failures do not refresh anything
            ("r2", "etl", 1, "success", 60.0, 11),
        ]
    )
    minutes, last = kpis.minutes_since_ingest(stages, NOW)
    assert minutes == pytest.approx(120.0)
    assert last == ts(120)
    assert math.isnan(kpis.minutes_since_ingest(NO_STAGES, NOW)[0])


def test_session_lag_counts_exchange_sessions():
    monday = dt.date(2025, 6, 2)
    assert kpis.session_lag(dt.date(2025, 5, 29), monday) == 2  # Fri 30 May and Mon 2 June
    assert kpis.session_lag(dt.date(2025, 5, 30), monday) == 1  # the weekend is no session
    assert kpis.session_lag(monday, monday) == 0
    assert kpis.session_lag(dt.date(2025, 6, 3), monday) == 0
    assert math.isnan(kpis.session_lag(None, monday))


# --------------------------------------------------------------------------------------------
# Model


def monitoring_rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_id": ["r1", "r0", "r2"],
            "model_name": ["m", "m", "m"],
            "model_version": ["1", "1", "2"],
            "as_of": pd.to_datetime(["2025-05-01", "2025-05-01", "2025-06-02"]),
            "holdout_accuracy": [0.60, 0.60, 0.62],
            "recent_accuracy": [0.57, 0.59, 0.50],
            "degradation": [0.05, 1 - 0.59 / 0.60, 1 - 0.50 / 0.62],
            "n_recent": [105, 105, 105],
            "max_psi": [0.05, 0.04, 0.31],
            "drifted_features": [0, 0, 2],
            "retraining_required": [False, False, True],
            "reason": ["ok", "ok", "accuracy dropped"],
        }
    )


def test_model_trend_orders_by_as_of_then_run_start():
    runs = ledger(["success", "success", "success"])  # r0 started before r1
    trend = kpis.model_trend(monitoring_rows(), runs)
    assert trend["run_id"].tolist() == ["r0", "r1", "r2"]
    latest = kpis.latest_model_rows(trend)
    assert latest["run_id"].tolist() == ["r2"]


def test_model_kpis_take_the_latest_check_and_none_without_a_champion():
    history = History(ledger(["success"] * 3), NO_STAGES, model_monitoring=monitoring_rows())
    rows = pd.DataFrame(kpis.model_kpis(history)).set_index("kpi")
    assert rows.loc["recent_accuracy", "value"] == 0.50
    assert rows.loc["degradation", "value"] == pytest.approx(0.12 / 0.62)
    assert rows.loc["retraining_required", "value"] == 1.0
    assert rows.loc["retraining_required", "detail"] == "accuracy dropped"
    assert set(rows["scope"]) == {"m"}
    empty = History(ledger([]), NO_STAGES, model_monitoring=monitoring_rows().iloc[:0])
    assert kpis.model_kpis(empty) == []


# --------------------------------------------------------------------------------------------
# Paper book


RETURNS = [0.01, -0.02, 0.015, -0.03, 0.005, 0.02, -0.01, 0.012]


def book(returns: list[float]) -> pd.DataFrame:
    dates = pd.bdate_range("2025-05-01", periods=len(returns) + 1)
    daily = [np.nan, *returns]
    equity = 100_000 * np.cumprod([1.0 + (0.0 if np.isnan(r) else r) for r in daily])
    return pd.DataFrame({"portfolio": "paper", "date": dates, "equity": equity, "daily_return": daily})


@pytest.mark.parametrize("rf_annual", [0.0, 0.02])
def test_paper_sharpe_drawdown_and_return_match_empyrical(rf_annual):
    perf = kpis.paper_performance(book(RETURNS), rf_annual)
    series = pd.Series(RETURNS, index=pd.bdate_range("2025-05-02", periods=len(RETURNS)))
    assert perf["sharpe_ratio"] == pytest.approx(
        ep.sharpe_ratio(series, risk_free=per_period_rate(rf_annual)), rel=1e-12
    )
    assert perf["max_drawdown"] == pytest.approx(ep.max_drawdown(series), rel=1e-12)
    assert perf["cumulative_return"] == pytest.approx(ep.cum_returns_final(series), rel=1e-12)
    assert perf["latest_daily_return"] == 0.012
    assert perf["n_returns"] == 8


def test_paper_metrics_are_nan_with_too_few_returns():
    first_day = kpis.paper_performance(book([]), 0.0)
    assert all(math.isnan(first_day[k]) for k in ("cumulative_return", "sharpe_ratio", "max_drawdown"))
    assert first_day["equity"] == 100_000
    one = kpis.paper_performance(book([-0.05]), 0.0)
    assert one["cumulative_return"] == pytest.approx(-0.05)
    assert one["max_drawdown"] == pytest.approx(-0.05)  # from the starting equity
    assert math.isnan(one["sharpe_ratio"])


def test_a_young_books_sharpe_kpi_is_na_with_the_reason(params):
    """Eight returns: the Sharpe ratio is computable (empyrical has one) but not published."""
    perf = kpis.paper_performance(book(RETURNS), 0.02)
    assert math.isfinite(perf["sharpe_ratio"])
    rows = kpis.paper_kpis(
        History(ledger([]), NO_STAGES, portfolio_values=book(RETURNS)), "paper", 0.02, params.risk.min_observations
    )
    table = pd.DataFrame(rows).set_index("kpi")
    assert math.isnan(table.loc["sharpe_ratio", "value"])
    assert table.loc["sharpe_ratio", "detail"] == "8 daily returns: too few for a Sharpe ratio; 63 needed"
    assert table.loc["cumulative_return", "value"] == pytest.approx(perf["cumulative_return"], rel=1e-12)
    assert table.loc["max_drawdown", "value"] == pytest.approx(perf["max_drawdown"], rel=1e-12)
    assert table.loc["cumulative_return", "detail"] == "8 daily return(s), risk-free 2.00% a year"
    full = pd.DataFrame([{"run_id": "r", **row} for row in rows])
    sentence = kpis.paper_sentence(full, "paper")
    assert sentence.endswith("Its Sharpe ratio is n/a (8 daily returns: too few for a Sharpe ratio; 63 needed).")
    assert kpis.kpi_display(full).set_index("kpi").loc["sharpe_ratio", "value"] == "n/a"
    one = kpis.paper_kpis(
        History(ledger([]), NO_STAGES, portfolio_values=book([-0.05])), "paper", 0.0, params.risk.min_observations
    )
    drawdown = pd.DataFrame(one).set_index("kpi").loc["max_drawdown"]
    assert math.isnan(drawdown["value"]) and drawdown["detail"].startswith("1 daily return: too few")


def test_a_book_with_enough_returns_publishes_its_sharpe(params):
    long_book = book(list(np.tile(RETURNS, 8)))  # 64 returns
    rows = pd.DataFrame(
        kpis.paper_kpis(
            History(ledger([]), NO_STAGES, portfolio_values=long_book), "paper", 0.02, params.risk.min_observations
        )
    ).set_index("kpi")
    assert rows.loc["sharpe_ratio", "value"] == pytest.approx(kpis.paper_performance(long_book, 0.02)["sharpe_ratio"])
    assert rows.loc["sharpe_ratio", "detail"] == "64 daily return(s), risk-free 2.00% a year"
    sentence = kpis.paper_sentence(rows.reset_index().assign(run_id="r"), "paper")
    assert f"Its Sharpe ratio is {rows.loc['sharpe_ratio', 'value']:.2f}." in sentence


# --------------------------------------------------------------------------------------------
# The table


def test_kpi_table_has_the_warehouse_columns_and_every_group(params):
    stages = stage_rows(
        [
            *[(f"r{i}", "etl", 1, "success", 10.0, 300 - 60 * i) for i in range(3)],
            ("r2", "ingest", 1, "success", 5.0, 95),
            (CURRENT, "etl", 1, "success", 20.0, 5),
        ]
    )
    history = History(
        ledger(["success", "failed", "success"]),
        stages,
        model_monitoring=monitoring_rows(),
        portfolio_values=book(RETURNS),
        dataset_dates={"prices": dt.date(2025, 5, 30), "news": None},
    )
    table = kpis.kpi_table(
        history, params, run_id=CURRENT, logical_date=dt.date(2025, 6, 2), now=NOW, resources=RESOURCES
    )
    assert tuple(table.columns) == kpis.KPI_COLUMNS
    assert not table.duplicated(["run_id", "kpi", "scope"]).any()
    assert (table["run_id"] == CURRENT).all() and (table["measured_at"] == pd.Timestamp(NOW)).all()
    value = table.set_index(["kpi", "scope"])["value"]
    assert value[("success_rate", "pipeline")] == pytest.approx(2 / 3)
    assert value[("consecutive_failures", "pipeline")] == 0
    assert value[("stage_duration_ratio", "etl")] == 2.0
    assert value[("minutes_since_ingest", "ingest")] == pytest.approx(95 - 5 / 60)
    assert value[("dataset_lag_sessions", "prices")] == 1
    assert math.isnan(value[("dataset_lag_sessions", "news")])
    assert value[("degradation", "m")] == pytest.approx(0.12 / 0.62)
    assert value[("latest_daily_return", "paper")] == 0.012
    assert (value[("cpu_use", "host")], value[("memory_use", "host")], value[("disk_use", "host")]) == (0.25, 0.5, 0.75)


def test_first_run_ever_gives_a_table_and_no_chart_errors(params):
    history = History(
        pd.DataFrame(columns=["run_id", "status", "started_at", "ended_at", "duration_s"]),
        NO_STAGES,
        dataset_dates={"prices": None, "news": None},
    )
    table = kpis.kpi_table(
        history, params, run_id=CURRENT, logical_date=dt.date(2025, 6, 2), now=NOW, resources=RESOURCES
    )
    assert math.isnan(kpis.kpi_value(table, "success_rate"))
    assert kpis.kpi_value(table, "consecutive_failures") == 0
    assert kpis.durations_chart(kpis.stage_durations(NO_STAGES, CURRENT, 4)) is None
    assert kpis.model_trend_chart(kpis.model_trend(pd.DataFrame())) is None
    assert kpis.equity_chart(pd.DataFrame(), "paper") is None
    assert "No stage" in kpis.durations_sentence(kpis.stage_durations(NO_STAGES, CURRENT, 4), 1.5)
    assert "No pipeline run" in kpis.pipeline_sentence(table, 4)
    outcomes = kpis.run_outcomes(history.pipeline_runs, NO_STAGES, CURRENT)
    assert kpis.run_history_chart(outcomes, 20, "UTC") is None, "the current run alone, still going: nothing to chart"


def test_kpi_table_refuses_a_naive_now(params):
    with pytest.raises(ValueError, match="timezone-aware"):
        kpis.kpi_table(
            History(ledger([]), NO_STAGES),
            params,
            run_id=CURRENT,
            logical_date=dt.date(2025, 6, 2),
            now=NOW.replace(tzinfo=None),
            resources=RESOURCES,
        )


class FakeProcess:
    """A psutil.Process with a fixed CPU use (percent of one core) and CPU seconds so far."""

    def __init__(self, pid: int, percent: float, cpu_s: float = 0.0, name: str = "python", cmd: tuple = ()) -> None:
        self.pid, self.percent, self.cpu_s = pid, percent, cpu_s
        self.info = {"name": name, "username": "ci", "cmdline": list(cmd)}
        self.started = time.time() - 100.0  # alive 100 s: all its CPU seconds fall in the 5-minute window
        self.kids: list[FakeProcess] = []
        self.up: FakeProcess | None = None

    def parent(self) -> FakeProcess | None:
        return self.up

    def children(self, recursive: bool = False) -> list[FakeProcess]:
        return self.kids

    def cpu_percent(self, interval: float | None = None) -> float:
        return self.percent

    def cpu_times(self) -> SimpleNamespace:
        return SimpleNamespace(user=self.cpu_s, system=0.0, children_user=0.0, children_system=0.0)

    def create_time(self) -> float:
        return self.started


def test_host_resources_are_the_shares_psutil_and_df_give(tmp_path, monkeypatch, params):
    """A crafted host: 2 cores, 80% busy now of which this pipeline (runner + kernel) uses 20% of
    one core; a 5-minute load of 1.2 of which the pipeline's 60 CPU seconds are 0.2; memory
    37.5% used; a disk with 600 used, 200 available and 200 reserved for root."""
    import os
    import shutil

    import psutil

    from bentley.monitoring import resources

    runner, kernel = FakeProcess(1, 0.0, cpu_s=30.0), FakeProcess(2, 20.0, cpu_s=30.0)
    runner.kids, kernel.up = [kernel], runner
    other = FakeProcess(3, 150.0, name="stress", cmd=("/usr/bin/stress", "--cpu", "2"))
    monkeypatch.setattr(psutil, "Process", lambda: kernel)
    monkeypatch.setattr(psutil, "process_iter", lambda attrs: iter([runner, kernel, other]))
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval: 80.0)
    monkeypatch.setattr(psutil, "cpu_count", lambda: 2)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(percent=37.5))
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 1.2, 9.0))
    usage = SimpleNamespace(total=1000, used=600, free=200)
    real_disk_use = resources.disk_use
    monkeypatch.setattr(resources, "disk_use", lambda path: real_disk_use(path, lambda where: usage))
    monkeypatch.setattr(shutil, "disk_usage", lambda where: pytest.fail("the crafted disk was not used"))

    measured = kpis.host_resources(tmp_path / "not" / "created", cpu_interval_s=0.05)
    # sample: (80 - 20 / 2 cores) / 100 = 0.70; sustained: 1.2 / 2 - 60 s / (300 s * 2) = 0.50; the lower
    assert measured.cpu == pytest.approx(0.50, abs=1e-12)
    assert measured.cpu_detail == (
        "used by processes other than this pipeline: 70% now, 50% over 5 min; busiest: stress --cpu 2 (pid 3, ci) 150%"
    )
    assert measured.memory == 0.375
    assert measured.disk == 0.75  # as df: used / (used + available), not (total - free) / total = 0.8
    assert measured.disk_path == str(tmp_path / "not" / "created")
    table = kpis.kpi_table(
        History(ledger([]), NO_STAGES), params, run_id=CURRENT, logical_date=NOW.date(), now=NOW, resources=measured
    )
    value = table.set_index(["kpi", "scope"])["value"]
    assert value[("cpu_use", "host")] == pytest.approx(0.50, abs=1e-12)
    assert (value[("memory_use", "host")], value[("disk_use", "host")]) == (0.375, 0.75)


# --------------------------------------------------------------------------------------------
# Through a real (SQLite) warehouse


def test_load_history_stops_data_at_the_logical_date_and_kpis_round_trip(tmp_path, params):
    from bentley.warehouse import Warehouse

    warehouse = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    warehouse.upsert("portfolio_values", book(RETURNS))  # sessions 2025-05-01 .. 2025-05-13
    warehouse.upsert(
        "prices",
        pd.DataFrame({"ticker": "A", "date": pd.to_datetime(["2025-05-08", "2025-05-13"]), "adj_close": [1.0, 1.1]}),
    )
    warehouse.upsert("model_monitoring", monitoring_rows())
    logical = dt.date(2025, 5, 9)
    history = kpis.load_history(warehouse, params, logical)
    assert pd.to_datetime(history.portfolio_values["date"]).max() == pd.Timestamp("2025-05-09")
    assert history.dataset_dates == {"prices": dt.date(2025, 5, 8), "news": None}
    assert history.model_monitoring["run_id"].tolist() == ["r0", "r1"]  # the June check is later
    assert history.pipeline_runs.empty and history.stage_runs.empty

    table = kpis.kpi_table(history, params, run_id=CURRENT, logical_date=logical, now=NOW, resources=RESOURCES)
    assert warehouse.upsert("monitor_kpis", table) == len(table)
    stored = warehouse.read("monitor_kpis", where={"run_id": CURRENT})
    assert len(stored) == len(table)
    assert stored.set_index(["kpi", "scope"]).loc[("dataset_lag_sessions", "prices"), "value"] == 1


def test_a_past_run_is_compared_with_executions_before_it_only():
    rows = [(f"r{i}", "etl", 1, "success", 10.0, 500 - 60 * i) for i in range(3)]
    rows += [("old", "etl", 1, "success", 30.0, 600), ("later", "etl", 1, "success", 99.0, 50)]
    table = kpis.stage_durations(stage_rows(rows), "r2", baseline_runs=20)
    assert table["baseline_n"].tolist() == [3]  # old, r0, r1; not the later run
    assert table["baseline_median_s"].tolist() == [10.0]
