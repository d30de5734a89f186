"""MLflow tracking: the only code that talks to MLflow.

One parent run per pipeline run and one nested run per stage, written by the runner
(whose process is already warm) through `MlflowClient`, so no global "active run" state
leaks between stages. The train stage adds one nested run per candidate model and
registers each model as a version (`ModelStore`). The default store is SQLite under `<outputs>/mlflow/` with artifacts
beside it; MLFLOW_TRACKING_URI points everything at a shared server instead. `health` is the
read-only check `runner health` uses.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bentley.config import flatten
from bentley.models import registry

if TYPE_CHECKING:
    import pandas as pd

TRACKING_ENV = "MLFLOW_TRACKING_URI"
_MAX_PARAM_CHARS = 6000  # MLflow's limit on one param value
_PARAMS_PER_BATCH = 100

# MLflow's HTTP client waits 120 s per request and retries 7 times: a refused server took
# 254 s to fail and a silent one about 20 minutes per call. Bounded here (a silent server
# fails a call in about 35 s) unless the user set them. MLflow reads both at every request,
# and kernels the runner starts inherit them.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
# Read when mlflow is imported, so set before any import of it, a kernel's warm-up included
# (`_quiet_mlflow` says why).
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

#: What the train stage's kernel imports before the stage starts (runner.execute): MLflow's
#: client, sklearn flavour and SQL stores, and skops. A stage that only imports this module
#: for a helper pays for them in a kernel warmed ahead, off its critical path.
WARM_IMPORTS: tuple[str, ...] = (
    "mlflow",
    "mlflow.entities",
    "mlflow.exceptions",
    "mlflow.artifacts",
    "mlflow.models",
    "mlflow.sklearn",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "skops.io",
)


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


@dataclass(frozen=True)
class TrackingHealth:
    """What `health` found, shaped like `bentley.sources.base.Health` plus what a report shows.

    `ok`: the store answers. `store_exists` is False for a local store the first run has not
    created yet (not an error, but nothing to track into either). `uri` is display-safe.
    """

    component: str
    ok: bool
    detail: str
    uri: str
    store_exists: bool = True
    experiment_id: str | None = None


def health(uri: str, experiment: str, outputs: Path) -> TrackingHealth:
    """Does the tracking store at `uri` answer? Read-only: the check creates and migrates nothing.

    A local store (the default SQLite file under `<outputs>/mlflow/`, another SQLite file, or a
    file-store folder) that does not exist yet is reported as not created instead of being
    opened, because opening it through MLflow would create it. A tracking server is asked its
    own `/health` (no credentials sent, 5 s timeout); any other store answers an experiment
    lookup. Details never carry a password (`display_uri`).
    """
    shown = display_uri(uri)
    local = _local_store(uri)
    if local is not None:
        if not local.exists():
            where = "" if uri == tracking_uri(None, outputs) else "tracking.uri or MLFLOW_TRACKING_URI; "
            return TrackingHealth(
                "tracking",
                False,
                f"no tracking store yet at {shown} ({where}the first run creates it)",
                shown,
                store_exists=False,
            )
        if not os.access(local, os.R_OK):
            return TrackingHealth("tracking", False, f"{shown} is not readable", shown)
    if uri.startswith(("http://", "https://")):
        return _server_health(uri, shown)
    try:
        _quiet_mlflow()
        from mlflow import MlflowClient

        found = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
    except Exception as exc:  # noqa: BLE001 - any store error means the store does not answer
        return TrackingHealth("tracking", False, f"{shown}: {_error_text(exc, uri)}", shown)
    if found is None:
        return TrackingHealth("tracking", True, f"{shown} answers; experiment {experiment!r} not created yet", shown)
    return TrackingHealth(
        "tracking", True, f"{shown} answers; experiment {experiment!r}", shown, experiment_id=str(found.experiment_id)
    )


def _local_store(uri: str) -> Path | None:
    """The file or folder behind a local store URI; None for a server or a database server."""
    from urllib.parse import urlsplit
    from urllib.request import url2pathname

    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
    scheme = urlsplit(uri).scheme
    if scheme == "file":
        return Path(url2pathname(urlsplit(uri).path))
    if scheme == "" or len(scheme) == 1:  # a bare path (a single letter: a Windows drive)
        return Path(uri)
    return None


def _server_health(uri: str, shown: str) -> TrackingHealth:
    """A tracking server's own /health endpoint, asked without the URI's credentials."""
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    url = urlunsplit(parts._replace(netloc=netloc, path=parts.path.rstrip("/") + "/health", query="", fragment=""))
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status = response.status
    except (urllib.error.URLError, OSError) as exc:
        return TrackingHealth("tracking", False, f"{shown}: {_error_text(exc, uri)}", shown)
    if status != 200:
        return TrackingHealth("tracking", False, f"{shown}/health answered {status}", shown)
    return TrackingHealth("tracking", True, f"{shown} answers", shown)


def _error_text(exc: BaseException, uri: str) -> str:
    """`Type: first line`, with the URI's password masked should the message repeat it."""
    from urllib.parse import urlsplit

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    password = urlsplit(uri).password
    if password:
        text = text.replace(password, "***")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class PipelineTracker:
    """Creates the parent and nested MLflow runs of one pipeline run."""

    def __init__(self, uri: str, experiment: str, outputs: Path) -> None:
        self.uri = uri
        self.client, self.experiment_id = _connect(uri, experiment, outputs)
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
        _log_params(self.client, run_id, params)


@dataclass(frozen=True)
class RegisteredVersion:
    """One version of a registered model, as the train and optimize stages see it."""

    name: str
    version: str
    run_id: str | None
    source: str
    tags: dict[str, str]
    created: dt.datetime | None = None  # registration time (UTC)

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"


class ModelStore:
    """The registry side of MLflow: candidate runs with their models, versions, aliases, loads.

    A version is registered from a folder saved here and hashed before upload (the digest is
    the version's `sha256` tag); a load downloads the folder, checks the digest, and only then
    deserializes. Models are saved with MLflow's skops format; the non-default types a model
    needs (e.g. HistGradientBoosting's tree predictors) are trusted because this process just
    built that model, and the digest check stops anyone swapping the file afterwards.

    The saved folder is a function of the fitted model alone (`_save_sklearn_model`), so a
    run that refits the same model on the same data gets the same digest: that is how a resumed
    run recognises, and reuses, a version its crashed attempt registered.
    """

    def __init__(self, uri: str, experiment: str, outputs: Path) -> None:
        self.uri = uri
        self.client, self.experiment_id = _connect(uri, experiment, outputs)

    @classmethod
    def for_stage(cls, ctx: Any) -> ModelStore:
        """The store of a stage context whose params include the `tracking` section."""
        uri = tracking_uri(ctx.params.tracking.uri, ctx.outputs)
        return cls(uri, ctx.params.tracking.experiment, ctx.outputs)

    def log_candidate(
        self,
        *,
        model_name: str,
        candidate: str,
        model: Any,
        example: pd.DataFrame,
        params: Mapping[str, Any],
        fold_metrics: pd.DataFrame,
        holdout_metrics: Mapping[str, float],
        importances: pd.DataFrame,
        config: Mapping[str, Any],
        pipeline_run_id: str,
        version_tags: Mapping[str, str],
        parent_run_id: str | None,
    ) -> RegisteredVersion:
        """One MLflow run per trained candidate, its model registered as a new version.

        Idempotent per (pipeline run, candidate, artifact digest): when this pipeline run
        already registered this candidate's identical model (an attempt that crashed or failed
        after registering), that version is returned with its tags reset to these, instead of
        taking a new version number (MLflow never reuses one, even after a delete).
        """
        from mlflow.entities import Metric

        with tempfile.TemporaryDirectory(prefix="bentley-model-") as tmp:
            folder = Path(tmp)
            model_dir = folder / "model"
            _save_sklearn_model(model, model_dir, example)
            digest = registry.directory_digest(model_dir)
            tags = {
                registry.SHA256_TAG: digest,
                registry.CANDIDATE_TAG: candidate,
                registry.RUN_ID_TAG: pipeline_run_id,
                **version_tags,
            }
            done = self._registered(model_name, tags)
            if done is not None:
                return self._reset(done, tags)
            run_tags = {"stage": "train", "candidate": candidate, "run_id": pipeline_run_id}
            if parent_run_id:
                run_tags["mlflow.parentRunId"] = parent_run_id
            run = self.client.create_run(self.experiment_id, run_name=f"train:{candidate}", tags=run_tags)
            run_id = run.info.run_id
            try:
                _log_params(self.client, run_id, params)
                now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
                metrics = [
                    Metric(key=f"cv_{name}", value=float(value), timestamp=now, step=step)
                    for step, row in enumerate(fold_metrics.to_dict("records"), start=1)
                    for name, value in row.items()
                    if _is_number(value)
                ]
                metrics += [
                    Metric(key=f"holdout_{k}", value=float(v), timestamp=now, step=0)
                    for k, v in holdout_metrics.items()
                    if _is_number(v)
                ]
                metrics += [
                    Metric(key=f"importance/{f}", value=float(v), timestamp=now, step=0)
                    for f, v in zip(importances["feature"], importances["importance"], strict=True)
                    if _is_number(v)
                ]
                for start in range(0, len(metrics), 500):
                    self.client.log_batch(run_id, metrics=metrics[start : start + 500])
                fold_metrics.to_csv(folder / "fold_metrics.csv", index=False)
                importances.to_csv(folder / "feature_importances.csv", index=False)
                (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
                for name in ("fold_metrics.csv", "feature_importances.csv", "config.json"):
                    self.client.log_artifact(run_id, str(folder / name))
                self.client.log_artifacts(run_id, str(model_dir), "model")
                self._ensure_registered(model_name)
                version = self.client.create_model_version(
                    model_name,
                    source=f"runs:/{run_id}/model",
                    run_id=run_id,
                    tags=tags,
                )
            except BaseException:
                self.client.set_terminated(run_id, status="FAILED")
                raise
        self.client.set_terminated(run_id, status="FINISHED")
        return self._version(version)

    def versions(self, model_name: str) -> list[RegisteredVersion]:
        """Every (undeleted) version of a registered model, oldest first; [] if it does not exist."""
        found, token = [], None
        while True:
            page = self.client.search_model_versions(f"name = '{model_name}'", page_token=token)
            found += [self._entity(v) for v in page]
            token = page.token
            if not token:
                return sorted(found, key=lambda v: int(v.version))

    def aliases(self, model_name: str) -> dict[str, str]:
        """Alias -> version number of a registered model ({} if it does not exist)."""
        from mlflow.exceptions import MlflowException

        try:
            return {
                alias: str(number) for alias, number in self.client.get_registered_model(model_name).aliases.items()
            }
        except MlflowException:
            return {}

    def alias_version(self, model_name: str, alias: str) -> RegisteredVersion | None:
        """The version an alias points at, or None (no such model or alias yet)."""
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.get_model_version_by_alias(model_name, alias)
        except MlflowException:
            return None
        return self._version(found)

    def set_alias(self, model_name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(model_name, alias, version)

    def delete_alias(self, model_name: str, alias: str) -> None:
        self.client.delete_registered_model_alias(model_name, alias)

    def tag_version(self, target: RegisteredVersion, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(target.name, target.version, key, str(value))

    def load(self, target: RegisteredVersion) -> Any:
        """Download, verify the SHA-256 recorded at registration, then deserialize."""
        import mlflow.artifacts
        import mlflow.sklearn

        with tempfile.TemporaryDirectory(prefix="bentley-load-") as tmp:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=target.source,
                    dst_path=tmp,
                    tracking_uri=self.uri,
                )
            )
            registry.verify_digest(local, target.tags.get(registry.SHA256_TAG), target.label)
            return mlflow.sklearn.load_model(str(local))

    def _ensure_registered(self, model_name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(model_name)
        except MlflowException:
            try:
                self.client.create_registered_model(
                    model_name, description="Direction of the forward return (bentley train stage)"
                )
            except MlflowException:
                self.client.get_registered_model(model_name)  # created concurrently: fine if it exists now

    def _registered(self, model_name: str, tags: Mapping[str, str]) -> RegisteredVersion | None:
        """This pipeline run's complete version of this candidate with this digest, if any."""
        keys = (registry.RUN_ID_TAG, registry.CANDIDATE_TAG, registry.SHA256_TAG)
        same = [v for v in self.versions(model_name) if all(v.tags.get(k) == tags[k] for k in keys)]
        return same[0] if same else None

    def _reset(self, target: RegisteredVersion, tags: Mapping[str, str]) -> RegisteredVersion:
        """A reused version with exactly a fresh registration's tags (no `crashed`, no old decision).

        Its candidate run, left running if the attempt was killed, is closed as finished.
        """
        for key in set(target.tags) - set(tags):
            self.client.delete_model_version_tag(target.name, target.version, key)
        self.tag_version(target, {k: v for k, v in tags.items() if target.tags.get(k) != v})
        if target.run_id and self.client.get_run(target.run_id).info.status == "RUNNING":
            self.client.set_terminated(target.run_id, status="FINISHED")
        return self._version(target)

    def _version(self, found: Any) -> RegisteredVersion:
        """A fresh read of a version (tags included), whatever object MLflow returned."""
        return self._entity(self.client.get_model_version(found.name, found.version))

    @staticmethod
    def _entity(found: Any) -> RegisteredVersion:
        created = (
            None
            if found.creation_timestamp is None
            else dt.datetime.fromtimestamp(found.creation_timestamp / 1000, dt.UTC)
        )
        return RegisteredVersion(
            name=found.name,
            version=str(found.version),
            run_id=found.run_id,
            source=found.source,
            tags=dict(found.tags),
            created=created,
        )


def _save_sklearn_model(model: Any, folder: Path, example: pd.DataFrame) -> None:
    """MLflow's sklearn flavour in skops format, with a signature and an input example."""
    import mlflow.sklearn
    import sklearn
    import skops
    import skops.io
    from mlflow.models import infer_signature

    example = example.head(5)
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    # MLflow's input-example serializer trips pandas deprecations that are MLflow's to fix: they are
    # filtered for MLflow's modules once (`_quiet_mlflow`), not around this call, because the train
    # stage saves models on a thread of its own and `warnings.catch_warnings` is not thread-safe.
    mlflow.sklearn.save_model(
        model,
        str(folder),
        signature=infer_signature(example, model.predict(example)),
        input_example=example,
        pip_requirements=[f"scikit-learn=={sklearn.__version__}", f"skops=={skops.__version__}"],
        skops_trusted_types=trusted,
    )
    _make_reproducible(folder, model, example, trusted)


def _make_reproducible(folder: Path, model: Any, example: pd.DataFrame, trusted: list[str]) -> None:
    """Rewrite the saved folder so the same fitted model always gives the same bytes.

    Three things differ between two saves of one model: skops names every node and array file
    by `id(obj)`, a memory address; its zip entries carry the write time; and `MLmodel` holds
    a random `model_uuid` and the save time. The ids are renumbered in order of first
    appearance in the schema (which nodes share an id is kept: that is all skops reads them
    for), entries get the zip epoch (1980-01-01, the reproducible-builds convention), the
    uuid is derived from the archive's digest and the time is the Unix epoch (the version's
    registration time is in the registry). The rewritten archive is loaded and must predict
    exactly as the model does, or the save fails.
    """
    import hashlib
    import io
    import uuid
    import zipfile

    import numpy as np
    import skops.io
    from mlflow.models import Model

    archive_path = folder / "model.skops"
    with zipfile.ZipFile(archive_path) as archive:
        schema = json.loads(archive.read("schema.json"))
        files = {info.filename: (archive.read(info), info.compress_type) for info in archive.infolist()}
    ids: dict[int, int] = {}
    renamed: dict[str, str] = {}

    def renumber(node: Any) -> Any:
        if isinstance(node, list):
            return [renumber(item) for item in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "__id__" and isinstance(value, int):
                out[key] = ids.setdefault(value, len(ids))
            elif key == "file" and isinstance(value, str) and value in files:
                stem, dot, suffix = value.partition(".")
                renamed[value] = f"{ids.setdefault(int(stem), len(ids))}{dot}{suffix}" if stem.isdigit() else value
                out[key] = renamed[value]
            else:
                out[key] = renumber(value)
        return out

    canonical_schema = json.dumps(renumber(schema), separators=(",", ":")).encode()  # compact: C-encoded, 10x faster
    if set(files) - {"schema.json"} != set(renamed):
        raise RuntimeError(f"{archive_path.name}: the skops schema does not reference every stored array")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for old, new in sorted(renamed.items(), key=lambda item: item[1]):
            archive.writestr(_zip_entry(new, files[old][1]), files[old][0])
        archive.writestr(_zip_entry("schema.json", files["schema.json"][1]), canonical_schema)
    canonical = buffer.getvalue()
    reloaded = skops.io.loads(canonical, trusted=trusted)
    if not np.array_equal(reloaded.predict_proba(example), model.predict_proba(example)):
        raise RuntimeError(f"{archive_path.name}: the renumbered archive does not predict like the model")
    size_change = len(canonical) - archive_path.stat().st_size
    archive_path.write_bytes(canonical)

    mlmodel = Model.load(str(folder / "MLmodel"))
    mlmodel.model_uuid = uuid.UUID(bytes=hashlib.sha256(canonical).digest()[:16]).hex
    mlmodel.utc_time_created = "1970-01-01 00:00:00.000000"
    if mlmodel.model_size_bytes is not None:
        mlmodel.model_size_bytes += size_change
    mlmodel.save(str(folder / "MLmodel"))


def _zip_entry(name: str, compress_type: int) -> Any:
    import zipfile

    entry = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    entry.compress_type = compress_type
    entry.external_attr = 0o644 << 16
    return entry


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _log_params(client: Any, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    flat = flatten(params)
    items = [Param(k, _param_text(v)) for k, v in sorted(flat.items())]
    for start in range(0, len(items), _PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[start : start + _PARAMS_PER_BATCH])


def _quiet_mlflow() -> None:
    """MLflow configures its loggers on import; its store-migration chatter is not for users.

    Call before importing mlflow: its artifact module imports tqdm.auto, which warns in a
    kernel without ipywidgets, and a progress bar per download has no place in a report.
    MLflow's usage telemetry is off unless the user turns it on: a research pipeline does not
    report home, and offline its one-second request and exit wait slow every process.
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    warnings.filterwarnings("ignore", message="IProgress not found", module="tqdm")
    for category in (FutureWarning, DeprecationWarning):  # pandas deprecations MLflow's code trips
        warnings.filterwarnings("ignore", category=category, module=r"mlflow(\.|$)")
    # Saving a model, MLflow inspects its own `Any` type hints and warns that it cannot validate
    # them: advice to MLflow's authors, not to a reader of the train report.
    warnings.filterwarnings(
        "ignore", message=r".*Any type hint is inferred as AnyType", category=UserWarning, module=r"mlflow(\.|$)"
    )
    import mlflow  # noqa: F401 - imported here so the logger levels below outlast its own setup

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _connect(uri: str, experiment: str, outputs: Path) -> tuple[Any, str]:
    """A quiet MlflowClient for `uri` and the experiment's id (a SQLite store's folder is created)."""
    _quiet_mlflow()
    from mlflow import MlflowClient

    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
        database.parent.mkdir(parents=True, exist_ok=True)
        _store_from_template(database)
    client = MlflowClient(tracking_uri=uri)
    return client, _experiment_id(client, uri, experiment, outputs)


def _store_from_template(database: Path) -> None:
    """A new SQLite store starts as a copy of an empty, migrated one (issue 19).

    Opening a new SQLite store runs MLflow's sixty-odd schema migrations: 2-3 CPU seconds at the
    start of every run into a fresh outputs folder. The first time, a store is created in a
    temporary folder as MLflow would create any, and kept as
    `$XDG_CACHE_HOME/bentley/mlflow-<version>-empty.db` (`~/.cache` by default); a new store is a
    copy of it, with the Default experiment's artifact location set as MLflow would set it
    here. The copy is linked into place only if no store appeared meanwhile. Any failure leaves
    the store to MLflow, as before.
    """
    if database.exists():
        return
    import sqlite3

    temporary = database.with_name(f".{database.name}.{os.getpid()}.tmp")
    try:
        import mlflow

        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bentley"
        template = cache / f"mlflow-{mlflow.__version__}-empty.db"
        if not template.is_file():
            _build_store_template(template)
        _copy_sqlite(template, temporary)
        with contextlib.closing(sqlite3.connect(temporary)) as connection, connection:
            connection.execute(
                "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                (str(Path.cwd() / "mlruns" / "0"),),
            )
        with contextlib.suppress(FileExistsError):
            os.link(temporary, database)
    except Exception:  # noqa: BLE001 - an optimization: MLflow creates the store itself
        return
    finally:
        temporary.unlink(missing_ok=True)


def _build_store_template(template: Path) -> None:
    from mlflow import MlflowClient

    with tempfile.TemporaryDirectory(prefix="bentley-mlflow-") as folder:
        built = Path(folder) / "empty.db"
        MlflowClient(tracking_uri=f"sqlite:///{built}").search_experiments()  # creates and migrates it
        template.parent.mkdir(parents=True, exist_ok=True)
        partial = template.with_name(f".{template.name}.{os.getpid()}.tmp")
        _copy_sqlite(built, partial)
        os.replace(partial, template)


def _copy_sqlite(source: Path, destination: Path) -> None:
    """A consistent copy of a SQLite database (the backup API, not a file copy)."""
    import sqlite3

    with (
        contextlib.closing(sqlite3.connect(source)) as reader,
        contextlib.closing(sqlite3.connect(destination)) as writer,
    ):
        reader.backup(writer)


def _experiment_id(client: Any, uri: str, experiment: str, outputs: Path) -> str:
    """The experiment's id, created on first use; the local store keeps artifacts under outputs."""
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:///") and uri == tracking_uri(None, outputs):
        artifact_location = (Path(outputs) / "mlflow" / "artifacts").resolve().as_uri()
    try:
        return client.create_experiment(experiment, artifact_location=artifact_location)
    except Exception:  # another process created it between the lookup and here
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise
        return found.experiment_id


def _param_text(value: Any) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= _MAX_PARAM_CHARS else text[: _MAX_PARAM_CHARS - 3] + "..."


def _mlflow_status(status: str) -> str:
    return {"success": "FINISHED", "failed": "FAILED", "skipped": "KILLED"}.get(status, "FINISHED")
