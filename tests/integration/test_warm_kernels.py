"""Kernels ready to work (issue 19): what a stage computes does not depend on its kernel.

The same stages of the ci profile run twice, for the same run id and logical date, into two
stores: once as the runner runs them (kernels forked from the run's fork server, warmed with
the stage's imports, a sampler timing the cells), once on cold kernels (`BENTLEY_COLD_KERNELS=1`:
new processes that import nothing before the notebook). The executed notebooks show the same
outputs, cell by cell, and the warehouse tables hold the same rows.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bentley.warehouse import Warehouse

pytestmark = pytest.mark.integration

LOGICAL_DATE = "2025-06-02"
STAGES = ["ingest", "etl", "features", "sentiment", "risk", "train"]  # train: MLflow and scikit-learn preloaded
TABLES = [
    "prices",
    "news",
    "transactions",
    "holdings",
    "features",
    "news_sentiment",
    "sentiment_daily",
    "risk_metrics",
    "data_quality",
    "model_decisions",
    "predictions",
    "model_monitoring",
]
WHEN = ["decided_at", "predicted_at", "computed_at", "created_at", "checked_at"]  # the clock, not the computation


def _run(root: Path, env: dict[str, str], outputs: Path) -> dict:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "runner",
            "run",
            "--profile",
            "ci",
            "--logical-date",
            LOGICAL_DATE,
            "--outputs",
            str(outputs),
            "--run-id",
            "same",
            "--stages",
            ",".join(STAGES),
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads((outputs / "runs" / "same" / "manifest.json").read_text())


def _outputs(notebook: Path, outputs: Path) -> list[list[dict]]:
    """Each code cell's outputs, with the store's path (the one thing that differs) replaced."""
    cells = json.loads(notebook.read_text())["cells"]
    shown = []
    for cell in cells:
        if cell["cell_type"] != "code" or "injected-parameters" in cell["metadata"].get("tags", []):
            continue
        text = json.dumps(cell.get("outputs", []), sort_keys=True).replace(str(outputs), "<outputs>")
        shown.append([cell["execution_count"], json.loads(text)])
    return shown


def _tables(outputs: Path) -> dict[str, str]:
    warehouse = Warehouse(f"sqlite:///{outputs / 'warehouse.db'}")
    try:
        return {
            table: hashlib.sha256(
                warehouse.read(table)
                .drop(columns=WHEN, errors="ignore")
                .to_csv(index=False, float_format="%.12g")
                .encode()
            ).hexdigest()
            for table in TABLES
        }
    finally:
        warehouse.dispose()


def test_a_stage_computes_the_same_on_a_cold_and_a_warm_kernel(
    tmp_path: Path, root: Path, clean_env: dict[str, str]
) -> None:
    warm, cold = tmp_path / "warm", tmp_path / "cold"
    warm_manifest = _run(root, clean_env, warm)
    cold_manifest = _run(root, {**clean_env, "BENTLEY_COLD_KERNELS": "1"}, cold)

    for stage in STAGES:
        entry = warm_manifest["stages"][stage]
        assert entry["warm_up"]["modules"] > 0, f"{stage}: its kernel was warmed"
        assert set(entry["breakdown"]) >= {"kernel", "import", "compute", "charts", "report", "other", "cpu"}
        assert cold_manifest["stages"][stage]["warm_up"]["modules"] == 0, f"{stage}: a cold kernel"
        ours = _outputs(warm / "runs" / "same" / "notebooks" / f"{stage}.ipynb", warm)
        theirs = _outputs(cold / "runs" / "same" / "notebooks" / f"{stage}.ipynb", cold)
        assert [count for count, _ in ours] == [count for count, _ in theirs], f"{stage}: execution counts"
        for number, ((_, warm_cell), (_, cold_cell)) in enumerate(zip(ours, theirs, strict=True)):
            assert warm_cell == cold_cell, f"{stage}: code cell {number} shows something else on a warm kernel"
    assert _tables(warm) == _tables(cold)


def test_a_forked_kernel_is_a_fresh_kernel_of_its_own_that_dies_with_its_server(tmp_path: Path) -> None:
    """A kernel forked from the fork server: its own process group, the stage's folder and
    environment, a namespace with nothing preloaded in it; killed as a group; no child outlives
    the server."""
    import os
    import time

    from jupyter_client.blocking import BlockingKernelClient

    from runner.execute import ForkServer, WarmUp, kernel_environment, resolve_kernel, start_kernel

    name = resolve_kernel("bentley")
    server = ForkServer.for_kernel(name, ["json"], kernel_environment(1), tmp_path, later=["csv"])
    if server is None:
        pytest.skip(f"kernelspec {name} is not a plain ipykernel launcher")
    try:
        warm = WarmUp(modules=("decimal",), timing_file=tmp_path / "t.timing.json")
        kernel = start_kernel(name, tmp_path, warm, 1, forks=server)
        assert type(kernel.manager.provisioner).__name__ == "_Forked" and server.error is None
        client = BlockingKernelClient()
        client.load_connection_info(kernel.manager.get_connection_info())
        client.start_channels()
        seen: list[str] = []
        reply = client.execute_interactive(
            "import os, sys\nprint(os.getppid(), os.getpgid(0) == os.getpid(), os.getcwd(), "
            "os.environ['OMP_NUM_THREADS'], 'decimal' in sys.modules, "
            "sorted(n for n in dir() if not n.startswith('_')), get_ipython().execution_count, sep='|')",
            timeout=60,
            output_hook=lambda msg: seen.append(msg["content"].get("text", "")),
        )
        client.stop_channels()
        assert reply["content"]["status"] == "ok"
        parent, group, cwd, threads, warmed, names, count = "".join(seen).strip().split("|")
        assert int(parent) == server.process.pid and group == "True" and cwd == str(tmp_path)
        assert threads == "1" and warmed == "True"
        assert "decimal" not in names and "json" not in names and count.isdigit()  # a clean namespace
        assert json.loads((tmp_path / "t.timing.json").read_text())["cells"], "the sampler counted the cell"
        pid = kernel.pid
        kernel.kill()
        kernel.shutdown()
        assert pid is not None and not Path(f"/proc/{pid}").exists()

        orphan = start_kernel(name, tmp_path, None, 1, forks=server)
    finally:
        server.close()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{orphan.pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{orphan.pid}").exists(), "closing the server ends the kernels it forked"
    orphan.shutdown()
    assert os.getpid() != orphan.pid


def test_a_stage_notebook_keeps_every_output_and_is_written_at_its_start_and_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner's papermill engine and kernel client (issue 19): the first cell runs as soon as
    the kernel is ready, no output is lost for it, and the notebook on disk is rewritten at the
    start and the end, not around every cell (papermill's own engine writes 2 + 2 x cells times)."""
    import time

    import nbformat
    import papermill.engines
    from nbformat.v4 import new_code_cell, new_notebook

    from runner.dag import Stage
    from runner.execute import SAVE_EVERY_S, WarmUp, execute_stage, resolve_kernel, start_kernel

    source = tmp_path / "stage.ipynb"
    cells = [new_code_cell("x = 1", metadata={"tags": ["parameters"]})]
    cells += [new_code_cell(f"print({i} * x)") for i in range(12)]
    metadata = {"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}}
    nbformat.write(new_notebook(cells=cells, metadata=metadata), source)
    writes: list[float] = []
    write = papermill.engines.write_ipynb
    monkeypatch.setattr(
        papermill.engines, "write_ipynb", lambda nb, path: (writes.append(time.monotonic()), write(nb, path))
    )

    name = resolve_kernel("bentley")
    kernel = start_kernel(name, tmp_path, WarmUp(modules=("json",)), 1)
    stage = Stage("s", source, (), (), timeout_s=120, retries=0)
    clock = time.monotonic()
    attempt = execute_stage(stage, tmp_path / "out.ipynb", {"x": 3}, kernel=kernel, kernel_name=name, cwd=tmp_path)
    elapsed = time.monotonic() - clock

    assert attempt.status == "success", attempt.error
    executed = [c for c in nbformat.read(tmp_path / "out.ipynb", as_version=4).cells if c.cell_type == "code"]
    printed = [c for c in executed if c.source.startswith("print")]
    assert [c.outputs[0]["text"] for c in printed] == [f"{3 * i}\n" for i in range(12)]
    assert [c.execution_count for c in executed] == list(range(1, len(executed) + 1))
    assert {c.metadata.papermill["status"] for c in executed} == {"completed"}
    # Between the first and the last write, one more only each time the copy on disk was SAVE_EVERY_S old.
    assert len(writes) <= 2 + elapsed / SAVE_EVERY_S, (len(writes), elapsed)
