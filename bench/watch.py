"""`python -m bench.watch`: the intraday watch's speed targets (issue 20), medians of `--repeats` runs.

* `replay`: one full session replayed as fast as it goes (`runner watch --day`'s path:
  `Watcher.run_session` on a `ReplayBarSource` at speed 0, into a fresh SQLite warehouse,
  report at the close included) for `tickers` x `bars` one-minute bars, every ticker held by the
  book and with a stored volatility, so every rule reads every ticker. Wall seconds (target
  <= 20 s; CPU seconds beside them, which move far less than wall time on a shared machine)
  and the peak RSS of the process that ran it (target <= 1 GB): each replay runs in a new
  process, whose `ru_maxrss` is its own.
* `batch`: per-batch processing time in those replays (the time between two batches leaving the
  source: stream update, rules, alert episodes, the batch's transaction), median over the
  session (target <= 50 ms), with the 95th percentile.
* `alert_latency`: a bar that breaches the daily loss limit arrives; seconds until the
  `watch_daily_loss` row is visible to another connection, and until a local HTTP server
  (127.0.0.1, an ephemeral port) has received the webhook POST (target <= 1 s).

JSON goes to stdout; `bench_watch()` returns the same dict.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from bench.sample import machine

ROOT = Path(__file__).resolve().parents[1]
DAY = dt.date(2024, 6, 3)
PREVIOUS = dt.date(2024, 5, 31)
OPEN_UTC = pd.Timestamp("2024-06-03 13:30", tz="UTC")
TARGETS = {"replay_s": 20.0, "peak_rss_mb": 1024.0, "batch_ms": 50.0, "alert_latency_s": 1.0}
DAILY_LOSS_LIMIT = 0.03
COSTS = SimpleNamespace(commission_bps=1.0, slippage_bps=5.0)
WEBHOOK = SimpleNamespace(timeout_s=5.0, max_attempts=1, backoff_s=0.0)


def recording(folder: Path, tickers: int, bars: int, seed: int = 7, crash_at: int | None = None) -> Path:
    """A Parquet file of seeded one-minute bars from the open; `crash_at`: every ticker falls 5% on that bar."""
    rng = np.random.default_rng(seed)
    names = [f"T{i:03d}" for i in range(tickers)]
    steps = rng.normal(0.0, 0.0008, (bars, tickers))
    if crash_at is not None:
        steps[crash_at] = np.log(0.95)
    closes = 100.0 * np.exp(np.cumsum(steps, axis=0))
    opens = np.vstack([np.full(tickers, 100.0), closes[:-1]])
    spread = np.abs(rng.normal(0.0, 0.0003, (bars, tickers))) * closes
    frame = pd.DataFrame(
        {
            "ts": np.repeat(OPEN_UTC + pd.to_timedelta(np.arange(bars), unit="min"), tickers),
            "ticker": np.tile(names, bars),
            "open": opens.ravel(),
            "high": np.maximum(opens, closes).ravel() + spread.ravel(),
            "low": np.minimum(opens, closes).ravel() - spread.ravel(),
            "close": closes.ravel(),
            "volume": 1000.0,
        }
    )
    path = folder / "bars.parquet"
    frame.to_parquet(path, index=False)
    return path


def seed_store(path: Path, tickers: int) -> Any:
    """A SQLite warehouse whose book held 100 shares of every ticker at 100 on the previous close, and
    a stored annual volatility per ticker (so the vol-move rule reads them all)."""
    from bentley.warehouse import Warehouse

    store = Warehouse(f"sqlite:///{path}")
    names = [f"T{i:03d}" for i in range(tickers)]
    equity = 100.0 * 100.0 * tickers + 100_000.0
    store.upsert(
        "positions",
        pd.DataFrame(
            {
                "as_of": pd.Timestamp(PREVIOUS),
                "portfolio": "paper",
                "ticker": names,
                "quantity": 100.0,
                "price": 100.0,
                "market_value": 10_000.0,
                "weight": 10_000.0 / equity,
            }
        ),
    )
    store.upsert(
        "portfolio_values",
        pd.DataFrame(
            [
                {
                    "portfolio": "paper",
                    "date": pd.Timestamp(PREVIOUS),
                    "cash": 100_000.0,
                    "positions_value": equity - 100_000.0,
                    "equity": equity,
                    "daily_return": 0.0,
                    "costs": 0.0,
                    "run_id": "bench",
                }
            ]
        ),
    )
    store.upsert(
        "risk_metrics",
        pd.DataFrame(
            {
                "run_id": "bench",
                "scope": names,
                "metric": "annual_volatility",
                "value": 0.25,
                "window_start": pd.Timestamp("2023-05-31"),
                "window_end": pd.Timestamp(PREVIOUS),
            }
        ),
    )
    return store


class TimedSource:
    """A replay source that notes when each batch leaves it (the gaps are the watch's batch times)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.name = inner, inner.name
        self.yielded: list[float] = []

    def session_bars(self, day: dt.date, after: pd.Timestamp | None = None) -> pd.DataFrame:
        return self.inner.session_bars(day, after)

    def batches(self, day: dt.date, after: pd.Timestamp | None = None) -> Iterator[pd.DataFrame]:
        for batch in self.inner.batches(day, after):
            self.yielded.append(time.perf_counter())
            yield batch
        self.yielded.append(time.perf_counter())


def _watcher(store: Any, source: Any, outputs: Path | None, webhook_url: str | None = None) -> Any:
    from bentley.live.settings import watch_settings
    from runner.watch import Watcher

    return Watcher(
        store,
        watch_settings(overrides=["on_loss_limit=flatten", "heartbeat_s=5"], root=ROOT),
        portfolio="paper",
        daily_loss_limit=DAILY_LOSS_LIMIT,
        costs=COSTS,
        source=source,
        tickers=[],
        calendar="XNYS",
        timezone="America/New_York",
        renotify_minutes=240,
        webhook=WEBHOOK,
        webhook_url=webhook_url,
        say=lambda _line: None,
        outputs=outputs,
    )


def replay_once(folder: Path, tickers: int) -> dict[str, Any]:
    """One replay of `folder/bars.parquet` into a fresh store (run in its own process by `bench_replay`)."""
    from bentley.live.bars import ReplayBarSource

    store = seed_store(folder / f"w-{time.time_ns()}.db", tickers)
    source = TimedSource(ReplayBarSource(folder / "bars.parquet", speed=0))
    start, cpu = time.perf_counter(), time.process_time()
    result = _watcher(store, source, folder / "outputs").run_session(DAY)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    store.dispose()
    gaps = np.diff(source.yielded) * 1000.0
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "batches": result.batches,
        "completed": result.completed,
        "batch_ms_median": float(np.median(gaps)),
        "batch_ms_p95": float(np.percentile(gaps, 95)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


def bench_replay(tickers: int, bars: int, repeats: int) -> dict[str, Any]:
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-watch-") as tmp:
        folder = Path(tmp)
        recording(folder, tickers, bars)
        for _ in range(repeats):
            child = subprocess.run(
                [sys.executable, "-m", "bench.watch", "--replay-once", str(folder), "--tickers", str(tickers)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            runs.append(json.loads(child.stdout))
    replay = statistics.median(r["seconds"] for r in runs)
    rss = statistics.median(r["peak_rss_mb"] for r in runs)
    batch = statistics.median(r["batch_ms_median"] for r in runs)
    return {
        "replay": {
            "tickers": tickers,
            "bars": bars,
            "batches": runs[0]["batches"],
            "seconds": round(replay, 3),
            "all_s": [round(r["seconds"], 3) for r in runs],
            "cpu_s": round(statistics.median(r["cpu_s"] for r in runs), 3),
            "all_cpu_s": [round(r["cpu_s"], 3) for r in runs],
            "meets_target": replay <= TARGETS["replay_s"],
            "peak_rss_mb": round(rss, 1),
            "all_peak_rss_mb": [round(r["peak_rss_mb"], 1) for r in runs],
            "rss_meets_target": rss <= TARGETS["peak_rss_mb"],
        },
        "batch": {
            "tickers": tickers,
            "median_ms": round(batch, 2),
            "all_median_ms": [round(r["batch_ms_median"], 2) for r in runs],
            "p95_ms": round(statistics.median(r["batch_ms_p95"] for r in runs), 2),
            "meets_target": batch <= TARGETS["batch_ms"],
        },
    }


class _Hook(BaseHTTPRequestHandler):
    received: list[float]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append(time.perf_counter())
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        return


def _loss_row_seen(database: Path, seen: list[float], stop: threading.Event) -> None:
    query = "SELECT count(*) FROM alerts WHERE rule = 'watch_daily_loss'"
    with sqlite3.connect(database, timeout=5) as conn:
        while not stop.is_set():
            if conn.execute(query).fetchone()[0]:
                seen.append(time.perf_counter())
                return
            time.sleep(0.002)


def alert_latency_once(folder: Path, tickers: int, breach_bar: int) -> dict[str, float]:
    """Seconds from the breaching bar leaving the source to the alert row (another connection) and the POST."""
    from bentley.live.bars import ReplayBarSource

    database = folder / f"latency-{time.time_ns()}.db"
    store = seed_store(database, tickers)
    handler = type("Hook", (_Hook,), {"received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    seen: list[float] = []
    stop = threading.Event()
    poller = threading.Thread(target=_loss_row_seen, args=(database, seen, stop), daemon=True)
    poller.start()
    try:
        source = TimedSource(ReplayBarSource(folder / "crash.parquet", speed=0))
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        _watcher(store, source, None, url).run_session(DAY, max_batches=breach_bar + 2)
        poller.join(timeout=5)
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        store.dispose()
    arrived = source.yielded[breach_bar]
    if not seen or not handler.received:
        raise RuntimeError("the breach raised no alert row or no webhook POST")
    return {"row_s": seen[0] - arrived, "post_s": handler.received[0] - arrived}


def bench_alert_latency(tickers: int, repeats: int, breach_bar: int = 20) -> dict[str, Any]:
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-watch-") as tmp:
        folder = Path(tmp)
        recording(folder, tickers, breach_bar + 5, crash_at=breach_bar).rename(folder / "crash.parquet")
        for _ in range(repeats):
            runs.append(alert_latency_once(folder, tickers, breach_bar))
    post = statistics.median(r["post_s"] for r in runs)
    return {
        "tickers": tickers,
        "row_s": round(statistics.median(r["row_s"] for r in runs), 4),
        "post_s": round(post, 4),
        "all_row_s": [round(r["row_s"], 4) for r in runs],
        "all_post_s": [round(r["post_s"], 4) for r in runs],
        "meets_target": post <= TARGETS["alert_latency_s"],
        "method": "breaching bar leaves the source -> watch_daily_loss row visible to another SQLite "
        "connection / POST received by a local HTTP server",
    }


def bench_watch(tickers: int = 500, bars: int = 390, repeats: int = 3) -> dict[str, Any]:
    """The issue-20 watch targets: {"benchmark", "targets", "replay": {...}, "batch": {...},
    "alert_latency": {...}, "machine"}; medians of `repeats` runs, each key with `meets_target`."""
    return {
        "benchmark": "intraday watch: session replay, per-batch time, breach-to-alert latency",
        "targets": TARGETS,
        "repeats": repeats,
        **bench_replay(tickers, bars, repeats),
        "alert_latency": bench_alert_latency(tickers, repeats),
        "machine": machine(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=500)
    parser.add_argument("--bars", type=int, default=390)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--replay-once", type=Path, help=argparse.SUPPRESS)  # the child of bench_replay
    args = parser.parse_args(argv)
    if args.replay_once is not None:
        print(json.dumps(replay_once(args.replay_once, args.tickers)))
        return 0
    print(json.dumps(bench_watch(args.tickers, args.bars, args.repeats), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
