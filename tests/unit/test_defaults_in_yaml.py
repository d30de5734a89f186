"""Defaults live in params/default.yaml only: functions too, not just the params models.

tests/unit/test_config.py checks that no params model field has a code default. A function
parameter named like a params field (`seed`, `window`, `garch`, `timezone`, `max_attempts`)
with a literal default is the same setting given a second default: callers that forget to
pass the params value silently get the code's number, and changing the YAML does not change
what they do. Such a parameter must be required, and its callers pass the params value.

The rule is by name, so a parameter that only shares a name with a field (and means something
else) is listed in `NOT_A_SETTING` with the reason.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

from bentley import config

LIB = Path(__file__).resolve().parents[2] / "lib" / "bentley"

#: (module, function, parameter) -> why its default is not a params value.
NOT_A_SETTING: dict[tuple[str, str, str], str] = {
    ("bentley.analytics.risk", "probabilistic_sharpe_ratio", "benchmark"): (
        "the Sharpe ratio to beat (0 in the PSR's definition), not universe.benchmark (a ticker)"
    ),
    ("bentley.trading.backtest", "sweep_heatmap", "metric"): (
        "a column of the sweep table to colour by, not ml.promotion.metric"
    ),
}


def field_names() -> frozenset[str]:
    """Every field name (and alias) of every params model in bentley.config."""
    names: set[str] = set()
    for model in vars(config).values():
        if inspect.isclass(model) and issubclass(model, config.Section) and model is not config.Section:
            for name, field in model.model_fields.items():
                names.add(name)
                if field.alias:
                    names.add(field.alias)
    return frozenset(names)


def _literal(node: ast.expr) -> bool:
    """A number, string or bool (signed, or a tuple/list/set of them): a value, not "absent" (None)."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        return _literal(node.operand)
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return bool(node.elts) and all(_literal(element) for element in node.elts)
    return isinstance(node, ast.Constant) and isinstance(node.value, int | float | str)


def _public(name: str) -> bool:
    return not name.startswith("_") or name == "__init__"


def _functions(body: list[ast.stmt], prefix: str = "") -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Public functions, and public methods of public classes (nested classes too)."""
    for node in body:
        if isinstance(node, ast.ClassDef) and _public(node.name):
            yield from _functions(node.body, f"{prefix}{node.name}.")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _public(node.name):
            yield f"{prefix}{node.name}", node


def duplicated_defaults(source: str, module: str, fields: frozenset[str]) -> list[tuple[str, str, str, str]]:
    """(module, function, parameter, default) for each parameter named like a params field with a literal default."""
    found = []
    for name, function in _functions(ast.parse(source).body):
        args = function.args
        positional = args.posonlyargs + args.args
        pairs = list(zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True))
        pairs += [(arg, default) for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True) if default]
        found += [
            (module, name, arg.arg, ast.unparse(default))
            for arg, default in pairs
            if arg.arg in fields and _literal(default)
        ]
    return found


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(LIB.rglob("*.py")):
        parts = path.relative_to(LIB.parent).with_suffix("").parts
        out.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return out


@pytest.fixture(scope="module")
def fields() -> frozenset[str]:
    return field_names()


@pytest.mark.parametrize(("module", "path"), modules(), ids=[name for name, _ in modules()])
def test_no_function_gives_a_params_setting_a_second_default(module: str, path: Path, fields: frozenset[str]) -> None:
    found = [
        hit
        for hit in duplicated_defaults(path.read_text(encoding="utf-8"), module, fields)
        if hit[:3] not in NOT_A_SETTING
    ]
    assert not found, "defaults that duplicate params/default.yaml (make them required; callers pass the params):\n" + (
        "\n".join(f"{m}.{f}({p}={d})" for m, f, p, d in found)
    )


def test_the_rule_sees_what_it_must_and_nothing_else(fields: frozenset[str]) -> None:
    source = """
def seeded(x, seed=0, *, window=-5, timezone="UTC", sma_windows=(10, 20)): ...
def optional(seed=None, path=None): ...
def other(count=3, label="x"): ...
def _private(seed=0): ...
class Caller:
    def __init__(self, max_attempts=3): ...
    def call(self, *, timeout_s=5.0): ...
    def _retry(self, backoff_s=1.0): ...
class _Hidden:
    def run(self, seed=0): ...
"""
    assert duplicated_defaults(source, "m", fields) == [
        ("m", "seeded", "seed", "0"),
        ("m", "seeded", "window", "-5"),
        ("m", "seeded", "timezone", "'UTC'"),
        ("m", "seeded", "sma_windows", "(10, 20)"),
        ("m", "Caller.__init__", "max_attempts", "3"),
        ("m", "Caller.call", "timeout_s", "5.0"),
    ]


def test_every_exception_still_names_a_parameter_with_a_default(fields: frozenset[str]) -> None:
    """An exception whose parameter was renamed or made required is dead weight: remove it."""
    present = {
        hit[:3]
        for module, path in modules()
        for hit in duplicated_defaults(path.read_text(encoding="utf-8"), module, fields)
    }
    assert set(NOT_A_SETTING) <= present, set(NOT_A_SETTING) - present
