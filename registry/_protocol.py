"""What every registry offers: model versions, a champion alias per use case and outcome, metadata,
and the phases of experiments (what the decision service assigns arms by)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from closedloop.contracts import ExperimentPhase


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
        """Store a new version (numbered by the registry); make it champion if asked."""
        ...

    def set_champion(self, use_case: str, outcome: str, version: str) -> None: ...

    def champion(self, use_case: str, outcome: str) -> str | None: ...

    def champions(self, use_case: str, outcomes: list[str]) -> dict[str, str | None]: ...

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
