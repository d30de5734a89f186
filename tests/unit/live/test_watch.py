"""`runner watch`: a crafted day end to end, restarts, reruns, the lease, and the calendar."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from bentley.live.bars import ReplayBarSource
from bentley.live.derisk import reconcile_intraday
from bentley.live.settings import watch_settings
from bentley.warehouse import Warehouse
from runner import cli, watch
from runner.outcomes import EXIT_BUSY

from .conftest import DAY, OPEN_UTC, crafted_bars, seed_book

ROOT = Path(__file__).resolve().parents[3]
COSTS = SimpleNamespace(commission_bps=1.0, slippage_bps=5.0)
WEBHOOK = SimpleNamespace(timeout_s=1.0, max_attempts=1, backoff_s=0.0)
#: AAA falls a dollar a minute; BBB is flat. The book (AAA 100 x 100, BBB 200 x 50, cash 10,000)
#: is down 900 = 3.00% at 13:39 (not beyond the limit) and 1,000 = 3.33% at 13:40: the breach minute.
BREACH = OPEN_UTC + pd.Timedelta(minutes=10)
TABLES = ("intraday_marks", "intraday_risk", "alerts", "intraday_orders", "intraday_fills")


def _recording(folder: Path) -> Path:
    bars = crafted_bars(
        {"AAA": [100.0 - i for i in range(20)], "BBB": [50.0] * 20}, first_open={"AAA": 100.0, "BBB": 50.0}
    )
    path = folder / "day.csv"
    bars.assign(ts=bars["ts"].map(lambda t: t.isoformat())).to_csv(path, index=False)
    return path


def _watcher(warehouse: Warehouse, recording: Path, sent: list | None = None, mode: str = "flatten") -> watch.Watcher:
    settings = watch_settings(overrides=[f"on_loss_limit={mode}", "source.kind=replay", f"source.path={recording}"])
    return watch.Watcher(
        warehouse,
        settings,
        portfolio="paper",
        daily_loss_limit=0.03,
        costs=COSTS,
        source=ReplayBarSource(recording),
        tickers=[],
        calendar="XNYS",
        renotify_minutes=240,
        webhook=WEBHOOK,
        webhook_url="http://127.0.0.1:9/hook" if sent is not None else None,
        say=lambda _line: None,
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
    orders, fills = warehouse.read("intraday_orders"), warehouse.read("intraday_fills")
    assert set(orders["ticker"]) == {"AAA", "BBB"} and (orders["decided_at"] == BREACH).all()
    assert fills.set_index("ticker")["price"].to_dict() == {"AAA": 90.0, "BBB": 50.0}
    assert reconcile_intraday(orders, fills) == []
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
    assert store.read("intraday_orders").set_index("ticker")["quantity"].to_dict() == {"AAA": -50.0, "BBB": -100.0}
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
