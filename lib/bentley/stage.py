"""What a stage notebook knows about its run: the one object its cells pass around.

The runner injects `run_id`, `logical_date`, `outputs_dir`, `profile` and the params
sections the stage declares in `params/pipeline.yaml`. In JupyterLab the same notebook
runs on its own: every section left as `None` is read from `params/` for `profile`, the
logical date defaults to the latest NYSE session, and the run id marks the run as
interactive. Stages hand their metrics and artifact files back to the runner through a
small JSON file in the run folder, so kernels never import MLflow just to log a number.
A long stage says how far it is with `StageContext.progress`: one line appended to a file
the runner reads while the stage runs (never printed into the report).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeAlias

from bentley import calendar, config
from bentley.lake import Lake, atomic_write_bytes, atomic_write_json, atomic_write_text, read_json

RESULTS_DIR = "stage_results"

#: Modules this module imports lazily on the way of every stage (`StageContext.warehouse`):
#: the runner imports them into a stage's kernel before the stage starts (runner.execute).
WARM_IMPORTS: tuple[str, ...] = ("bentley.warehouse",)


class StageParams:
    """The params sections a stage declared in `params/pipeline.yaml`, as their typed models.

    `ctx.params.trade` is a `config.Trade`, so the library functions a notebook calls get
    (and mypy checks) the models, not plain data. A section the stage did not declare is not
    there: reading it raises an error that says where to declare it, instead of a silent
    default from another stage's view of the params.
    """

    workflow: config.Workflow
    sample: config.Sample
    universe: config.Universe
    sources: config.Sources
    history: config.History
    etl: config.Etl
    features: config.Features
    technical: config.Technical
    risk: config.Risk
    sentiment: config.Sentiment
    budget: config.Budget
    anomaly: config.Anomaly
    ml: config.Ml
    optimize: config.Optimize
    trade: config.Trade
    warehouse: config.Warehouse
    tracking: config.Tracking
    runner: config.Runner
    schedule: config.Schedule
    monitor: config.Monitor
    watch: config.Watch

    def __init__(self, **sections: config.Section) -> None:
        self.__dict__.update(sections)

    def __getattr__(self, name: str) -> Any:
        # Only called when `name` is not a declared section of this stage.
        raise AttributeError(
            f"params section {name!r} is not available to this stage: add it to the stage's `sections` "
            "in params/pipeline.yaml"
        )

    def sections(self) -> dict[str, config.Section]:
        """The declared sections by name, in declaration order."""
        return dict(self.__dict__)


#: What library functions that read several sections take: a stage's params or the whole Config.
Params: TypeAlias = StageParams | config.Config


@dataclass
class StageContext:
    stage: str
    run_id: str
    logical_date: dt.date
    profile: str
    outputs: Path
    root: Path  # the project folder: source paths in params resolve under it
    params: StageParams
    interactive: bool
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)
    #: What this stage wrote: `table:<name>` or `lake:<path>` -> rows and an order-free content
    #: digest. The runner fingerprints the stage's products with it (content-hash caching).
    products: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return self.outputs / "runs" / self.run_id

    @property
    def results_file(self) -> Path:
        return self.run_dir / RESULTS_DIR / f"{self.stage}.json"

    @cached_property
    def lake(self) -> Lake:
        lake = Lake(self.outputs / "lake")
        lake.on_write = lambda path, frame: self._record_product(f"lake:{path.relative_to(lake.root)}", frame)
        return lake

    @cached_property
    def warehouse(self):
        from bentley.warehouse import Warehouse

        warehouse = Warehouse.from_settings(self.params.warehouse.url, self.outputs)
        warehouse.on_write = lambda table, frame: self._record_product(f"table:{table}", frame)
        return warehouse

    def resolved_params(self) -> dict[str, Any]:
        """The stage's params sections as plain data: what a model run logs as its config."""
        return {
            name: section.model_dump(mode="json", by_alias=True) for name, section in self.params.sections().items()
        }

    @property
    def mlflow_parent_run_id(self) -> str | None:
        """The pipeline run's MLflow run, so runs a stage logs itself nest under it (None in JupyterLab)."""
        manifest = self.run_dir / "manifest.json"
        if self.interactive or not manifest.is_file():
            return None
        return read_json(manifest).get("mlflow", {}).get("parent_run_id")

    def progress(self, message: str) -> None:
        """Say how far a long step is ("fold 3/16 boosted"): the runner prints the newest line every
        few seconds while the stage runs. Nothing reaches the report; a failure to write is ignored."""
        line = f"{dt.datetime.now(dt.UTC):%H:%M:%S}\t{' '.join(str(message).split())}\n"
        try:
            path = progress_file(self.run_dir, self.stage)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as handle:
                handle.write(line)
        except OSError:
            pass

    def record_metrics(self, **values: float) -> None:
        """Keep numbers for the runner to log to MLflow; written atomically on every call."""
        for name, value in values.items():
            number = float(value)
            if math.isfinite(number):
                self.metrics[name] = number
        self._write_results()

    def save_artifact(self, name: str, content: Any) -> Path:
        """A table (CSV) or figure (PNG) for the runner to attach to this stage's MLflow run.

        Files go to `runs/<run_id>/artifacts/<stage>/`, so the run folder keeps them too.
        """
        path = self.run_dir / "artifacts" / self.stage / name
        if hasattr(content, "savefig"):
            buffer = io.BytesIO()
            content.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
            atomic_write_bytes(path, buffer.getvalue())
        elif hasattr(content, "to_csv"):
            atomic_write_text(path, content.to_csv(index=False))
        else:
            raise TypeError(f"artifact {name!r}: save a DataFrame or a matplotlib figure, not {type(content).__name__}")
        if str(path) not in self.artifacts:
            self.artifacts.append(str(path))
        self._write_results()
        return path

    def _record_product(self, product: str, frame: Any) -> None:
        """Fold one written frame into the product's digest (a sum of row hashes: order-free)."""
        written = self.products.setdefault(product, {"rows": 0, "digest": 0})
        written["rows"] += len(frame)
        written["digest"] = (written["digest"] + frame_digest(frame)) % 2**64
        self._write_results()

    def _write_results(self) -> None:
        atomic_write_json(
            self.results_file,
            {"stage": self.stage, "metrics": self.metrics, "artifacts": self.artifacts, "products": self.products},
        )

    def describe_sources(self) -> str:
        """`market: sample · news: sample · ...` for report headers."""
        sources = getattr(self.params, "sources", None)
        if sources is not None:
            return _describe(sources)
        loaded = self._profile_sources
        return f"warehouse tables (loaded from {_describe(loaded)})" if loaded else "warehouse tables"

    @property
    def uses_sample_data(self) -> bool:
        sources = getattr(self.params, "sources", None) or self._profile_sources
        return sources is not None and any(kind == "sample" for kind in _kinds(sources).values())

    @cached_property
    def _profile_sources(self) -> Any:
        """For stages that never see `sources`: the profile's, to label where the data came from."""
        try:
            return config.load_config(self.profile).sources
        except config.ParamsError:
            return None


def open_stage(
    stage: str,
    *,
    run_id: str | None,
    logical_date: str | dt.date | None,
    outputs_dir: str | None,
    profile: str = "default",
    **sections: dict[str, Any] | None,
) -> StageContext:
    """Build the context from the notebook's parameters (None means: work it out)."""
    missing = [name for name, value in sections.items() if value is None]
    loaded = config.load_config(profile) if missing else None
    typed: dict[str, config.Section] = {}
    for name, value in sections.items():
        if value is not None and not isinstance(value, dict):
            raise TypeError(
                f"parameter {name!r} should be a params section (a dict) but is a {type(value).__name__}; "
                "is an import in the notebook shadowing it?"
            )
        model = config.section_model(name)
        typed[name] = getattr(loaded, name) if value is None else model.model_validate(value)
    params = StageParams(**typed)
    interactive = run_id is None
    if logical_date is None:
        market = params.workflow.calendar if "workflow" in typed else calendar.DEFAULT_CALENDAR
        logical = calendar.latest_closed_session(dt.datetime.now(dt.UTC), market)
    else:
        logical = dt.date.fromisoformat(str(logical_date))
    if run_id is None:
        run_id = "interactive-" + dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    outputs = config.outputs_dir(outputs_dir, profile=profile)
    return StageContext(
        stage=stage,
        run_id=run_id,
        logical_date=logical,
        profile=profile,
        outputs=outputs,
        root=config.project_root(),
        params=params,
        interactive=interactive,
    )


def _kinds(sources: Any) -> dict[str, str]:
    return {name: getattr(sources, name).kind for name in ("market", "news", "portfolio", "social")}


def _describe(sources: Any) -> str:
    return " · ".join(f"{name}: {kind}" for name, kind in _kinds(sources).items())


def frame_digest(frame: Any) -> int:
    """Content digest of a table, independent of row and column order (64 bits)."""
    import pandas as pd

    ordered = frame[sorted(map(str, frame.columns))] if len(frame.columns) else frame
    rows = pd.util.hash_pandas_object(ordered, index=False).to_numpy(dtype="uint64")
    header = int.from_bytes(hashlib.sha256("\x1f".join(ordered.columns).encode()).digest()[:8], "big")
    return (int(rows.sum(dtype="uint64")) + header) % 2**64


def progress_file(run_dir: Path, stage: str) -> Path:
    """Where `StageContext.progress` appends its lines (one `HH:MM:SS<TAB>message` per line)."""
    return run_dir / RESULTS_DIR / f"{stage}.progress"


def read_results(run_dir: Path, stage: str) -> dict[str, Any]:
    """What a finished stage handed back (empty when it recorded nothing)."""
    path = run_dir / RESULTS_DIR / f"{stage}.json"
    if path.is_file():
        return read_json(path)
    return {"stage": stage, "metrics": {}, "artifacts": [], "products": {}}
