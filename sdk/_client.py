"""The synchronous HTTP client that product code embeds."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx

from closedloop.contracts import ClosedLoopConfig, Decision, ServiceUnavailableError

from ._base import (
    ABANDON_PATH,
    ACTIVATE_PATH,
    DECIDE_PATH,
    FEEDBACK_BATCH_PATH,
    FEEDBACK_PATH,
    USE_CASES_PATH,
    BaseClient,
    QueueFull,
    Unreachable,
    auth_headers,
    logger,
)
from ._requests import Candidates, Features, Outcomes, decide_payload, raise_for_error


class Client(BaseClient):
    """Decisions and feedback over HTTP, with a safe fallback when the service is unreachable.

    ``decide`` retries transport errors and 502/503/504 within ``timeout`` (the same request id,
    so a retry cannot log a second decision), then falls back to the default policy. Errors in the
    request itself (unknown use case, bad feature) are raised: they are bugs to fix, not outages.
    ``log_feedback`` queues the report and a background thread sends batches; ``flush()`` waits.
    ``api_key`` (default: ``CLOSEDLOOP_API_KEY``) is sent as ``Authorization: Bearer``; a key
    refused (401) or without the scope (403) raises, a key over its rate limit (429) is treated
    like an outage: decide falls back, feedback waits in the queue.
    A decide that fell back is told to the service later as abandoned (the service may have
    decided and logged it while the client stopped waiting), so that it never counts.
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
        on_full: QueueFull = "drop_oldest",
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            timeout=timeout,
            retries=retries,
            config=config,
            batch_size=batch_size,
            max_queued_feedback=max_queued_feedback,
            on_full=on_full,
        )
        self._http = httpx.Client(
            base_url=base_url, timeout=timeout, transport=transport, headers=auth_headers(api_key)
        )
        self._batching = batch_feedback
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._in_flight = 0
        self._closed = False
        self._flusher: threading.Thread | None = None
        if batch_feedback:
            self._flusher = threading.Thread(
                target=self._flush_periodically,
                args=(flush_interval,),
                name="closedloop-feedback",
                daemon=True,
            )
            self._flusher.start()

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

        ``slots``: for rankings, how many are shown (each is explored, with an exact propensity).
        ``activate=False``: the decision counts (for training, in experiments) only once
        `activate` or its first `log_feedback` names it; for decisions made ahead of showing."""
        payload = decide_payload(use_case, unit_id, context, candidates, activate=activate, slots=slots)
        try:
            decision = self._decision(self._post(DECIDE_PATH, payload))
        except Unreachable as exc:
            return self._fallback(payload, exc)
        if self._should_fetch_use_cases:
            self._fetch_use_cases()
        if self._abandoned and self._flusher is None:
            self._tell_abandoned()  # the service answers again: no background thread tells it
        return decision

    def activate(self, decision_id: str) -> None:
        """The product showed a decision made with ``activate=False``: make it count. Nothing
        for a fallback decision; raises ServiceUnavailableError if the service cannot be reached."""
        body = self._activation_target(decision_id)
        if body is None:
            return
        try:
            response = self._post(ACTIVATE_PATH, body)
        except Unreachable as exc:
            raise self._activation_unreachable(decision_id, exc) from None
        raise_for_error(response)

    def log_feedback(
        self,
        decision_id: str,
        outcomes: Outcomes,
        *,
        timestamp: datetime | None = None,
        candidate_id: str | None = None,
    ) -> None:
        """Report outcomes of a decision, e.g. ``{"click": 1}``; each report counts once (per
        candidate). ``candidate_id``: for rankings, the shown candidate it is about (without it,
        the top one)."""
        item = self._feedback_item(decision_id, outcomes, timestamp, candidate_id)
        if item is None:
            return
        if not self._batching:
            try:
                response = self._post(FEEDBACK_PATH, item)
            except Unreachable as exc:  # not queued: the caller keeps the report and retries
                raise ServiceUnavailableError(
                    f"The decision service could not be reached to report feedback: {exc}.",
                    hint="Retry with the same call later, or use batch_feedback=True to queue reports.",
                ) from None
            raise_for_error(response)
            return
        with self._idle:
            while self._on_full == "block" and self._queue_full and not self._closed:
                self._wake.set()
                self._idle.wait(0.05)
            self._enqueue(item)
        if len(self._queue) >= self._batch_size:
            self._wake.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Send every queued report (and abandoned decide) now; True if none is left within ``timeout``."""
        if self._flusher is None:  # nothing is queued without batching, but abandonments may be
            self._tell_abandoned()
            return not self._abandoned
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._idle:
            while self._queue or self._in_flight or self._abandoned:
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

    def _flush_periodically(self, interval: float) -> None:
        backoff = interval
        while not self._closed:
            self._wake.wait(backoff)
            self._wake.clear()
            try:
                while self._queue and not self._closed:
                    self._send_one_batch()
                self._tell_abandoned()
                backoff = interval
            except Unreachable as exc:
                logger.warning("feedback waits in memory: service unreachable (%s)", exc)
                backoff = min(backoff * 2, 5.0)
            with self._idle:
                self._idle.notify_all()

    def _send_one_batch(self) -> None:
        with self._idle:
            batch = self._next_batch()
            self._in_flight = len(batch)
        try:
            response = self._post(FEEDBACK_BATCH_PATH, {"items": batch})
        except Unreachable:
            self._requeue(batch)
            raise
        finally:
            with self._idle:
                self._in_flight = 0
        self._batch_answered(response, len(batch))

    def _tell_abandoned(self) -> None:
        """One attempt per batch, best effort: what the service does not take is told later."""
        while self._abandoned and not self._closed:
            batch = self._abandoned_batch()
            try:
                response: httpx.Response | None = self._http.post(ABANDON_PATH, json={"items": batch})
            except httpx.TransportError:
                response = None
            self._abandoned_answered(batch, response)
            if response is None or response.status_code >= 500:
                return

    def _post(self, path: str, payload: Mapping[str, Any]) -> httpx.Response:
        attempt = 0
        while True:
            response, error = None, None
            try:
                response = self._http.post(path, json=payload)
            except httpx.TransportError as exc:
                error = exc
            failure = self._failure(response, error)
            if failure is None and response is not None:
                return response
            pause = self._retry_pause(attempt)
            if pause is None:
                raise Unreachable(str(failure))
            time.sleep(pause)
            attempt += 1

    def _fetch_use_cases(self) -> None:
        try:
            self._learn_use_cases(self._http.get(USE_CASES_PATH))
        except httpx.HTTPError as exc:
            self._learn_use_cases(None, exc)
