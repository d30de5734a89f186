"""The stage DAG: order, selection, and every mistake caught before anything runs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from bentley.config import ParamsError, PipelineSpec, load_pipeline
from runner.dag import DagError, build_dag, check_notebooks, select


def spec(stages: dict) -> PipelineSpec:
    filled = {
        name: {"notebook": f"notebooks/{name}.ipynb", "sections": [], "timeout_minutes": None, "retries": 0, **s}
        for name, s in stages.items()
    }
    return PipelineSpec.model_validate({"stages": filled})


def names(stages) -> list[str]:
    return [s.name for s in stages]


DIAMOND = {
    "ingest": {"upstream": []},
    "etl": {"upstream": ["ingest"]},
    "features": {"upstream": ["etl"]},
    "risk": {"upstream": ["features"]},
    "technical": {"upstream": ["features"]},
    "report": {"upstream": ["risk", "technical"]},
}


def test_topological_order_keeps_declaration_order(tmp_path: Path) -> None:
    reordered = dict(reversed(list(DIAMOND.items())))
    stages = build_dag(spec(reordered), tmp_path, 30, "p.yaml")
    order = names(stages)
    for stage in stages:
        assert all(order.index(u) < order.index(stage.name) for u in stage.upstream)
    assert order.index("technical") < order.index("risk")  # declared first among ready stages


def test_timeout_defaults_to_the_workflow_limit(tmp_path: Path) -> None:
    stages = build_dag(spec({"a": {"upstream": [], "timeout_minutes": 2}, "b": {"upstream": []}}), tmp_path, 30, "p")
    assert [s.timeout_s for s in stages] == [120.0, 1800.0]


def test_unknown_upstream_is_named(tmp_path: Path) -> None:
    with pytest.raises(DagError, match=r"p\.yaml: stage 'etl' lists unknown upstream 'ingset'"):
        build_dag(spec({"ingest": {"upstream": []}, "etl": {"upstream": ["ingset"]}}), tmp_path, 30, "p.yaml")


def test_cycle_is_shown(tmp_path: Path) -> None:
    cyclic = {"a": {"upstream": []}, "b": {"upstream": ["a", "d"]}, "c": {"upstream": ["b"]}, "d": {"upstream": ["c"]}}
    with pytest.raises(DagError, match=r"cycle: (b -> c -> d -> b|c -> d -> b -> c|d -> b -> c -> d)"):
        build_dag(spec(cyclic), tmp_path, 30, "p.yaml")


def test_selection(tmp_path: Path) -> None:
    stages = build_dag(spec(DIAMOND), tmp_path, 30, "p")
    assert names(select(stages, only=["etl", "risk"])) == ["etl", "risk"]
    assert names(select(stages, start="risk")) == ["risk", "report"]
    assert names(select(stages, stop="etl")) == ["ingest", "etl"]
    assert names(select(stages, start="etl", stop="risk")) == ["etl", "features", "risk"]
    with pytest.raises(DagError, match="unknown stage 'risky'"):
        select(stages, only=["risky"])


def test_unknown_section_and_keys_in_pipeline_file(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        "stages:\n  a:\n    notebook: a.ipynb\n    upstream: []\n    sections: [featurez]\n"
        "    timeout_minutes: null\n    retries: 0\n"
    )
    with pytest.raises(ParamsError, match=r"pipeline\.yaml:5: stages\.a\.sections: unknown params sections"):
        load_pipeline(path)


def _notebook(path: Path, parameters: str | None) -> None:
    cells = [new_code_cell("x = 1")]
    if parameters is not None:
        cell = new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        cells.insert(0, cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)


BASE = 'run_id = None\nlogical_date = None\noutputs_dir = None\nprofile = "default"\n'


def test_notebook_checks(tmp_path: Path) -> None:
    stages = build_dag(spec({"a": {"upstream": [], "sections": ["features"]}}), tmp_path, 30, "p")
    with pytest.raises(DagError, match=r"notebook notebooks/a\.ipynb does not exist"):
        check_notebooks(stages, tmp_path)
    _notebook(tmp_path / "notebooks" / "a.ipynb", None)
    with pytest.raises(DagError, match="has no cell tagged 'parameters'"):
        check_notebooks(stages, tmp_path)
    _notebook(tmp_path / "notebooks" / "a.ipynb", BASE)
    with pytest.raises(DagError, match="does not declare injected parameter\\(s\\) features"):
        check_notebooks(stages, tmp_path)
    _notebook(tmp_path / "notebooks" / "a.ipynb", BASE + "features = None\n")
    check_notebooks(stages, tmp_path)


def test_the_real_pipeline_is_valid(root: Path) -> None:
    from bentley.config import load_config

    stages = build_dag(load_pipeline(root / "params" / "pipeline.yaml"), root, 30, "pipeline.yaml")
    assert names(stages)[:3] == ["ingest", "etl", "features"]
    check_notebooks(stages, root)
    load_config()
