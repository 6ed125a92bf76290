"""Decision headers that keep only some context features (`decision_header_decoder`, what a
report's log reader decodes) read those features, and every other header field, exactly as the
whole header (`decode_decision_header`) does, whatever the context holds."""

from __future__ import annotations

import string
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop.contracts import (
    DecisionEvent,
    EventFormatError,
    FeatureValue,
    decision_header_decoder,
    decode_decision_header,
    encode_decision,
)

names = st.text(alphabet=string.ascii_letters + string.digits + " -_.é", min_size=1, max_size=12)
values: st.SearchStrategy[FeatureValue] = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
values |= st.floats(allow_nan=False)


def _event(context: dict[str, FeatureValue], *, arm: str | None = "model") -> bytes:
    return encode_decision(
        DecisionEvent(
            event_id="d1",
            use_case="shop",
            unit_id="user-7",
            timestamp=datetime(2026, 11, 1, 12, 30, tzinfo=UTC),
            decision_type="choose",
            context=context,
            candidates=[],
            choice="a",
            ranking=None,
            propensity=0.5,
            exploration={},
            model_versions={},
            policy="model",
            experiment="big",
            arm=arm,
            experiment_phase=2,
            active=False,
        )
    )


@settings(max_examples=200, deadline=None)
@given(context=st.dictionaries(names, values, max_size=6), asked=st.lists(names, max_size=4, unique=True))
def test_kept_features_read_as_the_whole_header_reads_them(
    context: dict[str, FeatureValue], asked: list[str]
) -> None:
    kept = sorted({*asked, *list(context)[:2]})  # some logged, some not
    record = _event(context)
    whole = decode_decision_header(record)
    header = decision_header_decoder(tuple(kept))(record)
    assert [header.feature(name) for name in kept] == [whole.feature(name) for name in kept]
    assert [header.feature(name) for name in kept] == [context.get(name) for name in kept]
    for field in ("event_id", "use_case", "unit_id", "timestamp", "experiment", "arm", "experiment_phase"):
        assert getattr(header, field) == getattr(whole, field)
    assert (header.active, header.choice) == (False, "a")
    assert header.feature("never logged, never kept") is None


def test_features_not_kept_are_skipped_whatever_they_hold() -> None:
    record = _event({"country": "fr"}).replace(b'"country"', b'"blob":{"a":[1,{"b":2}]},"country"')
    with pytest.raises(EventFormatError):
        decode_decision_header(record)  # the whole context must be features
    header = decision_header_decoder(("country", "device"))(record)
    assert (header.feature("country"), header.feature("device"), header.feature("blob")) == ("fr", None, None)


def test_a_kept_feature_of_the_wrong_shape_is_an_event_format_error_naming_it() -> None:
    record = _event({"country": "fr"}).replace(b'"fr"', b'["fr"]')
    with pytest.raises(EventFormatError, match=r"context\.country"):
        decision_header_decoder(("country",))(record)
