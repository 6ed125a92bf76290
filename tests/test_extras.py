"""Each install extra is enough for its entry point: the packages of every other extra are made
unimportable (a meta-path finder refuses them) and the entry point runs in a fresh interpreter.

What an extra may import is computed, not listed: the transitive requirements of
``closedloop[<extra>]`` as installed, against those of ``closedloop[all]``.
"""

from __future__ import annotations

import importlib.metadata as metadata
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from packaging.requirements import Requirement

EXTRAS = ["base", "embedded", "service", "trainer", "evaluation"]

BLOCKER = """
import importlib.abc, sys
BLOCKED = set({blocked!r})

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: not in this extra)", name=name)
        return None

sys.meta_path.insert(0, Refuse())
"""

CONFIG = """
use_cases:
  pick:
    decision: choose
    candidate:
      price: {type: numeric, default: 0}
    outcomes:
      click: {type: binary, window: 1h}
    policy:
      value: click
      exploration: {strategy: epsilon_greedy, epsilon: 0.2}
    experiments:
      cheap_first:
        arms:
          control: {share: 0.5, control: true, policy: default}
          model: {share: 0.5}
infrastructure:
  data_dir: DATA
"""

ENTRY_POINTS = {
    "base": """
        from closedloop.sdk import Client
        with Client("http://127.0.0.1:9", timeout=0.05, batch_feedback=False) as client:
            decision = client.decide("pick", "u1", candidates=["a", "b"])
        assert decision.fallback and decision.choice == "a", decision
    """,
    "embedded": """
        from closedloop.sdk import EmbeddedClient
        with EmbeddedClient(CONFIG_PATH, seed=1) as client:
            decision = client.decide("pick", "u1", candidates={"a": {"price": 1}, "b": {"price": 2}})
            client.log_feedback(decision.decision_id, {"click": 1})
        assert decision.policy == "default" and not decision.fallback, decision
    """,
    "service": """
        from starlette.testclient import TestClient
        from closedloop.contracts import load_config
        from closedloop.decision_service import create_app
        with TestClient(create_app(load_config(CONFIG_PATH))) as http:
            body = {"use_case": "pick", "unit_id": "u", "candidates": [{"id": "a"}]}
            answer = http.post("/v1/decide", json=body)
        assert answer.status_code == 200 and answer.json()["choice"] == "a", answer.text
    """,
    "trainer": """
        from datetime import UTC, datetime, timedelta
        from closedloop.contracts import load_config
        from closedloop.sdk import EmbeddedClient
        from closedloop.trainer import open_trainer
        config = load_config(CONFIG_PATH)
        with EmbeddedClient(config, seed=1) as client:
            for i in range(20):
                decision = client.decide("pick", f"u{i}", candidates={"a": {"price": 1}, "b": {"price": 2}})
                client.log_feedback(decision.decision_id, {"click": i % 2})
        later = (datetime.now(UTC) + timedelta(hours=2)).timestamp()
        trainer = open_trainer(config, clock=lambda: later)
        trainer.run_once(timeout=0)
        counters = trainer.store.counters()
        trainer.close()
        assert counters["decisions"] == 20 and counters["feedback_joined"] == 20, counters
    """,
    "evaluation": """
        from datetime import UTC, datetime, timedelta
        from closedloop.contracts import load_config
        from closedloop.evaluation import analyze_experiment
        from closedloop.registry import open_registry, start_experiment
        from closedloop.sdk import EmbeddedClient
        config = load_config(CONFIG_PATH)
        experiment = config.use_cases["pick"].experiments["cheap_first"]
        start_experiment(open_registry(config.infrastructure), "pick", "cheap_first", experiment)
        with EmbeddedClient(config, seed=1) as client:
            for i in range(200):
                decision = client.decide("pick", f"u{i}", candidates={"a": {"price": 1}, "b": {"price": 2}})
                if i % 3 == 0:
                    client.log_feedback(decision.decision_id, {"click": 1})
        later = (datetime.now(UTC) + timedelta(hours=2)).timestamp()
        report = analyze_experiment(config, "cheap_first", as_of=later)
        assert sum(arm.units for arm in report.arms) == 200, report.arms
        from starlette.testclient import TestClient
        from closedloop.console import create_console
        with TestClient(create_console(config)) as http:
            listing = http.get("/v1/experiments", params={"format": "json"})
        assert listing.status_code == 200 and "cheap_first" in listing.json(), listing.text
    """,
}


def _closure(requirements: list[str], extras: set[str]) -> set[str]:
    """Distribution names (normalised) these requirements install, transitively."""
    seen: set[str] = set()
    todo = [(r, extras) for r in requirements]
    while todo:
        text, active = todo.pop()
        requirement = Requirement(text)
        if requirement.marker and not any(
            requirement.marker.evaluate({"extra": extra}) for extra in (active or {""})
        ):
            continue
        name = requirement.name.lower().replace("_", "-")
        if name == "closedloop":
            todo.extend((r, set(requirement.extras)) for r in metadata.requires("closedloop") or [])
            continue
        if name in seen:
            continue
        seen.add(name)
        try:
            todo.extend((r, set(requirement.extras)) for r in metadata.requires(name) or [])
        except metadata.PackageNotFoundError:  # a platform-conditional package not installed here
            continue
    return seen


def _installs(extra: str) -> set[str]:
    base = [r for r in metadata.requires("closedloop") or [] if "extra ==" not in r]
    return _closure(base if extra == "base" else [*base, f"closedloop[{extra}]"], set())


def blocked_modules(extra: str) -> list[str]:
    allowed = _installs(extra)
    others = _installs("all") - allowed
    providers = metadata.packages_distributions()
    return sorted(
        module
        for module, dists in providers.items()
        if {d.lower().replace("_", "-") for d in dists} <= others and not module.startswith("_")
    )


def test_the_blocked_sets_follow_the_extras() -> None:
    assert {"lightgbm", "numpy", "fastapi", "redis", "sqlalchemy", "ax"} <= set(blocked_modules("base"))
    assert "lightgbm" not in blocked_modules("embedded")
    assert {"fastapi", "redis", "kafka", "confluent_kafka", "sqlalchemy"} <= set(blocked_modules("embedded"))
    # the service writes the audit trail of admin actions into the metadata database
    assert "sqlalchemy" not in blocked_modules("service")
    assert {"statsmodels", "ax", "torch"} <= set(blocked_modules("service"))
    assert {"statsmodels", "ax"} <= set(blocked_modules("trainer"))
    assert {"ax", "torch"} <= set(blocked_modules("evaluation"))


@pytest.mark.parametrize("extra", EXTRAS)
def test_each_extra_runs_its_entry_point_without_the_others(extra: str, tmp_path: Path) -> None:
    config_path = tmp_path / "closedloop.yaml"
    config_path.write_text(CONFIG.replace("DATA", str(tmp_path / "data")))
    code = (
        BLOCKER.format(blocked=blocked_modules(extra))
        + f"CONFIG_PATH = {str(config_path)!r}\n"
        + textwrap.dedent(ENTRY_POINTS[extra])
        + "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
