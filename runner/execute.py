"""Execute one stage notebook through papermill's Python API.

The runner process stays warm; each stage gets a fresh kernel. A watchdog enforces the
stage's wall-clock limit by killing the kernel's whole process group (papermill's own
timeout is per cell). Whatever happens, the executed notebook is saved first, with
papermill's error banner when a cell failed, and only then is the failure reported.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.dag import Stage


@dataclass
class Attempt:
    """The outcome of one execution of a stage notebook."""

    status: str  # success | failed
    started_at: dt.datetime
    ended_at: dt.datetime
    duration_s: float
    cell_time_s: float
    error: str | None = None
    transient: bool = False  # the kernel died or timed out: worth another attempt

    @property
    def overhead_s(self) -> float:
        """Wall time not spent inside cells: kernel start/stop, injection, saving."""
        return max(self.duration_s - self.cell_time_s, 0.0)


def resolve_kernel(preferred: str) -> str:
    """The params kernel when registered (`make setup` does it), else this interpreter's."""
    from jupyter_client.kernelspec import KernelSpecManager

    return preferred if preferred in KernelSpecManager().find_kernel_specs() else "python3"


@dataclass(eq=False)  # identity semantics: the runner keeps live kernels in a set
class Kernel:
    """A started kernel: its manager, private socket folder and how long the start took."""

    manager: Any
    socket_dir: Path
    start_s: float

    @property
    def pid(self) -> int | None:
        process = getattr(getattr(self.manager, "provisioner", None), "process", None)
        return getattr(process, "pid", None)

    def kill(self) -> None:
        """Kill the kernel's process group (the kernel and anything it started) and reap the kernel,
        so no zombie of it outlives the runner."""
        process = getattr(getattr(self.manager, "provisioner", None), "process", None)
        if process is None or process.poll() is not None:
            return  # gone and reaped: its pid may belong to another process by now
        try:
            os.killpg(os.getpgid(process.pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)

    def shutdown(self) -> None:
        """Stop the kernel and remove its sockets (papermill leaves a kernel it was handed running)."""
        from jupyter_core.utils import run_sync

        try:
            if self.manager.has_kernel:
                run_sync(self.manager.shutdown_kernel)(now=True)
        finally:
            shutil.rmtree(self.socket_dir, ignore_errors=True)


def start_kernel(kernel_name: str, cwd: Path) -> Kernel:
    """Start a kernel for a stage; the runner may do this before the stage's upstreams finish.

    IPC sockets in a private folder: no TCP ports to race for, and kernels started at the
    same time never share socket names.
    """
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync

    socket_dir = Path(tempfile.mkdtemp(prefix="bentley-kernel-"))
    manager = AsyncKernelManager(kernel_name=kernel_name, transport="ipc", ip=str(socket_dir / "k"))
    clock = time.perf_counter()
    try:
        # The kernel gets the report environment, and its process group is known from the first second.
        run_sync(manager.start_kernel)(cwd=str(cwd), env=kernel_environment())
    except BaseException:
        shutil.rmtree(socket_dir, ignore_errors=True)
        raise
    return Kernel(manager, socket_dir, time.perf_counter() - clock)


def execute_stage(
    stage: Stage,
    output: Path,
    parameters: dict[str, Any],
    *,
    kernel: Kernel,
    kernel_name: str,
    cwd: Path,
    transient_errors: frozenset[str] = frozenset(),
) -> Attempt:
    """Run the stage notebook in `kernel` (always shut down afterwards).

    Transient failures, worth a retry: the kernel died, the stage timed out, or a cell
    raised an exception whose class name is in `transient_errors` (a source's
    TransientSourceError). Anything else is a code or data error and fails at once.
    """
    import papermill
    from nbclient.exceptions import DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    output.parent.mkdir(parents=True, exist_ok=True)
    timed_out = threading.Event()
    watchdog = threading.Timer(stage.timeout_s, _on_timeout, args=(kernel, timed_out))
    watchdog.daemon = True
    started = dt.datetime.now(dt.UTC)
    clock = time.perf_counter()
    error: str | None = None
    transient = False
    watchdog.start()
    try:
        papermill.execute_notebook(
            str(stage.notebook),
            str(output),
            parameters=parameters,
            kernel_name=kernel_name,
            progress_bar=False,
            log_output=False,
            cwd=str(cwd),
            execution_timeout=int(stage.timeout_s),
            km=kernel.manager,
        )
    except PapermillExecutionError as exc:
        error = f"{exc.ename}: {_first_line(exc.evalue)} (cell In [{exc.exec_count}])"
        transient = timed_out.is_set() or exc.ename in transient_errors
    except DeadKernelError as exc:
        transient = True
        error = (
            f"timed out after {stage.timeout_s:.0f} s; kernel killed"
            if timed_out.is_set()
            else f"kernel died: {_first_line(str(exc))}"
        )
    except Exception as exc:  # noqa: BLE001 - anything else fails the stage, with its evidence kept
        transient = timed_out.is_set()
        error = f"{type(exc).__name__}: {_first_line(str(exc))}"
    finally:
        watchdog.cancel()
        kernel.shutdown()
    if timed_out.is_set() and error and not error.startswith("timed out"):
        error = f"timed out after {stage.timeout_s:.0f} s; kernel killed ({error})"
    duration = time.perf_counter() - clock
    return Attempt(
        status="failed" if error else "success",
        started_at=started,
        ended_at=dt.datetime.now(dt.UTC),
        duration_s=duration,
        cell_time_s=cell_seconds(output),
        error=error,
        transient=transient,
    )


def transient_error_names() -> frozenset[str]:
    """Class names of the exceptions sources declare transient (TransientSourceError and subclasses)."""
    from bentley.sources.base import TransientSourceError

    names, pending = set(), [TransientSourceError]
    while pending:
        cls = pending.pop()
        names.add(cls.__name__)
        pending.extend(cls.__subclasses__())
    return frozenset(names)


def kernel_environment() -> dict[str, str]:
    """The runner's environment, with figures rendered inline (as PNG) whatever MPLBACKEND says:
    reports embed the images, so a headless Agg backend would leave them empty."""
    env = dict(os.environ)
    env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    return env


def cell_seconds(notebook: Path) -> float:
    """Seconds spent inside cells, from papermill's per-cell metadata."""
    import nbformat

    if not notebook.is_file():
        return 0.0
    nb = nbformat.read(str(notebook), as_version=4)
    total = 0.0
    for cell in nb.cells:
        duration = cell.get("metadata", {}).get("papermill", {}).get("duration")
        if isinstance(duration, (int, float)):
            total += float(duration)
    return total


def _on_timeout(kernel: Kernel, timed_out: threading.Event) -> None:
    timed_out.set()
    kernel.kill()


def _first_line(text: str) -> str:
    text = (text or "").strip()
    return text.splitlines()[0] if text else ""
