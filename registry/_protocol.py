"""What every model registry offers: versions, a champion alias per use case and outcome, metadata."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


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

    def generation(self) -> int:
        """A number that changes whenever any champion changes: cheap to poll."""
        ...

    def close(self) -> None: ...
