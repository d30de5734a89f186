"""`ctx.params` carries the typed params models into the library, and only the declared ones."""

from __future__ import annotations

import typing

import pytest

from bentley import config
from bentley.stage import StageParams, open_stage


def test_every_params_section_has_its_model_type_on_stage_params() -> None:
    hints = typing.get_type_hints(StageParams)
    assert {name: hints.get(name) for name in config.Config.model_fields} == {
        name: field.annotation for name, field in config.Config.model_fields.items()
    }


def test_a_stage_gets_its_declared_sections_as_models(tmp_path) -> None:
    ctx = open_stage(
        "trade", run_id=None, logical_date="2024-06-28", outputs_dir=str(tmp_path), trade=None, warehouse=None
    )
    assert isinstance(ctx.params.trade, config.Trade)
    assert isinstance(ctx.params.warehouse, config.Warehouse)
    assert list(ctx.params.sections()) == ["trade", "warehouse"]
    assert set(ctx.resolved_params()) == {"trade", "warehouse"}


def test_reading_an_undeclared_section_says_where_to_declare_it(tmp_path) -> None:
    ctx = open_stage("trade", run_id=None, logical_date="2024-06-28", outputs_dir=str(tmp_path), trade=None)
    with pytest.raises(AttributeError, match=r"'ml' is not available to this stage: .*params/pipeline.yaml"):
        _ = ctx.params.ml
