"""The asyncio HTTP client: the same behaviour as `Client` for async product code."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx

from closedloop.contracts import ClosedLoopConfig, Decision

from ._base import (
    ABANDON_PATH,
    ACTIVATE_PATH,
    DECIDE_PATH,
    FEEDBACK_BATCH_PATH,
    USE_CASES_PATH,
    BaseClient,
    QueueFull,
    Unreachable,
    auth_headers,
    logger,
)
from ._requests import Candidates, Features, Outcomes, decide_payload, raise_for_error


class AsyncClient(BaseClient):
    """``await client.decide(...)``; feedback is batched by a task that ``flush()`` and ``aclose()`` drain."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        timeout: float = 0.25,
        retries: int = 1,
        config: ClosedLoopConfig | None = None,
        batch_size: int = 500,
        flush_interval: float = 0.5,
        max_queued_feedback: int = 100_000,
        on_full: QueueFull = "drop_oldest",
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            timeout=timeout,
            retries=retries,
            config=config,
            batch_size=batch_size,
            max_queued_feedback=max_queued_feedback,
            on_full=on_full,
        )
        self._http = httpx.AsyncClient(
            base_url=base_url, timeout=timeout, transport=transport, headers=auth_headers(api_key)
        )
        self._flush_interval = flush_interval
        self._task: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None

    async def decide(
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
        payload = decide_payload(use_case, unit_id, context, candidates, activate=activate, slots=slots)
        try:
            decision = self._decision(await self._post(DECIDE_PATH, payload))
        except Unreachable as exc:
            decision = self._fallback(payload, exc)
            self._start_flushing()  # it tells the service of the abandoned request later
            return decision
        if self._should_fetch_use_cases:
            await self._fetch_use_cases()
        return decision

    async def activate(self, decision_id: str) -> None:
        """Make a decision made with ``activate=False`` count; nothing for a fallback decision;
        raises ServiceUnavailableError if the service cannot be reached."""
        body = self._activation_target(decision_id)
        if body is None:
            return
        try:
            response = await self._post(ACTIVATE_PATH, body)
        except Unreachable as exc:
            raise self._activation_unreachable(decision_id, exc) from None
        raise_for_error(response)

    async def log_feedback(
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
        while self._on_full == "block" and self._queue_full:
            if not await self.flush():
                await asyncio.sleep(self._flush_interval)
        self._enqueue(item)
        self._start_flushing()
        if len(self._queue) >= self._batch_size:
            await self.flush()

    async def flush(self, timeout: float = 10.0) -> bool:
        """Send every queued report now; True if the queue emptied within ``timeout``."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        deadline = time.monotonic() + timeout
        async with self._lock:
            while self._queue:
                if time.monotonic() > deadline:
                    return False
                batch = self._next_batch()
                try:
                    response = await self._post(FEEDBACK_BATCH_PATH, {"items": batch})
                except Unreachable as exc:
                    self._requeue(batch)
                    logger.warning("feedback waits in memory: service unreachable (%s)", exc)
                    return False
                self._batch_answered(response, len(batch))
            return await self._tell_abandoned()

    async def _tell_abandoned(self) -> bool:
        """One attempt per batch, best effort; True if none is left to tell."""
        while self._abandoned:
            batch = self._abandoned_batch()
            try:
                response: httpx.Response | None = await self._http.post(ABANDON_PATH, json={"items": batch})
            except httpx.TransportError:
                response = None
            self._abandoned_answered(batch, response)
            if response is None or response.status_code >= 500:
                return False
        return True

    def _start_flushing(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush_periodically())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        try:
            await self.flush()
        finally:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval)
            await self.flush()

    async def _post(self, path: str, payload: Mapping[str, Any]) -> httpx.Response:
        attempt = 0
        while True:
            response, error = None, None
            try:
                response = await self._http.post(path, json=payload)
            except httpx.TransportError as exc:
                error = exc
            failure = self._failure(response, error)
            if failure is None and response is not None:
                return response
            pause = self._retry_pause(attempt)
            if pause is None:
                raise Unreachable(str(failure))
            await asyncio.sleep(pause)
            attempt += 1

    async def _fetch_use_cases(self) -> None:
        try:
            self._learn_use_cases(await self._http.get(USE_CASES_PATH))
        except httpx.HTTPError as exc:
            self._learn_use_cases(None, exc)
