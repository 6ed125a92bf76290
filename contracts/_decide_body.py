"""A decide request read from JSON in one pass: msgspec decodes and checks the shape together.

`DecideRequest` (pydantic) stays the documented model and the reader of everything msgspec
refuses: reading a 20-candidate body with orjson and validating it with pydantic takes about
twice what msgspec's typed decode does (``bench/http_service.py``), and the decide route is the
service's hot path. The two readers must agree: `decode_decide_body` accepts only bodies that
`DecideRequest` accepts with the same values (tests/test_decide_body.py checks this on generated
bodies); where msgspec is stricter (a lax JSON type pydantic coerces, NaN, a lone surrogate, an
unknown field), it returns None and the caller reads the body with pydantic, which accepts it or
names the field that is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Protocol

import msgspec

from ._events import FeatureValue


class CandidateInput(Protocol):
    """One candidate of a decide request, however it was read."""

    @property
    def id(self) -> str: ...

    @property
    def features(self) -> dict[str, FeatureValue]: ...


class DecideInput(Protocol):
    """A decide request as the engine reads it: a `DecideRequest` or a `DecideBody`."""

    @property
    def use_case(self) -> str: ...

    @property
    def unit_id(self) -> str: ...

    @property
    def context(self) -> dict[str, FeatureValue]: ...

    @property
    def candidates(self) -> Sequence[CandidateInput]: ...

    @property
    def request_id(self) -> str | None: ...

    @property
    def slots(self) -> int | None: ...

    @property
    def activate(self) -> bool: ...


_Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
# An integer past 64 bits is refused here: pydantic reads it into a float, which this reader
# would not (it keeps Python's int); the body then goes to pydantic, as every refused one does.
_FeatureValue = float | _Int64 | str | bool | None


class DecideCandidate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    features: dict[str, _FeatureValue] = {}


class DecideBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`DecideRequest`'s fields and limits (see there for what each means)."""

    use_case: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    unit_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    context: dict[str, _FeatureValue] = {}
    candidates: list[DecideCandidate] = []
    request_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    slots: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    activate: bool = True


_decoder = msgspec.json.Decoder(DecideBody)


def decode_decide_body(body: bytes) -> DecideBody | None:
    """The request, or None when msgspec refuses the body (read it with `DecideRequest`)."""
    try:
        return _decoder.decode(body)
    except msgspec.DecodeError:  # ValidationError is one
        return None
