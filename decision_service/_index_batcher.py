"""Group commit of the decision index's writes on the service's event loop.

Each decision logged by ``POST /v1/decide`` still has to reach the index (Redis) before it is
answered, so that feedback sent right after the answer finds it. One script call per decision cost
about 80 µs of redis-py CPU plus a round trip with the loop blocked (bench/http_service.py); the
decisions made in the same turn of the loop now wait for one call that carries all of their
writes, made when that turn's other handlers have run; the same for the lookups of their request
ids (is this a retry?), one MGET per turn. Under light load a batch is one decision
and nothing changes; under load, the round trip and redis-py's work per call are shared.
"""

from __future__ import annotations

import asyncio

from closedloop.contracts import ServiceUnavailableError

from ._decision_index import Commit, DecisionIndex, Seen

Written = list[bool] | ServiceUnavailableError
"""Per write: whether each of its claims was new, or the error that kept the index from it."""


class IndexBatcher:
    def __init__(self, index: DecisionIndex, loop: asyncio.AbstractEventLoop) -> None:
        self._index = index
        self.loop = loop
        self._waiting: list[tuple[Commit, asyncio.Future[Written]]] = []
        self._lookups: list[tuple[str, asyncio.Future[Seen]]] = []
        self._flush_due = False
        self.batches = 0
        self.writes = 0

    async def commit(self, write: Commit) -> Written:
        future: asyncio.Future[Written] = self.loop.create_future()
        self._waiting.append((write, future))
        self._schedule()
        return await future

    async def lookup(self, key: str) -> Seen:
        """What the index holds under ``key`` (a request id's answer), looked up with the other
        lookups of this turn of the loop in one MGET."""
        future: asyncio.Future[Seen] = self.loop.create_future()
        self._lookups.append((key, future))
        self._schedule()
        return await future

    def _schedule(self) -> None:
        if not self._flush_due:  # the first of this turn: the flush runs after the others
            self._flush_due = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        self._flush_lookups()
        self._flush_writes()

    def _flush_lookups(self) -> None:
        lookups, self._lookups = self._lookups, []
        if not lookups:
            return
        try:
            found: list[Seen] = [Seen(value) for value in self._index.lookup([key for key, _ in lookups])]
        except ServiceUnavailableError as exc:
            found = [Seen(exc)] * len(lookups)
        for (_, future), seen in zip(lookups, found, strict=True):
            if not future.cancelled():
                future.set_result(seen)

    def _flush_writes(self) -> None:
        batch, self._waiting = self._waiting, []
        if not batch:
            return
        try:
            results: list[Written] = list(self._index.commit_many([write for write, _ in batch]))
        except ServiceUnavailableError as exc:
            results = [exc] * len(batch)
        self.batches += 1
        self.writes += len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.cancelled():  # a client that went away: its decision is logged and indexed
                future.set_result(result)
