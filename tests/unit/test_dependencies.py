"""Every third-party module that lib/ or runner/ imports is declared in pyproject.toml.

A package that only arrives as some other package's dependency can vanish on that package's
next release (requests came with yfinance and mlflow, skops with nothing we declared), and
`pip install .` on a clean machine then fails at import time, in whichever stage first needs it.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

#: Our own top-level packages.
FIRST_PARTY = frozenset({"bentley", "runner"})


def imported_modules(root: Path) -> dict[str, set[str]]:
    """Top-level modules imported anywhere under lib/ and runner/ (inside functions and
    TYPE_CHECKING blocks too) -> the files importing them. Relative imports are our own."""
    found: dict[str, set[str]] = {}
    for folder in ("lib", "runner"):
        for path in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(root)))
    return found


def third_party(root: Path) -> dict[str, set[str]]:
    return {
        module: files
        for module, files in imported_modules(root).items()
        if module not in sys.stdlib_module_names and module not in FIRST_PARTY
    }


def declared(root: Path) -> dict[str, Requirement]:
    """`[project] dependencies` by canonical distribution name."""
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = [Requirement(line) for line in project["dependencies"]]
    return {canonicalize_name(requirement.name): requirement for requirement in requirements}


def test_the_scan_sees_direct_imports_and_ignores_the_standard_library(root: Path) -> None:
    modules = third_party(root)
    assert {"pandas", "requests", "skops", "psutil"} <= set(modules)
    assert "lib/bentley/monitoring/alerts.py" in modules["requests"]
    assert not {"json", "typing", "__future__", "bentley", "runner"} & set(modules)


def test_every_direct_import_is_declared_with_a_range_the_installed_version_meets(root: Path) -> None:
    distributions = packages_distributions()
    requirements = declared(root)
    problems = []
    for module, files in sorted(third_party(root).items()):
        where = ", ".join(sorted(files)[:3])
        names = {canonicalize_name(name) for name in distributions.get(module, [])}
        if not names:
            problems.append(f"{module} (imported by {where}) is not installed, so not declared either")
            continue
        mine = sorted(names & set(requirements))
        if not mine:
            problems.append(
                f"{module} (imported by {where}) comes from {sorted(names)}: none is in [project] dependencies"
            )
            continue
        requirement = requirements[mine[0]]
        installed = version(mine[0])
        if not requirement.specifier:
            problems.append(f"{requirement.name} is declared without a version range")
        elif not requirement.specifier.contains(installed, prereleases=True):
            problems.append(
                f"{requirement.name} {installed} is installed, outside the declared {requirement.specifier}"
            )
    assert not problems, "pyproject.toml [project] dependencies:\n" + "\n".join(problems)
