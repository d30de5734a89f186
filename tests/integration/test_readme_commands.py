"""Every `runner …` and `make pipeline …` command in the README's "Using it" section works.

The commands are read from the README itself, so a command added there is tested without
touching this file. They run in the order shown, in one outputs folder, as a user working
through the section would (a backdated run after a run for the latest date is exactly what
used to fail), on the ci profile; only `--profile`, `--outputs` and placeholders are adapted:
`RUN_ID` is a run stopped with SIGTERM, `[X]` runs the command without and with X,
`/tmp/sandbox` and `dags/` go to the test's temp folder. `runner schedule` and a live
`runner watch` are long-running: they are stopped with SIGTERM once they say they are up.
"""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PROFILE = "ci"
#: Verbs that take --profile and --outputs; `status`, `resume` and `report` take --outputs only.
PROFILED = {"run", "schedule", "health", "retention", "paper", "watch"}
STORED = PROFILED | {"status", "resume", "report"}
#: Documented exit codes other than 0: `runner health` exits 1 when degraded (no scheduler runs here).
DOCUMENTED_EXIT = {"health": {0, 1}}


def readme_commands(readme: Path) -> list[str]:
    """Command lines of the ```bash blocks under "## Using it", comments removed."""
    text = readme.read_text()
    section = text.split("\n## Using it", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.splitlines():
            line = line.split(" # ", 1)[0].strip()
            if line.startswith((".venv/bin/python -m runner ", "make pipeline")):
                commands.append(line)
    return commands


def expand_optional(command: str) -> list[str]:
    """`status [RUN_ID]` -> `status`, `status RUN_ID`."""
    match = re.search(r" \[([^\]]+)\]", command)
    if not match:
        return [command]
    return [command.replace(match.group(0), ""), command.replace(match.group(0), " " + match.group(1))]


def test_the_readme_lists_the_commands_this_test_runs(root: Path) -> None:
    commands = readme_commands(root / "README.md")
    assert len(commands) >= 18, commands
    assert any("--logical-date 2025-06-02" in c for c in commands)


def test_every_readme_command_runs(tmp_path: Path, root: Path, clean_env: dict[str, str]) -> None:
    store = tmp_path / "outputs"
    env = {**clean_env, "PYTHONUNBUFFERED": "1"}
    results = []
    for line in readme_commands(root / "README.md"):
        for command in expand_optional(line):
            if "RUN_ID" in command:
                command = command.replace("RUN_ID", _stopped_run(store, env, root))
            argv = _adapt(command, store, tmp_path)
            started = time.perf_counter()
            if command.split()[3:] == ["schedule"]:  # long-running
                code = _run_until_serving(argv, env, root)
            elif command.split()[3:] == ["watch"]:  # live: idles outside market hours, watches inside
                code = _run_until_first_line(argv, env, root)
            else:
                done = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=900)
                code = done.returncode
                if code not in DOCUMENTED_EXIT.get(argv[3] if len(argv) > 3 else "", {0}):
                    pytest.fail(f"{command!r} exited {code}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
            results.append((command, code, time.perf_counter() - started))
    assert len(results) >= 21, results
    print("\n".join(f"exit {code}  {seconds:5.1f} s  {command}" for command, code, seconds in results))  # with -s
    assert (tmp_path / "sandbox" / "warehouse.db").is_file()
    assert (tmp_path / "dags" / "bentley_pipeline.py").is_file()


def _adapt(command: str, store: Path, tmp_path: Path) -> list[str]:
    words = shlex.split(
        command.replace("/tmp/sandbox", str(tmp_path / "sandbox")).replace("--out dags/", f"--out {tmp_path / 'dags'}")
    )
    if words[0] == "make":
        variables = {w.split("=", 1)[0] for w in words[2:] if "=" in w}
        extra = [f"OUTPUTS={store}"] + ([] if "PROFILE" in variables else [f"PROFILE={PROFILE}"])
        return ["make", "-s", *words[1:2], *extra, *words[2:]]
    runner_args = words[3:]  # after `.venv/bin/python -m runner`
    verb = runner_args[0]
    if verb in PROFILED and "--profile" not in runner_args:
        runner_args += ["--profile", PROFILE]
    if verb in STORED and "--outputs" not in runner_args:
        runner_args += ["--outputs", str(store)]
    return [sys.executable, "-m", "runner", *runner_args]


def _stopped_run(store: Path, env: dict[str, str], root: Path) -> str:
    """A run stopped with SIGTERM after its first stage started: what `resume` is for."""
    run_id = "stopped-run"
    if (store / "runs" / run_id).is_dir():
        return run_id
    argv = [
        sys.executable,
        "-m",
        "runner",
        "run",
        "--profile",
        PROFILE,
        "--outputs",
        str(store),
        "--force",
        "--run-id",
        run_id,
    ]
    process = subprocess.Popen(argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if "started" in line:
            process.send_signal(signal.SIGTERM)
            break
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 1 and "runner resume stopped-run" in out, out
    return run_id


def _run_until_first_line(argv: list[str], env: dict[str, str], root: Path) -> int:
    """A live `runner watch`: its first line says it is idle until the open or watching; SIGTERM
    then ends it cleanly after the batch in progress."""
    process = subprocess.Popen(argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    first = process.stdout.readline()
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0 and ("market hours" in first or "watching" in first), first + out
    return process.returncode


def _run_until_serving(argv: list[str], env: dict[str, str], root: Path) -> int:
    process = subprocess.Popen(argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    first = process.stdout.readline()  # "<time> schedule · scheduler <id> · every 60 min ..." once it is up
    time.sleep(2)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=600)
    out = first + out
    assert "schedule · scheduler " in first, out
    assert process.returncode == 0, out
    return process.returncode
