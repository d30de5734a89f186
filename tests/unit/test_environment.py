"""environment.yml describes the same environment as pyproject.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement


def _normalized(name: str) -> str:
    return name.lower().replace("_", "-")


def test_every_pyproject_dependency_is_in_environment_yml_with_the_same_range(root: Path) -> None:
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]
    env = yaml.safe_load((root / "environment.yml").read_text())
    listed: dict[str, str] = {}
    for entry in env["dependencies"]:
        for spec in entry["pip"] if isinstance(entry, dict) else [entry]:
            if spec.startswith(("-e", "python=", "pip")) and not spec.startswith("pip "):
                continue
            requirement = Requirement(spec)
            listed[_normalized(requirement.name)] = str(requirement.specifier)
    missing = [r.name for r in wanted if _normalized(r.name) not in listed]
    assert not missing, f"environment.yml lacks {missing}"
    differing = {
        r.name: (str(r.specifier), listed[_normalized(r.name)])
        for r in wanted
        if str(r.specifier) != listed[_normalized(r.name)]
    }
    assert not differing, f"version ranges differ (pyproject, environment.yml): {differing}"


def test_every_library_package_is_packaged(root: Path) -> None:
    """A regular (non-editable) install ships only the packages pyproject lists."""
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(root / "lib").parts)
        for init in (root / "lib" / "bentley").rglob("__init__.py")
    } | {"runner"}
    assert found <= listed, f"pyproject.toml does not list {sorted(found - listed)}"
