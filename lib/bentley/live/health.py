"""The `watch` health component: is the intraday watch alive, and is its feed flowing?

Reads the freshest `watch_heartbeats` row (`runner watch` forces one every `watch.heartbeat_s`):

* no row: ok, not configured (no watch ever ran on this store);
* status `stopped`: ok, stopped cleanly;
* heartbeat older than 3 x heartbeat_s: down (a watch killed without saying so, or hung);
* watching during the session, but the last bar is older than `stale_minutes`: degraded;
* else ok, with the session, the source and the last bar.

Meant for `bentley.monitoring.health.run_checks` (component `watch`, after `scheduler`), which
also serves it as `/health/watch`.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from bentley.live.bars import session_window
from bentley.monitoring.health import DEGRADED, DOWN, OK, Check
from bentley.warehouse import Warehouse


def check_watch(
    warehouse: Warehouse,
    *,
    heartbeat_s: float,
    stale_minutes: float,
    now: dt.datetime,
    calendar: str,
    timezone: str,
) -> Check:
    if not warehouse.has_rows("watch_heartbeats"):
        return Check(
            "watch",
            OK,
            "not configured: no watch has run against this warehouse (`runner watch` starts one)",
            {"configured": False},
        )
    beats = warehouse.read("watch_heartbeats").sort_values("heartbeat_at", na_position="first")
    latest = beats.iloc[-1]
    who = f"watch {latest['watch_id']} ({latest['source']}, portfolio {latest['portfolio']})"
    at = pd.Timestamp(latest["heartbeat_at"])
    data = {"configured": True, "status": latest["status"], "heartbeat_at": at, "last_bar_ts": latest["last_bar_ts"]}
    if latest["status"] == "stopped":
        return Check("watch", OK, f"not running: {who} stopped cleanly at {at:%Y-%m-%d %H:%M} UTC", data)
    age = (pd.Timestamp(now) - at).total_seconds()
    if age > 3 * heartbeat_s:
        return Check(
            "watch",
            DOWN,
            f"{who} last beat {age:.0f} s ago (status {latest['status']}; expected every "
            f"{heartbeat_s:g} s): it died or hangs",
            data,
        )
    window = session_window(pd.Timestamp(now).tz_convert(timezone).date(), calendar)
    in_session = window is not None and window[0] <= pd.Timestamp(now) < window[1]
    last_bar = latest["last_bar_ts"]
    if in_session and latest["status"] == "watching":
        since = (pd.Timestamp(now) - pd.Timestamp(last_bar)).total_seconds() / 60 if pd.notna(last_bar) else None
        if since is None or since > stale_minutes:
            shown = "no bar yet" if since is None else f"no bar for {since:.0f} min"
            return Check(
                "watch", DEGRADED, f"{who} is alive but its feed is stale: {shown} (limit {stale_minutes:g} min)", data
            )
    bar = f", last bar {pd.Timestamp(last_bar):%H:%M} UTC" if pd.notna(last_bar) else ""
    return Check("watch", OK, f"{who}: {latest['status']}{bar}", data)
