"""File-based sources end to end: CSV prices, CSV news, OFX/QFX/CSV bank exports, holdings."""

from __future__ import annotations

import datetime as dt
import os
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
        news.write(
            f'NOVA,2024-01-10T15:00:00Z,"Nova Systems soars {quoted}","<b>{quoted}</b>",https://news.example/x\n'
        )
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
        f"sources.data_dir={data}",
        "sources.market.kind=csv",
        "sources.market.path=prices",
        "sources.news.kind=csv",
        "sources.news.path=news.csv",
        "sources.portfolio.kind=files",
        "sources.portfolio.transactions=ledger",
        "sources.portfolio.holdings=holdings.csv",
        "sources.social.kind=none",
    ]
    args = ["run", "--profile", "ci", "--logical-date", LOGICAL_DATE.isoformat(), "--outputs", str(outputs)]
    for setting in settings:
        args += ["--set", setting]
    result = subprocess.run(
        [sys.executable, "-m", "runner", *args], cwd=root, env=clean_env, capture_output=True, text=True, timeout=300
    )
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
        assert '<img src="x" onerror' not in dom and "<b>&lt;img" not in dom, page
        if "&lt;img src=x onerror=\"document.title='pwned'\"&gt; [bold]Nova[/]" in dom:
            shown.add(page.name)
    assert "sentiment.html" in shown, "the hostile headline is shown as text in the sentiment report"


#: The median report's weight (issue 17): a small stylesheet and embedded charts, no theme.
MEDIAN_REPORT_BYTES = 250_000
#: Stages whose every chart is followed by a sentence that reads it.
READ_CHARTS = ("etl", "features", "technical", "sentiment", "risk", "budget", "anomalies", "monitor")
#: What a report table must never show: NaN and friends, or a number in scientific notation.
RAW_VALUES = re.compile(r"^(nan|NaN|<NA>|None|NaT|inf|-inf)$|\d[eE][+-]\d")


def test_reports_are_offline_light_and_read_well(file_run: Warehouse, root: Path) -> None:
    """Every page of a run in headless Chromium: no request to any host, no console error, every
    local link resolves; no external script or stylesheet in the HTML; the median report within
    MEDIAN_REPORT_BYTES; tables without NaN/None/scientific notation; images titled; charts read.
    The home page shows the run's `--set` overrides. Screenshots go to outputs/screenshots/
    (CI keeps them as artifacts)."""
    from bs4 import BeautifulSoup

    from tests.browser import Browser

    outputs: Path = file_run.outputs  # type: ignore[attr-defined]
    home = outputs / "index.html"
    reports = sorted(outputs.glob("runs/*/reports/*.html"))
    pages = [home, *outputs.glob("runs/*/index.html"), *reports]
    assert len(reports) >= 12
    for page in pages:
        soup = BeautifulSoup(page.read_text(), "html.parser")
        external = [
            str(tag)
            for tag in soup.find_all(["script", "link", "img", "iframe", "source"])
            if re.match(r"(https?:)?//", tag.get("src") or tag.get("href") or "")
        ]
        assert not external, f"{page.name}: {external}"
        assert not soup.find_all("script", src=True), page
        for link in soup.find_all("a", href=True):
            target = link["href"].split("#")[0]
            if target and not re.match(r"[a-z]+:", target):
                assert (page.parent / target).exists(), f"{page}: broken link {target}"
    sizes = sorted(report.stat().st_size for report in reports)
    assert sizes[len(sizes) // 2] <= MEDIAN_REPORT_BYTES, sizes
    for report in reports:
        soup = BeautifulSoup(report.read_text(), "html.parser")
        raw = [td.get_text().strip() for td in soup.select("td") if RAW_VALUES.search(td.get_text().strip())]
        assert not raw, f"{report.name}: {raw[:5]}"
        assert all(img.get("alt") or img.get("title") for img in soup.find_all("img")), report.name
        if report.stem in READ_CHARTS:
            for figure in soup.select("figure"):
                after = figure.find_next(
                    lambda t: t.name == "figure" or "jp-RenderedMarkdown" in (t.get("class") or [])
                )
                assert after is not None and after.name != "figure", f"{report.name}: a chart without a sentence"
    shown = BeautifulSoup(home.read_text(), "html.parser").get_text(" ")
    assert "--set sources.market.kind=csv" in shown and "--set sources.portfolio.holdings=holdings.csv" in shown
    screenshots = Path(os.environ.get("BENTLEY_SCREENSHOTS", root / "outputs" / "screenshots"))
    shots = {home: screenshots / "home.png"}
    shots.update({r: screenshots / f"report-{r.stem}.png" for r in reports if r.stem in ("budget", "risk")})
    with Browser() as browser:
        for page in pages:
            loaded = browser.load(page, screenshot=shots.get(page), full_page=True)
            assert loaded.requests == [], f"{page.name} asked the network for {loaded.requests}"
            assert loaded.errors == [], f"{page.name}: {loaded.errors}"
    assert all(path.stat().st_size > 10_000 for path in shots.values())


def _rendered_dom(page: Path, tmp_path: Path) -> str:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is installed by .ci/run"
    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chrome'}",
            "--virtual-time-budget=3000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
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
