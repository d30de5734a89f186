"""The file-based market and news sources: formats they accept and the errors they give.

Fixtures in `file_fixtures/` hold the same ten NYSE sessions of NOVA (2-for-1 split on
2024-01-10, yfinance-style dates with an offset), QBIT (a dividend, lower-case headers) and
BBIX (no Adj Close) as a Yahoo folder, a long CSV and a long Parquet file. Malformed inputs
are written to tmp_path by each test.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shutil
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bentley import schemas
from bentley.calendar import session_for
from bentley.sources import files
from bentley.sources.base import FetchRequest, SourceError, validate_ticker
from bentley.sources.files import CsvMarketSource, CsvNewsSource

FIXTURES = Path(__file__).parent / "file_fixtures"
FOLDER = FIXTURES / "prices"
LONG_CSV = FIXTURES / "prices_long.csv"
LONG_PARQUET = FIXTURES / "prices_long.parquet"
NEWS = FIXTURES / "news.csv"
BENCHMARK = "BBIX"
ALL = ("NOVA", "QBIT", "BBIX")
SESSIONS = pd.to_datetime(
    [
        "2024-01-02",
        "2024-01-03",
        "2024-01-04",
        "2024-01-05",
        "2024-01-08",
        "2024-01-09",
        "2024-01-10",
        "2024-01-11",
        "2024-01-12",
        "2024-01-16",
    ]
)
YAHOO_HEADER = "Date,Open,High,Low,Close,Adj Close,Volume"
GOOD_ROWS = ("2024-01-02,10,11,9,10.5,10.5,1000", "2024-01-03,10.5,11.5,10,11,11,1200")


def request(start: str = "2024-01-01", end: str = "2024-01-31", tickers: tuple[str, ...] = ALL) -> FetchRequest:
    return FetchRequest(dt.date.fromisoformat(start), dt.date.fromisoformat(end), tickers)


def assert_contract(frame: pd.DataFrame, contract: schemas.TableContract) -> None:
    assert list(frame.columns) == contract.column_names
    for name, kind in contract.columns.items():
        dtype = frame[name].dtype
        if kind == "str":
            assert pd.api.types.is_string_dtype(dtype), (name, dtype)
        elif kind == "date":
            assert dtype == np.dtype("datetime64[ns]"), (name, dtype)
            assert (frame[name] == frame[name].dt.normalize()).all()
        elif kind == "timestamp":
            assert dtype == pd.DatetimeTZDtype("ns", "UTC"), (name, dtype)
        elif kind == "float":
            assert dtype == np.float64, (name, dtype)
        else:
            assert dtype == np.int64, (name, dtype)


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def yahoo(*rows: str, header: str = YAHOO_HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


def fetch_nova(folder: Path, content: str | bytes) -> pd.DataFrame:
    """NOVA.csv with `content`, all of 2024 fetched from a folder source."""
    write(folder, "NOVA.csv", content)
    return CsvMarketSource(folder, BENCHMARK).fetch("prices", request("2024-01-01", "2024-12-31", ("NOVA",)))


def raises(text: str) -> AbstractContextManager[pytest.ExceptionInfo[SourceError]]:
    """Expect a SourceError whose message contains `text` literally."""
    return pytest.raises(SourceError, match=re.escape(text))


# --------------------------------------------------------------------------- prices: formats


def test_folder_prices_follow_the_contract() -> None:
    prices = CsvMarketSource(FOLDER, BENCHMARK).fetch("prices", request())
    assert_contract(prices, schemas.PRICES)
    assert len(prices) == 30
    assert list(prices["ticker"].unique()) == ["BBIX", "NOVA", "QBIT"]
    assert prices.equals(prices.sort_values(["ticker", "date"]).reset_index(drop=True))
    assert (prices.groupby("ticker")["date"].apply(list) == [list(SESSIONS)] * 3).all()


def test_folder_and_long_files_give_identical_frames() -> None:
    folder = CsvMarketSource(FOLDER, BENCHMARK).fetch("prices", request())
    for path in (LONG_CSV, LONG_PARQUET):
        pd.testing.assert_frame_equal(CsvMarketSource(path, BENCHMARK).fetch("prices", request()), folder)


def test_yahoo_export_with_offsets_splits_and_dividends() -> None:
    """NOVA.csv is what yfinance writes: midnight New York with an offset, 0 for "no split"."""
    prices = CsvMarketSource(FOLDER, BENCHMARK).fetch("prices", request(tickers=("NOVA", "QBIT")))
    nova = prices[prices["ticker"] == "NOVA"].set_index("date")
    assert list(nova.index) == list(SESSIONS)  # local dates, not shifted to UTC
    assert nova["split_ratio"].to_dict() == {d: (2.0 if d == pd.Timestamp("2024-01-10") else 1.0) for d in SESSIONS}
    assert nova.loc["2024-01-09", "adj_close"] == pytest.approx(nova.loc["2024-01-09", "close"] / 2)
    assert nova.loc["2024-01-10", "volume"] == 2 * (1_000_000 + 12_345 * 6)
    qbit = prices[prices["ticker"] == "QBIT"].set_index("date")
    assert qbit["dividend"].to_dict() == {d: (0.25 if d == pd.Timestamp("2024-01-08") else 0.0) for d in SESSIONS}
    assert (qbit["split_ratio"] == 1.0).all()


def test_missing_adj_close_equals_close() -> None:
    prices = CsvMarketSource(FOLDER, BENCHMARK).fetch("prices", request(tickers=("BBIX",)))
    assert (prices["adj_close"] == prices["close"]).all()
    assert (prices["dividend"] == 0.0).all() and (prices["split_ratio"] == 1.0).all()


ROW = "2024-01-02,10,11,9,10.5,10.25,1000"


@pytest.mark.parametrize(
    ("header", "row"),
    [
        ("Date,Open,High,Low,Close,Adj Close,Volume", ROW),
        ("date,open,high,low,close,adj_close,volume", ROW),
        ("DATE,OPEN,HIGH,LOW,CLOSE,ADJ_CLOSE,VOLUME", ROW),
        (" Date , Open,High,Low,Close, adj  close ,Volume", ROW),
        ("Volume,Adj_Close,Close,Low,High,Open,Date", "1000,10.25,10.5,9,11,10,2024-01-02"),
    ],
)
def test_headers_match_whatever_their_case_spaces_and_underscores(tmp_path: Path, header: str, row: str) -> None:
    prices = fetch_nova(tmp_path, yahoo(row, header=header))
    fields = ["date", "open", "high", "low", "close", "adj_close", "volume"]
    assert prices[fields].values.tolist() == [[SESSIONS[0], 10.0, 11.0, 9.0, 10.5, 10.25, 1000]]


YFINANCE_HEADER = "Price,Close,High,Low,Open,Volume\nTicker,{0},{0},{0},{0},{0}\nDate,,,,,"


def test_yfinance_download_layout(tmp_path: Path) -> None:
    """What `yf.download("NOVA").to_csv(...)` writes: three header rows."""
    rows = ("2024-01-02,10.5,11,9,10,1000", "2024-01-03,11,11.5,10,10.5,1200")
    prices = fetch_nova(tmp_path, yahoo(*rows, header=YFINANCE_HEADER.format("NOVA")))
    assert prices[["date", "close", "adj_close", "volume"]].values.tolist() == [
        [SESSIONS[0], 10.5, 10.5, 1000],
        [SESSIONS[1], 11.0, 11.0, 1200],
    ]
    with raises("NOVA.csv: column 'Close' has text where a number belongs (line 5: 'x')"):
        fetch_nova(tmp_path, yahoo(rows[0], "2024-01-03,x,1,1,1,1", header=YFINANCE_HEADER.format("NOVA")))
    with raises("NOVA.csv: holds ticker 'QBIT', not 'NOVA'"):
        fetch_nova(tmp_path, yahoo(*rows, header=YFINANCE_HEADER.format("QBIT")))
    two = "Price,Close,Close\nTicker,NOVA,QBIT\nDate,,\n2024-01-02,1,2\n"
    with raises("NOVA.csv: yfinance layout with 2 tickers (NOVA, QBIT); save one file per ticker"):
        fetch_nova(tmp_path, two)
    long = write(tmp_path, "long.csv", yahoo(*rows, header=YFINANCE_HEADER.format("QBIT")))
    assert CsvMarketSource(long, BENCHMARK).available_tickers() == ["QBIT"]


def test_window_filters_rows() -> None:
    for source in (CsvMarketSource(FOLDER, BENCHMARK), CsvMarketSource(LONG_CSV, BENCHMARK)):
        prices = source.fetch("prices", request("2024-01-04", "2024-01-10"))
        assert sorted(prices["date"].unique()) == list(SESSIONS[2:7])
        empty = source.fetch("prices", request("2024-02-01", "2024-02-29"))
        assert empty.empty
        assert_contract(empty, schemas.PRICES)


def test_only_requested_tickers_are_returned() -> None:
    for path in (FOLDER, LONG_CSV, LONG_PARQUET):
        prices = CsvMarketSource(path, BENCHMARK).fetch("prices", request(tickers=("QBIT",)))
        assert set(prices["ticker"]) == {"QBIT"} and len(prices) == 10
    assert CsvMarketSource(FOLDER, BENCHMARK).fetch("prices", request(tickers=())).empty


def test_available_tickers_exclude_the_benchmark() -> None:
    for path in (FOLDER, LONG_CSV, LONG_PARQUET):
        assert CsvMarketSource(path, BENCHMARK).available_tickers() == ["NOVA", "QBIT"]
    assert CsvMarketSource(FOLDER, "qbit").available_tickers() == ["BBIX", "NOVA"]


# --------------------------------------------------------------------------- prices: types


def test_a_type_column_states_each_tickers_type(tmp_path: Path) -> None:
    """Any case, Yahoo's quoteType spellings too; a blank cell states nothing; never in the lake."""
    long = write(
        tmp_path,
        "long.csv",
        "date,ticker,open,high,low,close,volume,Type\n"
        "2024-01-02,SPX,1,1,1,1,0,INDEX\n2024-01-03,SPX,1,1,1,1,0,index\n"
        "2024-01-02,VFIAX,1,1,1,1,1,MUTUALFUND\n2024-01-02,QQQ,1,1,1,1,1,Etf\n"
        "2024-01-02,NOVA,1,1,1,1,1,\n2024-01-02,^VIX,1,1,1,1,0,\n",
    )
    source = CsvMarketSource(long, BENCHMARK)
    assert source.instrument_types(["SPX", "VFIAX", "QQQ", "NOVA", "^VIX"]) == {
        "SPX": "index",
        "VFIAX": "fund",
        "QQQ": "etf",
        "NOVA": "equity",
        "^VIX": "index",
    }
    assert list(source.fetch("prices", request(tickers=("SPX",))).columns) == schemas.PRICES.column_names
    folder = tmp_path / "folder"
    write(folder, "SPX.csv", yahoo("2024-01-02,10,11,9,10.5,10.5,0,index", header=YAHOO_HEADER + ",quote_type"))
    write(folder, "NOVA.csv", yahoo(*GOOD_ROWS))
    source = CsvMarketSource(folder, BENCHMARK)
    assert source.fetch("prices", request(tickers=("SPX", "NOVA")))["ticker"].nunique() == 2
    assert source.instrument_types(["SPX", "NOVA"]) == {"SPX": "index", "NOVA": "equity"}
    assert CsvMarketSource(folder, BENCHMARK).instrument_types(["SPX"]) == {"SPX": "index"}  # no fetch first


def test_a_bad_type_names_the_file_column_line_and_ticker(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "long.csv",
        "date,ticker,open,high,low,close,volume,instrument_type\n"
        "2024-01-02,NOVA,1,1,1,1,1,equity\n2024-01-03,NOVA,1,1,1,1,1,bond\n",
    )
    with raises(
        f"{path}: column 'instrument_type', line 3, ticker 'NOVA': 'bond' is not an instrument type "
        "(one of equity, etf, fund, index"
    ):
        CsvMarketSource(path, BENCHMARK).instrument_types(["NOVA"])
    write(
        tmp_path,
        "long.csv",
        "date,ticker,open,high,low,close,volume,type\n"
        "2024-01-02,NOVA,1,1,1,1,1,equity\n2024-01-03,NOVA,1,1,1,1,1,INDEX\n",
    )
    with raises(f"{path}: column 'type' gives ticker 'NOVA' two types: 'equity' (line 2) and 'index' (line 3)"):
        CsvMarketSource(path, BENCHMARK).fetch("prices", request(tickers=("NOVA",)))
    nova = write(
        tmp_path / "folder", "NOVA.csv", yahoo("2024-01-02,10,11,9,10.5,10.5,1,stock", header=YAHOO_HEADER + ",type")
    )
    with raises(f"{nova}: column 'type', line 2, ticker 'NOVA': 'stock' is not an instrument type"):
        CsvMarketSource(nova.parent, BENCHMARK).instrument_types(["NOVA"])


def test_two_type_columns_are_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path, "NOVA.csv", yahoo("2024-01-02,10,11,9,10.5,10.5,1,etf,etf", header=YAHOO_HEADER + ",type,Quote Type")
    )
    with raises(f"{path}: columns 'type' and 'Quote Type' are both the 'instrument_type' column"):
        CsvMarketSource(tmp_path, BENCHMARK).instrument_types(["NOVA"])


def test_file_names_are_matched_upper_cased(tmp_path: Path) -> None:
    write(tmp_path, "nova.csv", yahoo(*GOOD_ROWS))
    write(tmp_path, "README.txt", "not a price file")
    source = CsvMarketSource(tmp_path, BENCHMARK)
    assert source.available_tickers() == ["NOVA"]
    assert source.fetch("prices", request(tickers=("NOVA",)))["ticker"].tolist() == ["NOVA", "NOVA"]


def test_plausibility_is_left_to_validation(tmp_path: Path) -> None:
    """Negative prices and high below low are data quality, reported later with counts."""
    prices = fetch_nova(tmp_path, yahoo("2024-01-02,-10,9,11,0,0,0", "2024-01-03,10,11,9,,10.5,5"))
    assert prices["open"].iloc[0] == -10.0 and prices["high"].iloc[0] < prices["low"].iloc[0]
    assert np.isnan(prices["close"].iloc[1])  # empty price: validation's missing_values


def test_consistent_offsets_keep_the_local_date(tmp_path: Path) -> None:
    rows = (
        "2024-01-03T00:30:00+01:00,10,11,9,10.5,10.5,1000",
        "2024-01-04T00:30:00+01:00,10,11,9,10.5,10.5,1000",
    )
    assert fetch_nova(tmp_path, yahoo(*rows))["date"].tolist() == list(SESSIONS[1:3])


def test_daylight_saving_offsets_are_not_mixed(tmp_path: Path) -> None:
    """yfinance writes -05:00 in winter and -04:00 in summer for the same exchange."""
    rows = (
        "2024-03-08 00:00:00-05:00,10,11,9,10.5,10.5,1000",
        "2024-03-11 00:00:00-04:00,10,11,9,10.5,10.5,1000",
    )
    prices = fetch_nova(tmp_path, yahoo(*rows))
    assert prices["date"].tolist() == list(pd.to_datetime(["2024-03-08", "2024-03-11"]))


def test_byte_order_mark_and_blank_lines_are_accepted(tmp_path: Path) -> None:
    content = ("\ufeff" + YAHOO_HEADER + "\r\n" + GOOD_ROWS[0] + "\r\n\r\n,,,,,,\r\n" + GOOD_ROWS[1] + "\r\n").encode()
    assert len(fetch_nova(tmp_path, content)) == 2


def test_parquet_files_in_a_folder(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "Date": pd.to_datetime(["2024-01-02", "2024-01-03"]),
            "Open": [10.0, 10.5],
            "High": [11.0, 11.5],
            "Low": [9.0, 10.0],
            "Close": [10.5, 11.0],
            "Volume": [1000, 1200],
        }
    )
    frame.set_index("Date").to_parquet(tmp_path / "QBIT.parquet")  # as yfinance frames are saved
    prices = CsvMarketSource(tmp_path, BENCHMARK).fetch("prices", request(tickers=("QBIT",)))
    assert prices["date"].tolist() == list(SESSIONS[:2]) and prices["volume"].tolist() == [
        1000,
        1200,
    ]


def test_long_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = write(tmp_path, "long.csv", LONG_CSV.read_text())
    source = CsvMarketSource(path, BENCHMARK)
    assert source.available_tickers() == ["NOVA", "QBIT"]
    write(tmp_path, "long.csv", "date,ticker,open,high,low,close,volume\n2024-01-02,ZETA,1,1,1,1,1\n")
    assert source.available_tickers() == ["ZETA"]


def test_health() -> None:
    assert CsvMarketSource(FOLDER, BENCHMARK).health().ok
    assert "3 ticker files" in CsvMarketSource(FOLDER, BENCHMARK).health().detail
    assert CsvMarketSource(LONG_PARQUET, BENCHMARK).health().ok
    missing = CsvMarketSource(FIXTURES / "nowhere", BENCHMARK).health()
    assert not missing.ok and "does not exist" in missing.detail


# --------------------------------------------------------------------------- prices: errors


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (
            yahoo("2024-01-02,10,11,9,10.5,1000", header="Date,Open,High,Low,Adj Close,Volume"),
            "missing column 'close' (header: Date, Open, High, Low, Adj Close, Volume)",
        ),
        (
            yahoo("2024-01-02,10,11,9,10.5", header="Date,Open,High,Low,Adj Close"),
            "missing columns 'close', 'volume'",
        ),
        (
            yahoo(GOOD_ROWS[0], "2024-01-03,10,11,9,n/a,10.5,1000"),
            "column 'Close' has text where a number belongs (line 3: 'n/a')",
        ),
        (
            yahoo(GOOD_ROWS[0], "2024-01-03,10,11,9,1,234.5,10.5,1000"),
            "line 3 has 8 fields where the header has 7",
        ),
        (yahoo(GOOD_ROWS[0], "2024-01-03,10,11,9"), "line 3 has 4 fields where the header has 7"),
        (
            yahoo(*GOOD_ROWS, "2024-01-03,10,11,9,10.5,10.5,1000"),
            "duplicate date 2024-01-03 (lines 3 and 4)",
        ),
        (
            yahoo(GOOD_ROWS[0], "yesterday,10,11,9,10.5,10.5,1000"),
            "column 'Date' has a value that is not a date (line 3: 'yesterday')",
        ),
        (
            yahoo(GOOD_ROWS[0], "2024-02-30,10,11,9,10.5,10.5,1000"),
            "not a date (line 3: '2024-02-30')",
        ),
        (yahoo(GOOD_ROWS[0], "2024-01,10,11,9,10.5,10.5,1000"), "not a date (line 3: '2024-01')"),
        (yahoo(GOOD_ROWS[0], ",10,11,9,10.5,10.5,1000"), "column 'Date' is empty (line 3)"),
        (
            yahoo(GOOD_ROWS[0], "2024-01-03,10,11,9,10.5,10.5,12.5"),
            "column 'Volume' has a value that is not a whole number (line 3: '12.5')",
        ),
        (yahoo(GOOD_ROWS[0], "2024-01-03,10,11,9,10.5,10.5,"), "column 'Volume' is empty (line 3)"),
        (
            yahoo(
                "2024-01-02T00:00:00-05:00,10,11,9,10.5,10.5,1000",
                "2024-01-03T00:00:00+01:00,10,11,9,10.5,10.5,1000",
            ),
            "column 'Date' has mixed timezone offsets (line 2: '-05:00', line 3: '+01:00')",
        ),
        (
            yahoo(
                "2024-01-02,10,11,9,10.5,10.5,1000",
                "2024-01-03T00:00:00+01:00,10,11,9,10.5,10.5,1000",
            ),
            "column 'Date' has mixed timezone offsets (line 2: none, line 3: '+01:00')",
        ),
        (
            yahoo(*GOOD_ROWS, header="Date,Open,High,Low,Close,Adj Close,adj_close"),
            "columns 'Adj Close' and 'adj_close' are both the 'adj_close' column",
        ),
        ("", "empty file"),
        ("\n  \n", "empty file"),
        (YAHOO_HEADER + "\n", "no data rows (only a header)"),
        (yahoo(GOOD_ROWS[0], '2024-01-03,"10,11,9,10.5,10.5,1000'), "not valid CSV"),
    ],
)
def test_malformed_price_files_name_the_file_and_the_problem(tmp_path: Path, content: str, problem: str) -> None:
    with pytest.raises(SourceError) as error:
        fetch_nova(tmp_path, content)
    assert str(error.value).startswith(f"{tmp_path / 'NOVA.csv'}: ")
    assert problem in str(error.value)


def test_non_utf8_bytes_give_their_offset(tmp_path: Path) -> None:
    content = yahoo(*GOOD_ROWS, header=YAHOO_HEADER + ",Note").replace("1000\n", "1000,Caf\u00e9\n").encode("latin-1")
    offset = content.index(b"\xe9")
    with raises(f"NOVA.csv: not UTF-8 text (byte 0xe9 at offset {offset}, line 2)"):
        fetch_nova(tmp_path, content)


def test_errors_quote_a_short_value_never_the_file(tmp_path: Path) -> None:
    junk = "x" * 5000
    with raises("text where a number belongs") as error:
        fetch_nova(tmp_path, yahoo(f"2024-01-02,10,11,9,{junk},10.5,1000"))
    assert len(str(error.value)) < 300


def test_unknown_ticker_names_the_ticker_and_the_folder(tmp_path: Path) -> None:
    with raises(f"no price file for ticker 'ZZZZ' in {FOLDER}"):
        CsvMarketSource(FOLDER, BENCHMARK).fetch("prices", request(tickers=("NOVA", "ZZZZ")))
    for path in (LONG_CSV, LONG_PARQUET):
        with raises(f"{path}: no rows for ticker 'ZZZZ'"):
            CsvMarketSource(path, BENCHMARK).fetch("prices", request(tickers=("NOVA", "ZZZZ")))


def test_a_ticker_cannot_lead_outside_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "prices"
    write(folder, "NOVA.csv", yahoo(*GOOD_ROWS))
    write(tmp_path, "secret.csv", yahoo(*GOOD_ROWS))
    source = CsvMarketSource(folder, BENCHMARK)
    for ticker in ("../secret", "../../etc/x"):
        with raises(f"ticker '{ticker}': path '{ticker}.csv' escapes the data folder"):
            source.fetch("prices", request(tickers=(ticker,)))


def test_two_files_for_one_ticker_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "NOVA.csv", yahoo(*GOOD_ROWS))
    shutil.copy(LONG_PARQUET, tmp_path / "nova.parquet")
    with raises(f"ticker 'NOVA' has 2 files in {tmp_path} (NOVA.csv, nova.parquet); keep one"):
        CsvMarketSource(tmp_path, BENCHMARK).fetch("prices", request(tickers=("NOVA",)))


def test_long_file_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "long.csv", "date,open,high,low,close,volume\n2024-01-02,1,1,1,1,1\n")
    with raises(f"{path}: missing column 'ticker'"):
        CsvMarketSource(path, BENCHMARK).available_tickers()
    write(
        tmp_path,
        "long.csv",
        "date,ticker,open,high,low,close,volume\n"
        "2024-01-03,QBIT,1,1,1,1,1\n2024-01-03,NOVA,1,1,1,1,1\n2024-01-03,nova,1,1,1,1,1\n",
    )
    with raises(f"{path}: duplicate date 2024-01-03 for NOVA (lines 3 and 4)"):
        CsvMarketSource(path, BENCHMARK).fetch("prices", request(tickers=("QBIT",)))


def test_price_paths(tmp_path: Path) -> None:
    with raises("nowhere.csv: cannot read (No such file or directory)"):
        CsvMarketSource(tmp_path / "nowhere.csv", BENCHMARK).available_tickers()
    sheet = write(tmp_path, "prices.xlsx", b"PK")
    with raises(f"{sheet}: not a .csv or .parquet file, nor a folder of them"):
        CsvMarketSource(sheet, BENCHMARK).fetch("prices", request())


def test_parquet_errors_name_the_row(tmp_path: Path) -> None:
    frame = pd.read_parquet(LONG_PARQUET)
    frame["close"] = frame["close"].astype(str)
    frame.loc[4, "close"] = "n/a"
    path = tmp_path / "long.parquet"
    frame.to_parquet(path)
    with raises(f"{path}: column 'close' has text where a number belongs (row 5: 'n/a')"):
        CsvMarketSource(path, BENCHMARK).fetch("prices", request())
    write(tmp_path, "broken.parquet", b"PAR1 this is not parquet")
    with raises("broken.parquet: not a readable Parquet file"):
        CsvMarketSource(tmp_path / "broken.parquet", BENCHMARK).fetch("prices", request())


# --------------------------------------------------------------------------- news


def news(tickers: tuple[str, ...] = ("NOVA", "QBIT"), path: Path = NEWS) -> tuple[pd.DataFrame, CsvNewsSource]:
    source = CsvNewsSource(path)
    return source.fetch("news", request(tickers=tickers)), source


def test_news_follow_the_contract_and_belong_to_sessions() -> None:
    frame, source = news()
    assert_contract(frame, schemas.NEWS)
    by_url = frame.set_index("url")
    assert by_url.loc["https://news.example/nova/1", "date"] == pd.Timestamp("2024-01-02")  # 09:30 New York
    assert by_url.loc["https://news.example/nova/2", "date"] == pd.Timestamp("2024-01-08")  # Friday after the close
    assert by_url.loc["https://news.example/qbit/1", "date"] == pd.Timestamp("2024-01-08")  # Saturday
    assert by_url.loc["https://news.example/nova/2", "published_at"] == pd.Timestamp("2024-01-05 21:15", tz="UTC")
    undated = frame[frame["url"].isna()].iloc[0]  # naive timestamp: UTC
    assert undated["published_at"] == pd.Timestamp("2024-01-09 12:00", tz="UTC")
    assert pd.isna(undated["publisher"]) and undated["ticker"] == "QBIT"
    assert "https://news.example/nova/0" not in set(by_url.index)  # 2023-12-29: outside the window
    assert source.outside_universe == {"ZZZZ": 1}
    assert set(frame["ticker"]) == {"NOVA", "QBIT"}


def test_news_ids_are_derived_and_stable() -> None:
    first, _ = news()
    again, _ = news()
    assert first["news_id"].tolist() == again["news_id"].tolist()
    row = first.iloc[0]
    text = f"{row['ticker']}|{row['published_at'].isoformat()}|{row['headline']}"
    assert row["news_id"] == "csv:" + hashlib.sha1(text.encode()).hexdigest()


def test_headlines_stay_plain_text() -> None:
    frame, _ = news()
    assert "<b>Nova</b> &amp; partners <script>alert(1)</script> expand margins" in set(frame["headline"])


def test_news_with_ids_and_dates(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "posts.csv",
        "news_id,ticker,published_at,date,headline\n"
        "a1,NOVA,2024-01-05T21:15:00Z,2024-01-05,Late filing\n"
        "a2,NOVA,2024-01-05T21:20:00Z,,No date given\n",
    )
    frame, _ = news(("NOVA",), path)
    assert frame["news_id"].tolist() == ["a1", "a2"]
    assert frame["date"].tolist() == [pd.Timestamp("2024-01-05"), pd.Timestamp("2024-01-08")]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("ticker,published_at\nNOVA,2024-01-02T10:00:00Z\n", "missing column 'headline'"),
        (
            "ticker,published_at,headline\nNOVA,yesterday,Hi\n",
            "column 'published_at' has a value that is not an ISO 8601 timestamp (line 2: 'yesterday')",
        ),
        (
            "ticker,published_at,headline\n,2024-01-02T10:00:00Z,Hi\n",
            "column 'ticker' is empty (line 2)",
        ),
        (
            "news_id,ticker,published_at,headline\nx,NOVA,2024-01-02T10:00:00Z,Hi\nx,NOVA,2024-01-03T10:00:00Z,Ho\n",
            "duplicate news_id 'x' (lines 2 and 3)",
        ),
        (
            "ticker,published_at,headline\nNOVA,1990-01-02T10:00:00Z,Old\n",
            "published_at 1990-01-02T10:00:00+00:00 is outside the XNYS calendar; give the post a date",
        ),
    ],
)
def test_malformed_news_files(tmp_path: Path, content: str, problem: str) -> None:
    path = write(tmp_path, "posts.csv", content)
    with pytest.raises(SourceError) as error:
        news(path=path)
    assert str(error.value).startswith(f"{path}: ")
    assert problem in str(error.value)


def test_session_for() -> None:
    stamps = pd.Series(
        pd.to_datetime(
            [
                "2024-11-29 17:59",
                "2024-11-29 19:00",  # half day: the close is 13:00 New York (18:00 UTC)
                "2024-01-12 20:59",
                "2024-01-12 21:01",  # Friday around the 16:00 close
                "2024-01-15 15:00",  # Martin Luther King Jr. Day
                "2024-01-16 03:00",  # 22:00 New York on the holiday
                "1990-06-01 15:00",  # before the calendar starts
            ],
            utc=True,
        )
    )
    expected = pd.to_datetime(
        ["2024-11-29", "2024-12-02", "2024-01-12", "2024-01-16", "2024-01-16", "2024-01-16", None]
    )
    assert session_for(stamps).tolist() == list(expected)
    naive = pd.Series(pd.to_datetime(["2024-01-12 21:01"]))  # taken as UTC
    assert session_for(naive).tolist() == [pd.Timestamp("2024-01-16")]


# --------------------------------------------------------------------------- hostile input

REAL_SYMBOLS = ("BRK-B", "BRK.B", "^GSPC", "EURUSD=X", "7203.T", "BTC-USD", "ES=F", "005930.KS")
NOT_SYMBOLS = (
    "A B",
    "'; DROP TABLE prices;--",
    "<IMG SRC=X ONERROR=&#97;&#108;&#101;&#114;&#116;(1)>",
    '"NOVA"',
    "NOVA;",
    "caf\u00e9",
    "\u00df",  # "SS" once upper-cased: refused before
    "A" * 21,
    "BRK--B",
    "-NOVA",
    "NOVA.",
    "^",
)


@pytest.mark.parametrize("symbol", REAL_SYMBOLS)
def test_real_symbols_are_tickers(tmp_path: Path, symbol: str) -> None:
    assert validate_ticker(symbol.lower(), "here") == symbol
    write(tmp_path, f"{symbol.lower()}.csv", yahoo(*GOOD_ROWS))
    source = CsvMarketSource(tmp_path, BENCHMARK)
    assert source.available_tickers() == [symbol]
    assert set(source.fetch("prices", request(tickers=(symbol,)))["ticker"]) == {symbol}


@pytest.mark.parametrize("symbol", [*NOT_SYMBOLS, "", "A/B", "NOVA\n", "A" * 5000])
def test_validate_ticker_refuses_with_one_line(symbol: str) -> None:
    shown = symbol if len(symbol) <= 40 else symbol[:40] + "..."
    with raises(f"universe.tickers: {shown!r} is not a ticker symbol (a ticker is ASCII") as error:
        validate_ticker(symbol, "universe.tickers")
    assert "\n" not in str(error.value) and len(str(error.value)) < 250


@pytest.mark.parametrize("symbol", NOT_SYMBOLS)
def test_a_file_name_that_is_not_a_ticker_is_refused(tmp_path: Path, symbol: str) -> None:
    """Every file of the folder is checked, requested or not: the folder is the input."""
    write(tmp_path, "NOVA.csv", yahoo(*GOOD_ROWS))
    write(tmp_path, f"{symbol}.csv", yahoo(*GOOD_ROWS))
    source = CsvMarketSource(tmp_path, BENCHMARK)
    shown = symbol if len(symbol) <= 40 else symbol[:40] + "..."  # a long name is shortened
    expected = f"{tmp_path}: file {symbol + '.csv'!r}: {shown!r} is not a ticker symbol"
    for call in (
        source.available_tickers,
        lambda: source.fetch("prices", request(tickers=("NOVA",))),
    ):
        with raises(expected) as error:
            call()
        assert "\n" not in str(error.value)
    health = source.health()
    assert not health.ok and expected in health.detail


@pytest.mark.parametrize("symbol", ["A B", "A/B", "<b>", "caf\u00e9"])
def test_a_long_file_cell_that_is_not_a_ticker_names_the_line(tmp_path: Path, symbol: str) -> None:
    header = "date,ticker,open,high,low,close,volume"
    rows = f"2024-01-02,NOVA,1,1,1,1,1\n2024-01-02,{symbol},1,1,1,1,1\n"
    path = write(tmp_path, "long.csv", f"{header}\n{rows}")
    with raises(
        f"{path}: column 'ticker' has a value that is not a ticker symbol (line 3: {symbol!r}); "
        "a ticker is ASCII letters"
    ):
        CsvMarketSource(path, BENCHMARK).available_tickers()
    frame = pd.read_csv(path, dtype=str)
    frame.to_parquet(tmp_path / "long.parquet")
    with raises(f"column 'ticker' has a value that is not a ticker symbol (row 2: {symbol!r})"):
        CsvMarketSource(tmp_path / "long.parquet", BENCHMARK).available_tickers()


def test_a_yfinance_ticker_row_must_hold_a_ticker(tmp_path: Path) -> None:
    rows = ("2024-01-02,10.5,11,9,10,1000",)
    with raises(f"{tmp_path / 'NOVA.csv'}: line 2: '<b>' is not a ticker symbol"):
        fetch_nova(tmp_path, yahoo(*rows, header=YFINANCE_HEADER.format("<b>")))


def test_a_news_ticker_must_be_a_ticker(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "posts.csv",
        "ticker,published_at,headline\nNOVA,2024-01-02T10:00:00Z,Hi\n$x$,2024-01-02T11:00:00Z,Ho\n",
    )
    with raises(f"{path}: column 'ticker' has a value that is not a ticker symbol (line 3: '$x$')"):
        news(path=path)


def test_a_folder_inside_the_price_folder_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "NOVA.csv", yahoo(*GOOD_ROWS))
    (tmp_path / "QBIT.csv").mkdir()
    source = CsvMarketSource(tmp_path, BENCHMARK)
    with raises(f"{tmp_path}: 'QBIT.csv' is a folder; files in subfolders are not read"):
        source.fetch("prices", request(tickers=("NOVA",)))
    (tmp_path / "QBIT.csv").rmdir()
    (tmp_path / "archive").mkdir()
    with raises(f"{tmp_path}: 'archive' is a folder"):
        source.available_tickers()
    assert not source.health().ok


def test_hidden_entries_are_ignored_and_a_broken_link_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "NOVA.csv", yahoo(*GOOD_ROWS))
    write(tmp_path, ".DS_Store", b"\x00\x00\x00\x01Bud1")
    write(tmp_path, ".gitkeep", "")
    write(tmp_path, ".git/HEAD", "ref: refs/heads/main\n")
    write(tmp_path, ".~lock.QBIT.csv#", "")
    source = CsvMarketSource(tmp_path, BENCHMARK)
    assert source.available_tickers() == ["NOVA"]
    (tmp_path / "QBIT.csv").symlink_to(tmp_path / "gone.csv")
    with raises(f"{tmp_path}: 'QBIT.csv' is not a regular file (a broken link, socket or pipe)"):
        source.available_tickers()


def test_a_pipe_or_a_folder_where_a_file_belongs_is_refused(tmp_path: Path) -> None:
    """Refused from its metadata: reading a named pipe would block forever."""
    pipe = tmp_path / "long.csv"
    os.mkfifo(pipe)
    with raises(f"{pipe}: not a regular file (a device, socket or named pipe)"):
        CsvMarketSource(pipe, BENCHMARK).available_tickers()
    folder = tmp_path / "posts.csv"
    folder.mkdir()
    with raises(f"{folder}: a folder where a file is expected"):
        news(path=folder)


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = yahoo(*GOOD_ROWS)
    size = len(content.encode())
    monkeypatch.setattr(files, "MAX_FILE_BYTES", size)
    assert len(fetch_nova(tmp_path, content)) == 2  # exactly at the limit
    monkeypatch.setattr(files, "MAX_FILE_BYTES", size - 1)
    message = (
        f"{tmp_path / 'NOVA.csv'}: {size:,} bytes, over the limit of {size - 1:,} bytes for one "
        "source file (sources.file_limits.max_mb)"
    )
    with raises(message):
        fetch_nova(tmp_path, content)
    monkeypatch.setattr(Path, "open", lambda *args, **kwargs: pytest.fail("the file was opened"))
    with raises(message):
        CsvMarketSource(tmp_path, BENCHMARK).fetch("prices", request(tickers=("NOVA",)))


def test_a_file_over_the_row_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "MAX_FILE_ROWS", 2)
    assert len(fetch_nova(tmp_path, yahoo(*GOOD_ROWS))) == 2  # exactly at the limit
    three = yahoo(*GOOD_ROWS, "2024-01-04,10,11,9,10.5,10.5,1000")
    with raises(
        f"{tmp_path / 'NOVA.csv'}: more than 2 data rows, the limit for one source file (sources.file_limits.max_rows)"
    ):
        fetch_nova(tmp_path, three)
    path = tmp_path / "long.parquet"
    shutil.copy(LONG_PARQUET, path)
    with raises(f"{path}: more than 2 data rows"):
        CsvMarketSource(path, BENCHMARK).available_tickers()
    news_path = write(tmp_path, "posts.csv", NEWS.read_text())
    with raises(f"{news_path}: more than 2 data rows"):
        news(path=news_path)
