"""The Apache Airflow environment `tests/integration/test_airflow.py` runs the exported DAG in.

Airflow gets a virtual environment of its own: its pins are not the project's. The requirement
is `runner.airflow.AIRFLOW_REQUIREMENT`, installed from the registry into `.venv-airflow` (or
`$BENTLEY_AIRFLOW_VENV`) and reused while the requirement is unchanged.

`make airflow-env` (`python -m tests.airflow_env`) builds it ahead: `.ci/run` does while
`make lint` runs, so the minute pip takes is not spent inside the test suite. The Airflow
tests build it themselves when it is missing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from runner.airflow import AIRFLOW_REQUIREMENT

ROOT = Path(__file__).resolve().parent.parent


class AirflowInstallFailed(RuntimeError):
    """pip could not install the requirement; the message ends with pip's error."""


def airflow_venv(root: Path = ROOT) -> Path:
    """A virtual environment with Airflow, created (or brought up to the requirement) here."""
    venv = Path(os.environ.get("BENTLEY_AIRFLOW_VENV") or root / ".venv-airflow")
    marker = venv / ".bentley-requirement"
    if marker.is_file() and marker.read_text() == AIRFLOW_REQUIREMENT and (venv / "bin" / "airflow").exists():
        return venv
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, text=True)
    done = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            AIRFLOW_REQUIREMENT,
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise AirflowInstallFailed(
            f"pip could not install {AIRFLOW_REQUIREMENT} from the registry (exit {done.returncode}):\n"
            f"{done.stderr[-6000:]}"
        )
    marker.write_text(AIRFLOW_REQUIREMENT)
    return venv


if __name__ == "__main__":
    try:
        print(f"{AIRFLOW_REQUIREMENT} in {airflow_venv()}")
    except AirflowInstallFailed as exc:
        sys.exit(str(exc))
