"""A SQLite warehouse with a paper book, and crafted intraday bars, for the live-path tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from bentley.warehouse import Warehouse
from tests.live_book import DAY, OPEN_UTC, PREVIOUS, crafted_bars, seed_book, walk

__all__ = ["DAY", "OPEN_UTC", "PREVIOUS", "crafted_bars", "seed_book", "walk"]


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    store = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    yield store
    store.dispose()
