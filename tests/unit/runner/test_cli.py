"""The command line: its name in `--help`, and `report` writing the home page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner import cli


@pytest.mark.parametrize(
    ("argv0", "name"),
    [
        ("/work/.venv/bin/bentley", "bentley"),  # [project.scripts] bentley = "runner.cli:entry_point"
        ("/work/runner/__main__.py", "python -m runner"),
        ("", "python -m runner"),
    ],
)
def test_help_names_the_command_the_user_typed(argv0: str, name: str) -> None:
    assert cli.program_name(argv0) == name


def test_bentley_help_says_bentley(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.argv", ["/somewhere/bin/bentley", "--help"])
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert capsys.readouterr().out.startswith("usage: bentley ")


def test_report_writes_the_home_page_and_prints_its_path(
    tmp_path: Path, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(
        json.dumps(
            {
                "run_id": "r1",
                "status": "success",
                "profile": "default",
                "logical_date": "2026-12-02",
                "started_at": "2026-12-03T10:00:00+00:00",
                "overrides": ["history.years=1"],
                "stages": {"etl": {"status": "success", "report": "reports/etl.html"}},
            }
        )
    )
    (tmp_path / "runs" / "interactive-20261203T110000Z" / "stage_results").mkdir(parents=True)
    assert cli.main(["--root", str(root), "report", "--outputs", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "index.html")
    page = (tmp_path / "index.html").read_text()
    assert "--set history.years=1" in page and "interactive-20261203T110000Z" in page
