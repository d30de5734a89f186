"""MLflow tracking: the only code that talks to MLflow.

One parent run per pipeline run and one nested run per stage, written by the runner
(whose process is already warm) through `MlflowClient`, so no global "active run" state
leaks between stages. The default store is SQLite under `<outputs>/mlflow/` with artifacts
beside it; MLFLOW_TRACKING_URI points everything at a shared server instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bentley.config import flatten

TRACKING_ENV = "MLFLOW_TRACKING_URI"
_MAX_PARAM_CHARS = 6000  # MLflow's limit on one param value
_PARAMS_PER_BATCH = 100


def tracking_uri(params_uri: str | None, outputs: Path) -> str:
    """Environment first, then params, then the local SQLite store."""
    return os.environ.get(TRACKING_ENV) or params_uri or f"sqlite:///{Path(outputs) / 'mlflow' / 'mlflow.db'}"


def display_uri(uri: str) -> str:
    """The tracking URI safe to print: credentials in a URL are masked."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


class PipelineTracker:
    """Creates the parent and nested MLflow runs of one pipeline run."""

    def __init__(self, uri: str, experiment: str, outputs: Path) -> None:
        from mlflow import MlflowClient

        # MLflow configures its loggers on import; its store-migration chatter is not for users.
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)

        self.uri = uri
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            self.experiment_id = found.experiment_id
        else:
            artifact_location = None
            if uri.startswith("sqlite:///") and uri == tracking_uri(None, outputs):
                artifact_location = (Path(outputs) / "mlflow" / "artifacts").resolve().as_uri()
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifact_location)
        self.parent_run_id: str | None = None

    def start_pipeline(self, run_id: str, tags: Mapping[str, str], params: Mapping[str, Any]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=run_id, tags=dict(tags))
        self.parent_run_id = run.info.run_id
        self._log_params(run.info.run_id, params)
        return run.info.run_id

    def log_stage(
        self,
        stage: str,
        *,
        status: str,
        start_ms: int,
        end_ms: int,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        tags: Mapping[str, str],
        artifacts: list[Path],
    ) -> str:
        """One nested run for a finished stage, with its params, metrics and files."""
        from mlflow.entities import Metric

        run = self.client.create_run(
            self.experiment_id,
            run_name=stage,
            start_time=start_ms,
            tags={"mlflow.parentRunId": self.parent_run_id or "", "stage": stage, **tags},
        )
        run_id = run.info.run_id
        self._log_params(run_id, params)
        if metrics:
            batch = [Metric(key=k, value=float(v), timestamp=end_ms, step=0) for k, v in metrics.items()]
            self.client.log_batch(run_id, metrics=batch)
        for path in artifacts:
            if path.is_file():
                self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, status=_mlflow_status(status), end_time=end_ms)
        return run_id

    def finish_pipeline(self, status: str, metrics: Mapping[str, float], artifacts: list[Path]) -> None:
        if self.parent_run_id is None:
            return
        from mlflow.entities import Metric

        if metrics:
            batch = [Metric(key=k, value=float(v), timestamp=0, step=0) for k, v in metrics.items()]
            self.client.log_batch(self.parent_run_id, metrics=batch)
        for path in artifacts:
            if path.is_file():
                self.client.log_artifact(self.parent_run_id, str(path))
        self.client.set_terminated(self.parent_run_id, status=_mlflow_status(status))

    def _log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten(params)
        items = [Param(k, _param_text(v)) for k, v in sorted(flat.items())]
        for start in range(0, len(items), _PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[start : start + _PARAMS_PER_BATCH])


def _param_text(value: Any) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= _MAX_PARAM_CHARS else text[: _MAX_PARAM_CHARS - 3] + "..."


def _mlflow_status(status: str) -> str:
    return {"success": "FINISHED", "failed": "FAILED", "skipped": "KILLED"}.get(status, "FINISHED")
