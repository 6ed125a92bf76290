"""Examples' features stored column-wise (`trainer._feature_blocks`) against the row-wise path they
replace: a block written and read back encodes to the same training rows as the logged dicts,
unknown categories counted alike; and a store holding rows of both kinds (JSON features from
before blocks, and blocks) reads each example's own features."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from unittest.mock import patch

import numpy as np
import orjson
from conftest import make_config
from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop.contracts import Attribution
from closedloop.policy import FeatureEncoder, _features
from closedloop.trainer import ExampleStore
from closedloop.trainer._feature_blocks import decode_block, encode_block, take_rows
from closedloop.trainer._store import examples, insert_ignoring_duplicates, labels

numbers = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(10**6), 10**6)
    | st.integers(10**19, 10**30)  # past int64: the block's column takes them one by one
    | st.booleans()
)
maybe = st.none() | numbers


@st.composite
def logged_rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Examples of the `feed` ranking as the join logs them; some features missing, some
    categories unknown to the configuration, slots of a ranking."""
    rows = []
    for _ in range(draw(st.integers(1, 12))):
        row: dict[str, Any] = {
            "country": draw(st.sampled_from(["us", "de", "fr", "xx", None])),
            "hour": draw(maybe),
            "price": draw(maybe),
            "topic": draw(st.sampled_from(["a", "b", "c", "new", None])),
            "slot": draw(st.integers(0, 4)),
        }
        for name in draw(st.sets(st.sampled_from(["country", "hour", "price", "topic"]))):
            del row[name]
        rows.append(row)
    return rows


@settings(max_examples=300, deadline=None)
@given(rows=logged_rows(), order=st.randoms(), run=st.booleans(), band=st.integers(1, 7))
def test_a_block_encodes_to_the_rows_the_logged_dicts_encode_to(
    tmp_path_factory: Any, rows: list[dict[str, Any]], order: Any, run: bool, band: int
) -> None:
    """Rows in any order, or a run of consecutive rows across the blocks (read as a slice)."""
    config = make_config(tmp_path_factory.mktemp("blocks"))
    by_rows, by_columns = FeatureEncoder(config.use_cases["feed"]), FeatureEncoder(config.use_cases["feed"])
    keys = [f"d{i}" for i in range(len(rows))]
    half = len(rows) // 2  # two blocks, as two batches store them, read in a shuffled order
    blocks = [
        decode_block(encode_block(keys[:half], rows[:half], categorical=frozenset(["country", "topic"]))),
        decode_block(encode_block(keys[half:], rows[half:], categorical=frozenset(["country", "topic"]))),
    ]
    wanted = list(range(len(rows)))
    if run:
        first = order.randrange(len(rows))
        wanted = wanted[first : order.randrange(first, len(rows)) + 1]
    else:
        order.shuffle(wanted)

    expected = by_rows.encode_logged([rows[i] for i in wanted])
    columns = take_rows(blocks, [keys[i] for i in wanted])
    with patch.object(_features, "_FILL_ROWS", band):  # bands of a few rows: their edges tested
        got = by_columns.encode_logged_columns(columns, len(wanted))

    np.testing.assert_array_equal(got, expected)  # NaN equals NaN here
    assert by_columns.unknown_by_feature == by_rows.unknown_by_feature


def test_a_store_reads_json_rows_and_block_rows_alike(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    store = ExampleStore.from_url(f"sqlite:///{tmp_path / 'examples.db'}")
    logged = [
        {"country": "de", "hour": 9.0, "price": 3.5, "topic": "b", "slot": 0},
        {"country": "fr", "hour": 22.0, "price": 1.0, "topic": "zz", "slot": 1},
        {"country": "us", "price": 7.25, "topic": "a", "slot": 0},
    ]
    common = {
        "use_case": "feed",
        "policy": "default",
        "arm": None,
        "model_versions": "{}",
        "closed": False,
        "status": "active",
        "shown": None,
        "choice": "x",
        "propensity": 0.5,
    }
    with store.transaction() as connection:
        data = encode_block(["new1", "new2"], logged[1:], categorical=frozenset(["country", "topic"]))
        block = ExampleStore.add_feature_block(connection, "feed", 2, data)
        rows = [  # one row stored before blocks (its JSON), two in a block
            {
                **common,
                "decision_id": "old",
                "decided_at": 100.0,
                "slot": 0,
                "features": orjson.dumps(logged[0]).decode(),
                "block": None,
            },
            {**common, "decision_id": "new1", "decided_at": 200.0, "slot": 1, "features": "", "block": block},
            {**common, "decision_id": "new2", "decided_at": 300.0, "slot": 0, "features": "", "block": block},
        ]
        insert_ignoring_duplicates(connection, examples, rows)
        insert_ignoring_duplicates(
            connection,
            labels,
            [
                {
                    "decision_id": key,
                    "outcome": "click",
                    "use_case": "feed",
                    "value": value,
                    "source": "feedback",
                    "feedback_id": None,
                    "labelled_at": 1.0,
                    "decided_at": decided_at,
                    "block": in_block,
                }
                for key, value, decided_at, in_block in (
                    ("old", 1.0, 100.0, None),
                    ("new1", 0.0, 200.0, block),
                    ("new2", 1.0, 300.0, block),
                )
            ],
        )
        ExampleStore.close_windows(connection, "feed", Attribution.of(config.use_cases["feed"]), 10_000.0)

    read = store.labelled_examples("feed", "click", limit=10)
    encoder = FeatureEncoder(config.use_cases["feed"])
    np.testing.assert_array_equal(read.values, [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(read.decided_at, [100.0, 200.0, 300.0])
    np.testing.assert_array_equal(
        encoder.encode_logged_columns(read.features, len(read)),
        FeatureEncoder(config.use_cases["feed"]).encode_logged(logged),
    )
    exported = {row["example"]: row for row in store.example_rows("feed")}
    assert exported["old"]["feature.price"] == 3.5
    assert exported["new1"]["feature.topic"] == "zz"
    assert "feature.hour" not in exported["new2"]  # missing as logged, in a block as in JSON
    assert math.isclose(exported["new2"]["feature.price"], 7.25)
    store.close()


def test_a_feature_whose_type_changed_is_read_from_blocks_of_both_types(tmp_path: Path) -> None:
    """`price` logged as a category by an earlier configuration, as a number now: both blocks
    are read, and the encoder of today's configuration (numeric) gets the numbers of both."""
    config = make_config(tmp_path)
    old = decode_block(encode_block(["a"], [{"price": "2.5", "slot": 0}], categorical=frozenset(["price"])))
    new = decode_block(encode_block(["b"], [{"price": 4.0, "slot": 1}], categorical=frozenset()))
    columns = take_rows([old, new], ["b", "a"])
    rows = FeatureEncoder(config.use_cases["feed"]).encode_logged_columns(columns, 2)
    price = FeatureEncoder(config.use_cases["feed"]).feature_names.index("price")
    assert rows[:, price].tolist() == [4.0, 2.5]


def test_a_block_of_examples_without_features_keeps_every_example() -> None:
    block = decode_block(encode_block(["a", "b"], [{}, {}], categorical=frozenset()))
    assert block.column_names == ["example key"]
    assert block.column("example key").to_pylist() == ["a", "b"]


def test_binary_examples_encode_alike_by_rows_and_by_columns(tmp_path: Path) -> None:
    """The yes/no use case: its action column and the interaction with it, from columns as from
    the logged dicts (a missing day, a missing action)."""
    from closedloop.policy import ACTION_FEATURE

    config = make_config(tmp_path)
    logged = [{"days": 3.0, ACTION_FEATURE: 1.0}, {ACTION_FEATURE: 0.0}, {"days": 12.5}]
    keys = ["a", "b", "c"]
    columns = take_rows([decode_block(encode_block(keys, logged, categorical=frozenset()))], keys)
    by_columns = FeatureEncoder(config.use_cases["notify"]).encode_logged_columns(columns, len(keys))
    by_rows = FeatureEncoder(config.use_cases["notify"]).encode_logged(logged)
    assert by_columns.shape == (3, len(FeatureEncoder(config.use_cases["notify"]).feature_names))
    np.testing.assert_array_equal(by_columns, by_rows)
