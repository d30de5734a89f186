"""When the scheduler fires: pure fire-time math on the exchange calendar.

This lives in the library (not in `runner/`) because two sides need the same answer: the
scheduler (`runner.schedule`) decides which tick to run, and the health checks
(`bentley.monitoring.health`) decide whether a tick that should have produced a run did.
The library must not import the runner, so the grid is defined once, here.

Fire times are local wall-clock times in `workflow.timezone`: midnight + `offset_minutes` +
k x `every_minutes`. With `schedule.sessions_only` a time is kept only inside a session's
trading window (`trading_window`), so holidays give no ticks and early closes end the day
early; without it every day of the week is on the grid. Times are computed locally with
zoneinfo and converted to UTC, so both DST changes are right: a local time that does not
exist (the spring-forward gap) is skipped and one that happens twice (fall-back) fires once,
at its first occurrence.

A tick's run id is a pure function of its fire time (`sched-YYYYMMDDTHHMMZ`), so two
schedulers computing the same tick name the same run, and a health check can tell from a
`pipeline_runs` row which tick it ran for.

Module-level imports are stdlib only: `python -m runner` imports this module (through
`runner.schedule`) to build its parser. `bentley.calendar` (pandas, exchange_calendars) is
imported where a session is looked up.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from bentley.config import Schedule, Workflow

__all__ = [
    "DUE_WINDOW",
    "MISSED_GRACE",
    "RUN_ID_FORMAT",
    "RUN_ID_PREFIX",
    "SEARCH_DAYS",
    "Tick",
    "day_ticks",
    "due_ticks",
    "fire_at_from_run_id",
    "fire_times",
    "missed_ticks",
    "next_tick",
    "previous_ticks",
    "require_aware",
    "run_id_for",
    "trading_window",
    "upcoming_ticks",
]

UTC = dt.UTC
RUN_ID_PREFIX = "sched-"
RUN_ID_FORMAT = "%Y%m%dT%H%MZ"
#: catch_up none: a tick counts as "due now" when it fired at most this long ago
#: (or since the previous poll, when that was longer ago: a run blocked the loop).
DUE_WINDOW = dt.timedelta(seconds=60)
#: How far `next_tick` and `previous_ticks` look before giving up (plus one day per tick asked for).
SEARCH_DAYS = 31
#: `missed_ticks`: a tick may start this late (a slow poll, a restart's catch-up) or, by clock
#: skew between hosts, this early, and still count as run.
MISSED_GRACE = dt.timedelta(minutes=5)


@dataclass(frozen=True, order=True)
class Tick:
    """One scheduled run: when it fires (UTC) and the session date it runs for."""

    fire_at: dt.datetime
    logical_date: dt.date

    @property
    def run_id(self) -> str:
        return run_id_for(self.fire_at)


def run_id_for(fire_at: dt.datetime) -> str:
    """`sched-20250602T1405Z`: deterministic from the fire time, so concurrent schedulers agree on
    the name of a run (the lease and `skip_if_done` then keep it to one execution), and sortable
    as text."""
    return RUN_ID_PREFIX + fire_at.astimezone(UTC).strftime(RUN_ID_FORMAT)


def fire_at_from_run_id(run_id: str) -> dt.datetime | None:
    """The fire time a scheduled run id encodes; None for any other run id (a manual run)."""
    if not run_id.startswith(RUN_ID_PREFIX):
        return None
    try:
        return dt.datetime.strptime(run_id.removeprefix(RUN_ID_PREFIX), RUN_ID_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def trading_window(day: dt.date, workflow: Workflow) -> tuple[dt.datetime, dt.datetime] | None:
    """The UTC window ticks may fire in on session `day` (both ends included); None on a closed day.

    It is the intersection of `workflow.market_hours` (local time) with the exchange's own open
    and close for that date, so a narrower `market_hours` wins and an early close ends it early.
    """
    from bentley import calendar

    hours = calendar.session_hours(day, workflow.calendar)
    if hours is None:
        return None
    session_open, session_close = hours
    zone = ZoneInfo(workflow.timezone)
    return (
        max(dt.datetime.combine(day, workflow.market_hours.open, zone).astimezone(UTC), session_open),
        min(dt.datetime.combine(day, workflow.market_hours.close, zone).astimezone(UTC), session_close),
    )


def day_ticks(day: dt.date, schedule: Schedule, workflow: Workflow) -> list[Tick]:
    """The ticks of one local date (`workflow.timezone`), in order.

    Every other function here walks the grid one local day at a time through this one, so
    the DST and session rules are applied in a single place.
    """
    zone = ZoneInfo(workflow.timezone)
    window = None
    if schedule.sessions_only:
        window = trading_window(day, workflow)
        if window is None:
            return []
        logical_date = day
    else:
        from bentley import calendar

        logical_date = calendar.latest_session_on_or_before(day, workflow.calendar)
    midnight = dt.datetime.combine(day, dt.time())
    ticks = []
    for minute in range(schedule.offset_minutes, 24 * 60, schedule.every_minutes):
        wall = midnight + dt.timedelta(minutes=minute)
        fire_at = wall.replace(tzinfo=zone).astimezone(UTC)  # fold=0: the first of a repeated hour
        if fire_at.astimezone(zone).replace(tzinfo=None) != wall:
            continue  # inside the spring-forward gap: this wall time does not exist today
        if window is not None and not window[0] <= fire_at <= window[1]:
            continue
        ticks.append(Tick(fire_at, logical_date))
    return ticks


def fire_times(start_utc: dt.datetime, end_utc: dt.datetime, schedule: Schedule, workflow: Workflow) -> list[Tick]:
    """Every tick with start_utc <= fire_at <= end_utc, in order."""
    require_aware(start_utc, end_utc)
    zone = ZoneInfo(workflow.timezone)
    day = start_utc.astimezone(zone).date()
    last = end_utc.astimezone(zone).date()
    ticks: list[Tick] = []
    while day <= last:
        ticks.extend(t for t in day_ticks(day, schedule, workflow) if start_utc <= t.fire_at <= end_utc)
        day += dt.timedelta(days=1)
    return ticks


def next_tick(after_utc: dt.datetime, schedule: Schedule, workflow: Workflow) -> Tick | None:
    """The first tick strictly after `after_utc`; None when none falls in the next month."""
    return next(iter(upcoming_ticks(after_utc, 1, schedule, workflow)), None)


def upcoming_ticks(after_utc: dt.datetime, count: int, schedule: Schedule, workflow: Workflow) -> list[Tick]:
    """The next `count` ticks strictly after `after_utc` (fewer if the search horizon ends)."""
    require_aware(after_utc)
    zone = ZoneInfo(workflow.timezone)
    day = after_utc.astimezone(zone).date()
    found: list[Tick] = []
    for _ in range(SEARCH_DAYS + count):
        found.extend(t for t in day_ticks(day, schedule, workflow) if t.fire_at > after_utc)
        if len(found) >= count:
            break
        day += dt.timedelta(days=1)
    return found[:count]


def previous_ticks(until_utc: dt.datetime, count: int, schedule: Schedule, workflow: Workflow) -> list[Tick]:
    """The latest `count` ticks with fire_at <= until_utc, oldest first (fewer if the horizon ends)."""
    require_aware(until_utc)
    if count <= 0:
        return []
    zone = ZoneInfo(workflow.timezone)
    day = until_utc.astimezone(zone).date()
    found: list[Tick] = []
    for _ in range(SEARCH_DAYS + count):
        found[:0] = [t for t in day_ticks(day, schedule, workflow) if t.fire_at <= until_utc]
        if len(found) >= count:
            break
        day -= dt.timedelta(days=1)
    return found[-count:]


def due_ticks(
    last_done: dt.datetime | None,
    now: dt.datetime,
    schedule: Schedule,
    workflow: Workflow,
    *,
    catch_up: str | None = None,
    max_catch_up: int | None = None,
    window: dt.timedelta = DUE_WINDOW,
) -> list[Tick]:
    """The ticks to run at `now`, given the fire time of the last tick already handled.

    - `none`: only a tick that fired within `window` (and after `last_done`): missed ticks
      are dropped.
    - `latest`: the most recent tick at or before `now`, unless it is already done.
    - `all`: every tick after `last_done`, the latest `max_catch_up` of them, oldest first.
      With no tick done yet nothing counts as missed: only the most recent one runs.
    """
    catch_up = catch_up or schedule.catch_up
    limit = max_catch_up or schedule.max_catch_up
    count = limit if catch_up == "all" and last_done is not None else 1
    candidates = [
        t for t in previous_ticks(now, count, schedule, workflow) if last_done is None or t.fire_at > last_done
    ]
    if catch_up == "none":
        return [t for t in candidates if t.fire_at > now - window][-1:]
    if catch_up == "latest":
        return candidates[-1:]
    if catch_up == "all":
        return candidates
    raise ValueError(f"unknown catch_up {catch_up!r}; expected none, latest or all")


def missed_ticks(
    last_start: dt.datetime,
    now: dt.datetime,
    schedule: Schedule,
    workflow: Workflow,
    *,
    grace: dt.timedelta = MISSED_GRACE,
) -> list[Tick]:
    """The ticks that should have started something after `last_start` but did not, oldest first.

    A tick is missed when it fired at least `grace` before `now` (it had time to start) and
    `last_start` is more than `grace` before its fire time: the ticks in
    (last_start + grace, now - grace]. This is how staleness is judged on the schedule instead
    of the wall clock: overnight, at weekends and on holidays there is no tick, so nothing is
    missed however old the last run is; with `sessions_only` false the grid is every day and
    the same rule holds. Only the first SEARCH_DAYS days of a longer outage are listed.
    """
    require_aware(last_start, now)
    first = next_tick(last_start + grace, schedule, workflow)
    if first is None or first.fire_at > now - grace:
        return []
    end = min(now - grace, first.fire_at + dt.timedelta(days=SEARCH_DAYS))
    return fire_times(first.fire_at, end, schedule, workflow)


def require_aware(*moments: dt.datetime) -> None:
    """Refuse naive datetimes: a naive time on this grid would silently mean the host's zone."""
    for moment in moments:
        if moment.tzinfo is None:
            raise ValueError(f"{moment} must be timezone-aware")
