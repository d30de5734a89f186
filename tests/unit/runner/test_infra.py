"""Infrastructure preflight: a store that cannot be written or reached stops a run in one line, in time.

Every refusal must be one line naming the setting that points at the broken service, end in
"nothing was written", come within the timeout (plus 2 s of slack), and leave the outputs
folder as it was. Unreachable and silent services are real sockets on 127.0.0.1: port 1
refuses, and a listening socket that never accepts completes the TCP handshake and then says
nothing (what a hung server does). Read-only folders need a user that file modes apply to:
the check runs as uid 65534 through setpriv; a read-only file system is a tmpfs remounted
read-only (each skips where it cannot run). The last part is about waits during a run: a stop
request (SIGUSR1 standing in for SIGTERM) must end a wait on a silent service at once.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from bentley.config import Config
from bentley.warehouse import Warehouse, driver_timeouts, resolve_url
from runner import infra
from runner.infra import InfraError, Interrupted, ServiceFailed, check_infrastructure

TIMEOUT_S = 2.0
SLACK_S = 2.0
NOBODY = 65534


@pytest.fixture(autouse=True)
def no_shared_services(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test chooses its services; nothing from the caller's environment leaks in."""
    for key in list(os.environ):
        if key.startswith(("BENTLEY_", "MLFLOW_TRACKING")):
            monkeypatch.delenv(key)


@pytest.fixture()
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel completes the handshake) and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def tree(folder: Path) -> list[str]:
    """Every path under `folder` with its size, to compare before and after a check."""
    return sorted(f"{p.relative_to(folder)}:{p.stat().st_size if p.is_file() else 'dir'}" for p in folder.rglob("*"))


def refusal(config: Config, outputs: Path) -> str:
    """The one-line InfraError, checked for the promises every refusal keeps."""
    started = time.monotonic()
    with pytest.raises(InfraError) as refused:
        check_infrastructure(config, outputs, timeout_s=TIMEOUT_S)
    elapsed = time.monotonic() - started
    message = str(refused.value)
    assert "\n" not in message
    assert message.endswith("nothing was written")
    assert elapsed < TIMEOUT_S + SLACK_S, f"{elapsed:.1f} s: {message}"
    return message


# --------------------------------------------------------------------------- the happy path


def test_a_new_store_passes_and_nothing_is_created(config: Config, tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    started = time.monotonic()
    check_infrastructure(config, outputs, timeout_s=TIMEOUT_S)
    assert time.monotonic() - started < TIMEOUT_S
    assert not outputs.exists()
    assert tree(tmp_path) == []


def test_an_existing_store_passes_and_is_left_as_it_was(config: Config, tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    Warehouse.from_settings(None, outputs).dispose()
    (outputs / "mlflow").mkdir()
    (outputs / "mlflow" / "mlflow.db").write_bytes(b"")  # an empty file is a valid SQLite database
    before = tree(tmp_path)
    check_infrastructure(config, outputs, timeout_s=TIMEOUT_S)
    assert tree(tmp_path) == before


# --------------------------------------------------------------------------- read-only outputs


def _run_as_nobody(root: Path, env: dict[str, str], outputs: Path) -> dict:
    """`check_infrastructure` as uid 65534 (root ignores file modes); its message and time as JSON."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the check as another user")
    script = (
        "import json, sys, time\n"
        "from pathlib import Path\n"
        "from bentley.config import load_config\n"
        "from runner.infra import InfraError, check_infrastructure\n"
        f"config = load_config(root=Path({str(root)!r}))\n"
        "started = time.monotonic()\n"
        "try:\n"
        f"    check_infrastructure(config, Path({str(outputs)!r}), timeout_s={TIMEOUT_S})\n"
        "    message = None\n"
        "except InfraError as exc:\n"
        "    message = str(exc)\n"
        "print(json.dumps({'message': message, 'elapsed': time.monotonic() - started}))\n"
    )
    done = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable, "-c", script],
        cwd=root,
        env={**env, "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/tmp"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture()
def shared_tmp() -> Iterator[Path]:
    """A folder uid 65534 can traverse (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="bentley-infra-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_read_only_outputs_folder_is_refused(root: Path, clean_env: dict[str, str], shared_tmp: Path) -> None:
    outputs = shared_tmp / "outputs"
    outputs.mkdir(mode=0o755)  # root's: read-only for uid 65534
    before = tree(shared_tmp)
    found = _run_as_nobody(root, clean_env, outputs)
    message = found["message"]
    assert message == (
        f"outputs folder {outputs} is not writable: Permission denied (--outputs or BENTLEY_OUTPUTS); "
        "nothing was written"
    )
    assert found["elapsed"] < TIMEOUT_S + SLACK_S
    assert tree(shared_tmp) == before


def test_an_outputs_folder_that_cannot_be_created_is_refused(
    root: Path, clean_env: dict[str, str], shared_tmp: Path
) -> None:
    outputs = shared_tmp / "store" / "outputs"
    found = _run_as_nobody(root, clean_env, outputs)
    assert found["message"] == (
        f"outputs folder {outputs} cannot be created: {shared_tmp} is not writable: "
        "Permission denied (--outputs or BENTLEY_OUTPUTS); nothing was written"
    )
    assert tree(shared_tmp) == []


def test_an_existing_warehouse_file_that_is_read_only_is_refused(
    root: Path, clean_env: dict[str, str], shared_tmp: Path
) -> None:
    outputs = shared_tmp / "outputs"
    Warehouse.from_settings(None, outputs).dispose()  # root's warehouse.db, mode 644
    outputs.chmod(0o777)  # the folder is writable for uid 65534, the file is not
    before = tree(shared_tmp)
    found = _run_as_nobody(root, clean_env, outputs)
    message = found["message"]
    assert message == (
        f"warehouse sqlite:///{outputs / 'warehouse.db'} is not writable: Permission denied (the "
        "default under --outputs or BENTLEY_OUTPUTS; BENTLEY_WAREHOUSE_URL points elsewhere); "
        "nothing was written"
    )
    assert found["elapsed"] < TIMEOUT_S + SLACK_S
    assert tree(shared_tmp) == before


def test_a_read_only_run_folder_is_refused(root: Path, clean_env: dict[str, str], shared_tmp: Path) -> None:
    outputs = shared_tmp / "outputs"
    outputs.mkdir()
    outputs.chmod(0o777)
    (outputs / "runs").mkdir(mode=0o755)  # left by a run as root
    message = _run_as_nobody(root, clean_env, outputs)["message"]
    assert message == (
        f"outputs folder {outputs}: {outputs / 'runs'} is not writable (--outputs or "
        "BENTLEY_OUTPUTS); nothing was written"
    )


@pytest.fixture()
def read_only_store(tmp_path: Path) -> Iterator[Path]:
    """An existing store on a tmpfs remounted read-only (needs root allowed to mount)."""
    mount_point = tmp_path / "ro"
    mount_point.mkdir()
    mounted = (
        os.geteuid() == 0
        and shutil.which("mount") is not None
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)], capture_output=True
        ).returncode
        == 0
    )
    if not mounted:
        pytest.skip("cannot mount a tmpfs here")
    try:
        outputs = mount_point / "outputs"
        Warehouse.from_settings(None, outputs).dispose()
        (outputs / "cache").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], check=True, capture_output=True)
        yield outputs
    finally:
        subprocess.run(["umount", str(mount_point)], check=False, capture_output=True)


def test_a_store_on_a_read_only_file_system_is_refused(config: Config, read_only_store: Path) -> None:
    """What the run met as `OSError: [Errno 30] Read-only file system: .../cache` and `unable to open database file`."""
    outputs = read_only_store
    before = tree(outputs)
    message = refusal(config, outputs)
    assert message == (
        f"outputs folder {outputs} is not writable: Read-only file system (--outputs or "
        "BENTLEY_OUTPUTS); nothing was written"
    )
    with pytest.raises(InfraError, match="^warehouse sqlite:///.* is not writable: Read-only file system \\(X\\)"):
        infra.check_warehouse(resolve_url(None, outputs), TIMEOUT_S, "X")
    assert tree(outputs) == before


# --------------------------------------------------------------------------- the warehouse


def test_a_refused_warehouse_is_named_without_its_password(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BENTLEY_WAREHOUSE_URL", "postgresql+psycopg://u@127.0.0.1:1/db")
    monkeypatch.setenv("BENTLEY_WAREHOUSE_PASSWORD", "s3cret-pw")
    message = refusal(config, tmp_path / "outputs")
    assert message.startswith("cannot connect to warehouse postgresql+psycopg://u:***@127.0.0.1:1/db: ")
    assert "Connection refused" in message
    assert "(BENTLEY_WAREHOUSE_URL)" in message
    assert "s3cret-pw" not in message
    assert tree(tmp_path) == []


@pytest.mark.parametrize("scheme", ["postgresql+psycopg", "mysql+pymysql"])
def test_a_silent_warehouse_fails_within_the_timeout(
    config: Config, tmp_path: Path, silent_port: int, monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    monkeypatch.setenv("BENTLEY_WAREHOUSE_URL", f"{scheme}://u:pw@127.0.0.1:{silent_port}/db")
    message = refusal(config, tmp_path / "outputs")
    assert message == (
        f"cannot connect to warehouse {scheme}://u:***@127.0.0.1:{silent_port}/db: no answer within "
        f"{TIMEOUT_S:g} s (BENTLEY_WAREHOUSE_URL); nothing was written"
    )
    assert tree(tmp_path) == []


def test_a_warehouse_from_params_names_params_and_the_variable(config: Config, tmp_path: Path) -> None:
    pointed = config.model_copy(
        update={"warehouse": config.warehouse.model_copy(update={"url": "postgresql+psycopg://u@127.0.0.1:1/db"})}
    )
    message = refusal(pointed, tmp_path / "outputs")
    assert "(params warehouse.url; BENTLEY_WAREHOUSE_URL overrides it)" in message


def test_a_server_warehouse_must_accept_writes(
    config: Config, tmp_path: Path, postgres_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real PostgreSQL: reachable and writable passes; a user who may only read is refused."""
    import psycopg

    from tests.servers import reset_database

    reset_database(postgres_server)
    monkeypatch.setenv("BENTLEY_WAREHOUSE_URL", postgres_server.url)
    monkeypatch.setenv("BENTLEY_WAREHOUSE_PASSWORD", postgres_server.password)
    check_infrastructure(config, tmp_path / "outputs", timeout_s=TIMEOUT_S)  # no tables yet: connecting is enough
    Warehouse.from_settings(None, tmp_path / "outputs").dispose()
    check_infrastructure(config, tmp_path / "outputs", timeout_s=TIMEOUT_S)  # the probe on `leases` passes
    admin = psycopg.connect(
        host=str(postgres_server.folder), port=postgres_server.port, user="postgres", dbname="bentley", autocommit=True
    )
    try:
        admin.execute("CREATE ROLE infra_reader LOGIN PASSWORD 'reader-pw'")
        admin.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO infra_reader")
        monkeypatch.setenv("BENTLEY_WAREHOUSE_URL", postgres_server.url.replace("bentley@", "infra_reader@"))
        monkeypatch.setenv("BENTLEY_WAREHOUSE_PASSWORD", "reader-pw")
        message = refusal(config, tmp_path / "outputs")
    finally:
        admin.execute("DROP OWNED BY infra_reader")
        admin.execute("DROP ROLE IF EXISTS infra_reader")
        admin.close()
    assert " refuses writes: " in message
    assert "permission denied for table leases" in message
    assert "reader-pw" not in message


# --------------------------------------------------------------------------- MLflow


def test_a_refused_tracking_server_is_named(config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    message = refusal(config, tmp_path / "outputs")
    assert message == (
        "cannot connect to MLflow store http://127.0.0.1:1: Connection refused (MLFLOW_TRACKING_URI); "
        "nothing was written"
    )
    assert tree(tmp_path) == []


def test_a_silent_tracking_server_fails_within_the_timeout(
    config: Config, tmp_path: Path, silent_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:pw@127.0.0.1:{silent_port}")
    message = refusal(config, tmp_path / "outputs")
    assert message == (
        f"cannot connect to MLflow store http://user:***@127.0.0.1:{silent_port}: no answer within "
        f"{TIMEOUT_S:g} s (MLFLOW_TRACKING_URI); nothing was written"
    )
    assert tree(tmp_path) == []


def test_mlflow_client_timeouts_are_bounded_unless_the_user_chose(clean_env: dict[str, str], root: Path) -> None:
    """MLflow's defaults (120 s, 7 retries) made a refused server cost 254 s; ours are set on import."""
    show = (
        "import os, bentley.tracking; print(os.environ['MLFLOW_HTTP_REQUEST_TIMEOUT'], "
        "os.environ['MLFLOW_HTTP_REQUEST_MAX_RETRIES'])"
    )
    ours = subprocess.run(
        [sys.executable, "-c", show], env=clean_env, cwd=root, capture_output=True, text=True, check=True
    )
    assert ours.stdout.split() == ["10", "2"]
    theirs = subprocess.run(
        [sys.executable, "-c", show],
        env={**clean_env, "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"},
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    assert theirs.stdout.split() == ["60", "2"]


# --------------------------------------------------------------------------- bounds


def test_a_check_that_hangs_is_abandoned_at_the_timeout(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the drivers' timeouts do not cover (DNS, a hung network file system) is bounded too."""
    monkeypatch.setattr(infra, "check_outputs", lambda _outputs: time.sleep(30))
    message = refusal(config, tmp_path / "outputs")
    assert message == (
        f"outputs folder {tmp_path / 'outputs'} did not answer within {TIMEOUT_S:g} s "
        "(--outputs or BENTLEY_OUTPUTS); nothing was written"
    )


def test_driver_timeouts_per_dialect() -> None:
    assert driver_timeouts(make_url("sqlite:///w.db"), 10, 30) == {"timeout": 30}
    assert driver_timeouts(make_url("postgresql+psycopg://u@h/db"), 0.5, 9) == {"connect_timeout": 2}
    assert driver_timeouts(make_url("mysql+pymysql://u@h/db"), 2.5, 600) == {
        "connect_timeout": 3,
        "read_timeout": 600,
        "write_timeout": 600,
    }
    assert driver_timeouts(make_url("postgresql+psycopg://u@h/db?connect_timeout=30"), 10, 10) == {}


# --------------------------------------------------------------------------- waits during a run


@pytest.fixture()
def stop_signal() -> Iterator[Callable[[float], None]]:
    """SIGUSR1 standing in for SIGTERM: its handler does what the runner's does; `send(after_s)`."""
    previous = signal.signal(signal.SIGUSR1, lambda _signum, _frame: infra.abandon_wait())
    timers: list[threading.Timer] = []

    def send(after_s: float) -> None:
        timers.append(threading.Timer(after_s, os.kill, (os.getpid(), signal.SIGUSR1)))
        timers[-1].start()

    try:
        yield send
    finally:
        for timer in timers:
            timer.cancel()
        signal.signal(signal.SIGUSR1, previous)


def test_a_stop_request_abandons_a_wait_on_a_silent_service(
    silent_port: int, stop_signal: Callable[[float], None]
) -> None:
    def ask() -> bytes:
        with socket.create_connection(("127.0.0.1", silent_port)) as conn:
            return conn.recv(1)  # never answered: only the signal ends the wait

    stop_signal(0.3)
    started = time.monotonic()
    with pytest.raises(Interrupted, match="stopped while waiting for the silent service"):
        infra.wait_for("the silent service", ask)
    assert time.monotonic() - started < 2


def test_a_stop_request_outside_a_wait_changes_nothing(stop_signal: Callable[[float], None]) -> None:
    stop_signal(0.0)
    time.sleep(0.3)  # the handler ran here, outside any wait
    assert infra.wait_for("a service", lambda: 42) == 42


def test_a_local_call_is_never_cut_off(stop_signal: Callable[[float], None]) -> None:
    """A local store's call writes files (its first one migrates the database): it runs to its end."""

    def write_slowly() -> str:
        time.sleep(0.6)  # the stop request arrives here
        return "written"

    stop_signal(0.2)
    assert infra.wait_for("MLflow at sqlite:///mlflow.db", write_slowly, remote=False) == "written"


def test_a_failed_service_call_is_one_line() -> None:
    def refused() -> None:
        with socket.create_connection(("127.0.0.1", 1)):
            pass

    with pytest.raises(ServiceFailed) as failed:
        infra.wait_for("MLflow at http://127.0.0.1:1", refused)
    assert str(failed.value) == "MLflow at http://127.0.0.1:1: Connection refused"


def test_failure_lines_for_storage_errors_and_none_for_bugs(tmp_path: Path) -> None:
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "manifest.json"))
    assert infra.failure_line(full) == f"{tmp_path / 'manifest.json'}: No space left on device"
    assert infra.failure_line(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) == (
        "storage failed: No space left on device"
    )
    assert infra.failure_line(KeyError("status")) is None
    assert infra.failure_line(FileNotFoundError(errno.ENOENT, "No such file or directory", "x")) is None
