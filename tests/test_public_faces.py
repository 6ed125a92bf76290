"""Each component has one public face: a sorted __all__ whose names all import."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

COMPONENTS = [
    "closedloop.contracts",
    "closedloop.sdk",
    "closedloop.decision_service",
    "closedloop.registry",
    "closedloop.eventlog",
    "closedloop.cli",
    "closedloop.trainer",
    "closedloop.simulator",
    "closedloop.evaluation",
    "closedloop.tuner",
]


@pytest.mark.parametrize("name", COMPONENTS)
def test_exports_are_sorted_and_importable(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert exported == sorted(exported)
    for member in exported:
        assert hasattr(module, member), f"{name}.{member}"


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
