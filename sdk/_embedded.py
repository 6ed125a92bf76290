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
from closedloop.sdk._requests import Candidates, Features, Outcomes, decide_payload, feedback_payload

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
        code that run on their own time); the wall clock by default."""
        try:
            from closedloop.decision_service import open_engine
        except ImportError as exc:  # the thin SDK install has no LightGBM
            raise ClosedLoopError(
                f"EmbeddedClient needs the decision engine's dependencies ({exc.name} is missing).",
                hint="pip install 'closedloop[embedded]', or use closedloop.sdk.Client over HTTP.",
            ) from exc
        self.config = config if isinstance(config, ClosedLoopConfig) else load_config(config)
        self.engine: DecisionEngine = open_engine(self.config, seed=seed, clock=clock)
        self.engine.start_model_refresh(refresh_interval)

    def decide(
        self,
        use_case: str,
        unit_id: str,
        context: Features | None = None,
        candidates: Candidates = None,
    ) -> Decision:
        payload = decide_payload(use_case, unit_id, context, candidates)
        payload.pop("request_id")  # nothing to retry in-process
        try:
            request = DecideRequest.model_validate(payload)
        except ValidationError as exc:
            raise invalid_request_from(exc.errors()) from None
        return self.engine.decide(request)

    def log_feedback(self, decision_id: str, outcomes: Outcomes, timestamp: datetime | None = None) -> None:
        """Report outcomes; raises as the HTTP service would (unknown decision, duplicate, bad value)."""
        try:
            item = FeedbackIn.model_validate(feedback_payload(decision_id, outcomes, timestamp))
        except ValidationError as exc:
            raise invalid_request_from(exc.errors()) from None
        result = self.engine.log_feedback([item])[0]
        if result.error is not None:
            raise error_from_payload({"error": result.error}, status=0)

    def flush(self, timeout: float = 10.0) -> bool:
        return True

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> EmbeddedClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
