"""`python -m bench.runner`: what the runner costs, before and after parallel stages, and a
no-change rerun.

* `sequential` (before): `runner.max_workers=1`, kernels started when their stage starts;
  `parallel` (after): the defaults (max_workers = cores, next kernels started ahead).
  Each is the default profile into a fresh outputs folder, `--repeats` times; per stage,
  overhead = the stage's wall time as the run sees it (kernel wait included) minus the time
  inside its cells.
* `no_change_rerun`: after a full run, `python -m runner run` again with nothing changed, as
  a new process each time (imports, params, DAG, cache checks, records): target <= 2 s.
  `make pipeline` adds make's own start-up; it is reported beside it.
JSON goes to stdout; figures are medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.sample import END, machine

ROOT = Path(__file__).resolve().parents[1]
LOGICAL_DATE = END.isoformat()
TARGET_PIPELINE_S = 60.0
TARGET_NO_CHANGE_S = 2.0
MODES = {
    "sequential": ["--set", "runner.max_workers=1", "--set", "runner.prestart_kernels=false"],
    "parallel": [],
}


def run_once(outputs: Path, run_id: str, extra: list[str]) -> float:
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
        cwd=ROOT,
        check=True,
        capture_output=True,
        env=_env(),
    )
    return time.perf_counter() - start


def bench_mode(extra: list[str], repeats: int) -> dict:
    walls, overheads, cells = [], {}, {}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as folder:
            walls.append(run_once(Path(folder), "bench", extra))
            manifest = json.loads((Path(folder) / "runs" / "bench" / "manifest.json").read_text())
            for stage, entry in manifest["stages"].items():
                overheads.setdefault(stage, []).append(entry["overhead_s"])
                cells.setdefault(stage, []).append(entry["cell_time_s"])
    overhead = {s: statistics.median(v) for s, v in overheads.items()}
    return {
        "seconds_median": statistics.median(walls),
        "seconds_all": walls,
        "stage_overhead_seconds_median": overhead,
        "stage_overhead_seconds_total": sum(overhead.values()),
        "stage_cell_seconds_median": {s: statistics.median(v) for s, v in cells.items()},
    }


def bench_no_change(repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        outputs = Path(folder)
        run_once(outputs, "first", [])
        runner = [run_once(outputs, f"again-{i}", []) for i in range(repeats)]
        make = []
        for i in range(repeats):
            start = time.perf_counter()
            subprocess.run(
                [
                    "make",
                    "--no-print-directory",
                    "pipeline",
                    f"OUTPUTS={outputs}",
                    f"ARGS=--logical-date {LOGICAL_DATE} --run-id make-{i}",
                ],
                cwd=ROOT,
                check=True,
                capture_output=True,
                env=_env(),
            )
            make.append(time.perf_counter() - start)
        cached = json.loads((outputs / "runs" / f"again-{repeats - 1}" / "manifest.json").read_text())
    return {
        "runner_seconds_median": statistics.median(runner),
        "runner_seconds_all": runner,
        "make_pipeline_seconds_median": statistics.median(make),
        "stages_up_to_date": sum(s["status"] == "cached" for s in cached["stages"].values()),
        "stages": len(cached["stages"]),
        "target_seconds": TARGET_NO_CHANGE_S,
        "meets_target": statistics.median(runner) <= TARGET_NO_CHANGE_S,
    }


def bench_runner(repeats: int) -> dict:
    modes = {name: bench_mode(extra, repeats) for name, extra in MODES.items()}
    before, after = modes["sequential"], modes["parallel"]
    return {
        "repeats": repeats,
        **modes,
        "speedup": before["seconds_median"] / after["seconds_median"],
        "no_change_rerun": bench_no_change(max(repeats, 5)),
        "target_seconds": TARGET_PIPELINE_S,
        "meets_target": after["seconds_median"] <= TARGET_PIPELINE_S,
    }


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("BENTLEY_", "MLFLOW_"))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = {"machine": machine(), "runner": bench_runner(args.repeats)}
    print(json.dumps(results, indent=2))
    met = results["runner"]["meets_target"] and results["runner"]["no_change_rerun"]["meets_target"]
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
