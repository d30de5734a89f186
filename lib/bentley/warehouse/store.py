"""The `Warehouse` facade: one engine plus the upserts, reads and leases the stages need."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from bentley.sources.base import Health
from bentley.warehouse.convert import as_utc, column_kind, from_driver, gc_paused, schema_type
from bentley.warehouse.dialects import upsert_rows
from bentley.warehouse.engine import create_tables, open_engine, resolve_url
from bentley.warehouse.tables import FLOAT64, leases, metadata


@dataclass(frozen=True)
class LeaseGrant:
    """The outcome of `acquire_lease`: won or not, and whose lease it was."""

    acquired: bool
    holder: str | None = None  # busy: the current holder
    run_id: str | None = None  # busy: the holder's run; acquired: the run whose lapsed lease was taken over
    heartbeat_at: dt.datetime | None = None
    taken_over: bool = False


#: Rows fetched at a time by `Warehouse.read`: a driver row is a tuple of Python objects (about
#: 30 bytes a value), so a million feature rows fetched at once would hold gigabytes before
#: conversion; in chunks, only one chunk's objects exist at a time.
READ_CHUNK_ROWS = 50_000

#: Column kinds converted chunk by chunk (to arrays whose dtype does not depend on the chunk):
#: the numbers and dates that make up most of a wide table. Other kinds keep their raw values
#: until the end, so their dtype is inferred from the whole column as before.
_CONVERTED_PER_CHUNK = frozenset({"float", "date"})


def _joined(parts: list[Any], kind: str) -> pd.Series:
    """One column of `Warehouse.read` from its chunks (see `_CONVERTED_PER_CHUNK`)."""
    if not parts:
        return from_driver((), kind)
    if kind in _CONVERTED_PER_CHUNK:
        return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    return from_driver(parts[0] if len(parts) == 1 else [value for part in parts for value in part], kind)


class Warehouse:
    """One engine plus the upserts and reads the stages need."""

    def __init__(self, url: URL | str) -> None:
        self.url = make_url(url)
        self.engine: Engine = open_engine(self.url)
        create_tables(self.engine)
        #: Called with (table, frame) after each upsert: stages fingerprint what they wrote.
        self.on_write: Callable[[str, pd.DataFrame], None] | None = None

    @classmethod
    def from_settings(cls, params_url: str | None, outputs: Path) -> Warehouse:
        return cls(resolve_url(params_url, outputs))

    @property
    def display_url(self) -> str:
        """The URL with any password masked: the only form that may be printed or logged."""
        return self.url.render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ writes

    def upsert(self, table: str | sa.Table, frame: pd.DataFrame, *, conn: Connection | None = None) -> int:
        """Insert or update `frame` on the table's primary key in one transaction.

        NaN/NaT/None become NULL, dates are stored as dates and timestamps as UTC. With
        `conn`, the rows join that connection's transaction instead. Returns rows written.
        """
        target = self.table(table) if isinstance(table, str) else table
        missing = [c.name for c in target.primary_key.columns if c.name not in frame.columns]
        if missing:
            raise ValueError(f"{target.name}: rows lack key columns {missing}")
        unknown = [c for c in frame.columns if c not in target.columns]
        if unknown:
            raise ValueError(f"{target.name}: no such columns {unknown}")
        if frame.empty:
            return 0
        if conn is None:
            with self.engine.begin() as own:
                written = upsert_rows(own, target, frame)
        else:
            written = upsert_rows(conn, target, frame)
        if self.on_write is not None:
            self.on_write(target.name, frame)
        return written

    def replace_window(
        self,
        table: str,
        frame: pd.DataFrame,
        *,
        start: dt.date,
        end: dt.date,
        tickers: Iterable[str] | None,
        date_column: str = "date",
    ) -> int:
        """Make `frame` the table's rows for the tickers within [start, end], in one transaction.

        For derived tables a run owns over its history window: rows an earlier run wrote there
        (for another logical date) and this one does not produce must not stay beside it.
        """
        target = self.table(table)
        condition = [target.c[date_column] >= start, target.c[date_column] <= end]
        if tickers is not None:
            condition.append(target.c.ticker.in_(list(tickers)))
        with self.engine.begin() as conn:
            conn.execute(target.delete().where(*condition))
            return self.upsert(target, frame, conn=conn)

    def upsert_extending(self, table: str, frame: pd.DataFrame) -> int:
        """Upsert into a table whose non-key float columns follow the params (features)."""
        key = [c.name for c in self.table(table).primary_key.columns]
        self.ensure_float_columns(table, [c for c in frame.columns if c not in key])
        return self.upsert(self.reflect(table), frame)

    def ensure_float_columns(self, table: str, columns: Sequence[str]) -> None:
        """Add the missing columns as double precision floats (one ALTER where the dialect allows)."""
        existing = {c["name"] for c in sa.inspect(self.engine).get_columns(table)}
        new = [name for name in dict.fromkeys(columns) if name not in existing]
        if not new:
            return
        dialect = self.engine.dialect
        preparer = dialect.identifier_preparer
        float_type = FLOAT64.compile(dialect=dialect)
        if_not_exists = (
            "IF NOT EXISTS " if dialect.name == "postgresql" or getattr(dialect, "is_mariadb", False) else ""
        )
        clauses = [f"ADD COLUMN {if_not_exists}{preparer.quote(name)} {float_type}" for name in new]
        with self.engine.begin() as conn:
            if dialect.name == "sqlite":  # one column per ALTER TABLE
                for clause in clauses:
                    conn.exec_driver_sql(f"ALTER TABLE {preparer.quote(table)} {clause}")
            else:
                conn.exec_driver_sql(f"ALTER TABLE {preparer.quote(table)} {', '.join(clauses)}")

    def begin(self):
        """A transaction for several upserts that must land together."""
        return self.engine.begin()

    # ------------------------------------------------------------------ reads

    def table(self, name: str) -> sa.Table:
        try:
            return metadata.tables[name]
        except KeyError:
            raise ValueError(f"no warehouse table {name!r}") from None

    def reflect(self, name: str) -> sa.Table:
        """The table as it exists in the database (with columns added at run time)."""
        return sa.Table(name, sa.MetaData(), autoload_with=self.engine)

    def column_names(self, name: str) -> list[str]:
        """The columns `name` has in the database (a wide table's inputs are chosen from them)."""
        return [column.name for column in self.reflect(name).columns]

    def read(
        self,
        table: str,
        *,
        tickers: Iterable[str] | None = None,
        start: dt.date | None = None,
        end: dt.date | None = None,
        where: Mapping[str, Any] | None = None,
        date_column: str = "date",
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Rows filtered by ticker list, an inclusive date window and equality filters.

        Ordered by the primary key. Dates come back as datetime64, timestamps as tz-aware
        UTC datetime64, booleans as bool (object when NULLs are present). `columns` reads
        only those (default: all).
        """
        target = self.reflect(table)
        kinds = {c.name: column_kind(schema_type(target, c)) for c in target.columns}
        chosen = [target.c[name] for name in columns] if columns is not None else list(target.columns)
        # Raw values: the driver's own types are converted column-wise below, not per row.
        raw = [sa.type_coerce(c, sa.types.NULLTYPE).label(c.name) for c in chosen]
        query = sa.select(*raw)
        if tickers is not None:
            query = query.where(target.c.ticker.in_(list(tickers)))
        if start is not None:
            query = query.where(target.c[date_column] >= start)
        if end is not None:
            query = query.where(target.c[date_column] <= end)
        for column, value in (where or {}).items():
            query = query.where(target.c[column] == value)
        order = [c for c in target.primary_key.columns]
        with self.engine.connect().execution_options(stream_results=True) as conn, gc_paused():
            result = conn.execute(query.order_by(*order))
            names = list(result.keys())
            parts: dict[str, list[Any]] = {name: [] for name in names}
            while rows := result.fetchmany(READ_CHUNK_ROWS):
                for name, values in zip(names, zip(*rows, strict=True), strict=True):
                    chunked = kinds[name] in _CONVERTED_PER_CHUNK
                    parts[name].append(from_driver(values, kinds[name]) if chunked else values)
                del rows
        return pd.DataFrame({name: _joined(parts[name], kinds[name]) for name in names}, columns=names)

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self.reflect(table))).scalar_one())

    def has_rows(self, table: str) -> bool:
        """True when `table` exists and holds at least one row (a cheap product check)."""
        query = sa.select(sa.literal(1)).select_from(sa.table(table)).limit(1)
        try:
            with self.engine.connect() as conn:
                return conn.execute(query).first() is not None
        except (sa.exc.OperationalError, sa.exc.ProgrammingError):
            return False  # no such table

    def replace_where(self, table: str, frame: pd.DataFrame, **equals: Any) -> int:
        """Make `frame` the rows matching every `column=value` (e.g. one run's), in one
        transaction: the old rows are deleted and the new upserted together, so a reader or a
        crash never sees the rows half-replaced. Returns rows written."""
        target = self.table(table)
        with self.engine.begin() as conn:
            conn.execute(target.delete().where(*(target.c[k] == v for k, v in equals.items())))
            return self.upsert(target, frame, conn=conn)

    def delete_where(self, table: str, **equals: Any) -> int:
        """Delete the rows matching every `column=value`; returns rows deleted."""
        target = self.table(table)
        with self.engine.begin() as conn:
            return conn.execute(target.delete().where(*(target.c[k] == v for k, v in equals.items()))).rowcount

    def update_where(self, table: str, where: Mapping[str, Any], **values: Any) -> int:
        """Set `values` on the rows matching every `where` column; returns rows updated."""
        target = self.table(table)
        with self.engine.begin() as conn:
            return conn.execute(
                target.update().where(*(target.c[k] == v for k, v in where.items())).values(**values)
            ).rowcount

    def delete_book_from(
        self, portfolio: str, start: dt.date, book_tables: Mapping[str, str]
    ) -> tuple[int, dict[str, int]]:
        """Remove a paper book's rows dated on or after `start`, in one transaction (`runner paper rebook`).

        `book_tables` maps each book table to the column that dates its rows. Orders decided
        before `start` whose fills go become pending again, as they were before those days
        were booked. `risk_limit_events` has no portfolio column: a run's events belong to
        the book by the run id and date of the book's `portfolio_values` row. The update and
        that delete read rows the later deletes remove, so they run first. Returns the
        orders reopened and the rows deleted per table; a failure deletes nothing.
        """
        orders, fills, values, events = (
            self.table(name) for name in ("orders", "fills", "portfolio_values", "risk_limit_events")
        )
        refilled = sa.select(fills.c.order_id).where(fills.c.portfolio == portfolio, fills.c.date >= start)
        reopen = (
            sa.update(orders)
            .where(orders.c.order_id.in_(refilled), orders.c.decided_on < start)
            .values(status="pending")
        )
        booked_by_run = sa.exists().where(
            values.c.portfolio == portfolio,
            values.c.date >= start,
            values.c.run_id == events.c.run_id,
            values.c.date == events.c.date,
        )
        deletes = {"risk_limit_events": sa.delete(events).where(events.c.date >= start, booked_by_run)}
        for name, column in book_tables.items():
            table = self.table(name)
            deletes[name] = sa.delete(table).where(table.c.portfolio == portfolio, table.c[column] >= start)
        with self.engine.begin() as conn:
            reopened = conn.execute(reopen).rowcount
            deleted = {name: conn.execute(statement).rowcount for name, statement in deletes.items()}
        return reopened, deleted

    def distinct(self, table: str, column: str) -> list[Any]:
        target = self.reflect(table)
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(target.c[column]).distinct().order_by(target.c[column]))
            return [row[0] for row in rows]

    # ------------------------------------------------------------------ leases

    def acquire_lease(
        self,
        name: str,
        holder: str,
        run_id: str,
        ttl_s: float,
        *,
        now: dt.datetime | None = None,
        holder_alive: Callable[[str], bool] | None = None,
    ) -> LeaseGrant:
        """Take lease `name` if it is free, ours, lapsed, or held by a process known to be dead.

        `holder_alive(holder)` answers for holders on this machine (a pid check), so a runner
        killed with -9 does not block the next one for a whole TTL.
        """
        now = now or dt.datetime.now(dt.UTC)
        values = {
            "holder": holder,
            "run_id": run_id,
            "acquired_at": now,
            "heartbeat_at": now,
            "expires_at": now + dt.timedelta(seconds=ttl_s),
        }
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(leases).where(leases.c.name == name)).mappings().first()
            if row is None:
                try:
                    with conn.begin_nested():
                        conn.execute(leases.insert().values(name=name, version=1, **values))
                except sa.exc.IntegrityError:
                    return LeaseGrant(False, holder=None)  # another runner inserted it first
                return LeaseGrant(True)
            expires = as_utc(row["expires_at"])
            lapsed = expires is None or expires <= now
            dead = row["holder"] != holder and holder_alive is not None and not holder_alive(row["holder"])
            if row["holder"] != holder and not lapsed and not dead:
                return LeaseGrant(
                    False, holder=row["holder"], run_id=row["run_id"], heartbeat_at=as_utc(row["heartbeat_at"])
                )
            swapped = conn.execute(
                leases.update()
                .where(leases.c.name == name, leases.c.version == row["version"])
                .values(version=row["version"] + 1, **values)
            ).rowcount
            if swapped != 1:
                return LeaseGrant(False, holder=None)
            taken = row["holder"] != holder
            return LeaseGrant(True, run_id=row["run_id"] if taken else None, taken_over=taken)

    def renew_lease(self, name: str, holder: str, ttl_s: float, *, now: dt.datetime | None = None) -> bool:
        """Extend our lease; False when it is no longer ours (taken over after we went quiet)."""
        now = now or dt.datetime.now(dt.UTC)
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    leases.update()
                    .where(leases.c.name == name, leases.c.holder == holder)
                    .values(
                        heartbeat_at=now, expires_at=now + dt.timedelta(seconds=ttl_s), version=leases.c.version + 1
                    )
                ).rowcount
                == 1
            )

    def release_lease(self, name: str, holder: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(leases.delete().where(leases.c.name == name, leases.c.holder == holder))

    def health(self) -> Health:
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as exc:
            return Health("warehouse", False, f"{self.display_url}: {type(exc).__name__}")
        return Health("warehouse", True, self.display_url)
