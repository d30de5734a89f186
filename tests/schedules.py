"""Schedule variations of a loaded config, for the scheduler, gate and Airflow export tests."""

from __future__ import annotations

from bentley.config import Config


def with_schedule(config: Config, **changes: object) -> Config:
    return config.model_copy(update={"schedule": config.schedule.model_copy(update=changes)})
