"""Bulk upserts in each dialect's native statement (see `bentley.warehouse` for the why).

- SQLite: `INSERT ... ON CONFLICT (key) DO UPDATE SET c = excluded.c` with `executemany`.
- PostgreSQL: small frames `executemany` (pipelined by psycopg); larger ones a binary
  `COPY` into a temporary table, then one `INSERT ... SELECT ... ON CONFLICT DO UPDATE`.
- MySQL/MariaDB: `INSERT ... VALUES (...) ON DUPLICATE KEY UPDATE c = VALUES(c)`, which
  PyMySQL's `executemany` folds into multi-row statements of at most ~1 MB.

On SQLite and PostgreSQL the update is skipped for rows whose values are unchanged (MySQL
does that itself). Within one frame, the last row of a duplicated key wins on every dialect.
"""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bentley.warehouse.convert import (
    DriverColumn,
    column_kind,
    gc_paused,
    last_of_duplicates,
    row_chunks,
    schema_type,
)

_COPY_MIN_ROWS = 300  # PostgreSQL: below this, pipelined executemany beats COPY + temporary table


def upsert_rows(conn: Connection, target: sa.Table, frame: pd.DataFrame) -> int:
    dialect = conn.dialect
    names = [str(c) for c in frame.columns]
    kinds = [column_kind(schema_type(target, target.c[name])) for name in names]
    keys = [c.name for c in target.primary_key.columns]
    n = len(frame)
    with gc_paused():  # millions of short-lived tuples: cyclic GC passes would only cost time
        columns = [
            DriverColumn.from_series(frame[name], kind, dialect.name) for name, kind in zip(names, kinds, strict=True)
        ]
        if dialect.name == "postgresql" and n >= _COPY_MIN_ROWS:
            _copy_upsert_postgresql(conn, target, names, kinds, keys, columns, n)
        else:
            statement = upsert_statement(dialect, target, names, keys)
            for rows in row_chunks(columns, n):
                conn.exec_driver_sql(statement, rows)
    return n


def upsert_statement(dialect: sa.engine.Dialect, table: sa.Table, names: list[str], keys: list[str]) -> str:
    """The dialect's single-row upsert with positional placeholders, for executemany."""
    q = dialect.identifier_preparer.quote
    into = f"INSERT INTO {_table_name(dialect, table)}"
    column_list = ", ".join(q(c) for c in names)
    if dialect.name == "sqlite":
        values = f"VALUES ({', '.join(['?'] * len(names))})"
        return f"{into} ({column_list}) {values} {_on_conflict(dialect, table, names, keys)}"
    if dialect.name == "postgresql":
        values = f"VALUES ({', '.join(['%s'] * len(names))})"
        return f"{into} AS {_ALIAS} ({column_list}) {values} {_on_conflict(dialect, table, names, keys)}"
    if dialect.name in {"mysql", "mariadb"}:
        if any("%" in c for c in [table.name, *names]):  # PyMySQL would read it as a placeholder
            raise ValueError(f"{table.name}: '%' in a table or column name is not supported on MySQL")
        # Exactly the shape PyMySQL's executemany rewrites into multi-row INSERTs
        # (`INSERT ... VALUES (%s, ...) ON DUPLICATE ...`); VALUES() works on MariaDB and MySQL.
        # MySQL itself skips rows whose values do not change.
        values = f"VALUES ({', '.join(['%s'] * len(names))})"
        assignments = [c for c in names if c not in keys] or keys[:1]  # key = VALUES(key): keeps the row
        update = ", ".join(f"{q(c)} = VALUES({q(c)})" for c in assignments)
        return f"{into} ({column_list}) {values} ON DUPLICATE KEY UPDATE {update}"
    raise NotImplementedError(f"no upsert for SQL dialect {dialect.name!r}")


_ALIAS = "bentley_target"  # PostgreSQL: the upsert target's alias in ON CONFLICT ... WHERE


def _on_conflict(dialect: sa.engine.Dialect, table: sa.Table, names: list[str], keys: list[str]) -> str:
    """`ON CONFLICT (key) DO UPDATE SET c = excluded.c ... WHERE <some c changed>` (SQLite, PostgreSQL).

    The WHERE skips rows whose values are unchanged: a rerun over the same data then
    writes nothing (no new row versions on PostgreSQL, no page writes on SQLite).
    """
    q = dialect.identifier_preparer.quote
    conflict = f"ON CONFLICT ({', '.join(q(c) for c in keys)})"
    updates = [c for c in names if c not in keys]
    if not updates:
        return f"{conflict} DO NOTHING"
    assignments = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in updates)
    if dialect.name == "postgresql":
        current = ", ".join(f"{_ALIAS}.{q(c)}" for c in updates)
        incoming = ", ".join(f"excluded.{q(c)}" for c in updates)
        changed = f"ROW({current}) IS DISTINCT FROM ROW({incoming})"
    else:
        name = q(table.name)
        changed = " OR ".join(f"{name}.{q(c)} IS NOT excluded.{q(c)}" for c in updates)
    return f"{conflict} DO UPDATE SET {assignments} WHERE {changed}"


#: Binary COPY types per value kind (the staging table uses the same types).
_PG_COPY_TYPES = {
    "str": "text",
    "date": "date",
    "timestamp": "timestamptz",
    "float": "float8",
    "int": "int8",
    "bool": "bool",
}


def _copy_upsert_postgresql(
    conn: Connection,
    table: sa.Table,
    names: list[str],
    kinds: list[str],
    keys: list[str],
    columns: list[DriverColumn],
    n: int,
) -> None:
    """Binary COPY into a temporary table, then one set-based upsert from it."""
    import psycopg

    dialect = conn.dialect
    q = dialect.identifier_preparer.quote
    staging = f"pg_temp.{q(f'_bentley_upsert_{table.name}'[:63])}"
    types = [_PG_COPY_TYPES[kind] for kind in kinds]
    # ON CONFLICT DO UPDATE may touch a row once per statement: keep the last of duplicated keys.
    keep = last_of_duplicates([columns[names.index(k)] for k in keys], n)
    definition = ", ".join(f"{q(c)} {t}" for c, t in zip(names, types, strict=True))
    # Dropped again below; the IF EXISTS covers a failed load on an autocommit connection.
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {staging}")
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {staging} ({definition})")
    copy_sql = f"COPY {staging} ({', '.join(q(c) for c in names)}) FROM STDIN (FORMAT BINARY)"
    driver_connection = conn.connection.driver_connection
    assert driver_connection is not None, "a checked-out connection has its DBAPI connection"
    cursor = driver_connection.cursor()
    try:
        with cursor.copy(copy_sql) as copy:
            copy.set_types(types)
            for rows in row_chunks(columns, n, keep):
                for row in rows:
                    copy.write_row(row)
    except psycopg.Error as exc:
        raise sa.exc.DBAPIError.instance(copy_sql, None, exc, psycopg.Error, dialect=dialect) from exc
    finally:
        cursor.close()
    # Assignment casts convert text/int8/float8 to the target's own types (with its checks);
    # text headed for a non-string column is cast explicitly.
    selected = []
    for name, kind in zip(names, kinds, strict=True):
        column_type = table.c[name].type
        if kind == "str" and not isinstance(column_type, sa.String):
            selected.append(f"CAST({q(name)} AS {column_type.compile(dialect=dialect)})")
        else:
            selected.append(q(name))
    conn.exec_driver_sql(
        f"INSERT INTO {_table_name(dialect, table)} AS {_ALIAS} ({', '.join(q(c) for c in names)}) "
        f"SELECT {', '.join(selected)} FROM {staging} {_on_conflict(dialect, table, names, keys)}"
    )
    conn.exec_driver_sql(f"DROP TABLE {staging}")


def _table_name(dialect: sa.engine.Dialect, table: sa.Table) -> str:
    preparer = dialect.identifier_preparer
    return preparer.format_table(table)
