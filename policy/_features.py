"""Turning a request's context and candidates into the rows a model scores, checking every value.

The column order is fixed by the use case: context features, then candidate features, then, for
binary decisions, ``action`` (0 for no, 1 for yes), then the interactions: the product of every
numeric context feature with every numeric candidate feature (with ``action`` for binary
decisions), named ``context*candidate``. Trees find such products only with many splits and much
data; a product column makes a bilinear effect additive, which a few trees fit (VW's ``-q`` does the
same for a linear learner). ``model.interactions: none`` turns them off, and they are left out
beyond `MAX_INTERACTIONS` columns. Rankings end with ``slot``: the slot a logged example was
shown in (0 is the top), 0 for every candidate when serving (see `SLOT_FEATURE`). The trainer
builds its rows with the same encoder from the logged features, so serving and training can
never disagree on a column; a model trained on leading columns only (before interactions or the
slot were added) is served on those (`leading_columns`).
"""

from __future__ import annotations

import math
import operator
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain

import msgspec
import numpy as np

from closedloop.contracts import (
    CategoricalFeature,
    FeatureValue,
    InvalidRequestError,
    NumericFeature,
    UseCaseConfig,
)

ACTION_FEATURE = "action"
SLOT_FEATURE = "slot"
"""Position bias, handled as a training feature fixed at serving: lower slots are examined less,
so the same candidate is clicked less there. Each shown slot of a ranking is one example with its
slot as a feature, and the model scores every candidate as if shown at the top, so the ranking
orders candidates by how they do in the same place. Chosen over examination-weighted labels,
which need examination probabilities estimated first (by randomising positions): exploring
slots in turn (`rank_slots`) puts each candidate in many slots, which is what the tree needs to
separate the slot's effect from the candidate's."""
MAX_INTERACTIONS = 64
_HUGE = 2**1000  # an int below it converts to a finite float
BINARY_CANDIDATES = ("no", "yes")
_FLOAT_ROWS = list[list[float]]
_FILL_ROWS = 4096
"""Rows of a training matrix filled together (`FeatureEncoder.encode_logged_columns`): a band of
them, every column, stays in the CPU's cache while it is filled (4096 x 95 columns: 3 MB)."""


@dataclass(frozen=True)
class _Spec:
    name: str
    categories: dict[str, int] | None
    default: FeatureValue


def _specs(features: Mapping[str, NumericFeature | CategoricalFeature]) -> tuple[_Spec, ...]:
    return tuple(
        _Spec(
            name,
            {v: i for i, v in enumerate(f.values)} if isinstance(f, CategoricalFeature) else None,
            f.default,
        )
        for name, f in features.items()
    )


class FeatureEncoder:
    """Checks and encodes the features of one use case."""

    def __init__(self, use_case: UseCaseConfig) -> None:
        self._context = _specs(use_case.context)
        self._candidate = _specs(use_case.candidate)
        self._context_names = frozenset(s.name for s in self._context)
        self._candidate_names = frozenset(s.name for s in self._candidate)
        self._binary = use_case.decision == "binary"
        self.feature_names: list[str] = [s.name for s in self._context] + [s.name for s in self._candidate]
        if self._binary:
            self.feature_names.append(ACTION_FEATURE)
        self.base_feature_count = len(self.feature_names)
        """Columns before the interactions (a model of an earlier version was trained on these)."""
        self._pairs = _interaction_pairs(self.feature_names, self._context, self._candidate, use_case)
        self.feature_names += [f"{self.feature_names[i]}*{self.feature_names[j]}" for i, j in self._pairs]
        self._ranked = use_case.decision == "rank"
        if self._ranked:
            self.feature_names.append(SLOT_FEATURE)
        self.categorical_features = [s.name for s in (*self._context, *self._candidate) if s.categories]
        self._numeric_candidate = [s for s in self._candidate if s.categories is None]
        self._categorical_candidate = [
            (column, s) for column, s in enumerate(self._candidate) if s.categories is not None
        ]
        self._numeric_values = _getter([s.name for s in self._numeric_candidate])
        self._numeric_columns = [i for i, s in enumerate(self._candidate) if s.categories is None]
        self._numeric_targets = _columns(len(self._context), self._numeric_columns)
        left_columns = [i for i, _ in self._pairs]
        self._pair_columns = (left_columns, [j for _, j in self._pairs])
        self._interaction_slice = slice(self.base_feature_count, self.base_feature_count + len(self._pairs))
        self.unknown_categories = 0
        self.unknown_by_feature: Counter[str] = Counter()
        """Categorical values not in the configuration, per feature, since this encoder was made."""

    def check_context(self, context: Mapping[str, FeatureValue]) -> dict[str, FeatureValue]:
        """The context with defaults filled in, as it will be logged; raises on a bad value."""
        return _checked(context, self._context, self._context_names, "context")

    def check_candidate(self, features: Mapping[str, FeatureValue], index: int) -> dict[str, FeatureValue]:
        return _checked(features, self._candidate, self._candidate_names, f"candidates[{index}].features")

    def checked_rows(
        self, context: Mapping[str, FeatureValue], candidates: Sequence[dict[str, FeatureValue]]
    ) -> tuple[dict[str, FeatureValue], list[dict[str, FeatureValue]], np.ndarray]:
        """Check and encode in one pass: the checked context, the checked candidates (as they will
        be logged) and the rows. Candidates that carry exactly the declared features, numbers
        finite and categories strings (the usual request), are checked column-wise on one
        matrix; any other request goes value by value, which names the first bad field."""
        checked_context = self.check_context(context)
        if not candidates or self._binary:
            return checked_context, [], self.encode(checked_context, [])
        rows = np.zeros((len(candidates), len(self.feature_names)))  # the slot column stays 0
        if not self._fill_candidates(candidates, rows):
            checked = [self.check_candidate(c, i) for i, c in enumerate(candidates)]
            return checked_context, checked, self.encode(checked_context, checked)
        rows[:, : len(self._context)] = [
            self._code(spec, checked_context.get(spec.name)) for spec in self._context
        ]
        if self._pairs:
            left, right = self._pair_columns
            with np.errstate(over="ignore"):  # see _with_interactions
                np.multiply(rows[:, left], rows[:, right], out=rows[:, self._interaction_slice])
        return checked_context, list(candidates), rows

    def _fill_candidates(self, candidates: Sequence[dict[str, FeatureValue]], rows: np.ndarray) -> bool:
        """Write well-formed candidates' columns into ``rows``; False to check them one by one."""
        start = len(self._context)
        if sum(map(len, candidates)) != len(self._candidate) * len(candidates):
            return False  # with every declared name present (below), each has exactly those
        try:
            values = [self._numeric_values(features) for features in candidates]
            raw = [
                [features[spec.name] for features in candidates] for _, spec in self._categorical_candidate
            ]
        except KeyError:
            return False
        if values and values[0]:
            # Bools are ints to numpy, and it parses numeric strings: msgspec's conversion (in C)
            # passes only floats and ints, which it makes floats, and refuses ints past a float.
            try:
                converted = msgspec.convert(values, _FLOAT_ROWS)
            except msgspec.ValidationError:
                return False
            numbers = np.fromiter(  # faster than np.array, which discovers a list's shape and type
                chain.from_iterable(converted), dtype=np.float64, count=len(values) * len(values[0])
            ).reshape(len(values), len(values[0]))
            if not np.isfinite(numbers).all():
                return False
            rows[:, self._numeric_targets] = numbers
        if not all(type(value) is str for value in chain.from_iterable(raw)):
            return False  # checked before any is coded: a fallback must not count unknowns twice
        for (column, spec), column_values in zip(self._categorical_candidate, raw, strict=True):
            rows[:, start + column] = [self._code(spec, value) for value in column_values]
        return True

    def encode(
        self, context: Mapping[str, FeatureValue], candidates: Sequence[Mapping[str, FeatureValue]]
    ) -> np.ndarray:
        """Rows for the model from checked features: one per candidate, or no/yes for binary."""
        context_row = [self._code(spec, context.get(spec.name)) for spec in self._context]
        if self._binary:
            rows = [[*context_row, 0.0], [*context_row, 1.0]]
        else:
            rows = [
                context_row + [self._code(spec, features.get(spec.name)) for spec in self._candidate]
                for features in candidates
            ]
        base = np.asarray(rows, dtype=np.float64).reshape(len(rows), self.base_feature_count)
        return self._with_slot(self._with_interactions(base), None)

    def encode_logged(self, rows: Sequence[Mapping[str, FeatureValue]]) -> np.ndarray:
        """Rows for training from logged examples: each maps feature name to the value logged at
        decision time (context and chosen candidate features merged; ``action`` for binary)."""
        specs = (*self._context, *self._candidate)
        matrix = np.empty((len(rows), self.base_feature_count), dtype=np.float64)
        for column, spec in enumerate(specs):
            matrix[:, column] = [self._code(spec, row.get(spec.name)) for row in rows]
        if self._binary:
            matrix[:, -1] = [float(row.get(ACTION_FEATURE) or 0.0) for row in rows]
        return self._with_slot(self._with_interactions(matrix), rows)

    def encode_logged_columns(self, columns: Mapping[str, np.ndarray], rows: int) -> np.ndarray:
        """`encode_logged` of examples given column-wise: feature name -> ``rows`` logged values
        (floats with NaN for missing numbers, objects for categories); a feature the columns
        lack is missing in every row."""
        coded: list[np.ndarray | float] = []  # each base column's values (NaN: missing in every row)
        for spec in (*self._context, *self._candidate):
            values = columns.get(spec.name)
            if values is None:
                coded.append(math.nan)
            elif spec.categories is None:
                coded.append(_numbers(values))
            else:  # floats here were logged while the feature was numeric; NaN is a missing one
                coded.append(np.array([self._code(spec, None if v != v else v) for v in values]))
        if self._binary:
            coded.append(np.nan_to_num(_numbers(columns.get(ACTION_FEATURE, np.zeros(rows))), nan=0.0))
        slot = None
        if self._ranked:
            slot = np.nan_to_num(_numbers(columns.get(SLOT_FEATURE, np.zeros(rows))), nan=0.0)
        # One matrix of every column, filled in place (copies with the interactions and the slot
        # made a retrain touch twice the memory), a band of rows at a time: filled a column at a
        # time the row-major matrix went through memory once per column (1M rows x 30 columns,
        # memory already touched: 0.23 -> 0.10 s; touching fresh memory costs this VM ~2 s alike).
        matrix = np.empty((rows, len(self.feature_names)))
        for start in range(0, rows, _FILL_ROWS):
            end = start + _FILL_ROWS
            band = matrix[start:end]
            base = band[:, : self.base_feature_count]
            for column, filling in enumerate(coded):
                base[:, column] = filling if isinstance(filling, float) else filling[start:end]
            if self._pairs:
                left, right = self._pair_columns
                with np.errstate(over="ignore"):  # see _with_interactions
                    np.multiply(base[:, left], base[:, right], out=band[:, self._interaction_slice])
            if slot is not None:
                band[:, -1] = slot[start:end]
        return matrix

    def _with_interactions(self, base: np.ndarray) -> np.ndarray:
        if not self._pairs:
            return base
        left, right = zip(*self._pairs, strict=True)
        with np.errstate(over="ignore"):  # two huge finite values: an infinite product, a tree splits on it
            return np.hstack([base, base[:, list(left)] * base[:, list(right)]])

    def _with_slot(
        self, matrix: np.ndarray, logged: Sequence[Mapping[str, FeatureValue]] | None
    ) -> np.ndarray:
        """Rankings: the slot column, each logged example's slot (0 when serving)."""
        if not self._ranked:
            return matrix
        slot = np.zeros((len(matrix), 1))
        if logged is not None:
            slot[:, 0] = [float(row.get(SLOT_FEATURE) or 0.0) for row in logged]
        return np.hstack([matrix, slot])

    def leading_columns(self, trained_on: Sequence[str]) -> int | None:
        """How many leading columns a model trained on the features ``trained_on`` reads: all of
        them for a model of today's features, fewer for one trained before interactions or the
        slot were added; None for a model of other features."""
        names = list(trained_on)
        if names == self.feature_names:
            return len(names)
        if len(names) >= self.base_feature_count and names == self.feature_names[: len(names)]:
            return len(names)
        return None

    def logged_example(
        self,
        context: Mapping[str, FeatureValue],
        candidate: Mapping[str, FeatureValue],
        choice: str | None,
        *,
        slot: int = 0,
    ) -> dict[str, FeatureValue]:
        """The features of the logged action, in the shape `encode_logged` reads; ``slot``: a
        ranking's, where the candidate was shown."""
        if self._binary:
            return {**context, ACTION_FEATURE: 1.0 if choice == BINARY_CANDIDATES[1] else 0.0}
        if self._ranked:
            return {**context, **candidate, SLOT_FEATURE: slot}
        return {**context, **candidate}

    def _code(self, spec: _Spec, value: FeatureValue) -> float:
        if value is None:
            return math.nan
        if spec.categories is None:
            return float(value)
        code = spec.categories.get(str(value))
        if code is None:
            # A category the configuration does not list yet: the model treats it as missing.
            self.unknown_categories += 1
            self.unknown_by_feature[spec.name] += 1
            return math.nan
        return float(code)


def _numbers(values: np.ndarray) -> np.ndarray:
    """Logged values as float64; objects (rows read from JSON, a type change) one by one."""
    if values.dtype != object:
        return values.astype(np.float64, copy=False)
    return np.array([_number(v) for v in values], dtype=np.float64)


def _number(value: object) -> float:
    """A logged value as a number, NaN if it is none (a category logged before a type change)."""
    if value is None:
        return math.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _columns(start: int, columns: list[int]) -> slice | list[int]:
    """Where candidate ``columns`` go in a row: a slice when they are contiguous (no copy)."""
    if columns and columns == list(range(columns[0], columns[-1] + 1)):
        return slice(start + columns[0], start + columns[-1] + 1)
    return [start + i for i in columns]


def _getter(names: Sequence[str]) -> Callable[[Mapping[str, FeatureValue]], Sequence[FeatureValue]]:
    """A C-level lookup of ``names`` in a dict, always returning a tuple."""
    if not names:
        return lambda features: ()
    if len(names) == 1:
        only = names[0]
        return lambda features: (features[only],)
    return operator.itemgetter(*names)


def _interaction_pairs(
    names: list[str], context: tuple[_Spec, ...], candidate: tuple[_Spec, ...], use_case: UseCaseConfig
) -> list[tuple[int, int]]:
    """(context column, candidate column) of each product, numeric features only."""
    if use_case.model.interactions == "none":
        return []
    left = [i for i, spec in enumerate(context) if spec.categories is None]
    if use_case.decision == "binary":
        right = [names.index(ACTION_FEATURE)]
    else:
        right = [len(context) + j for j, spec in enumerate(candidate) if spec.categories is None]
    pairs = [(i, j) for i in left for j in right]
    return pairs if len(pairs) <= MAX_INTERACTIONS else []


def _checked(
    values: Mapping[str, FeatureValue], specs: tuple[_Spec, ...], declared: frozenset[str], where: str
) -> dict[str, FeatureValue]:
    for name in values if not declared.issuperset(values) else ():
        if name not in declared:
            raise InvalidRequestError(
                f"{where}.{name} is not a declared feature.",
                field=f"{where}.{name}",
                value=values[name],
                expected=f"one of {sorted(declared)}" if declared else "no features here",
                hint="Declare it in closedloop.yaml, or check its spelling.",
            )
    checked: dict[str, FeatureValue] = {}
    for spec in specs:
        value = values.get(spec.name)
        if value is None:
            if spec.default is None:
                raise InvalidRequestError(
                    f"{where}.{spec.name} is missing and has no default.",
                    field=f"{where}.{spec.name}",
                    expected="a number" if spec.categories is None else f"one of {list(spec.categories)}",
                    hint="Send it, or give it a 'default' in closedloop.yaml.",
                )
            value = spec.default
        # Most values are finite numbers: accepted here without a call (x - x is 0 unless NaN or
        # inf; an int of hundreds of digits goes on to the check, which refuses it).
        if spec.categories is None and (
            (type(value) is float and value - value == 0) or (type(value) is int and -_HUGE < value < _HUGE)
        ):
            checked[spec.name] = value
        else:
            checked[spec.name] = _checked_value(value, spec, f"{where}.{spec.name}")
    return checked


def _checked_value(value: FeatureValue, spec: _Spec, field: str) -> FeatureValue:
    if spec.categories is None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidRequestError(
                f"{field} must be a number, got {type(value).__name__} {value!r}.",
                field=field,
                value=value,
                expected="a finite number",
            )
        if not _finite(value):
            raise InvalidRequestError(
                f"{field} must be a finite number, got {value!r}.",
                field=field,
                value=value,
                expected="a finite number (not NaN or infinity)",
            )
        return value
    if not isinstance(value, str):
        raise InvalidRequestError(
            f"{field} is categorical and must be a string, got {type(value).__name__} {value!r}.",
            field=field,
            value=value,
            expected=f"one of {list(spec.categories)}",
        )
    return value


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False
