"""Exchange sessions: the only dates the pipeline treats as trading days.

Every data decision is keyed on exchange session dates from exchange_calendars,
never on the wall clock, so a run is a pure function of its logical date.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import pickle
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

import exchange_calendars as xcals
import pandas as pd

DEFAULT_CALENDAR = "XNYS"
#: The first date our calendars cover; the sample source starts its series after it.
CALENDAR_START = "1995-01-01"


#: Where built calendars are kept between processes (BENTLEY_CACHE_DIR, else ~/.cache/bentley).
CACHE_ENV = "BENTLEY_CACHE_DIR"


def _cache_file(name: str) -> Path:
    """One file per calendar, exchange_calendars version and day: a calendar built today ends a
    year after today (exchange_calendars' default), so tomorrow's process builds its own."""
    base = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "bentley")
    return base / f"calendar-{name}-{CALENDAR_START}-{xcals.__version__}-{dt.date.today():%Y%m%d}.pickle"


@lru_cache(maxsize=8)
def _calendar(name: str) -> xcals.ExchangeCalendar:
    """The exchange's calendar from CALENDAR_START, built once a day and kept as a pickle.

    Building XNYS takes about a second (every stage kernel and `runner health` need it);
    loading the pickle about 0.07 s. A cache that cannot be read or written is ignored: the
    calendar is built as before.
    """
    path = _cache_file(name)
    try:
        with path.open("rb") as handle:
            cached = pickle.load(handle)
        if isinstance(cached, xcals.ExchangeCalendar):
            return cached
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        pass
    # exchange_calendars 4.x still reads tz-aware `Series.values`, which pandas 3.1
    # deprecates; the values it gets are correct, so the warning is noise in reports.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        calendar = xcals.get_calendar(name, start=CALENDAR_START)
    _store(path, calendar)
    return calendar


def _store(path: Path, calendar: xcals.ExchangeCalendar) -> None:
    """Write the pickle atomically (a temporary file renamed), so a reader never sees half."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp")
    except OSError:
        return  # no writable cache folder: every process builds its own
    try:
        with handle:
            pickle.dump(calendar, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(handle.name, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(handle.name)


def sessions(start: dt.date | str, end: dt.date | str, calendar: str = DEFAULT_CALENDAR) -> pd.DatetimeIndex:
    """Session dates in [start, end] (inclusive, tz-naive, midnight-normalized)."""
    cal = _calendar(calendar)
    start_ts, end_ts = pd.Timestamp(start), pd.Timestamp(end)
    if end_ts < start_ts:
        return pd.DatetimeIndex([], name="date")
    first, last = cal.first_session, cal.last_session
    if start_ts < first or end_ts > last:
        raise ValueError(
            f"{calendar} calendar covers {first.date()}..{last.date()}; requested {start_ts.date()}..{end_ts.date()}"
        )
    out = cal.sessions_in_range(start_ts, end_ts)
    return pd.DatetimeIndex(out.tz_localize(None) if out.tz is not None else out, name="date")


def latest_session_on_or_before(day: dt.date | str, calendar: str = DEFAULT_CALENDAR) -> dt.date:
    """The last session on or before `day` (a weekend or holiday maps back)."""
    cal = _calendar(calendar)
    ts = pd.Timestamp(day)
    if cal.is_session(ts):
        return ts.date()
    return cal.date_to_session(ts, direction="previous").date()


def is_session(day: dt.date | str, calendar: str = DEFAULT_CALENDAR) -> bool:
    return bool(_calendar(calendar).is_session(pd.Timestamp(day)))


def session_hours(day: dt.date | str, calendar_name: str = DEFAULT_CALENDAR) -> tuple[dt.datetime, dt.datetime] | None:
    """(open, close) of the session on `day` as tz-aware UTC datetimes; None when `day` is no session.

    The exchange's own hours for that date, so early closes (13:00 New York on half days) and
    any DST change are already in them. The scheduler intersects these with
    `workflow.market_hours` to get the window its ticks may fire in.
    """
    cal = _calendar(calendar_name)
    session = pd.Timestamp(day)
    if not cal.is_session(session):
        return None
    opens, closes = cal.session_open(session), cal.session_close(session)
    return opens.tz_convert("UTC").to_pydatetime(), closes.tz_convert("UTC").to_pydatetime()


def latest_closed_session(now: dt.datetime, calendar: str = DEFAULT_CALENDAR) -> dt.date:
    """The last session whose close has passed at `now` (timezone-aware): a run's default
    as-of date, so a run started mid-session never treats today's partial bar as final."""
    if now.tzinfo is None:
        raise ValueError("`now` must be timezone-aware")
    cal = _calendar(calendar)
    session = pd.Timestamp(latest_session_on_or_before(now.date(), calendar))
    if cal.session_close(session) > pd.Timestamp(now).tz_convert("UTC"):
        session = cal.previous_session(session)
    return session.date()


def sessions_before(day: dt.date | str, count: int, calendar: str = DEFAULT_CALENDAR) -> dt.date:
    """The session `count` sessions before the last session on or before `day`."""
    cal = _calendar(calendar)
    session = pd.Timestamp(latest_session_on_or_before(day, calendar))
    if count <= 0:
        return session.date()
    return cal.session_offset(session, -count).date()


def session_for(published_at_utc: pd.Series, calendar: str = DEFAULT_CALENDAR) -> pd.Series:
    """The session each headline belongs to: the first session whose close is after it.

    Before the close of a session day (pre-market included) that session; at or after the close
    (16:00 New York, 13:00 on half days), on a weekend or on a holiday, the next one. Times the
    calendar does not cover are NaT. Returns tz-naive midnight dates named ``date``.
    """
    cal = _calendar(calendar)
    closes = pd.DatetimeIndex(cal.closes).as_unit("ns")
    times = pd.DatetimeIndex(pd.to_datetime(published_at_utc, utc=True)).as_unit("ns")
    position = closes.searchsorted(times, side="right")
    covered = (position < len(closes)) & (times >= pd.Timestamp(cal.first_session, tz="UTC"))
    sessions = pd.DatetimeIndex(cal.closes.index).as_unit("ns")
    dates = sessions.take(position.clip(max=len(sessions) - 1)).where(covered)
    return pd.Series(dates, index=published_at_utc.index, name="date")
