"""`make bench`: the speed and memory targets of the spine, measured, written as JSON.

(a) Orchestration: the default pipeline end to end into fresh outputs folders, sequential
    (before) and with parallel stages and kernels started ahead (after); per-stage overhead
    = wall time minus time inside cells; and a no-change rerun (see bench/runner.py).
(b) Features: 500 tickers x 10 years of sample prices through `compute_features`, each
    repetition in a fresh process so peak RSS is that computation's own.
(c) Warehouse: upsert the same 1.26 M price rows into SQLite, MariaDB and PostgreSQL (private
    servers), then a second, fully overlapping load (see bench/upsert.py).
(d) Risk: every risk metric for 500 tickers x 10 years (see bench/risk.py).
(e) Train: the train stage's work (dataset, CV of every candidate, importances, control,
    registration) on 500 tickers x 10 years of features (see bench/train.py).
(f) Backtest: 500 tickers x 10 years through run_backtest, a 100-configuration sweep, and the
    same strategy in vectorbt where it is installed (see bench/backtest.py).
(g) Speed (issue 19, bench/speed.py): the default pipeline into a fresh folder (<= 45 s), forced
    (<= 30 s) and unchanged (<= 1 s), train's share of the fresh run (<= 8 s), the ci profile
    whole (<= 20 s); wall and CPU seconds, medians.
(h) Watch (issue 20, bench/watch.py): one session of 500 tickers x 390 one-minute bars replayed
    (<= 20 s, <= 1 GB peak), per-batch processing (median <= 50 ms), and a loss-limit breach to
    its alert row and webhook POST (<= 1 s).
(i) Large (issue 19, bench/large.py): the `large` profile (500 tickers x 10 years) through every
    stage into a fresh folder (<= 5 min, <= 4 GB peak PSS of the runner and its kernels), with
    each stage's time, breakdown and kernel peak RSS.

Targets (2-core machine): (a) <= 60 s per pipeline, <= 2 s for a no-change rerun; (b) <= 20 s and <= 2 GB peak RSS;
(c) >= 200k rows/s into SQLite; (d) every risk metric for 500 tickers x 10 years in <= 5 s,
vectorized (bench/risk.py; GARCH fits and the empyrical-loop ratio reported beside it);
(e) <= 120 s, peak memory reported; (f) <= 5 s per backtest, <= 60 s per 100-configuration sweep.
Figures are medians over --repeats runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.backtest import bench_backtest
from bench.large import bench_large
from bench.risk import bench_risk
from bench.runner import bench_runner
from bench.sample import END, machine, sample_prices
from bench.speed import ROOT as SPEED_ROOT
from bench.speed import bench as bench_speed
from bench.train import bench_train
from bench.upsert import bench_upserts
from bench.watch import bench_watch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
LOGICAL_DATE = END.isoformat()

FEATURES_CHILD = """
import json, resource, sys, time
import pandas as pd
from bentley.config import load_config
from bentley.features import compute_features
prices = pd.read_parquet(sys.argv[1])
settings = load_config().features
start = time.perf_counter()
out = compute_features(prices, settings)
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "rows": len(out), "columns": out.shape[1],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def bench_features(repeats: int, tickers: int, years: int) -> dict:
    prices = sample_prices(tickers, years)
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "prices.parquet"
        prices.to_parquet(path)
        for _ in range(repeats):
            child = subprocess.run(
                [sys.executable, "-c", FEATURES_CHILD, str(path)],
                check=True,
                capture_output=True,
                text=True,
                env=_env(),
            )
            runs.append(json.loads(child.stdout.strip().splitlines()[-1]))
    seconds = statistics.median(r["seconds"] for r in runs)
    peak = statistics.median(r["peak_rss_mb"] for r in runs)
    return {
        "tickers": tickers,
        "years": years,
        "input_rows": len(prices),
        "repeats": repeats,
        "seconds_median": seconds,
        "seconds_all": [r["seconds"] for r in runs],
        "peak_rss_mb_median": peak,
        "output_columns": runs[0]["columns"],
        "target_seconds": 20,
        "target_peak_rss_mb": 2048,
        "meets_target": seconds <= 20 and peak <= 2048,
    }


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("BENTLEY_", "MLFLOW_"))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tickers", type=int, default=500)
    parser.add_argument("--years", type=int, default=10)
    args = parser.parse_args()
    results = {
        "machine": machine(),
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "pipeline": bench_runner(args.repeats),
        "features": bench_features(args.repeats, args.tickers, args.years),
        "upsert": bench_upserts(args.tickers, args.years, args.repeats),
        "risk": bench_risk(args.tickers, args.years, args.repeats),
        "train": bench_train(args.tickers, args.years, args.repeats),
        "backtest": bench_backtest(args.tickers, args.years, args.repeats),
        "speed": bench_speed([SPEED_ROOT], args.repeats)[str(SPEED_ROOT)],
        "watch": bench_watch(args.tickers, 390, args.repeats),
        "large": bench_large(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = results["measured_at"].replace(":", "").replace("-", "")
    for name in (f"bench-{stamp}.json", "latest.json"):
        (RESULTS / name).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    met = (
        results["pipeline"]["meets_target"],
        results["pipeline"]["no_change_rerun"]["meets_target"],
        results["features"]["meets_target"],
        results["upsert"]["sqlite_meets_target"],
        results["risk"]["vectorized_meets_target"],
        results["train"]["meets_target"],
        results["backtest"]["backtest_meets_target"],
        results["backtest"]["sweep_meets_target"],
        *(
            results["speed"][name]["meets_target"]
            for name in ("default_fresh", "default_forced", "default_no_change", "train_default", "ci_pipeline")
        ),
        *(results["watch"][name]["meets_target"] for name in ("replay", "batch", "alert_latency")),
        results["large"]["meets_target"],
    )
    return 0 if all(met) else 1


if __name__ == "__main__":
    sys.exit(main())
