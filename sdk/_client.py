"""The synchronous HTTP client that product code embeds."""

from __future__ import annotations

import logging
import threading
import time
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
from closedloop.sdk._fallback import fallback_decision
from closedloop.sdk._requests import (
    RETRYABLE_STATUS,
    Candidates,
    Features,
    Outcomes,
    Unreachable,
    decide_payload,
    feedback_payload,
    is_fallback_id,
    raise_for_error,
    read_decision,
)

logger = logging.getLogger(__name__)


class Client:
    """Decisions and feedback over HTTP, with a safe fallback when the service is unreachable.

    ``decide`` retries transport errors and 502/503/504 within ``timeout`` (the same request id,
    so a retry cannot log a second decision), then falls back to the default policy. Errors in the
    request itself (unknown use case, bad feature) are raised: they are bugs to fix, not outages.
    ``log_feedback`` queues the report and a background thread sends batches; ``flush()`` waits.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        timeout: float = 0.25,
        retries: int = 1,
        config: ClosedLoopConfig | None = None,
        batch_feedback: bool = True,
        batch_size: int = 500,
        flush_interval: float = 0.5,
        max_queued_feedback: int = 100_000,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport)
        self._retries = retries
        self._use_cases: dict[str, UseCaseConfig] | None = dict(config.use_cases) if config else None
        self._batching = batch_feedback
        self._batch_size = batch_size
        self._queue: deque[dict[str, Any]] = deque(maxlen=max_queued_feedback)
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._in_flight = 0
        self._closed = False
        self.fallbacks = 0
        self.feedback_errors: list[ClosedLoopError] = []
        self._flusher: threading.Thread | None = None
        if batch_feedback:
            self._flusher = threading.Thread(
                target=self._flush_periodically,
                args=(flush_interval,),
                name="closedloop-feedback",
                daemon=True,
            )
            self._flusher.start()

    # -- decisions ----------------------------------------------------------------------------------

    def decide(
        self,
        use_case: str,
        unit_id: str,
        context: Features | None = None,
        candidates: Candidates = None,
    ) -> Decision:
        """Choose or rank ``candidates`` (id -> features) for ``unit_id``; None for yes/no decisions."""
        payload = decide_payload(use_case, unit_id, context, candidates)
        try:
            return read_decision(self._post("/v1/decide", payload))
        except Unreachable as exc:
            logger.warning("decision service unreachable (%s); using the default policy", exc)
            self.fallbacks += 1
            return fallback_decision(use_case, self._use_case(use_case), payload["candidates"])

    # -- feedback -----------------------------------------------------------------------------------

    def log_feedback(self, decision_id: str, outcomes: Outcomes, timestamp: datetime | None = None) -> None:
        """Report outcomes of a decision, e.g. ``{"click": 1}``; each report counts once."""
        if is_fallback_id(decision_id):
            return
        item = feedback_payload(decision_id, outcomes, timestamp)
        if not self._batching:
            raise_for_error(self._post("/v1/feedback", item))
            return
        self._queue.append(item)
        if len(self._queue) >= self._batch_size:
            self._wake.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Send every queued report now; True if the queue emptied within ``timeout``."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._idle:
            while self._queue or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._wake.set()
                self._idle.wait(min(remaining, 0.05))
        return True

    def close(self) -> None:
        if self._closed:
            return
        if self._flusher is not None:
            self.flush()
            self._closed = True
            self._wake.set()
            self._flusher.join(timeout=5)
        self._closed = True
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------------

    def _flush_periodically(self, interval: float) -> None:
        backoff = interval
        while not self._closed:
            self._wake.wait(backoff)
            self._wake.clear()
            try:
                while self._queue and not self._closed:
                    self._send_one_batch()
                backoff = interval
            except Unreachable as exc:
                logger.warning("feedback waits in memory: service unreachable (%s)", exc)
                backoff = min(backoff * 2, 5.0)
            with self._idle:
                self._idle.notify_all()

    def _send_one_batch(self) -> None:
        with self._idle:
            batch = [self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))]
            self._in_flight = len(batch)
        try:
            response = self._post("/v1/feedback/batch", {"items": batch})
            raise_for_error(response)
        except Unreachable:
            self._queue.extendleft(reversed(batch))
            raise
        except ClosedLoopError as exc:
            self.feedback_errors.append(exc)
            logger.error("a feedback batch was refused: %s", exc)
            return
        finally:
            with self._idle:
                self._in_flight = 0
        for result in FeedbackBatchResult.model_validate_json(response.content).results:
            if result.error is not None and result.status != "orphan":
                logger.warning(
                    "feedback %s %s: %s", result.feedback_id, result.status, result.error["message"]
                )

    def _post(self, path: str, payload: Mapping[str, Any]) -> httpx.Response:
        last: Exception | None = None
        for attempt in range(self._retries + 1):
            try:
                response = self._http.post(path, json=payload)
            except httpx.TransportError as exc:
                last = exc
            else:
                if response.status_code not in RETRYABLE_STATUS:
                    return response
                last = ClosedLoopError(f"HTTP {response.status_code}")
            if attempt < self._retries:
                time.sleep(0.01 * (attempt + 1))
        raise Unreachable(str(last))

    def _use_case(self, name: str) -> UseCaseConfig | None:
        if self._use_cases is None:
            try:
                response = self._http.get("/v1/use-cases")
                raise_for_error(response)
                self._use_cases = {
                    uc: UseCaseConfig.model_validate({k: v for k, v in body.items() if k != "feature_names"})
                    for uc, body in response.json().items()
                }
            except (httpx.HTTPError, ClosedLoopError, ValueError):
                return None
        return self._use_cases.get(name)
