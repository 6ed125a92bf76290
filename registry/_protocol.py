"""What every registry offers: model versions, a champion alias per use case and outcome, metadata,
and the phases of experiments (what the decision service assigns arms by)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from closedloop.contracts import ExperimentPhase


def version_name(number: int, model_text: str) -> str:
    """``v<number>-<content id>``: numbered in publishing order, and unique for ever. A registry
    that lost its data (a Redis without persistence) numbers from 1 again, but a different model
    gets a different name, so a service never keeps serving an old model under a reused name and
    a logged ``model_versions`` always names the model that decided."""
    return f"v{number}-{hashlib.sha256(model_text.encode()).hexdigest()[:8]}"


def version_number(version: str) -> int:
    """The publishing number of a version name (names of before content ids: ``v<number>``)."""
    return int(version[1:].partition("-")[0])


@dataclass(frozen=True)
class ModelVersion:
    """One published model: its LightGBM text lives beside it in the registry."""

    use_case: str
    outcome: str
    version: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """Feature names, metrics, parameters, lineage (data range, rows, parent, offsets)."""


class ModelRegistry(Protocol):
    def publish(
        self,
        use_case: str,
        outcome: str,
        model_text: str,
        metadata: Mapping[str, Any],
        *,
        champion: bool,
    ) -> ModelVersion:
        """Store a new version (named by `version_name`); make it champion if asked."""
        ...

    def set_champion(self, use_case: str, outcome: str, version: str) -> None: ...

    def champion(self, use_case: str, outcome: str) -> str | None: ...

    def pinned(self, use_case: str, outcome: str) -> str | None:
        """The version an operator pinned as champion (the trainer does not replace it), or None."""
        ...

    def set_pinned(self, use_case: str, outcome: str, version: str | None) -> None:
        """Pin ``version`` (it must be the champion already), or unpin with None."""
        ...

    def champions(self, use_case: str, outcomes: list[str]) -> dict[str, str | None]: ...

    def all_champions(self, wanted: Mapping[str, list[str]]) -> dict[str, dict[str, str | None]]:
        """`champions` of many use cases (use case -> outcomes) at once: one round trip for a
        service of a thousand use cases, whose every refresh asks for all of them."""
        ...

    def model_text(self, use_case: str, outcome: str, version: str) -> str: ...

    def versions(self, use_case: str, outcome: str) -> list[ModelVersion]: ...

    def experiment_names(self) -> list[str]:
        """Every experiment that was ever started, in name order."""
        ...

    def phases(self, experiment: str) -> list[ExperimentPhase]:
        """An experiment's recorded phases, oldest first (empty if it never started)."""
        ...

    def replace_phases(self, experiment: str, phases: list[ExperimentPhase], *, expected: int) -> bool:
        """Store a new phase history if the stored one still has ``expected`` phases (an
        optimistic lock, so two starts cannot both add phase 2); bumps the generation."""
        ...

    def generation(self) -> int:
        """A number that changes whenever any champion changes: cheap to poll."""
        ...

    def close(self) -> None: ...


def version_metadata(registry: ModelRegistry, use_case: str, outcome: str, version: str) -> Mapping[str, Any]:
    """The metadata published with one version (empty if the registry does not list it)."""
    return next((v.metadata for v in registry.versions(use_case, outcome) if v.version == version), {})


def champion_metadata(
    registry: ModelRegistry, use_case: str, outcomes: list[str]
) -> dict[str, Mapping[str, Any]]:
    """Outcome -> the metadata of its champion, for the outcomes that have one."""
    return {
        outcome: version_metadata(registry, use_case, outcome, version)
        for outcome, version in registry.champions(use_case, outcomes).items()
        if version is not None
    }
