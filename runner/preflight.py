"""Preflight: the checks on a run's date and params that need no data, before anything runs.

Dates and params that cannot work used to be accepted and fail late: a holiday ran with
reports headed by the holiday and content of the session before, a future date booked paper
trades for a day that had not happened, a window before the sample's epoch failed minutes
later, too few tickers for `optimize.min_names` failed at stage 10 with a traceback, and the
sample source invented a series for a typo. Each rule here is one small function that raises
`ParamsError` (a params problem) or `DagError` (a usage problem) with one line naming the
date, key or ticker and what to do, which the CLI prints as such with exit 2.

The rules are pure and fast: the exchange calendar, the params and at most the listing of a
csv market folder; no warehouse, MLflow, network or kernel. So `plan_run` applies them
before the lease is taken and before anything is written. `now` is a parameter so that a
test can pin the clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bentley import calendar
from bentley.config import Config, ParamsError
from bentley.schedule_times import fire_at_from_run_id
from bentley.sources.base import SourceError, resolve_inside
from bentley.sources.files import CsvMarketSource
from bentley.sources.sample import SampleMarketSource
from runner.dag import DagError, Stage
from runner.gate import tick_at

#: Longer than any run of closed weekdays an exchange has had (NYSE: four days after 9/11),
#: so the next session after a non-session date is always inside it.
_LONGEST_CLOSURE = dt.timedelta(days=10)
#: Tickers quoted in a message; more are counted, so the message stays one line.
_TICKERS_SHOWN = 10


def check_run(
    config: Config,
    logical_date: dt.date,
    *,
    logical_date_given: bool,
    stages_arg: Sequence[str] | None,
    selected: Sequence[Stage],
    run_id: str | None,
    root: Path,
    now: dt.datetime,
) -> None:
    """Every rule for a `runner run`, usage first, then the date, then the params.

    `logical_date_given` says whether the date came from `--logical-date` (the default, the
    latest closed session, needs no calendar check); `stages_arg` is `--stages` as given (None
    when absent); `selected` the stages that will run; `run_id` the requested one (a scheduled
    tick's run may run for its own session while it trades); `now` is timezone-aware.
    """
    check_stages_arg(stages_arg)
    if logical_date_given:
        check_session_closed(config, logical_date, now, run_id)
        check_is_session(config, logical_date)
    check_history_window(config, logical_date, logical_date_given=logical_date_given)
    check_sample_tickers(config)
    check_benchmark_file(config, root)
    universe = optimizable_universe(config, root)
    check_universe_not_empty(config, universe)
    if any("optimize" in stage.sections for stage in selected):
        check_min_names(config, universe)


# --------------------------------------------------------------------------- usage


def check_stages_arg(stages_arg: Sequence[str] | None) -> None:
    """`--stages ""` (or only commas) selects nothing; it must not fall back to every stage."""
    if stages_arg is not None and not stages_arg:
        raise DagError(
            "--stages names no stage: list some (e.g. --stages ingest,etl; `runner dag` shows them) "
            "or leave --stages out to run every stage"
        )


# --------------------------------------------------------------------------- the logical date


def check_session_closed(config: Config, logical_date: dt.date, now: dt.datetime, run_id: str | None) -> None:
    """The session of the logical date has closed at `now` (early closes included).

    A later date would generate or fetch bars for a day that has not happened (or not ended)
    and book paper trades on them. One exception: a scheduled tick (`sched-…`, see
    `runner schedule` and `runner gate`) runs for its own session while it trades, since
    refreshing during market hours is what the schedule is for. A date up to today that is
    no session at all is left to `check_is_session`, which names the nearest sessions.
    """
    latest = calendar.latest_closed_session(now, config.workflow.calendar)
    if logical_date <= latest or logical_date == _scheduled_session(config, run_id, now):
        return
    up_to_today = logical_date <= now.astimezone(dt.UTC).date()
    if up_to_today and not calendar.is_session(logical_date, config.workflow.calendar):
        return
    raise ParamsError(
        f"logical date {logical_date} has not closed yet (now {now.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC); "
        f"the latest closed session is {latest}: pass --logical-date {latest} or leave it out"
    )


def _scheduled_session(config: Config, run_id: str | None, now: dt.datetime) -> dt.date | None:
    """The session a scheduled tick that has fired runs for, when `run_id` is such a tick's."""
    fire_at = fire_at_from_run_id(run_id) if run_id else None
    if fire_at is None or fire_at > now:
        return None
    tick = tick_at(fire_at, config)
    return tick.logical_date if tick else None


def check_is_session(config: Config, logical_date: dt.date) -> None:
    """The logical date is a session of `workflow.calendar`.

    Any other date would head the reports with that date while their content is the session
    before (every data decision is keyed on sessions).
    """
    name = config.workflow.calendar
    first = dt.date.fromisoformat(calendar.CALENDAR_START)
    if logical_date < first:
        raise ParamsError(
            f"logical date {logical_date} is before {first}, where the {name} calendar starts: "
            "pass a later --logical-date"
        )
    if calendar.is_session(logical_date, name):
        return
    before = calendar.latest_session_on_or_before(logical_date, name)
    after = calendar.sessions(logical_date, logical_date + _LONGEST_CLOSURE, name)[0].date()
    raise ParamsError(
        f"logical date {logical_date} is not an {name} session; the nearest sessions are "
        f"{before} and {after}: pass one of them as --logical-date"
    )


# --------------------------------------------------------------------------- the data window


def check_history_window(config: Config, logical_date: dt.date, *, logical_date_given: bool) -> None:
    """The history window is valid and starts where data can exist.

    The calendar starts at `bentley.calendar.CALENDAR_START`, and the sample source has no
    data before `sample.epoch` (its series are generated from there). For a csv or Yahoo
    source, where the data starts is only known by reading it: that is the ingest's job.
    """
    start, end = config.history.window(logical_date)
    history, name = config.history, config.workflow.calendar
    calendar_start = dt.date.fromisoformat(calendar.CALENDAR_START)
    if start < calendar_start:
        raise ParamsError(
            f"the history window {start}..{end} starts before {calendar_start}, where the {name} "
            "calendar starts: lower history.years or set a later history.start"
        )
    epoch = config.sample.epoch
    if config.sources.market.kind != "sample" or start >= epoch:
        return
    if history.start is not None:
        raise ParamsError(
            f"history.start {start} is before sample.epoch {epoch}, where the sample data starts: "
            f"set history.start on or after {epoch}, or null"
        )
    fixes = []
    fitting_years = _whole_years_between(epoch, end)
    if fitting_years >= 1:
        fixes.append(f"history.years {fitting_years} or fewer")
    earliest_end = _years_after(epoch, history.years)
    if history.end is not None:
        fixes.append(f"history.end on or after {earliest_end}")
    elif logical_date_given:
        fixes.append(f"--logical-date on or after {earliest_end}")
    fixes.append("an earlier sample.epoch")
    either = f"{', '.join(fixes[:-1])} or {fixes[-1]}" if len(fixes) > 1 else fixes[0]
    raise ParamsError(
        f"the history window {start}..{end} (history.years {history.years}) starts before sample.epoch "
        f"{epoch}, where the sample data starts: use {either}"
    )


def _whole_years_between(earlier: dt.date, later: dt.date) -> int:
    """Whole years from `earlier` to `later`: the most `history.years` that still starts on or after `earlier`."""
    return later.year - earlier.year - ((later.month, later.day) < (earlier.month, earlier.day))


def _years_after(day: dt.date, years: int) -> dt.date:
    """`day` plus whole years; 29 February becomes 1 March (the window then starts on or after `day`)."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return dt.date(day.year + years, 3, 1)


# --------------------------------------------------------------------------- the universe


def check_sample_tickers(config: Config) -> None:
    """Every name in `universe.tickers` is one the sample source has (it refuses others on fetch)."""
    if config.sources.market.kind != "sample" or config.universe.tickers is None:
        return
    problem = _sample_source(config).unknown_tickers_message(config.universe.tickers)
    if problem:
        raise ParamsError(f"universe.tickers: {problem}")


def check_benchmark_file(config: Config, root: Path) -> None:
    """A csv market folder holds the benchmark's export (the sample's index takes any name)."""
    folder = _csv_folder(config, root)
    if folder is None:
        return
    benchmark = config.universe.benchmark
    # With no benchmark to leave out, `available_tickers` lists every TICKER file of the folder.
    present = _listed(folder, benchmark="")
    if benchmark not in present:
        raise ParamsError(
            f"universe.benchmark: {folder} has no {benchmark}.csv or {benchmark}.parquet: add the "
            f"benchmark's export there, or set universe.benchmark to the index among its files "
            f"({_shown(present)})"
        )


@dataclass(frozen=True)
class Holdable:
    """The tickers the optimizer may hold (the universe minus the benchmark) and where they come from."""

    tickers: list[str]
    origin: str  # the params that decide them, for messages
    fix: str  # how to get more of them


def optimizable_universe(config: Config, root: Path) -> Holdable | None:
    """The universe minus the benchmark, or None when only reading data could tell (a csv long file, Yahoo)."""
    benchmark = config.universe.benchmark
    if config.universe.tickers is not None:
        return Holdable(
            [t for t in config.universe.tickers if t != benchmark],
            "universe.tickers",
            "list more tickers in universe.tickers",
        )
    if config.sources.market.kind == "sample":
        return Holdable(
            _sample_source(config).available_tickers(),
            f"sample.n_tickers {config.sample.n_tickers}",
            "raise sample.n_tickers",
        )
    folder = _csv_folder(config, root)
    if folder is None:
        return None
    return Holdable(_listed(folder, benchmark), f"the files in {folder}", f"add TICKER.csv exports to {folder}")


def check_universe_not_empty(config: Config, universe: Holdable | None) -> None:
    """There is at least one ticker besides the benchmark: nothing else can be analysed or held."""
    if universe is not None and not universe.tickers:
        raise ParamsError(
            f"the universe has no ticker besides the benchmark {config.universe.benchmark} "
            f"({universe.origin}): {universe.fix}"
        )


def check_min_names(config: Config, universe: Holdable | None) -> None:
    """At least `optimize.min_names` tickers besides the benchmark, when the optimize stage runs.

    The optimizer caps each weight at 1/min_names so that many names hold weight; with fewer
    tickers no portfolio satisfies the cap.
    """
    need = config.optimize.min_names
    if universe is None or len(universe.tickers) >= need:
        return
    raise ParamsError(
        f"optimize.min_names is {need} but the universe has {len(universe.tickers)} ticker(s) besides the benchmark "
        f"{config.universe.benchmark} ({_shown(universe.tickers)}; from {universe.origin}): {universe.fix} "
        "or lower optimize.min_names"
    )


def _listed(folder: Path, benchmark: str) -> list[str]:
    """The tickers of a csv market folder; a name that is no ticker, or a folder inside it, is a
    params problem here (sources.market.path points at it), in the source's own words."""
    try:
        return CsvMarketSource(folder, benchmark=benchmark).available_tickers()
    except (SourceError, OSError) as exc:
        raise ParamsError(f"sources.market.path: {exc}") from None


def _sample_source(config: Config) -> SampleMarketSource:
    """The sample market as the ingest builds it (no I/O: its names are a function of the params)."""
    return SampleMarketSource(
        config.sample.seed,
        config.sample.n_tickers,
        config.sample.epoch,
        config.universe.benchmark,
        config.workflow.calendar,
        config.sample.signal,
    )


def _csv_folder(config: Config, root: Path) -> Path | None:
    """The csv market folder, or None: another kind, a long file (reading it is the ingest's job),
    or a path that does not exist or escapes the data folder (the ingest reports those)."""
    market = config.sources.market
    if market.kind != "csv" or market.path is None:
        return None
    try:
        path = resolve_inside(root / config.sources.data_dir, market.path)
    except SourceError:
        return None
    return path if path.is_dir() else None


def _shown(tickers: Sequence[str]) -> str:
    listed = ", ".join(tickers[:_TICKERS_SHOWN]) or "none"
    return listed + (f", ... ({len(tickers)} in all)" if len(tickers) > _TICKERS_SHOWN else "")
