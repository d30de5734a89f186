"""`runner watch`: a crafted day end to end into the ledger and the report, restarts, reruns, the lease,
and the calendar."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from bs4 import BeautifulSoup

from bentley.config import Costs
from bentley.live.bars import ReplayBarSource
from bentley.live.report import report_path, write_intraday_report
from bentley.live.settings import watch_settings
from bentley.trading import broker
from bentley.warehouse import Warehouse
from runner import cli, watch
from runner.outcomes import EXIT_BUSY

from .conftest import DAY, OPEN_UTC, PREVIOUS, crafted_bars, seed_book

ROOT = Path(__file__).resolve().parents[3]
COSTS = SimpleNamespace(commission_bps=1.0, slippage_bps=5.0)
WEBHOOK = SimpleNamespace(timeout_s=1.0, max_attempts=1, backoff_s=0.0)
#: AAA falls a dollar a minute; BBB is flat. The book (AAA 100 x 100, BBB 200 x 50, cash 10,000)
#: is down 900 = 3.00% at 13:39 (not beyond the limit) and 1,000 = 3.33% at 13:40: the breach minute.
BREACH = OPEN_UTC + pd.Timedelta(minutes=10)
TABLES = ("intraday_marks", "intraday_risk", "alerts", "orders", "fills")


def _recording(folder: Path) -> Path:
    bars = crafted_bars(
        {"AAA": [100.0 - i for i in range(20)], "BBB": [50.0] * 20}, first_open={"AAA": 100.0, "BBB": 50.0}
    )
    path = folder / "day.csv"
    bars.assign(ts=bars["ts"].map(lambda t: t.isoformat())).to_csv(path, index=False)
    return path


def _watcher(
    warehouse: Warehouse,
    recording: Path,
    sent: list | None = None,
    mode: str = "flatten",
    outputs: Path | None = None,
    lines: list[str] | None = None,
) -> watch.Watcher:
    settings = watch_settings(overrides=[f"on_loss_limit={mode}", "source.kind=replay", f"source.path={recording}"])
    return watch.Watcher(
        warehouse,
        settings,
        portfolio="paper",
        daily_loss_limit=0.03,
        costs=COSTS,
        source=ReplayBarSource(recording, speed=0),
        tickers=[],
        calendar="XNYS",
        timezone="America/New_York",
        renotify_minutes=240,
        webhook=WEBHOOK,
        webhook_url="http://127.0.0.1:9/hook" if sent is not None else None,
        say=(lines.append if lines is not None else lambda _line: None),
        outputs=outputs,
        benchmark="SPY",
        send=(lambda url, due, **kw: sent.append(list(due["rule"])) or True) if sent is not None else None,
    )


def _tables(warehouse: Warehouse) -> dict[str, pd.DataFrame]:
    return {name: warehouse.read(name) for name in TABLES}


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    return _recording(tmp_path)


def test_a_crafted_day_opens_one_loss_episode_at_the_breach_minute_and_flattens(
    warehouse: Warehouse, recording: Path
) -> None:
    seed_book(warehouse)
    sent: list = []
    result = _watcher(warehouse, recording, sent).run_session(DAY)
    assert result.batches == 20 and result.completed and result.orders == 2
    alerts = warehouse.read("alerts")
    loss = alerts[alerts["rule"] == "watch_daily_loss"]
    assert len(loss) == 1 and loss["first_seen_at"].iloc[0] == BREACH
    assert loss["status"].iloc[0] == "resolved" and loss["resolved_at"].iloc[0] == OPEN_UTC + pd.Timedelta(
        hours=6, minutes=30
    )
    assert "AAA" in loss["message"].iloc[0]
    assert sum(rules.count("watch_daily_loss") for rules in sent) == 1  # the webhook got it once
    orders, fills = warehouse.read("orders"), warehouse.read("fills")  # the ledger's own tables
    assert set(orders["ticker"]) == {"AAA", "BBB"} and (orders["decided_at"] == BREACH).all()
    assert set(orders["status"]) == {"filled"} and (orders["decided_on"] == pd.Timestamp(DAY)).all()
    assert fills.set_index("ticker")["price"].to_dict() == {"AAA": 90.0, "BBB": 50.0}
    assert (fills["filled_at"] == BREACH).all() and set(fills["order_id"]) == set(orders["order_id"])
    marks = warehouse.read("intraday_marks").set_index("ts")
    assert len(marks) == 20
    assert marks.loc[BREACH - pd.Timedelta(minutes=1), "pnl_pct"] == pytest.approx(-0.03)
    costs = float((fills["commission"] + fills["slippage"]).sum())
    assert marks["equity"].iloc[-1] == pytest.approx(29_000.0 - costs)  # flat after the breach: only costs after
    assert warehouse.read("intraday_risk")["metric"].str.len().max() <= 32


def test_a_second_replay_of_the_day_writes_nothing_new(warehouse: Warehouse, recording: Path) -> None:
    seed_book(warehouse)
    _watcher(warehouse, recording).run_session(DAY)
    before = _tables(warehouse)
    again = _watcher(warehouse, recording).run_session(DAY)
    assert again.batches == 0 and again.refed == 20 and again.orders == 0
    for name, frame in _tables(warehouse).items():
        pd.testing.assert_frame_equal(frame, before[name], obj=name)


@pytest.mark.parametrize("killed_after", [3, 10, 11, 17])  # before, at and after the breach batch
def test_a_restart_resumes_with_no_duplicate_mark_alert_or_order(
    tmp_path: Path, recording: Path, killed_after: int
) -> None:
    stores = {}
    for name, stops in (("straight", [None]), ("restarted", [killed_after, None])):
        store = Warehouse(f"sqlite:///{tmp_path / f'{name}.db'}")
        seed_book(store)
        for max_batches in stops:
            _watcher(store, recording).run_session(DAY, max_batches=max_batches)
        stores[name] = _tables(store)
        store.dispose()
    for name in TABLES:
        pd.testing.assert_frame_equal(stores["restarted"][name], stores["straight"][name], obj=name)


def test_a_second_watch_on_the_same_store_exits_3(tmp_path: Path, recording: Path) -> None:
    store = Warehouse(f"sqlite:///{tmp_path / 'out' / 'warehouse.db'}")
    assert store.acquire_lease(watch.WATCH_LEASE, "elsewhere:1:abc", "watch:elsewhere", 600).acquired
    store.dispose()
    code = cli.main(
        [
            "--root",
            str(ROOT),
            "watch",
            "--outputs",
            str(tmp_path / "out"),
            "--day",
            DAY.isoformat(),
            "--set",
            "warehouse.url=null",
            "--set",
            "watch.source.kind=replay",
            "--set",
            f"watch.source.path={recording}",
        ]
    )
    assert code == EXIT_BUSY


def test_the_cli_replays_a_day_and_releases_its_lease(
    tmp_path: Path, recording: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BENTLEY_WAREHOUSE_URL", raising=False)
    store = Warehouse(f"sqlite:///{tmp_path / 'out' / 'warehouse.db'}")
    seed_book(store)
    code = cli.main(
        [
            "--root",
            str(ROOT),
            "watch",
            "--outputs",
            str(tmp_path / "out"),
            "--day",
            DAY.isoformat(),
            "--set",
            "warehouse.url=null",
            "--set",
            "watch.source.kind=replay",
            "--set",
            f"watch.source.path={recording}",
            "--set",
            "watch.on_loss_limit=reduce",
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert code == 0, lines
    assert store.count("intraday_marks") == 20 and store.read("leases").empty
    assert store.read("orders").set_index("ticker")["quantity"].to_dict() == {"AAA": -50.0, "BBB": -100.0}
    assert any("ALERT [critical] watch_daily_loss" in line for line in lines)
    assert list((tmp_path / "out" / "lake" / "raw" / "replay" / "intraday_bars").glob("ingest_date=*/bars.parquet"))
    store.dispose()


def test_market_hours_come_from_the_calendar() -> None:
    zone = "America/New_York"
    utc = dt.UTC
    assert watch.market_state(dt.datetime(2024, 7, 4, 15, 0, tzinfo=utc), "XNYS", zone)[1] is None  # a holiday
    assert not watch.in_session(dt.datetime(2024, 7, 4, 15, 0, tzinfo=utc), "XNYS", zone)
    half_day = watch.market_state(dt.datetime(2024, 11, 29, 15, 0, tzinfo=utc), "XNYS", zone)[1]
    assert half_day[1] == pd.Timestamp("2024-11-29 18:00", tz="UTC")  # 13:00 New York: an early close
    assert not watch.in_session(dt.datetime(2024, 11, 29, 18, 30, tzinfo=utc), "XNYS", zone)
    # Both DST changes: the open moves in UTC, stays 09:30 in New York
    for before, after in ((dt.date(2024, 3, 8), dt.date(2024, 3, 11)), (dt.date(2024, 11, 1), dt.date(2024, 11, 4))):
        opens = [
            watch.market_state(dt.datetime.combine(d, dt.time(17), utc), "XNYS", zone)[1][0] for d in (before, after)
        ]
        assert {o.tz_convert(zone).strftime("%H:%M") for o in opens} == {"09:30"}
        assert opens[0].hour != opens[1].hour
    saturday = dt.datetime(2024, 6, 1, 15, 0, tzinfo=utc)
    assert watch.next_open(saturday, "XNYS", zone) == pd.Timestamp("2024-06-03 13:30", tz="UTC")


def test_a_holiday_session_watches_nothing(warehouse: Warehouse, recording: Path) -> None:
    result = _watcher(warehouse, recording).run_session(dt.date(2024, 7, 4), threading.Event())
    assert result.batches == 0 and result.messages == ["2024-07-04 is not a session"]


# --------------------------------------------------------------------------------------------
# The de-risking in the daily ledger, and the end-of-day report

PREVIOUS_SESSIONS = (pd.Timestamp("2024-05-30"), pd.Timestamp("2024-05-31"))
FREE = Costs(commission_bps=0.0, slippage_bps=0.0, impact_coefficient=None)


def _daily_prices(day: pd.Timestamp, closes: dict[str, float], opens: dict[str, float] | None = None) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "ticker": t,
                "date": day,
                "open": (opens or closes)[t],
                "high": c + 1,
                "low": c - 1,
                "close": c,
                "adj_close": c,
                "volume": 1e6,
                "dividend": 0.0,
                "split_ratio": 1.0,
                "source": "test",
            }
            for t, c in closes.items()
        ]
    )


def _book(warehouse: Warehouse, day: pd.Timestamp, weights: pd.Series) -> broker.PaperDay:
    return broker.run_paper_day(
        warehouse,
        weights,
        portfolio="paper",
        as_of=day,
        initial_cash=20_000.0,
        costs=FREE,
        execution="next_open",
        run_id=f"daily-{day:%Y%m%d}",
    )


@pytest.fixture
def ledger(warehouse: Warehouse) -> Warehouse:
    """A book the broker booked: AAA 100 x 100 and BBB 200 x 50 at the close of 2024-05-31, no cash."""
    for day in PREVIOUS_SESSIONS:
        warehouse.upsert("prices", _daily_prices(day, {"AAA": 100.0, "BBB": 50.0}))
    warehouse.upsert(
        "prices", _daily_prices(pd.Timestamp(DAY), {"AAA": 81.0, "BBB": 50.0}, {"AAA": 100.0, "BBB": 50.0})
    )
    for day in PREVIOUS_SESSIONS:
        _book(warehouse, day, pd.Series({"AAA": 0.5, "BBB": 0.5}))
    return warehouse


def test_the_daily_book_of_the_session_holds_the_watchs_flatten_and_reconciles(
    ledger: Warehouse, recording: Path
) -> None:
    result = _watcher(ledger, recording).run_session(DAY)
    assert result.orders == 2
    last_mark = ledger.read("intraday_marks").iloc[-1]
    day = _book(ledger, pd.Timestamp(DAY), pd.Series(dtype="float64"))  # reconciles, or raises
    assert day.positions.empty and day.cash == pytest.approx(float(last_mark["cash"]), rel=1e-12)
    assert len(day.intraday_fills) == 2 and day.orders_new.empty
    before = {name: ledger.read(name) for name in ("orders", "fills", "positions", "portfolio_values")}
    _book(ledger, pd.Timestamp(DAY), pd.Series(dtype="float64"))  # the trade stage again: the same rows
    for name, frame in before.items():
        pd.testing.assert_frame_equal(ledger.read(name), frame, obj=name)


def test_a_session_the_book_has_booked_is_watched_but_not_de_risked(ledger: Warehouse, recording: Path) -> None:
    _book(ledger, pd.Timestamp(DAY), pd.Series({"AAA": 0.5, "BBB": 0.5}))
    booked = ledger.read("fills")
    lines: list[str] = []
    result = _watcher(ledger, recording, lines=lines).run_session(DAY)
    assert result.batches == 20 and result.alerts_opened and result.orders == 0
    pd.testing.assert_frame_equal(ledger.read("fills"), booked)
    assert any("flatten: not done: the paper book 'paper' is booked up to 2024-06-03" in line for line in lines)
    broker.reconcile(ledger, "paper", DAY)


def test_the_report_shows_the_equity_the_alerts_and_the_orders_escaped_and_offline(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    seed_book(warehouse)
    warehouse.upsert("prices", _daily_prices(pd.Timestamp(PREVIOUS), {"SPY": 500.0}))  # the benchmark's close
    bars = crafted_bars(
        {"AAA": [100.0 - i for i in range(20)], "BBB": [50.0] * 20, "SPY": [500.0 - i for i in range(20)]},
        first_open={"AAA": 100.0, "BBB": 50.0, "SPY": 500.0},
    )
    recording = tmp_path / "day.csv"
    bars.assign(ts=bars["ts"].map(lambda t: t.isoformat())).to_csv(recording, index=False)
    outputs = tmp_path / "out"
    lines: list[str] = []
    _watcher(warehouse, recording, outputs=outputs, lines=lines).run_session(DAY)
    path = report_path(outputs, "paper", DAY)
    assert path.is_file() and f"{DAY}: intraday report {path}" in lines
    page = path.read_text()
    soup = BeautifulSoup(page, "html.parser")
    assert soup.find("svg") is not None and not soup.find_all("script") and "http" not in page.replace("'", "")
    marks = warehouse.read("intraday_marks")
    rows = soup.find("details").find_all("tr")[1:]
    assert [r.find_all("td")[1].text for r in rows] == [f"{e:,.2f}" for e in marks["equity"]]
    assert [r.find_all("td")[3].text for r in rows][-1] == "-3.80%"  # SPY at 481 on its close of 500
    assert [t.text for t in soup.find("svg").find_all("title")] == [
        "book, % on the previous close",
        "SPY, % on its previous close",
    ]
    timeline = soup.find("h2", string="Alert timeline").find_next("table").text
    assert "watch_daily_loss" in timeline and "09:40" in timeline  # the breach, in New York time
    orders = soup.find("h2", string="Orders").find_next("table").find_all("tr")[1:]
    assert {r.find_all("td")[1].text for r in orders} == {"AAA", "BBB"}
    home = BeautifulSoup((outputs / "index.html").read_text(), "html.parser")  # the run index links it
    assert home.find("a", href=f"intraday/{path.name}").text == "2024-06-03"

    alert = warehouse.read("alerts").iloc[[0]].assign(message="<script>alert(1)</script> broke")
    warehouse.upsert("alerts", alert)
    order = warehouse.read("orders").iloc[[0]].assign(ticker="<script>x</script>")
    warehouse.upsert("orders", order)
    page = write_intraday_report(warehouse, outputs, "paper", DAY, "SPY", "America/New_York").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; broke" in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page


def test_a_session_left_unfinished_is_closed_and_reported_after_the_close(
    warehouse: Warehouse, recording: Path, tmp_path: Path
) -> None:
    seed_book(warehouse)
    outputs = tmp_path / "out"
    _watcher(warehouse, recording, outputs=outputs).run_session(DAY, max_batches=12)  # killed after the breach
    assert not report_path(outputs, "paper", DAY).exists()
    assert "watch_daily_loss" in set(warehouse.read("alerts", where={"status": "active"})["rule"])
    close = OPEN_UTC + pd.Timedelta(hours=6, minutes=30)
    restarted = _watcher(warehouse, recording, outputs=outputs)  # a new process, after the close
    restarted.finish_unfinished(DAY, close)
    alerts = warehouse.read("alerts")
    assert set(alerts["status"]) == {"resolved"} and (alerts["resolved_at"] == close).all()
    assert report_path(outputs, "paper", DAY).is_file()
    restarted.finish_unfinished(DAY, close)  # the next idle poll: nothing more
    pd.testing.assert_frame_equal(warehouse.read("alerts"), alerts)


def test_the_orders_filled_at_the_open_are_in_the_book_a_flatten_sells(ledger: Warehouse, recording: Path) -> None:
    """The last daily run left orders for this session's open (AAA -50, BBB +100): a flatten sells what the
    book holds after them, so the day the broker books is flat, not short AAA and long BBB."""
    _book(ledger, PREVIOUS_SESSIONS[1], pd.Series({"AAA": 0.25, "BBB": 0.75}))  # rebooked: new orders
    pending = ledger.read("orders", where={"status": "pending"}).set_index("ticker")["quantity"]
    assert pending.to_dict() == {"AAA": -50.0, "BBB": 100.0}
    _watcher(ledger, recording).run_session(DAY)
    sold = ledger.read("orders").dropna(subset=["decided_at"]).set_index("ticker")["quantity"]
    assert sold.to_dict() == {"AAA": -50.0, "BBB": -300.0}
    first = ledger.read("intraday_marks").iloc[0]
    costs = (50 * 100 + 100 * 50) * 6e-4  # the open's fills at the first bars' opens, commission and slippage
    assert first["cash"] == pytest.approx(50 * 100 - 100 * 50 - costs)
    day = _book(ledger, pd.Timestamp(DAY), pd.Series(dtype="float64"))  # reconciles, or raises
    assert day.positions.empty and len(day.fills) == 2 and len(day.intraday_fills) == 2
