"""Preparing a large batch in a worker process while the trainer stores the one before it.

Decoding a batch and shaping its examples, feature blocks and reports (`Joiner.prepare`) is about
two thirds of the join's time and needs no database; storing it (`Joiner.store`) is the rest.
During a long catch-up the trainer hands batch k+1 to one worker process and stores batch k
meanwhile, so that both cores work: 38,697 -> 47,479 events/s catching up on a 300,000-decision
log of the trainer bench, the worker's start included (BENCHMARKS.md). Batches smaller than
``WORKER_FROM_RECORDS`` (a trainer keeping up with live traffic) are prepared in the trainer's own
process: a worker costs more to feed than it saves on them, and starting one takes a second or two.

Batches are still stored one at a time, in the order they were read, each in its own transaction
with its offsets: the join's exactly-once rules are those of a trainer without a worker.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from closedloop.contracts import ClosedLoopConfig
from closedloop.metadata import exit_with, freeze_startup_objects
from closedloop.policy import FeatureEncoder

from ._join import Joiner, PreparedBatch
from ._sources import EventBatch

logger = logging.getLogger(__name__)

WORKER_FROM_RECORDS = 5_000
"""Batches of at least this many events are prepared by the worker process: a full batch of
`Trainer.catch_up`'s default size, which only a backlog fills (at that size the worker took a
1M-decision catch-up from 31,775 to 53,620 events/s)."""

Prepared = Callable[[], PreparedBatch]
"""Waits for a batch's preparation and returns it."""


class BatchPreparer:
    def __init__(self, config: ClosedLoopConfig, joiner: Joiner, *, worker: bool = True) -> None:
        self._config = config
        self._joiner = joiner
        self._worker_allowed = worker
        self._pool: ProcessPoolExecutor | None = None

    def start(self, batch: EventBatch) -> Prepared:
        """Begin preparing a batch: in the worker if it is large (which reads the records itself
        when they are in the embedded log), else here and now."""
        if self._worker_allowed and len(batch) >= WORKER_FROM_RECORDS:
            return self._worker().submit(_prepare, batch).result
        prepared = self._joiner.prepare(*batch.records())
        return lambda: prepared

    def _worker(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # forkserver: the trainer has threads (a Kafka consumer's, the log's fsync), which a
            # fork would copy mid-state.
            logger.info("a long backlog: batches are prepared in a worker process while others are stored")
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("forkserver"),
                initializer=_start_worker,
                initargs=(self._config, os.getpid()),
            )
        return self._pool

    def release(self) -> None:
        """Stop the worker, if one runs (a trainer keeping up does not need its memory)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


_JOINER: Joiner | None = None
"""The worker's joiner, made once from the trainer's configuration."""


def _start_worker(config: ClosedLoopConfig, trainer: int) -> None:
    global _JOINER
    _JOINER = Joiner(config, {name: FeatureEncoder(use_case) for name, use_case in config.use_cases.items()})
    exit_with(trainer)  # a trainer killed with SIGKILL would leave it waiting for work forever
    freeze_startup_objects()


def _prepare(batch: EventBatch) -> PreparedBatch:
    assert _JOINER is not None, "the worker's initializer makes the joiner"
    return _JOINER.prepare(*batch.records())
