"""A uniform sample of logged decisions in one pass: those of the smallest id hashes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class HashSample:
    """The ``size`` decisions of the smallest hashes seen, each decision once (its first copy: a
    decision logged twice, a retry after a crash, is one decision), with its record.

    Offers are filtered by the largest hash kept and merged once as many wait as the sample
    holds: a merge per batch rebuilt the sample's list of 50,000 records every 20,000 decisions
    read (a tenth of a report's reading)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.clear()

    def clear(self) -> None:
        self._hashes = np.zeros(0, dtype=np.int64)
        self._records: list[bytes] = []
        self._waiting_hashes: list[np.ndarray] = []
        self._waiting_records: list[bytes] = []
        self._bound: int | None = None
        """The largest hash kept once the sample is full: only smaller ones can enter."""

    def offer(self, hashes: np.ndarray, records: Sequence[bytes], which: np.ndarray) -> None:
        """Decisions in log order: their hashes, and ``records[which[i]]`` the record of the i-th."""
        if self.size <= 0:
            return
        entering = np.arange(len(hashes)) if self._bound is None else np.flatnonzero(hashes < self._bound)
        if not len(entering):
            return
        self._waiting_hashes.append(hashes[entering])
        self._waiting_records.extend(records[i] for i in which[entering].tolist())
        if len(self._waiting_records) >= self.size:
            self._merge()

    def bound(self) -> int | None:
        """The largest hash kept once the sample is full: only smaller ones can enter (None: any)."""
        return self._bound

    def hashes(self) -> np.ndarray:
        self._merge()
        return self._hashes

    def records(self) -> list[bytes]:
        """The kept decisions' records, in the order of `hashes`."""
        self._merge()
        return self._records

    def _merge(self) -> None:
        if not self._waiting_records:
            return
        merged = np.concatenate([self._hashes, *self._waiting_hashes])
        pool = [*self._records, *self._waiting_records]
        _, first = np.unique(merged, return_index=True)  # first copies: the merge keeps log order
        kept = np.sort(first[np.argsort(merged[first], kind="stable")[: self.size]])
        self._hashes = merged[kept]
        self._records = [pool[i] for i in kept.tolist()]
        self._waiting_hashes, self._waiting_records = [], []
        if len(self._hashes) >= self.size:
            self._bound = int(self._hashes.max())
