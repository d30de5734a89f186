"""The SQL warehouse: the only code that speaks SQL.

SQLAlchemy Core tables keyed on natural keys (ARCHITECTURE §5). Loads are upserts inside
one transaction per call, using each dialect's native statement (SQLite and PostgreSQL
`ON CONFLICT DO UPDATE`, MySQL/MariaDB `ON DUPLICATE KEY UPDATE`), so a rerun never
duplicates rows and a failed load leaves the table as it was. Values are always bound
parameters.

The URL comes from BENTLEY_WAREHOUSE_URL, else params `warehouse.url`, else SQLite under
the outputs folder. A password is never a parameter: BENTLEY_WAREHOUSE_PASSWORD supplies it.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from bentley.sources.base import Health

URL_ENV = "BENTLEY_WAREHOUSE_URL"
PASSWORD_ENV = "BENTLEY_WAREHOUSE_PASSWORD"
_CHUNK_ROWS = 5_000

metadata = sa.MetaData()


def _key(name: str, length: int = 64) -> sa.Column:
    return sa.Column(name, sa.String(length), primary_key=True)


prices = sa.Table(
    "prices",
    metadata,
    _key("ticker", 32),
    sa.Column("date", sa.Date, primary_key=True),
    sa.Column("open", sa.Float),
    sa.Column("high", sa.Float),
    sa.Column("low", sa.Float),
    sa.Column("close", sa.Float, comment="as traded"),
    sa.Column("adj_close", sa.Float, comment="split and dividend adjusted"),
    sa.Column("volume", sa.BigInteger),
    sa.Column("dividend", sa.Float),
    sa.Column("split_ratio", sa.Float),
    sa.Column("source", sa.String(32)),
)

news = sa.Table(
    "news",
    metadata,
    _key("news_id"),
    sa.Column("ticker", sa.String(32), index=True),
    sa.Column("published_at", sa.DateTime(timezone=True)),
    sa.Column("date", sa.Date, index=True),
    sa.Column("headline", sa.Text),
    sa.Column("publisher", sa.String(128)),
    sa.Column("url", sa.Text),
    sa.Column("source", sa.String(32)),
)

transactions = sa.Table(
    "transactions",
    metadata,
    _key("txn_id"),
    sa.Column("date", sa.Date, index=True),
    sa.Column("account", sa.String(64)),
    sa.Column("amount", sa.Float),
    sa.Column("description", sa.Text),
    sa.Column("category", sa.String(64), nullable=True),
    sa.Column("source", sa.String(32)),
)

holdings = sa.Table(
    "holdings",
    metadata,
    sa.Column("as_of", sa.Date, primary_key=True),
    _key("account"),
    _key("ticker", 32),
    sa.Column("quantity", sa.Float),
    sa.Column("cost_basis", sa.Float),
    sa.Column("source", sa.String(32)),
)

#: Feature columns are added as the params ask for them (see `ensure_float_columns`).
features = sa.Table(
    "features",
    metadata,
    _key("ticker", 32),
    sa.Column("date", sa.Date, primary_key=True),
)

#: Incremental sync: the last date loaded per (source, dataset, ticker); "*" when a
#: dataset has no ticker. Written by `etl` after a successful load, read by `ingest`.
sync_state = sa.Table(
    "sync_state",
    metadata,
    _key("source", 32),
    _key("dataset", 32),
    _key("ticker", 32),
    sa.Column("cursor_date", sa.Date),
    sa.Column("rows", sa.Integer),
    sa.Column("run_id", sa.String(64)),
)

pipeline_runs = sa.Table(
    "pipeline_runs",
    metadata,
    _key("run_id"),
    sa.Column("profile", sa.String(64)),
    sa.Column("logical_date", sa.Date),
    sa.Column("status", sa.String(16)),
    sa.Column("params_hash", sa.String(64)),
    sa.Column("git_sha", sa.String(40)),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
    sa.Column("duration_s", sa.Float),
    sa.Column("mlflow_run_id", sa.String(64)),
)

stage_runs = sa.Table(
    "stage_runs",
    metadata,
    _key("run_id"),
    _key("stage"),
    sa.Column("attempt", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("status", sa.String(16)),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
    sa.Column("duration_s", sa.Float),
    sa.Column("cell_time_s", sa.Float),
    sa.Column("notebook_path", sa.Text),
    sa.Column("report_path", sa.Text),
    sa.Column("mlflow_run_id", sa.String(64)),
    sa.Column("error", sa.Text),
)

data_quality = sa.Table(
    "data_quality",
    metadata,
    _key("run_id"),
    _key("dataset"),
    _key("check_name"),
    sa.Column("severity", sa.String(16)),
    sa.Column("passed", sa.Boolean),
    sa.Column("n_failed", sa.Integer),
    sa.Column("n_rows", sa.Integer),
    sa.Column("examples", sa.Text),
    sa.Column("detail", sa.Text),
)


def resolve_url(params_url: str | None, outputs: Path) -> URL:
    """Environment first, then params, then SQLite in the outputs folder; password from env."""
    raw = os.environ.get(URL_ENV) or params_url or f"sqlite:///{Path(outputs) / 'warehouse.db'}"
    url = make_url(raw)
    password = os.environ.get(PASSWORD_ENV)
    if password and url.password is None and not url.drivername.startswith("sqlite"):
        url = url.set(password=password)
    return url


class Warehouse:
    """One engine plus the upserts and reads the stages need."""

    def __init__(self, url: URL | str) -> None:
        self.url = make_url(url)
        self.engine: Engine = _create_engine(self.url)
        metadata.create_all(self.engine)

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
        """Insert or update `frame` on the table's primary key in one transaction."""
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
                return self._upsert(own, target, frame)
        return self._upsert(conn, target, frame)

    def upsert_extending(self, table: str, frame: pd.DataFrame) -> int:
        """Upsert into a table whose non-key float columns follow the params (features)."""
        key = [c.name for c in self.table(table).primary_key.columns]
        self.ensure_float_columns(table, [c for c in frame.columns if c not in key])
        return self.upsert(self.reflect(table), frame)

    def ensure_float_columns(self, table: str, columns: Sequence[str]) -> None:
        existing = {c["name"] for c in sa.inspect(self.engine).get_columns(table)}
        preparer = self.engine.dialect.identifier_preparer
        with self.engine.begin() as conn:
            for name in columns:
                if name not in existing:
                    float_type = sa.Float().compile(dialect=self.engine.dialect)
                    conn.execute(
                        sa.text(
                            f"ALTER TABLE {preparer.quote(table)} ADD COLUMN {preparer.quote(name)} {float_type}"
                        )
                    )

    def begin(self):  # noqa: ANN201 - a SQLAlchemy transaction context
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

    def read(
        self,
        table: str,
        *,
        tickers: Iterable[str] | None = None,
        start: dt.date | None = None,
        end: dt.date | None = None,
        where: Mapping[str, Any] | None = None,
        date_column: str = "date",
    ) -> pd.DataFrame:
        """Rows filtered by ticker list, an inclusive date window and equality filters."""
        target = self.reflect(table)
        query = sa.select(target)
        if tickers is not None:
            query = query.where(target.c.ticker.in_(list(tickers)))
        if start is not None:
            query = query.where(target.c[date_column] >= start)
        if end is not None:
            query = query.where(target.c[date_column] <= end)
        for column, value in (where or {}).items():
            query = query.where(target.c[column] == value)
        order = [c for c in target.primary_key.columns]
        with self.engine.connect() as conn:
            result = conn.execute(query.order_by(*order))
            frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
        for column in target.columns:
            if isinstance(column.type, sa.Date) and column.name in frame:
                frame[column.name] = pd.to_datetime(frame[column.name])
        return frame

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self.reflect(table))).scalar_one())

    def distinct(self, table: str, column: str) -> list[Any]:
        target = self.reflect(table)
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(target.c[column]).distinct().order_by(target.c[column]))
            return [row[0] for row in rows]

    def health(self) -> Health:
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as exc:
            return Health("warehouse", False, f"{self.display_url}: {type(exc).__name__}")
        return Health("warehouse", True, self.display_url)

    # ------------------------------------------------------------------ internals

    def _upsert(self, conn: Connection, target: sa.Table, frame: pd.DataFrame) -> int:
        statement = _upsert_statement(conn.dialect.name, target, list(frame.columns))
        rows = _records(frame, target)
        for start in range(0, len(rows), _CHUNK_ROWS):
            conn.execute(statement, rows[start : start + _CHUNK_ROWS])
        return len(rows)


def _create_engine(url: URL) -> Engine:
    if url.drivername.startswith("sqlite"):
        database = url.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - DBAPI objects
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def _upsert_statement(dialect: str, table: sa.Table, columns: list[str]):  # noqa: ANN202
    key = {c.name for c in table.primary_key.columns}
    updates = [c for c in columns if c not in key]
    if dialect in {"sqlite", "postgresql"}:
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        statement = insert(table)
        if not updates:
            return statement.on_conflict_do_nothing(index_elements=sorted(key))
        return statement.on_conflict_do_update(
            index_elements=[c.name for c in table.primary_key.columns],
            set_={c: statement.excluded[c] for c in updates},
        )
    if dialect in {"mysql", "mariadb"}:
        from sqlalchemy.dialects.mysql import insert

        statement = insert(table)
        assignments = {c: statement.inserted[c] for c in (updates or sorted(key)[:1])}
        return statement.on_duplicate_key_update(assignments)
    raise NotImplementedError(f"no upsert for SQL dialect {dialect!r}")


def _records(frame: pd.DataFrame, table: sa.Table) -> list[dict[str, Any]]:
    """Rows as DBAPI-ready dicts: NaN/NaT -> None, numpy scalars -> Python, dates -> date."""
    columns: dict[str, list[Any]] = {}
    for name in frame.columns:
        series = frame[name]
        column_type = table.c[name].type
        if isinstance(column_type, sa.Date) and not isinstance(column_type, sa.DateTime):
            values = pd.to_datetime(series)
            columns[name] = [None if pd.isna(v) else v.date() for v in values]
        elif isinstance(column_type, sa.DateTime):
            values = pd.to_datetime(series, utc=True)
            columns[name] = [None if pd.isna(v) else v.to_pydatetime() for v in values]
        elif isinstance(column_type, (sa.Float, sa.Integer, sa.BigInteger)):
            array = series.to_numpy(dtype="float64", na_value=np.nan)
            if isinstance(column_type, sa.Integer):
                columns[name] = [None if math.isnan(v) else int(v) for v in array]
            else:
                columns[name] = [None if math.isnan(v) else float(v) for v in array]
        elif isinstance(column_type, sa.Boolean):
            columns[name] = [None if pd.isna(v) else bool(v) for v in series]
        else:
            columns[name] = [None if pd.isna(v) else str(v) for v in series]
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]
