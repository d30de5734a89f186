"""Params: layering, validation and the errors people see."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from bentley import config
from bentley.config import ParamsError, load_config


@pytest.fixture()
def project(tmp_path: Path, root: Path) -> Path:
    """A copy of params/ to edit freely."""
    shutil.copytree(root / "params", tmp_path / "params", ignore=shutil.ignore_patterns("local.yaml"))
    return tmp_path


def test_default_carries_the_seed_workflow_settings(project: Path) -> None:
    cfg = load_config(root=project)
    wf = cfg.workflow
    assert wf.timezone == "America/New_York"
    assert (wf.market_hours.open, wf.market_hours.close) == (dt.time(9, 30), dt.time(16, 0))
    assert wf.trading_days == ["MON", "TUE", "WED", "THU", "FRI"]
    assert (wf.retention.raw_days, wf.retention.processed_days, wf.retention.logs_days) == (365, 1095, 30)
    assert wf.max_execution_time_minutes == 30
    assert wf.alert_after_failures == 3
    assert wf.data_freshness_minutes == 60
    assert cfg.universe.tickers is None
    assert {cfg.sources.market.kind, cfg.sources.news.kind, cfg.sources.portfolio.kind} == {"sample"}


def test_layers_apply_in_order(project: Path) -> None:
    (project / "params" / "local.yaml").write_text("sample:\n  n_tickers: 5\nhistory:\n  years: 2\n")
    cfg = load_config("ci", ["history.years=3", "universe.tickers=[nova, QBIT]"], root=project)
    assert cfg.sample.n_tickers == 5  # local.yaml beats the ci profile's 3
    assert cfg.history.years == 3  # --set beats local.yaml
    assert cfg.universe.tickers == ["NOVA", "QBIT"]  # YAML list, normalized
    assert cfg.sample.seed == 42  # untouched keys keep the default


def test_unknown_key_in_a_file_names_file_key_and_line(project: Path) -> None:
    profile = project / "params" / "profiles" / "typo.yaml"
    profile.write_text("history:\n  years: 2\n  yeras: 3\n")
    with pytest.raises(ParamsError) as err:
        load_config("typo", root=project)
    assert str(err.value) == f"{profile}:3: history.yeras: unknown key"


def test_bad_value_in_a_set_override_names_the_key() -> None:
    with pytest.raises(ParamsError, match=r"^--set: workflow\.timezone: unknown timezone 'Mars/Base'"):
        load_config(overrides=["workflow.timezone=Mars/Base"])


def test_missing_profile_lists_the_known_ones(project: Path) -> None:
    with pytest.raises(ParamsError, match=r"no such profile 'nope'; known: ci, large"):
        load_config("nope", root=project)


def test_broken_yaml_gives_file_and_line(project: Path) -> None:
    (project / "params" / "local.yaml").write_text("sample:\n  seed: [1, 2\n")
    with pytest.raises(ParamsError, match=r"local\.yaml:\d+: invalid YAML"):
        load_config(root=project)


def test_passwords_are_refused_as_parameters() -> None:
    with pytest.raises(ParamsError, match="BENTLEY_WAREHOUSE_PASSWORD"):
        load_config(overrides=["warehouse.url=postgresql+psycopg://bot:hunter2@127.0.0.1/db"])


def test_every_default_lives_in_yaml_not_in_code() -> None:
    """No params model field has a default: default.yaml is the one place defaults live."""
    for name in config.SECTION_NAMES:
        model = config.section_model(name)
        stack = [model]
        while stack:
            current = stack.pop()
            for field_name, field in current.model_fields.items():
                assert field.is_required(), f"{current.__name__}.{field_name} has a code default"
                annotation = field.annotation
                if isinstance(annotation, type) and issubclass(annotation, config.Section):
                    stack.append(annotation)


def test_history_window_defaults_to_years_before_the_logical_date() -> None:
    cfg = load_config("ci")
    assert cfg.history.window(dt.date(2025, 6, 2)) == (dt.date(2024, 6, 2), dt.date(2025, 6, 2))


def test_history_end_after_the_logical_date_is_refused() -> None:
    cfg = load_config(overrides=["history.end=2025-07-01"])
    with pytest.raises(ParamsError, match="after the logical date"):
        cfg.history.window(dt.date(2025, 6, 2))


def test_params_hash_changes_with_any_value() -> None:
    assert load_config().params_hash() == load_config().params_hash()
    assert load_config().params_hash() != load_config(overrides=["sample.seed=7"]).params_hash()


def test_flatten_for_mlflow() -> None:
    flat = config.flatten({"a": {"b": 1, "c": [1, 2]}, "d": None})
    assert flat == {"a.b": 1, "a.c": "[1, 2]", "d": None}


def test_set_needs_key_and_value() -> None:
    with pytest.raises(ParamsError, match="expected key.path=value"):
        load_config(overrides=["history.years"])


def test_each_profile_has_its_own_store_unless_outputs_names_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BENTLEY_OUTPUTS", raising=False)
    assert config.outputs_dir(root=tmp_path) == tmp_path / "outputs"
    assert config.outputs_dir(root=tmp_path, profile="ci") == tmp_path / "outputs" / "profiles" / "ci"
    monkeypatch.setenv("BENTLEY_OUTPUTS", str(tmp_path / "base"))
    assert config.outputs_dir(root=tmp_path) == tmp_path / "base"
    assert config.outputs_dir(root=tmp_path, profile="large") == tmp_path / "base" / "profiles" / "large"
    shared = tmp_path / "shared"
    assert config.outputs_dir(shared, tmp_path, "ci") == config.outputs_dir(shared, tmp_path) == shared
    (tmp_path / "base" / "profiles" / "ci").mkdir(parents=True)
    assert config.profile_stores(None, tmp_path) == [tmp_path / "base", tmp_path / "base" / "profiles" / "ci"]
    assert config.profile_stores(shared, tmp_path) == [shared]
