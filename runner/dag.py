"""The stage DAG: read `params/pipeline.yaml`, check it, order it, select from it.

Every check here runs before anything executes: a typo in a stage name, a cycle, a
missing notebook or a parameter the notebook does not declare stops the run with one
clear line (exit 2).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, MutableMapping, Sequence
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


def check_notebooks(
    stages: Sequence[Stage], root: Path, known: MutableMapping[str, list[str]] | None = None
) -> None:
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
    content = hashlib.sha256(stage.notebook.read_bytes()).hexdigest()
    if known is not None and content in known:
        return known[content]
    from papermill.inspection import inspect_notebook

    try:
        declared = list(inspect_notebook(str(stage.notebook)))
    except (ValueError, OSError) as exc:
        raise DagError(f"stage {stage.name!r}: cannot inspect {shown}: {exc}") from None
    if known is not None:
        known[content] = declared
    return declared


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
