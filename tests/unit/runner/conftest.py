"""The default params, shared by the schedule, gate and export tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from bentley.config import Config, load_config


@pytest.fixture(scope="module")
def config(root: Path) -> Config:
    return load_config(root=root)
