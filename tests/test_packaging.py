"""The wheel holds closedloop and its components, and nothing that only looks like them."""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_namespace_packages

ROOT = Path(__file__).resolve().parents[1]


def _include() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(project["tool"]["setuptools"]["packages"]["find"]["include"])


def test_the_package_list_is_closedloop_and_its_components_only(tmp_path: Path) -> None:
    """A demo run leaves ``closedloop-demo/`` beside the package; ``closedloop*`` packaged it."""
    (tmp_path / "closedloop" / "sdk").mkdir(parents=True)
    (tmp_path / "closedloop" / "__init__.py").write_text("")
    (tmp_path / "closedloop" / "sdk" / "__init__.py").write_text("")
    (tmp_path / "closedloop-demo" / "data").mkdir(parents=True)
    (tmp_path / "closedloop-demo" / "report.html").write_text("<html></html>")
    found = find_namespace_packages(where=str(tmp_path), include=_include())
    assert sorted(found) == ["closedloop", "closedloop.sdk"]


def test_every_component_is_packaged() -> None:
    found = set(find_namespace_packages(where=str(ROOT), include=_include()))
    components = {f"closedloop.{p.name}" for p in (ROOT / "closedloop").iterdir() if p.is_symlink()}
    assert components <= found
