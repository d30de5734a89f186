"""The stage DAG: read `params/pipeline.yaml`, check it, order it, select from it.

Every check here runs before anything executes: a typo in a stage name, a cycle, a
missing notebook or a parameter the notebook does not declare stops the run with one
clear line (exit 2).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bentley.config import PipelineSpec

#: Injected into every stage, whatever sections it declares.
BASE_PARAMETERS: tuple[str, ...] = ("run_id", "logical_date", "outputs_dir", "profile")


class DagError(Exception):
    """A problem with the pipeline declaration or a stage notebook, found before running."""


@dataclass(frozen=True)
class Stage:
    name: str
    notebook: Path
    upstream: tuple[str, ...]
    sections: tuple[str, ...]
    timeout_s: float
    retries: int
    trigger: str = "all_success"  # all_done: runs even when an upstream failed (monitor)
    cache: bool = True
    cache_max_age_s: float | None = None
    exclusive: bool = False  # no other stage starts while it runs (runner.dag_loop)

    @property
    def injected_parameters(self) -> tuple[str, ...]:
        return BASE_PARAMETERS + self.sections


def build_dag(spec: PipelineSpec, root: Path, default_timeout_minutes: int, source: str) -> list[Stage]:
    """Stages in a topological order that keeps declaration order among ready stages."""
    stages = {
        name: Stage(
            name=name,
            notebook=(root / s.notebook).resolve(),
            upstream=tuple(s.upstream),
            sections=tuple(s.sections),
            timeout_s=60.0 * (s.timeout_minutes or default_timeout_minutes),
            retries=s.retries,
            trigger=s.trigger,
            cache=s.cache,
            cache_max_age_s=None if s.cache_max_age_minutes is None else 60.0 * s.cache_max_age_minutes,
            exclusive=s.exclusive,
        )
        for name, s in spec.stages.items()
    }
    for stage in stages.values():
        for upstream in stage.upstream:
            if upstream not in stages:
                raise DagError(f"{source}: stage {stage.name!r} lists unknown upstream {upstream!r}")
    return _toposort(stages, source)


def _toposort(stages: dict[str, Stage], source: str) -> list[Stage]:
    order: list[Stage] = []
    done: set[str] = set()
    pending = list(stages)
    while pending:
        ready = [name for name in pending if all(u in done for u in stages[name].upstream)]
        if not ready:
            raise DagError(f"{source}: the stages form a cycle: {_find_cycle(stages, pending)}")
        for name in ready:
            order.append(stages[name])
            done.add(name)
        pending = [name for name in pending if name not in done]
    return order


def _find_cycle(stages: dict[str, Stage], pending: list[str]) -> str:
    """Walk upstream links from a blocked stage until a stage repeats."""
    path = [pending[0]]
    while True:
        nxt = next(u for u in stages[path[-1]].upstream if u in pending)
        if nxt in path:
            cycle = path[path.index(nxt) :] + [nxt]
            return " -> ".join(reversed(cycle))
        path.append(nxt)


def select(
    stages: Sequence[Stage],
    only: Iterable[str] | None = None,
    start: str | None = None,
    stop: str | None = None,
) -> list[Stage]:
    """`--stages a,b` picks exactly those; `--from X` adds X's descendants; `--to Y` Y's ancestors."""
    by_name = {s.name: s for s in stages}
    chosen = set(by_name)
    for name in [*(only or []), *([start] if start else []), *([stop] if stop else [])]:
        if name not in by_name:
            raise DagError(f"unknown stage {name!r}; stages are: {', '.join(by_name)}")
    if only:
        chosen &= set(only)
    if start:
        chosen &= {start} | _descendants(stages, start)
    if stop:
        chosen &= {stop} | _ancestors(by_name, stop)
    if not chosen:
        raise DagError("the stage selection is empty")
    return [s for s in stages if s.name in chosen]


def critical_path(stages: Sequence[Stage], seconds: Mapping[str, float] | None = None) -> dict[str, float]:
    """Per stage, the work on the longest path from its start to the end of the pipeline.

    The runner starts the ready stage with the most work after it first, so a long chain
    (features -> train -> optimize -> trade) is not kept waiting behind a stage nothing
    depends on. A stage's work is `seconds` (what it took last time) when every stage has a
    figure, else its declared time limit: the only cost estimate a first run has.
    """
    known = seconds or {}
    use_history = bool(stages) and all(known.get(s.name, 0) > 0 for s in stages)
    cost = {s.name: (known[s.name] if use_history else s.timeout_s) for s in stages}
    longest: dict[str, float] = {}
    for stage in reversed(list(stages)):  # topological order: downstream stages come later
        after = [longest[s.name] for s in stages if stage.name in s.upstream and s.name in longest]
        longest[stage.name] = cost[stage.name] + max(after, default=0.0)
    return longest


def _ancestors(by_name: dict[str, Stage], name: str) -> set[str]:
    found: set[str] = set()
    frontier = list(by_name[name].upstream)
    while frontier:
        current = frontier.pop()
        if current not in found:
            found.add(current)
            frontier.extend(by_name[current].upstream)
    return found


def _descendants(stages: Sequence[Stage], name: str) -> set[str]:
    found: set[str] = set()
    for stage in stages:  # topological order: upstreams come first
        if name in stage.upstream or found & set(stage.upstream):
            found.add(stage.name)
    return found


def check_notebooks(stages: Sequence[Stage], root: Path, known: MutableMapping[str, list[str]] | None = None) -> None:
    """Every notebook exists, has a `parameters` cell, and declares what we inject.

    `known` maps a notebook file's SHA-256 to the parameters papermill found in it before,
    so an unchanged notebook is not inspected again (importing papermill alone takes ~1 s).
    """
    for stage in stages:
        shown = _relative(stage.notebook, root)
        if not stage.notebook.is_file():
            raise DagError(f"stage {stage.name!r}: notebook {shown} does not exist")
        declared = _declared_parameters(stage, shown, known)
        if not declared:
            raise DagError(f"stage {stage.name!r}: {shown} has no cell tagged 'parameters'")
        undeclared = [p for p in stage.injected_parameters if p not in declared]
        if undeclared:
            raise DagError(
                f"stage {stage.name!r}: {shown} does not declare injected parameter(s) "
                f"{', '.join(undeclared)} in its parameters cell"
            )


def _declared_parameters(stage: Stage, shown: str, known: MutableMapping[str, list[str]] | None) -> list[str]:
    content = stage.notebook.read_bytes()
    digest = hashlib.sha256(content).hexdigest()
    if known is not None and digest in known:
        return known[digest]
    declared = parameters_cell_names(content)
    if declared is None:  # not a plain Python parameters cell: papermill's own inspection decides
        from papermill.inspection import inspect_notebook

        try:
            declared = list(inspect_notebook(str(stage.notebook)))
        except (ValueError, OSError) as exc:
            raise DagError(f"stage {stage.name!r}: cannot inspect {shown}: {exc}") from None
    if known is not None:
        known[digest] = declared
    return declared


def parameters_cell_names(content: bytes) -> list[str] | None:
    """The names the first cell tagged `parameters` assigns (`name = value` or `name: type = value`,
    one per statement, as papermill reads them); [] without such a cell; None when the notebook
    or the cell is not plain JSON and Python (papermill's inspection is asked instead).

    papermill imports jsonschema, nbformat and its translators to answer this (about a second
    before the first stage of a new store could start); a parse of the cell answers the same.
    """
    import ast
    import json

    try:
        cells = json.loads(content).get("cells", [])
    except (ValueError, AttributeError):
        return None
    for cell in cells:
        if cell.get("cell_type") != "code" or "parameters" not in cell.get("metadata", {}).get("tags", []):
            continue
        source = cell.get("source", "")
        try:
            tree = ast.parse("".join(source) if isinstance(source, list) else source)
        except SyntaxError:
            return None
        names: list[str] = []
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                names.append(node.targets[0].id)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
                names.append(node.target.id)
            else:
                return None  # anything else: let papermill say what it makes of it
        return names
    return []


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
