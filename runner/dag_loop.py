"""The DAG loop of one run: which stage runs when, on which kernel, and what happens after.

- Ready stages start at once, up to `runner.max_workers`, the one with the longest path of work
  after it first (`dag.critical_path`, from the ledger's latest durations). A stage declared
  `exclusive` in pipeline.yaml (train: its fits keep every core busy) starts like any other,
  and no other stage starts while it runs: on two cores, a stage beside it would take a third
  of the machine from the critical path.
- A stage is decided once its upstreams are final: skipped (an upstream failed, or the run was
  stopped), up to date (`runner.cache`), or executed in a fresh kernel on a worker thread.
- Kernels of the stages next in line are started and warmed meanwhile (`runner.prestart_kernels`,
  `runner.execute`), so kernel start-up is off the critical path; a fork server forks them.
- Transient failures are retried after a capped exponential backoff with full jitter
  (`bentley.retry.Backoff`, the `retry` policy of pipeline.yaml).
- A finished stage's cache entry is stored at once (its downstream needs the fingerprint); it is
  logged to MLflow and the run record once the next stages have started.

Each selected stage's progress through the loop is one `StageState`; only the main thread
changes them. Worker threads execute notebooks and render their reports.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from bentley.lake import atomic_write_json, read_json
from bentley.retry import Backoff
from runner.cache import CacheEntry, Decision, KeyBuilder, StageKey, decide
from runner.dag import Stage, critical_path
from runner.outcomes import STAGE_DONE as DONE

if TYPE_CHECKING:
    from runner.pipeline import PipelineRun

STAGE_IMPORTS = "cache/stage_imports.json"
_MAX_LEARNED = 200  # modules remembered per stage


@dataclass
class Attempted:
    """What a worker thread hands back: the attempt and where its files are.

    The HTML report is rendered after the worker hands back (`rendering`), while the stages
    downstream of it already run: `rendered` waits for it when the stage is recorded.
    """

    attempt: Any  # runner.execute.Attempt
    notebook: Path
    report: Path | None
    report_error: str | None
    rendering: Future[tuple[Path | None, str | None, float]] | None = None

    def rendered(self) -> None:
        """The report's path (or error) once it is written; its seconds join the stage's time."""
        if self.rendering is None:
            return
        self.report, self.report_error, seconds = self.rendering.result()
        self.rendering = None
        attempt = self.attempt
        attempt.report_s = seconds
        attempt.duration_s += seconds
        attempt.ended_at = attempt.ended_at + dt.timedelta(seconds=seconds)
        if attempt.breakdown:
            attempt.breakdown["report"] = round(attempt.breakdown.get("report", 0.0) + seconds, 3)


@dataclass
class StageState:
    """Where one selected stage is in the loop (main thread only)."""

    stage: Stage
    status: str = "pending"  # pending, running, then success | failed | skipped | cached
    fingerprint: str | None = None  # of its products: the cache entry's until it reruns, then its new one
    entry: CacheEntry | None = None  # its cache entry when the run started
    key: StageKey | None = None  # decided once its upstreams are final (and only then)
    decision: Decision | None = None
    kernel: Future[Any] | None = None  # a kernel started ahead for it, not used yet
    attempt: int = 0  # the number of the attempt running or last run
    future: Future[Attempted] | None = None  # the attempt executing on a worker
    retry_in_s: float = 0.0  # the backoff the last retry waited out first
    result: Attempted | None = None  # finished, not yet recorded

    @property
    def name(self) -> str:
        return self.stage.name


class DagLoop:
    """Runs the selected stages of a `PipelineRun` (its plan, record, cache store and MLflow parent)."""

    #: Kernels started ahead and not yet used, beyond one per worker: a kernel warmed early
    #: (train's imports MLflow) is ready when its stage is, and costs only memory meanwhile.
    AHEAD = 2

    def __init__(self, run: PipelineRun) -> None:
        self.run = run
        self.plan = run.plan
        self.config = run.config
        self.console = run.console
        self.max_workers = run.max_workers
        from runner.execute import kernel_threads

        self.kernel_threads = kernel_threads(self.max_workers)
        self.states: dict[str, StageState] = {}
        self.ordered: list[StageState] = []  # by priority: the longest path of work after it first
        self.kernel_name: str | None = None  # resolved when the first stage executes
        self.transient: frozenset[str] = frozenset()
        self._forks: Any = None  # runner.execute.ForkServer: forks the stages' kernels (None: new processes)
        self._starter: Any = None  # the thread pools that start (and warm) kernels, shut them down,
        self._reaper: Any = None  # and render reports
        self._renderer: Any = None
        self._learned: dict[str, list[str]] | None = None  # what each stage imported in its cells last time
        self._kernels: set[Any] = set()
        self._kernels_lock = threading.Lock()
        self.progress = Progress(self.console, run.plan.run_dir, enabled=False)  # the loop's own, once it runs

    # ------------------------------------------------------------------ the loop

    def run_stages(self) -> None:
        run, plan = self.run, self.plan
        entries = run.cache.entries()
        self.states = {
            s.name: StageState(
                s, fingerprint=getattr(entries.get(s.name), "fingerprint", None), entry=entries.get(s.name)
            )
            for s in plan.stages
        }
        # Ready stages start in order of the work on their longest path to the end (stable: DAG order on ties).
        priority = critical_path(plan.stages, self._last_durations())
        self.ordered = sorted(self.states.values(), key=lambda state: -priority[state.name])
        progress = self.progress = Progress(self.console, plan.run_dir, enabled=self.config.runner.progress)
        keys = KeyBuilder(plan.request.root, self.config)
        backoff = Backoff(plan.retry.backoff_base_s, plan.retry.backoff_max_s)
        unrecorded: list[StageState] = []  # finished, not yet logged (`_record`)
        workers = ThreadPoolExecutor(self.max_workers, thread_name_prefix="stage")
        # Kernels are forked (runner.execute.ForkServer): a slow warm-up (train's MLflow) must not hold up the next.
        starter = self._starter = ThreadPoolExecutor(self.max_workers, thread_name_prefix="kernel-start")
        reaper = self._reaper = ThreadPoolExecutor(self.max_workers, thread_name_prefix="kernel-stop")
        renderer = self._renderer = ThreadPoolExecutor(self.max_workers, thread_name_prefix="report")

        def upstream_fingerprint(name: str) -> str | None:
            state = self.states.get(name)
            return state.fingerprint if state else getattr(entries.get(name), "fingerprint", None)

        try:
            while True:
                for state in self.ordered:
                    if state.status != "pending":
                        continue
                    stage = state.stage
                    upstream = [self.states[u] for u in stage.upstream if u in self.states]
                    if any(u.status in ("pending", "running") for u in upstream):
                        continue
                    if run.stop.is_set():
                        self._not_run(state, "skipped", "not started: the run was stopped")
                        continue
                    blocked = [u.name for u in upstream if u.status not in DONE]
                    if blocked and stage.trigger == "all_success":
                        self._not_run(state, "skipped", f"upstream {', '.join(blocked)} did not succeed")
                        continue
                    if state.decision is None:  # upstreams are final here: decide once, not per wait
                        state.key = keys.key(
                            stage, run.parameters(stage), {u: upstream_fingerprint(u) for u in stage.upstream}
                        )
                        current = state.entry if state.entry and state.entry.key == state.key.key else None
                        state.decision = decide(
                            stage,
                            state.key,
                            state.entry,
                            force=plan.request.force,
                            now=_now(),
                            missing_product=run.cache.missing_product(current) if current else None,
                        )
                    if not state.decision.run:
                        self._not_run(state, "cached", state.decision.reason)
                        continue
                    if self._busy():
                        continue
                    self._start(state, workers)
                # The stages that just finished, now that the next ones are running; while a new store's
                # parent run is still being created, later (recording waits for it: starting stages does not).
                while unrecorded and (not self._running() or not run.parent_pending()):
                    self._record(unrecorded.pop(0))
                run.record.flush()
                running = self._running()
                if not running and not unrecorded:
                    break
                if self.config.runner.prestart_kernels and self.kernel_name is not None and not run.stop.is_set():
                    self._prestart()
                if run.orchestrated and run.stop.is_set():
                    self.kill_kernels()  # the orchestrator stops this task (timeout, kill): stop now
                futures = {state.future: state for state in running if state.future is not None}
                done, _ = wait(list(futures), timeout=1.0, return_when=FIRST_COMPLETED)
                run.poll_tracking()
                progress.poll([state.stage for future, state in futures.items() if future not in done])
                for future in done:
                    state = futures[future]
                    state.future = None
                    progress.finished(state.stage)
                    result = future.result()
                    if self._retry(state, result, backoff, workers):
                        continue
                    if run.lost.is_set():
                        state.status = "failed"
                        continue
                    state.status = result.attempt.status
                    state.fingerprint = self._settle(state, result)
                    state.result = result
                    unrecorded.append(state)
        except BaseException:
            run.stop.set()
            self.kill_kernels()  # nobody would record what the running stages do: do not wait for them
            raise
        finally:
            run.release_tracking()  # nothing executes without a parent run, and nothing waits for one forever
            for state in self.states.values():
                self._discard_kernel(state)
            workers.shutdown(wait=True)  # no stage executes after this
            reaper.shutdown(wait=True)  # every kernel that ran a stage is shut down
            renderer.shutdown(wait=True)
            if self._forks is not None:
                self._forks.close()  # kernels still starting (a stop request) fail at once
            starter.shutdown(wait=True)

    def _running(self) -> list[StageState]:
        return [state for state in self.states.values() if state.future is not None]

    def _busy(self) -> bool:
        """No stage may start now: `max_workers` stages run, or an exclusive one does."""
        running = self._running()
        return len(running) >= self.max_workers or any(state.stage.exclusive for state in running)

    def _start(self, state: StageState, workers: ThreadPoolExecutor) -> None:
        """Announce the stage and submit its first attempt (main thread)."""
        run, stage = self.run, state.stage
        if self.kernel_name is None:
            from runner.execute import resolve_kernel, transient_error_names

            _import_in_background("papermill", "nbconvert")  # the workers' first execution and report
            self.kernel_name = resolve_kernel(self.config.runner.kernel)
            self.transient = transient_error_names()
            self._forks = self._fork_server(self.kernel_name)
        assert state.decision is not None  # decided before it starts
        run.cache.invalidate(stage.name)
        state.fingerprint = None
        state.status = "running"
        state.attempt = self.plan.request.attempt
        run.record.running(stage.name, state.decision.reason)
        self.console.print(f"[blue]▶[/] {stage.name} started: {escape(state.decision.reason)}")
        kernel, state.kernel = state.kernel, None
        state.future = workers.submit(self._attempt, stage, 0.0, kernel)
        self.progress.started(stage)
        run.start_tracking()

    def _retry(self, state: StageState, result: Attempted, backoff: Backoff, workers: ThreadPoolExecutor) -> bool:
        """Submit the next attempt of a transient failure, when retries are left (main thread)."""
        run, attempt = self.run, result.attempt
        if (
            attempt.status == "success"
            or not attempt.transient
            or run.stop.is_set()
            or run.lost.is_set()
            or state.attempt > self._retries(state.stage)
        ):
            return False
        state.retry_in_s = backoff.delay(state.attempt)
        result.rendered()
        run.record.attempt(state.name, state.attempt, attempt, result.notebook, result.report, None, retrying=True)
        self.console.print(f"[yellow]↻[/] {state.name} {escape(str(attempt.error))}; retry in {state.retry_in_s:.1f} s")
        state.attempt += 1
        state.future = workers.submit(self._attempt, state.stage, state.retry_in_s, None)
        return True

    def _retries(self, stage: Stage) -> int:
        """Attempts after the first; an orchestrator retries its tasks itself (the exported DAG does)."""
        return 0 if self.run.orchestrated else stage.retries

    def _not_run(self, state: StageState, status: str, reason: str) -> None:
        """A stage decided without executing: skipped, or up to date (reusing its entry's run)."""
        state.status = status
        if status == "cached":
            assert state.entry is not None  # only a stage with an entry is up to date
            self.run.record.not_run(state.name, "cached", reason, state.entry.run_id)
            self.console.print(f"[dim]=[/] {state.name} {escape(reason)}")
        else:
            self.run.mark_skipped(state.name, reason)
        self._discard_kernel(state)

    def _settle(self, state: StageState, result: Attempted) -> str | None:
        """What downstream stages need at once: the cache entry (its fingerprint) on success, and the
        outcome on the terminal. `_record` logs it to MLflow and the records right after the
        next stages have started."""
        from bentley.stage import read_results

        stage, attempt = state.stage, result.attempt
        if attempt.status != "success":
            self.console.print(
                f"[red]✘ {stage.name} failed[/] after {attempt.duration_s:.1f} s: {escape(str(attempt.error))}"
            )
            self.console.print(f"  notebook: {escape(str(result.notebook))}")
            return None
        self._learn_imports(stage)
        assert state.key is not None  # decided before it ran
        products = read_results(self.plan.run_dir, stage.name).get("products", {})
        fingerprint = self.run.cache.store(stage.name, state.key, products, self.plan.run_id, _now())
        parts = " · ".join(
            f"{part} {attempt.breakdown[part]:.1f}"
            for part in ("import", "compute", "charts", "report")
            if part in attempt.breakdown
        )
        self.console.print(
            f"[green]✔[/] {stage.name} {attempt.duration_s:.1f} s "
            f"(cells {attempt.cell_time_s:.1f} s, overhead {attempt.overhead_s:.1f} s{'; ' + parts if parts else ''})"
        )
        return fingerprint

    def _record(self, state: StageState) -> None:
        """Log the final attempt to MLflow and the run record (main thread)."""
        result, state.result = state.result, None
        assert result is not None  # only finished stages are recorded
        result.rendered()
        if result.report_error:
            self.console.print(f"[yellow]![/] {state.name}: HTML report failed: {escape(str(result.report_error))}")
        mlflow_run = self.run.log_stage(state.stage, state.attempt, result)
        self.run.record.attempt(state.name, state.attempt, result.attempt, result.notebook, result.report, mlflow_run)

    def _last_durations(self) -> dict[str, float]:
        """Each stage's wall time in its latest successful execution in this store (the ledger)."""
        try:
            frame = self.run.warehouse.read(
                "stage_runs", where={"status": "success"}, columns=["stage", "ended_at", "duration_s"]
            )
        except Exception:  # noqa: BLE001 - a priority is a hint: without history, declared limits do
            return {}
        frame = frame[frame["duration_s"] > 0].sort_values("ended_at", kind="stable")
        return {str(k): float(v) for k, v in frame.groupby("stage")["duration_s"].last().items()}

    # ------------------------------------------------------------------ workers and kernels

    def _attempt(self, stage: Stage, delay: float, prestarted: Future[Any] | None) -> Attempted:
        """Worker thread: (wait out a backoff,) get a warm kernel, execute, render the report."""
        from runner.execute import Attempt, execute_stage, start_kernel

        run = self.run
        notebook = self.plan.run_dir / "notebooks" / f"{stage.name}.ipynb"
        if delay and run.stop.wait(delay):
            now = _now()
            return Attempted(
                Attempt("failed", now, now, 0.0, 0.0, "not retried: the run was stopped"), notebook, None, None
            )
        assert self.kernel_name is not None  # resolved before the first stage was submitted
        clock = _now()
        starting = prestarted or self._starter.submit(
            start_kernel,
            self.kernel_name,
            stage.notebook.parent,
            self._warm_up(stage),
            self.kernel_threads,
            self._forks,
        )
        try:  # the stage was announced as started: a stop request lets it finish, kernel start included
            kernel = starting.result()
        except Exception as exc:  # noqa: BLE001 - a kernel that cannot start is a transient failure
            now = _now()
            failed = Attempt(
                "failed",
                clock,
                now,
                (now - clock).total_seconds(),
                0.0,
                f"kernel did not start: {type(exc).__name__}: {exc}",
                transient=True,
            )
            return Attempted(failed, notebook, None, None)
        run.wait_for_parent(stage)  # a stage may nest MLflow runs under the parent (train)
        waited = (_now() - clock).total_seconds()
        with self._kernels_lock:
            self._kernels.add(kernel)
        try:
            why = run.cannot_start()
            if why is not None:
                kernel.shutdown()
                now = _now()
                return Attempted(Attempt("failed", now, now, 0.0, 0.0, why), notebook, None, None)
            attempt = execute_stage(
                stage,
                notebook,
                run.parameters(stage),
                kernel=kernel,
                kernel_name=self.kernel_name,
                cwd=stage.notebook.parent,
                transient_errors=self.transient,
                timing_file=self._timing_file(stage),
                shutdown=lambda used: self._reaper.submit(used.shutdown),
            )  # off the critical path
        finally:
            with self._kernels_lock:
                self._kernels.discard(kernel)
        # The stage's wall time as the run sees it: kernel wait (0 when it was started and warmed
        # ahead) and execution; its HTML report (rendered while downstream stages start) is added
        # when it is written (`Attempted.rendered`).
        attempt.duration_s += waited
        attempt.started_at = clock
        attempt.ended_at = _now()
        parts = {"kernel": round(waited, 3), **attempt.breakdown}
        cpu = parts.pop("cpu", None)
        parts["other"] = round(max(attempt.duration_s - sum(parts.values()), 0.0), 3)
        if cpu is not None:
            parts["cpu"] = cpu  # not a part of the wall time: the CPU seconds the cells used
        attempt.breakdown = parts
        attempt.warm_up = {
            "seconds": round(kernel.warm_s, 3),
            "modules": kernel.warmed,
            "ahead": prestarted is not None,
        }
        rendering = None
        if notebook.is_file() and not run.lost.is_set():
            rendering = self._renderer.submit(_render, notebook, self.plan.run_dir / "reports" / f"{stage.name}.html")
        return Attempted(attempt, notebook, None, None, rendering)

    def _fork_server(self, kernel_name: str) -> Any:
        """The run's kernel fork server (runner.execute); None when kernels cannot be forked (another
        kernelspec, no fork on this platform) or are cold.

        Before its first fork it imports the kernel machinery and what the first stages import
        (those with no upstream in the run: the first kernel waits for this); then, between
        requests, what two or more stages import (earlier runs taught the lazy imports,
        `_learned_imports`). What one stage alone needs (train's MLflow) its own kernel imports
        while warming: in the server, one long import would hold up every fork behind it.
        """
        from runner.execute import KERNEL_MODULES, ForkServer, kernel_environment, shared_imports

        if cold_kernels():
            return None
        lists = {state.name: self._warm_up(state.stage).modules for state in self.ordered}
        first = [
            *KERNEL_MODULES,
            *(
                name
                for state in self.ordered
                if not any(u in self.states for u in state.stage.upstream)
                for name in lists[state.name]
            ),
        ]
        later = [name for name in shared_imports(list(lists.values())) if name not in first]
        try:
            return ForkServer.for_kernel(
                kernel_name,
                list(dict.fromkeys(first)),
                kernel_environment(self.kernel_threads),
                self.plan.request.root,
                later=later,
            )
        except OSError as exc:
            self.console.print(f"[yellow]![/] kernels start as new processes: {escape(str(exc))}")
            return None

    def _warm_up(self, stage: Stage) -> Any:
        """What a kernel for `stage` loads before it gets its parameters (runner.execute); None for a
        cold kernel (`BENTLEY_COLD_KERNELS=1`: nothing preloaded, no sampler, no fork server)."""
        from runner.execute import WarmUp, notebook_imports

        if cold_kernels():
            return None
        try:
            modules = notebook_imports(stage.notebook)
        except (OSError, ValueError):
            modules = ()  # an unreadable notebook fails in papermill, with its own message
        learned = self._learned_imports().get(stage.name, [])
        return WarmUp(modules=tuple(dict.fromkeys([*modules, *learned])), timing_file=self._timing_file(stage))

    def _learned_imports(self) -> dict[str, list[str]]:
        """Per stage, the modules its cells imported beyond its warm-up in earlier runs of this store
        (lazy imports inside library functions): the next warm-up imports them too."""
        if self._learned is None:
            self._learned = read_memo(self.run.outputs / STAGE_IMPORTS)
        return self._learned

    def _learn_imports(self, stage: Stage) -> None:
        """Main thread, after a stage succeeded: remember what its cells imported (runner.execute)."""
        try:
            imported = read_json(self._timing_file(stage)).get("imported", [])
        except (OSError, ValueError):
            return
        known = self._learned_imports()
        merged = list(dict.fromkeys([*known.get(stage.name, []), *map(str, imported)]))[:_MAX_LEARNED]
        if merged != known.get(stage.name, []):
            known[stage.name] = merged
            with contextlib.suppress(OSError):
                atomic_write_json(self.run.outputs / STAGE_IMPORTS, known)

    def _timing_file(self, stage: Stage) -> Path:
        return self.plan.run_dir / "stage_results" / f"{stage.name}.timing.json"

    def _prestart(self) -> None:
        """Start kernels for the stages next in line, highest priority first: a stage whose upstreams
        all run, are done (none failed), or have kernels started ahead themselves; at most
        `max_workers + AHEAD` of them unused at a time.
        """
        from runner.execute import start_kernel

        idle = sum(1 for state in self.states.values() if state.kernel is not None and state.status == "pending")
        for state in self.ordered:
            if idle >= self.max_workers + self.AHEAD:
                return
            if state.status != "pending" or state.kernel is not None:
                continue
            ahead = [self.states[u] for u in state.stage.upstream if u in self.states]
            if all(u.status in ("running", *DONE) or u.kernel is not None for u in ahead):
                state.kernel = self._starter.submit(
                    start_kernel,
                    self.kernel_name,
                    state.stage.notebook.parent,
                    self._warm_up(state.stage),
                    self.kernel_threads,
                    self._forks,
                )
                idle += 1

    @staticmethod
    def _discard_kernel(state: StageState) -> None:
        """Shut down a kernel started ahead for a stage that will not execute after all."""
        pending, state.kernel = state.kernel, None
        if pending is not None:
            pending.add_done_callback(lambda f: f.exception() is None and f.result().shutdown())

    def kill_kernels(self) -> None:
        """Kill the kernels executing stages right now (any thread: a lost lease, a stop)."""
        with self._kernels_lock:
            for kernel in list(self._kernels):
                kernel.kill()


class Progress:
    """What running stages say while they work, on the terminal and in the log (main thread only).

    A stage writes lines with `StageContext.progress` to `stage_results/<stage>.progress`;
    the newest is printed when `EVERY_S` have passed since the stage's last line (fast stages
    print none), and a stage that said nothing for `QUIET_S` gets a line with its elapsed time
    and the cell it is at (from the kernel's sampler file, `runner.execute.cells_done`).
    `runner.progress: false` turns both off.
    """

    EVERY_S = 5.0
    QUIET_S = 30.0

    def __init__(self, console: Console, run_dir: Path, *, enabled: bool) -> None:
        self.console = console
        self.run_dir = run_dir
        self.enabled = enabled
        self.state: dict[str, dict[str, Any]] = {}

    def started(self, stage: Stage) -> None:
        now = time.monotonic()
        self.state[stage.name] = {"stage": stage, "since": now, "printed": now, "offset": 0, "latest": None}

    def finished(self, stage: Stage) -> None:
        self.state.pop(stage.name, None)

    def poll(self, running: Sequence[Stage]) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        for stage in running:
            state = self.state.get(stage.name)
            if state is None:
                continue
            self._read(stage, state)
            quiet = now - state["printed"]
            if state["latest"] and quiet >= self.EVERY_S:
                self._line(stage, state, now, escape(state["latest"]))
                state["latest"] = None
            elif quiet >= self.QUIET_S:
                self._line(stage, state, now, self._cell_text(stage))

    def _line(self, stage: Stage, state: dict[str, Any], now: float, text: str) -> None:
        self.console.print(f"[dim]·[/] {stage.name} {now - state['since']:.0f} s: {text}")
        state["printed"] = now

    def _read(self, stage: Stage, state: dict[str, Any]) -> None:
        from bentley.stage import progress_file

        try:
            with progress_file(self.run_dir, stage.name).open("rb") as handle:
                handle.seek(state["offset"])
                chunk = handle.read()
        except OSError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits for the next look
        state["offset"] += len(complete)
        lines = [line for line in complete.decode("utf-8", "replace").splitlines() if line.strip()]
        if lines:
            state["latest"] = lines[-1].partition("\t")[2] or lines[-1]

    def _cell_text(self, stage: Stage) -> str:
        from runner.execute import cells_done, code_cells

        done = cells_done(self.run_dir / "stage_results" / f"{stage.name}.timing.json")
        try:
            total = code_cells(stage.notebook)
        except (OSError, ValueError):
            return "running"
        return "running" if done is None else f"running cell {min(done + 1, total)} of {total}"


def _render(notebook: Path, report: Path) -> tuple[Path | None, str | None, float]:
    """A stage's HTML report: its path, or the error that stopped it, and the seconds it took."""
    from bentley import reporting

    clock = time.perf_counter()
    try:
        reporting.export_html(notebook, report)
    except Exception as exc:  # noqa: BLE001 - a broken report must not hide the stage outcome
        return None, str(exc), time.perf_counter() - clock
    return report, None, time.perf_counter() - clock


def cold_kernels() -> bool:
    """`BENTLEY_COLD_KERNELS=1`: every kernel a new process that imports nothing before its notebook,
    as before issue 19 (what the cold/warm comparison test runs; a way out should warming misbehave)."""
    return os.environ.get("BENTLEY_COLD_KERNELS", "") == "1"


def read_memo(path: Path) -> dict[str, list[str]]:
    """A small JSON memo the runner keeps in the store's `cache/` (empty when absent or unreadable)."""
    try:
        return dict(read_json(path)) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def _import_in_background(*modules: str) -> None:
    """Import modules on a daemon thread while the main thread goes on (a stage's worker that needs
    one first waits for that import instead of starting its own)."""
    import importlib

    def load() -> None:
        for name in modules:
            with contextlib.suppress(Exception):
                importlib.import_module(name)

    threading.Thread(target=load, name="preimport", daemon=True).start()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
