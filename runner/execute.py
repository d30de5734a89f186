"""Execute one stage notebook through papermill's Python API.

The runner process stays warm; each stage gets a fresh kernel. A watchdog enforces the
stage's wall-clock limit by killing the kernel's whole process group (papermill's own
timeout is per cell). Whatever happens, the executed notebook is saved first, with
papermill's error banner when a cell failed, and only then is the failure reported.
Two fixed costs of papermill are cut from every stage (issue 19): its nbclient client waited
0.2 s for silence before the first cell (`ready_client_class`), and it rewrote the whole
notebook before and after every cell (`papermill_engine` saves at most every `SAVE_EVERY_S`
while cells run, and always at the start and the end).

**Kernels ready to work.** A kernel is warmed before it gets its parameters: the modules
the stage's notebook imports (`notebook_imports`: the import statements of its code cells),
the lazy imports the project modules among them declare (`WARM_IMPORTS`, e.g. the warehouse behind
`StageContext.warehouse`, MLflow behind `ModelStore`) and the modules the stage's cells
imported in earlier runs of the store (the runner keeps them; see the sampler below) are
imported, so the import cell costs a dictionary lookup. The warm-up runs silently (`silent=True`: no execution
count, no history, no output in the notebook) inside its own namespace: the notebook's
namespace is untouched and nothing it computes can depend on what was preloaded (importing
a module twice is importing it once). A kernel belongs to one stage and is shut down after
it; it is never reused.

**Kernels forked from a ready process.** Importing numpy, pandas, matplotlib, scipy,
scikit-learn, SQLAlchemy and the kernel machinery costs 2-3 CPU seconds in every kernel:
a third of a small pipeline's CPU on two cores. When the kernelspec is the usual
`python -m ipykernel_launcher -f {connection_file}`, the runner starts one `ForkServer` per
run with that interpreter and the kernels' environment. It imports the kernel machinery and
what the first stages import, then forks one fresh kernel per stage on request
(`ForkedProvisioner`, a jupyter_client provisioner), importing what several stages share
between requests (never during one: a fork waits for at most one module's import): the child starts its own session, takes the stage's environment and working
folder, and runs `IPKernelApp` on its connection file, as `ipykernel_launcher` would. It is
a new process with a copy of memory in which nothing ran but imports; it belongs to one
stage and dies with it. Signals go through the fork server, which reaps its children, so
a pid is never signalled after it was reaped. The server exits when the runner closes it
or dies (its stdin ends), killing any child left; a child whose server is gone exits too
(ipykernel's parent poller). Any failure to fork falls back to an ordinary kernel.

**Where the time goes.** The same warm-up installs a sampler in the kernel: while a cell
runs, every `SAMPLE_S` it looks at the executing thread's stack and counts the sample as
import (an import is in progress), charts (matplotlib is drawing), report (IPython is
formatting a display, or `bentley.reporting` is building a table) or compute, per cell,
into `<run>/stage_results/<stage>.timing.json`. `breakdown` turns the counts and
papermill's cell durations into seconds; the file also keeps the kernel's peak resident
memory (`peak_rss_mb`, what `bench.large` reports per stage). The sampler only reads stacks; the cell count in
that file is also how the runner tells how far a running stage is (`cells_done`). The
same hook lists the modules each cell imported that the warm-up had not (the roots of
each new subtree of `sys.modules`): the cells' imports the next warm-up includes.
"""

from __future__ import annotations

import ast
import contextlib
import datetime as dt
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
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
    breakdown: dict[str, float] = field(default_factory=dict)  # where the time went (`breakdown`)
    report_s: float = 0.0  # rendering the HTML report, after the kernel is gone
    warm_up: dict[str, Any] = field(default_factory=dict)  # the kernel's warm-up: seconds, modules, ahead

    @property
    def overhead_s(self) -> float:
        """Wall time spent neither inside cells nor on the report: kernel wait, start/stop, injection, saving."""
        return max(self.duration_s - self.cell_time_s - self.report_s, 0.0)


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
    warm_s: float = 0.0  # the warm-up's imports (0: not warmed)
    warmed: int = 0  # modules the warm-up imported or found imported

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
        if isinstance(process, _ForkedProcess):
            process.kill_group()  # its server signals it only while it is unreaped
        else:
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


def start_kernel(
    kernel_name: str, cwd: Path, warm: WarmUp | None = None, threads: int | None = None, forks: ForkServer | None = None
) -> Kernel:
    """Start a kernel for a stage, warmed for it (`warm`); the runner may do this before the
    stage's upstreams finish.

    IPC sockets in a private folder: no TCP ports to race for, and kernels started at the
    same time never share socket names. `threads` caps the BLAS and OpenMP threads of the
    kernel (`kernel_environment`). With `forks`, the kernel is forked from that server
    (module docstring); if that fails, it is started as a new process.
    """
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync

    clock = time.perf_counter()
    for forked in (True, False) if forks is not None and forks.usable else (False,):
        socket_dir = Path(tempfile.mkdtemp(prefix="bentley-kernel-"))
        manager = AsyncKernelManager(kernel_name=kernel_name, transport="ipc", ip=str(socket_dir / "k"))
        manager.client_factory = ready_client_class()  # papermill's client, ready without a fixed wait
        try:
            if forked:
                assert forks is not None
                manager.kernel_id = str(uuid.uuid4())
                manager.provisioner = ForkedProvisioner(
                    kernel_id=manager.kernel_id, kernel_spec=manager.kernel_spec, parent=manager, server=forks
                )
            # The kernel gets the report environment, and its process group is known from the first second.
            run_sync(manager.start_kernel)(cwd=str(cwd), env=kernel_environment(threads))
        except BaseException as exc:
            with contextlib.suppress(Exception):
                if manager.has_kernel:
                    run_sync(manager.shutdown_kernel)(now=True)
            shutil.rmtree(socket_dir, ignore_errors=True)
            if forked and forks is not None and isinstance(exc, Exception) and not forks.closed:
                forks.failed(exc)
                continue  # an ordinary kernel instead
            raise
        break
    kernel = Kernel(manager, socket_dir, time.perf_counter() - clock)
    if warm is not None:
        try:
            warm_kernel(kernel, warm)
        except BaseException:
            kernel.kill()
            kernel.shutdown()
            raise
    return kernel


@lru_cache(maxsize=1)
def ready_client_class() -> type:
    """jupyter_client's async kernel client, ready as soon as the kernel is (issue 19).

    Its `wait_for_ready` (what nbclient calls before the first cell) ends with a flush that
    reads IOPub until 0.2 s pass without a message: a fifth of a second on every stage's
    critical path, however warm its kernel. This one asks for kernel_info and is ready when
    IOPub carries the kernel's `idle` status for that very request: the reply proves the shell
    channel, the status proves IOPub is subscribed, and nothing of that request can follow it.
    Until both arrive it asks again, as jupyter_client does, and it fails the same way when
    the kernel dies or the timeout passes.
    """
    from queue import Empty

    from jupyter_client.asynchronous import AsyncKernelClient
    from jupyter_core.utils import ensure_async

    class ReadyClient(AsyncKernelClient):
        async def wait_for_ready(self, timeout: float | None = None) -> None:
            deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
            while True:
                request = self.kernel_info()
                reply = await self._reply_to(request)
                if reply is not None and await self._idle_after(request):
                    self._handle_kernel_info_reply(reply)
                    return
                if not await self.is_alive():
                    raise RuntimeError("Kernel died before replying to kernel_info")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Kernel didn't respond in {timeout:.0f} seconds")

        async def _reply_to(self, request: str) -> dict[str, Any] | None:
            """The shell reply to `request` within a second (earlier requests' replies skipped)."""
            try:
                while True:
                    msg = await ensure_async(self.shell_channel.get_msg(timeout=1))
                    if msg["parent_header"].get("msg_id") == request:
                        return dict(msg)
            except Empty:
                return None

        async def _idle_after(self, request: str) -> bool:
            """Whether IOPub brings the kernel's idle status for `request` (no gap over 0.2 s)."""
            try:
                while True:
                    msg = await ensure_async(self.iopub_channel.get_msg(timeout=0.2))
                    if (
                        msg["msg_type"] == "status"
                        and msg["content"].get("execution_state") == "idle"
                        and msg["parent_header"].get("msg_id") == request
                    ):
                        return True
            except Empty:
                return False  # not subscribed in time: ask again

    return ReadyClient


@dataclass(frozen=True)
class WarmUp:
    """What a stage's kernel does before it gets its parameters (module docstring)."""

    modules: tuple[str, ...]  # imported in this order; failures are left to the notebook to meet
    timing_file: Path | None = None  # where the sampler writes its counts (None: no sampler)
    timeout_s: float = 300.0


#: Seconds between two looks at the executing cell's stack.
SAMPLE_S = 0.005

#: Runs in the kernel, inside its own globals (never the notebook's namespace).
_WARM_CODE = r"""
def _imports(modules, seen=None):
    # Import `modules`, then the lazy imports those of them that are project modules declare
    # (WARM_IMPORTS) and theirs; yields after each one, so a caller can interleave other work
    # (the fork server). Only the modules named here count: a kernel forked from a server that
    # has imported other stages' modules does not warm what those need.
    import importlib, sys
    seen = set() if seen is None else seen

    def load(name):
        if name in seen:
            return False
        seen.add(name)
        try:
            importlib.import_module(name)
        except Exception:  # the notebook meets the same error in its own cell, where it belongs
            pass
        return True

    for name in modules:
        if load(name):
            yield name
    pending = True
    while pending:
        pending = False
        for named in list(seen):
            module = sys.modules.get(named)
            if named.partition(".")[0] != "bentley" or module is None:
                continue
            for name in getattr(module, "WARM_IMPORTS", ()):
                if load(name):
                    pending = True
                    yield name


def _warm(modules, timing_file, interval):
    import json, os, sys, threading, time
    clock = time.perf_counter()
    seen = set()
    for _ in _imports(modules, seen):
        pass
    warm_s = time.perf_counter() - clock
    if timing_file is None:
        return warm_s, len(seen)
    from IPython import get_ipython

    shell = get_ipython()
    state = {"cell": None, "thread": None, "cells": [], "imported": [], "known": set(sys.modules)}
    sep = os.sep

    def kind(frame):
        found = "compute"
        while frame is not None:
            name = frame.f_code.co_filename
            if "importlib._bootstrap" in name:
                return "import"
            if found != "charts":
                if sep + "matplotlib" + sep in name or name.endswith(sep + "charts.py") or "chart" in frame.f_code.co_name:
                    found = "charts"
                elif found == "compute" and ((sep + "IPython" + sep + "core" + sep in name and "format" in name)
                                             or sep + "pandas" + sep + "io" + sep + "formats" + sep in name
                                             or name.endswith(sep + "bentley" + sep + "reporting.py")):
                    found = "report"
            frame = frame.f_back
        return found

    def sample():
        while True:
            time.sleep(interval)
            cell, thread = state["cell"], state["thread"]
            if cell is None:
                continue
            try:
                label = kind(sys._current_frames().get(thread))
            except Exception:
                continue
            cell[label] = cell.get(label, 0) + 1

    def write():
        import resource  # ru_maxrss: the kernel's peak resident memory so far, in KiB on Linux
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        text = json.dumps({"warm_s": warm_s, "warmed": len(seen), "interval_s": interval, "cells": state["cells"],
                           "imported": state["imported"], "peak_rss_mb": round(peak_mb, 1)})
        temporary = timing_file + ".tmp"
        with open(temporary, "w") as handle:
            handle.write(text)
        os.replace(temporary, timing_file)

    def before(*args):
        state["thread"] = threading.get_ident()
        state["cpu"] = time.process_time()
        state["cell"] = {}

    def after(*args):
        cell, state["cell"] = state["cell"], None
        cell = cell or {}
        cell["cpu_s"] = round(time.process_time() - state.get("cpu", time.process_time()), 4)
        state["cells"].append(cell)
        try:  # what the cell imported that the warm-up did not: the roots of each new subtree
            now = set(sys.modules)
            new = now - state["known"]
            state["known"] = now
            state["imported"] += sorted(name for name in new if name.rpartition(".")[0] not in new
                                        and not any(part.startswith("_") for part in name.split(".")))
        except Exception:
            pass
        try:
            write()
        except Exception:
            pass

    os.makedirs(os.path.dirname(timing_file), exist_ok=True)
    shell.events.register("pre_run_cell", before)
    shell.events.register("post_run_cell", after)
    threading.Thread(target=sample, name="bentley-timing", daemon=True).start()
    return warm_s, len(seen)
"""


#: Runs in the fork server (`python -c`); its first argument is the JSON list of modules to import.
_SERVER_CODE = (
    r"""
import gc, json, os, signal, sys, traceback
if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]  # as ipykernel_launcher does; IPython puts the kernel's folder back
"""
    + _WARM_CODE
    + r"""
seen = set()
for _ in _imports(json.loads(sys.argv[1]), seen):
    pass
import ipykernel.kernelapp
later = _imports(json.loads(sys.argv[2]), seen)  # imported between requests, one module at a time
gc.collect()
gc.freeze()  # imported objects stay out of the collector: fewer pages copied into each child
exits, forked = {}, set()

def reap():
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            return
        exits[pid] = os.waitstatus_to_exitcode(status)

def child(request):
    os.setsid()  # its own session and process group: a kill reaches the kernel and what it starts
    for fd in (0, 1):
        os.dup2(os.open(os.devnull, os.O_RDWR), fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ["JPY_PARENT_PID"] = str(os.getppid())
    sys.argv = ["ipykernel_launcher", "-f", request["connection_file"]]
    app = ipykernel.kernelapp.IPKernelApp.instance()
    app.initialize(["-f", request["connection_file"], "--IPKernelApp.parent_handle=%d" % os.getppid()])
    as_if_imported_in_a_kernel()
    app.start()

def as_if_imported_in_a_kernel():
    # What modules imported here, before any kernel existed, would have done inside one.
    config = sys.modules.get("pandas._config.config")
    option = getattr(config, "_registered_options", {}).get("display.max_columns")
    if option is not None and option.defval == 0:  # pandas took this process for a terminal
        config._registered_options["display.max_columns"] = option._replace(defval=20)
        if config.get_option("display.max_columns") == 0:
            config.set_option("display.max_columns", 20)
    inline = sys.modules.get("matplotlib_inline.backend_inline")
    if inline is not None:  # registers the inline backend's hooks on this kernel's shell
        inline._enable_matplotlib_integration()

def answer(request):
    reap()
    op, pid = request.get("op"), request.get("pid")
    if op == "fork":
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                child(request)
            except BaseException:
                traceback.print_exc()
                code = 70
            finally:
                os._exit(code)
        forked.add(pid)
        return {"pid": pid}
    if op == "poll":
        return {"exit": exits.get(pid)}
    if op == "signal":
        if pid in exits:
            return {"sent": False}
        try:
            if request.get("group"):
                os.killpg(pid, request["signal"])
            else:
                os.kill(pid, request["signal"])
        except ProcessLookupError:
            return {"sent": False}
        return {"sent": True}
    return {"error": "unknown op %r" % op}

import select
sys.stdout.write(json.dumps({"ready": True}) + chr(10))
sys.stdout.flush()
buffer = b""
while True:
    if later is not None and not select.select([0], [], [], 0)[0]:
        if next(later, None) is None:  # nothing asked: import the next module the stages use
            later = None
            gc.freeze()
        continue
    chunk = os.read(0, 65536)
    if not chunk:
        break
    buffer += chunk
    while b"\n" in buffer:
        line, buffer = buffer.split(b"\n", 1)
        try:
            reply = answer(json.loads(line))
        except Exception as exc:
            reply = {"error": "%s: %s" % (type(exc).__name__, exc)}
        sys.stdout.write(json.dumps(reply) + chr(10))
        sys.stdout.flush()
reap()
for pid in forked - set(exits):  # the runner is gone or done: no kernel outlives it
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
"""
)


class ForkServer:
    """One process per run that has imported what the stages share and forks their kernels
    (module docstring). Requests are JSON lines on its stdin, answered on its stdout, one at a
    time; `usable` turns false after a failure, and later kernels start as new processes."""

    def __init__(
        self, argv: list[str], modules: Sequence[str], env: Mapping[str, str], cwd: Path, later: Sequence[str] = ()
    ) -> None:
        self.modules = tuple(modules)
        self.process = subprocess.Popen(
            [*argv, "-c", _SERVER_CODE, json.dumps(list(self.modules)), json.dumps(list(later))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=dict(env),
            cwd=str(cwd),
            text=True,
            start_new_session=True,  # a terminal's Ctrl-C is the runner's to handle, not its kernels'
        )
        self.lock = threading.Lock()
        self.ready = False
        self.closed = False  # by the runner: a kernel start then fails instead of falling back
        self.error: str | None = None

    @classmethod
    def for_kernel(
        cls, kernel_name: str, modules: Sequence[str], env: Mapping[str, str], cwd: Path, later: Sequence[str] = ()
    ) -> ForkServer | None:
        """A server running the kernelspec's interpreter, or None when the kernelspec is not the
        plain `<python> [options] -m ipykernel_launcher -f {connection_file}` or fork is missing.

        It imports `modules` before it answers, then `later` one module at a time while no
        request waits (a kernel forked meanwhile imports what it lacks in its own warm-up)."""
        from jupyter_client.kernelspec import KernelSpecManager

        if not hasattr(os, "fork") or sys.platform == "darwin":
            return None
        try:
            argv = list(KernelSpecManager().get_kernel_spec(kernel_name).argv)
        except Exception:  # noqa: BLE001 - no such kernelspec: ordinary kernels say why
            return None
        if argv[-4:] != ["-m", "ipykernel_launcher", "-f", "{connection_file}"]:
            return None
        return cls(argv[:-4], modules, env, cwd, later)

    @property
    def usable(self) -> bool:
        return self.error is None and self.process.poll() is None

    def request(self, **message: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        with self.lock:
            try:
                if not self.ready:  # the first request waits for the imports
                    self._read()
                    self.ready = True
                self.process.stdin.write(json.dumps(message) + "\n")
                self.process.stdin.flush()
                reply = self._read()
            except (OSError, ValueError) as exc:  # closed, or gone
                raise RuntimeError(f"the kernel fork server is gone ({type(exc).__name__}: {exc})") from None
        if "error" in reply:
            raise RuntimeError(f"kernel fork server: {reply['error']}")
        return reply

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the kernel fork server exited (code {self.process.poll()})")
        return dict(json.loads(line))

    def failed(self, exc: Exception) -> None:
        self.error = f"{type(exc).__name__}: {exc}"

    def close(self) -> None:
        """End the server (and any kernel it still has: closing its stdin kills them)."""
        self.closed = True
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


class _ForkedProcess:
    """A forked kernel, shaped like the `Popen` the rest of the runner handles."""

    def __init__(self, server: ForkServer, pid: int) -> None:
        self.server = server
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self.returncode = self.server.request(op="poll", pid=self.pid)["exit"]
            except (RuntimeError, OSError):
                self.returncode = -signal.SIGKILL  # the server is gone, and its children with it
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"kernel {self.pid}", timeout or 0.0)
            time.sleep(0.05)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int, group: bool = False) -> None:
        with contextlib.suppress(RuntimeError, OSError):
            self.server.request(op="signal", pid=self.pid, signal=int(signum), group=group)

    def kill_group(self) -> None:
        self.send_signal(signal.SIGKILL, group=True)


def _forked_provisioner_class() -> type:
    from jupyter_client.provisioning.local_provisioner import LocalProvisioner

    class _Forked(LocalProvisioner):
        """jupyter_client's local provisioner, launching by fork from a `ForkServer`."""

        process: _ForkedProcess | None  # type: ignore[assignment]  # a fork-server child, not a Popen

        def __init__(self, server: ForkServer, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.server = server

        async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
            connection_file = cmd[cmd.index("-f") + 1]
            env = {k: str(v) for k, v in (kwargs.get("env") or os.environ).items()}
            cwd = str(kwargs.get("cwd") or os.getcwd())
            pid = int(self.server.request(op="fork", connection_file=connection_file, env=env, cwd=cwd)["pid"])
            self.process = _ForkedProcess(self.server, pid)
            self.pid = self.pgid = pid  # the child leads its own session and process group
            self.cwd = cwd
            return self.connection_info

        async def send_signal(self, signum: int) -> None:
            if self.process:
                self.process.send_signal(signum, group=True)

        async def kill(self, restart: bool = False) -> None:
            await self.send_signal(signal.SIGKILL)

        async def terminate(self, restart: bool = False) -> None:
            await self.send_signal(signal.SIGTERM)

        async def wait(self) -> int | None:
            import asyncio

            if not self.process:
                return 0
            while self.process.poll() is None:
                await asyncio.sleep(0.05)
            code = self.process.returncode
            self.process = None
            return code

    return _Forked


def ForkedProvisioner(**kwargs: Any) -> Any:  # noqa: N802 - a class, built once jupyter_client is imported
    """A jupyter_client provisioner whose kernel is forked by `kwargs['server']` (module docstring)."""
    return _forked_provisioner_class()(**kwargs)


#: What every kernel imports before any notebook code: the kernel machinery, and pyplot (every
#: report draws). matplotlib's inline backend is left to the kernel: importing it hooks it into
#: the running shell, and the fork server has none (`as_if_imported_in_a_kernel` redoes that in
#: a child forked after it was imported anyway).
KERNEL_MODULES: tuple[str, ...] = ("ipykernel.ipkernel", "ipykernel.zmqshell", "matplotlib.pyplot")


def shared_imports(module_lists: Sequence[Sequence[str]], minimum: int = 2) -> tuple[str, ...]:
    """The modules at least `minimum` of the lists name, in order of first appearance."""
    counts: dict[str, int] = {}
    for modules in module_lists:
        for name in dict.fromkeys(modules):
            counts[name] = counts.get(name, 0) + 1
    return tuple(name for name, count in counts.items() if count >= minimum)


def warm_kernel(kernel: Kernel, warm: WarmUp) -> None:
    """Run the warm-up in `kernel` (module docstring); records its time on the kernel.

    Silent and in a namespace of its own: the notebook's execution counts, history and
    variables are as in a kernel that was never warmed.
    """
    from jupyter_client.blocking import BlockingKernelClient

    timing = None if warm.timing_file is None else str(warm.timing_file)
    call = f"\n_warm({list(warm.modules)!r}, {timing!r}, {SAMPLE_S!r})\n"
    code = f"exec({_WARM_CODE + call!r}, {{'__name__': '__bentley_warm__'}})"
    client = BlockingKernelClient()
    client.load_connection_info(kernel.manager.get_connection_info())
    client.start_channels(hb=False)  # the heartbeat's first beat can lag a busy machine: ask the process instead
    clock = time.perf_counter()
    deadline = time.monotonic() + warm.timeout_s
    try:
        _wait_until_ready(client, kernel, deadline)
        msg_id = client.execute(code, silent=True, store_history=False, allow_stdin=False)
        while True:
            try:
                reply = client.get_shell_msg(timeout=1.0)
            except queue.Empty:
                _check_alive(kernel, deadline, "warming up")
                continue
            if reply["parent_header"].get("msg_id") == msg_id:
                break
    finally:
        client.stop_channels()
    if reply["content"].get("status") != "ok":
        raise RuntimeError(f"kernel warm-up failed: {reply['content'].get('ename')}: {reply['content'].get('evalue')}")
    kernel.warm_s = time.perf_counter() - clock
    kernel.warmed = len(warm.modules)


def _wait_until_ready(client: Any, kernel: Kernel, deadline: float) -> None:
    """Until the kernel answers kernel_info; fails when its process exits or at `deadline`."""
    while True:
        client.kernel_info()
        try:
            while True:
                if (
                    client.get_shell_msg(timeout=1.0)["msg_type"] == "kernel_info_reply"
                ):  # this request's or an earlier one's
                    return
        except queue.Empty:
            _check_alive(kernel, deadline, "starting")


def _check_alive(kernel: Kernel, deadline: float, doing: str) -> None:
    process = getattr(getattr(kernel.manager, "provisioner", None), "process", None)
    if process is not None and process.poll() is not None:
        raise RuntimeError(f"the kernel exited while {doing} (exit code {process.returncode})")
    if time.monotonic() > deadline:
        raise TimeoutError(f"the kernel did not answer while {doing}")


def notebook_imports(notebook: Path) -> tuple[str, ...]:
    """The modules a notebook's code cells import at their top level, in order of appearance.

    `from package import name` lists `package` and `package.name` (the warm-up skips the
    latter when `name` is not a module). Magics and shell lines are left out of the parse;
    a cell that still does not parse is skipped, and the notebook meets its own error.
    """
    stat = notebook.stat()
    return _notebook_imports(str(notebook), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=64)
def _notebook_imports(path: str, _mtime_ns: int, _size: int) -> tuple[str, ...]:
    cells = json.loads(Path(path).read_text(encoding="utf-8")).get("cells", [])
    found: dict[str, None] = {}
    for cell in cells:
        if cell.get("cell_type") != "code" or "parameters" in cell.get("metadata", {}).get("tags", []):
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
        try:
            tree = ast.parse("\n".join(lines))
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Import):
                found.update(dict.fromkeys(alias.name for alias in node.names))
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found[node.module] = None
                found.update(dict.fromkeys(f"{node.module}.{alias.name}" for alias in node.names if alias.name != "*"))
    return tuple(found)


def execute_stage(
    stage: Stage,
    output: Path,
    parameters: dict[str, Any],
    *,
    kernel: Kernel,
    kernel_name: str,
    cwd: Path,
    transient_errors: frozenset[str] = frozenset(),
    timing_file: Path | None = None,
    shutdown: Callable[[Kernel], object] | None = None,
) -> Attempt:
    """Run the stage notebook in `kernel` (always shut down afterwards, by `shutdown` when given).

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
            engine_name=papermill_engine(),
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
        (shutdown or Kernel.shutdown)(kernel)  # the runner hands it to a thread: the next stage need not wait
    if timed_out.is_set() and error and not error.startswith("timed out"):
        error = f"timed out after {stage.timeout_s:.0f} s; kernel killed ({error})"
    duration = time.perf_counter() - clock
    durations = cell_durations(output)
    return Attempt(
        status="failed" if error else "success",
        started_at=started,
        ended_at=dt.datetime.now(dt.UTC),
        duration_s=duration,
        cell_time_s=sum(durations),
        error=error,
        transient=transient,
        breakdown=breakdown(durations, timing_file),
    )


#: Seconds the executed notebook on disk may lag the kernel while cells run (`papermill_engine`).
SAVE_EVERY_S = 2.0

#: The papermill engine the runner registers (`papermill_engine`).
ENGINE_NAME = "bentley"


@lru_cache(maxsize=1)
def papermill_engine() -> str:
    """The name of papermill's nbclient engine with sparse saves, registered on first use.

    papermill rewrites the whole output notebook, validated and with every image so far, before
    and after each cell: some thirty writes for a one-second stage, a tenth of a second of the
    runner's CPU per stage on its critical path (issue 19). This engine writes when execution
    starts and ends (so the final notebook, error banner included, is exactly papermill's), and
    while cells run only when the copy on disk is `SAVE_EVERY_S` old: a long cell starts with
    the copy on disk at most that much behind, and papermill's own autosave still writes a
    long cell's output as it comes.
    """
    from papermill.engines import NBClientEngine, NotebookExecutionManager, papermill_engines

    class SparseSaves(NotebookExecutionManager):
        _sparse = False  # inside a cell's start or end while the copy on disk is fresh: no save

        def cell_start(self, cell: Any, cell_index: int | None = None, **kwargs: Any) -> None:
            with self._only_if_stale():
                super().cell_start(cell, cell_index, **kwargs)

        def cell_complete(self, cell: Any, cell_index: int | None = None, **kwargs: Any) -> None:
            with self._only_if_stale():
                super().cell_complete(cell, cell_index, **kwargs)

        @contextlib.contextmanager
        def _only_if_stale(self) -> Any:
            self._sparse = (self.now() - self.last_save_time).total_seconds() < SAVE_EVERY_S
            try:
                yield
            finally:
                self._sparse = False

        def save(self, **kwargs: Any) -> None:
            if not self._sparse:
                super().save(**kwargs)

    class Engine(NBClientEngine):
        @classmethod
        def execute_notebook(
            cls,
            nb: Any,
            kernel_name: str,
            output_path: str | None = None,
            progress_bar: bool = True,
            log_output: bool = False,
            autosave_cell_every: int = 30,
            **kwargs: Any,
        ) -> Any:
            """papermill's `Engine.execute_notebook`, with the sparse-saving manager."""
            nb_man = SparseSaves(
                nb,
                output_path=output_path,
                progress_bar=progress_bar,
                log_output=log_output,
                autosave_cell_every=autosave_cell_every,
            )
            nb_man.notebook_start()
            try:
                cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
            finally:
                nb_man.cleanup_pbar()
                nb_man.notebook_complete()
            return nb_man.nb

    papermill_engines.register(ENGINE_NAME, Engine)
    return ENGINE_NAME


def transient_error_names() -> frozenset[str]:
    """Class names of the exceptions sources declare transient (TransientSourceError and subclasses)."""
    from bentley.sources.base import TransientSourceError

    names, pending = set(), [TransientSourceError]
    while pending:
        cls = pending.pop()
        names.add(cls.__name__)
        pending.extend(cls.__subclasses__())
    return frozenset(names)


#: Thread-pool variables of the numerical libraries a kernel may load (OpenMP, BLAS, numexpr).
THREAD_VARIABLES: tuple[str, ...] = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def kernel_threads(max_workers: int, cpus: int | None = None) -> int:
    """Threads per kernel so that `max_workers` kernels at once fill the machine's cores, no more.

    Every OpenMP and BLAS pool sizes itself to all cores by default, so two stages at once
    on two cores ran four spinning threads: a scikit-learn fit took 8-20 times longer than on
    one thread (issue 19). A stage that can use more than its share says so itself.
    """
    return max(1, (cpus or os.cpu_count() or 1) // max(1, max_workers))


def kernel_environment(threads: int | None = None) -> dict[str, str]:
    """The runner's environment, with figures rendered inline (as PNG) whatever MPLBACKEND says:
    reports embed the images, so a headless Agg backend would leave them empty. With `threads`,
    numerical thread pools are capped at that many threads unless the environment sets them."""
    env = dict(os.environ)
    env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    if threads is not None:
        for name in THREAD_VARIABLES:
            env.setdefault(name, str(threads))
    return env


def cell_durations(notebook: Path) -> list[float]:
    """Seconds spent inside each code cell, in order, from papermill's per-cell metadata."""
    import nbformat

    if not notebook.is_file():
        return []
    nb = nbformat.read(str(notebook), as_version=4)
    durations = []
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        duration = cell.get("metadata", {}).get("papermill", {}).get("duration")
        durations.append(float(duration) if isinstance(duration, (int, float)) else 0.0)
    return durations


def cell_seconds(notebook: Path) -> float:
    """Seconds spent inside cells, from papermill's per-cell metadata."""
    return sum(cell_durations(notebook))


#: The parts of a stage's cell time (`breakdown`), in the order reports show them.
PARTS: tuple[str, ...] = ("import", "compute", "charts", "report")


def breakdown(durations: list[float], timing_file: Path | None) -> dict[str, float]:
    """Cell time split into `PARTS` (seconds): each cell's duration shared out by the
    sampler's counts for that cell (module docstring); a cell too short to be sampled, or
    a kernel without the sampler, counts as compute. `cpu` is the CPU time the kernel
    process used inside cells (all its threads): on a busy machine, what the stage itself
    cost, whatever else ran."""
    parts = dict.fromkeys(PARTS, 0.0)
    cells: list[dict[str, float]] = []
    if timing_file is not None:
        with contextlib.suppress(OSError, ValueError):
            cells = json.loads(timing_file.read_text(encoding="utf-8")).get("cells", [])
    cpu = sum(float(cell.get("cpu_s", 0.0)) for cell in cells[: len(durations)])
    for index, duration in enumerate(durations):
        counts = cells[index] if index < len(cells) else {}
        total = sum(counts.get(part, 0) for part in PARTS)
        if not total:
            parts["compute"] += duration
            continue
        for part in PARTS:
            parts[part] += duration * counts.get(part, 0) / total
    result = {part: round(seconds, 3) for part, seconds in parts.items()}
    if cells:
        result["cpu"] = round(cpu, 3)
    return result


def cells_done(timing_file: Path) -> int | None:
    """Code cells a running stage has finished, from its sampler's file (None: not known yet)."""
    try:
        return len(json.loads(timing_file.read_text(encoding="utf-8")).get("cells", []))
    except (OSError, ValueError):
        return None


def code_cells(notebook: Path) -> int:
    """Code cells of a notebook, the parameters cell papermill injects included."""
    stat = notebook.stat()
    return _code_cells(str(notebook), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=64)
def _code_cells(path: str, _mtime_ns: int, _size: int) -> int:
    cells = json.loads(Path(path).read_text(encoding="utf-8")).get("cells", [])
    return sum(cell.get("cell_type") == "code" for cell in cells) + 1  # + papermill's injected parameters


def _on_timeout(kernel: Kernel, timed_out: threading.Event) -> None:
    timed_out.set()
    kernel.kill()


def _first_line(text: str) -> str:
    text = (text or "").strip()
    return text.splitlines()[0] if text else ""
