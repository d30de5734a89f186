"""Throwaway pipelines for the runner's integration tests: a few one-cell notebooks and their
pipeline.yaml, so what a test checks is the runner, not the stages."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

BASE_PARAMETERS = 'run_id = None\nlogical_date = None\noutputs_dir = None\nprofile = "default"'
#: Retries a test waits for: short, so a retried stage costs well under a second.
FAST_RETRY = "{backoff_base_s: 0.2, backoff_max_s: 0.4}"


def write_pipeline(folder: Path, stages: dict[str, dict[str, Any]], retry: str = FAST_RETRY) -> Path:
    """`folder/pipeline.yaml` and one notebook per stage.

    stage -> {code, upstream, sections, timeout (minutes, default 2), retries (default 0),
    trigger, cache, exclusive}; `code` is the notebook's one code cell after its parameters cell
    (dedented), and each of `sections` is declared there too.
    """
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    lines = [f"retry: {retry}", "stages:"]
    for name, spec in stages.items():
        sections = spec.get("sections", [])
        parameters = new_code_cell(BASE_PARAMETERS + "".join(f"\n{s} = None" for s in sections))
        parameters.metadata["tags"] = ["parameters"]
        notebook = new_notebook(
            cells=[new_markdown_cell(f"# {name}"), parameters, new_code_cell(textwrap.dedent(spec["code"]))]
        )
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        path = folder / f"{name}.ipynb"
        nbformat.write(notebook, path)
        extra = "".join(f", {key}: {json.dumps(spec[key])}" for key in ("trigger", "cache", "exclusive") if key in spec)
        lines.append(
            f"  {name}: {{notebook: {path}, upstream: {json.dumps(spec.get('upstream', []))}, "
            f"sections: {json.dumps(sections)}, timeout_minutes: {spec.get('timeout', 2)}, "
            f"retries: {spec.get('retries', 0)}{extra}}}"
        )
    pipeline = folder / "pipeline.yaml"
    pipeline.write_text("\n".join(lines) + "\n")
    return pipeline


def rendezvous(marker_dir: Path, me: str, others: list[str], timeout_s: float = 120.0) -> str:
    """Notebook code: say `me` is running, then wait until each of `others` says so too.

    Stages that all reach it ran at the same time, however long their kernels took to start;
    stages that cannot overlap fail it (after `timeout_s`) instead of passing by luck.
    """
    return textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        marks = Path({str(marker_dir)!r})
        marks.mkdir(exist_ok=True)
        (marks / {me!r}).touch()
        deadline = time.monotonic() + {timeout_s}
        while not all((marks / other).exists() for other in {others!r}):
            if time.monotonic() > deadline:
                raise TimeoutError("{me} never saw {", ".join(others)} running at the same time")
            time.sleep(0.05)
        """
    )
