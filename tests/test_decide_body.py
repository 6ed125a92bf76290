"""The decide route's one-pass reader (msgspec) accepts only what `DecideRequest` (pydantic)
accepts, with the same values; whatever it refuses, pydantic reads and names (tests/test_bad_input.py)."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop.contracts import DecideRequest, decode_decide_body
from closedloop.decision_service._json_body import model_from_body

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
    st.sampled_from(["", "a" * 65, "a" * 257, "\ud800"]),
)
values = st.one_of(
    scalars, st.lists(scalars, max_size=2), st.dictionaries(st.text(max_size=3), scalars, max_size=2)
)
features = st.one_of(st.dictionaries(st.sampled_from(["x", "y", "price"]), values, max_size=3), scalars)
candidate = st.one_of(
    st.fixed_dictionaries({"id": values}, optional={"features": features, "extra": scalars}), scalars
)
field_values = {  # anything, valid or not, for one field of a body
    "use_case": values,
    "unit_id": values,
    "context": features,
    "candidates": st.one_of(st.lists(candidate, max_size=3), scalars),
    "request_id": values,
    "slots": st.one_of(values, st.sampled_from([0, 1, 1000, 1001, 3.0])),
    "activate": st.one_of(values, st.sampled_from([0, 1, "true"])),
    "unknown": scalars,
}
feature_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=5)
)
valid_features = st.dictionaries(st.sampled_from(["x", "y", "price"]), feature_values, max_size=3)
valid_bodies = st.fixed_dictionaries(
    {"use_case": st.sampled_from(["pick", "rank"]), "unit_id": st.text(min_size=1, max_size=5)},
    optional={
        "context": valid_features,
        "candidates": st.lists(
            st.fixed_dictionaries(
                {"id": st.text(min_size=1, max_size=5)}, optional={"features": valid_features}
            ),
            max_size=3,
        ),
        "request_id": st.one_of(st.none(), st.text(max_size=5)),
        "slots": st.one_of(st.none(), st.integers(1, 1000)),
        "activate": st.booleans(),
    },
)


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid body, or one with a field (maybe an unknown one) replaced by any value."""
    body = draw(valid_bodies)
    field = draw(st.one_of(st.none(), st.sampled_from(sorted(field_values))))
    if field is not None:
        body[field] = draw(field_values[field])
    return body


def _as_fields(request: Any) -> dict[str, Any]:
    return {
        "use_case": request.use_case,
        "unit_id": request.unit_id,
        "context": request.context,
        "candidates": [(c.id, c.features) for c in request.candidates],
        "request_id": request.request_id,
        "slots": request.slots,
        "activate": request.activate,
    }


@settings(max_examples=400, deadline=None)
@given(bodies())
def test_what_the_one_pass_reader_accepts_pydantic_accepts_with_the_same_values(raw: dict[str, Any]) -> None:
    body = json.dumps(raw).encode()
    fast = decode_decide_body(body)
    if fast is None:
        return  # read by DecideRequest: the route's errors are those of tests/test_bad_input.py
    slow = model_from_body(body, DecideRequest)
    fast_fields, slow_fields = _as_fields(fast), _as_fields(slow)
    assert fast_fields == slow_fields
    for name in ("context",):  # 1 and 1.0 compare equal: the types must match too
        assert [type(v) for v in fast_fields[name].values()] == [type(v) for v in slow_fields[name].values()]
    for (_, fast_features), (_, slow_features) in zip(
        fast_fields["candidates"], slow_fields["candidates"], strict=True
    ):
        assert [type(v) for v in fast_features.values()] == [type(v) for v in slow_features.values()]


def test_bodies_msgspec_refuses_go_to_pydantic() -> None:
    for body in (
        b'{"use_case": "pick", "unit_id": "u", "context": {"x": NaN}}',  # the stdlib reads NaN
        b'{"use_case": "pick", "unit_id": "u", "slots": 3.0}',  # pydantic takes a whole float
        b'{"use_case": "pick", "unit_id": "u", "context": {"x": 1e400}}',
        b'{"use_case": "pick", "unit_id": "u", "extra": 1}',
        b'{"use_case": "pick", "unit_id": "\\ud800"}',  # a lone surrogate: nothing could log it
        b'{"use_case": "pick", "unit_id": "\xed\xa0\x80"}',  # one encoded as bytes
    ):
        assert decode_decide_body(body) is None
    nan = model_from_body(b'{"use_case": "pick", "unit_id": "u", "context": {"x": NaN}}', DecideRequest)
    assert math.isnan(nan.context["x"])  # type: ignore[arg-type]
    assert model_from_body(b'{"use_case": "pick", "unit_id": "u", "slots": 3.0}', DecideRequest).slots == 3
