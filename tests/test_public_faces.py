"""Each component has one public face: a sorted __all__ that is exactly what the package exposes.

As in httpx's ``test_exported_members.py``: every public name a package has is in its ``__all__``
(so nothing leaks into the face by accident), and every name in ``__all__`` imports.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import types
from pathlib import Path

import grimp
import pytest

COMPONENTS = [
    "closedloop.contracts",
    "closedloop.policy",
    "closedloop.sdk",
    "closedloop.decision_service",
    "closedloop.registry",
    "closedloop.eventlog",
    "closedloop.cli",
    "closedloop.trainer",
    "closedloop.simulator",
    "closedloop.evaluation",
    "closedloop.tuner",
    "closedloop.access",
    "closedloop.metadata",
    "closedloop.console",
]
ROOT = Path(__file__).resolve().parents[1]


def test_every_component_folder_is_listed() -> None:
    linked = {f"closedloop.{p.name}" for p in (ROOT / "closedloop").iterdir() if p.is_symlink()}
    assert linked == set(COMPONENTS)


@pytest.mark.parametrize("name", COMPONENTS)
def test_all_is_sorted_complete_and_importable(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert exported == sorted(exported)
    for member in exported:
        assert hasattr(module, member), f"{name}.{member}"
    public = {
        member
        for member in dir(module)
        if not member.startswith("_")
        and not isinstance(getattr(module, member), types.ModuleType)  # its own submodules
        and member != "annotations"  # from __future__ import annotations
    }
    assert public == set(exported), f"{name} exposes names outside __all__: {sorted(public - set(exported))}"


def test_no_component_imports_another_components_private_module() -> None:
    graph = grimp.build_graph("closedloop", cache_dir=None)
    crossings = []
    for importer in graph.modules:
        component = ".".join(importer.split(".")[:2])
        for imported in graph.find_modules_directly_imported_by(importer):
            other = ".".join(imported.split(".")[:2])
            if other != component and imported != other and other != "closedloop":
                crossings.append(f"{importer} -> {imported}")
    assert crossings == []


def test_inside_a_component_its_own_modules_are_imported_relatively() -> None:
    """``from ._features import ...``, so that path-based tools see each component's structure."""
    absolute = []
    for name in COMPONENTS:
        folder = ROOT / name.split(".")[1]
        for path in folder.glob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if line.lstrip().startswith(f"from {name}._") or line.lstrip().startswith(f"import {name}._"):
                    absolute.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert absolute == []


def test_the_sdk_is_thin() -> None:
    """Product code importing the SDK and using the HTTP client loads no ML or broker library."""
    code = (
        "import sys\n"
        "from closedloop.sdk import Client, AsyncClient, Decision\n"
        "Client('http://127.0.0.1:9', timeout=0.05, batch_feedback=False).close()\n"
        "heavy = {'lightgbm', 'numpy', 'torch', 'ax', 'kafka', 'redis', 'fastapi', 'sqlalchemy', 'scipy'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_only_the_tuner_imports_ax() -> None:
    """Serving, training, evaluating and the CLI never load Ax or torch; the tuner loads them only
    when a run starts (so `closedloop --help` and `closedloop.tuner` imports stay fast)."""
    code = (
        "import sys, closedloop.decision_service, closedloop.cli, closedloop.trainer\n"
        "import closedloop.evaluation, closedloop.simulator, closedloop.tuner\n"
        "print(sorted({'ax', 'torch', 'botorch'} & {m.split('.')[0] for m in sys.modules}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
