"""`python -m bench.upsert`: warehouse upsert speed on SQLite, MariaDB and PostgreSQL.

Upserts 500 tickers x 10 years of sample prices (11 columns, ~1.26 M rows) into an empty
`prices` table (first load), then the same rows again (a fully overlapping load: every row
hits the conflict path), then reads the table back. SQLite lives in a temporary file; the
servers are private throwaway instances started with `tests/servers.py`. A dialect whose
server binaries are missing is reported as skipped with the reason. JSON goes to stdout.

Target: >= 200k rows/s into SQLite for the first load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `tests.servers` when run as a script
    sys.path.insert(0, str(ROOT))

from bench.sample import machine, sample_prices  # noqa: E402
from bentley.warehouse import Warehouse  # noqa: E402
from tests import servers  # noqa: E402

DIALECTS = ("sqlite", "mariadb", "postgresql")


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _measure(url: str, frame: pd.DataFrame, repeats: int, reset) -> dict[str, Any]:
    firsts, overlaps, reads = [], [], []
    for _ in range(repeats):
        reset()
        warehouse = Warehouse(url)
        try:
            firsts.append(_time(lambda: warehouse.upsert("prices", frame)))  # noqa: B023
            overlaps.append(_time(lambda: warehouse.upsert("prices", frame)))  # noqa: B023
            reads.append(_time(lambda: warehouse.read("prices")))  # noqa: B023
            stored = warehouse.count("prices")
        finally:
            warehouse.dispose()
        if stored != len(frame):
            raise AssertionError(f"{url}: {stored} rows stored, {len(frame)} upserted")
    first, overlap, read = statistics.median(firsts), statistics.median(overlaps), statistics.median(reads)
    return {
        "first_load_s": round(first, 3),
        "first_rows_per_s": round(len(frame) / first),
        "overlap_load_s": round(overlap, 3),
        "overlap_rows_per_s": round(len(frame) / overlap),
        "read_s": round(read, 3),
        "first_load_all_s": [round(x, 3) for x in firsts],
        "overlap_load_all_s": [round(x, 3) for x in overlaps],
    }


def bench_dialect(dialect: str, frame: pd.DataFrame, repeats: int = 1) -> dict[str, Any]:
    if dialect == "sqlite":
        with tempfile.TemporaryDirectory(prefix="bentley-bench-") as folder:
            path = Path(folder) / "warehouse.db"

            def reset() -> None:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)

            return {
                "version": __import__("sqlite3").sqlite_version,
                **_measure(f"sqlite:///{path}", frame, repeats, reset),
            }
    reason = servers.missing(dialect)
    if reason is not None:
        return {"skipped": str(reason)}
    started = time.perf_counter()
    with servers.start(dialect) as server:
        startup = time.perf_counter() - started
        result = _measure(server.url_with_password(), frame, repeats, lambda: servers.reset_database(server))
        return {"server_start_s": round(startup, 2), **result}


def bench_upserts(
    tickers: int = 500, years: int = 10, repeats: int = 1, dialects: tuple[str, ...] = DIALECTS
) -> dict[str, Any]:
    """Rows/s of a first and a fully overlapping load of sample prices, per dialect."""
    frame = sample_prices(tickers, years)
    results: dict[str, Any] = {}
    for dialect in dialects:
        try:
            results[dialect] = bench_dialect(dialect, frame, repeats)
        except servers.ServerUnavailable as exc:
            results[dialect] = {"skipped": str(exc)}
    return {
        "benchmark": "warehouse upsert of sample prices",
        "tickers": tickers,
        "years": years,
        "sessions": int(frame["date"].nunique()),
        "rows": len(frame),
        "columns": frame.shape[1],
        "repeats": repeats,
        "target_sqlite_rows_per_s": 200_000,
        "sqlite_meets_target": results.get("sqlite", {}).get("first_rows_per_s", 0) >= 200_000,
        "dialects": results,
        "machine": machine(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=500)
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--dialects", default=",".join(DIALECTS), help="comma separated: sqlite,mariadb,postgresql")
    args = parser.parse_args(argv)
    dialects = tuple(d.strip() for d in args.dialects.split(",") if d.strip())
    unknown = sorted(set(dialects) - set(DIALECTS))
    if unknown:
        parser.error(f"unknown dialect(s) {unknown}")
    print(json.dumps(bench_upserts(args.tickers, args.years, args.repeats, dialects), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
