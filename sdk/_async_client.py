"""The asyncio HTTP client: the same behaviour as `Client` for async product code."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx

from closedloop.contracts import ClosedLoopConfig, ClosedLoopError, Decision, UseCaseConfig
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


class AsyncClient:
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
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport)
        self._retries = retries
        self._use_cases: dict[str, UseCaseConfig] | None = dict(config.use_cases) if config else None
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._queue: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None
        self.fallbacks = 0
        self.feedback_errors: list[ClosedLoopError] = []

    async def decide(
        self,
        use_case: str,
        unit_id: str,
        context: Features | None = None,
        candidates: Candidates = None,
    ) -> Decision:
        payload = decide_payload(use_case, unit_id, context, candidates)
        try:
            return read_decision(await self._post("/v1/decide", payload))
        except Unreachable as exc:
            logger.warning("decision service unreachable (%s); using the default policy", exc)
            self.fallbacks += 1
            return fallback_decision(
                use_case, self._use_cases.get(use_case) if self._use_cases else None, payload["candidates"]
            )

    async def log_feedback(
        self, decision_id: str, outcomes: Outcomes, timestamp: datetime | None = None
    ) -> None:
        if is_fallback_id(decision_id):
            return
        self._queue.append(feedback_payload(decision_id, outcomes, timestamp))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush_periodically())
        if len(self._queue) >= self._batch_size:
            await self.flush()

    async def flush(self) -> None:
        """Send every queued report; raises the service's error if a batch is refused."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            while self._queue:
                batch, self._queue = self._queue[: self._batch_size], self._queue[self._batch_size :]
                try:
                    raise_for_error(await self._post("/v1/feedback/batch", {"items": batch}))
                except Unreachable:
                    self._queue[:0] = batch
                    raise

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
            try:
                await self.flush()
            except Unreachable as exc:
                logger.warning("feedback waits in memory: service unreachable (%s)", exc)
            except ClosedLoopError as exc:
                self.feedback_errors.append(exc)

    async def _post(self, path: str, payload: Mapping[str, Any]) -> httpx.Response:
        last: Exception | None = None
        for attempt in range(self._retries + 1):
            try:
                response = await self._http.post(path, json=payload)
            except httpx.TransportError as exc:
                last = exc
            else:
                if response.status_code not in RETRYABLE_STATUS:
                    return response
                last = ClosedLoopError(f"HTTP {response.status_code}")
            if attempt < self._retries:
                await asyncio.sleep(0.01 * (attempt + 1))
        raise Unreachable(str(last))
