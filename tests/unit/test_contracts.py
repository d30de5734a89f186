"""The raw datasets' contracts (`bentley.schemas`) are derived from the data dictionary
(`bentley.warehouse.tables`): one place declares a column, and sources, validation and etl
all see the change."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from bentley import schemas
from bentley.warehouse import tables


def test_the_price_contract_is_the_price_table_without_the_loaders_column() -> None:
    assert schemas.PRICES == schemas.TableContract(
        name="prices",
        key=("ticker", "date"),
        columns={
            "ticker": "str",
            "date": "date",
            "open": "float",
            "high": "float",
            "low": "float",
            "close": "float",
            "adj_close": "float",
            "volume": "int",
            "dividend": "float",
            "split_ratio": "float",
        },
    )


@pytest.mark.parametrize("dataset", ["prices", "news", "social", "transactions", "holdings"])
def test_every_raw_dataset_contract_follows_its_table(dataset: str) -> None:
    contract = schemas.RAW_DATASETS[dataset]
    table = tables.metadata.tables[schemas.DATASET_TABLES[dataset]]
    assert contract.key == tuple(c.name for c in table.primary_key.columns)
    assert contract.column_names == [c.name for c in table.columns if c.name != "source"]
    assert "source" in table.c  # the loader's column is stored, but no source delivers it


def test_a_column_added_to_a_table_is_in_its_contract() -> None:
    table = sa.Table(
        "news",
        sa.MetaData(),
        *(sa.Column(c.name, c.type, primary_key=c.primary_key) for c in tables.news.columns),
        sa.Column("sentiment_hint", tables.FLOAT64),
        sa.Column("seen_at", tables.TIMESTAMP),
    )
    contract = schemas.contract_of(table)
    assert contract.columns["sentiment_hint"] == "float" and contract.columns["seen_at"] == "timestamp"
    assert contract.column_names[: len(schemas.NEWS.columns)] == schemas.NEWS.column_names


def test_a_column_type_without_a_logical_dtype_is_named() -> None:
    table = sa.Table(
        "odd", sa.MetaData(), sa.Column("id", sa.String(8), primary_key=True), sa.Column("blob", sa.LargeBinary)
    )
    with pytest.raises(TypeError, match=r"odd\.blob: no logical dtype"):
        schemas.contract_of(table)
