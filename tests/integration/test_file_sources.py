"""File-based sources end to end: CSV prices, CSV news, OFX/QFX/CSV bank exports, holdings."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bentley import calendar
from bentley.sources import FetchRequest
from bentley.sources.sample import SampleMarketSource
from bentley.warehouse import Warehouse

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "unit" / "sources" / "file_fixtures"
LOGICAL_DATE = dt.date(2024, 1, 31)


def export_prices(folder: Path, tickers: tuple[str, ...], start: dt.date, end: dt.date) -> None:
    folder.mkdir(parents=True)
    source = SampleMarketSource(seed=7, n_tickers=8, epoch=dt.date(2000, 1, 3), benchmark="BBIX")
    prices = source.fetch("prices", FetchRequest(start, end, tickers))
    for ticker, rows in prices.groupby("ticker"):
        rows.rename(columns={"date": "Date", "adj_close": "Adj Close"}).drop(columns="ticker").to_csv(
            folder / f"{ticker}.csv", index=False, date_format="%Y-%m-%d"
        )


#: Text a careless or hostile export may carry: HTML that runs a script, console markup,
#: Markdown math, code and format braces. It must reach every report as literal text.
HOSTILE = "<img src=x onerror=\"document.title='pwned'\"> [bold]Nova[/] $x$ `tick` {0}"


def plant_hostile_text(data: Path) -> None:
    """A headline, a publisher and a bank description carrying `HOSTILE`."""
    quoted = HOSTILE.replace('"', '""')
    with (data / "news.csv").open("a") as news:
        news.write(f'NOVA,2024-01-10T15:00:00Z,"Nova Systems soars {quoted}","<b>{quoted}</b>",https://news.example/x\n')
    with (data / "ledger" / "transactions.csv").open("a") as ledger:
        ledger.write(f'01/10/2024,"SHOP {quoted}",-12.00,checking,\n')


@pytest.fixture(scope="module")
def file_run(tmp_path_factory: pytest.TempPathFactory, root: Path, clean_env: dict[str, str]):
    base = tmp_path_factory.mktemp("files")
    data = base / "data"
    export_prices(data / "prices", ("NOVA", "QBIT", "BBIX"), dt.date(2023, 1, 31), LOGICAL_DATE)
    shutil.copytree(FIXTURES / "ledger", data / "ledger")
    shutil.copy(FIXTURES / "news.csv", data / "news.csv")
    shutil.copy(FIXTURES / "holdings.csv", data / "holdings.csv")
    plant_hostile_text(data)
    outputs = base / "out"
    settings = [
        f"sources.data_dir={data}", "sources.market.kind=csv", "sources.market.path=prices",
        "sources.news.kind=csv", "sources.news.path=news.csv", "sources.portfolio.kind=files",
        "sources.portfolio.transactions=ledger", "sources.portfolio.holdings=holdings.csv",
    ]
    args = ["run", "--profile", "ci", "--logical-date", LOGICAL_DATE.isoformat(), "--outputs", str(outputs)]
    for setting in settings:
        args += ["--set", setting]
    result = subprocess.run([sys.executable, "-m", "runner", *args], cwd=root, env=clean_env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    warehouse = Warehouse(f"sqlite:///{outputs / 'warehouse.db'}")
    assert warehouse.read("news")["headline"].str.contains(HOSTILE, regex=False).any()
    warehouse.outputs = outputs  # type: ignore[attr-defined] - where the reports are, for the browser test
    yield warehouse
    warehouse.dispose()


def test_hostile_text_is_shown_as_text_in_every_report(file_run: Warehouse, tmp_path: Path) -> None:
    """Every report and index page in headless Chromium: no script runs, the text is literal."""
    outputs: Path = file_run.outputs  # type: ignore[attr-defined]
    pages = [outputs / "index.html", *outputs.glob("runs/*/index.html"), *outputs.glob("runs/*/reports/*.html")]
    assert len(pages) >= 14
    shown = set()
    for page in pages:
        dom = _rendered_dom(page, tmp_path)
        title = re.search(r"<title>(.*?)</title>", dom, flags=re.S)
        assert title is None or "pwned" not in title.group(1), f"a script ran in {page}"
        assert "<img src=\"x\" onerror" not in dom and "<b>&lt;img" not in dom, page
        if "&lt;img src=x onerror=\"document.title='pwned'\"&gt; [bold]Nova[/]" in dom:
            shown.add(page.name)
    assert "sentiment.html" in shown, "the hostile headline is shown as text in the sentiment report"


def _rendered_dom(page: Path, tmp_path: Path) -> str:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is installed by .ci/run"
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'chrome'}",
         "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_csv_prices_define_the_universe(file_run: Warehouse) -> None:
    prices = file_run.read("prices")
    sessions = calendar.sessions(dt.date(2023, 1, 31), LOGICAL_DATE)
    assert sorted(prices["ticker"].unique()) == ["BBIX", "NOVA", "QBIT"]
    assert len(prices) == 3 * len(sessions)
    assert set(prices["source"]) == {"csv"}
    assert len(file_run.read("features")) == len(prices)


def test_bank_exports_and_holdings_are_loaded(file_run: Warehouse) -> None:
    transactions = file_run.read("transactions")
    assert transactions["txn_id"].str.startswith("ofx:").any(), "OFX/QFX statements"
    assert transactions["txn_id"].str.startswith("csv:").any(), "the CSV export"
    assert set(transactions["source"]) == {"files"}
    holdings = file_run.read("holdings")
    assert set(holdings["ticker"]) >= {"NOVA", "QBIT"}
    assert (holdings["as_of"] == pd.Timestamp(LOGICAL_DATE)).all()


def test_news_outside_the_universe_is_a_named_warning(file_run: Warehouse) -> None:
    news = file_run.read("news")
    assert len(news) > 0 and set(news["source"]) == {"csv"}
    quality = file_run.read("data_quality", where={"dataset": "news", "check_name": "ticker_outside_universe"})
    outside = set(news["ticker"]) - {"NOVA", "QBIT", "BBIX"}
    row = quality.iloc[0]
    assert row["severity"] == "warning"
    assert bool(row["passed"]) == (not outside)
    for ticker in outside:
        assert ticker in row["detail"]
