"""The features of stored examples, column-wise: one Arrow block per use case per stored batch.

The join used to write each example's features as a JSON text in its SQL row, and every retrain
parsed them back row by row and encoded them value by value: a third of a retrain's time, and
most of the database's size (``bench/trainer_throughput.py``). Now each batch's examples of a
use case become one block of columns (Arrow IPC, LZ4-compressed) in ``cl_feature_blocks``,
written in the batch's own transaction, so a block commits or rolls back with its examples and
offsets. A retrain reads the blocks of the rows it trains on and encodes them column by column.

A block keeps every declared feature as logged, by name (numbers as float64, categories as
strings), not encoded: a configuration that adds a category or a feature, or turns a number
into a category, later still reads the old blocks (a feature a block lacks is missing, as it was
in the JSON).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from closedloop.contracts import FeatureValue

KEY = "example key"
"""The column of example keys (feature names cannot hold a space, so no feature is named so)."""
_WRITE_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")


def encode_block(
    keys: Sequence[str], rows: Sequence[Mapping[str, FeatureValue]], *, categorical: frozenset[str]
) -> bytes:
    """The block of ``rows`` (each example's logged features, keyed as ``keys``)."""
    names = sorted({name for row in rows for name in row})
    schema = pa.schema([(name, pa.string() if name in categorical else pa.float64()) for name in names])
    try:  # every row at once, in C++: a third faster than a column at a time
        features = pa.Table.from_pylist(list(rows), schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # a value its column's type does not take as it is
        features = pa.table(
            {name: _column([row.get(name) for row in rows], name in categorical) for name in names}
        )
    columns = [pa.array(keys, type=pa.string()), *features.columns]  # (rows without features too)
    table = pa.Table.from_arrays(columns, names=[KEY, *names])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=_WRITE_OPTIONS) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def _column(values: list[FeatureValue], categorical: bool) -> pa.Array:
    return _strings(values) if categorical else _floats(values)


def _strings(values: list[FeatureValue]) -> pa.Array:
    try:
        return pa.array(values, type=pa.string())
    except pa.ArrowTypeError:  # a category logged as a number
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def _floats(values: list[FeatureValue]) -> pa.Array:
    try:
        return pa.array(values, type=pa.float64())
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # an int too large for int64, a number as text
        return pa.array(_numbers(values), type=pa.float64())


def _numbers(values: list[FeatureValue]) -> list[float | None]:
    try:
        return [None if v is None else float(v) for v in values]
    except ValueError:  # a number logged as text by an old version: missing, as the encoder reads it
        return [_number_or_none(v) for v in values]


def _number_or_none(value: FeatureValue) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def decode_block(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def take_rows(blocks: Sequence[pa.Table], keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Feature name -> the values of the examples ``keys`` (in that order) found in ``blocks``:
    float64 with NaN where missing for numbers, objects (str or None) for categories."""
    if not blocks:
        return {}
    table = pa.concat_tables(_same_types(blocks), promote_options="default")
    # A decision logged twice (a retry) is in two blocks with the same features: the first is taken.
    where = pc.index_in(pa.array(keys, type=pa.string()), value_set=table.column(KEY))
    found = where.is_valid()
    if not pc.all(found).as_py():
        missing = keys[int(np.argmin(found.to_numpy(zero_copy_only=False)))]
        raise LookupError(f"example {missing!r} is in none of its feature blocks")
    features = table.drop_columns([KEY])
    run = _run(where)
    taken = features.take(where) if run is None else features.slice(*run)
    return {name: _as_numpy(taken.column(name)) for name in taken.column_names}


def _run(where: pa.Array) -> tuple[int, int] | None:
    """(first, length) when ``where`` is one run of consecutive rows (the usual read: every row
    of the blocks in order), which a slice takes without a copy; take cost a fifth of a retrain's
    read of 1M rows."""
    positions = where.to_numpy(zero_copy_only=False)
    if not len(positions) or positions[-1] - positions[0] != len(positions) - 1:
        return None
    if not (np.diff(positions) == 1).all():
        return None
    return int(positions[0]), len(positions)


def _same_types(blocks: Sequence[pa.Table]) -> list[pa.Table]:
    """The blocks with a feature stored as numbers in some and as categories in others (its type
    changed in the configuration) as text in all: the encoder reads text either way."""
    types: dict[str, set[pa.DataType]] = {}
    for block in blocks:
        for column in block.schema:
            types.setdefault(column.name, set()).add(column.type)
    mixed = [name for name, kinds in types.items() if len(kinds) > 1]
    if not mixed:
        return list(blocks)
    changed = []
    for block in blocks:
        for name in mixed:
            if name in block.column_names:
                at = block.column_names.index(name)
                block = block.set_column(at, name, pc.cast(block.column(name), pa.string()))
        changed.append(block)
    return changed


def _as_numpy(column: pa.ChunkedArray) -> Any:
    if pa.types.is_floating(column.type):
        return column.to_numpy().astype(np.float64, copy=False)  # nulls come out as NaN
    return np.asarray(column.to_pylist(), dtype=object)


class BlockRows:
    """One block's examples by key, as dicts of their logged features (for exports, row by row)."""

    def __init__(self, block: pa.Table) -> None:
        self._rows = block.drop_columns([KEY]).to_pylist()
        self._index = {key: i for i, key in enumerate(block.column(KEY).to_pylist())}

    def features(self, key: str) -> dict[str, FeatureValue]:
        row = self._rows[self._index[key]]
        return {name: value for name, value in row.items() if value is not None and value == value}
