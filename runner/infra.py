"""Infrastructure preflight: the outputs folder, the warehouse and MLflow answer before a run starts.

A run whose outputs folder was read-only or full, whose warehouse was unreachable or whose
MLflow server was down used to fail part-way, with a multi-screen traceback and exit 1 (after
MLflow's client had retried for minutes). `check_infrastructure` asks each service once, each
within a short timeout, and raises `InfraError` with one line naming what cannot be reached or
written, the setting that points at it and "nothing was written"; the CLI prints it and exits 2.

The checks leave nothing behind: a folder that does not exist yet is not created (its nearest
existing parent is tested instead), a write test is a temporary file removed at once, a
database probe is a transaction rolled back, and a SQLite store that does not exist yet is not
opened (opening would create it).

During a run, the main thread still waits on MLflow (the parent run, each stage's run). Its
client's timeouts bound each call (`bentley.tracking`); `wait_for` turns a failed call into a
one-line `ServiceFailed` and makes a wait on a tracking server one that SIGTERM gives up at
once (the signal handler calls `abandon_wait`, which raises `Interrupted`). `failure_line` is
the one line the CLI prints for storage or services failing mid-run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from bentley.config import Config

T = TypeVar("T")

OUTPUTS_SETTING = "--outputs or BENTLEY_OUTPUTS"
WAREHOUSE_ENV = "BENTLEY_WAREHOUSE_URL"
TRACKING_ENV = "MLFLOW_TRACKING_URI"
#: Folders a run writes into: one a previous run left unwritable (another user's) fails the run late.
_RUN_FOLDERS = ("cache", "runs", "logs", "lake", "mlflow")
#: A write test writes this much: a full disk refuses data, not always the empty file itself.
_PROBE_BYTES = b"\0" * 4096
#: A check's own timeouts fire first and say more; the thread guard is the backstop.
_GUARD_GRACE_S = 0.5
#: OS errors that say the storage failed (full, read-only, no permission, I/O), not the code.
_INFRA_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO})


class InfraError(Exception):
    """A service the run needs cannot be reached or written; one line, and nothing was written."""


class Interrupted(BaseException):
    """A stop request abandoned a wait on a service (`abandon_wait`).

    A BaseException, so that no library's `except Exception` turns it into its own error on
    the way out (MLflow wraps whatever a request raises).
    """


def configured_timeout(config: Config) -> float:
    """`runner.preflight_timeout_s`: seconds per check."""
    return float(config.runner.preflight_timeout_s)


def check_infrastructure(config: Config, outputs: Path, *, timeout_s: float) -> None:
    """Outputs folder, warehouse, MLflow store in that order; raise InfraError on the first that fails.

    Each check is bounded by `timeout_s` (its drivers' timeouts, and a thread guard against
    what they do not cover: DNS, a hung network file system), so a run with no working
    infrastructure ends within three timeouts.
    """
    from bentley.tracking import display_uri, tracking_uri
    from bentley.warehouse import resolve_url

    outputs = Path(outputs)
    _bounded(lambda: check_outputs(outputs), timeout_s, f"outputs folder {outputs}", OUTPUTS_SETTING)
    url = resolve_url(config.warehouse.url, outputs)
    setting = _origin(WAREHOUSE_ENV, config.warehouse.url, "warehouse.url")
    _import_driver(url)
    _bounded(lambda: check_warehouse(url, timeout_s, setting), timeout_s, _warehouse_name(url), setting)
    uri = tracking_uri(config.tracking.uri, outputs)
    setting = _origin(TRACKING_ENV, config.tracking.uri, "tracking.uri")
    _bounded(lambda: check_tracking(uri, timeout_s, setting), timeout_s, f"MLflow store {display_uri(uri)}", setting)


# --------------------------------------------------------------------------- the outputs folder


def check_outputs(outputs: Path) -> None:
    """The outputs folder is a writable folder, or can be created; the folders a run writes are writable."""
    name = f"outputs folder {outputs}"
    if outputs.exists() and not outputs.is_dir():
        raise _refusal(f"{name} is not a folder", OUTPUTS_SETTING)
    _check_creatable(outputs, name, OUTPUTS_SETTING)
    for folder in (outputs / sub for sub in _RUN_FOLDERS):
        if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            raise _refusal(f"{name}: {folder} is not writable", OUTPUTS_SETTING)


def _check_creatable(path: Path, name: str, setting: str) -> None:
    """`path` (a folder) is writable, or its nearest existing parent is, so the run can create it."""
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise _refusal(f"{name} cannot be created: {existing} is not a folder", setting)
    problem = _write_problem(existing)
    if problem is None:
        return
    if existing == path:
        raise _refusal(f"{name} is not writable: {problem}", setting)
    raise _refusal(f"{name} cannot be created: {existing} is not writable: {problem}", setting)


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _write_problem(folder: Path) -> str | None:
    """Why a file cannot be written in `folder` (read-only, permission, full disk), or None."""
    try:
        handle, name = tempfile.mkstemp(prefix=".bentley-preflight-", dir=folder)
        try:
            os.write(handle, _PROBE_BYTES)
        finally:
            try:
                os.close(handle)
            finally:
                os.unlink(name)
    except OSError as exc:
        return describe(exc)
    return None


# --------------------------------------------------------------------------- the warehouse


def _import_driver(url: URL) -> None:
    """Import the URL's database driver before the clock starts: on a loaded machine importing
    psycopg can take a second, which is not the server's silence. A missing or unknown driver is
    left for `check_warehouse` to name."""
    with contextlib.suppress(Exception):
        url.get_dialect().import_dbapi()


def check_warehouse(url: URL, timeout_s: float, setting: str) -> None:
    """The warehouse answers and accepts writes, through a transaction that is rolled back.

    SQLite: an existing file is opened without creating it and a write lock is asked for (a
    lock held by another writer proves the file writable); a file not created yet needs a
    writable folder. A server: connect with the drivers' timeouts and, when the warehouse has
    its tables, delete no rows from `leases`, which a read-only server or a user without
    write privileges refuses.
    """
    name = _warehouse_name(url)
    if url.get_backend_name() == "sqlite":
        if url.database in (None, "", ":memory:"):
            return
        database = Path(url.database)
        if database.exists():
            _probe_sqlite(database, timeout_s, name, setting)
        else:
            _check_creatable(database.parent, name, setting)
        return
    import sqlalchemy as sa

    from bentley.warehouse import driver_timeouts
    from bentley.warehouse.tables import leases

    try:
        engine = sa.create_engine(
            url, poolclass=sa.pool.NullPool, connect_args=driver_timeouts(url, timeout_s, timeout_s)
        )
    except Exception as exc:  # noqa: BLE001 - a driver that is not installed, a malformed URL
        raise _refusal(f"{name} cannot be used: {describe(exc, timeout_s)}", setting, password=url.password) from None
    try:
        try:
            conn = engine.connect()
        except Exception as exc:  # noqa: BLE001 - refused, silent, bad credentials: all one line
            raise _refusal(
                f"cannot connect to {name}: {describe(exc, timeout_s)}", setting, password=url.password
            ) from None
        with conn:  # closing the connection rolls the probe back
            try:
                if sa.inspect(conn).has_table(leases.name):
                    conn.execute(sa.delete(leases).where(sa.false()))
            except Exception as exc:  # noqa: BLE001 - a read-only server, no privileges, a server gone silent
                raise _refusal(
                    f"{name} refuses writes: {describe(exc, timeout_s)}", setting, password=url.password
                ) from None
    finally:
        engine.dispose()


def _probe_sqlite(database: Path, timeout_s: float, name: str, setting: str) -> None:
    """An existing SQLite file is writable, and so is its folder (journal, WAL); it takes a write.

    File modes are checked before opening: SQLite opens a write-protected file read-only
    without a word, and a read-only connection in WAL mode leaves -wal/-shm files behind.
    The write (the header's user_version, rewritten unchanged) is rolled back; it is what
    finds a read-only mount or a file that is not a database. Never opened with create.
    """
    if not os.access(database, os.W_OK):
        read_only = os.statvfs(database).f_flag & os.ST_RDONLY
        raise _refusal(f"{name} is not writable: {os.strerror(errno.EROFS if read_only else errno.EACCES)}", setting)
    _check_creatable(database.parent, name, setting)
    try:
        conn = sqlite3.connect(
            f"{database.resolve().as_uri()}?mode=rw", uri=True, timeout=timeout_s, isolation_level=None
        )
        try:
            conn.execute("BEGIN IMMEDIATE")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            conn.execute(f"PRAGMA user_version = {int(version)}")
            conn.execute("ROLLBACK")
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return  # another writer holds the lock: the file is writable, the run waits its turn
        raise _refusal(f"{name} is not writable: {exc}", setting) from None
    except sqlite3.Error as exc:
        raise _refusal(f"{name} cannot be opened: {exc}", setting) from None


def _warehouse_name(url: URL) -> str:
    """The URL as `Warehouse.display_url` prints it (password masked): no Warehouse is built here,
    since building one creates its tables."""
    return f"warehouse {url.render_as_string(hide_password=True)}"


# --------------------------------------------------------------------------- MLflow


def check_tracking(uri: str, timeout_s: float, setting: str) -> None:
    """The MLflow store answers: a server its `/health` (or its API), a local store a writable folder.

    A local SQLite store that exists must take a write lock. Other stores (a database URI,
    Databricks) are left to the run.
    """
    from bentley.tracking import _local_store, display_uri

    name = f"MLflow store {display_uri(uri)}"
    if uri.startswith(("http://", "https://")):
        _probe_server(uri, timeout_s, name, setting)
        return
    local = _local_store(uri)
    if local is None:
        return
    if not uri.startswith("sqlite:"):
        _check_creatable(local, name, setting)  # a file store's folder
    elif local.exists():
        _probe_sqlite(local, timeout_s, name, setting)
    else:
        _check_creatable(local.parent, name, setting)


def _probe_server(uri: str, timeout_s: float, name: str, setting: str) -> None:
    """GET `/health`; a server without it (behind a proxy) answers a one-experiment search instead.

    `/health` is asked without credentials; the search sends MLflow's own (MLFLOW_TRACKING_TOKEN,
    or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD) or the URI's.
    """
    import requests

    parts = urlsplit(uri)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    base = urlunsplit(parts._replace(netloc=netloc, query="", fragment="")).rstrip("/")
    try:
        health = requests.get(f"{base}/health", timeout=(timeout_s, timeout_s), allow_redirects=False)
        if health.status_code == 200:
            return
        search = requests.get(
            f"{base}/api/2.0/mlflow/experiments/search",
            params={"max_results": 1},
            headers=_tracking_headers(),
            auth=_tracking_auth(parts.username, parts.password),
            timeout=(timeout_s, timeout_s),
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        raise _refusal(
            f"cannot connect to {name}: {describe(exc, timeout_s)}", setting, password=parts.password
        ) from None
    if search.status_code == 200:
        return
    if search.status_code in (401, 403):
        raise _refusal(
            f"{name} refused the credentials (HTTP {search.status_code}; MLFLOW_TRACKING_TOKEN or "
            "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD)",
            setting,
        )
    raise _refusal(
        f"{name} answered HTTP {health.status_code} to /health and {search.status_code} to the experiments API", setting
    )


def _tracking_headers() -> dict[str, str]:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def _tracking_auth(username: str | None, password: str | None) -> tuple[str, str] | None:
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or username
    secret = os.environ.get("MLFLOW_TRACKING_PASSWORD") or password
    return (user, secret) if user and secret else None


# --------------------------------------------------------------------------- waits during a run


class ServiceFailed(Exception):
    """A call to a service during a run failed (`wait_for`); the message is one line naming the service."""


_waits: list[str] = []  # the main thread's waits on services, innermost last


@contextlib.contextmanager
def interruptible(what: str) -> Iterator[None]:
    """Mark a wait of the main thread on `what` (a service) as one a stop request abandons.

    In any other thread it marks nothing: signal handlers run in the main thread. Only
    code that can be left at any instruction belongs inside (`wait_for` waits on an event).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _waits.append(what)
    try:
        yield
    finally:
        _waits.pop()


def abandon_wait() -> None:
    """From a signal handler: raise `Interrupted` when the main thread waits inside `interruptible`.

    The signal wakes the waiting main thread and the exception leaves the wait, so a stop
    takes effect now rather than after the service's timeouts and retries.
    """
    if _waits:
        raise Interrupted(f"stopped while waiting for {_waits[-1]}")


def wait_for(what: str, call: Callable[[], T], *, remote: bool = True) -> T:
    """`call()`, with any error turned into `ServiceFailed` (one line naming `what`).

    A `remote` call (one that only waits on a server) made by the main thread runs in a daemon
    thread while the main thread waits for it, so a stop request leaves only this wait
    (`Interrupted`), never `call` half-way: the abandoned call runs on until its own timeouts
    end it, and its outcome is dropped. A call that writes local state (a local MLflow store,
    whose first call migrates the database) runs in place: cutting it off could leave that
    state half-written, and it waits on no network.
    """
    if remote and threading.current_thread() is threading.main_thread():
        with interruptible(what):
            finished = _in_thread(call, "service-call")
        assert finished is not None  # waited without a timeout: it ended
    else:
        finished = _in_place(call)
    ok, value = finished
    if ok:
        return value  # type: ignore[return-value]
    if isinstance(value, Exception):
        raise ServiceFailed(f"{what}: {describe(value)}") from value
    raise value  # type: ignore[misc]


def failure_line(exc: BaseException) -> str | None:
    """One line for an infrastructure failure during a run (a full disk, a warehouse gone); None for anything else.

    The CLI prints it instead of a traceback; a failure this does not recognise is a bug and
    keeps its traceback.
    """
    import sqlalchemy as sa

    if isinstance(exc, ServiceFailed | Interrupted):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in _INFRA_ERRNOS:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else f"storage failed: {exc.strerror}"
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return f"the warehouse failed: {describe(exc)}"
    return None


# --------------------------------------------------------------------------- one-line messages


def describe(exc: BaseException, timeout_s: float | None = None) -> str:
    """One short line for an infrastructure error: a timeout, the OS's reason, or the driver's first line.

    The chain is searched (`__cause__`, `__context__`, urllib3's `reason`, SQLAlchemy's `orig`),
    because libraries wrap the one fact that matters ("Connection refused") in screens of text.
    """
    chain = _chain(exc)
    if any(_is_timeout(e) for e in chain):
        return f"no answer within {timeout_s:g} s" if timeout_s is not None else "timed out"
    reasons = [e.strerror for e in chain if isinstance(e, OSError) and e.strerror]
    if reasons:
        return reasons[-1]
    innermost = next((e for e in reversed(chain) if str(e).strip()), exc)
    text = str(innermost).strip().splitlines()[0] if str(innermost).strip() else ""
    return f"{type(innermost).__name__}: {text}" if text else type(innermost).__name__


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and every error it wraps, outermost first (each once)."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if any(current is e for e in seen):
            continue
        seen.append(current)
        wrapped = [
            current.__cause__,
            current.__context__,
            getattr(current, "reason", None),
            getattr(current, "orig", None),
            *current.args,
        ]
        todo.extend(e for e in wrapped if isinstance(e, BaseException))
    return seen


def _is_timeout(exc: BaseException) -> bool:
    """Builtin, requests, urllib3 and psycopg timeouts (the last three are not TimeoutError)."""
    return isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__


def _origin(env: str, params_value: str | None, params_key: str) -> str:
    """Which setting chose a service's address, for the message that says it does not answer."""
    if os.environ.get(env):
        return env
    if params_value:
        return f"params {params_key}; {env} overrides it"
    return f"the default under {OUTPUTS_SETTING}; {env} points elsewhere"


def _refusal(problem: str, setting: str, *, password: str | None = None) -> InfraError:
    """The one-line error, with any password a driver repeated masked."""
    line = f"{problem} ({setting}); nothing was written"
    if password:
        line = line.replace(password, "***")
    return InfraError(" ".join(line.split()))


def _bounded(check: Callable[[], None], timeout_s: float, name: str, setting: str) -> None:
    """Run `check` for at most `timeout_s` (plus a little grace); a check that overruns is left running
    in the background (it holds no lock and leaves nothing behind)."""
    finished = _in_thread(check, "infra-preflight", timeout_s + _GUARD_GRACE_S)
    if finished is None:
        raise _refusal(f"{name} did not answer within {timeout_s:g} s", setting)
    ok, error = finished
    if not ok:
        raise error  # type: ignore[misc]


Outcome = tuple[bool, object]  # (True, the result) or (False, the error)


def _in_thread(call: Callable[[], object], name: str, timeout_s: float | None = None) -> Outcome | None:
    """`call()` in a daemon thread, waited for up to `timeout_s` (None: until it ends); None when the
    wait ran out. A daemon thread left running does not keep the process alive."""
    outcome: list[Outcome] = []
    done = threading.Event()

    def target() -> None:
        outcome.append(_in_place(call))
        done.set()

    threading.Thread(target=target, name=name, daemon=True).start()
    done.wait(timeout_s)
    return outcome[0] if outcome else None


def _in_place(call: Callable[[], object]) -> Outcome:
    try:
        return True, call()
    except BaseException as exc:  # noqa: BLE001 - the caller decides what to raise
        return False, exc
