"""`runner schedule`: two schedulers firing the same tick at once run it exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bentley.warehouse import Warehouse
from tests.tiny_pipeline import write_pipeline

pytestmark = pytest.mark.integration

NOW = "2025-06-02T10:30:00-04:00"  # a Monday session: the latest tick is 10:05 New York
RUN_ID = "sched-20250602T1405Z"


def test_two_schedulers_at_once_run_each_tick_once(tmp_path: Path, root: Path, clean_env: dict[str, str]) -> None:
    executions = tmp_path / "executions.txt"
    record = f"open({str(executions)!r}, 'a').write(run_id + ' ' + logical_date + ' {{stage}}\\n')"
    pipeline = write_pipeline(
        tmp_path,
        {
            "slow": {"code": "import time\ntime.sleep(3)\n" + record.replace("{stage}", "slow")},
            "after": {"code": record.replace("{stage}", "after"), "upstream": ["slow"]},
        },
    )
    outputs = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "runner",
        "schedule",
        "--once",
        "--now",
        NOW,
        "--outputs",
        str(outputs),
        "--pipeline",
        str(pipeline),
    ]
    processes = [
        subprocess.Popen(command, cwd=root, env=clean_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=300)
        results.append((process.returncode, stdout, stderr))

    for code, stdout, stderr in results:
        assert code == 0, f"exit {code}\n{stdout}\n{stderr}"
    screens = [stdout for _, stdout, _ in results]
    stood_aside = [s for s in screens if f"tick {RUN_ID} skipped:" in s or "already finished" in s]
    assert len(stood_aside) == 1, screens  # the other one ran the tick

    assert executions.read_text().splitlines() == [f"{RUN_ID} 2025-06-02 slow", f"{RUN_ID} 2025-06-02 after"]
    warehouse = Warehouse(f"sqlite:///{outputs / 'warehouse.db'}")
    try:
        runs = warehouse.read("pipeline_runs")
        assert runs["run_id"].tolist() == [RUN_ID]
        assert runs["status"].tolist() == ["success"]
        assert runs["logical_date"].dt.date.astype(str).tolist() == ["2025-06-02"]
        stages = warehouse.read("stage_runs")
        assert sorted(zip(stages["stage"], stages["attempt"], stages["status"], strict=True)) == [
            ("after", 1, "success"),
            ("slow", 1, "success"),
        ]
        assert warehouse.read("leases").empty, "the lease is released after the run"
    finally:
        warehouse.dispose()

    again = subprocess.run(command, cwd=root, env=clean_env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already finished" in again.stdout
    assert len(executions.read_text().splitlines()) == 2, "a rerun of a finished tick runs nothing"


def test_sigterm_lets_the_running_stage_finish_then_the_scheduler_stops(
    tmp_path: Path, root: Path, clean_env: dict[str, str]
) -> None:
    import re
    import signal
    import urllib.request

    pipeline = write_pipeline(
        tmp_path,
        {
            "slow": {"code": "import time\ntime.sleep(4)"},
            "after": {"code": "print('after')", "upstream": ["slow"]},
        },
    )
    outputs = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "runner",
        "schedule",
        "--now",
        "2025-06-02T10:04:58-04:00",
        "--outputs",
        str(outputs),
        "--pipeline",
        str(pipeline),
        "--set",
        "schedule.health_port=0",
        "--set",
        "schedule.catch_up=none",
    ]
    process = subprocess.Popen(
        command,
        cwd=root,
        env={**clean_env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[str] = []
    try:
        for line in process.stdout:  # type: ignore[union-attr]
            seen.append(line)
            found = re.search(r"health at (http://\S+)", line)
            if found:
                with urllib.request.urlopen(found.group(1) + "/scheduler", timeout=60) as response:
                    assert json.loads(response.read())["status"] == "ok"
            if "slow started" in line:
                process.send_signal(signal.SIGTERM)
                break
        rest, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    screen = "".join(seen) + rest
    assert process.returncode == 0, screen
    assert "stopping after the running stage(s) finish" in screen
    warehouse = Warehouse(f"sqlite:///{outputs / 'warehouse.db'}")
    try:
        stages = dict(zip(*warehouse.read("stage_runs")[["stage", "status"]].T.values, strict=True))
        assert stages.get("slow") == "success", screen  # the running stage finished
        assert stages.get("after") != "success", screen  # nothing new started
        assert warehouse.read("pipeline_runs")["status"].tolist() == ["interrupted"]
        beat = warehouse.read("scheduler_heartbeats")
        assert beat["status"].tolist() == ["stopped"] and beat["last_run_id"].tolist() == [RUN_ID]
    finally:
        warehouse.dispose()
