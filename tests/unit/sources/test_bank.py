"""Bank and broker exports: CSV, OFX and QFX transactions, and a holdings CSV.

`file_fixtures/ledger/` holds a bank CSV export, a checking account OFX (SGML, v1 header),
a credit card QFX (XML, v2 header, Intuit's private tags) and a brokerage QFX with a cash
transfer and a stock purchase. Malformed inputs are written to tmp_path by each test.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bentley import schemas
from bentley.sources.bank import FilePortfolioSource, parse_amount
from bentley.sources.base import FetchRequest, SourceError

FIXTURES = Path(__file__).parent / "file_fixtures"
LEDGER = FIXTURES / "ledger"
CHECKING = LEDGER / "checking.ofx"
CARD = LEDGER / "card.qfx"
BROKERAGE = LEDGER / "brokerage.qfx"
TRANSACTIONS_CSV = LEDGER / "transactions.csv"
HOLDINGS = FIXTURES / "holdings.csv"
JANUARY = FetchRequest(dt.date(2024, 1, 1), dt.date(2024, 1, 31), ("NOVA", "QBIT"), as_of=dt.date(2024, 1, 12))


def transactions(path: Path | None, request: FetchRequest = JANUARY) -> pd.DataFrame:
    return FilePortfolioSource(transactions=path, holdings=None).fetch("transactions", request)


def holdings(path: Path | None, request: FetchRequest = JANUARY) -> tuple[pd.DataFrame, FilePortfolioSource]:
    source = FilePortfolioSource(transactions=None, holdings=path)
    return source.fetch("holdings", request), source


def assert_contract(frame: pd.DataFrame, contract: schemas.TableContract) -> None:
    assert list(frame.columns) == contract.column_names
    for name, kind in contract.columns.items():
        dtype = frame[name].dtype
        expected = {"date": np.dtype("datetime64[ns]"), "float": np.float64}.get(kind)
        if expected is None:
            assert pd.api.types.is_string_dtype(dtype), (name, dtype)
        else:
            assert dtype == expected, (name, dtype)


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def source_error(call: Callable[..., object], *args: object) -> str:
    with pytest.raises(SourceError) as error:
        call(*args)
    return str(error.value)


# --------------------------------------------------------------------------- amounts


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("$1,234.50", 1234.5),
        ("-45.00", -45.0),
        ("(12.00)", -12.0),
        ("($1,000)", -1000.0),
        ("-$1,250.00", -1250.0),
        ("$-3.10", -3.1),
        ("+7", 7.0),
        (" 1 234.5 ", 1234.5),
        (".5", 0.5),
        ("1,234,567.891", 1234567.891),
    ],
)
def test_amounts_parse(text: str, value: float) -> None:
    assert parse_amount(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "12,50",
        "1,23,456",
        "(12.00",
        "12.00)",
        "-(12)",
        "(-12)",
        "+-5",
        "$",
        "n/a",
        "EUR 5",
        "1.2.3",
    ],
)
def test_unreadable_amounts_are_nan(text: str) -> None:
    assert math.isnan(parse_amount(text))


# --------------------------------------------------------------------------- CSV transactions


def test_csv_transactions() -> None:
    frame = transactions(TRANSACTIONS_CSV)
    assert_contract(frame, schemas.TRANSACTIONS)
    assert frame["amount"].tolist() == [1234.5, -4.75, -4.75, -12.0, -1250.0]
    assert frame["date"].tolist() == list(
        pd.to_datetime(["2024-01-02", "2024-01-03", "2024-01-03", "2024-01-05", "2024-01-08"])
    )
    assert frame["category"].tolist()[0] == "income" and frame["category"].isna().tolist() == [
        False,
        True,
        True,
        True,
        False,
    ]
    assert frame["account"].tolist() == [
        "checking",
        "credit_card",
        "credit_card",
        "checking",
        "checking",
    ]
    assert frame["txn_id"].is_unique  # two identical coffees are two transactions
    expected = "csv:" + hashlib.sha1(b"transactions.csv|2024-01-02|1234.5|ACME CORP PAYROLL|checking|0").hexdigest()
    assert frame["txn_id"].iloc[0] == expected
    assert transactions(TRANSACTIONS_CSV)["txn_id"].tolist() == frame["txn_id"].tolist()


def test_csv_headers_are_case_and_space_insensitive(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "export.csv",
        ' ACCOUNT ,Amount,DESCRIPTION,date\nchecking,"$2,000.00",Paycheck,2024-01-02\n',
    )
    frame = transactions(path)
    assert frame[["account", "amount", "description"]].iloc[0].tolist() == [
        "checking",
        2000.0,
        "Paycheck",
    ]
    assert frame["category"].isna().all()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("Date,Amount,Description\n01/02/2024,5,x\n", "missing column 'account'"),
        (
            'Date,Amount,Description,Account\n01/02/2024,5,x,checking\n01/03/2024,"12,50",y,checking\n',
            "column 'Amount' has text where a number belongs (line 3: '12,50')",
        ),
        (
            "Date,Amount,Description,Account\n01/32/2024,5,x,checking\n",
            "column 'Date' has a value that is not a date (line 2: '01/32/2024')",
        ),
        ("Date,Amount,Description,Account\n", "no data rows"),
        ("", "empty file"),
    ],
)
def test_malformed_transaction_csv(tmp_path: Path, content: str, problem: str) -> None:
    path = write(tmp_path, "export.csv", content)
    message = source_error(transactions, path)
    assert message.startswith(f"{path}: ") and problem in message


def test_non_utf8_transaction_csv(tmp_path: Path) -> None:
    content = "Date,Amount,Description,Account\n01/02/2024,5,Caf\u00e9,checking\n".encode("cp1252")
    path = write(tmp_path, "export.csv", content)
    offset = content.index(b"\xe9")
    assert f"export.csv: not UTF-8 text (byte 0xe9 at offset {offset}, line 2)" in source_error(transactions, path)


# --------------------------------------------------------------------------- OFX and QFX


def test_ofx_bank_statement() -> None:
    frame = transactions(CHECKING)
    assert_contract(frame, schemas.TRANSACTIONS)
    assert frame["txn_id"].tolist() == [
        "ofx:000123456789:20240103001",
        "ofx:000123456789:20240105001",
        "ofx:000123456789:20240108001",
    ]
    assert frame["amount"].tolist() == [-45.0, 1900.0, -1250.0]
    # 23:00 at -05:00 is the next day in UTC; the bank's own date is kept.
    assert frame["date"].tolist() == list(pd.to_datetime(["2024-01-03", "2024-01-05", "2024-01-08"]))
    assert frame["description"].tolist() == [
        "CITY POWER & LIGHT - ELECTRIC BILL DEC",
        "ACME CORP PAYROLL",
        "OAKWOOD PROPERTY MGMT - ACH DEBIT RENT",
    ]
    assert (frame["account"] == "000123456789").all() and frame["category"].isna().all()


def test_qfx_credit_card_statement_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # <INTU.BID> must not reach the report as a warning
        frame = transactions(CARD)
    assert frame["txn_id"].tolist() == [
        "ofx:4000123412341234:320240104001",
        "ofx:4000123412341234:320240109001",
    ]
    assert frame["amount"].tolist() == [
        -23.45,
        500.0,
    ]  # a purchase is money out, the payment money in


def test_brokerage_qfx_keeps_cash_and_notes_skipped_trades() -> None:
    source = FilePortfolioSource(transactions=BROKERAGE, holdings=None)
    frame = source.fetch("transactions", JANUARY)
    assert frame[["txn_id", "amount"]].values.tolist() == [["ofx:Z98765:B20240111001", 2000.0]]
    assert "1 investment trade skipped" in source.notes[str(BROKERAGE)]


def test_folder_reads_every_export() -> None:
    frame = transactions(LEDGER)
    assert_contract(frame, schemas.TRANSACTIONS)
    assert len(frame) == 5 + 3 + 2 + 1
    assert frame["txn_id"].is_unique
    assert frame["date"].is_monotonic_increasing
    assert frame["txn_id"].str.startswith("ofx:000123456789:").sum() == 3


def test_a_folder_inside_the_ledger_folder_is_an_error(tmp_path: Path) -> None:
    """Its statements would silently not be read; hidden entries stay ignored."""
    shutil.copy(CHECKING, tmp_path / "checking.ofx")
    (tmp_path / ".gitkeep").touch()
    assert len(transactions(tmp_path)) == 3
    (tmp_path / "2023").mkdir()
    assert f"{tmp_path}: '2023' is a folder; files in subfolders are not read" in source_error(transactions, tmp_path)


def test_overlapping_statements_are_merged(tmp_path: Path) -> None:
    shutil.copy(CHECKING, tmp_path / "2024-01a.ofx")
    shutil.copy(CHECKING, tmp_path / "2024-01b.OFX")
    assert len(transactions(tmp_path)) == 3


def test_window_filters_transactions() -> None:
    frame = transactions(LEDGER, FetchRequest(dt.date(2024, 1, 4), dt.date(2024, 1, 8)))
    assert frame["date"].min() == pd.Timestamp("2024-01-04") and frame["date"].max() == pd.Timestamp("2024-01-08")
    december = transactions(TRANSACTIONS_CSV, FetchRequest(dt.date(2023, 12, 1), dt.date(2023, 12, 31)))
    assert december["description"].tolist() == ["CITY POWER & LIGHT"]


def test_broken_ofx_fixture() -> None:
    message = source_error(transactions, FIXTURES / "broken.ofx")
    assert message.startswith(f"{FIXTURES / 'broken.ofx'}: not a valid OFX file: ")
    assert "truncated" in message


@pytest.mark.parametrize(
    ("mangle", "problem"),
    [
        (lambda text: text.replace("<TRNAMT>-45.00", "<TRNAMT>abc"), "an amount is not a number"),
        (
            lambda text: text.replace("<DTPOSTED>20240105", "<DTPOSTED>2024XX05"),
            "does not conform to OFX formats",
        ),
        (lambda text: text.replace("<FITID>20240105001", ""), "Can't set STMTTRN.fitid to None"),
        (
            lambda text: text.replace("</BANKTRANLIST>", "</BANKTRANLIST></OFX>"),
            "pop from empty stack",
        ),
        (lambda text: text[: text.index("<BANKMSGSRSV1>")], "ends before </OFX>"),
        (lambda text: "garbage " * 500 + "</OFX>", "OFX header is malformed"),
        (
            lambda text: text.replace("<FITID>20240105001", "<FITID>20240103001"),
            "FITID '20240103001' appears more than once for account '000123456789'",
        ),
        (
            lambda text: text.replace("<CURDEF>USD", "<CURDEF>EUR"),
            "account '000123456789' is in EUR; the ledger is in USD",
        ),
    ],
)
def test_broken_ofx_names_the_file_and_the_complaint(
    tmp_path: Path, mangle: Callable[[str], str], problem: str
) -> None:
    path = write(tmp_path, "statement.ofx", mangle(CHECKING.read_text()))
    message = source_error(transactions, path)
    assert message.startswith(f"{path}: ") and problem in message
    assert len(message) < 400


def test_transaction_paths(tmp_path: Path) -> None:
    assert "no such file or folder" in source_error(transactions, tmp_path / "missing.ofx")
    assert "not a .csv, .ofx or .qfx file" in source_error(transactions, write(tmp_path, "ledger.xlsx", b"PK"))
    empty = transactions(None)
    assert empty.empty
    assert_contract(empty, schemas.TRANSACTIONS)


# --------------------------------------------------------------------------- holdings


def test_holdings() -> None:
    frame, source = holdings(HOLDINGS)
    assert_contract(frame, schemas.HOLDINGS)
    assert frame[["account", "ticker", "quantity", "cost_basis"]].values.tolist() == [
        ["brokerage", "NOVA", 1000.0, 150000.0],
        ["brokerage", "QBIT", 25.0, 2500.5],
        ["ira", "NOVA", 10.0, 1500.0],
        ["ira", "ZZZZ", 5.0, 100.0],  # kept; the ETL warns by name
    ]
    assert (frame["as_of"] == pd.Timestamp("2024-01-12")).all()
    assert source.outside_universe == {"ZZZZ": 1}


def test_holdings_accept_cost_basis_spellings(tmp_path: Path) -> None:
    path = write(tmp_path, "positions.csv", "account,TICKER,quantity,COST_BASIS\nira,nova,3,300\n")
    assert holdings(path)[0][["ticker", "cost_basis"]].values.tolist() == [["NOVA", 300.0]]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("account,ticker,quantity\nira,NOVA,3\n", "missing column 'cost_basis'"),
        (
            "account,ticker,quantity,cost basis\nira,NOVA,3,300\nbrokerage,NOVA,1,1\nira,nova,2,200\n",
            "account 'ira' lists ticker 'NOVA' more than once (lines 2 and 4)",
        ),
        (
            "account,ticker,quantity,cost basis\nira,NOVA,three,300\n",
            "column 'quantity' has text where a number belongs (line 2: 'three')",
        ),
        ("account,ticker,quantity,cost basis\nira,,3,300\n", "column 'ticker' is empty (line 2)"),
        (
            "account,ticker,quantity,cost basis\nira,NOVA,3,300\nira,<img src=x>,1,1\n",
            "column 'ticker' has a value that is not a ticker symbol (line 3: '<img src=x>'); "
            "a ticker is ASCII letters",
        ),
    ],
)
def test_malformed_holdings(tmp_path: Path, content: str, problem: str) -> None:
    path = write(tmp_path, "positions.csv", content)
    message = source_error(holdings, path)
    assert message.startswith(f"{path}: ") and problem in message


def test_holdings_need_as_of_and_a_path() -> None:
    no_date = FetchRequest(dt.date(2024, 1, 1), dt.date(2024, 1, 31), ("NOVA",))
    assert "holdings are a snapshot; the request needs as_of" in source_error(holdings, HOLDINGS, no_date)
    empty, _ = holdings(None)
    assert empty.empty
    assert_contract(empty, schemas.HOLDINGS)
