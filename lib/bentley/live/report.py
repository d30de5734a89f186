"""The end-of-day intraday report of one watched session: `outputs/intraday/<day>_<book>.html`.

What a person checks after the close: the book's equity through the day against the
benchmark (both as a return on the previous close), the alert timeline (every `watch_*`
episode of the session: opened, resolved, message), and the de-risking orders with their fills.

It is rendered from the warehouse alone (`intraday_marks`, the `benchmark_return` rows of
`intraday_risk`, `alerts`, the intraday rows of `orders`/`fills`), so it can be rendered again
any time the rows exist (`runner watch --day DATE` on a session already watched re-feeds it,
writes nothing and renders it). The page is one file in the home page's style: every text
escaped, no script, nothing fetched (the chart is an inline SVG), readable offline. The home
page (`bentley.home`) links the latest reports.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bentley.home import INTRADAY_DIR, _page, sparkline
from bentley.lake import atomic_write_text
from bentley.live.bars import session_window
from bentley.monitoring.alerts import WATCH_RULE_PREFIX
from bentley.reporting import fmt_money, fmt_number, fmt_pct
from bentley.warehouse import Warehouse

#: How a report shows a timestamp (exchange-local HH:MM).
Clock = Callable[[pd.Timestamp], str]
#: Characters kept from a portfolio name in the file name (others become `_`).
_UNSAFE = re.compile(r"[^A-Za-z0-9@._-]+")


@dataclass(frozen=True)
class IntradaySession:
    """What the report shows, read from the warehouse."""

    portfolio: str
    day: dt.date
    benchmark: str | None
    marks: pd.DataFrame  # intraday_marks of the session, by ts
    benchmark_returns: pd.Series  # ts -> the benchmark's return on its previous close
    alerts: pd.DataFrame  # the session's watch_* episodes, by first_seen_at
    orders: pd.DataFrame  # the intraday orders with their fills' price, costs and cash change


def report_path(outputs: Path, portfolio: str, day: dt.date) -> Path:
    """Where the session's report goes: one file per (session, book), the date first so names sort."""
    return Path(outputs) / INTRADAY_DIR / f"{day:%Y-%m-%d}_{_UNSAFE.sub('_', portfolio)}.html"


def read_session(warehouse: Warehouse, portfolio: str, day: dt.date, benchmark: str | None) -> IntradaySession:
    """The session's rows. Alerts are the watch's episodes first seen during the session whose scope
    is this book or not a book (tickers, the feed)."""
    marks = warehouse.read("intraday_marks", where={"portfolio": portfolio, "session": day}).sort_values("ts")
    returns = pd.Series(dtype="float64")
    if benchmark:
        rows = warehouse.read("intraday_risk", where={"session": day, "metric": "benchmark_return", "scope": benchmark})
        returns = rows.set_index("ts")["value"].astype("float64").sort_index()
    window = session_window(day)
    alerts = warehouse.read("alerts")
    if len(alerts) and window is not None:
        scope = alerts["scope"].astype(str)
        ours = (scope == f"portfolio:{portfolio}") | ~scope.str.startswith("portfolio:")
        during = (alerts["first_seen_at"] >= window[0]) & (alerts["first_seen_at"] <= window[1])
        alerts = alerts[alerts["rule"].astype(str).str.startswith(WATCH_RULE_PREFIX) & ours & during]
    alerts = alerts.sort_values(["first_seen_at", "rule", "scope"]).reset_index(drop=True)
    orders = warehouse.read("orders", where={"portfolio": portfolio, "decided_on": day})
    orders = orders[orders["decided_at"].notna()]
    fills = warehouse.read("fills", where={"portfolio": portfolio, "date": day})
    fills = fills.loc[fills["filled_at"].notna(), ["order_id", "price", "commission", "slippage", "cash_change"]]
    orders = orders.merge(fills, on="order_id", how="left").sort_values(["decided_at", "ticker"])
    return IntradaySession(portfolio, day, benchmark, marks.reset_index(drop=True), returns, alerts, orders)


def report_html(session: IntradaySession, timezone: str) -> str:
    """The page: a summary line, the equity chart, the alert timeline and the orders."""
    esc = html.escape
    title = f"Intraday watch: {session.portfolio} on {session.day:%Y-%m-%d}"
    parts = ["<p><a href='../index.html'>Home</a></p>", f"<h1>{esc(title)}</h1>"]
    marks = session.marks

    def local(ts: pd.Timestamp) -> str:
        return f"{pd.Timestamp(ts).tz_convert(timezone):%H:%M}"

    if marks.empty:
        parts.append("<p>The watch stored no mark for this session.</p>")
    else:
        last = marks.iloc[-1]
        parts.append(
            f"<p><span class='big'>{fmt_money(last['equity'], 2)} USD</span> at {esc(local(last['ts']))} "
            f"({esc(timezone)}): {fmt_money(last['pnl'], 2)} USD, {fmt_pct(last['pnl_pct'], 2, signed=True)} on the "
            f"previous close ({fmt_money(last['prev_equity'], 2)} USD); deepest drawdown "
            f"{fmt_pct(marks['drawdown'].min(), 2)}; {len(marks)} batch(es), {len(session.alerts)} alert "
            f"episode(s), {len(session.orders)} de-risking order(s).</p>"
        )
        parts.append(_chart(session, local))
    parts.append(_alerts_html(session.alerts, local, timezone))
    parts.append(_orders_html(session.orders, local))
    parts.append(_equity_table(session, local))
    return _page(title, "\n".join(parts))


def write_intraday_report(
    warehouse: Warehouse,
    outputs: Path,
    portfolio: str,
    day: dt.date,
    benchmark: str | None,
    timezone: str,
) -> Path:
    """Render the session's report from the warehouse into `report_path` (atomically); its path."""
    page = report_html(read_session(warehouse, portfolio, day, benchmark), timezone)
    return atomic_write_text(report_path(outputs, portfolio, day), page)


def _chart(session: IntradaySession, local: Clock) -> str:
    marks = session.marks
    times = [local(ts) for ts in marks["ts"]]
    lines = {"book, % on the previous close": [_pct(v) for v in marks["pnl_pct"]]}
    bench = session.benchmark_returns.reindex(pd.DatetimeIndex(marks["ts"]))
    name = html.escape(session.benchmark or "")
    if bench.notna().any():
        lines[f"{session.benchmark}, % on its previous close"] = [_pct(v) for v in bench]
        note = ""
    elif not session.benchmark:
        note = "<p class='note'>No benchmark line: no benchmark was given.</p>"
    elif len(session.benchmark_returns):
        note = f"<p class='note'>No benchmark line: {name} has no previous close in the prices table.</p>"
    else:
        note = f"<p class='note'>No benchmark line: the feed had no bar of {name}.</p>"
    return "<h2>Equity through the day</h2>" + sparkline(times, lines, width=900, height=260) + note


def _pct(value: float) -> float | None:
    return None if pd.isna(value) else 100.0 * float(value)


def _alerts_html(alerts: pd.DataFrame, local: Clock, timezone: str) -> str:
    esc = html.escape
    if alerts.empty:
        return "<h2>Alert timeline</h2><p>No alert during the session.</p>"
    rows = "".join(
        f"<tr><td class='date'>{esc(local(a.first_seen_at))}</td>"
        f"<td class='date'>{esc(local(a.resolved_at)) if pd.notna(a.resolved_at) else 'open'}</td>"
        f"<td class='{esc(str(a.severity))}'>{esc(str(a.severity))}</td><td>{esc(str(a.rule))}</td>"
        f"<td>{esc(str(a.scope))}</td><td class='num'>{fmt_number(a.value)}</td>"
        f"<td class='num'>{fmt_number(a.threshold)}</td><td>{esc(str(a.message))}</td></tr>"
        for a in alerts.itertuples()
    )
    return (
        f"<h2>Alert timeline</h2><p class='note'>Opened and resolved in {esc(timezone)} time (the messages "
        "quote UTC).</p><table><thead><tr><th>Opened</th><th>Resolved</th><th>Severity</th><th>Rule</th>"
        f"<th>Scope</th><th>Value</th><th>Threshold</th><th>Message</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _orders_html(orders: pd.DataFrame, local: Clock) -> str:
    esc = html.escape
    if orders.empty:
        return "<h2>Orders</h2><p>No de-risking order.</p>"
    rows = "".join(
        f"<tr><td class='date'>{esc(local(o.decided_at))}</td><td>{esc(str(o.ticker))}</td>"
        f"<td>{'buy' if o.quantity > 0 else 'sell'}</td><td class='num'>{fmt_number(abs(o.quantity), 0)}</td>"
        f"<td class='num'>{fmt_number(o.price, 2)}</td>"
        f"<td class='num'>{fmt_money(o.commission + o.slippage, 2)}</td>"
        f"<td class='num'>{fmt_money(o.cash_change, 2)}</td><td>{esc(str(o.reason))}</td>"
        f"<td>{esc(str(o.status))}</td></tr>"
        for o in orders.itertuples()
    )
    return (
        "<h2>Orders</h2><p class='note'>Paper de-risking on the daily loss limit, filled at the batch's last "
        "price; they are rows of the ledger's orders and fills, booked with the session.</p><table><thead><tr>"
        "<th>Decided</th><th>Ticker</th><th>Side</th><th>Shares</th><th>Price</th><th>Costs</th>"
        f"<th>Cash change</th><th>Reason</th><th>Status</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _equity_table(session: IntradaySession, local: Clock) -> str:
    """Every mark, folded: the figures behind the chart."""
    marks = session.marks
    if marks.empty:
        return ""
    bench = session.benchmark_returns.reindex(pd.DatetimeIndex(marks["ts"]))
    rows = "".join(
        f"<tr><td class='date'>{html.escape(local(m.ts))}</td>"
        f"<td class='num'>{fmt_money(m.equity, 2)}</td>"
        f"<td class='num'>{fmt_pct(m.pnl_pct, 2, signed=True)}</td>"
        f"<td class='num'>{fmt_pct(b, 2, signed=True)}</td><td class='num'>{fmt_pct(m.drawdown, 2)}</td></tr>"
        for m, b in zip(marks.itertuples(), bench, strict=True)
    )
    name = html.escape(session.benchmark or "benchmark")
    return (
        f"<details><summary>Every mark ({len(marks)})</summary><table><thead><tr><th>Time</th><th>Equity</th>"
        f"<th>Book</th><th>{name}</th><th>Drawdown</th></tr></thead><tbody>{rows}</tbody></table></details>"
    )
