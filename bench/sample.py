"""What every benchmark measures on: the sample source's prices, and the machine it ran on."""

from __future__ import annotations

import datetime as dt
import os
import platform

import numpy as np
import pandas as pd

from bentley.sources.base import FetchRequest
from bentley.sources.sample import SampleMarketSource

#: The last session of every benchmark's data: fixed, so figures compare across runs.
END = dt.date(2026, 11, 27)


def sample_prices(tickers: int = 500, years: int = 10, end: dt.date = END) -> pd.DataFrame:
    """`tickers` sample names plus the benchmark over the `years` ending `end`, with `source`."""
    source = SampleMarketSource(seed=42, n_tickers=tickers, epoch=dt.date(2000, 1, 3), benchmark="BBIX")
    start = end.replace(year=end.year - years) + dt.timedelta(days=1)
    frame = source.fetch("prices", FetchRequest(start, end, tuple(source.available_tickers())))
    frame["source"] = source.name
    return frame


def machine() -> dict[str, object]:
    """Where a figure was measured: it means little without the cores and library versions."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "pandas": pd.__version__,
        "numpy": np.__version__,
        "timing": "median of repeats",
    }
