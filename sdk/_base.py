"""What `Client` and `AsyncClient` share: everything but the I/O.

As in httpx, one base holds the payloads, the retry policy, the default-policy fallback, the
use-case cache and the feedback queue; the two clients add only how a request is sent and how
the queue is drained (a thread, or a task).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx

from closedloop.contracts import (
    ClosedLoopConfig,
    ClosedLoopError,
    Decision,
    FeedbackBatchResult,
    UseCaseConfig,
)

from ._fallback import fallback_decision
from ._requests import (
    Outcomes,
    feedback_payload,
    is_fallback_id,
    raise_for_error,
)

logger = logging.getLogger("closedloop.sdk")

RETRYABLE_STATUS = frozenset({502, 503, 504})
USE_CASES_PATH = "/v1/use-cases"
DECIDE_PATH = "/v1/decide"
FEEDBACK_PATH = "/v1/feedback"
FEEDBACK_BATCH_PATH = "/v1/feedback/batch"


class Unreachable(Exception):
    """Every attempt failed at the transport level or with a retryable status (502/503/504)."""


class BaseClient:
    def __init__(
        self,
        *,
        timeout: float,
        retries: int,
        config: ClosedLoopConfig | None,
        batch_size: int,
        max_queued_feedback: int,
    ) -> None:
        self._timeout = timeout
        self._retries = retries
        self._use_cases: dict[str, UseCaseConfig] | None = dict(config.use_cases) if config else None
        self._batch_size = batch_size
        self._queue: deque[dict[str, Any]] = deque(maxlen=max_queued_feedback)
        self.fallbacks = 0
        """Decisions answered by the default policy because the service could not be reached."""
        self.feedback_errors: list[ClosedLoopError] = []
        """Feedback batches the service refused (a bug to fix: they are not retried)."""

    # -- requests ---------------------------------------------------------------------------------

    def _retry_pause(self, attempt: int) -> float | None:
        """Seconds to wait before the next attempt after ``attempt`` failed; None: give up."""
        return 0.01 * (attempt + 1) if attempt < self._retries else None

    @staticmethod
    def _failure(response: httpx.Response | None, error: Exception | None) -> Exception | None:
        """Why an attempt counts as failed (a transport error or a retryable status), or None."""
        if error is not None:
            return error
        assert response is not None
        if response.status_code in RETRYABLE_STATUS:
            return ClosedLoopError(f"HTTP {response.status_code}")
        return None

    # -- decisions --------------------------------------------------------------------------------

    @staticmethod
    def _decision(response: httpx.Response) -> Decision:
        raise_for_error(response)
        return Decision.model_validate_json(response.content)

    @property
    def _knows_use_cases(self) -> bool:
        return self._use_cases is not None

    def _learn_use_cases(self, response: httpx.Response) -> None:
        """Remember the service's use cases (for fallbacks); a bad answer is remembered as none."""
        try:
            raise_for_error(response)
            self._use_cases = {
                name: UseCaseConfig.model_validate({k: v for k, v in body.items() if k != "feature_names"})
                for name, body in response.json().items()
            }
        except (ClosedLoopError, ValueError) as exc:
            logger.warning("could not read the service's use cases (%s); fallbacks use defaults", exc)

    def _fallback(self, payload: Mapping[str, Any], reason: Unreachable) -> Decision:
        logger.warning("decision service unreachable (%s); using the default policy", reason)
        self.fallbacks += 1
        use_case = payload["use_case"]
        known = self._use_cases.get(use_case) if self._use_cases else None
        return fallback_decision(use_case, known, payload["candidates"])

    # -- feedback ---------------------------------------------------------------------------------

    @staticmethod
    def _feedback_item(
        decision_id: str, outcomes: Outcomes, timestamp: datetime | None
    ) -> dict[str, Any] | None:
        """The item to send, or None for a fallback decision's feedback (nothing was logged)."""
        if is_fallback_id(decision_id):
            return None
        return feedback_payload(decision_id, outcomes, timestamp)

    def _next_batch(self) -> list[dict[str, Any]]:
        return [self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))]

    def _requeue(self, batch: list[dict[str, Any]]) -> None:
        self._queue.extendleft(reversed(batch))

    def _batch_answered(self, response: httpx.Response) -> None:
        """Record a refused batch (it is not retried), and log the items the service refused."""
        try:
            raise_for_error(response)
        except ClosedLoopError as exc:
            self.feedback_errors.append(exc)
            logger.error("a feedback batch was refused: %s", exc)
            return
        for result in FeedbackBatchResult.model_validate_json(response.content).results:
            if result.error is not None and result.status != "orphan":
                logger.warning(
                    "feedback %s %s: %s", result.feedback_id, result.status, result.error["message"]
                )
