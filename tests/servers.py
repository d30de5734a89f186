"""Private MariaDB and PostgreSQL servers on loopback, for tests and benchmarks.

`start_mariadb()` / `start_postgres()` create a throwaway server in a temporary folder on a
free 127.0.0.1 port, wait until it accepts logins, and create a database plus a user with a
random password. The URL they hand out carries no password: code under test gets it from
BENTLEY_WAREHOUSE_PASSWORD, the way a deployment would. `Server.stop()` sends SIGTERM, waits,
and removes the folder. Nothing here needs pytest; the fixtures at the bottom are registered
when this module is loaded as a pytest plugin (`pytest_plugins = ["tests.servers"]`).

A missing server binary raises `ServerUnavailable` naming the binary and its Debian package;
the fixtures turn that into a skip, or a failure when CI=true.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

DATABASE = "bentley"
USER = "bentley"
URL_ENV = "BENTLEY_WAREHOUSE_URL"
PASSWORD_ENV = "BENTLEY_WAREHOUSE_PASSWORD"
DIALECTS = ("sqlite", "mariadb", "postgresql")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


class ServerUnavailable(RuntimeError):
    """A server binary is not installed."""

    def __init__(self, binary: str, package: str) -> None:
        super().__init__(f"{binary} not found: install the Debian package '{package}' (apt-get install -y {package})")
        self.binary, self.package = binary, package


class ServerFailed(RuntimeError):
    """The server was installed but did not come up; the message holds its log tail."""


@dataclass
class Server:
    """A running private server. `url` has no password; `password` is the user's."""

    dialect: str
    url: str
    password: str
    port: int
    folder: Path
    process: subprocess.Popen | None = field(repr=False, default=None)

    def env(self) -> dict[str, str]:
        """What a subprocess needs to use this server as its warehouse."""
        return {URL_ENV: self.url, PASSWORD_ENV: self.password}

    def url_with_password(self) -> str:
        """For in-process helpers only (never printed: use `url`)."""
        from sqlalchemy.engine import make_url

        return make_url(self.url).set(password=self.password).render_as_string(hide_password=False)

    def stop(self) -> None:
        """SIGTERM the process we started, wait for it, then remove the folder."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            # PostgreSQL's SIGTERM is a "smart" shutdown that waits for clients; escalate to
            # its fast shutdown (SIGINT), then SIGKILL, so a leaked connection cannot hang us.
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(sig)
                try:
                    process.wait(timeout=STOP_TIMEOUT_S / 2)
                    break
                except subprocess.TimeoutExpired:
                    continue
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- binaries


def _which(name: str, *extra_dirs: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in extra_dirs:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def mariadb_binaries() -> tuple[str, str]:
    """(mariadb-install-db, mariadbd), or ServerUnavailable."""
    install = _which("mariadb-install-db", "/usr/bin", "/usr/local/bin") or _which("mysql_install_db", "/usr/bin")
    if install is None:
        raise ServerUnavailable("mariadb-install-db", "mariadb-server")
    server = _which("mariadbd", "/usr/sbin", "/usr/local/sbin", "/usr/libexec")
    if server is None:
        raise ServerUnavailable("mariadbd", "mariadb-server")
    return install, server


def postgres_binaries() -> tuple[str, str]:
    """(initdb, postgres) of the newest installed PostgreSQL, or ServerUnavailable."""
    folders = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
    )
    for folder in reversed(folders):
        initdb, postgres = Path(folder) / "initdb", Path(folder) / "postgres"
        if initdb.is_file() and postgres.is_file():
            return str(initdb), str(postgres)
    initdb, postgres = shutil.which("initdb"), shutil.which("postgres")
    if initdb and postgres:
        return initdb, postgres
    raise ServerUnavailable("initdb" if not initdb else "postgres", "postgresql")


def missing(dialect: str) -> ServerUnavailable | None:
    """Why `dialect`'s server cannot be started here, or None."""
    try:
        {"mariadb": mariadb_binaries, "postgresql": postgres_binaries}[dialect]()
    except ServerUnavailable as exc:
        return exc
    return None


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """Child pre-exec hook: get SIGTERM when the process that started us dies (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_until(ready: Callable[[], bool], process: subprocess.Popen, log: Path, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerFailed(f"{what} exited with code {process.returncode} while starting:\n{_tail(log)}")
        try:
            if ready():
                return
        except Exception as exc:  # noqa: BLE001 - any connection error means "not yet"
            last = exc
        time.sleep(0.1)
    raise ServerFailed(f"{what} not ready after {timeout:.0f} s ({last!r}):\n{_tail(log)}")


def _run(args: list[str], log: Path, what: str, **kwargs) -> None:
    with log.open("ab") as out:
        result = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, timeout=300, check=False, **kwargs)
    if result.returncode != 0:
        raise ServerFailed(f"{what} failed with code {result.returncode}:\n{_tail(log)}")


def _folder(prefix: str) -> Path:
    # Short paths: unix socket names are limited to ~107 bytes.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if os.path.isdir("/tmp") else None))


# --------------------------------------------------------------------------- MariaDB


def start_mariadb(password: str | None = None, timeout: float = START_TIMEOUT_S) -> Server:
    """A private MariaDB on 127.0.0.1 with database and user `bentley`."""
    import pymysql

    install, mariadbd = mariadb_binaries()
    password = password or secrets.token_urlsafe(16)
    folder = _folder("bentley-mariadb-")
    data, sock, log = folder / "data", folder / "sock", folder / "server.log"
    is_root = os.geteuid() == 0
    user_args = ["--user=root"] if is_root else []
    server = Server("mariadb", "", password, 0, folder)
    try:
        _run(
            [
                install,
                "--no-defaults",
                f"--datadir={data}",
                *user_args,
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            log,
            "mariadb-install-db",
        )
        for attempt in range(3):
            port = free_port()
            with log.open("ab") as out:
                process = subprocess.Popen(
                    [
                        mariadbd,
                        "--no-defaults",
                        f"--datadir={data}",
                        f"--socket={sock}",
                        f"--pid-file={folder / 'pid'}",
                        f"--port={port}",
                        "--bind-address=127.0.0.1",
                        *user_args,
                        "--skip-name-resolve",
                        "--skip-log-bin",
                        "--innodb-flush-log-at-trx-commit=0",
                        "--innodb-doublewrite=0",
                        "--innodb-buffer-pool-size=256M",
                        "--max-allowed-packet=64M",
                        "--character-set-server=utf8mb4",
                        "--collation-server=utf8mb4_unicode_ci",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    preexec_fn=_die_with_parent,
                )
            server.process, server.port = process, port

            def ready() -> bool:
                pymysql.connect(unix_socket=str(sock), user="root", connect_timeout=2).close()
                return True

            try:
                _wait_until(ready, process, log, "mariadbd", timeout)
                break
            except ServerFailed:
                if process.poll() is None or attempt == 2 or "Address already in use" not in _tail(log):
                    raise
        admin = pymysql.connect(unix_socket=str(sock), user="root", autocommit=True)
        try:
            with admin.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE `{DATABASE}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
                cursor.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (USER, password))
                cursor.execute(f"GRANT ALL PRIVILEGES ON `{DATABASE}`.* TO %s@'%%'", (USER,))
        finally:
            admin.close()
        server.url = f"mysql+pymysql://{USER}@127.0.0.1:{server.port}/{DATABASE}?charset=utf8mb4"
        return server
    except BaseException:
        server.stop()
        raise


# --------------------------------------------------------------------------- PostgreSQL


def start_postgres(password: str | None = None, timeout: float = START_TIMEOUT_S) -> Server:
    """A private PostgreSQL on 127.0.0.1 with database and user `bentley` (run as `postgres` when root)."""
    import psycopg
    from psycopg import sql

    initdb, postgres = postgres_binaries()
    password = password or secrets.token_urlsafe(16)
    folder = _folder("bentley-pg-")
    data, log = folder / "data", folder / "server.log"
    run_as: dict = {}
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder, ignore_errors=True)
            raise ServerUnavailable("postgres (system user)", "postgresql") from None
        os.chown(folder, account.pw_uid, account.pw_gid)
        log.touch()
        os.chown(log, account.pw_uid, account.pw_gid)
        run_as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    server = Server("postgresql", "", password, 0, folder)
    try:
        _run(
            [
                initdb,
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            log,
            "initdb",
            cwd=folder,
            **run_as,
        )
        for attempt in range(3):
            port = free_port()
            with log.open("ab") as out:
                process = subprocess.Popen(
                    [
                        postgres,
                        "-D",
                        str(data),
                        "-p",
                        str(port),
                        "-k",
                        str(folder),
                        "-c",
                        "listen_addresses=127.0.0.1",
                        "-c",
                        "fsync=off",
                        "-c",
                        "synchronous_commit=off",
                        "-c",
                        "full_page_writes=off",
                        "-c",
                        "max_wal_size=2GB",
                        "-c",
                        "logging_collector=off",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=folder,
                    preexec_fn=_die_with_parent,
                    **run_as,
                )
            server.process, server.port = process, port

            def ready(port: int = port) -> bool:
                psycopg.connect(
                    host=str(folder), port=port, user="postgres", dbname="postgres", connect_timeout=2
                ).close()
                return True

            try:
                _wait_until(ready, process, log, "postgres", timeout)
                break
            except ServerFailed:
                if process.poll() is None or attempt == 2 or "already in use" not in _tail(log):
                    raise
        with psycopg.connect(
            host=str(folder), port=server.port, user="postgres", dbname="postgres", autocommit=True
        ) as admin:
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(USER), sql.Literal(password))
            )
            admin.execute(
                sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8'").format(
                    sql.Identifier(DATABASE), sql.Identifier(USER)
                )
            )
        server.url = f"postgresql+psycopg://{USER}@127.0.0.1:{server.port}/{DATABASE}"
        return server
    except BaseException:
        server.stop()
        raise


STARTERS: dict[str, Callable[..., Server]] = {"mariadb": start_mariadb, "postgresql": start_postgres}


def start(dialect: str, password: str | None = None) -> Server:
    return STARTERS[dialect](password)


def reset_database(server: Server) -> None:
    """Drop every table in the server's database (a clean slate between tests)."""
    import sqlalchemy as sa

    engine = sa.create_engine(server.url_with_password())
    try:
        existing = sa.MetaData()
        existing.reflect(engine)
        existing.drop_all(engine)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- pytest fixtures

try:
    import pytest
except ImportError:  # the helpers above work without pytest (bench/upsert.py)
    pytest = None  # type: ignore[assignment]


@dataclass(frozen=True)
class WarehouseTarget:
    """One warehouse to test against: its URL (no password) and the password, if any."""

    dialect: str
    url: str
    password: str | None = None

    def env(self) -> dict[str, str]:
        return {URL_ENV: self.url, **({PASSWORD_ENV: self.password} if self.password else {})}


def _unavailable(reason: ServerUnavailable) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs a database server: {reason}", pytrace=False)
    pytest.skip(str(reason))


def _server_fixture(dialect: str):
    def fixture() -> Iterator[Server]:
        try:
            server = start(dialect)
        except ServerUnavailable as reason:
            _unavailable(reason)
        try:
            yield server
        finally:
            server.stop()

    fixture.__name__ = f"{dialect}_server"
    fixture.__doc__ = f"A private {dialect} server for the whole test session (started on first use)."
    return fixture


if pytest is not None:
    mariadb_server = pytest.fixture(scope="session", name="mariadb_server")(_server_fixture("mariadb"))
    postgres_server = pytest.fixture(scope="session", name="postgres_server")(_server_fixture("postgresql"))

    @pytest.fixture(scope="session")
    def mariadb_url(mariadb_server: Server) -> str:
        """`mysql+pymysql://bentley@127.0.0.1:PORT/bentley` (password: `mariadb_server.password`)."""
        return mariadb_server.url

    @pytest.fixture(scope="session")
    def postgres_url(postgres_server: Server) -> str:
        """`postgresql+psycopg://bentley@127.0.0.1:PORT/bentley` (password: `postgres_server.password`)."""
        return postgres_server.url

    @pytest.fixture(params=list(DIALECTS))
    def warehouse_target(request: pytest.FixtureRequest, tmp_path: Path) -> WarehouseTarget:
        """Each warehouse dialect in turn, with empty tables: SQLite in tmp_path, else a private server.

        Servers are started only when a test asks for them; their databases are wiped first.
        """
        if request.param == "sqlite":
            return WarehouseTarget("sqlite", f"sqlite:///{tmp_path / 'warehouse.db'}")
        server: Server = request.getfixturevalue("mariadb_server" if request.param == "mariadb" else "postgres_server")
        reset_database(server)
        return WarehouseTarget(request.param, server.url, server.password)
