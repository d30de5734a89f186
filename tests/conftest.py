"""Shared fixtures: the project root and a clean environment for runner subprocesses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["tests.servers"]  # private MariaDB/PostgreSQL servers for the warehouse tests

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def clean_env() -> dict[str, str]:
    """The environment minus anything that would point a run at shared services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENTLEY_", "MLFLOW_"))}
    env["MPLBACKEND"] = "Agg"
    return env
