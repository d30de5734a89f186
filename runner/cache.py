"""Content-hash caching: skip a stage whose inputs and products are unchanged.

A stage's cache key is the SHA-256 of its parts, each kept (hashed) in `stage_cache` so the
run index can say which one changed:

- `notebook`: the notebook's cells (type, source, tags), without outputs or metadata;
- `params`: every injected parameter except the run id, flattened (`ml.retrain`, ...);
- `modules`: every `bentley` module the notebook imports, followed through imports;
- `upstream`: the fingerprints of the upstream stages' products;
- `sources`: for stages that read sources, the content of file sources (live sources are
  never cached: what they return is only known by asking);
- `environment`: Python and the versions of the project's declared dependencies.

A product is what a stage wrote: warehouse tables and lake partitions, each with an
order-free content digest of the rows written (bentley.stage). Its fingerprint is the hash
of those digests, so an upstream stage that reran and wrote the same rows leaves its
downstream stages up to date (an early cutoff, as in Bazel).

`CacheStore` keeps each stage's last successful execution in the warehouse table `stage_cache`
(its key parts, products and fingerprint); it is the only code that reads or writes that table.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bentley.config import Config, canonical_json, flatten
from runner.dag import Stage

if TYPE_CHECKING:
    from bentley.warehouse import Warehouse

PROJECT_DISTRIBUTION = "bentley-budget-bot"
#: Parameters that name the run rather than shape its result.
_IDENTITY_PARAMETERS = ("run_id",)
_LIVE_SOURCE_KINDS = {"yahoo", "rss"}


def digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def _short(text: str) -> str:
    return text[:12]


@dataclass(frozen=True)
class StageKey:
    """The cache key of one stage execution and the parts it is made of."""

    key: str
    components: dict[str, Any]
    uncacheable: str | None = None  # why this stage always runs (a live source), else None


@dataclass(frozen=True)
class CacheEntry:
    """`stage_cache`'s row for a stage: its last successful execution."""

    stage: str
    key: str
    fingerprint: str
    components: dict[str, Any]
    products: dict[str, dict[str, int]]
    run_id: str
    updated_at: dt.datetime


class CacheStore:
    """`stage_cache`: what the cache remembers of each stage's last successful execution.

    A run reads every entry once (`entries`), drops a stage's entry just before the stage
    executes (its products are about to change, so a crash mid-stage never leaves an entry
    describing products that are gone) and stores the new one when it succeeds.
    """

    def __init__(self, warehouse: Warehouse, outputs: Path) -> None:
        self.warehouse = warehouse
        self.outputs = outputs

    def entries(self) -> dict[str, CacheEntry]:
        """Every stage's entry, by stage name."""
        frame = self.warehouse.read("stage_cache")
        return {
            row["stage"]: CacheEntry(
                stage=row["stage"],
                key=row["cache_key"],
                fingerprint=row["fingerprint"],
                components=json.loads(row["components"]),
                products=json.loads(row["products"]),
                run_id=row["run_id"],
                updated_at=row["updated_at"].to_pydatetime(),
            )
            for row in frame.to_dict("records")
        }

    def missing_product(self, entry: CacheEntry) -> str | None:
        """The first product of the entry that is gone (a dropped table, an emptied partition)."""
        for product, written in entry.products.items():
            kind, _, name = product.partition(":")
            if kind == "table" and written.get("rows") and not self.warehouse.has_rows(name):
                return f"table {name} is empty or missing"
            if kind == "lake" and not any((self.outputs / "lake" / name).glob("*.parquet")):
                return f"lake partition {name} has no files"
        return None

    def invalidate(self, stage: str) -> None:
        """A stage about to run changes its products: its old entry no longer describes them."""
        self.warehouse.delete_where("stage_cache", stage=stage)

    def store(
        self, stage: str, key: StageKey, products: Mapping[str, Mapping[str, int]], run_id: str, now: dt.datetime
    ) -> str:
        """Remember a successful execution: its key parts and products; returns the products' fingerprint."""
        import pandas as pd

        fingerprint = products_fingerprint(products)
        row = {
            "stage": stage,
            "cache_key": key.key,
            "fingerprint": fingerprint,
            "components": json.dumps(key.components, sort_keys=True),
            "products": json.dumps(products, sort_keys=True),
            "run_id": run_id,
            "updated_at": now,
        }
        self.warehouse.upsert("stage_cache", pd.DataFrame([row]))
        return fingerprint


@dataclass(frozen=True)
class Decision:
    run: bool
    reason: str


@dataclass
class KeyBuilder:
    """Computes stage keys for one run; module and file digests are shared across stages."""

    root: Path
    config: Config
    package_root: Path | None = None  # the `bentley` package folder (default: the imported one)
    _module_digests: dict[Path, tuple[str, frozenset[str]]] = field(default_factory=dict)
    _module_paths: dict[str, Path | None] = field(default_factory=dict)

    def key(self, stage: Stage, parameters: Mapping[str, Any], upstream: Mapping[str, str | None]) -> StageKey:
        params = {k: v for k, v in parameters.items() if k not in _IDENTITY_PARAMETERS}
        components: dict[str, Any] = {
            "notebook": notebook_digest(stage.notebook),
            "params": {name: _short(digest(value)) for name, value in sorted(flatten(params).items())},
            "modules": self.modules(stage.notebook),
            "upstream": dict(sorted(upstream.items())),
            "environment": environment_versions(),
        }
        uncacheable = None
        if "sources" in stage.sections:
            sources, uncacheable = source_digests(self.config, self.root)
            components["sources"] = sources
        return StageKey(key=digest(components), components=components, uncacheable=uncacheable)

    def modules(self, notebook: Path) -> dict[str, str]:
        """`bentley` module files the notebook imports, directly or through other modules."""
        if self.package_root is None:
            import bentley

            self.package_root = Path(bentley.__file__).resolve().parent
        package_root = self.package_root
        pending = sorted(_imported_modules(_notebook_code(notebook)))
        found: dict[str, str] = {}
        visited: set[str] = set()
        while pending:
            module = pending.pop()
            if module in visited:
                continue
            visited.add(module)
            if module not in self._module_paths:
                self._module_paths[module] = _module_file(package_root, module)
            path = self._module_paths[module]
            if path is None or str(path) in found:
                continue
            text_digest, imports = self._module(path, module)
            found[str(path)] = text_digest
            pending.extend(imports)
        return {str(Path(p).relative_to(package_root.parent)): d for p, d in sorted(found.items())}

    def _module(self, path: Path, module: str) -> tuple[str, frozenset[str]]:
        if path not in self._module_digests:
            source = path.read_bytes()
            package = module if path.name == "__init__.py" else module.rpartition(".")[0]
            imports = frozenset(_imported_modules(source.decode("utf-8"), package))
            # A module's package __init__ runs first on import: it is part of the closure.
            parents = {module.rsplit(".", depth)[0] for depth in range(1, module.count(".") + 1)}
            self._module_digests[path] = (hashlib.sha256(source).hexdigest(), imports | parents)
        return self._module_digests[path]


def notebook_digest(path: Path) -> str:
    """Cells' type, source and tags: re-saving a notebook with outputs changes nothing."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    cells = [
        (cell.get("cell_type"), _text(cell.get("source", "")), sorted(cell.get("metadata", {}).get("tags", [])))
        for cell in notebook.get("cells", [])
    ]
    return digest(cells)


def _text(source: str | list[str]) -> str:
    return "".join(source) if isinstance(source, list) else source


def _notebook_code(path: Path) -> str:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    lines: list[str] = []
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "code":
            # IPython magics and shell escapes are not Python: drop them before parsing.
            lines.extend(
                line for line in _text(cell.get("source", "")).splitlines() if not line.lstrip().startswith(("%", "!"))
            )
    return "\n".join(lines)


_IMPORT = re.compile(
    r"^[ \t]*(?:from[ \t]+(?P<base>\.*[\w.]*)[ \t]+import[ \t]+(?P<names>\([^)]*\)|[^\n#]+)"
    r"|import[ \t]+(?P<modules>[^\n#]+))",
    re.MULTILINE,
)


def _imported_modules(code: str, package: str | None = None) -> set[str]:
    """Absolute names of the `bentley` modules (and candidate submodules) `code` imports.

    A regular expression rather than `ast`: ten times faster on this path, which every
    no-change rerun takes. Imports inside strings count too: that only makes the cache
    more conservative.
    """
    found: set[str] = set()
    for match in _IMPORT.finditer(code):
        if match["modules"]:
            found.update(part.split()[0] for part in match["modules"].split(",") if part.strip())
            continue
        base = match["base"]
        level = len(base) - len(base.lstrip("."))
        base = base.lstrip(".")
        if level and package:
            parts = package.split(".")
            anchor = parts[: len(parts) - level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        found.add(base)
        names = match["names"].strip("()").replace("\n", " ")
        found.update(f"{base}.{name.split()[0]}" for name in names.split(",") if name.strip())
    return {name for name in found if name == "bentley" or name.startswith("bentley.")}


def _module_file(package_root: Path, module: str) -> Path | None:
    parts = module.split(".")[1:]
    base = package_root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def environment_versions() -> dict[str, str]:
    """Python and each declared dependency's installed version: an upgrade invalidates results."""
    versions = {"python": platform.python_version()}
    try:
        requirements = importlib.metadata.requires(PROJECT_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return versions
    for requirement in requirements:
        if "extra ==" in requirement:
            continue  # dev and bench extras do not shape results
        name = re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0]
        try:
            versions[name.lower()] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name.lower()] = "missing"
    return versions


def source_digests(config: Config, root: Path) -> tuple[dict[str, str], str | None]:
    """Content digests of file sources; the reason to always run when a source is live."""
    from bentley.sources.base import SourceError, resolve_inside

    sources = config.sources
    data_dir = root / sources.data_dir
    digests: dict[str, str] = {}
    live = []
    social = sources.social
    social_urls = [feed.url for feed in social.feeds if "://" in feed.url] if social.kind == "social" else []
    paths: dict[str, Sequence[str | None]] = {
        "market": [sources.market.path] if sources.market.kind == "csv" else [],
        "news": [sources.news.path] if sources.news.kind == "csv" else [],
        "portfolio": (
            [sources.portfolio.transactions, sources.portfolio.holdings] if sources.portfolio.kind == "files" else []
        ),
        "social": (
            [f.path for f in social.files] + [feed.url for feed in social.feeds if "://" not in feed.url]
            if social.kind == "social"
            else []
        ),
    }
    for name in ("market", "news", "portfolio", "social"):
        kind = getattr(sources, name).kind
        if kind in _LIVE_SOURCE_KINDS or (name == "social" and social_urls):
            live.append(f"{name} source {kind} is live (fetched on every run)")
            continue
        try:
            files = [resolve_inside(data_dir, p) for p in paths[name] if p]
        except SourceError as exc:
            live.append(f"{name} source path is invalid ({exc})")  # the stage itself reports it properly
            continue
        digests[name] = _files_digest(files) if files else kind
    return digests, ("; ".join(live) + ": always runs") if live else None


def _files_digest(paths: list[Path]) -> str:
    hasher = hashlib.sha256()
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            hasher.update(str(file).encode())
            hasher.update(file.read_bytes() if file.is_file() else b"<missing>")
    return hasher.hexdigest()


def products_fingerprint(products: Mapping[str, Mapping[str, int]]) -> str:
    return digest(dict(sorted(products.items())))


def decide(
    stage: Stage,
    key: StageKey,
    entry: CacheEntry | None,
    *,
    force: bool,
    now: dt.datetime,
    missing_product: str | None,
) -> Decision:
    """Run or skip, with the reason the run index shows."""
    if force:
        return Decision(True, "forced (--force)")
    if not stage.cache:
        return Decision(True, "always runs (cache: false)")
    if key.uncacheable:
        return Decision(True, key.uncacheable)
    if entry is None:
        return Decision(True, "no earlier successful run")
    if entry.key != key.key:
        return Decision(True, explain_change(entry.components, key.components))
    if stage.cache_max_age_s is not None:
        age = (now - entry.updated_at).total_seconds()
        if age > stage.cache_max_age_s:
            return Decision(True, f"results are {age / 60:.0f} min old (max {stage.cache_max_age_s / 60:.0f} min)")
    if missing_product:
        return Decision(True, f"product missing: {missing_product}")
    return Decision(False, f"up to date: unchanged since run {entry.run_id}")


def explain_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """Name the inputs that changed: `params changed: ml.retrain; module changed: bentley/features.py`."""
    labels = {"notebook": "notebook source changed", "sources": "source files changed"}
    reasons = []
    for part in ("notebook", "params", "modules", "upstream", "sources", "environment"):
        before, after = old.get(part), new.get(part)
        if before == after:
            continue
        if isinstance(before, Mapping) and isinstance(after, Mapping):
            changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
            shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
            noun = {
                "params": "params",
                "modules": "module",
                "upstream": "upstream products",
                "environment": "package versions",
                "sources": "source files",
            }[part]
            reasons.append(f"{noun} changed: {shown}")
        else:
            reasons.append(labels.get(part, f"{part} changed"))
    return "; ".join(reasons) or "cache key changed"
