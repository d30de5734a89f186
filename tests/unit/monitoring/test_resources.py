"""Host resources: a sustained CPU reading that names whose processes, one disk figure everywhere."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bentley.config import load_config
from bentley.monitoring import alerts, kpis, resources


@pytest.mark.parametrize(
    ("load5", "cores", "own_s", "alive_s", "share"),
    [
        (2.0, 2, 0.0, 1.0, 1.0),  # others kept both cores busy for 5 minutes
        (1.0, 2, 0.0, 1.0, 0.5),
        (2.0, 2, 300.0, 300.0, 0.5),  # half of it was this pipeline, running for the whole window
        (2.0, 2, 600.0, 600.0, 0.5),  # a longer pipeline: only its share inside the window counts
        (0.3, 2, 120.0, 100.0, 0.0),  # the pipeline alone: nothing left for others
        (9.0, 2, 0.0, 1.0, 1.0),  # a queue longer than the cores: saturated, no more
    ],
)
def test_the_sustained_share_leaves_the_pipeline_out(load5, cores, own_s, alive_s, share) -> None:
    assert resources.sustained_share(load5, cores, own_s, alive_s) == pytest.approx(share)


def test_a_busy_moment_alone_does_not_make_a_busy_host() -> None:
    """A 1-second run on a shared machine samples someone else's burst at 99%; over 5 minutes
    the machine was a quarter busy: the reading is the lower one, and no alert fires."""
    burst = resources.CpuUse(
        share=min(0.99, 0.25), sample=0.99, sustained=0.25, top=[("python -m pytest", 42, "ci", 99.0)]
    )
    params = load_config()
    table = kpis.kpi_table(
        kpis.History(
            pd.DataFrame(columns=["run_id", "status", "started_at", "ended_at"]),
            pd.DataFrame(columns=["run_id", "stage", "attempt", "status", "started_at", "ended_at", "duration_s"]),
        ),
        params,
        run_id="r",
        logical_date=pd.Timestamp("2025-06-02").date(),
        now=pd.Timestamp("2025-06-03 15:00", tz="UTC").to_pydatetime(),
        resources=kpis.Resources(burst.share, 0.1, 0.1, "/o", cpu_detail=burst.detail()),
    )
    assert kpis.kpi_value(table, "cpu_use", kpis.HOST) == 0.25
    assert alerts.evaluate_rules(table, params).query("rule == 'resource_use'").empty


def test_a_sustained_busy_host_alerts_and_names_the_processes() -> None:
    busy = resources.CpuUse(share=0.97, sample=0.99, sustained=0.97, top=[("python -m mypy", 9140, "root", 88.0)])
    params = load_config()
    table = pd.DataFrame(
        [
            {
                "run_id": "r",
                "kpi": "cpu_use",
                "scope": "host",
                "value": busy.share,
                "unit": "share",
                "detail": busy.detail(),
                "measured_at": pd.Timestamp("2025-06-03", tz="UTC"),
            }
        ]
    )
    found = alerts.evaluate_rules(table, params)
    message = found.query("rule == 'resource_use'")["message"].iloc[0]
    assert "97%" in message and "over 5 min" in message and "python -m mypy (pid 9140, root) 88%" in message


def test_cpu_use_measures_shares_and_keeps_secrets_out_of_process_names() -> None:
    measured = resources.cpu_use(interval_s=0.05)
    assert 0.0 <= measured.share <= 1.0 and measured.share <= measured.sample
    assert measured.sustained is None or 0.0 <= measured.sustained <= 1.0
    assert (
        resources._command({"cmdline": ["/usr/bin/psql", "postgresql://u:pw@h/db", "-c", "select 1"]})
        == "psql -c select 1"
    )
    assert (
        resources._command({"cmdline": ["/x/python", "-Xfrozen_modules=off", "-m", "runner", "run"]})
        == "python -m runner"
    )
    assert not math.isnan(resources.memory_use())


def test_kpi_display_shows_values_in_their_units_measured_first() -> None:
    table = pd.DataFrame(
        [
            {
                "kpi": "success_rate",
                "scope": "pipeline",
                "value": float("nan"),
                "unit": "share",
                "detail": "no run yet",
            },
            {"kpi": "stage_duration_s", "scope": "etl", "value": 4.03, "unit": "seconds", "detail": ""},
            {"kpi": "cpu_use", "scope": "host", "value": 0.25, "unit": "share", "detail": "x"},
            {"kpi": "equity", "scope": "paper", "value": 100000.0, "unit": "usd", "detail": ""},
            {"kpi": "minutes_since_ingest", "scope": "ingest", "value": 2.0, "unit": "minutes", "detail": ""},
        ]
    )
    shown = kpis.kpi_display(table, per_stage=False)
    assert shown["kpi"].tolist() == ["cpu_use", "equity", "minutes_since_ingest", "success_rate"]
    assert shown["value"].tolist() == ["25.0%", "100,000 USD", "2.0 min", "n/a"]
