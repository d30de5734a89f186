"""`python -m bench.speed`: the issue-19 speed targets, medians of `--repeats` runs.

* `default_fresh`: `runner run` (default profile) into a fresh outputs folder: the first run,
  which trains a champion (target <= 45 s);
* `default_forced`: `--force` in that same folder (every stage runs again; target <= 30 s);
* `default_no_change`: `runner run` again with nothing changed, a new process (target <= 1 s);
* `train_default`: the train stage's time in the fresh runs (cells, and per-part breakdown
  when the manifest has one; target <= 8 s);
* `ci_pipeline`: the ci profile, whole pipeline, fresh folder (target <= 20 s);
* per stage: median import, compute, chart and report seconds and overhead of the fresh runs.

`--root` measures another checkout of the project (a snapshot taken before a change), with
its `lib/` first on PYTHONPATH so its kernels import its own code; given several times, the
checkouts are measured in turns. Besides wall time, each run's CPU time (every process it
started, kernels included) is recorded: on a shared machine it moves far less than wall time.
Before timing, each checkout's `lib/` and `runner/` are compiled (`compileall`): a user's
second command finds the bytecode its first wrote, while a shell with PYTHONDONTWRITEBYTECODE
set would otherwise recompile every edited module in every process and measure that instead.
JSON goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.sample import END, machine

ROOT = Path(__file__).resolve().parents[1]
LOGICAL_DATE = END.isoformat()
TARGETS = {
    "default_fresh": 45.0,
    "default_forced": 30.0,
    "default_no_change": 1.0,
    "train_default": 8.0,
    "ci_pipeline": 20.0,
}


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENTLEY_", "MLFLOW_"))}
    if root != ROOT:
        env["PYTHONPATH"] = os.pathsep.join([str(root / "lib"), str(root)])
    return env


#: CPU seconds (user + system) of every process a run started, kernels included, per run.
CPU: list[float] = []


def run_once(root: Path, outputs: Path, run_id: str, *extra: str) -> float:
    """Wall seconds of one `runner run` in a new process; its CPU seconds go to `CPU`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "runner",
            "run",
            "--outputs",
            str(outputs),
            "--logical-date",
            LOGICAL_DATE,
            "--run-id",
            run_id,
            *extra,
        ],
        cwd=root,
        check=True,
        capture_output=True,
        env=_env(root),
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2))
    return wall


def _manifest(outputs: Path, run_id: str) -> dict:
    return json.loads((outputs / "runs" / run_id / "manifest.json").read_text())


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def bench_round(root: Path, index: int, skip_ci: bool, into: dict) -> None:
    """One repetition of every measurement for one checkout, appended to `into`."""

    def timed(key: str, *args: object) -> None:
        wall = run_once(*args)  # type: ignore[arg-type]
        into.setdefault(key, []).append(wall)
        into.setdefault(key + "_cpu", []).append(CPU[-1])

    with tempfile.TemporaryDirectory(prefix="bench-speed-") as folder:
        outputs = Path(folder)
        timed("default_fresh", root, outputs, f"fresh-{index}")
        manifest = _manifest(outputs, f"fresh-{index}")
        train = manifest["stages"]["train"]
        into.setdefault("train_cells", []).append(train.get("cell_time_s"))
        into.setdefault("train_wall", []).append(train.get("duration_s"))
        into.setdefault("train_cpu", []).append((train.get("breakdown") or {}).get("cpu"))
        for stage, entry in manifest["stages"].items():
            parts = into.setdefault("stages", {}).setdefault(stage, {})
            for key in ("duration_s", "cell_time_s", "overhead_s"):
                parts.setdefault(key, []).append(entry.get(key))
            for key, value in (entry.get("breakdown") or {}).items():
                parts.setdefault(key, []).append(value)
        timed("default_forced", root, outputs, f"forced-{index}", "--force")
        timed("default_no_change", root, outputs, f"again-{index}")
    if not skip_ci:
        with tempfile.TemporaryDirectory(prefix="bench-ci-") as folder:
            timed("ci_pipeline", root, Path(folder), f"ci-{index}", "--profile", "ci")


def summary(root: Path, into: dict) -> dict:
    result: dict = {"root": str(root), "load_average_at_end": os.getloadavg()}
    for name in ("default_fresh", "default_forced", "default_no_change", "ci_pipeline"):
        if name in into:
            result[name] = {
                "median_s": _median(into[name]),
                "all_s": [round(v, 2) for v in into[name]],
                "cpu_median_s": _median(into[name + "_cpu"]),
                "cpu_all_s": into[name + "_cpu"],
            }
    result["train_default"] = {
        "median_s": _median(into["train_cells"]),
        "wall_median_s": _median(into["train_wall"]),
        "cpu_median_s": _median(into["train_cpu"]),
        "all_cell_s": into["train_cells"],
    }
    result["stages_fresh_median_s"] = {
        s: {k: _median(v) for k, v in parts.items()} for s, parts in into.get("stages", {}).items()
    }
    for name, target in TARGETS.items():
        if result.get(name):
            result[name]["target_s"] = target
            result[name]["meets_target"] = result[name]["median_s"] is not None and result[name]["median_s"] <= target
    return result


def bench(roots: list[Path], repeats: int, skip_ci: bool = False) -> dict:
    """`repeats` rounds; each round measures every checkout in turn, so a busy spell of a shared
    machine weighs on all of them alike (the ratios are what to compare)."""
    collected: dict[Path, dict] = {root: {} for root in roots}
    for root in roots:  # as installed: every start after a user's first finds the bytecode written
        subprocess.run([sys.executable, "-m", "compileall", "-q", "lib", "runner"], cwd=root, check=True)
    for index in range(repeats):
        for root in roots:
            bench_round(root, index, skip_ci, collected[root])
    return {str(root): summary(root, collected[root]) for root in roots}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--root",
        type=Path,
        action="append",
        help="a project checkout to measure (repeatable: measured in turns; default: this one)",
    )
    parser.add_argument("--skip-ci", action="store_true")
    args = parser.parse_args()
    roots = [root.resolve() for root in (args.root or [ROOT])]
    results = {"machine": machine(), "runs": bench(roots, args.repeats, args.skip_ci)}
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
