"""The encoded training rows of each outcome, kept between retrains so that a retrain reads and
encodes only the rows that became final since the last one.

Reading every stored example back from SQL and decoding its features in Python made each retrain
cost more as the history grew (``bench/retrain_cost.py``). A label is final once its decision's
window has closed (`ExampleStore.close_windows`), and final rows are appended in decision-time
order, so the rows decided after the last read's window mark, up to the new one, are exactly the
new ones. The cache checks that against the store's count of final labels; anything else (a
decision activated after its window, or abandoned, which changes old rows) makes it read
everything again. At most ``limit`` rows are kept: the latest, the training window.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from closedloop.policy import FeatureEncoder

from ._store import ExampleStore, LabelledRows
from ._training import Dataset


@dataclass
class _Cached:
    data: Dataset
    through: float
    """The window mark (``closed_before``) the rows were read up to."""
    final_labels: int
    """The store's count of final labels at that mark."""
    unknown: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class ReadRows:
    data: Dataset
    unknown: Counter[str]
    """Unknown categorical values per feature in the rows read since the last full read."""
    read: int
    """Rows read from the store for this retrain."""
    incremental: bool


class TrainingRows:
    def __init__(self, store: ExampleStore, *, limit: int, cache: bool = True) -> None:
        self._store = store
        self._limit = limit
        self._cache_enabled = cache
        self._cache: dict[tuple[str, str], _Cached] = {}

    def read(self, use_case: str, outcome: str, encoder: FeatureEncoder) -> ReadRows:
        through, count = self._store.training_window(use_case, outcome)
        if through is None:
            empty = Dataset(np.zeros((0, len(encoder.feature_names))), np.zeros(0), np.zeros(0))
            return ReadRows(empty, Counter(), 0, False)
        cached = self._cache.get((use_case, outcome)) if self._cache_enabled else None
        if cached is not None and through >= cached.through:
            rows = self._store.labelled_examples_between(
                use_case, outcome, after=cached.through, until=through, limit=self._limit
            )
            if cached.final_labels + len(rows) == count:
                newer, unknown = _encoded(rows, encoder)
                cached.data = cached.data.extended(newer, limit=self._limit)
                cached.through, cached.final_labels = through, count
                cached.unknown += unknown
                return ReadRows(cached.data, Counter(cached.unknown), len(rows), True)
        rows = self._store.labelled_examples_between(
            use_case, outcome, after=-math.inf, until=through, limit=self._limit
        )
        data, unknown = _encoded(rows, encoder)
        if self._cache_enabled:
            self._cache[(use_case, outcome)] = _Cached(data, through, count, unknown)
        return ReadRows(data, unknown, len(rows), False)


def _encoded(rows: LabelledRows, encoder: FeatureEncoder) -> tuple[Dataset, Counter[str]]:
    before = Counter(encoder.unknown_by_feature)
    data = Dataset.from_rows(rows, encoder)
    return data, encoder.unknown_by_feature - before
