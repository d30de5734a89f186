"""Alert rules on the monitor's KPIs, alert episodes, and delivery to a webhook.

Three steps, each a plain function:

1. `evaluate_rules(kpis, params)` -> findings: one row per (rule, scope) firing now, with the
   value, the threshold, the severity and one human sentence. Thresholds of the linked rules
   come from the setting that already exists (`config.LINKED_THRESHOLDS`: one default, one
   place); disabled rules never fire. Comparisons are strict ("more than"), and a KPI without
   a value never fires: one that could not be measured, one too short to be published
   (`bentley.analytics.risk.published`: NaN with the reason as detail), or a NULL read back
   from the warehouse. An absent number is not evidence of a problem, and alerting on it
   would page someone about an empty book. Each rule is data, a row of `RULES` (the KPI it
   reads, the comparison, the sentence), and one function evaluates them all.
2. `reconcile(active_alerts, findings, now, renotify_minutes, run_id)` -> (rows to upsert into
   `alerts`, rows to send). The table holds one row per alert *episode*: a rule starting to fire
   for a scope opens a new active row (and sends it); while it keeps firing the row stays active
   with `last_seen_at`, `run_id` and `value` brought up to date, and is sent again only once
   `renotify_minutes` have passed since `last_sent_at`; when it stops firing the episode is
   resolved. A later firing opens a new episode (a new `alert_id`).
3. `send_webhook(url, alerts, ...)` POSTs `{"alerts": [...], "run_id": ..., "sent_at": ...}`
   as JSON with requests (redirects not followed), retrying connection errors, timeouts, 5xx
   and 429 with the project's one retry helper (`bentley.retry`). It never raises and never
   logs the URL (webhook URLs carry tokens). When delivery
   fails, `mark_unsent` puts the episodes back as not sent, so the next run tries again instead
   of waiting `renotify_minutes`.

The URL comes from the environment variable named by `monitor.webhook.url_env`, never from
params (`webhook_url`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import requests

from bentley.config import LINKED_THRESHOLDS
from bentley.monitoring import kpis as kpis_lib
from bentley.retry import Backoff, retry_call
from bentley.sources.http import is_transient

if TYPE_CHECKING:
    from bentley.stage import Params

log = logging.getLogger(__name__)

#: Columns of the warehouse table alerts(alert_id), in order.
ALERT_COLUMNS: tuple[str, ...] = (
    "alert_id",
    "rule",
    "severity",
    "scope",
    "status",
    "message",
    "value",
    "threshold",
    "first_seen_at",
    "last_seen_at",
    "last_sent_at",
    "resolved_at",
    "notifications",
    "run_id",
)
#: Columns of `evaluate_rules`.
FINDING_COLUMNS: tuple[str, ...] = ("rule", "scope", "severity", "value", "threshold", "message")
ACTIVE, RESOLVED = "active", "resolved"
_SEVERITY_ORDER = {"critical": 0, "warning": 1}
_TIMESTAMPS = ("first_seen_at", "last_seen_at", "last_sent_at", "resolved_at")
#: The alert_id column's width; longer ids fall back to a digest of the scope.
_ID_LENGTH = 64
#: A server's Retry-After is honoured up to this many seconds.
_MAX_RETRY_AFTER_S = 60.0


# --------------------------------------------------------------------------------------------
# Rules

#: When a KPI row fires: `above` its threshold, a `loss_beyond` the threshold (value < -threshold),
#: or `flagged` (value > 0; the rule has no threshold). Strict: a value at the threshold is quiet.
Comparison = Literal["above", "loss_beyond", "flagged"]


@dataclass(frozen=True)
class Rule:
    """One alert rule as data: which KPI rows it reads, when a row fires, and what it says.

    `message` is a `str.format` template over the KPI row: `value`, `loss` (-value), `threshold`,
    `scope`, `detail`, `and_detail` (", detail" or nothing), `because` (": detail." or ".") and
    `lookups`, other KPIs of the same scope by name. `scope` replaces the KPI row's scope when
    the alert is about something else than the row (`resource_use` reads "host" rows of three
    KPIs and alerts on "cpu", "memory" and "disk"). The threshold is not here: it comes from the
    rule's params, or from the linked setting (`config.LINKED_THRESHOLDS`, see `rule_thresholds`).
    """

    name: str
    kpi: str
    comparison: Comparison
    message: str
    scope: str | None = None
    lookups: Mapping[str, str] = field(default_factory=dict)


#: Every alert rule, evaluated by `_check`; a rule may read several KPIs (one row each), in order.
RULES: tuple[Rule, ...] = (
    Rule(
        "pipeline_failures",
        "consecutive_failures",
        "above",
        "{value:.0f} pipeline runs in a row have failed (alert after more than {threshold:g}).",
    ),
    Rule(
        "model_degradation",
        "degradation",
        "above",
        "Model {scope} is {value:.1%} less accurate on recent sessions than on its holdout (limit {threshold:.1%}).",
    ),
    Rule(
        "trading_loss",
        "latest_daily_return",
        "loss_beyond",
        "Paper portfolio {scope} lost {loss:.2%} on its latest {detail} (daily loss limit {threshold:.2%}).",
    ),
    # CPU's detail is sustained use and whose processes (see monitoring.resources)
    Rule("resource_use", "cpu_use", "above", "CPU use is at {value:.0%}{and_detail} (limit {threshold:.0%}).", "cpu"),
    Rule("resource_use", "memory_use", "above", "Memory use is at {value:.0%} (limit {threshold:.0%}).", "memory"),
    Rule("resource_use", "disk_use", "above", "Disk use is at {value:.0%} (limit {threshold:.0%}).", "disk"),
    Rule(
        "data_delay",
        "minutes_since_ingest",
        "above",
        "The last successful ingest finished {value:.0f} minutes ago (limit {threshold:g} minutes).",
    ),
    Rule(
        "stage_slow",
        "stage_duration_ratio",
        "above",
        "Stage {scope} took {seconds:.1f} s, {value:.2f} times its {detail} ({median:.1f} s; limit {threshold:g}x).",
        lookups={"seconds": "stage_duration_s", "median": "stage_baseline_s"},
    ),
    Rule("retraining_required", "retraining_required", "flagged", "Model {scope} requires retraining{because}"),
    Rule(
        "disk_use",
        "disk_use",
        "above",
        "The outputs disk is {value:.0%} full ({detail}) (limit {threshold:.0%}).",
        "disk",
    ),
)


def _setting(params: Params, dotted: str) -> Any:
    value = params
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def rule_thresholds(params: Params) -> dict[str, float | None]:
    """Each configured rule's threshold: its own, or the linked setting's (`LINKED_THRESHOLDS`)."""
    out: dict[str, float | None] = {}
    for name, rule in params.monitor.rules.items():
        linked = LINKED_THRESHOLDS.get(name)
        value = _setting(params, linked) if linked else rule.threshold
        out[name] = None if value is None else float(value)
    return out


def _rows(kpis: pd.DataFrame, kpi: str) -> pd.DataFrame:
    """The KPI's rows that have a number: NaN, None and anything not numeric are left out."""
    values = pd.to_numeric(kpis["value"], errors="coerce").astype(np.float64)
    rows = kpis.assign(value=values)[(kpis["kpi"] == kpi) & np.isfinite(values)]
    return rows.reset_index(drop=True)


def _fires(comparison: Comparison, value: float, threshold: float | None, rule: str) -> bool:
    if comparison == "flagged":
        return value > 0
    if threshold is None:  # config refuses a rule without one; a table edit could still get here
        raise ValueError(f"alert rule {rule!r} compares with a threshold, and has none")
    return value > threshold if comparison == "above" else value < -threshold


def _check(name: str, kpis: pd.DataFrame, threshold: float | None, severity: str) -> list[dict]:
    """The findings of one enabled rule: each of its KPI rows that fires, with its sentence."""
    rules = [rule for rule in RULES if rule.name == name]
    if not rules:  # a name config accepts but nothing here evaluates is a bug, not a silent no-op
        raise ValueError(f"no evaluation for alert rule {name!r}")
    found = []
    for rule in rules:
        for row in _rows(kpis, rule.kpi).itertuples():
            if not _fires(rule.comparison, row.value, threshold, name):
                continue
            detail = "" if row.detail is None or pd.isna(row.detail) else str(row.detail)
            reason = detail.strip().rstrip(".")
            message = rule.message.format(
                value=row.value,
                loss=-row.value,
                threshold=threshold,
                scope=row.scope,
                detail=detail,
                and_detail=f", {detail}" if detail else "",
                because=f": {reason}." if reason else ".",
                **{key: kpis_lib.kpi_value(kpis, kpi, row.scope) for key, kpi in rule.lookups.items()},
            )
            found.append(
                {
                    "rule": name,
                    "scope": rule.scope or row.scope,
                    "severity": severity,
                    "value": float(row.value),
                    "threshold": math.nan if threshold is None else float(threshold),
                    "message": message,
                }
            )
    return found


def evaluate_rules(kpis: pd.DataFrame, params: Params) -> pd.DataFrame:
    """Findings (FINDING_COLUMNS) of every enabled rule on the KPI table, critical first.

    `params` carries `monitor` plus the sections the linked thresholds live in (`workflow`,
    `ml`, `trade`): a stage's ctx.params.
    """
    thresholds = rule_thresholds(params)
    found: list[dict] = []
    for name, rule in params.monitor.rules.items():
        if rule.enabled:
            found += _check(name, kpis, thresholds[name], rule.severity)
    frame = pd.DataFrame(found, columns=list(FINDING_COLUMNS))
    frame = frame.drop_duplicates(["rule", "scope"], keep="last")
    return _by_severity(frame)


def _by_severity(frame: pd.DataFrame, *extra: str) -> pd.DataFrame:
    if frame.empty:
        return frame.reset_index(drop=True)
    order = frame["severity"].map(_SEVERITY_ORDER).fillna(len(_SEVERITY_ORDER))
    keys = [*extra, "_order", "rule", "scope"]
    return frame.assign(_order=order).sort_values(keys, kind="stable").drop(columns="_order").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Episodes


def alert_id(rule: str, scope: str, first_seen: dt.datetime) -> str:
    """`rule:scope:YYYYmmddTHHMMSSZ`; a scope too long for the key column is replaced by a digest."""
    stamp = pd.Timestamp(first_seen).tz_convert("UTC").strftime("%Y%m%dT%H%M%SZ")
    candidate = f"{rule}:{scope}:{stamp}"
    if len(candidate) <= _ID_LENGTH:
        return candidate
    return f"{rule}:{hashlib.sha256(scope.encode()).hexdigest()[:12]}:{stamp}"


def _empty_alerts() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in ALERT_COLUMNS})
    for column in _TIMESTAMPS:
        frame[column] = pd.Series(dtype="datetime64[us, UTC]")
    frame["value"] = frame["value"].astype(np.float64)
    frame["threshold"] = frame["threshold"].astype(np.float64)
    return frame


def _typed(rows: list[dict]) -> pd.DataFrame:
    if not rows:
        return _empty_alerts()
    frame = pd.DataFrame(rows).reindex(columns=list(ALERT_COLUMNS))
    for column in _TIMESTAMPS:
        frame[column] = pd.to_datetime(frame[column], utc=True)
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce").astype(np.float64)
    frame["threshold"] = pd.to_numeric(frame["threshold"], errors="coerce").astype(np.float64)
    frame["notifications"] = frame["notifications"].fillna(0).astype(np.int64)
    return frame


def _stamp(value: Any) -> pd.Timestamp | None:
    if value is None or pd.isna(value):
        return None
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


#: Rules of `runner watch` start with this: their episodes are opened and resolved by the watch,
#: never by the monitor stage, which does not evaluate them.
WATCH_RULE_PREFIX = "watch_"


def episodes_of(active_alerts: pd.DataFrame, *, watch: bool) -> pd.DataFrame:
    """The active rows one evaluator owns: the watch's (`watch=True`) or the monitor stage's.
    Each reconciles only its own, or it would resolve the other's episodes for lack of a finding."""
    is_watch = active_alerts["rule"].astype(str).str.startswith(WATCH_RULE_PREFIX)
    return active_alerts[is_watch if watch else ~is_watch].reset_index(drop=True)


def reconcile(
    active_alerts: pd.DataFrame,
    findings: pd.DataFrame,
    now: dt.datetime,
    renotify_minutes: float,
    run_id: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows to upsert into `alerts`, rows to send now), both with ALERT_COLUMNS.

    `active_alerts` are the table's rows with status active (other rows are ignored). Each
    finding continues its (rule, scope)'s active episode or opens a new one; active episodes
    without a finding are resolved. Sent rows have `last_sent_at = now` and one more
    notification. Should two active rows share a (rule, scope), the newest continues and the
    others are resolved.
    """
    now_ts = pd.Timestamp(now)
    if now_ts.tzinfo is None:
        raise ValueError("`now` must be timezone-aware (UTC)")
    now_ts = now_ts.tz_convert("UTC")
    renotify = pd.Timedelta(minutes=renotify_minutes)
    active = active_alerts
    if not active.empty:
        active = active[active["status"] == ACTIVE].copy()
        active["_first"] = pd.to_datetime(active["first_seen_at"], utc=True)
        active = active.sort_values(["_first", "alert_id"], kind="stable", na_position="first")
    current: dict[tuple[str, str], dict] = {}
    resolved: list[dict] = []
    for record in active.to_dict("records"):
        record.pop("_first", None)
        key = (record["rule"], record["scope"])
        if key in current:
            resolved.append(current[key])
        current[key] = record

    rows: list[dict] = []
    sent_ids: list[str] = []
    for finding in findings.to_dict("records"):
        key = (finding["rule"], finding["scope"])
        previous = current.pop(key, None)
        update = {name: finding[name] for name in ("severity", "message", "value", "threshold")}
        if previous is None:
            row = {
                "alert_id": alert_id(finding["rule"], finding["scope"], now_ts),
                "rule": finding["rule"],
                "scope": finding["scope"],
                "status": ACTIVE,
                **update,
                "first_seen_at": now_ts,
                "last_seen_at": now_ts,
                "last_sent_at": now_ts,
                "resolved_at": None,
                "notifications": 1,
                "run_id": run_id,
            }
            sent_ids.append(row["alert_id"])
        else:
            row = {**{c: previous.get(c) for c in ALERT_COLUMNS}, **update, "last_seen_at": now_ts, "run_id": run_id}
            last_sent = _stamp(previous.get("last_sent_at"))
            if last_sent is None or now_ts - last_sent >= renotify:
                notified = previous.get("notifications")
                row["notifications"] = (0 if notified is None or pd.isna(notified) else int(notified)) + 1
                row["last_sent_at"] = now_ts
                sent_ids.append(row["alert_id"])
        rows.append(row)
    for record in [*resolved, *current.values()]:
        rows.append({**{c: record.get(c) for c in ALERT_COLUMNS}, "status": RESOLVED, "resolved_at": now_ts})

    table = _typed(rows)
    table = (
        _by_severity(table.assign(_active=table["status"] != ACTIVE), "_active").drop(columns="_active")
        if len(table)
        else table
    )
    to_send = table[table["alert_id"].isin(sent_ids)].reset_index(drop=True)
    return table.reset_index(drop=True), to_send


def mark_unsent(rows: pd.DataFrame, to_send: pd.DataFrame, active_alerts: pd.DataFrame) -> pd.DataFrame:
    """`rows` with the sends in `to_send` undone: delivery failed, so the next run sends again.

    A re-sent episode gets back its previous `last_sent_at` and count; a new one has none.
    """
    out = rows.copy()
    before = active_alerts.set_index("alert_id") if not active_alerts.empty else pd.DataFrame()
    for alert in to_send["alert_id"]:
        mask = out["alert_id"] == alert
        if alert in before.index:
            out.loc[mask, "last_sent_at"] = pd.to_datetime(before.at[alert, "last_sent_at"], utc=True)
            count = before.at[alert, "notifications"]
            out.loc[mask, "notifications"] = 0 if count is None or pd.isna(count) else int(count)
        else:
            out.loc[mask, "last_sent_at"] = pd.NaT
            out.loc[mask, "notifications"] = 0
    return out


def log_lines(rows: pd.DataFrame) -> list[str]:
    """`ALERT [severity] rule scope: message`, one per active alert, critical first."""
    active = _by_severity(rows[rows["status"] == ACTIVE]) if len(rows) else rows
    return [f"ALERT [{r.severity}] {r.rule} {r.scope}: {r.message}" for r in active.itertuples()]


def alerts_display(rows: pd.DataFrame, timezone: str) -> pd.DataFrame:
    """Alerts for a report: active first (critical before warning), then resolved by this run.

    `first_seen_at` is shown in `timezone`, params `workflow.timezone` (the warehouse keeps UTC).
    """
    columns = ["status", "severity", "rule", "scope", "message", "value", "threshold", "first_seen_at", "notifications"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    shown = _by_severity(rows.assign(_resolved=rows["status"] != ACTIVE), "_resolved")[columns]
    shown["first_seen_at"] = (
        pd.to_datetime(shown["first_seen_at"], utc=True).dt.tz_convert(timezone).dt.strftime("%Y-%m-%d %H:%M %Z")
    )
    return shown.reset_index(drop=True)


def alerts_sentence(rows: pd.DataFrame, sent: pd.DataFrame, delivery: str) -> str:
    active = rows[rows["status"] == ACTIVE] if len(rows) else rows
    critical = int((active["severity"] == "critical").sum()) if len(active) else 0
    resolved = int((rows["status"] == RESOLVED).sum()) if len(rows) else 0
    if active.empty:
        head = "No alert rule fires on this run"
    else:
        head = (
            f"{len(active)} alert(s) active ({critical} critical, {len(active) - critical} warning), "
            f"{len(sent)} of them due for a notification"
        )
    tail = f"; {resolved} episode(s) resolved since the last check" if resolved else ""
    return f"{head}{tail}. {delivery}"


# --------------------------------------------------------------------------------------------
# Delivery


def webhook_url(monitor: Any, environ: Mapping[str, str] | None = None) -> str | None:
    """The webhook URL from the environment variable `monitor.webhook.url_env` (None: unset or blank)."""
    env = os.environ if environ is None else environ
    value = env.get(monitor.webhook.url_env, "").strip()
    return value or None


def _json_value(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, pd.Timestamp | dt.datetime):
        return None if pd.isna(value) else pd.Timestamp(value).isoformat()
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def webhook_payload(
    alerts: pd.DataFrame | Sequence[Mapping[str, Any]], *, run_id: str | None, sent_at: dt.datetime
) -> dict[str, Any]:
    """`{"alerts": [...], "run_id": ..., "sent_at": ...}` with JSON-safe values (NaN, NaT -> null)."""
    records = alerts.to_dict("records") if isinstance(alerts, pd.DataFrame) else [dict(a) for a in alerts]
    return {
        "alerts": [{key: _json_value(value) for key, value in record.items()} for record in records],
        "run_id": run_id,
        "sent_at": pd.Timestamp(sent_at).isoformat(),
    }


def _status(error: BaseException) -> int | None:
    status = getattr(getattr(error, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def _retry_after(error: BaseException) -> float:
    """A 429's Retry-After in seconds (capped at `_MAX_RETRY_AFTER_S`), the floor of the next wait; else 0."""
    response = getattr(error, "response", None)
    if _status(error) != 429 or response is None:
        return 0.0
    value = str(response.headers.get("Retry-After") or "").strip()
    return min(float(value), _MAX_RETRY_AFTER_S) if value.isdigit() else 0.0


def _problem(error: BaseException) -> str:
    """What went wrong, without the URL (requests puts it in its messages): the HTTP status, or
    the exception type and the operating system's words for the cause ("Connection refused").

    requests wraps urllib3's error (in `args[0]`), which was raised from the socket's.
    """
    status = _status(error)
    if status is not None:
        return f"HTTP {status}"
    cause: BaseException | None = error
    for _ in range(10):  # a few layers deep; a cycle of causes must not loop forever
        if cause is None:
            break
        if isinstance(cause, OSError) and not isinstance(cause, requests.RequestException) and cause.strerror:
            return f"{type(error).__name__}: {cause.strerror}"
        wrapped = cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else None
        cause = cause.__cause__ or wrapped or cause.__context__
    return type(error).__name__


def send_webhook(
    url: str,
    alerts: pd.DataFrame | Sequence[Mapping[str, Any]],
    *,
    run_id: str | None = None,
    sent_at: dt.datetime | None = None,
    timeout_s: float,
    max_attempts: int,
    backoff_s: float,
    sleep: Callable[[float], object] = time.sleep,
    rng: random.Random | None = None,
) -> bool:
    """POST the alerts as JSON; True once a 2xx answers, False otherwise. Never raises.

    Only http and https URLs are contacted. Connection errors, timeouts, 5xx and 429 are retried
    up to `max_attempts` attempts in all (`bentley.retry`: capped exponential waits from
    `backoff_s` with full jitter, at least a 429's Retry-After, capped at 60 s); other 4xx and
    redirects fail at once: a webhook that redirects is misconfigured, and following it would
    re-send as GET without the body. Log lines never contain the URL (it carries a token).
    """
    try:
        scheme = urlsplit(url).scheme
        if scheme not in ("http", "https"):
            log.warning("alert webhook not sent: the URL must be http or https, not %r", scheme or "empty")
            return False
        stamp = sent_at or dt.datetime.now(dt.UTC)
        body = json.dumps(webhook_payload(alerts, run_id=run_id, sent_at=stamp), allow_nan=False).encode()
    except Exception as error:  # noqa: BLE001 - delivery must never stop the stage
        log.warning("alert webhook not sent: payload could not be built (%s)", type(error).__name__)
        return False
    count, attempts = len(alerts), 0

    def post() -> requests.Response:
        nonlocal attempts
        attempts += 1
        response = requests.post(
            url,
            data=body,
            headers={"Content-Type": "application/json", "User-Agent": "bentley-monitor"},
            timeout=timeout_s,
            allow_redirects=False,
        )
        response.close()
        if not 200 <= response.status_code < 300:  # raise_for_status lets a redirect through
            raise requests.HTTPError(f"HTTP {response.status_code}", response=response)
        return response

    def on_retry(attempt: int, error: BaseException, wait: float) -> None:
        log.info(
            "alert webhook attempt %d of %d failed (%s); retrying in %.1f s",
            attempt,
            max_attempts,
            _problem(error),
            wait,
        )

    try:
        response = retry_call(
            post,
            attempts=max_attempts,
            backoff=Backoff(base_s=backoff_s, cap_s=_MAX_RETRY_AFTER_S),
            retryable=is_transient,
            at_least=_retry_after,
            on_retry=on_retry,
            sleep=sleep,
            rng=rng,
        )
    except Exception as error:  # noqa: BLE001 - delivery must never stop the stage
        log.warning(
            "alert webhook failed after %d attempt(s): %s; %d alert(s) not delivered", attempts, _problem(error), count
        )
        return False
    log.info("alert webhook: %d alert(s) delivered (HTTP %d, attempt %d)", count, response.status_code, attempts)
    return True


def deliver(
    rows: pd.DataFrame,
    to_send: pd.DataFrame,
    active_alerts: pd.DataFrame,
    *,
    url: str | None,
    webhook: Any,
    run_id: str,
    now: dt.datetime,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[pd.DataFrame, str]:
    """Send `to_send` when a URL is set; (rows to upsert, a sentence on what happened).

    Without a URL the report and the log lines are the notification. A failed delivery
    leaves the episodes unsent (`mark_unsent`), so the next run tries again.
    """
    if to_send.empty:
        return rows, "Nothing was due for a notification."
    if url is None:
        return rows, (
            f"No webhook is configured (environment variable `{webhook.url_env}` is unset): "
            "the log lines below and this report are the notification."
        )
    delivered = send_webhook(
        url,
        to_send,
        run_id=run_id,
        sent_at=now,
        timeout_s=webhook.timeout_s,
        max_attempts=webhook.max_attempts,
        backoff_s=webhook.backoff_s,
        sleep=sleep,
    )
    if delivered:
        return rows, f"{len(to_send)} alert(s) were sent to the webhook."
    return mark_unsent(rows, to_send, active_alerts), (
        f"The webhook did not accept {len(to_send)} alert(s) after {webhook.max_attempts} attempt(s); "
        "they stay due and the next run sends them again."
    )
