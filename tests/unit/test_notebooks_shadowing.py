"""A notebook's cells can be re-run in any order in JupyterLab without raising or changing meaning.

The runner injects parameters by name (papermill) and the first cells pass them to
`stage.open_stage`; imported modules are used by every later cell. A later cell that rebinds
one of those names (`features = load_window(...)` where `features` is the params section, or
`history = ...` where `history` is a parameter) breaks the notebook as soon as an earlier
cell is run again: `open_stage` gets a DataFrame for a section, or a module call hits a
frame. So no name bound by the parameters cell or by an import may be bound again by a
later cell (assignment, loop or `with` target, `del`, def/class, or an import of something
else under the same name).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _notebooks() -> list[Path]:
    return sorted(p for p in NOTEBOOKS.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def _code_cells(path: Path) -> list[tuple[int, bool, ast.Module]]:
    """(cell index, tagged `parameters`, parsed source) of each code cell; magics and shell lines blanked."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    parsed = []
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()]
        tagged = "parameters" in cell.get("metadata", {}).get("tags", [])
        parsed.append((index, tagged, ast.parse("\n".join(lines), filename=f"{path.name} cell {index}")))
    return parsed


def _import_bindings(node: ast.Import | ast.ImportFrom) -> Iterator[tuple[str, str]]:
    """(name bound, what it is bound to) for each alias of an import statement."""
    for alias in node.names:
        if isinstance(node, ast.Import):
            name = alias.asname or alias.name.split(".")[0]
            yield name, alias.name if alias.asname else name
        else:
            yield alias.asname or alias.name, f"{'.' * node.level}{node.module or ''}:{alias.name}"


def _target_names(target: ast.AST) -> Iterator[str]:
    if isinstance(target, ast.Name):
        yield target.id
    elif isinstance(target, ast.Tuple | ast.List):
        for element in target.elts:
            yield from _target_names(element)
    elif isinstance(target, ast.Starred):
        yield from _target_names(target.value)


def _bindings(node: ast.AST, line: int = 0) -> Iterator[tuple[str, int, str | None]]:
    """(name, line, import identity or None) for every name the cell binds in the notebook's namespace.

    Function and class bodies and comprehension variables have scopes of their own; a walrus
    inside a comprehension still binds in the notebook's namespace.
    """
    for child in ast.iter_child_nodes(node):
        at = getattr(child, "lineno", line)
        if isinstance(child, ast.Import | ast.ImportFrom):
            for name, identity in _import_bindings(child):
                yield name, at, identity
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield child.name, at, None
        elif isinstance(child, ast.Assign):
            for target in child.targets:
                yield from ((name, at, None) for name in _target_names(target))
        elif isinstance(child, ast.AnnAssign | ast.AugAssign | ast.For | ast.AsyncFor | ast.NamedExpr):
            yield from ((name, at, None) for name in _target_names(child.target))
        elif isinstance(child, ast.withitem) and child.optional_vars is not None:
            yield from ((name, at, None) for name in _target_names(child.optional_vars))
        elif isinstance(child, ast.Delete):
            for target in child.targets:
                yield from ((name, at, None) for name in _target_names(target))
        elif isinstance(child, ast.ExceptHandler) and child.name:
            yield child.name, at, None
        if isinstance(child, _SCOPES):
            continue
        if isinstance(child, _COMPREHENSIONS):
            yield from (
                (name, getattr(n, "lineno", at), None)
                for n in ast.walk(child)
                if isinstance(n, ast.NamedExpr)
                for name in _target_names(n.target)
            )
            continue
        yield from _bindings(child, at)


def shadowed(path: Path) -> list[str]:
    """Each later rebinding of a parameter or an imported name, as `name (cell i, line l): bound in cell j`."""
    protected: dict[str, tuple[int, str | None]] = {}  # name -> (cell that bound it, import identity)
    problems = []
    for index, is_parameters, tree in _code_cells(path):
        for name, line, identity in _bindings(tree):
            if (
                name in protected
                and protected[name][0] != index
                and (identity is None or identity != protected[name][1])
            ):
                what = "a parameter" if protected[name][1] is None else "an import"
                problems.append(f"{name} (cell {index}, line {line}): {what} of cell {protected[name][0]}")
            elif name not in protected and (is_parameters or identity is not None):
                protected[name] = (index, identity)
    return problems


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: str(p.relative_to(NOTEBOOKS)))
def test_no_cell_rebinds_a_parameter_or_an_import(path):
    problems = shadowed(path)
    assert not problems, f"{path.relative_to(NOTEBOOKS.parent)} rebinds: " + "; ".join(problems)


def test_the_check_sees_a_rebound_parameter_and_a_rebound_import(tmp_path):
    cells = [
        ("features = None\nhistory = None", ["parameters"]),
        ("from bentley import inputs\nimport datetime as dt", []),
        ("for history in []:\n    pass\nrows = [dt for dt in range(3)]\nimport datetime as dt", []),
        ("def helper():\n    features = 1\n    return features\nfeatures, other = 1, 2", []),
        ("with open('x') as inputs:\n    pass", []),
    ]
    notebook = {
        "cells": [
            {"cell_type": "code", "metadata": {"tags": tags}, "source": source, "outputs": []} for source, tags in cells
        ]
    }
    path = tmp_path / "example.ipynb"
    path.write_text(json.dumps(notebook), encoding="utf-8")

    assert shadowed(path) == [
        "history (cell 2, line 1): a parameter of cell 0",
        "features (cell 3, line 4): a parameter of cell 0",
        "inputs (cell 4, line 1): an import of cell 1",
    ]
