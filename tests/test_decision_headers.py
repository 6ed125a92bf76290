"""Decision headers that keep only some context features (`decision_header_decoder`, what a
report's log reader decodes) read those features, and every other header field, exactly as the
whole header (`decode_decision_header`) does, whatever the context holds; a batch of records
(`RecordDecoder.readable`) reads as its records do one at a time, unreadable ones as None."""

from __future__ import annotations

import gc
import string
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop.contracts import (
    FEEDBACK_DECODER,
    DecisionEvent,
    EventFormatError,
    FeatureValue,
    FeedbackEvent,
    decision_header_decoder,
    decode_decision_header,
    decode_feedback,
    encode_decision,
    encode_feedback,
)

names = st.text(alphabet=string.ascii_letters + string.digits + " -_.é", min_size=1, max_size=12)
values: st.SearchStrategy[FeatureValue] = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
values |= st.floats(allow_nan=False, allow_infinity=False)  # JSON has neither


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


def test_a_batch_reads_every_readable_record_and_none_for_the_others() -> None:
    good, other = _event({"country": "fr"}), _event({"country": "de"}, arm=None)
    decode = decision_header_decoder(("country",))
    headers = decode.readable([good, b"not json", other, good.replace(b'"event_id"', b'"id"')])
    assert [h and (h.event_id, h.arm, h.feature("country")) for h in headers] == [
        ("d1", "model", "fr"),
        None,
        ("d1", None, "de"),
        None,
    ]
    assert decode.readable([good, other]) == [decode(good), decode(other)]
    assert not gc.is_tracked(headers[0])  # tens of thousands held at once: out of the collector's way


def test_feedback_batches_read_as_one_record_at_a_time() -> None:
    report = FeedbackEvent(
        event_id="f1",
        decision_id="d1",
        use_case="shop",
        outcomes={"buy": 1.0},
        timestamp=datetime(2026, 11, 1, 13, tzinfo=UTC),
        received_at=datetime(2026, 11, 1, 13, tzinfo=UTC),
    )
    record = encode_feedback(report)
    assert FEEDBACK_DECODER.readable([record, b"{}", record]) == [report, None, report]
    assert FEEDBACK_DECODER(record) == decode_feedback(record) == report
    with pytest.raises(EventFormatError, match="feedback event"):
        FEEDBACK_DECODER(b"{}")
