"""`runner watch`: the intraday risk watch on the paper book, for as long as it is left running.

    bars (watch.source) -> stream state -> risk rules -> alert episodes, webhook, de-risking
                        -> intraday_marks, intraday_risk, the ledger's orders and fills
                        -> at the close: the intraday report (outputs/intraday/), linked from the home page

* Market hours come from the exchange calendar (`bentley.calendar.session_hours`: holidays give
  no session, early closes end it early, DST is in the exchange's own hours). Outside them the
  watch idles, looking at the clock every `watch.idle_poll_s` (or until the next open).
* One watch per store: the warehouse lease `watch` (renewed by `runner.lease.LeaseKeeper`); a
  second watch exits 3 (EXIT_BUSY), a watch that loses its lease stops and exits 4.
* Every batch is written in one transaction (the mark, the risk rows, the alert episodes, the
  orders and fills), so a watch killed at any moment leaves whole batches. A restart on the same
  session reads the last stored mark, re-feeds the session's bars up to it through the stream
  (applying the stored intraday fills at their timestamps) without writing, and goes on from
  the next batch: no mark, alert or order is written twice. Alert times are bar times, so a
  replay gives the same episode ids, and reruns upsert rows over themselves.
* Webhook delivery happens after the batch commits (at most once per due alert; a failed POST
  puts the episode back as unsent, as the monitor does).
* De-risking orders and fills go to the ledger's `orders`/`fills` (`bentley.live.derisk`), which
  the daily paper book books. A session the book has already booked (a replay of a past day) is
  watched and alerted on, but not de-risked: its ledger is closed, and later days rest on it.
* At the session's close (and whenever a replay completes it) the watch renders the end-of-day
  report (`bentley.live.report`) from the warehouse and rebuilds the home page that links it. A
  watch restarted after the close of a session it left unfinished resolves that session's open
  episodes at the close and renders the report when it idles.
* `--day DATE` replays one session now (sample or replay sources) and exits: on a session the
  warehouse already holds, it re-feeds it, writes nothing, and renders its report again.

The arguments are declared in `runner.cli` with the other verbs, so `runner --help` does not
import pandas; `command` is the entry point.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pandas as pd

from runner.outcomes import EXIT_BUSY, EXIT_LEASE_LOST, EXIT_OK

if TYPE_CHECKING:
    from bentley.config import Config, Watch
    from bentley.warehouse import Warehouse

WATCH_LEASE = "watch"
UTC = dt.UTC


# --------------------------------------------------------------------------- calendar


def market_state(
    now: dt.datetime, calendar: str, timezone: str
) -> tuple[dt.date, tuple[pd.Timestamp, pd.Timestamp] | None]:
    """(the exchange-local date of `now`, its session's (open, close) in UTC or None on a non-session day)."""
    from bentley.live.bars import session_window

    day = now.astimezone(ZoneInfo(timezone)).date()
    return day, session_window(day, calendar)


def in_session(now: dt.datetime, calendar: str, timezone: str) -> bool:
    _, window = market_state(now, calendar, timezone)
    return window is not None and window[0] <= pd.Timestamp(now) < window[1]


def next_open(now: dt.datetime, calendar: str, timezone: str, search_days: int = 14) -> pd.Timestamp | None:
    """The next session open after `now` (UTC), or None within `search_days`."""
    from bentley.live.bars import session_window

    day = now.astimezone(ZoneInfo(timezone)).date()
    for offset in range(search_days + 1):
        window = session_window(day + dt.timedelta(days=offset), calendar)
        if window is not None and window[0] > pd.Timestamp(now):
            return window[0]
    return None


# --------------------------------------------------------------------------- one session


@dataclass
class SessionResult:
    day: dt.date
    batches: int = 0  # processed and written
    refed: int = 0  # re-fed after a restart, not written
    alerts_opened: int = 0
    orders: int = 0
    completed: bool = False  # the source ran to the session's end (not stopped)
    messages: list[str] = field(default_factory=list)


class Watcher:
    """Runs sessions: the stream, the rules, the alerts and de-risking, and the writes."""

    def __init__(
        self,
        warehouse: Warehouse,
        settings: Watch,
        *,
        portfolio: str,
        daily_loss_limit: float,
        costs: Any,
        source: Any,
        tickers: list[str],
        calendar: str,
        timezone: str,
        renotify_minutes: float,
        webhook: Any = None,
        webhook_url: str | None = None,
        lake_folder: Path | None = None,
        say: Callable[[str], None] = print,
        watch_id: str | None = None,
        send: Callable[..., Any] | None = None,
        benchmark: str | None = None,
        outputs: Path | None = None,
        execution: str = "next_open",
    ) -> None:
        self.warehouse, self.settings = warehouse, settings
        self.portfolio, self.daily_loss_limit, self.costs = portfolio, daily_loss_limit, costs
        self.source, self.tickers, self.calendar = source, sorted(set(tickers)), calendar
        self.timezone = timezone
        self.renotify_minutes, self.webhook, self.webhook_url = renotify_minutes, webhook, webhook_url
        self.lake_folder, self.say = lake_folder, say
        self.watch_id = watch_id or f"{socket.gethostname()}:{os.getpid()}"
        self.started_at = dt.datetime.now(UTC)
        self._send = send
        self.benchmark, self.outputs, self.execution = benchmark, outputs, execution
        self._derisk_blocked: str | None = None
        self._last_beat = -math.inf
        self._active_rows: pd.DataFrame | None = None
        self.status: str = "starting"
        self.session: dt.date | None = None
        self.last_bar: pd.Timestamp | None = None

    def run_id(self, day: dt.date) -> str:
        return f"watch-{self.portfolio}-{day:%Y%m%d}"

    # ------------------------------------------------------------------ session

    def run_session(
        self, day: dt.date, stop: threading.Event | None = None, max_batches: int | None = None
    ) -> SessionResult:
        from bentley.live.bars import session_window, split_batches
        from bentley.live.rules import RiskContext, stored_risk
        from bentley.live.stream import StreamState, load_book, opening_orders, previous_closes

        stop = stop or threading.Event()
        self._active_rows = None
        result = SessionResult(day)
        window = session_window(day, self.calendar)
        if window is None:
            result.messages.append(f"{day} is not a session")
            return result
        book = load_book(self.warehouse, self.portfolio, day)
        # The broker fills the pending daily orders at this session's open (next_open): so does the book.
        opening = opening_orders(self.warehouse, self.portfolio, day) if self.execution == "next_open" else {}
        tickers = sorted(set(self.tickers) | set(book.quantities) | set(opening))
        closes_for = [*tickers, *([self.benchmark] if self.benchmark and self.benchmark not in tickers else [])]
        extra = previous_closes(self.warehouse, [t for t in closes_for if t not in book.prev_close], day)
        state = StreamState.start(
            book, extra, opening, opening_cost_bps=self.costs.commission_bps + self.costs.slippage_bps
        )
        var, vols = stored_risk(self.warehouse, self.portfolio, tickers, day, self.settings.rules.var_breach.metric)
        context = RiskContext(self.portfolio, self.daily_loss_limit, var, vols, tuple(tickers), window[0], window[1])
        run_id = self.run_id(day)
        self._derisk_blocked = self._booked(day)

        marks = self.warehouse.read("intraday_marks", where={"portfolio": self.portfolio, "session": day})
        resume_after = None if marks.empty else pd.Timestamp(marks["ts"].max())
        seen: list[pd.DataFrame] = []
        if resume_after is not None:
            fills = self.warehouse.read("fills", where={"portfolio": self.portfolio, "date": day})
            fills = fills[fills["filled_at"].notna()]
            by_ts = {pd.Timestamp(ts): group for ts, group in fills.groupby("filled_at")} if len(fills) else {}
            for batch in split_batches(self.source.session_bars(day)):
                ts = pd.Timestamp(batch["ts"].iloc[0])
                if ts > resume_after:
                    break
                state.update(batch)
                if ts in by_ts:
                    state.apply_fills(by_ts[ts])
                seen.append(batch)
                result.refed += 1
            self._check_resume(state, marks)
            self.say(
                f"{day}: resumed after {resume_after.isoformat()} ({result.refed} batch(es) re-fed, "
                f"equity {state.equity:,.2f})"
            )
        self.say(
            f"{day}: watching {self.portfolio} ({len(state.quantities)} position(s), equity at the previous "
            f"close {book.equity:,.2f}) on {len(tickers)} ticker(s) from {self.source.name}"
        )
        stopped = False
        for batch in self.source.batches(day, after=resume_after):
            if stop.is_set() or (max_batches is not None and result.batches >= max_batches):
                stopped = True
                break
            seen.append(batch)
            snapshot = state.update(batch)
            self._process(snapshot, state, context, run_id, result)
            result.batches += 1
            self.beat("watching", day, snapshot.ts)
        else:
            stopped = stop.is_set()
        if not stopped:
            result.completed = True
            self._close_session(window[1], run_id)
            self.write_report(day)
        if self.lake_folder is not None and seen and self.settings.record_bars:
            from bentley.live.bars import write_bars

            write_bars(pd.concat(seen, ignore_index=True), self.lake_folder, self.timezone)
        self.say(
            f"{day}: {result.batches} batch(es) written, {result.alerts_opened} alert episode(s) opened, "
            f"{result.orders} order(s); equity {state.equity:,.2f} ({state.equity - book.equity:+,.2f})"
            + ("" if result.completed else " · stopped before the session's end")
        )
        return result

    def _booked(self, day: dt.date) -> str | None:
        """Why the watch must not de-risk `day` (the book has booked it or a later session), or None."""
        values = self.warehouse.read(
            "portfolio_values", where={"portfolio": self.portfolio}, start=day, columns=["date"]
        )
        if values.empty:
            return None
        return (
            f"the paper book {self.portfolio!r} is booked up to {pd.Timestamp(values['date'].max()):%Y-%m-%d}: "
            f"{day} is not de-risked (its ledger is closed; `runner paper rebook` reopens it)"
        )

    def _check_resume(self, state: Any, marks: pd.DataFrame) -> None:
        last = marks.sort_values("ts").iloc[-1]
        if not math.isclose(state.equity, float(last["equity"]), rel_tol=1e-9, abs_tol=1e-6):
            self.say(
                f"warning: re-fed equity {state.equity:,.6f} differs from the stored mark "
                f"{float(last['equity']):,.6f} at {pd.Timestamp(last['ts']).isoformat()}: the bars changed"
            )

    def _active(self) -> pd.DataFrame:
        """The watch's active episodes: read once per session, then kept from what it writes (it holds
        the lease, so no one else writes watch_* alerts meanwhile)."""
        from bentley.monitoring.alerts import episodes_of

        if self._active_rows is None:
            active = self.warehouse.read("alerts", where={"status": "active"})
            self._active_rows = episodes_of(active, watch=True) if len(active) else active
        return self._active_rows

    def _remember(self, rows: pd.DataFrame) -> None:
        from bentley.monitoring import alerts as alerts_lib

        if self._active_rows is None or not len(rows):
            return
        kept = self._active_rows[~self._active_rows["alert_id"].isin(rows["alert_id"])]
        current = rows[rows["status"] == alerts_lib.ACTIVE]
        self._active_rows = (
            pd.concat([kept, current], ignore_index=True) if len(kept) else current.reset_index(drop=True)
        )

    def _process(self, snapshot: Any, state: Any, context: Any, run_id: str, result: SessionResult) -> None:
        from bentley.live import derisk, rules
        from bentley.live.tables import intraday_marks, intraday_risk
        from bentley.monitoring import alerts as alerts_lib

        found = rules.evaluate(snapshot, state, context, self.settings.rules)
        active = self._active()
        if found or len(active):
            rows, due = alerts_lib.reconcile(
                active, rules.findings_frame(found), snapshot.ts.to_pydatetime(), self.renotify_minutes, run_id
            )
        else:  # nothing firing, nothing open: most batches of a quiet day
            rows = due = pd.DataFrame(columns=list(alerts_lib.ALERT_COLUMNS))
        known = set(active["alert_id"]) if len(active) else set()
        opened = rows[(rows["status"] == alerts_lib.ACTIVE) & ~rows["alert_id"].isin(known)] if len(rows) else rows
        result.alerts_opened += len(opened)
        orders: pd.DataFrame | None = None
        fills: pd.DataFrame | None = None
        mode = self.settings.on_loss_limit
        breached = bool(len(opened)) and bool((opened["rule"] == "watch_daily_loss").any())
        if breached and mode != "alert" and self._derisk_blocked is not None:
            self.say(f"{snapshot.ts.isoformat()}: {mode}: not done: {self._derisk_blocked}")
        elif breached and mode != "alert":
            trades = derisk.plan(mode, state, snapshot.ts, reduce_fraction=self.settings.reduce_fraction)
            if len(trades):
                orders, fills = derisk.orders_and_fills(
                    trades,
                    state,
                    snapshot.ts,
                    portfolio=self.portfolio,
                    commission_bps=self.costs.commission_bps,
                    slippage_bps=self.costs.slippage_bps,
                    reason=mode,
                    run_id=run_id,
                )
        mark = pd.DataFrame(
            [
                {
                    "portfolio": self.portfolio,
                    "ts": snapshot.ts,
                    "session": pd.Timestamp(result.day),
                    "equity": snapshot.equity,
                    "cash": snapshot.cash,
                    "positions_value": snapshot.positions_value,
                    "prev_equity": snapshot.prev_equity,
                    "pnl": snapshot.pnl,
                    "pnl_pct": snapshot.pnl_pct,
                    "high_water": snapshot.high_water,
                    "drawdown": snapshot.drawdown,
                    "realised_vol": snapshot.realised_vol,
                    "n_bars": snapshot.n_bars,
                    "run_id": run_id,
                }
            ]
        )
        risk = self._risk_rows(snapshot, state, context, result.day, run_id)
        with self.warehouse.begin() as conn:
            self.warehouse.upsert(intraday_marks, mark, conn=conn)
            self.warehouse.upsert(intraday_risk, risk, conn=conn)
            if len(rows):
                self.warehouse.upsert("alerts", rows, conn=conn)
            if orders is not None:
                self.warehouse.upsert("orders", orders, conn=conn)
                self.warehouse.upsert("fills", fills, conn=conn)
        self._remember(rows)
        if orders is not None and fills is not None:
            state.apply_fills(fills)
            result.orders += len(orders)
            self.say(
                f"{snapshot.ts.isoformat()}: {mode}: {len(orders)} order(s) filled "
                f"({', '.join(f'{t} {q:+g}' for t, q in zip(orders['ticker'], orders['quantity'], strict=True))})"
            )
        for row in opened.itertuples():
            self.say(f"ALERT [{row.severity}] {row.rule} {row.scope}: {row.message}")
        if len(due):
            self._deliver(rows, due, active, run_id, snapshot.ts)

    def _deliver(
        self, rows: pd.DataFrame, due: pd.DataFrame, active: pd.DataFrame, run_id: str, now: pd.Timestamp
    ) -> None:
        from bentley.monitoring import alerts as alerts_lib

        if self.webhook_url is None or self.webhook is None:
            return
        send = self._send or alerts_lib.send_webhook
        delivered = send(
            self.webhook_url,
            due,
            run_id=run_id,
            sent_at=now.to_pydatetime(),
            timeout_s=self.webhook.timeout_s,
            max_attempts=self.webhook.max_attempts,
            backoff_s=self.webhook.backoff_s,
        )
        if not delivered:
            unsent = alerts_lib.mark_unsent(rows, due, active)
            self.warehouse.upsert("alerts", unsent)
            self._remember(unsent)

    def _risk_rows(self, snapshot: Any, state: Any, context: Any, day: dt.date, run_id: str) -> pd.DataFrame:
        """The batch's intraday_risk rows: the book's figures, the benchmark's return, and three per
        held ticker, built column-wise (hundreds of tickers, every batch)."""
        import numpy as np

        book = f"portfolio:{self.portfolio}"
        rules = self.settings.rules
        metrics = ["pnl_pct", "drawdown", "realised_vol", "var_1d"]
        scopes = [book] * 4
        values = [snapshot.pnl_pct, snapshot.drawdown, snapshot.realised_vol, context.var_1d]
        thresholds = [-self.daily_loss_limit, -float(rules.drawdown.threshold), math.nan, math.nan]
        benchmark = state.tickers.get(self.benchmark) if self.benchmark else None
        if benchmark is not None and benchmark.last_ts is not None:  # the report's benchmark line
            metrics.append("benchmark_return")
            scopes.append(str(self.benchmark))
            values.append(benchmark.day_return)
            thresholds.append(math.nan)
        held = sorted(state.quantities)
        n = len(held)
        moves = np.fromiter((state.tickers[t].day_return for t in held), np.float64, n)
        vols = np.fromiter((context.daily_vol.get(t, math.nan) for t in held), np.float64, n)
        sigma = np.divide(moves, vols, out=np.full(n, math.nan), where=vols > 0)
        realised = np.fromiter((state.tickers[t].realised_vol for t in held), np.float64, n)
        nan = np.full(n, math.nan)
        return pd.DataFrame(
            {
                "metric": pd.array(
                    [*metrics, *["day_return"] * n, *["move_sigma"] * n, *["realised_vol"] * n], dtype="string"
                ),
                "scope": pd.array([*scopes, *held * 3], dtype="string"),
                "value": np.concatenate([np.asarray(values, dtype=np.float64), moves, sigma, realised]),
                "threshold": np.concatenate(
                    [np.asarray(thresholds, dtype=np.float64), nan, np.full(n, float(rules.vol_move.threshold)), nan]
                ),
                "ts": snapshot.ts,
                "session": pd.Timestamp(day),
                "run_id": pd.array([run_id] * (len(metrics) + 3 * n), dtype="string"),
            }
        )

    def _close_session(self, close: pd.Timestamp, run_id: str) -> None:
        """The session is over: the watch's episodes still open are resolved at the close."""
        from bentley.monitoring import alerts as alerts_lib

        active = self._active()
        if active.empty:
            return
        empty = pd.DataFrame(columns=list(alerts_lib.FINDING_COLUMNS))
        rows, _ = alerts_lib.reconcile(active, empty, close.to_pydatetime(), self.renotify_minutes, run_id)
        self.warehouse.upsert("alerts", rows)
        self._remember(rows)

    def write_report(self, day: dt.date) -> Path | None:
        """Render the session's intraday report and rebuild the home page that links it (without an
        outputs folder: nothing). A failure is said, never raised: the watch goes on."""
        from bentley import home
        from bentley.live.report import write_intraday_report
        from runner.pipeline import all_manifests

        if self.outputs is None:
            return None
        try:
            path = write_intraday_report(
                self.warehouse, self.outputs, self.portfolio, day, self.benchmark, self.timezone
            )
            home.write_home(self.outputs, all_manifests(self.outputs))
        except Exception as exc:  # noqa: BLE001 - a report must not stop the watch
            self.say(f"warning: the intraday report of {day} was not written: {type(exc).__name__}: {exc}")
            return None
        self.say(f"{day}: intraday report {path}")
        return path

    def finish_unfinished(self, day: dt.date, close: pd.Timestamp) -> None:
        """After the close of a session the watch marked but did not finish (killed, restarted after the
        close): resolve its open episodes at the close and render its report, as the close would have."""
        from bentley.live.report import report_path

        if self.outputs is not None and report_path(self.outputs, self.portfolio, day).is_file():
            return
        if self.warehouse.read("intraday_marks", where={"portfolio": self.portfolio, "session": day}).empty:
            return
        self._active_rows = None
        self._close_session(close, self.run_id(day))
        self.write_report(day)

    def beat(
        self,
        status: str | None = None,
        day: dt.date | None = None,
        last_bar: pd.Timestamp | None = None,
        force: bool = False,
    ) -> None:
        """Record what the watch is doing; write the heartbeat row at most every heartbeat_s unless `force`
        (the heartbeat thread of `command` forces one every heartbeat_s, whatever the source is doing)."""
        from bentley.live.tables import watch_heartbeats

        self.status = status or self.status
        self.session = day or self.session
        self.last_bar = last_bar if last_bar is not None else self.last_bar
        if not force and time.monotonic() - self._last_beat < self.settings.heartbeat_s:
            return
        self._last_beat = time.monotonic()
        row = {
            "watch_id": self.watch_id[:128],
            "host": socket.gethostname()[:128],
            "pid": os.getpid(),
            "portfolio": self.portfolio,
            "source": self.source.name,
            "session": pd.Timestamp(self.session) if self.session else None,
            "started_at": self.started_at,
            "heartbeat_at": dt.datetime.now(UTC),
            "last_bar_ts": self.last_bar,
            "status": self.status,
        }
        try:
            self.warehouse.upsert(watch_heartbeats, pd.DataFrame([row]))
        except Exception as exc:  # noqa: BLE001 - a heartbeat hiccup must not stop the watch
            self.say(f"warning: heartbeat: {type(exc).__name__}")


def _heartbeats(watcher: Watcher, done: threading.Event) -> threading.Thread:
    def run() -> None:
        while not done.wait(watcher.settings.heartbeat_s):
            watcher.beat(force=True)

    thread = threading.Thread(target=run, name="watch-heartbeat", daemon=True)
    thread.start()
    return thread


# --------------------------------------------------------------------------- wiring


def build_source(config: Config, settings: Watch, tickers: list[str], root: Path, stop: threading.Event) -> Any:
    from bentley.live import bars

    kind = settings.source.kind
    if kind == "sample":
        from bentley.sources.sample import SampleMarketSource

        market = SampleMarketSource(
            config.sample.seed,
            config.sample.n_tickers,
            config.sample.epoch,
            config.universe.benchmark,
            config.workflow.calendar,
            config.sample.signal,
        )
        return bars.SampleIntradayBars(
            market, tickers, interval=settings.source.interval, calendar=config.workflow.calendar
        )
    if kind == "replay":
        from bentley.sources.base import resolve_inside

        assert settings.source.path is not None, "the settings validator requires a path for kind replay"
        path = resolve_inside(root / config.sources.data_dir, settings.source.path)
        return bars.ReplayBarSource(
            path, speed=settings.source.speed, calendar=config.workflow.calendar, sleep=lambda s: stop.wait(s)
        )
    return bars.YahooIntradayBars(
        tickers,
        config.sources.http,
        interval=settings.source.interval,
        poll_s=settings.source.poll_s,
        calendar=config.workflow.calendar,
        sleep=lambda s: stop.wait(s),
        stop=stop.is_set,
    )


def watch_tickers(config: Config, settings: Watch, root: Path) -> list[str]:
    """watch.tickers, else universe.tickers, else the market source's (the book's holdings join later)."""
    if settings.tickers:
        return list(settings.tickers)
    if config.universe.tickers:
        return list(config.universe.tickers)
    if settings.source.kind == "replay":
        return []  # the recording decides
    from bentley.sources import market_source

    return market_source(config, root / config.sources.data_dir).available_tickers()


def command(
    args: argparse.Namespace, root: Path, say: Callable[[str], None] = print, stop: threading.Event | None = None
) -> int:
    from bentley.config import load_config, outputs_dir
    from bentley.monitoring.alerts import webhook_url
    from bentley.warehouse import Warehouse
    from runner.lease import LeaseKeeper, holder_alive, new_holder

    config = load_config(args.profile, args.overrides, root)
    settings = config.watch
    outputs = outputs_dir(args.outputs, root, args.profile)
    warehouse = Warehouse.from_settings(config.warehouse.url, outputs)
    stop = stop or threading.Event()
    holder = new_holder()
    try:
        grant = warehouse.acquire_lease(
            WATCH_LEASE, holder, f"watch:{holder}"[:64], settings.lease_ttl_s, holder_alive=holder_alive
        )
        if not grant.acquired:
            say(f"another watch is running on this store ({grant.holder or 'unknown holder'}); exiting")
            return EXIT_BUSY
        lost: list[str] = []

        def on_lost(reason: str) -> None:
            lost.append(reason)
            stop.set()

        keeper = LeaseKeeper(warehouse, holder, settings.lease_ttl_s, settings.heartbeat_s, on_lost, name=WATCH_LEASE)
        keeper.start()
        try:
            portfolio = settings.portfolio or config.trade.paper.portfolio
            tickers = watch_tickers(config, settings, root)
            benchmark = config.universe.benchmark
            if tickers and benchmark not in tickers:
                tickers.append(benchmark)  # the report draws the day against it
            source = build_source(config, settings, tickers, root, stop)
            watcher = Watcher(
                warehouse,
                settings,
                portfolio=portfolio,
                daily_loss_limit=config.trade.limits.daily_loss_limit,
                costs=config.trade.costs,
                source=source,
                tickers=tickers,
                calendar=config.workflow.calendar,
                timezone=config.workflow.timezone,
                renotify_minutes=config.monitor.renotify_minutes,
                webhook=config.monitor.webhook,
                webhook_url=webhook_url(config.monitor),
                say=say,
                watch_id=holder,
                lake_folder=outputs / "lake" / "raw" / settings.source.kind / "intraday_bars",
                benchmark=benchmark,
                outputs=outputs,
                execution=config.trade.execution,
            )
            done = threading.Event()
            beating = _heartbeats(watcher, done)
            try:
                if args.day is not None:
                    watcher.run_session(args.day, stop, args.max_batches)
                else:
                    _loop(watcher, config, settings, stop, args, say)
            finally:
                done.set()
                beating.join(timeout=10)
                watcher.beat("stopped", force=True)
        finally:
            keeper.stop()
            if not lost:
                warehouse.release_lease(WATCH_LEASE, holder)
        if lost:
            say(f"the watch lost its lease: {lost[0]}")
            return EXIT_LEASE_LOST
        return EXIT_OK
    finally:
        warehouse.dispose()


def _loop(
    watcher: Watcher,
    config: Config,
    settings: Watch,
    stop: threading.Event,
    args: argparse.Namespace,
    say: Callable[[str], None],
) -> None:
    calendar, zone = config.workflow.calendar, config.workflow.timezone
    offset = dt.timedelta(0)
    if args.now is not None:  # rehearse a given moment: the clock starts there and runs in real time
        start = args.now if args.now.tzinfo else args.now.replace(tzinfo=ZoneInfo(zone))
        offset = start - dt.datetime.now(UTC)

    def now() -> dt.datetime:
        return dt.datetime.now(UTC) + offset

    announced: pd.Timestamp | None = None
    while not stop.is_set():
        moment = now()
        day, window = market_state(moment, calendar, zone)
        if window is not None and window[0] <= pd.Timestamp(moment) < window[1]:
            watcher.run_session(day, stop, args.max_batches)
            if args.once:
                return
            continue
        if window is not None and pd.Timestamp(moment) >= window[1]:
            watcher.finish_unfinished(day, window[1])
        opening = next_open(moment, calendar, zone)
        watcher.beat("idle", force=True)
        if args.once or opening != announced:  # say it once per idle spell, not every poll
            say(f"outside market hours; the next session opens {opening.isoformat() if opening is not None else '?'}")
            announced = opening
        if args.once:
            return
        wait = settings.idle_poll_s
        if opening is not None:
            wait = min(wait, max(1.0, (opening - pd.Timestamp(moment)).total_seconds()))
        stop.wait(wait)
