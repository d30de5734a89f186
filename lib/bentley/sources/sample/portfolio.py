"""Sample household: a bank and card ledger and brokerage holdings.

Salary on the 15th and last day, rent on the 1st, utilities, subscriptions, weekly groceries,
discretionary card spending, a monthly card payoff and savings transfer. About 10 % of expense
rows have no category (income and transfers always have one). Holdings are positions bought at
the first session after the epoch, their share counts split-adjusted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bentley import schemas
from bentley.sources.base import FetchRequest
from bentley.sources.sample._common import (
    _HOLDINGS_TAG,
    _LEDGER_TAG,
    _crc,
    _digest,
    _frame,
    _require_epoch,
    _tickers,
)
from bentley.sources.sample.prices import _SampleCompanion


@dataclass(frozen=True)
class _Bill:
    """A charge on a fixed day of every month (USD at 2000 prices)."""

    day: int
    description: str
    category: str
    account: str
    low: float
    high: float


@dataclass(frozen=True)
class _Spend:
    """Discretionary spending: a number of charges per month at random merchants and days."""

    category: str
    merchants: tuple[str, ...]
    low: float
    high: float
    count: tuple[int, int]  # inclusive range of charges in a month that has any
    chance: float = 1.0  # probability that a month has any


_BILLS = (
    _Bill(1, "OAKWOOD PROPERTY MGMT ACH", "housing", "checking", 1250.0, 1250.0),
    _Bill(3, "NETFLIX.COM", "subscriptions", "credit_card", 12.99, 12.99),
    _Bill(8, "CITY POWER & LIGHT", "utilities", "checking", 45.0, 130.0),
    _Bill(9, "SPOTIFY USA", "subscriptions", "credit_card", 9.99, 9.99),
    _Bill(12, "COMCAST CABLE COMM", "utilities", "checking", 59.99, 59.99),
    _Bill(17, "PLANET FITNESS CLUB 0412", "subscriptions", "credit_card", 24.99, 24.99),
    _Bill(20, "VERIZON WIRELESS", "utilities", "checking", 70.0, 90.0),
)
_GROCERS = ("WHOLEFDS MKT #10234", "TRADER JOE'S #552", "SAFEWAY #1793", "KROGER #0412")
_SPENDING = (
    _Spend(
        "dining",
        (
            "STARBUCKS #2234",
            "CHIPOTLE 0871",
            "SQ *BLUE BOTTLE COFFEE",
            "DOORDASH*THAI BASIL",
            "PANERA BREAD #6021",
        ),
        6.0,
        60.0,
        (4, 10),
    ),
    _Spend(
        "transport",
        ("SHELL OIL 5744", "CHEVRON 0093117", "UBER *TRIP", "MTA*NYCT PAYGO"),
        8.0,
        55.0,
        (2, 6),
    ),
    _Spend(
        "shopping",
        ("AMAZON.COM*MK1AB2C3", "TARGET 00012345", "BEST BUY 00004721", "HOME DEPOT #6512"),
        12.0,
        180.0,
        (1, 4),
    ),
    _Spend(
        "healthcare",
        ("CVS/PHARMACY #04321", "WALGREENS #1129", "CITYMD URGENT CARE"),
        10.0,
        150.0,
        (1, 2),
        0.4,
    ),
    _Spend(
        "travel",
        ("DELTA AIR 0062345678", "MARRIOTT HOTELS", "AIRBNB * HM4KX2"),
        120.0,
        700.0,
        (1, 3),
        0.1,
    ),
)
_PAYCHECK = 1900.0  # net, per payday, in 2000; grows with _SALARY_GROWTH a year
_SALARY_GROWTH, _INFLATION = 0.035, 0.03
_SAVINGS = 400.0
_UNCATEGORIZED_SHARE = 0.10  # of expense rows, left for the budget stage to classify


def _payday(day: dt.date) -> dt.date:
    """Payroll lands on the Friday before a weekend date."""
    return day - dt.timedelta(days=max(0, day.weekday() - 4))


def _month_ledger(seed: int, year: int, month: int) -> list[tuple[dt.date, str, float, str, str | None]]:
    """All rows (date, account, amount, description, category) of one month, by date.

    Seeded by (seed, year, month) alone, so a month never depends on the requested window.
    The card is paid off and savings topped up from checking, as transfer pairs.
    """
    rng = np.random.default_rng([seed, _LEDGER_TAG, year, month])
    last = (dt.date(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)).day
    prices = (1 + _INFLATION) ** (year - 2000)
    paycheck = _PAYCHECK * (1 + _SALARY_GROWTH) ** (year - 2000)

    def on(day: int) -> dt.date:
        return dt.date(year, month, min(day, last))

    def cost(low: float, high: float) -> float:
        return -round(float(rng.uniform(low, high)) * prices, 2)

    rows: list[tuple[dt.date, str, float, str, str | None]] = [
        (
            _payday(on(d)),
            "checking",
            round(paycheck * (1 + 0.01 * rng.standard_normal()), 2),
            "ACME CORP PAYROLL",
            "income",
        )
        for d in (15, last)
    ]
    rows += [(on(b.day), b.account, cost(b.low, b.high), b.description, b.category) for b in _BILLS]
    rows += [
        (
            on(week + int(rng.integers(7))),
            "credit_card",
            cost(55.0, 190.0),
            str(rng.choice(_GROCERS)),
            "groceries",
        )
        for week in (1, 8, 15, 22, 29)
        if week <= last
    ]
    for spend in _SPENDING:
        count = int(rng.integers(spend.count[0], spend.count[1] + 1)) if rng.random() < spend.chance else 0
        rows += [
            (
                on(int(rng.integers(1, last + 1))),
                "credit_card",
                cost(spend.low, spend.high),
                str(rng.choice(spend.merchants)),
                spend.category,
            )
            for _ in range(count)
        ]
    missing = rng.random(len(rows)) < _UNCATEGORIZED_SHARE
    rows = [
        (d, a, x, s, None if miss and c != "income" else c) for (d, a, x, s, c), miss in zip(rows, missing, strict=True)
    ]

    card = -round(sum(x for _, a, x, _, _ in rows if a == "credit_card"), 2)
    saved = round(_SAVINGS * prices, -1)
    rows += [
        (on(last), "checking", -card, "CHASE CREDIT CRD AUTOPAY", "transfer"),
        (on(last), "credit_card", card, "AUTOMATIC PAYMENT - THANK YOU", "transfer"),
        (on(16), "checking", -saved, "ONLINE TRANSFER TO SAV XXXX4821", "transfer"),
        (on(16), "savings", saved, "ONLINE TRANSFER FROM CHK XXXX1937", "transfer"),
    ]
    return sorted(rows, key=lambda row: row[0])


def _months(start: dt.date, end: dt.date) -> Iterable[tuple[int, int]]:
    """(year, month) pairs overlapping [start, end]."""
    for index in range(start.year * 12 + start.month - 1, end.year * 12 + end.month):
        yield index // 12, index % 12 + 1


class SamplePortfolioSource(_SampleCompanion):
    """A household's bank and card ledger and its brokerage holdings, deterministic in the seed."""

    datasets = ("transactions", "holdings")

    def fetch(self, dataset: str, request: FetchRequest) -> pd.DataFrame:
        self._check_dataset(dataset)
        if dataset == "transactions":
            return self._transactions(request)
        return self._holdings(request)

    def _transactions(self, request: FetchRequest) -> pd.DataFrame:
        _require_epoch(self.epoch, request.start, "the request's start")
        rows = [
            (_digest("txn", self.seed, f"{year:04d}-{month:02d}", i), *row)
            for year, month in _months(request.start, request.end)
            for i, row in enumerate(_month_ledger(self.seed, year, month))
            if request.start <= row[0] <= request.end
        ]
        names = schemas.TRANSACTIONS.column_names
        return _frame(schemas.TRANSACTIONS, {name: [row[k] for row in rows] for k, name in enumerate(names)})

    def _holdings(self, request: FetchRequest) -> pd.DataFrame:
        """Positions bought at the first sample session, in shares as of `as_of` (after splits)."""
        as_of = request.as_of
        if as_of is None:
            raise ValueError("holdings are a snapshot: the request needs as_of")
        _require_epoch(self.epoch, as_of, "as_of")
        tickers = _tickers(request)
        prices = self._prices(FetchRequest(self.epoch, as_of, tuple(tickers)))
        if tickers and prices.empty:
            raise ValueError(f"no sample session between the epoch {self.epoch} and as_of {as_of}")
        bought = prices.groupby("ticker").agg(price=("close", "first"), splits=("split_ratio", "prod"))
        rows = []
        for ticker in tickers:
            u = np.random.default_rng([self.seed, _crc(ticker), _HOLDINGS_TAG]).random(5)
            accounts = ("brokerage",) if u[0] < 0.5 else ("ira",) if u[0] < 0.75 else ("brokerage", "ira")
            for i, account in enumerate(accounts):
                shares = 10 + round(290 * u[1 + i])
                cost = shares * bought.at[ticker, "price"] * (0.8 + 0.45 * u[3 + i])
                held = np.floor(shares * bought.at[ticker, "splits"])  # fractions were paid in cash
                rows.append((as_of, account, ticker, float(held), round(cost, 2)))
        rows.sort(key=lambda row: (row[1], row[2]))
        names = schemas.HOLDINGS.column_names
        return _frame(schemas.HOLDINGS, {name: [row[k] for row in rows] for k, name in enumerate(names)})
