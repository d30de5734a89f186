"""Malformed input through the real CLI: a clear error naming the file and the problem, a
non-zero exit, and the lake and warehouse data tables exactly as they were.

One good CSV-based run lands first; every bad case then runs against the same outputs
folder, and the lake files and table contents are compared with that baseline.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from bentley.sources import FetchRequest
from bentley.sources.sample import SampleMarketSource
from bentley.warehouse import Warehouse

pytestmark = pytest.mark.integration

LOGICAL_DATE = "2025-06-02"
TICKERS = ["NOVA", "QBIT"]
DATA_TABLES = ["prices", "news", "transactions", "holdings"]


def yahoo_export(folder: Path) -> Path:
    """TICKER.csv files exactly as Yahoo's download button writes them, from the sample source."""
    folder.mkdir(parents=True, exist_ok=True)
    source = SampleMarketSource(seed=42, n_tickers=8, epoch=dt.date(2000, 1, 3), benchmark="BBIX")
    prices = source.fetch("prices", FetchRequest(dt.date(2024, 6, 3), dt.date(2025, 6, 2), (*TICKERS, "BBIX")))
    for ticker, rows in prices.groupby("ticker"):
        export = pd.DataFrame(
            {
                "Date": rows["date"].dt.strftime("%Y-%m-%d"),
                "Open": rows["open"],
                "High": rows["high"],
                "Low": rows["low"],
                "Close": rows["close"],
                "Adj Close": rows["adj_close"],
                "Volume": rows["volume"],
            }
        )
        export.to_csv(folder / f"{ticker}.csv", index=False)
    return folder


def run(outputs: Path, root: Path, env: dict[str, str], *settings: str) -> subprocess.CompletedProcess[str]:
    args = [
        "run",
        "--profile",
        "ci",
        "--stages",
        "ingest,etl",
        "--logical-date",
        LOGICAL_DATE,
        "--outputs",
        str(outputs),
        "--set",
        "universe.benchmark=BBIX",
    ]
    for setting in settings:
        args += ["--set", setting]
    return subprocess.run(
        [sys.executable, "-m", "runner", *args], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )


def snapshot(outputs: Path) -> dict[str, str]:
    """Digests of every lake file and of every data table's content."""
    digests = {
        str(p.relative_to(outputs)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((outputs / "lake").rglob("*"))
        if p.is_file()
    }
    warehouse = Warehouse(f"sqlite:///{outputs / 'warehouse.db'}")
    for table in DATA_TABLES:
        text = warehouse.read(table).to_csv(index=False)
        digests[f"table:{table}"] = hashlib.sha256(text.encode()).hexdigest()
    warehouse.dispose()
    return digests


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory, root: Path, clean_env: dict[str, str]):
    base = tmp_path_factory.mktemp("bad-input")
    good = yahoo_export(base / "data" / "good")
    outputs = base / "out"
    result = run(outputs, root, clean_env, "sources.market.kind=csv", f"sources.market.path={good}")
    assert result.returncode == 0, result.stdout + result.stderr
    return base, outputs, snapshot(outputs)


def edit_csv(ticker: str, change: Callable[[str], str | bytes]) -> Callable[[Path], Path]:
    """A copy of the good folder with one file rewritten by `change(original_text)`."""

    def build(base: Path) -> Path:
        folder = yahoo_export(base / "data" / f"case-{ticker}-{abs(hash(change))}")
        path = folder / f"{ticker}.csv"
        changed = change(path.read_text())
        if isinstance(changed, bytes):
            path.write_bytes(changed)
        else:
            path.write_text(changed)
        return folder

    return build


def _lines(text: str) -> list[str]:
    return text.splitlines()


def drop_close(text: str) -> str:
    return "\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != 4) for line in _lines(text)) + "\n"


def text_in_close(text: str) -> str:
    lines = _lines(text)
    cells = lines[3].split(",")
    cells[4] = "n/a"
    lines[3] = ",".join(cells)
    return "\n".join(lines) + "\n"


def duplicate_date(text: str) -> str:
    lines = _lines(text)
    return "\n".join([*lines[:3], lines[2], *lines[3:]]) + "\n"


def negative_price(text: str) -> str:
    """On the last session: incremental sync refetches only the days after the cursor."""
    lines = _lines(text)
    cells = lines[-1].split(",")
    cells[3] = "-" + cells[3]
    lines[-1] = ",".join(cells)
    return "\n".join(lines) + "\n"


def latin1(text: str) -> bytes:
    lines = _lines(text)
    return ("\n".join([lines[0] + ",Note", *(f"{line},caf\u00e9" for line in lines[1:])]) + "\n").encode("latin-1")


def mixed_offsets(text: str) -> str:
    lines = _lines(text)
    out = [lines[0]]
    for i, line in enumerate(lines[1:]):
        date, rest = line.split(",", 1)
        out.append(f"{date}T00:00:00{'-05:00' if i % 2 else '+01:00'},{rest}")
    return "\n".join(out) + "\n"


def extra_entry(name: str, folder_entry: bool = False) -> Callable[[Path], Path]:
    """A copy of the good folder with one more entry: a file copied from NOVA.csv, or a folder."""

    def build(base: Path) -> Path:
        folder = yahoo_export(base / "data" / f"case-{abs(hash(name))}")
        if folder_entry:
            (folder / name).mkdir()
        else:
            (folder / name).write_bytes((folder / "NOVA.csv").read_bytes())
        return folder

    return build


#: A file name that was stored XSS: it became a ticker and ran its script in the ingest report.
XSS_NAME = "<img src=x onerror=document.title=1>.csv"

CASES = {
    "missing column": (edit_csv("NOVA", drop_close), [], ["NOVA.csv", "close"]),
    "text in a numeric column": (edit_csv("NOVA", text_in_close), [], ["NOVA.csv", "n/a"]),
    "duplicate dates": (edit_csv("QBIT", duplicate_date), [], ["QBIT.csv", "duplicate"]),
    "negative prices": (edit_csv("NOVA", negative_price), [], ["non_positive_prices", "NOVA"]),
    "non-UTF-8 file": (edit_csv("NOVA", latin1), [], ["NOVA.csv", "UTF-8"]),
    "empty file": (edit_csv("NOVA", lambda text: ""), [], ["NOVA.csv", "empty"]),
    "header-only file": (edit_csv("NOVA", lambda text: _lines(text)[0] + "\n"), [], ["NOVA.csv", "no data rows"]),
    "mixed timezone offsets": (edit_csv("QBIT", mixed_offsets), [], ["QBIT.csv", "timezone"]),
    "unknown ticker": (edit_csv("NOVA", lambda text: text), ["universe.tickers=[NOVA, QBIT, ZZZZ]"], ["ZZZZ"]),
    "a file name with a space": (extra_entry("A B.csv"), ["universe.tickers=null"], ["A B.csv", "not a ticker"]),
    "a file name with HTML": (extra_entry(XSS_NAME), ["universe.tickers=null"], ["<img src=x", "not a ticker"]),
    "a file name that is SQL": (
        extra_entry("'; DROP TABLE prices;--.csv"),
        ["universe.tickers=null"],
        ["DROP TABLE", "not a ticker"],
    ),
    "a folder among the files": (extra_entry("MEDX.csv", folder_entry=True), [], ["MEDX.csv", "folder"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_prices_fail_cleanly(case: str, baseline, root: Path, clean_env: dict[str, str]) -> None:
    base, outputs, before = baseline
    build, extra, expected = CASES[case]
    folder = build(base)
    result = run(outputs, root, clean_env, "sources.market.kind=csv", f"sources.market.path={folder}", *extra)
    assert result.returncode != 0
    said = result.stdout + result.stderr  # before a stage (exit 2, stderr) or from the ingest stage (stdout)
    for fragment in expected:
        assert fragment in said, f"{case}: {fragment!r} not in\n{said}"
    assert "Traceback" not in result.stderr, result.stderr
    assert snapshot(outputs) == before, f"{case}: the lake or warehouse changed"


def test_broken_ofx_fails_cleanly(baseline, root: Path, clean_env: dict[str, str]) -> None:
    base, outputs, before = baseline
    broken = base / "data" / "broken.ofx"
    broken.write_text(
        "OFXHEADER:100\nDATA:OFXSGML\n\n<OFX><BANKMSGSRSV1><STMTTRNRS><STMTRS><BANKTRANLIST>"
        "<STMTTRN><TRNTYPE>DEBIT<DTPOSTED>2025"
    )
    result = run(
        outputs,
        root,
        clean_env,
        "sources.market.kind=csv",
        f"sources.market.path={base / 'data' / 'good'}",
        "sources.portfolio.kind=files",
        f"sources.portfolio.transactions={broken}",
    )
    assert result.returncode != 0
    assert "broken.ofx" in result.stdout + result.stderr
    assert snapshot(outputs) == before


def test_a_path_escaping_the_data_folder_is_refused(baseline, root: Path, clean_env: dict[str, str]) -> None:
    base, outputs, before = baseline
    result = run(
        outputs,
        root,
        clean_env,
        f"sources.data_dir={base / 'data' / 'good'}",
        "sources.market.kind=csv",
        "sources.market.path=../../..",
    )
    assert result.returncode != 0
    assert "escapes the data folder" in result.stdout + result.stderr
    assert snapshot(outputs) == before


def test_sample_news_and_holdings_follow_the_csv_universe(baseline) -> None:
    _, outputs, _ = baseline
    warehouse = Warehouse(f"sqlite:///{outputs / 'warehouse.db'}")
    assert set(warehouse.read("news")["ticker"]) <= set(TICKERS)
    assert set(warehouse.read("holdings")["ticker"]) == set(TICKERS)
    warehouse.dispose()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MLFLOW_TRACKING_URI", "http://127.0.0.1:1"),
        ("BENTLEY_WAREHOUSE_URL", "postgresql+psycopg://bot@127.0.0.1:1/bentley"),
    ],
)
def test_an_unreachable_service_is_one_line_before_anything_runs(
    variable: str, value: str, baseline, root: Path, clean_env: dict[str, str]
) -> None:
    base, outputs, before = baseline
    files = {p: p.read_bytes() for p in outputs.rglob("*") if p.is_file()}
    result = run(
        outputs,
        root,
        {**clean_env, variable: value},
        "sources.market.kind=csv",
        f"sources.market.path={base / 'data' / 'good'}",
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and variable in result.stderr, result.stderr
    assert "nothing was written" in result.stderr
    assert {p: p.read_bytes() for p in outputs.rglob("*") if p.is_file()} == files
    assert snapshot(outputs) == before
