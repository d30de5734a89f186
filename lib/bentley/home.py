"""The home page, `outputs/index.html`: what a user came for, then every run.

First the latest complete run (every stage of the pipeline ran or was up to date, and the run
succeeded): net worth and investable cash over time, the paper book against the benchmark,
today's signals and orders, active alerts, the champion model and its verdict, how fresh each
source's data is, and links to every report. Then the run history: profile, logical date,
status, what ran, and each run's `--set` overrides; runs that executed nothing (every stage up
to date) and runs of a few stages are folded below the full ones. Notebooks run in JupyterLab
(`runs/interactive-*`) are listed apart, and so are the latest end-of-day reports of the intraday
watch (`intraday/<session>_<book>.html`, written by `runner watch` at each close).

The overview reads the warehouse once, when a run finishes, and is kept next to the run's
manifest (`runs/<run>/overview.json`); while a run is going, the page is rebuilt from the
manifests alone. The page loads nothing from a network: charts are small inline SVGs.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bentley.lake import atomic_write_json, atomic_write_text, read_json

OVERVIEW_FILE = "overview.json"
#: Statuses of a stage that did its work, or found it already done.
STAGE_DONE = ("success", "cached")
#: Run statuses after which the run will not change any more.
FINAL = ("success", "failed", "interrupted", "crashed")
#: Sessions shown in the home page's small charts.
SPARK_POINTS = 260
#: The folder of the intraday watch's end-of-day reports (`bentley.live.report`), under outputs.
INTRADAY_DIR = "intraday"
#: Intraday reports linked from the home page, newest sessions first.
INTRADAY_SHOWN = 7

_CSS = """
:root{--ink:#1f2328;--muted:#59636e;--line:#d1d9e0;--soft:#f6f8fa;--accent:#0969da}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink)}
main{max-width:1120px;margin:0 auto;padding:1rem 1.5rem 3rem}
h1{font-size:1.6rem;margin:.5rem 0 .2rem}h2{font-size:1.2rem;margin:1.6rem 0 .5rem;padding-top:.4rem;border-top:1px solid var(--line)}
h3{font-size:1rem;margin:0 0 .4rem}
p{margin:.3rem 0}a{color:var(--accent)}
code{font:.85em ui-monospace,SFMono-Regular,Menlo,monospace;background:var(--soft);padding:.05em .3em;border-radius:4px}
table{border-collapse:collapse;font-size:.88rem;font-variant-numeric:tabular-nums}
th,td{padding:.28rem .55rem;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
thead th{background:var(--soft)}td.num{text-align:right;white-space:nowrap}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:1rem}
.card{border:1px solid var(--line);border-radius:8px;padding:.8rem 1rem;overflow-x:auto}
td.date{white-space:nowrap}.card table{font-size:.84rem}
.big{font-size:1.5rem;font-weight:600}.muted,.note{color:var(--muted);font-size:.88rem}
.success,.ok{color:#1a7f37}.failed,.critical,.bad{color:#cf222e;font-weight:600}
.warning,.skipped,.interrupted,.crashed,.stale{color:#8a6d00;font-weight:600}.running{color:#0969da}.cached{color:#57606a}
.banner{background:#ffebe9;border:1px solid #cf222e;padding:8px 12px;border-radius:6px}
.alerts{background:#fff8c5;border:1px solid #d4a72c;padding:8px 12px;border-radius:6px}
details{margin:.6rem 0}summary{cursor:pointer;color:var(--accent)}
svg text{font:11px system-ui,sans-serif;fill:var(--muted)}
.reports a{margin-right:.8rem;white-space:nowrap}
"""


# --------------------------------------------------------------------------- runs


def stage_counts(manifest: Mapping[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for stage in manifest.get("stages", {}).values():
        counts[stage.get("status", "pending")] = counts.get(stage.get("status", "pending"), 0) + 1
    return counts


def all_stage_names(manifests: Sequence[Mapping[str, Any]]) -> set[str]:
    """Every stage any run knows: the pipeline's stages, as far as the runs tell."""
    return {name for m in manifests for name in m.get("stages", {})}


def pipeline_stages(manifests: Sequence[Mapping[str, Any]]) -> dict[str, set[str]]:
    """run id -> the stages of the pipeline it ran (its `pipeline_file`, else params/pipeline.yaml);
    the stages the runs know when a pipeline file cannot be read."""
    from bentley import config

    known = all_stage_names(manifests)
    loaded: dict[str, set[str]] = {}
    found = {}
    for m in manifests:
        path = m.get("pipeline_file")
        if not path:
            try:
                path = str(config.project_root() / config.PARAMS_DIR / config.PIPELINE_FILE)
            except Exception:  # noqa: BLE001 - no project folder: what the runs know
                path = ""
        if path not in loaded:
            try:
                loaded[path] = set(config.load_pipeline(Path(path)).stages) if path else known
            except Exception:  # noqa: BLE001 - a pipeline file moved or broken: what the runs know
                loaded[path] = known
        found[m["run_id"]] = loaded[path]
    return found


def run_kind(manifest: Mapping[str, Any], stages: set[str]) -> str:
    """`full` (every stage of the pipeline, something executed), `no-op` (every stage up to date),
    `partial` (some stages), or the run's status when it did not succeed (`failed`, `running`...)."""
    status = manifest.get("status") or "unknown"
    if status != "success":
        return status
    names = set(manifest.get("stages", {}))
    counts = stage_counts(manifest)
    if names and counts.get("cached", 0) == len(names):
        return "no-op"
    return "full" if names >= stages else "partial"


def latest_complete(
    manifests: Sequence[Mapping[str, Any]], stages: Mapping[str, set[str]] | None = None
) -> Mapping[str, Any] | None:
    """The newest full run: it succeeded, covered every stage of its pipeline (run or up to date)
    and ran at least one (a run that found everything up to date wrote nothing to show)."""
    stages = pipeline_stages(manifests) if stages is None else stages
    full = [
        m
        for m in manifests
        if run_kind(m, stages.get(m["run_id"], set())) == "full"
        and all(s.get("status") in STAGE_DONE for s in m.get("stages", {}).values())
    ]
    return max(full, key=_started, default=None)


def _started(manifest: Mapping[str, Any]) -> str:
    return manifest.get("started_at") or ""


def overrides_html(manifest: Mapping[str, Any]) -> str:
    """The run's `--set` overrides as code, or "" (defaults)."""
    overrides = manifest.get("overrides") or []
    return " ".join(f"<code>--set {html.escape(str(o))}</code>" for o in overrides)


def interactive_runs(outputs: Path) -> list[dict[str, Any]]:
    """Folders JupyterLab sessions left (`runs/interactive-*`): which stages, what they wrote, when."""
    found = []
    for folder in sorted((Path(outputs) / "runs").glob("interactive-*")):
        if not folder.is_dir():
            continue
        stages = sorted(p.stem for p in (folder / "stage_results").glob("*.json"))
        artifacts = sorted(str(p.relative_to(folder)) for p in (folder / "artifacts").glob("*/*") if p.is_file())
        modified = max((p.stat().st_mtime for p in folder.rglob("*") if p.is_file()), default=folder.stat().st_mtime)
        found.append(
            {
                "run_id": folder.name,
                "stages": stages,
                "artifacts": artifacts,
                "modified": dt.datetime.fromtimestamp(modified, dt.UTC),
            }
        )
    return sorted(found, key=lambda r: r["modified"], reverse=True)


# --------------------------------------------------------------------------- overview


def build_overview(outputs: Path, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What the home page shows of one run, read from the warehouse (plain JSON-able values)."""
    import pandas as pd

    from bentley.warehouse import Warehouse

    outputs = Path(outputs)
    run_dir = outputs / "runs" / manifest["run_id"]
    params = read_json(run_dir / "params.json") if (run_dir / "params.json").is_file() else {}
    logical = dt.date.fromisoformat(manifest["logical_date"])
    benchmark = (params.get("universe") or {}).get("benchmark")
    portfolio = ((params.get("trade") or {}).get("paper") or {}).get("portfolio", "paper")
    warehouse = Warehouse.from_settings((params.get("warehouse") or {}).get("url"), outputs)
    try:
        out: dict[str, Any] = {
            "run_id": manifest["run_id"],
            "logical_date": manifest["logical_date"],
            "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "benchmark": benchmark,
            "portfolio": portfolio,
        }
        worth = warehouse.read("net_worth", end=logical)
        out["net_worth"] = _series(worth, "date", ["net_worth", "cash", "holdings_value"])
        cash = warehouse.read("investable_cash", end=logical, date_column="as_of")
        out["investable_cash"] = _records(cash.tail(1))
        out["investable_history"] = _series(cash, "as_of", ["investable_cash"])
        book = warehouse.read("portfolio_values", end=logical, where={"portfolio": portfolio})
        out["book"] = _series(book, "date", ["equity"])
        if benchmark and not book.empty:
            from bentley import adjustment

            start = book["date"].min().date()
            prices = warehouse.read("prices", tickers=[benchmark], start=start, end=logical)
            if not prices.empty:
                adjusted = adjustment.adjusted_as_of(prices)
                out["benchmark_prices"] = _series(adjusted, "date", ["adj_close"])
        metrics = warehouse.read("backtest_metrics", where={"run_id": manifest["run_id"]})
        out["backtest"] = _records(
            metrics[metrics["metric"].isin(["cumulative_return", "sharpe_ratio", "max_drawdown"])]
        )
        signals = warehouse.read("signals", where={"run_id": manifest["run_id"]})
        out["signals"] = _records(signals.sort_values("score", ascending=False)) if not signals.empty else []
        orders = warehouse.read("orders", where={"run_id": manifest["run_id"]})
        out["orders"] = _records(orders)
        alerts = warehouse.read("alerts", where={"status": "active"})
        out["alerts"] = _records(alerts.sort_values(["severity", "first_seen_at"])) if not alerts.empty else []
        decisions = warehouse.read("model_decisions")
        if not decisions.empty:
            decisions = decisions.sort_values("decided_at")
            out["decision"] = _records(decisions.tail(1))[0]
            promoted = decisions[decisions["promoted"].astype(bool)]
            out["champion"] = _records(promoted.tail(1))[0] if not promoted.empty else None
        monitoring = warehouse.read("model_monitoring", end=logical, date_column="as_of")
        out["monitoring"] = _records(monitoring.sort_values("as_of").tail(1))[0] if not monitoring.empty else None
        out["freshness"] = _freshness(warehouse, logical, pd)
        return out
    finally:
        warehouse.dispose()


def _freshness(warehouse: Any, logical: dt.date, pd: Any) -> list[dict[str, Any]]:
    """Per source and dataset: the latest date in the warehouse, against the run's logical date."""
    rows = []
    for table, column in (("prices", "date"), ("news", "date"), ("transactions", "date"), ("holdings", "as_of")):
        frame = warehouse.read(table, columns=[column, "source"])
        if frame.empty:
            rows.append({"dataset": table, "source": "-", "latest": None, "rows": 0})
            continue
        for source, part in frame.groupby("source", dropna=False):
            latest = pd.to_datetime(part[column]).max()
            rows.append(
                {
                    "dataset": table,
                    "source": str(source),
                    "latest": None if pd.isna(latest) else latest.date().isoformat(),
                    "rows": int(len(part)),
                }
            )
    ingest = warehouse.read("stage_runs", where={"stage": "ingest"})
    done = ingest[ingest["status"].isin(list(STAGE_DONE))]["ended_at"].dropna()
    rows.append(
        {
            "dataset": "last ingest",
            "source": "",
            "latest": None if done.empty else done.max().isoformat(timespec="minutes"),
            "rows": None,
        }
    )
    return rows


def _series(frame: Any, date_column: str, columns: Sequence[str]) -> dict[str, Any]:
    if frame.empty:
        return {"dates": [], **{c: [] for c in columns}}
    frame = frame.sort_values(date_column).tail(SPARK_POINTS)
    return {
        "dates": [d.date().isoformat() for d in frame[date_column]],
        **{c: [_plain(v) for v in frame[c]] for c in columns},
    }


def _records(frame: Any) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict("records")]


def _plain(value: Any) -> Any:
    """JSON-able: numbers (NaN as None), ISO text for times, text for anything else."""
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        try:
            import pandas as pd

            if pd.isna(value):
                return None
        except (TypeError, ValueError):
            pass
        return value.isoformat()
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, (bool, int, str)):
        return value
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def overview_for(outputs: Path, manifest: Mapping[str, Any], refresh: bool = False) -> dict[str, Any] | None:
    """The run's stored overview, built now when missing (or `refresh`); None when it cannot be
    built (the error is kept in the file, so the page says why)."""
    path = Path(outputs) / "runs" / manifest["run_id"] / OVERVIEW_FILE
    if path.is_file() and not refresh:
        try:
            return read_json(path)
        except (OSError, ValueError):
            pass
    try:
        overview = build_overview(outputs, manifest)
    except Exception as exc:  # noqa: BLE001 - the home page must be written whatever the warehouse says
        overview = {
            "run_id": manifest["run_id"],
            "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
        }
    atomic_write_json(path, overview)
    return overview


# --------------------------------------------------------------------------- page


def write_home(outputs: Path, manifests: Sequence[Mapping[str, Any]], *, refresh_run: str | None = None) -> Path:
    """Write `outputs/index.html`. The latest complete run's overview is built if it is missing,
    or rebuilt when that run is `refresh_run` (the run that just finished)."""
    outputs = Path(outputs)
    stages = pipeline_stages(manifests)
    latest = latest_complete(manifests, stages)
    overview = None
    if latest is not None:
        overview = overview_for(outputs, latest, refresh=latest["run_id"] == refresh_run)
    page = home_html(manifests, latest, overview, interactive_runs(outputs), stages, intraday_reports(outputs))
    return atomic_write_text(outputs / "index.html", page)


def intraday_reports(outputs: Path) -> list[dict[str, str]]:
    """The intraday watch's reports, newest session first: session, book and link (relative to outputs)."""
    found = []
    for path in sorted((Path(outputs) / INTRADAY_DIR).glob("*_*.html"), reverse=True):
        session, _, book = path.stem.partition("_")
        found.append({"session": session, "portfolio": book, "href": f"{INTRADAY_DIR}/{path.name}"})
    return found


def home_html(
    manifests: Sequence[Mapping[str, Any]],
    latest: Mapping[str, Any] | None,
    overview: Mapping[str, Any] | None,
    interactive: Sequence[Mapping[str, Any]] = (),
    stages: Mapping[str, set[str]] | None = None,
    intraday: Sequence[Mapping[str, str]] = (),
) -> str:
    esc = html.escape
    parts = ["<h1>Bentley Budget Bot</h1>"]
    newest = max(manifests, key=_started, default=None)
    if newest is not None and newest.get("status") in ("failed", "interrupted", "crashed"):
        parts.append(
            f"<p class='banner'>The newest run, <a href='runs/{esc(newest['run_id'])}/index.html'>"
            f"{esc(newest['run_id'])}</a>, {esc(newest['status'])}"
            + (
                f"; <code>runner resume {esc(newest['run_id'])}</code> finishes it"
                if newest["status"] != "failed"
                else ""
            )
            + ".</p>"
        )
    elif newest is not None and newest.get("status") == "running":
        parts.append(
            f"<p class='muted'>Run <a href='runs/{esc(newest['run_id'])}/index.html'>"
            f"{esc(newest['run_id'])}</a> is running.</p>"
        )
    if latest is None:
        parts.append(
            "<p>No complete run yet: <code>make pipeline</code> runs every stage. The runs so far are listed below.</p>"
        )
    else:
        parts.append(_overview_html(latest, overview))
    parts.append(_intraday_html(intraday))
    parts.append(_runs_html(manifests, pipeline_stages(manifests) if stages is None else stages))
    parts.append(_interactive_html(interactive))
    return _page("Bentley Budget Bot", "\n".join(parts))


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><main>\n{body}\n</main></body></html>\n"
    )


def _overview_html(latest: Mapping[str, Any], overview: Mapping[str, Any] | None) -> str:
    from bentley.reporting import fmt_date, fmt_money, fmt_number, fmt_pct

    esc = html.escape
    run_id = latest["run_id"]
    head = (
        f"<p class='muted'>Latest complete run <a href='runs/{esc(run_id)}/index.html'>{esc(run_id)}</a> · "
        f"logical date {esc(latest['logical_date'])} · profile {esc(latest.get('profile', ''))}"
        + (f" · {overrides_html(latest)}" if latest.get("overrides") else "")
        + "</p>"
    )
    reports = [(name, stage.get("report")) for name, stage in latest.get("stages", {}).items() if stage.get("report")]
    links = "".join(f"<a href='runs/{esc(run_id)}/{esc(report)}'>{esc(name)}</a>" for name, report in reports)
    parts = [head, f"<p class='reports'>Reports: {links}</p>"]
    if overview is None or overview.get("error"):
        why = (overview or {}).get("error", "not built")
        parts.append(f"<p class='note'>The overview could not be read from the warehouse: {esc(str(why))}.</p>")
        return "\n".join(parts)
    cards = []

    # Net worth and investable cash
    worth = overview.get("net_worth") or {}
    cash_rows = overview.get("investable_cash") or []
    if worth.get("dates"):
        last = worth["net_worth"][-1]
        first = worth["net_worth"][0]
        change = None if last is None or first in (None, 0) else last / first - 1
        body = [
            f"<div class='big'>{fmt_money(last)} USD</div>",
            f"<p class='muted'>net worth on {esc(worth['dates'][-1])}"
            + (f", {fmt_pct(change, signed=True)} since {esc(worth['dates'][0])}" if change is not None else "")
            + "</p>",
            sparkline(worth["dates"], {"net worth": worth["net_worth"]}),
        ]
        if cash_rows:
            c = cash_rows[0]
            if (c.get("investable_cash") or 0) > 0:
                body.append(
                    f"<p><b>{fmt_money(c['investable_cash'])} USD</b> investable after the emergency fund "
                    f"({fmt_money(c.get('emergency_fund'))} USD) and upcoming bills "
                    f"({fmt_money(c.get('upcoming_bills'))} USD).</p>"
                )
            else:
                body.append(
                    f"<p><b>Nothing investable</b>: {fmt_money(c.get('shortfall'))} USD short of the emergency "
                    f"fund ({fmt_money(c.get('emergency_fund'))} USD) plus upcoming bills "
                    f"({fmt_money(c.get('upcoming_bills'))} USD); cash {fmt_money(c.get('cash'))} USD.</p>"
                )
        investable = overview.get("investable_history") or {}
        if len(investable.get("dates") or []) > 1:
            body.append(sparkline(investable["dates"], {"investable cash": investable["investable_cash"]}))
        cards.append(_card("Net worth and investable cash", "".join(body), run_id, "budget", latest))

    # Paper book against the benchmark
    book = overview.get("book") or {}
    bench = overview.get("benchmark_prices") or {}
    backtest = {(r["strategy"], r["metric"]): r for r in overview.get("backtest") or []}
    body = []
    if book.get("dates"):
        equity = book["equity"]
        ret = None if not equity or not equity[0] else equity[-1] / equity[0] - 1
        body.append(
            f"<div class='big'>{fmt_money(equity[-1])} USD</div><p class='muted'>paper book "
            f"<code>{esc(str(overview.get('portfolio')))}</code> on {esc(book['dates'][-1])}, "
            f"{len(equity)} session(s)"
            + (
                f", {fmt_pct(ret, signed=True)} since {esc(book['dates'][0])}"
                if ret is not None and len(equity) > 1
                else ""
            )
            + "</p>"
        )
        lines = {"paper book": _rebased(equity)}
        if bench.get("dates"):
            prices = dict(zip(bench["dates"], bench["adj_close"], strict=True))
            aligned = [prices.get(d) for d in book["dates"]]
            lines[f"benchmark {overview.get('benchmark')}"] = _rebased(aligned)
            bench_ret = _total(aligned)
            if bench_ret is not None and len(equity) > 1:
                body.append(
                    f"<p>Benchmark {esc(str(overview.get('benchmark')))}: {fmt_pct(bench_ret, signed=True)} "
                    "over the same sessions.</p>"
                )
        if len(equity) > 1:
            body.append(sparkline(book["dates"], lines))
        else:
            body.append(
                "<p class='note'>One session booked: the book's first session only sets its base, so there "
                "is no return to compare yet.</p>"
            )
    signal_ret = backtest.get(("signal", "cumulative_return"))
    bench_bt = backtest.get(("benchmark", "cumulative_return"))
    if signal_ret and bench_bt:
        body.append(
            f"<p>Backtest of the strategy over {signal_ret.get('window_start', '')[:10]} to "
            f"{signal_ret.get('window_end', '')[:10]}: {fmt_pct(signal_ret.get('value'), signed=True)} against "
            f"{fmt_pct(bench_bt.get('value'), signed=True)} for the benchmark (Sharpe "
            f"{fmt_number((backtest.get(('signal', 'sharpe_ratio')) or {}).get('value'), 2)} vs "
            f"{fmt_number((backtest.get(('benchmark', 'sharpe_ratio')) or {}).get('value'), 2)}).</p>"
        )
    if body:
        cards.append(_card("Paper book against the benchmark", "".join(body), run_id, "trade", latest))

    # Today's signals and orders
    signals = overview.get("signals") or []
    orders = overview.get("orders") or []
    body = []
    if signals:
        rows = "".join(
            f"<tr><td>{esc(str(s['ticker']))}</td><td class='num'>{fmt_number(s.get('score'), 3)}</td>"
            f"<td class='num'>{fmt_pct(s.get('target_weight'))}</td></tr>"
            for s in signals[:8]
        )
        body.append(
            f"<table><thead><tr><th>Ticker</th><th>Score</th><th>Target weight</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
    if orders:
        rows = "".join(
            f"<tr><td>{esc(str(o['ticker']))}</td><td class='num'>{'buy' if (o.get('quantity') or 0) > 0 else 'sell'} "
            f"{fmt_number(abs(o.get('quantity') or 0), 0)}</td><td class='num'>{fmt_money(o.get('reference_price'), 2)}</td>"
            f"<td>{esc(str(o.get('status')))}</td></tr>"
            for o in orders[:10]
        )
        body.append(
            f"<p><b>{len(orders)} order(s)</b> for the next session:</p><table><thead><tr><th>Ticker</th>"
            f"<th>Order</th><th>Ref. price</th><th>Status</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    elif signals:
        body.append("<p>No orders: the book is at its target.</p>")
    if body:
        cards.append(_card(f"Signals and orders for {latest['logical_date']}", "".join(body), run_id, "trade", latest))

    # Alerts
    alerts = overview.get("alerts") or []
    if alerts:
        items = "".join(
            f"<li><span class='{esc(str(a.get('severity')))}'>{esc(str(a.get('severity')))}</span> "
            f"{esc(str(a.get('rule')))} ({esc(str(a.get('scope')))}): {esc(str(a.get('message')))} "
            f"<span class='muted'>since {esc(fmt_date(a.get('first_seen_at')))}</span></li>"
            for a in alerts
        )
        alerts_body = f"<ul>{items}</ul>"
    else:
        alerts_body = "<p class='ok'>No active alert.</p>"
    cards.append(_card(f"Active alerts ({len(alerts)})", alerts_body, run_id, "monitor", latest))

    # Champion and verdict
    champion, decision, monitoring = overview.get("champion"), overview.get("decision"), overview.get("monitoring")
    champ: list[str] = []
    if champion:
        champ.append(
            f"<p><b>{esc(str(champion.get('model_name')))} v{esc(str(champion.get('challenger_version')))}</b> "
            f"is the champion since {esc(fmt_date(champion.get('decided_at')))}.</p>"
        )
    else:
        champ.append("<p>No champion model yet.</p>")
    if decision:
        outcome = "promoted" if decision.get("promoted") else "not promoted"
        champ.append(
            f"<p>Latest decision ({esc(fmt_date(decision.get('decided_at')))}): challenger "
            f"v{esc(str(decision.get('challenger_version')))} {outcome}. {esc(str(decision.get('verdict') or ''))}</p>"
        )
    if monitoring:
        flag = "retraining required" if monitoring.get("retraining_required") else "no retraining needed"
        champ.append(
            f"<p>Monitoring on {esc(fmt_date(monitoring.get('as_of')))}: recent accuracy "
            f"{fmt_pct(monitoring.get('recent_accuracy'))} against {fmt_pct(monitoring.get('holdout_accuracy'))} "
            f"on its holdout; {flag}.</p>"
        )
    cards.append(_card("Champion model and its verdict", "".join(champ), run_id, "train", latest))

    # Freshness
    fresh = overview.get("freshness") or []
    if fresh:
        fresh_rows: list[str] = []
        for f in fresh:
            latest_text = f.get("latest")
            behind = ""
            if f["dataset"] == "prices" and latest_text:
                if latest_text[:10] < latest["logical_date"]:
                    behind = " <span class='stale'>behind the logical date</span>"
            fresh_rows.append(
                f"<tr><td>{esc(f['dataset'])}</td><td>{esc(f.get('source') or '')}</td>"
                f"<td class='date'>{esc(fmt_date(latest_text) if latest_text else 'none')}{behind}</td>"
                f"<td class='num'>{'' if f.get('rows') is None else fmt_number(f['rows'], 0)}</td></tr>"
            )
        fresh_body = (
            f"<table><thead><tr><th>Data</th><th>Source</th><th>Latest</th><th>Rows</th></tr></thead>"
            f"<tbody>{''.join(fresh_rows)}</tbody></table>"
        )
        cards.append(_card("Data freshness", fresh_body, run_id, "etl", latest))
    parts.append(f"<div class='cards'>{''.join(cards)}</div>")
    return "\n".join(parts)


def _card(title: str, body: str, run_id: str, stage: str, manifest: Mapping[str, Any]) -> str:
    report = (manifest.get("stages", {}).get(stage) or {}).get("report")
    link = f" <a class='muted' href='runs/{html.escape(run_id)}/{html.escape(report)}'>report</a>" if report else ""
    return f"<section class='card'><h3>{html.escape(title)}{link}</h3>{body}</section>"


def _rebased(values: Sequence[float | None]) -> list[float | None]:
    base = next((v for v in values if v), None)
    return [None if v is None or not base else 100.0 * v / base for v in values]


def _total(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v]
    return known[-1] / known[0] - 1 if len(known) > 1 else None


_SPARK_COLOURS = ("#1f2328", "#0969da", "#bc4c00", "#1a7f37")


def sparkline(
    dates: Sequence[str], lines: Mapping[str, Sequence[float | None]], width: int = 340, height: int = 90
) -> str:
    """Small inline SVG lines over `dates` with first/last date and min/max labels, and a legend."""
    values = [v for series in lines.values() for v in series if v is not None]
    if len(dates) < 2 or not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    left, right, top, bottom = 4, width - 60, 6, height - 16

    def xy(i: int, v: float) -> str:
        x = left + (right - left) * i / (len(dates) - 1)
        y = bottom - (bottom - top) * (v - low) / span
        return f"{x:.1f},{y:.1f}"

    paths = []
    for colour, (name, series) in zip(_SPARK_COLOURS, lines.items(), strict=False):
        points = " ".join(xy(i, v) for i, v in enumerate(series) if v is not None)
        paths.append(
            f"<polyline fill='none' stroke='{colour}' stroke-width='1.6' points='{points}'>"
            f"<title>{html.escape(name)}</title></polyline>"
        )
    labels = (
        f"<text x='{right + 4}' y='{top + 8}'>{_short(high)}</text>"
        f"<text x='{right + 4}' y='{bottom}'>{_short(low)}</text>"
        f"<text x='{left}' y='{height - 2}'>{html.escape(dates[0])}</text>"
        f"<text x='{right}' y='{height - 2}' text-anchor='end'>{html.escape(dates[-1])}</text>"
    )
    legend = " ".join(
        f"<span style='color:{c}'>&#9644; {html.escape(n)}</span>" for c, n in zip(_SPARK_COLOURS, lines, strict=False)
    )
    return (
        f"<svg role='img' aria-label='{html.escape(', '.join(lines))} from {html.escape(dates[0])} to "
        f"{html.escape(dates[-1])}' width='{width}' height='{height}' viewBox='0 0 {width} {height}'>"
        f"{''.join(paths)}{labels}</svg><div class='note'>{legend}</div>"
    )


def _short(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value / 1e6:.2f}M"
    if magnitude >= 1e4:
        return f"{value / 1e3:.0f}k"
    return f"{value:,.1f}"


def _runs_html(manifests: Sequence[Mapping[str, Any]], stages: Mapping[str, set[str]]) -> str:
    from bentley.reporting import fmt_date

    esc = html.escape
    if not manifests:
        return "<h2>Runs</h2><p>No runs yet.</p>"
    ordered = sorted(manifests, key=_started, reverse=True)
    main: list[str] = []
    folded: list[str] = []
    for m in ordered:
        kind = run_kind(m, stages.get(m["run_id"], set()))
        counts = stage_counts(m)
        ran = counts.get("success", 0) + counts.get("failed", 0)
        what = (
            f"{ran} ran, {counts.get('cached', 0)} up to date"
            if kind != "partial"
            else f"{', '.join(m.get('stages', {}))}"
        )
        if counts.get("skipped"):
            what += f", {counts['skipped']} skipped"
        started = fmt_date(m.get("started_at"), na="") if m.get("started_at") else ""
        duration = m.get("duration_s")
        row = (
            f"<tr><td><a href='runs/{esc(m['run_id'])}/index.html'>{esc(m['run_id'])}</a></td>"
            f"<td class='{esc(m.get('status') or '')}'>{esc(m.get('status') or '')}</td>"
            f"<td>{esc(kind if kind in ('full', 'no-op', 'partial') else '')}</td>"
            f"<td>{esc(m.get('profile') or '')}</td><td class='date'>{esc(m.get('logical_date') or '')}</td>"
            f"<td class='date'>{esc(started)}</td><td class='num'>{'' if duration is None else f'{duration:,.1f} s'}</td>"
            f"<td>{esc(what)}</td><td>{overrides_html(m) or '<span class=muted>defaults</span>'}</td></tr>"
        )
        (folded if kind in ("no-op", "partial") else main).append(row)
    head = (
        "<thead><tr><th>Run</th><th>Status</th><th>Kind</th><th>Profile</th><th>Logical date</th>"
        "<th>Started</th><th>Duration</th><th>What ran</th><th>Overrides</th></tr></thead>"
    )
    parts = [
        "<h2>Runs</h2>",
        "<p class='note'>Newest first. Full runs and runs that did not succeed are listed; runs "
        "that found every stage up to date (no-op) and runs of some stages (partial) are folded below.</p>",
    ]
    parts.append(f"<table>{head}<tbody>{''.join(main)}</tbody></table>" if main else "<p>No full run yet.</p>")
    if folded:
        parts.append(
            f"<details><summary>{len(folded)} no-op or partial run(s)</summary><table>{head}<tbody>"
            f"{''.join(folded)}</tbody></table></details>"
        )
    return "\n".join(parts)


def _intraday_html(reports: Sequence[Mapping[str, str]]) -> str:
    esc = html.escape
    if not reports:
        return ""
    links = "".join(
        f"<li><a href='{esc(r['href'])}'>{esc(r['session'])}</a> {esc(r['portfolio'])}</li>"
        for r in reports[:INTRADAY_SHOWN]
    )
    more = (
        f"<p class='note'>{len(reports) - INTRADAY_SHOWN} older report(s) in <code>{INTRADAY_DIR}/</code>.</p>"
        if len(reports) > INTRADAY_SHOWN
        else ""
    )
    return (
        "<h2>Intraday watch</h2><p class='note'>End-of-day reports of <code>runner watch</code>: the book's "
        f"equity through the session against the benchmark, the alert timeline and the orders.</p><ul>{links}</ul>"
        + more
    )


def _interactive_html(interactive: Sequence[Mapping[str, Any]]) -> str:
    esc = html.escape
    if not interactive:
        return ""
    rows = []
    for run in interactive:
        links = " ".join(
            f"<a href='runs/{esc(run['run_id'])}/{esc(a)}'>{esc(Path(a).name)}</a>" for a in run["artifacts"][:6]
        )
        rows.append(
            f"<tr><td>{esc(run['run_id'])}</td><td>{esc(', '.join(run['stages']) or '-')}</td>"
            f"<td>{esc(run['modified'].strftime('%Y-%m-%d %H:%M UTC'))}</td><td>{links}</td></tr>"
        )
    return (
        "<h2>Interactive notebook runs</h2><p class='note'>Notebooks run in JupyterLab (<code>make lab</code>) "
        "write to <code>runs/interactive-*</code>; they are not pipeline runs and have no report.</p>"
        "<table><thead><tr><th>Folder</th><th>Stages</th><th>Last written</th><th>Artifacts</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
