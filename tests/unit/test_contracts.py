"""The stage contracts (`bentley.schemas`) and the data dictionary (`bentley.warehouse.tables`)
describe the same tables: a column renamed or retyped in one place fails here."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from bentley import schemas
from bentley.warehouse.tables import metadata

CONTRACTS = [value for value in vars(schemas).values() if isinstance(value, schemas.TableContract)]

#: The SQL types a logical contract dtype may be stored as.
STORED_AS: dict[str, tuple[type, ...]] = {
    "str": (sa.String, sa.Text),
    "date": (sa.Date,),
    "timestamp": (sa.DateTime,),
    "float": (sa.Float,),
    "int": (sa.Integer,),
}


def test_every_contract_is_found() -> None:
    assert {c.name for c in CONTRACTS} >= {"prices", "news", "transactions", "holdings"}


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.name)
def test_a_contract_matches_its_warehouse_table(contract: schemas.TableContract) -> None:
    table = metadata.tables[contract.name]
    assert tuple(c.name for c in table.primary_key.columns) == contract.key
    for name, logical in contract.columns.items():
        assert name in table.c, f"{contract.name}.{name} is in the contract but not in the warehouse table"
        assert isinstance(table.c[name].type, STORED_AS[logical]), (
            f"{contract.name}.{name}: contract says {logical}, the table stores {table.c[name].type!r}"
        )
