"""The home page: the latest complete run's overview from the warehouse, then every run."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from bs4 import BeautifulSoup

from bentley import home, reporting
from bentley.warehouse import Warehouse

STAGES = ["ingest", "etl", "budget", "train", "trade", "monitor"]


def of(runs: list[dict]) -> dict[str, set[str]]:
    """Each run's pipeline: the six stages above."""
    return {m["run_id"]: set(STAGES) for m in runs}


def manifest(
    run_id: str,
    started: str,
    status: str = "success",
    stages: dict[str, str] | None = None,
    overrides: list[str] | None = None,
) -> dict:
    stages = stages if stages is not None else dict.fromkeys(STAGES, "success")
    return {
        "run_id": run_id,
        "status": status,
        "profile": "ci",
        "logical_date": "2026-12-02",
        "started_at": f"2026-12-03T{started}:00+00:00",
        "duration_s": 90.0,
        "overrides": overrides or [],
        "stages": {
            name: {"status": s, "report": f"reports/{name}.html" if s in ("success", "failed") else None}
            for name, s in stages.items()
        },
    }


def test_runs_are_listed_with_their_overrides_and_no_op_or_partial_runs_folded() -> None:
    runs = [
        manifest("full-1", "10:00", overrides=["universe.tickers=[NOVA, QBIT]", "history.years=1"]),
        manifest("noop-2", "11:00", stages=dict.fromkeys(STAGES, "cached")),
        manifest("part-3", "12:00", stages={"etl": "success"}),
        manifest("fail-4", "13:00", status="failed", stages={**dict.fromkeys(STAGES, "success"), "train": "failed"}),
    ]
    assert home.latest_complete(runs, of(runs))["run_id"] == "full-1", "a no-op run wrote nothing to show"
    page = BeautifulSoup(home.home_html(runs, home.latest_complete(runs, of(runs)), None, (), of(runs)), "html.parser")
    main = page.select("h2 + p + table tbody tr")
    assert [tr.td.get_text() for tr in main] == ["fail-4", "full-1"], "newest first, failures visible"
    folded = page.select("details tbody tr")
    assert [tr.td.get_text() for tr in folded] == ["part-3", "noop-2"]
    overrides = [code.get_text() for code in main[1].select("code")]
    assert overrides == ["--set universe.tickers=[NOVA, QBIT]", "--set history.years=1"]
    assert "fail-4" in page.select_one(".banner").get_text()
    assert [a["href"] for a in page.select(".reports a")][:2] == [
        "runs/full-1/reports/ingest.html",
        "runs/full-1/reports/etl.html",
    ]


def test_no_complete_run_yet_says_so() -> None:
    runs = [manifest("part-1", "10:00", stages={"etl": "success"})]
    text = BeautifulSoup(
        home.home_html(runs, home.latest_complete(runs, of(runs)), None, (), of(runs)), "html.parser"
    ).get_text()
    assert "No complete run yet" in text


def test_interactive_runs_are_listed_apart(tmp_path: Path) -> None:
    folder = tmp_path / "runs" / "interactive-20261203T101500Z"
    (folder / "stage_results").mkdir(parents=True)
    (folder / "stage_results" / "budget.json").write_text("{}")
    (folder / "artifacts" / "budget").mkdir(parents=True)
    (folder / "artifacts" / "budget" / "overruns.csv").write_text("a\n1\n")
    found = home.interactive_runs(tmp_path)
    assert [r["run_id"] for r in found] == ["interactive-20261203T101500Z"] and found[0]["stages"] == ["budget"]
    page = home.home_html([], None, None, found)
    assert (
        "Interactive notebook runs" in page
        and "runs/interactive-20261203T101500Z/artifacts/budget/overruns.csv" in page
    )


def test_the_latest_intraday_reports_are_linked_newest_first(tmp_path: Path) -> None:
    folder = tmp_path / home.INTRADAY_DIR
    folder.mkdir()
    days = [f"2024-06-{d:02d}" for d in range(3, 12)]
    for day in days:
        (folder / f"{day}_paper.html").write_text("<p>report</p>")
    (folder / "2024-06-12_paper@2024-06-03.html").write_text("<p>report</p>")
    home.write_home(tmp_path, [])
    soup = BeautifulSoup((tmp_path / "index.html").read_text(), "html.parser")
    section = soup.find("h2", string="Intraday watch")
    links = [(a["href"], a.text) for a in section.find_next("ul").find_all("a")]
    assert links[0] == ("intraday/2024-06-12_paper@2024-06-03.html", "2024-06-12")
    assert links[1:] == [(f"intraday/{d}_paper.html", d) for d in reversed(days[-6:])]  # 7 shown
    assert "3 older report(s) in intraday/" in section.find_next("p", class_="note").find_next("p").text
    assert all((tmp_path / href).is_file() for href, _ in links)


def test_no_intraday_section_without_reports(tmp_path: Path) -> None:
    home.write_home(tmp_path, [])
    assert "Intraday watch" not in (tmp_path / "index.html").read_text()


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    """An outputs folder with one complete run and the warehouse rows its overview reads."""
    from bentley import config

    outputs = tmp_path / "outputs"
    every = config.load_pipeline(config.project_root() / config.PARAMS_DIR / config.PIPELINE_FILE).stages
    run = manifest("r1", "10:00", stages=dict.fromkeys(every, "success"), overrides=["trade.entry_threshold=0.1"])
    run_dir = outputs / "runs" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text(json.dumps(run))
    (run_dir / "params.json").write_text(
        json.dumps({"universe": {"benchmark": "BBIX"}, "trade": {"paper": {"portfolio": "paper"}}, "warehouse": {}})
    )
    w = Warehouse(f"sqlite:///{outputs / 'warehouse.db'}")
    days = pd.bdate_range("2026-11-02", "2026-12-02")
    w.upsert(
        "net_worth",
        pd.DataFrame(
            {
                "date": days,
                "cash": 30000.0,
                "holdings_value": 1_000_000.0,
                "net_worth": [1_030_000.0 + 100 * i for i in range(len(days))],
            }
        ),
    )
    w.upsert(
        "investable_cash",
        pd.DataFrame(
            [
                {
                    "as_of": pd.Timestamp("2026-12-02"),
                    "cash": 36425.28,
                    "monthly_expenses": 6019.3,
                    "emergency_fund": 36115.8,
                    "upcoming_bills": 3236.17,
                    "investable_cash": 0.0,
                    "shortfall": 2926.69,
                }
            ]
        ),
    )
    w.upsert(
        "portfolio_values",
        pd.DataFrame(
            {
                "portfolio": "paper",
                "date": days[-3:],
                "cash": 0.0,
                "positions_value": [100000.0, 101000.0, 102000.0],
                "equity": [100000.0, 101000.0, 102000.0],
                "daily_return": 0.01,
                "costs": 0.0,
                "run_id": "r1",
            }
        ),
    )
    w.upsert(
        "prices",
        pd.DataFrame(
            {
                "ticker": "BBIX",
                "date": days[-3:],
                "open": 1.0,
                "high": 1.0,
                "low": 1.0,
                "close": [500.0, 505.0, 510.0],
                "adj_close": None,
                "volume": 1.0,
                "dividend": 0.0,
                "split_ratio": 1.0,
                "source": "sample",
            }
        ),
    )
    w.upsert(
        "signals",
        pd.DataFrame(
            [
                {
                    "run_id": "r1",
                    "ticker": "QBIT",
                    "date": days[-1],
                    "score": 0.23,
                    "model": 0.1,
                    "technical": 0.0,
                    "sentiment": 0.0,
                    "target_weight": 0.266,
                    "weight": 0.25,
                }
            ]
        ),
    )
    w.upsert(
        "orders",
        pd.DataFrame(
            [
                {
                    "order_id": "o1",
                    "portfolio": "paper",
                    "decided_on": days[-1],
                    "ticker": "QBIT",
                    "quantity": 860.0,
                    "target_weight": 0.25,
                    "reference_price": 29.04,
                    "status": "pending",
                    "run_id": "r1",
                }
            ]
        ),
    )
    w.upsert(
        "alerts",
        pd.DataFrame(
            [
                {
                    "alert_id": "a1",
                    "rule": "data_delay",
                    "severity": "warning",
                    "scope": "ingest",
                    "status": "active",
                    "message": "The last ingest finished 90 minutes ago.",
                    "value": 90.0,
                    "threshold": 60.0,
                    "first_seen_at": pd.Timestamp("2026-12-03 10:00", tz="UTC"),
                    "last_seen_at": pd.Timestamp("2026-12-03 10:00", tz="UTC"),
                    "last_sent_at": None,
                    "resolved_at": None,
                    "notifications": 0,
                    "run_id": "r1",
                }
            ]
        ),
    )
    w.upsert(
        "model_decisions",
        pd.DataFrame(
            [
                {
                    "run_id": "r1",
                    "model_name": "bentley-return-direction",
                    "challenger_version": "2",
                    "champion_version": None,
                    "metric": "roc_auc",
                    "challenger_value": 0.7,
                    "promoted": True,
                    "reason": "first champion",
                    "decided_at": pd.Timestamp("2026-12-03 10:01", tz="UTC"),
                    "verdict": "Promoted as the first champion.",
                }
            ]
        ),
    )
    w.upsert(
        "stage_runs",
        pd.DataFrame(
            [
                {
                    "run_id": "r1",
                    "stage": "ingest",
                    "attempt": 1,
                    "status": "success",
                    "started_at": pd.Timestamp("2026-12-03 10:00", tz="UTC"),
                    "ended_at": pd.Timestamp("2026-12-03 10:01", tz="UTC"),
                }
            ]
        ),
    )
    w.dispose()
    return outputs


def test_the_overview_shows_what_a_user_came_for(store: Path) -> None:
    runs = [json.loads((store / "runs" / "r1" / "manifest.json").read_text())]
    path = home.write_home(store, runs, refresh_run="r1")
    page = BeautifulSoup(path.read_text(), "html.parser")
    text = " ".join(page.get_text(" ").split())
    assert "1,032,200 USD" in text, "net worth"
    assert "Nothing investable : 2,927 USD short" in text
    assert "102,000 USD" in text and "+2.0% since 2026-11-30" in text and "Benchmark BBIX: +2.0%" in text
    assert "QBIT" in text and "buy 860" in text
    assert "The last ingest finished 90 minutes ago." in text
    assert "bentley-return-direction v2 is the champion" in text and "Promoted as the first champion." in text
    assert "Data freshness" in text and "2026-12-02" in text
    assert "--set trade.entry_threshold=0.1" in text
    assert (store / "runs" / "r1" / home.OVERVIEW_FILE).is_file()
    assert not page.find("script") and not re.search(r"(src|href)=['\"]https?:", path.read_text())
    svg = page.find("svg")
    assert svg is not None and svg.find("polyline") is not None


def test_a_broken_warehouse_still_writes_the_page(store: Path) -> None:
    (store / "warehouse.db").write_text("not a database " * 100)
    runs = [json.loads((store / "runs" / "r1" / "manifest.json").read_text())]
    reporting.write_index_pages(store, runs[0], runs)
    text = (store / "index.html").read_text()
    assert "r1" in text and "could not be read from the warehouse" in text


def test_sparkline_is_small_and_labelled() -> None:
    dates = [(dt.date(2026, 1, 1) + dt.timedelta(days=i)).isoformat() for i in range(200)]
    svg = home.sparkline(dates, {"net worth": [1_000_000.0 + i for i in range(200)]})
    assert svg.startswith("<svg") and "2026-01-01" in svg and "1.00M" in svg and len(svg) < 8000
    assert home.sparkline(dates[:1], {"x": [1.0]}) == ""
