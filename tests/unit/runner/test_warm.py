"""Issue 19's runner parts that need no kernel: what a warm-up imports, where a stage's time
went, how many threads a kernel gets, which ready stage goes first, and progress lines."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from rich.console import Console

from bentley.config import load_pipeline
from bentley.stage import StageContext, progress_file
from runner import execute
from runner.dag import build_dag, critical_path, parameters_cell_names
from runner.dag_loop import Progress


def _notebook(path: Path, *sources: str, parameters: str = "run_id = None") -> Path:
    cell = new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    nbformat.write(new_notebook(cells=[new_markdown_cell("# t"), cell, *map(new_code_cell, sources)]), path)
    return path


def test_notebook_imports_are_the_top_level_imports_of_its_code_cells(tmp_path: Path) -> None:
    path = _notebook(
        tmp_path / "a.ipynb",
        "import json\nfrom bentley import reporting, stage as s\nfrom bentley.models import lifecycle\n",
        "%matplotlib inline\nimport os.path\n\ndef f():\n    import never_at_warm_up\n",
        "this is not python (",
        "from . import relative\nfrom x import *\nreporting.say('x')",
        parameters="import not_in_the_parameters_cell\nrun_id = None",
    )
    assert execute.notebook_imports(path) == (
        "json",
        "bentley",
        "bentley.reporting",
        "bentley.stage",
        "bentley.models",
        "bentley.models.lifecycle",
        "os.path",
        "x",
    )
    assert execute.code_cells(path) == 5 + 1  # papermill adds the injected-parameters cell


def test_the_real_notebooks_warm_what_they_import(root: Path) -> None:
    modules = execute.notebook_imports(root / "notebooks" / "09_train.ipynb")
    assert {"bentley.models.lifecycle", "bentley.tracking", "bentley.stage"} <= set(modules)
    shared = execute.shared_imports([execute.notebook_imports(n) for n in sorted((root / "notebooks").glob("*.ipynb"))])
    assert {"bentley.reporting", "bentley.stage", "bentley.inputs"} <= set(shared)
    assert "bentley.tracking" not in shared, "only train uses MLflow: its own warm-up imports it"
    assert not any(name.startswith("matplotlib_inline") for name in execute.KERNEL_MODULES), "it hooks a shell"
    assert execute.shared_imports([["a", "b", "b"], ["b", "c"], ["c"]]) == ("b", "c")
    assert execute.shared_imports([["a"], ["b"]], minimum=1) == ("a", "b")


def test_the_breakdown_shares_each_cells_time_by_its_samples(tmp_path: Path) -> None:
    timing = tmp_path / "s.timing.json"
    timing.write_text(
        json.dumps(
            {
                "cells": [
                    {"import": 9, "compute": 1, "cpu_s": 0.5},
                    {"compute": 1, "charts": 2, "report": 1, "cpu_s": 1.0},
                    {"cpu_s": 0.25},  # too short to be sampled
                ]
            }
        )
    )
    parts = execute.breakdown([1.0, 4.0, 0.5], timing)
    assert parts == {"import": 0.9, "compute": 0.1 + 1.0 + 0.5, "charts": 2.0, "report": 1.0, "cpu": 1.75}
    assert execute.breakdown([1.0, 2.0], None) == {"import": 0.0, "compute": 3.0, "charts": 0.0, "report": 0.0}
    assert execute.breakdown([1.0], tmp_path / "missing.json")["compute"] == 1.0
    assert execute.cells_done(timing) == 3 and execute.cells_done(tmp_path / "missing.json") is None


def test_kernels_share_the_cores_unless_the_environment_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    assert execute.kernel_threads(2, cpus=2) == 1
    assert execute.kernel_threads(1, cpus=8) == 8
    assert execute.kernel_threads(16, cpus=4) == 1
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    env = execute.kernel_environment(1)
    assert env["OMP_NUM_THREADS"] == "1" and env["OPENBLAS_NUM_THREADS"] == "3"
    assert env["MPLBACKEND"] == "module://matplotlib_inline.backend_inline"
    assert "OMP_NUM_THREADS" not in execute.kernel_environment()


def test_the_longest_chain_of_work_starts_first(root: Path) -> None:
    stages = build_dag(load_pipeline(root / "params" / "pipeline.yaml"), root, 30, "pipeline.yaml")
    declared = critical_path(stages)  # a first run: the declared time limits are the only estimate
    assert declared["train"] > declared["risk"] and declared["train"] > declared["budget"]
    assert declared["ingest"] == max(declared.values())
    seconds = dict.fromkeys((s.name for s in stages), 1.0) | {"train": 30.0}
    measured = critical_path(stages, seconds)
    assert measured["train"] == 30.0 + 3.0  # train, optimize, trade, monitor
    assert measured["features"] == 1.0 + measured["train"]
    partly = critical_path(stages, {"train": 30.0})  # history for some stages only: limits for all
    assert partly == declared


def test_the_parameters_cell_is_read_as_papermill_reads_it(root: Path) -> None:
    from papermill.inspection import inspect_notebook

    for notebook in sorted((root / "notebooks").glob("*.ipynb")):
        assert parameters_cell_names(notebook.read_bytes()) == list(inspect_notebook(str(notebook))), notebook.name
    assert parameters_cell_names(json.dumps({"cells": []}).encode()) == []
    assert parameters_cell_names(b"not json") is None
    odd = {"cells": [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "a, b = 1, 2"}]}
    assert parameters_cell_names(json.dumps(odd).encode()) is None  # papermill decides


def test_progress_lines_reach_the_terminal_every_few_seconds(
    tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    stages = build_dag(load_pipeline(root / "params" / "pipeline.yaml"), root, 30, "pipeline.yaml")
    train = next(s for s in stages if s.name == "train")
    ctx = StageContext(
        stage="train",
        run_id="r",
        logical_date=None,
        profile="ci",
        outputs=tmp_path,  # type: ignore[arg-type]
        root=root,
        params=SimpleNamespace(),
        interactive=False,
    )
    console = Console(record=True, width=200)
    progress = Progress(console, ctx.run_dir, enabled=True)
    clock = [1000.0]
    monkeypatch.setattr("runner.pipeline.time.monotonic", lambda: clock[0])
    progress.started(train)
    ctx.progress("refit 1/17 of logistic")
    progress.poll([train])
    assert console.export_text(clear=False) == "", "nothing within the first seconds"
    ctx.progress("refit 2/17 of logistic")
    with progress_file(ctx.run_dir, "train").open("a") as handle:
        handle.write("12:00:00\thalf a li")  # being written: waits for its newline
    clock[0] += 6
    progress.poll([train])
    assert console.export_text(clear=False).splitlines() == ["· train 6 s: refit 2/17 of logistic"]
    clock[0] += 31
    progress.poll([train])
    assert console.export_text(clear=False).splitlines()[-1] == "· train 37 s: running"
    quiet = Progress(Console(record=True), ctx.run_dir, enabled=False)
    quiet.started(train)
    clock[0] += 60
    quiet.poll([train])
    assert quiet.console.export_text() == ""
