"""`python -m bench.large`: the `large` profile (500 tickers x 10 years) through every stage.

One `runner run --profile large` into a fresh outputs folder, in a new process, while a
sampler reads the memory of the runner and every process under it (kernels, their children)
every second. Memory is the sum of proportional set sizes (PSS): a kernel forked from the
runner's fork server shares its imported pages, and summing RSS would count those pages once
per kernel. Where the time goes comes from the run's manifest: each stage's wall time and its
import/compute/chart/report breakdown, longest first.

Targets (issue 19): the whole run in <= 5 minutes and <= 4 GB peak memory, on 2 cores.
JSON goes to stdout; the exit status is 0 when both targets are met.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench.sample import END, machine

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 300.0
TARGET_PEAK_GB = 4.0


def _tree_pss(root: psutil.Process) -> int:
    """Bytes of proportional set size of `root` and its descendants (processes that vanish count 0)."""
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total


class _Sampler(threading.Thread):
    """Peak PSS of a process tree, sampled every `interval` seconds until `stop` is set."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.interval = interval
        self.stop = threading.Event()
        self.peak = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, _tree_pss(self.process))
            except psutil.NoSuchProcess:
                return
            self.stop.wait(self.interval)


def _stage_table(run: Path) -> list[dict]:
    """Each stage's wall and cell time, their breakdown, and its kernel's peak RSS (timing file)."""
    manifest = json.loads((run / "manifest.json").read_text())
    rows = []
    for name, stage in manifest["stages"].items():
        timing = run / "stage_results" / f"{name}.timing.json"
        peak = json.loads(timing.read_text()).get("peak_rss_mb") if timing.is_file() else None
        rows.append(
            {
                "stage": name,
                "status": stage.get("status"),
                "wall_s": stage.get("duration_s"),
                "cells_s": stage.get("cell_time_s"),
                "breakdown": stage.get("breakdown"),
                "kernel_peak_rss_mb": peak,
            }
        )
    return sorted(rows, key=lambda row: -(row["wall_s"] or 0.0))


def bench_large(profile: str = "large") -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENTLEY_", "MLFLOW_"))}
    with tempfile.TemporaryDirectory(prefix="bench-large-") as outputs:
        command = [
            sys.executable, "-m", "runner", "run", "--profile", profile,
            "--logical-date", END.isoformat(), "--outputs", outputs,
        ]  # fmt: skip
        start = time.perf_counter()
        child = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        sampler = _Sampler(child.pid)
        sampler.start()
        log, _ = child.communicate()
        seconds = time.perf_counter() - start
        sampler.stop.set()
        sampler.join()
        if child.returncode != 0:
            raise SystemExit(f"runner run --profile {profile} failed ({child.returncode}):\n{log[-4000:]}")
        stages = _stage_table(sorted(Path(outputs).glob("runs/*/manifest.json"))[-1].parent)
    peak_gb = sampler.peak / 1e9
    return {
        "machine": machine(),
        "profile": profile,
        "seconds": seconds,
        "peak_pss_gb": peak_gb,
        "stages_longest_first": stages,
        "target_seconds": TARGET_SECONDS,
        "target_peak_gb": TARGET_PEAK_GB,
        "meets_target": seconds <= TARGET_SECONDS and peak_gb <= TARGET_PEAK_GB,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="large")
    args = parser.parse_args()
    result = bench_large(args.profile)
    print(json.dumps(result, indent=2))
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
