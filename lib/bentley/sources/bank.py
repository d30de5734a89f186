"""A household's transactions and holdings from bank and broker exports.

Transactions come from CSV exports and OFX/QFX statements (parsed by ofxtools, a maintained
OFX parser), one file or a folder of them; holdings from one CSV snapshot. The same rules as
the market files apply (`bentley.sources.files`): every file is parsed completely before
anything is returned, and structural problems raise a `SourceError` naming the file, the
column, the line and the value.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import re
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pandas as pd
from ofxtools.models import INVBANKTRAN, INVSTMTRS
from ofxtools.models.base import PrivateTagWarning
from ofxtools.Parser import OFXTree
from ofxtools.Types import OFXTypeWarning, String

from bentley import schemas
from bentley.sources.base import FetchRequest, Source, SourceError, resolve_inside
from bentley.sources.files import (
    Table,
    contract_frame,
    digest,
    folder_files,
    read_bytes,
    read_table,
)

__all__ = ["FilePortfolioSource", "parse_amount"]

#: Transaction CSV columns; category is optional (the budget stage classifies the rest).
TRANSACTION_COLUMNS: dict[str, tuple[str, ...]] = {
    "date": (),
    "amount": (),
    "description": (),
    "account": (),
    "category": (),
}
_REQUIRED_TRANSACTION_COLUMNS = ("date", "amount", "description", "account")
#: Holdings CSV columns, all required ("Cost Basis" matches cost_basis).
HOLDING_COLUMNS: dict[str, tuple[str, ...]] = {
    "account": (),
    "ticker": (),
    "quantity": (),
    "cost_basis": (),
}
_LEDGER_SUFFIXES = (".csv", ".ofx", ".qfx")
#: Statement aggregates of bank, credit card and investment accounts.
_STATEMENT_TAGS = frozenset({"STMTRS", "CCSTMTRS", "INVSTMTRS"})
#: A money amount once spaces are removed: optional parentheses (negative), a sign before or
#: after a dollar sign, and digits with correctly grouped thousands separators.
_AMOUNT = re.compile(
    r"(?P<open>\()?(?P<sign>[-+])?\$?(?P<sign_after>[-+])?"
    r"(?P<number>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+)(?P<close>\))?"
)
#: ofxtools' own text conversion (entity unescaping), to match tree text to parsed values.
_OFX_TEXT = String()


def parse_amount(text: str) -> float:
    """'$1,234.50' -> 1234.5, '(12.00)' -> -12.0, '-$45.00' -> -45.0; NaN when unreadable.

    Thousands separators must be grouped by three, so a decimal comma ("12,50") is refused
    rather than read as 1250.
    """
    match = _AMOUNT.fullmatch(re.sub(r"\s+", "", text))
    if match is None:
        return math.nan
    parenthesized = bool(match["open"])
    signs = [sign for sign in (match["sign"], match["sign_after"]) if sign]
    if parenthesized != bool(match["close"]) or len(signs) > 1 or (parenthesized and signs):
        return math.nan  # "(12", "+-5", "(-12)": no reading is safer than a guessed sign
    value = float(match["number"].replace(",", ""))
    return -value if parenthesized or signs == ["-"] else value


class FilePortfolioSource(Source):
    """Transactions (CSV, OFX, QFX; a file or a folder) and a holdings CSV.

    A dataset whose path is not configured is empty. Holdings tickers must be ticker symbols
    (`TICKER_PATTERN`), checked row by row. After a fetch, `outside_universe` counts
    holdings of tickers outside the request (ticker -> rows; they are kept, the ETL warns by
    name) and `notes` says, per file, what was skipped on purpose (investment trades).
    """

    name = "files"
    datasets = ("transactions", "holdings")

    def __init__(self, transactions: Path | None, holdings: Path | None) -> None:
        super().__init__()
        self.transactions = Path(transactions) if transactions is not None else None
        self.holdings = Path(holdings) if holdings is not None else None
        self.outside_universe: dict[str, int] = {}
        self.notes: dict[str, str] = {}

    def fetch(self, dataset: str, request: FetchRequest) -> pd.DataFrame:
        self._check_dataset(dataset)
        if dataset == "transactions":
            return self._fetch_transactions(request)
        return self._fetch_holdings(request)

    # ----------------------------------------------------------------- transactions

    def _fetch_transactions(self, request: FetchRequest) -> pd.DataFrame:
        """Every file's rows in the window, by date.

        OFX ids are the bank's (account, FITID), so overlapping statement downloads describe
        the same transaction twice: the file later in name order wins. CSV ids include the
        file name, so CSV exports are never merged with each other.
        """
        self.notes = {}
        if self.transactions is None:
            return _empty(schemas.TRANSACTIONS)
        frames = [self._read_transactions(path) for path in self._ledger_files(self.transactions)]
        frames = [f for f in frames if not f.empty]
        if not frames:
            return _empty(schemas.TRANSACTIONS)
        ledger = pd.concat(frames, ignore_index=True).drop_duplicates("txn_id", keep="last")
        start, end = pd.Timestamp(request.start), pd.Timestamp(request.end)
        ledger = ledger[(ledger["date"] >= start) & (ledger["date"] <= end)]
        return contract_frame(schemas.TRANSACTIONS, ledger.sort_values(["date", "account"], kind="stable"))

    @staticmethod
    def _ledger_files(path: Path) -> list[Path]:
        """The file itself, or the folder's .csv/.ofx/.qfx files sorted by name (`folder_files`:
        hidden entries ignored, a subfolder or an unreadable entry refused)."""
        if path.is_dir():
            return [
                resolve_inside(path, entry.name)  # a symlink must not lead outside
                for entry in folder_files(path, _LEDGER_SUFFIXES)
            ]
        if not path.exists():
            raise SourceError(f"{path}: no such file or folder")
        if path.suffix.lower() not in _LEDGER_SUFFIXES:
            raise SourceError(f"{path}: not a .csv, .ofx or .qfx file")
        return [path]

    def _read_transactions(self, path: Path) -> pd.DataFrame:
        if path.suffix.lower() == ".csv":
            return _csv_transactions(read_table(path), path.name)
        rows, skipped = _ofx_transactions(path)
        if skipped:
            self.notes[str(path)] = (
                f"{skipped} investment trade{'s' if skipped > 1 else ''} skipped "
                "(buys, sells, income): positions come from the holdings file; cash movements were read"
            )
        return rows

    # ----------------------------------------------------------------- holdings

    def _fetch_holdings(self, request: FetchRequest) -> pd.DataFrame:
        """The snapshot as of the request's logical date; every row is kept, outside tickers too."""
        self.outside_universe = {}
        if self.holdings is None:
            return _empty(schemas.HOLDINGS)
        if request.as_of is None:
            raise SourceError(f"{self.holdings}: holdings are a snapshot; the request needs as_of")
        table = read_table(self.holdings)
        columns = table.columns(HOLDING_COLUMNS, tuple(HOLDING_COLUMNS))
        holdings = pd.DataFrame(
            {
                "as_of": pd.Timestamp(request.as_of),
                "account": columns["account"].require().text,
                "ticker": columns["ticker"].tickers(),
                "quantity": columns["quantity"].numbers(parse_amount),
                "cost_basis": columns["cost_basis"].numbers(parse_amount),
            }
        )
        _refuse_duplicate_positions(table, holdings)
        outside = holdings.loc[~holdings["ticker"].isin(request.tickers), "ticker"].value_counts().sort_index()
        self.outside_universe = {str(t): int(n) for t, n in outside.items()}
        return contract_frame(schemas.HOLDINGS, holdings.sort_values(["account", "ticker"], kind="stable"))


def _empty(contract: schemas.TableContract) -> pd.DataFrame:
    return contract_frame(contract, {name: [] for name in contract.column_names})


def _refuse_duplicate_positions(table: Table, holdings: pd.DataFrame) -> None:
    """One row per (account, ticker): two rows would be summed or overwritten, both guesses."""
    duplicated = holdings.duplicated(["account", "ticker"], keep=False)
    if duplicated.any():
        first = holdings[duplicated].iloc[0]
        same = [
            i
            for i, (account, ticker) in enumerate(zip(holdings["account"], holdings["ticker"], strict=True))
            if account == first["account"] and ticker == first["ticker"]
        ]
        raise table.error(
            f"account {first['account']!r} lists ticker {first['ticker']!r} more than once ({table.located(same)})"
        )


def _csv_transactions(table: Table, file_name: str) -> pd.DataFrame:
    """A bank CSV export in contract columns.

    The id hashes the row's content with the file name and the row's occurrence among
    identical rows: two equal coffees on one day are two transactions, and re-reading the
    same file gives the same ids.
    """
    columns = table.columns(TRANSACTION_COLUMNS, _REQUIRED_TRANSACTION_COLUMNS)
    frame = pd.DataFrame(
        {
            "date": columns["date"].require().dates(),
            "account": columns["account"].strings(),
            "amount": columns["amount"].numbers(parse_amount),
            "description": columns["description"].strings(),
            "category": columns["category"].strings() if "category" in columns else None,
        }
    )
    identity = ["date", "amount", "description", "account"]
    occurrence = frame.groupby(identity, dropna=False, sort=False).cumcount()
    frame["txn_id"] = [
        "csv:" + digest(file_name, day.date().isoformat(), repr(amount), description, account, k)
        for day, amount, description, account, k in zip(
            frame["date"],
            frame["amount"],
            frame["description"].fillna(""),
            frame["account"].fillna(""),
            occurrence,
            strict=True,
        )
    ]
    return frame


# --------------------------------------------------------------------------- OFX / QFX


def _ofx_transactions(path: Path) -> tuple[pd.DataFrame, int]:
    """Cash transactions of every statement in the file, and how many investment trades were skipped.

    Bank and card statements give all their transactions; investment statements their cash
    movements (INVBANKTRAN). Buys, sells and reinvestments are not ledger rows: positions come
    from the holdings file.
    """
    ofx, root = _parse_ofx(path)
    posted = _posting_dates(root)
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    skipped = 0
    for statement in ofx.statements:
        account = statement.account.acctid
        if statement.curdef != "USD":
            raise SourceError(f"{path}: account {account!r} is in {statement.curdef}; the ledger is in USD")
        listed = list(statement.transactions or [])
        if isinstance(statement, INVSTMTRS):
            cash = [t.stmttrn for t in listed if isinstance(t, INVBANKTRAN)]
            skipped += len(listed) - len(cash)
        else:
            cash = listed
        for txn in cash:
            if (account, txn.fitid) in seen:
                raise SourceError(f"{path}: FITID {txn.fitid!r} appears more than once for account {account!r}")
            seen.add((account, txn.fitid))
            rows.append(
                {
                    "txn_id": f"ofx:{account}:{txn.fitid}",
                    "date": pd.Timestamp(posted[(account, txn.fitid)]),
                    "account": account,
                    "amount": float(txn.trnamt),
                    "description": _description(txn),
                    "category": None,
                }
            )
    return pd.DataFrame(rows, columns=schemas.TRANSACTIONS.column_names), skipped


def _parse_ofx(path: Path) -> tuple[Any, ET.Element]:
    """ofxtools' parsed statements and the element tree they came from.

    ofxtools accepts a file cut short after any complete element (SGML end tags are optional),
    so a download that stopped early would silently lose its last statements: a file must
    end with </OFX>. ofxtools raises many exception types (ParseError, OFXSpecError,
    ValueError, KeyError, IndexError, decimal errors); all of them mean "not a valid OFX".
    """
    data = read_bytes(path)
    if not data.rstrip(b"\x00 \t\r\n").upper().endswith(b"</OFX>"):
        raise SourceError(f"{path}: not a valid OFX file: it ends before </OFX> (truncated download?)")
    parser = OFXTree()
    try:
        with warnings.catch_warnings():
            # QFX's <INTU.BID> and names longer than the spec's 32 characters are routine.
            warnings.simplefilter("ignore", PrivateTagWarning)
            warnings.simplefilter("ignore", OFXTypeWarning)
            root = parser.parse(io.BytesIO(data))
            ofx = parser.convert()
    except Exception as error:  # the boundary of a third-party parser: see the docstring
        raise SourceError(f"{path}: not a valid OFX file: {_complaint(error)}") from error
    return ofx, root


def _complaint(error: Exception) -> str:
    """ofxtools' message, one line and short (a header error quotes the file's first bytes)."""
    if isinstance(error, ArithmeticError):
        return "an amount is not a number"
    lines = str(error).strip().splitlines()
    message = lines[0] if lines else type(error).__name__
    return message if len(message) <= 200 else message[:200] + "..."


def _posting_dates(root: ET.Element) -> dict[tuple[str, str], dt.date]:
    """(account, FITID) -> the posting date as written, i.e. local to the file's own offset.

    ofxtools converts DTPOSTED to UTC, which moves an evening posting (23:00 at -05:00) to the
    next day; the first eight characters of the original value are the bank's own date.
    """
    posted: dict[tuple[str, str], dt.date] = {}
    for statement in (element for element in root.iter() if element.tag in _STATEMENT_TAGS):
        account_from = next(child for child in statement if child.tag.endswith("ACCTFROM"))
        account = _OFX_TEXT.convert(account_from.findtext("ACCTID", ""))
        for txn in statement.iter("STMTTRN"):
            raw = txn.findtext("DTPOSTED", "")
            fitid = _OFX_TEXT.convert(txn.findtext("FITID", ""))
            posted[(account, fitid)] = dt.date(int(raw[:4]), int(raw[4:6]), int(raw[6:8]))
    return posted


def _description(txn: Any) -> str | None:
    """NAME (or the payee's name), then MEMO when it adds something: banks cut NAME at 32 chars."""
    name = txn.name or (txn.payee.name if txn.payee is not None else None)
    parts = [p for p in (name, txn.memo) if p]
    return " - ".join(dict.fromkeys(parts)) or None
