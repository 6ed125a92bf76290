"""The embedded client: the decision path in-process, the same API as `Client`, no HTTP.

It needs the engine's dependencies (``pip install 'closedloop[embedded]'``). On embedded defaults
it keeps models under ``.closedloop/registry`` and events under ``.closedloop/events``; with
``redis_url``/``kafka_bootstrap`` set it uses those, exactly like the service.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import ValidationError

from closedloop.contracts import (
    ClosedLoopConfig,
    ClosedLoopError,
    DecideRequest,
    Decision,
    FeedbackIn,
    error_from_payload,
    invalid_request_from,
    load_config,
)

from ._requests import Candidates, Features, Outcomes, decide_payload, feedback_payload

if TYPE_CHECKING:
    from closedloop.decision_service import DecisionEngine


class EmbeddedClient:
    def __init__(
        self,
        config: ClosedLoopConfig | str | os.PathLike[str],
        *,
        seed: int | None = None,
        refresh_interval: float = 0.5,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """``clock``: what time decisions are stamped with (for simulations and tests of product
        code that run on their own time); the wall clock by default. ``refresh_interval``: how
        often the registry is polled for new champions in the background (`refresh_models` polls now)."""
        try:
            from closedloop.decision_service import open_engine
        except ImportError as exc:  # the thin SDK install has no LightGBM
            raise ClosedLoopError(
                f"EmbeddedClient needs the decision engine's dependencies ({exc.name} is missing).",
                hint="pip install 'closedloop[embedded]', or use closedloop.sdk.Client over HTTP.",
            ) from exc
        self.config = config if isinstance(config, ClosedLoopConfig) else load_config(config)
        self._engine: DecisionEngine = open_engine(self.config, seed=seed, clock=clock)
        self._engine.start_model_refresh(refresh_interval)

    def decide(
        self,
        use_case: str,
        unit_id: str,
        *,
        context: Features | None = None,
        candidates: Candidates = None,
        activate: bool = True,
        slots: int | None = None,
    ) -> Decision:
        """Choose or rank ``candidates`` (id -> features) for ``unit_id``; None for yes/no decisions.
        ``slots``: for rankings, how many are shown. ``activate=False``: it counts once `activate`
        or its first feedback names it."""
        request = self._request(use_case, unit_id, context, candidates, activate=activate, slots=slots)
        return self._engine.decide(request)

    def activate(self, decision_id: str) -> None:
        """Make a decision made with ``activate=False`` count (the product showed it)."""
        self._engine.activate(decision_id)

    def log_feedback(
        self,
        decision_id: str,
        outcomes: Outcomes,
        *,
        timestamp: datetime | None = None,
        candidate_id: str | None = None,
    ) -> None:
        """Report outcomes; raises as the HTTP service would (unknown decision, duplicate, bad
        value, a candidate the decision did not show). ``candidate_id``: as for `Client`."""
        try:
            payload = feedback_payload(decision_id, outcomes, timestamp, candidate_id)
            item = FeedbackIn.model_validate(payload)
        except ValidationError as exc:
            raise invalid_request_from(exc.errors()) from None
        result = self._engine.log_feedback([item])[0]
        if result.error is not None:
            raise error_from_payload({"error": result.error}, status=0)

    def model_values(
        self, use_case: str, *, context: Features | None = None, candidates: Candidates = None
    ) -> dict[str, float] | None:
        """The serving models' value of each candidate (for binary: of "no" and "yes"), with
        nothing explored or logged; None while the default policy serves. For simulations that
        score the learned policy."""
        request = self._request(use_case, "model-values", context, candidates)
        values = self._engine.model_values(request)
        if values is None:
            return None
        ids = [c.id for c in request.candidates] or ["no", "yes"]
        return {candidate_id: float(v) for candidate_id, v in zip(ids, values, strict=True)}

    def refresh_models(self) -> bool:
        """Load new champions and experiment phases from the registry now, not at the next poll;
        True if something changed (for simulations and tests that train between decisions)."""
        return self._engine.refresh_models()

    def serving_versions(self, use_case: str) -> dict[str, str]:
        """Outcome -> the model version serving ``use_case`` (empty before any champion)."""
        return self._engine.serving_versions(use_case)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every logged event has reached the event log (Kafka acknowledged it;
        immediately for the embedded files); True if that happened within ``timeout``."""
        return self._engine.wait_until_delivered(timeout)

    def close(self) -> None:
        self._engine.close()

    def __enter__(self) -> EmbeddedClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @staticmethod
    def _request(
        use_case: str,
        unit_id: str,
        context: Features | None,
        candidates: Candidates,
        *,
        activate: bool = True,
        slots: int | None = None,
    ) -> DecideRequest:
        payload = decide_payload(use_case, unit_id, context, candidates, activate=activate, slots=slots)
        payload.pop("request_id")  # nothing to retry in-process
        try:
            return DecideRequest.model_validate(payload)
        except ValidationError as exc:
            raise invalid_request_from(exc.errors()) from None
