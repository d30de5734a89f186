"""The `watch:` params section (`runner watch`): the models live with every other section in
`bentley.config`; this module gives the live path one way to get them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from bentley.config import (
    LinkedRule,
    ThresholdRule,
    VarRule,
    Watch,
    WatchRules,
    WatchSource,
    load_config,
)

__all__ = ["LinkedRule", "ThresholdRule", "VarRule", "Watch", "WatchRules", "WatchSource", "watch_settings"]


def watch_settings(profile: str = "default", overrides: Iterable[str] = (), root: Path | None = None) -> Watch:
    """The profile's `watch` section with `key.path=value` overrides under `watch.` (values are
    YAML): `watch_settings(overrides=["on_loss_limit=flatten"])`."""
    return load_config(profile, [f"watch.{item.removeprefix('watch.')}" for item in overrides], root).watch
