"""What `Client` and `AsyncClient` share: everything but the I/O.

As in httpx, one base holds the payloads, the retry policy, the default-policy fallback, the
use-case cache and the feedback queue; the two clients add only how a request is sent and how
the queue is drained (a thread, or a task).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import httpx

from closedloop.contracts import (
    ClosedLoopConfig,
    ClosedLoopError,
    Decision,
    FeedbackBatchResult,
    FeedbackQueueFullError,
    ServiceUnavailableError,
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

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
"""Answers that say "not now": a decide falls back, feedback waits in the queue. 429 is the
API key's rate limit."""
API_KEY_ENV = "CLOSEDLOOP_API_KEY"
USE_CASES_PATH = "/v1/use-cases"
DECIDE_PATH = "/v1/decide"
FEEDBACK_PATH = "/v1/feedback"
FEEDBACK_BATCH_PATH = "/v1/feedback/batch"
ACTIVATE_PATH = "/v1/activate"
ABANDON_PATH = "/v1/abandon"
MAX_ABANDONED = 10_000
"""Abandoned decide requests kept in memory to tell the service; beyond that the oldest go
untold (best effort: an untold one costs one decision the product never showed, logged active)."""


USE_CASES_RETRY_SECONDS = 30.0
"""After a failed fetch of the use cases, how long the client waits before it asks again."""

QueueFull = Literal["drop_oldest", "block", "raise"]


class Unreachable(Exception):
    """Every attempt failed at the transport level or with a retryable status (502/503/504)."""


@dataclass(frozen=True)
class ClientStats:
    """What a client did with its decisions and feedback so far (``client.stats()``)."""

    fallbacks: int
    """Decisions answered by the default policy because the service could not be reached."""
    feedback_queued: int
    """Reports waiting in memory to be sent."""
    feedback_sent: int
    """Reports the service answered (accepted, replayed, orphan, duplicate or invalid)."""
    feedback_dropped: int
    """Reports discarded because the queue was full (``on_full="drop_oldest"``)."""
    feedback_refused: int
    """Reports in batches the service refused as a whole (see ``feedback_errors``)."""
    abandoned_told: int
    """Decide requests that timed out (answered by the fallback) whose abandonment the service
    acknowledged: whatever decision they made there will not count."""
    abandoned_waiting: int
    """Such requests not yet told (the service is still unreachable)."""


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The Authorization header for ``api_key``, else for ``CLOSEDLOOP_API_KEY``; none without
    either (a service with no keys made, on loopback)."""
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    return {"Authorization": f"Bearer {key}"} if key else {}


class BaseClient:
    def __init__(
        self,
        *,
        timeout: float,
        retries: int,
        config: ClosedLoopConfig | None,
        batch_size: int,
        max_queued_feedback: int,
        on_full: QueueFull,
    ) -> None:
        if on_full not in ("drop_oldest", "block", "raise"):
            raise ValueError(f"on_full must be 'drop_oldest', 'block' or 'raise', got {on_full!r}")
        self._timeout = timeout
        self._retries = retries
        self._use_cases: dict[str, UseCaseConfig] | None = dict(config.use_cases) if config else None
        self._use_cases_failed_at: float | None = None
        self._batch_size = batch_size
        self._queue: deque[dict[str, Any]] = deque()
        self._max_queued = max_queued_feedback
        self._on_full = on_full
        self.fallbacks = 0
        """Decisions answered by the default policy because the service could not be reached."""
        self.feedback_errors: list[ClosedLoopError] = []
        """Feedback batches the service refused (a bug to fix: they are not retried)."""
        self._sent = self._dropped = self._refused = 0
        self._abandoned: deque[dict[str, str]] = deque(maxlen=MAX_ABANDONED)
        self._abandoned_told = 0

    def stats(self) -> ClientStats:
        return ClientStats(
            fallbacks=self.fallbacks,
            feedback_queued=len(self._queue),
            feedback_sent=self._sent,
            feedback_dropped=self._dropped,
            feedback_refused=self._refused,
            abandoned_told=self._abandoned_told,
            abandoned_waiting=len(self._abandoned),
        )

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
    def _should_fetch_use_cases(self) -> bool:
        """Whether to ask the service for its use cases now: after a decision it answered, when
        they are not known and no fetch failed in the last `USE_CASES_RETRY_SECONDS`. Never in an
        outage, so a fallback costs one timeout, not two."""
        if self._use_cases is not None:
            return False
        failed = self._use_cases_failed_at
        return failed is None or time.monotonic() - failed > USE_CASES_RETRY_SECONDS

    def _learn_use_cases(self, response: httpx.Response | None, error: Exception | None = None) -> None:
        """Remember the service's use cases (their decision type and default policy, for fallbacks)."""
        try:
            if response is None:
                raise ClosedLoopError(str(error))
            raise_for_error(response)
            self._use_cases = {
                name: UseCaseConfig.model_validate({k: v for k, v in body.items() if k != "feature_names"})
                for name, body in response.json().items()
            }
        except (ClosedLoopError, ValueError) as exc:
            self._use_cases_failed_at = time.monotonic()
            logger.warning("could not read the service's use cases (%s); fallbacks guess them", exc)

    def _fallback(self, payload: Mapping[str, Any], reason: Unreachable) -> Decision:
        """The default policy's decision; the request is remembered as abandoned, since the
        service may have made (and logged) a decision for it that nobody will see."""
        logger.warning("decision service unreachable (%s); using the default policy", reason)
        self.fallbacks += 1
        self._abandoned.append({k: payload[k] for k in ("use_case", "unit_id", "request_id")})
        use_case = payload["use_case"]
        known = self._use_cases.get(use_case) if self._use_cases else None
        return fallback_decision(use_case, known, payload["candidates"])

    def _abandoned_batch(self) -> list[dict[str, str]]:
        return [self._abandoned.popleft() for _ in range(min(self._batch_size, len(self._abandoned)))]

    def _abandoned_answered(self, batch: list[dict[str, str]], response: httpx.Response | None) -> None:
        """Count a told batch; put back one the service did not take (unreachable: told later)."""
        if response is not None and response.status_code < 400:
            self._abandoned_told += len(batch)
            return
        if response is not None and response.status_code not in RETRYABLE_STATUS:
            logger.error("abandoned decisions refused (%d): %s", response.status_code, response.text[:200])
            return
        self._abandoned.extendleft(reversed(batch))

    @staticmethod
    def _activation_unreachable(decision_id: str, reason: Unreachable) -> ServiceUnavailableError:
        return ServiceUnavailableError(
            f"The decision service could not be reached to activate {decision_id}: {reason}.",
            hint="Retry later; a report of its feedback activates it too.",
        )

    @staticmethod
    def _activation_target(decision_id: str) -> dict[str, str] | None:
        """The activate request's body, or None for a fallback decision (the service has none)."""
        return None if is_fallback_id(decision_id) else {"decision_id": decision_id}

    # -- feedback ---------------------------------------------------------------------------------

    @staticmethod
    def _feedback_item(
        decision_id: str, outcomes: Outcomes, timestamp: datetime | None, candidate_id: str | None
    ) -> dict[str, Any] | None:
        """The item to send, or None for a fallback decision's feedback (nothing was logged)."""
        if is_fallback_id(decision_id):
            return None
        return feedback_payload(decision_id, outcomes, timestamp, candidate_id)

    @property
    def _queue_full(self) -> bool:
        return len(self._queue) >= self._max_queued

    def _enqueue(self, item: dict[str, Any]) -> None:
        """Queue a report; a full queue drops its oldest or raises, by ``on_full`` (a client
        that blocks waits for room before calling this)."""
        if self._queue_full:
            if self._on_full == "raise":
                raise FeedbackQueueFullError(
                    f"{len(self._queue)} reports wait to be sent (max_queued_feedback); "
                    "this one was not queued.",
                    field="max_queued_feedback",
                    value=self._max_queued,
                    expected="room in the feedback queue",
                    hint="The service is unreachable or too slow: retry later, raise max_queued_feedback, "
                    "or choose on_full='block' or 'drop_oldest'.",
                )
            self._drop(len(self._queue) - self._max_queued + 1)
        self._queue.append(item)

    def _drop(self, count: int) -> None:
        for _ in range(count):
            self._queue.popleft()
        self._dropped += count
        logger.warning(
            "feedback queue full (%d): dropped the %d oldest report(s), %d dropped so far",
            self._max_queued,
            count,
            self._dropped,
        )

    def _next_batch(self) -> list[dict[str, Any]]:
        return [self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))]

    def _requeue(self, batch: list[dict[str, Any]]) -> None:
        """Put a batch that could not be sent back in front, in order; what no longer fits is
        dropped oldest first, and counted."""
        self._queue.extendleft(reversed(batch))
        if self._queue_full and len(self._queue) > self._max_queued:
            self._drop(len(self._queue) - self._max_queued)

    def _batch_answered(self, response: httpx.Response, size: int) -> None:
        """Record a refused batch (it is not retried), and log the items the service refused."""
        try:
            raise_for_error(response)
        except ClosedLoopError as exc:
            self.feedback_errors.append(exc)
            self._refused += size
            logger.error("a feedback batch of %d was refused: %s", size, exc)
            return
        self._sent += size
        for result in FeedbackBatchResult.model_validate_json(response.content).results:
            if result.error is not None and result.status != "orphan":
                logger.warning(
                    "feedback %s %s: %s", result.feedback_id, result.status, result.error["message"]
                )
