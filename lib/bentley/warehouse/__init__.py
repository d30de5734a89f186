"""The SQL warehouse: the only code that speaks SQL.

SQLAlchemy Core tables keyed on natural keys (ARCHITECTURE §5) are the schema of record
(`tables.py`, the data dictionary). Loads are upserts inside one transaction per call, using each
dialect's native statement, so a rerun never duplicates rows and a failed load leaves the
table as it was. Values are always bound parameters (or COPY data), never SQL text.

Loads are bulk loads: a frame is converted column by column with numpy (no per-cell Python
branching) into DBAPI rows, in chunks, and sent through the driver with a statement built
once per call, identifiers quoted by the dialect's preparer:

- SQLite: `INSERT ... ON CONFLICT (key) DO UPDATE SET c = excluded.c` with `executemany`.
  Dates and timestamps are stored as the text SQLAlchemy's SQLite types use
  ('YYYY-MM-DD', 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC), so typed reads parse them.
- PostgreSQL: small frames `executemany` (pipelined by psycopg); larger ones a binary
  `COPY` into a temporary table, then one `INSERT ... SELECT ... ON CONFLICT DO UPDATE`.
- MySQL/MariaDB: `INSERT ... VALUES (...) ON DUPLICATE KEY UPDATE c = VALUES(c)`, which
  PyMySQL's `executemany` folds into multi-row statements of at most ~1 MB (below any
  `max_allowed_packet`).

On SQLite and PostgreSQL the update is skipped for rows whose values are unchanged (MySQL
does that itself), so rerunning an overlapping load rewrites nothing.
Within one frame, the last row of a duplicated key wins on every dialect. Timestamps are
stored in UTC and read back as tz-aware UTC; dates are read back as datetime64.

Modules: `tables` (the data dictionary), `store` (the `Warehouse` facade: upserts, reads,
leases), `engine` (URL, driver timeouts, creating and migrating tables), `dialects` (the
upsert statements) and `convert` (values between pandas and the drivers).

The URL comes from BENTLEY_WAREHOUSE_URL, else params `warehouse.url`, else SQLite under
the outputs folder. A password is never a parameter: BENTLEY_WAREHOUSE_PASSWORD supplies it.
"""

from __future__ import annotations

from bentley.warehouse.engine import (
    CONNECT_TIMEOUT_S,
    PASSWORD_ENV,
    SOCKET_TIMEOUT_S,
    URL_ENV,
    driver_timeouts,
    resolve_url,
)
from bentley.warehouse.store import LeaseGrant, Warehouse
from bentley.warehouse.tables import (
    FLOAT64,
    TIMESTAMP,
    fills,
    intraday_marks,
    intraday_risk,
    metadata,
    orders,
    portfolio_values,
    watch_heartbeats,
)

#: What SQLAlchemy imports on the first connection to the default (SQLite) store: the runner
#: imports it into a stage's kernel before the stage starts (runner.execute).
WARM_IMPORTS: tuple[str, ...] = ("sqlalchemy.dialects.sqlite",)

__all__ = [
    "CONNECT_TIMEOUT_S",
    "FLOAT64",
    "PASSWORD_ENV",
    "SOCKET_TIMEOUT_S",
    "TIMESTAMP",
    "URL_ENV",
    "LeaseGrant",
    "Warehouse",
    "driver_timeouts",
    "fills",
    "intraday_marks",
    "intraday_risk",
    "metadata",
    "orders",
    "portfolio_values",
    "resolve_url",
    "watch_heartbeats",
]
