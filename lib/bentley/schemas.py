"""Column contracts of the raw datasets that flow from sources into the warehouse.

Sources return these columns; validation checks them; etl loads them. Each contract is derived
from its warehouse table (`bentley.warehouse.tables`, the data dictionary, where every column
is described): the table's columns in order, less what the loader adds (`source`). Keys are the
tables' natural keys, used for upserts (ARCHITECTURE §5).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from bentley.warehouse import tables


@dataclass(frozen=True)
class TableContract:
    name: str
    key: tuple[str, ...]
    columns: dict[str, str]  # column -> logical dtype: str, date, timestamp, float, int

    @property
    def column_names(self) -> list[str]:
        return list(self.columns)


#: Columns the loader adds to a raw dataset's rows (which source delivered them).
LOADER_COLUMNS: tuple[str, ...] = ("source",)


def logical_dtype(column: sa.Column) -> str:
    """The contract's dtype of a warehouse column: str, date, timestamp, float or int."""
    kind = column.type
    for sql_type, logical in (
        (sa.DateTime, "timestamp"),
        (sa.Date, "date"),
        (sa.Float, "float"),
        (sa.Integer, "int"),
        (sa.String, "str"),
    ):
        if isinstance(kind, sql_type):
            return logical
    raise TypeError(f"{column.table.name}.{column.name}: no logical dtype for {kind!r}")


def contract_of(table: sa.Table) -> TableContract:
    """A raw dataset's contract: its warehouse table's key and columns, less `LOADER_COLUMNS`."""
    return TableContract(
        name=table.name,
        key=tuple(column.name for column in table.primary_key.columns),
        columns={c.name: logical_dtype(c) for c in table.columns if c.name not in LOADER_COLUMNS},
    )


PRICES = contract_of(tables.prices)
NEWS = contract_of(tables.news)
TRANSACTIONS = contract_of(tables.transactions)
HOLDINGS = contract_of(tables.holdings)

#: What `news.source_kind` may say: headlines and social posts share the table and the scorer.
SOURCE_KINDS: tuple[str, ...] = ("news", "social")

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
