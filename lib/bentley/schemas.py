"""Column contracts of the tables that flow between stages.

Sources return these columns; validation checks them; the warehouse stores them.
Keys are the natural keys used for upserts (ARCHITECTURE §5).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TableContract:
    name: str
    key: tuple[str, ...]
    columns: dict[str, str]  # column -> logical dtype: str, date, timestamp, float, int

    @property
    def column_names(self) -> list[str]:
        return list(self.columns)


PRICES = TableContract(
    name="prices",
    key=("ticker", "date"),
    columns={
        "ticker": "str",
        "date": "date",  # exchange session date
        "open": "float",  # as traded (not adjusted)
        "high": "float",
        "low": "float",
        "close": "float",  # as traded (not adjusted)
        "adj_close": "float",  # split- and dividend-adjusted (Yahoo convention)
        "volume": "int",  # shares as traded
        "dividend": "float",  # cash per share on the ex-date, else 0
        "split_ratio": "float",  # new shares per old share on the ex-date, else 1
    },
)

NEWS = TableContract(
    name="news",
    key=("news_id",),
    columns={
        "news_id": "str",
        "ticker": "str",
        "published_at": "timestamp",  # UTC
        "date": "date",  # the session the headline belongs to
        "headline": "str",  # plain text; never rendered as HTML (a social post's body)
        "publisher": "str",  # a social post's platform
        "url": "str",
        "source_kind": "str",  # news | social (SOURCE_KINDS); a missing value reads as news
        "author": "str",  # a social post's author; missing for headlines
    },
)

#: What `news.source_kind` may say: headlines and social posts share the table and the scorer.
SOURCE_KINDS: tuple[str, ...] = ("news", "social")

TRANSACTIONS = TableContract(
    name="transactions",
    key=("txn_id",),
    columns={
        "txn_id": "str",
        "date": "date",
        "account": "str",
        "amount": "float",  # USD; negative is money out
        "description": "str",
        "category": "str",  # may be missing: the budget stage classifies those
    },
)

HOLDINGS = TableContract(
    name="holdings",
    key=("as_of", "account", "ticker"),
    columns={
        "as_of": "date",
        "account": "str",
        "ticker": "str",
        "quantity": "float",
        "cost_basis": "float",  # total USD paid for the position
    },
)

#: The raw datasets sources deliver and their contracts. `social` (posts) has the news
#: contract and loads into the `news` table, told apart by `source_kind` (`DATASET_TABLES`).
RAW_DATASETS: dict[str, TableContract] = {c.name: c for c in (PRICES, NEWS, TRANSACTIONS, HOLDINGS)} | {"social": NEWS}

#: The warehouse table each raw dataset loads into.
DATASET_TABLES: dict[str, str] = {dataset: contract.name for dataset, contract in RAW_DATASETS.items()}

#: Which `sources.<role>` serves each raw dataset.
DATASET_ROLES: dict[str, str] = {
    "prices": "market",
    "news": "news",
    "social": "social",
    "transactions": "portfolio",
    "holdings": "portfolio",
}
