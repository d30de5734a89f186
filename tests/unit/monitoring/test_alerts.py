"""Alert rules on crafted KPI tables (each fires above its threshold, not just below it, never when
disabled), alert episodes (dedup, re-notification, resolution), and the webhook against a real
local HTTP server: JSON payload, retries on 5xx/429/timeouts, none on 4xx, no URL in the logs."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import logging
import math
import random
import socket
import threading
import time
from collections.abc import Iterator
from typing import get_args

import pandas as pd
import pytest
import requests

from bentley.config import AlertRuleName, load_config
from bentley.monitoring import alerts, kpis
from bentley.monitoring.kpis import History, Resources
from bentley.stage import StageParams

NOW = dt.datetime(2025, 6, 2, 20, 0, tzinfo=dt.UTC)
RENOTIFY = 240  # minutes, the default
TOKEN = "T0K3N-s3cr3t"


def settings(*overrides: str) -> StageParams:
    cfg = load_config("default", overrides=list(overrides))
    return StageParams(monitor=cfg.monitor, workflow=cfg.workflow, ml=cfg.ml, trade=cfg.trade, risk=cfg.risk)


@pytest.fixture(scope="module")
def params() -> StageParams:
    return settings()


def kpi_table(*rows: tuple) -> pd.DataFrame:
    """A KPI table from (kpi, scope, value[, detail]) tuples."""
    records = [
        {
            "run_id": "r",
            "kpi": r[0],
            "scope": r[1],
            "value": float(r[2]),
            "unit": "",
            "detail": r[3] if len(r) > 3 else "",
            "measured_at": pd.Timestamp(NOW),
        }
        for r in rows
    ]
    return pd.DataFrame(records, columns=list(kpis.KPI_COLUMNS))


# --------------------------------------------------------------------------------------------
# Rules

# rule, KPI rows that fire, the same KPI just on the safe side, the alert scope
CASES = [
    ("pipeline_failures", ("consecutive_failures", "pipeline", 4), ("consecutive_failures", "pipeline", 3), "pipeline"),
    ("model_degradation", ("degradation", "m", 0.1001), ("degradation", "m", 0.10), "m"),
    (
        "trading_loss",
        ("latest_daily_return", "paper", -0.0301, "session 2025-06-02"),
        ("latest_daily_return", "paper", -0.0299, "session 2025-06-02"),
        "paper",
    ),
    ("resource_use", ("cpu_use", "host", 0.91), ("cpu_use", "host", 0.90), "cpu"),
    ("resource_use", ("memory_use", "host", 0.95), ("memory_use", "host", 0.89), "memory"),
    ("data_delay", ("minutes_since_ingest", "ingest", 60.5), ("minutes_since_ingest", "ingest", 60.0), "ingest"),
    (
        "stage_slow",
        ("stage_duration_ratio", "features", 1.51, "median of 5 successful runs"),
        ("stage_duration_ratio", "features", 1.49, "median of 5 successful runs"),
        "features",
    ),
    ("retraining_required", ("retraining_required", "m", 1.0, "accuracy fell"), ("retraining_required", "m", 0.0), "m"),
    (
        "disk_use",
        ("disk_use", "host", 0.81, "filesystem of /o"),
        ("disk_use", "host", 0.79, "filesystem of /o"),
        "disk",
    ),
]


@pytest.mark.parametrize(("rule", "firing", "quiet", "scope"), CASES, ids=[f"{c[0]}-{c[3]}" for c in CASES])
def test_each_rule_fires_above_its_threshold_and_not_below(params, rule, firing, quiet, scope):
    found = alerts.evaluate_rules(kpi_table(firing), params)
    mine = found[found["rule"] == rule]
    assert mine["scope"].tolist() == [scope]
    row = mine.iloc[0]
    assert row["severity"] == params.monitor.rules[rule].severity
    assert row["value"] == firing[2]
    assert row["message"].endswith((".", ")")) and "\n" not in row["message"]
    assert alerts.evaluate_rules(kpi_table(quiet), params).query("rule == @rule").empty


def test_linked_thresholds_come_from_their_settings(params):
    assert alerts.rule_thresholds(params) == {
        "pipeline_failures": 3.0,
        "model_degradation": 0.10,
        "trading_loss": 0.03,
        "resource_use": 0.90,
        "data_delay": 60.0,
        "stage_slow": 1.5,
        "retraining_required": None,
        "disk_use": 0.80,
    }
    stricter = settings("workflow.alert_after_failures=1", "trade.limits.daily_loss_limit=0.01")
    table = kpi_table(("consecutive_failures", "pipeline", 2), ("latest_daily_return", "paper", -0.02, "session x"))
    assert set(alerts.evaluate_rules(table, stricter)["rule"]) == {"pipeline_failures", "trading_loss"}
    assert alerts.evaluate_rules(table, params).empty


def everything_firing() -> pd.DataFrame:
    return kpi_table(
        *[case[1] for case in CASES], ("stage_duration_s", "features", 30.0), ("stage_baseline_s", "features", 10.0)
    )


def test_disabled_rules_never_fire(params):
    found = alerts.evaluate_rules(everything_firing(), params)
    assert set(found["rule"]) == set(params.monitor.rules)
    assert found["severity"].tolist() == sorted(found["severity"])  # critical before warning
    off = settings(*[f"monitor.rules.{name}.enabled=false" for name in params.monitor.rules])
    assert alerts.evaluate_rules(everything_firing(), off).empty
    one_off = settings("monitor.rules.stage_slow.enabled=false")
    assert "stage_slow" not in set(alerts.evaluate_rules(everything_firing(), one_off)["rule"])


def test_disk_beyond_the_resource_threshold_fires_both_disk_rules(params):
    found = alerts.evaluate_rules(kpi_table(("disk_use", "host", 0.95, "filesystem of /o")), params)
    assert found[["rule", "scope", "severity"]].values.tolist() == [
        ["resource_use", "disk", "critical"],
        ["disk_use", "disk", "warning"],
    ]


def test_unmeasured_kpis_never_fire(params):
    table = everything_firing()
    table["value"] = math.nan
    assert alerts.evaluate_rules(table, params).empty


def test_null_kpis_read_back_from_the_warehouse_never_fire(params):
    """A NULL comes back as None in an object column (and a stray text as text): no rule reads it."""
    table = everything_firing()
    table["value"] = pd.Series([None] * len(table), dtype=object)
    assert alerts.evaluate_rules(table, params).empty
    table["value"] = pd.Series(["n/a"] * len(table), dtype=object)
    assert alerts.evaluate_rules(table, params).empty
    mixed = everything_firing().astype({"value": object})
    mixed.loc[mixed["kpi"] == "latest_daily_return", "value"] = None
    assert "trading_loss" not in set(alerts.evaluate_rules(mixed, params)["rule"])
    assert "pipeline_failures" in set(alerts.evaluate_rules(mixed, params)["rule"]), "the other rows still count"


def test_a_young_books_unpublished_figures_fire_nothing(params):
    """Three daily returns of a book on a losing streak: the KPIs that are not published (NaN with
    the reason) raise no alert; only the realized daily loss, a published fact, is judged."""
    dates = pd.bdate_range("2025-05-28", periods=4)
    values = pd.DataFrame(
        {
            "portfolio": "paper",
            "date": dates,
            "equity": [100_000, 99_000, 98_500, 98_400],
            "daily_return": [math.nan, -0.01, -500 / 99_000, -100 / 98_500],
        }
    )
    history = History(
        pd.DataFrame(columns=["run_id", "status", "started_at", "ended_at", "duration_s"]),
        pd.DataFrame(columns=["run_id", "stage", "attempt", "status", "duration_s", "started_at", "ended_at"]),
        portfolio_values=values,
        dataset_dates={},
    )
    table = kpis.kpi_table(
        history, params, run_id="now", logical_date=NOW.date(), now=NOW, resources=Resources(0.1, 0.1, 0.1)
    )
    paper = table[table["scope"] == "paper"].set_index("kpi")
    assert (
        math.isnan(paper.loc["sharpe_ratio", "value"])
        and "too few for a Sharpe ratio" in paper.loc["sharpe_ratio", "detail"]
    )
    assert alerts.evaluate_rules(table, params).empty


def test_stage_slow_message_names_the_stage_and_its_numbers(params):
    found = alerts.evaluate_rules(everything_firing(), params).set_index("rule")
    assert found.loc["stage_slow", "message"] == (
        "Stage features took 30.0 s, 1.51 times its median of 5 successful runs (10.0 s; limit 1.5x)."
    )


def test_every_rule_says_what_fired_with_its_numbers(params):
    found = alerts.evaluate_rules(everything_firing(), params)
    assert {(r.rule, r.scope): r.message for r in found.itertuples()} == {
        ("model_degradation", "m"): (
            "Model m is 10.0% less accurate on recent sessions than on its holdout (limit 10.0%)."
        ),
        ("pipeline_failures", "pipeline"): "4 pipeline runs in a row have failed (alert after more than 3).",
        ("resource_use", "cpu"): "CPU use is at 91% (limit 90%).",
        ("resource_use", "memory"): "Memory use is at 95% (limit 90%).",
        ("trading_loss", "paper"): (
            "Paper portfolio paper lost 3.01% on its latest session 2025-06-02 (daily loss limit 3.00%)."
        ),
        ("data_delay", "ingest"): "The last successful ingest finished 60 minutes ago (limit 60 minutes).",
        ("disk_use", "disk"): "The outputs disk is 81% full (filesystem of /o) (limit 80%).",
        ("retraining_required", "m"): "Model m requires retraining: accuracy fell.",
        ("stage_slow", "features"): (
            "Stage features took 30.0 s, 1.51 times its median of 5 successful runs (10.0 s; limit 1.5x)."
        ),
    }
    busy = alerts.evaluate_rules(kpi_table(("cpu_use", "host", 0.97, "used by others: 97% now")), params)
    assert busy["message"].tolist() == ["CPU use is at 97%, used by others: 97% now (limit 90%)."]


def test_every_rule_config_accepts_is_in_the_rules_table_and_nothing_else():
    """A rule name params accept but the table lacks would silently never fire."""
    assert {rule.name for rule in alerts.RULES} == set(get_args(AlertRuleName))


def test_a_rule_missing_from_the_table_is_an_error_not_silence(params):
    with pytest.raises(ValueError, match="no evaluation for alert rule 'nope'"):
        alerts._check("nope", everything_firing(), 1.0, "warning")


def test_pipeline_failures_from_the_run_ledger(params):
    """Four failed runs before a run that failed too: 5 > 3 fires; a success in between does not."""

    def ledger(statuses: list[str]) -> pd.DataFrame:
        start = pd.Timestamp(NOW) - pd.Timedelta(hours=len(statuses) + 1)
        rows = [
            {"run_id": f"r{i}", "status": s, "started_at": start + pd.Timedelta(hours=i)}
            for i, s in enumerate(statuses)
        ]
        return pd.DataFrame([*rows, {"run_id": "now", "status": "running", "started_at": pd.Timestamp(NOW)}])

    stages = pd.DataFrame(
        {
            "run_id": ["now"],
            "stage": ["etl"],
            "attempt": [1],
            "status": ["failed"],
            "duration_s": [1.0],
            "started_at": [pd.Timestamp(NOW)],
            "ended_at": [pd.Timestamp(NOW)],
        }
    )
    resources = Resources(0.1, 0.1, 0.1)

    def fired(statuses: list[str]) -> pd.DataFrame:
        history = History(ledger(statuses), stages, dataset_dates={})
        table = kpis.kpi_table(history, params, run_id="now", logical_date=NOW.date(), now=NOW, resources=resources)
        return alerts.evaluate_rules(table, params).query("rule == 'pipeline_failures'")

    assert fired(["success", "failed", "crashed", "failed", "failed"])["value"].tolist() == [5.0]
    assert fired(["failed", "success", "failed", "failed"]).empty  # 3 is not more than 3
    assert fired(["failed", "failed", "failed"])["value"].tolist() == [4.0]


# --------------------------------------------------------------------------------------------
# Episodes


class Store:
    """The alerts table as the warehouse keeps it: upserts on alert_id."""

    def __init__(self) -> None:
        self.rows: dict[str, dict] = {}
        self.sent: list[list[str]] = []

    def active(self) -> pd.DataFrame:
        live = [r for r in self.rows.values() if r["status"] == "active"]
        return (
            pd.DataFrame(live, columns=list(alerts.ALERT_COLUMNS))
            if live
            else pd.DataFrame(columns=list(alerts.ALERT_COLUMNS))
        )

    def check(self, findings: pd.DataFrame, at: dt.datetime, run_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        rows, to_send = alerts.reconcile(self.active(), findings, at, RENOTIFY, run_id)
        self.rows.update({r["alert_id"]: r for r in rows.to_dict("records")})
        self.sent.append(to_send["alert_id"].tolist())
        return rows, to_send


def finding(rule: str = "data_delay", scope: str = "ingest", value: float = 90.0) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "rule": rule,
                "scope": scope,
                "severity": "warning",
                "value": value,
                "threshold": 60.0,
                "message": f"late by {value:g} minutes",
            }
        ]
    )


NO_FINDINGS = pd.DataFrame(columns=list(alerts.FINDING_COLUMNS))


def test_a_new_finding_opens_an_active_episode_and_sends_it():
    store = Store()
    rows, to_send = store.check(finding(), NOW, "run-1")
    assert tuple(rows.columns) == alerts.ALERT_COLUMNS
    row = rows.iloc[0]
    assert row["alert_id"] == "data_delay:ingest:20250602T200000Z"
    assert (row["status"], row["notifications"], row["run_id"]) == ("active", 1, "run-1")
    assert row["first_seen_at"] == row["last_seen_at"] == row["last_sent_at"] == pd.Timestamp(NOW)
    assert pd.isna(row["resolved_at"])
    assert to_send["alert_id"].tolist() == [row["alert_id"]]


def test_a_repeated_alert_is_deduplicated_then_renotified_after_renotify_minutes():
    store = Store()
    store.check(finding(value=90), NOW, "run-1")
    later = NOW + dt.timedelta(minutes=RENOTIFY - 1)
    rows, to_send = store.check(finding(value=120), later, "run-2")
    assert len(store.rows) == 1 and to_send.empty
    row = rows.iloc[0]
    assert (row["status"], row["notifications"], row["run_id"], row["value"]) == ("active", 1, "run-2", 120.0)
    assert row["last_seen_at"] == pd.Timestamp(later) and row["last_sent_at"] == pd.Timestamp(NOW)

    due = NOW + dt.timedelta(minutes=RENOTIFY)
    rows, to_send = store.check(finding(value=150), due, "run-3")
    assert len(store.rows) == 1
    assert to_send["alert_id"].tolist() == ["data_delay:ingest:20250602T200000Z"]
    row = rows.iloc[0]
    assert (row["notifications"], row["last_sent_at"], row["first_seen_at"]) == (
        2,
        pd.Timestamp(due),
        pd.Timestamp(NOW),
    )


def test_a_cleared_condition_resolves_the_episode_and_a_new_firing_opens_another():
    store = Store()
    store.check(finding(), NOW, "run-1")
    rows, to_send = store.check(NO_FINDINGS, NOW + dt.timedelta(hours=1), "run-2")
    assert to_send.empty
    assert rows[["status", "resolved_at"]].values.tolist() == [["resolved", pd.Timestamp(NOW + dt.timedelta(hours=1))]]
    assert rows.iloc[0]["run_id"] == "run-1"  # the last run that saw it firing
    assert store.active().empty

    again = NOW + dt.timedelta(hours=2)
    rows, to_send = store.check(finding(), again, "run-3")
    assert len(store.rows) == 2
    assert rows["alert_id"].tolist() == ["data_delay:ingest:20250602T220000Z"]
    assert to_send["alert_id"].tolist() == rows["alert_id"].tolist()
    assert store.rows["data_delay:ingest:20250602T200000Z"]["status"] == "resolved"


def test_scopes_are_separate_episodes_and_active_rows_come_first():
    store = Store()
    both = pd.concat([finding("stage_slow", "etl", 2.0), finding("stage_slow", "features", 3.0)], ignore_index=True)
    store.check(both, NOW, "run-1")
    rows, to_send = store.check(finding("stage_slow", "features", 2.5), NOW + dt.timedelta(minutes=5), "run-2")
    assert rows[["scope", "status"]].values.tolist() == [["features", "active"], ["etl", "resolved"]]
    assert to_send.empty
    assert alerts.log_lines(rows) == ["ALERT [warning] stage_slow features: late by 2.5 minutes"]


def test_a_failed_delivery_leaves_the_alert_due_for_the_next_run():
    store = Store()
    active = store.active()
    rows, to_send = alerts.reconcile(active, finding(), NOW, RENOTIFY, "run-1")
    rows = alerts.mark_unsent(rows, to_send, active)
    assert rows.iloc[0]["notifications"] == 0 and pd.isna(rows.iloc[0]["last_sent_at"])
    store.rows.update({r["alert_id"]: r for r in rows.to_dict("records")})
    rows, to_send = store.check(finding(), NOW + dt.timedelta(minutes=5), "run-2")
    assert to_send["alert_id"].tolist() == ["data_delay:ingest:20250602T200000Z"]
    assert rows.iloc[0]["notifications"] == 1


def test_a_long_scope_keeps_the_alert_id_within_the_key_column():
    long_id = alerts.alert_id("model_degradation", "x" * 60, NOW)
    assert len(long_id) <= 64 and long_id.startswith("model_degradation:") and long_id.endswith(":20250602T200000Z")


# --------------------------------------------------------------------------------------------
# Webhook


class Hook(http.server.ThreadingHTTPServer):
    """A local webhook answering each POST with the next scripted status (then 200)."""

    def __init__(self, statuses: list[int], delay_s: float = 0.0) -> None:
        self.statuses, self.delay_s = list(statuses), delay_s
        self.location = ""  # where a 3xx answer points
        self.bodies: list[dict] = []
        self.headers_seen: list[dict] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the timeout test hangs up on a slow answer: a broken pipe here is expected

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/{TOKEN}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Hook

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self.server.bodies.append(json.loads(self.rfile.read(length)))
        self.server.headers_seen.append(dict(self.headers))
        if self.server.delay_s:
            time.sleep(self.server.delay_s)
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "2")
        if 300 <= status < 400:
            self.send_header("Location", self.server.location)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:  # keep pytest's output clean
        pass


@pytest.fixture
def serve(monkeypatch) -> Iterator:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    servers: list[Hook] = []

    def start(statuses: list[int], delay_s: float = 0.0) -> Hook:
        server = Hook(statuses, delay_s)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def sent_alerts() -> pd.DataFrame:
    _, to_send = alerts.reconcile(pd.DataFrame(), finding(), NOW, RENOTIFY, "run-1")
    return to_send


SEED = 5


def send(url: str, sleeps: list[float], **kwargs) -> bool:
    options = {"timeout_s": 2.0, "max_attempts": 3, "backoff_s": 0.5, "rng": random.Random(SEED), **kwargs}
    return alerts.send_webhook(url, sent_alerts(), run_id="run-1", sent_at=NOW, sleep=sleeps.append, **options)


def waits(*ceilings: float) -> list[float]:
    """The waits `send` draws before its retries: full jitter under capped doubling ceilings."""
    rng = random.Random(SEED)
    return [rng.uniform(0.0, ceiling) for ceiling in ceilings]


def test_the_payload_arrives_as_json(serve):
    hook, sleeps = serve([]), []
    assert send(hook.url, sleeps) is True
    assert sleeps == [] and len(hook.bodies) == 1
    body = hook.bodies[0]
    assert body["run_id"] == "run-1" and body["sent_at"] == "2025-06-02T20:00:00+00:00"
    [alert] = body["alerts"]
    assert alert["alert_id"] == "data_delay:ingest:20250602T200000Z"
    assert alert["rule"] == "data_delay" and alert["severity"] == "warning" and alert["status"] == "active"
    assert alert["value"] == 90.0 and alert["notifications"] == 1
    assert alert["resolved_at"] is None  # NaT and NaN travel as null
    assert hook.headers_seen[0]["Content-Type"] == "application/json"


def test_a_500_then_200_is_retried_and_succeeds(serve):
    hook, sleeps = serve([500]), []
    assert send(hook.url, sleeps) is True
    assert len(hook.bodies) == 2 and sleeps == waits(0.5)


def test_a_429_waits_at_least_its_retry_after(serve):
    hook, sleeps = serve([429, 503]), []
    assert send(hook.url, sleeps) is True
    assert len(hook.bodies) == 3 and sleeps == [2.0, waits(0.5, 1.0)[1]]  # Retry-After: 2 beats a draw <= 0.5


def test_a_400_is_not_retried(serve):
    hook, sleeps = serve([400, 200]), []
    assert send(hook.url, sleeps) is False
    assert len(hook.bodies) == 1 and sleeps == []


def test_persistent_5xx_gives_up_after_max_attempts(serve):
    hook, sleeps = serve([502, 502, 502, 502]), []
    assert send(hook.url, sleeps) is False
    assert len(hook.bodies) == 3 and sleeps == waits(0.5, 1.0)


def test_a_timeout_is_retried(serve):
    hook, sleeps = serve([], delay_s=0.6), []
    assert send(hook.url, sleeps, timeout_s=0.2, max_attempts=2) is False
    assert sleeps == waits(0.5)


def test_an_unreachable_port_returns_false_without_raising():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleeps: list[float] = []
    assert send(f"http://127.0.0.1:{port}/hooks/{TOKEN}", sleeps) is False
    assert sleeps == waits(0.5, 1.0)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/hostname",
        f"ftp://user:{TOKEN}@127.0.0.1/hooks",
        f"gopher://127.0.0.1:70/_POST%20/hooks/{TOKEN}",
        f"gopher:{TOKEN}",
        f"127.0.0.1/hooks/{TOKEN}",  # no scheme at all
    ],
)
def test_only_http_and_https_urls_are_contacted(url, monkeypatch, caplog):
    """The scheme guard, observed: nothing reaches the HTTP client (no request, no file read),
    nothing is retried, and the log says why. Without the guard, requests is called with the URL."""
    calls: list[str] = []

    def record(self, method, url, *args, **kwargs):
        calls.append(url)
        raise AssertionError("the webhook contacted a URL that is not http(s)")

    monkeypatch.setattr(requests.Session, "request", record)
    sleeps: list[float] = []
    caplog.set_level(logging.INFO, logger="bentley.monitoring.alerts")
    assert send(url, sleeps) is False
    assert calls == [] and sleeps == []
    assert "the URL must be http or https" in caplog.text and TOKEN not in caplog.text


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_not_followed_nor_retried(serve, status):
    """Following would re-send elsewhere (a 301/302 even as a GET without the body)."""
    hook, elsewhere, sleeps = serve([status]), serve([]), []
    hook.location = elsewhere.url
    assert send(hook.url, sleeps) is False
    assert len(hook.bodies) == 1 and elsewhere.bodies == [] and sleeps == []


def test_the_url_never_appears_in_the_log(serve, caplog):
    caplog.set_level(logging.DEBUG, logger="bentley.monitoring.alerts")
    ok, refused, redirect = serve([500]), serve([400]), serve([302])
    redirect.location = ok.url
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/hooks/{TOKEN}"
    for url in (ok.url, refused.url, dead, f"ftp://user:{TOKEN}@example.invalid/", redirect.url):
        send(url, [])
    assert caplog.records  # something was said about every attempt
    text = caplog.text
    assert TOKEN not in text and "/hooks/" not in text and "127.0.0.1" not in text


def test_deliver_marks_nothing_sent_when_the_webhook_fails(serve, params):
    active = pd.DataFrame(columns=list(alerts.ALERT_COLUMNS))
    rows, to_send = alerts.reconcile(active, finding(), NOW, RENOTIFY, "run-1")
    hook = serve([400])
    kept, sentence = alerts.deliver(
        rows,
        to_send,
        active,
        url=hook.url,
        webhook=params.monitor.webhook,
        run_id="run-1",
        now=NOW,
        sleep=lambda s: None,
    )
    assert kept.iloc[0]["notifications"] == 0 and "next run" in sentence and TOKEN not in sentence
    fine = serve([])
    kept, sentence = alerts.deliver(
        rows, to_send, active, url=fine.url, webhook=params.monitor.webhook, run_id="run-1", now=NOW
    )
    assert kept.iloc[0]["notifications"] == 1 and "sent to the webhook" in sentence
    _, sentence = alerts.deliver(
        rows, to_send, active, url=None, webhook=params.monitor.webhook, run_id="run-1", now=NOW
    )
    assert "BENTLEY_ALERT_WEBHOOK_URL" in sentence


def test_webhook_url_comes_from_the_environment_variable(params):
    monitor = params.monitor
    assert (
        alerts.webhook_url(monitor, {"BENTLEY_ALERT_WEBHOOK_URL": " https://hooks.example/x "})
        == "https://hooks.example/x"
    )
    assert alerts.webhook_url(monitor, {}) is None
    assert alerts.webhook_url(monitor, {"BENTLEY_ALERT_WEBHOOK_URL": "  "}) is None


def test_the_monitor_and_the_watch_each_reconcile_only_their_own_episodes() -> None:
    """The monitor stage never resolves a `runner watch` episode for lack of a finding, and back."""
    from bentley.monitoring.alerts import episodes_of

    active = pd.DataFrame(
        {
            "rule": ["watch_daily_loss", "pipeline_failures", "watch_stale_feed", "disk_use"],
            "scope": ["portfolio:paper", "pipeline", "NOVA", "disk"],
        }
    )
    assert episodes_of(active, watch=False)["rule"].tolist() == ["pipeline_failures", "disk_use"]
    assert episodes_of(active, watch=True)["rule"].tolist() == ["watch_daily_loss", "watch_stale_feed"]
