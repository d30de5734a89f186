"""Connections: the warehouse URL, driver timeouts, the engine and the tables it must hold.

The URL comes from BENTLEY_WAREHOUSE_URL, else params `warehouse.url`, else SQLite under
the outputs folder. A password is never a parameter: BENTLEY_WAREHOUSE_PASSWORD supplies it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from bentley.retry import Backoff, retry_call
from bentley.warehouse.tables import metadata

URL_ENV = "BENTLEY_WAREHOUSE_URL"
PASSWORD_ENV = "BENTLEY_WAREHOUSE_PASSWORD"


def resolve_url(params_url: str | None, outputs: Path) -> URL:
    """Environment first, then params, then SQLite in the outputs folder; password from env."""
    raw = os.environ.get(URL_ENV) or params_url or f"sqlite:///{Path(outputs) / 'warehouse.db'}"
    url = make_url(raw)
    password = os.environ.get(PASSWORD_ENV)
    if password and url.password is None and not url.drivername.startswith("sqlite"):
        url = url.set(password=password)
    return url


#: How long the run's engine waits for a server to accept a connection, and (MySQL/MariaDB) for
#: the server's answer to one read or write on an open connection. Unbounded, a warehouse host
#: that went silent held the runner past SIGTERM; the second bound is far above any statement
#: the pipeline sends.
CONNECT_TIMEOUT_S = 10.0
SOCKET_TIMEOUT_S = 600.0
_SQLITE_BUSY_S = 30.0


def driver_timeouts(url: URL, connect_s: float, wait_s: float) -> dict[str, Any]:
    """`connect_args` that bound the driver's waits: `connect_s` to connect, `wait_s` for a lock
    (SQLite) or for one socket read or write (MySQL/MariaDB).

    Drivers differ in names and units: libpq (psycopg, psycopg2) takes whole seconds, at least
    2. A value the URL's query sets itself is left to the URL. PostgreSQL reads are not bounded
    here: libpq has no read timeout (`runner.infra` probes the server before a run).
    """
    driver = url.get_driver_name()
    if url.get_backend_name() == "sqlite":
        wanted: dict[str, Any] = {"timeout": wait_s}
    elif driver in ("psycopg", "psycopg2"):
        wanted = {"connect_timeout": max(2, math.ceil(connect_s))}
    elif driver in ("pymysql", "mysqldb"):
        wanted = {
            "connect_timeout": math.ceil(connect_s),
            "read_timeout": math.ceil(wait_s),
            "write_timeout": math.ceil(wait_s),
        }
    else:
        wanted = {}
    return {key: value for key, value in wanted.items() if key not in url.query}


def open_engine(url: URL) -> Engine:
    if url.drivername.startswith("sqlite"):
        database = url.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args=driver_timeouts(url, CONNECT_TIMEOUT_S, _SQLITE_BUSY_S))

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB: big upserts touch many index pages
            cursor.close()

        return engine
    return sa.create_engine(
        url, pool_pre_ping=True, connect_args=driver_timeouts(url, CONNECT_TIMEOUT_S, SOCKET_TIMEOUT_S)
    )


def create_tables(engine: Engine, attempts: int = 20) -> None:
    """`create_all`, safe when several processes open a new warehouse at the same moment.

    They all see tables missing and create them; a loser gets "already exists" (PostgreSQL: a
    unique violation in its catalog) and checks again. Processes that start together create
    tables in the same order, so each could lose once per table: a short random pause
    before the next look breaks the lockstep.
    """

    def create() -> None:
        metadata.create_all(engine)
        add_missing_columns(engine)

    retry_call(create, attempts=attempts, backoff=_CREATE_RACE_BACKOFF, retryable=_lost_creation_race)


#: Pauses between looks when another process created a table first: short, jittered.
_CREATE_RACE_BACKOFF = Backoff(base_s=0.05, cap_s=0.3)


def _lost_creation_race(error: BaseException) -> bool:
    """Another process created the table between our look and our CREATE."""
    if not isinstance(error, (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.IntegrityError)):
        return False
    text = str(error).lower()
    return "already exists" in text or "duplicate" in text


def add_missing_columns(engine: Engine) -> None:
    """Additive migration: a column a newer release declares is added to an older warehouse.

    Tables only ever gain nullable columns (a note, a statistic), so a store written by an
    earlier version keeps working; rows it already holds read NULL there. Columns a run adds
    itself (features) are left alone: only declared columns are compared.
    """
    inspector = sa.inspect(engine)
    existing_tables = set(inspector.get_table_names())
    dialect = engine.dialect
    quote = dialect.identifier_preparer.quote
    for table in metadata.sorted_tables:
        if table.name not in existing_tables:
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            kind = column.type.compile(dialect=dialect)
            with engine.begin() as conn:
                conn.exec_driver_sql(f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(column.name)} {kind}")
