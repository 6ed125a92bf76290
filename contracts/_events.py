"""The logged events and their codec: the one place that writes or reads a decision or feedback event.

Every decision and every outcome is logged as one JSON record (Kafka, or the embedded segment
files). The service encodes them here (`encode_decision`, `encode_feedback`); the trainer's join,
the evaluator's log reader and the off-policy data loader decode them here into typed records
(`decode_decision`, `decode_feedback`), `decode_decision_header` reads a decision without its
candidates for readers that only count and group (`decision_header_decoder`: with only the context
features they need), and `decode_training_decision` leaves the
candidates' features encoded until the join asks for the shown ones. A new field changes this
module and nothing else.

msgspec rather than pydantic: a typed decode of a 20-candidate decision costs about as much as
parsing it to dicts, and the header decode skips the candidates at a quarter of that
(``bench/event_codec.py``). Records of an unknown schema version, or of the wrong shape, raise
`EventFormatError` naming the field.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar, Final, Generic, Literal, TypeVar

import msgspec

from ._errors import ClosedLoopError

EVENT_SCHEMA_VERSION: Final = 1

FeatureValue = float | int | str | bool | None
DecisionType = Literal["choose", "rank", "binary"]
PolicyKind = Literal["model", "default"]
ActivationKind = Literal["activate", "abandon"]


class LoggedCandidate(msgspec.Struct, frozen=True, kw_only=True):
    """One candidate of a logged decision, as the policy saw and scored it."""

    id: str
    features: dict[str, FeatureValue]
    predictions: dict[str, float]
    """Outcome -> the champion's prediction; empty while the default policy serves."""
    value: float
    """The policy's value of this candidate."""
    probability: float | None = None
    """The probability the policy had of choosing it (placing it first); None in older events."""


class LoggedSlot(msgspec.Struct, frozen=True, kw_only=True):
    """One shown slot of a ranking made with ``slots``."""

    candidate: str
    propensity: float
    """Its probability of this candidate, given the candidates placed above it."""


class DecisionEvent(msgspec.Struct, frozen=True, kw_only=True):
    """Logged for every decision, with the features exactly as the policy saw them."""

    event_id: str
    """Equal to the decision id."""
    use_case: str
    unit_id: str
    timestamp: datetime
    decision_type: DecisionType
    context: dict[str, FeatureValue]
    candidates: list[LoggedCandidate]
    choice: str | None
    """choose: the chosen candidate; rank: the top one; binary: "yes" or "no"."""
    ranking: list[str] | None
    propensity: float
    """Probability the policy had of logging ``choice`` (of the top slot, for rankings)."""
    exploration: dict[str, Any]
    model_versions: dict[str, str]
    policy: PolicyKind
    experiment: str | None = None
    arm: str | None = None
    experiment_phase: int | None = None
    """The allocation phase of the experiment the arm was assigned in (see ExperimentPhase)."""
    active: bool = True
    """False for ``decide(..., activate=False)``: the decision counts (as a training example, an
    experiment exposure) only once activated, by an activation event or by its first feedback."""
    slots: list[LoggedSlot] | None = None
    """Rankings made with ``slots``: the shown slots, top first, each with its propensity."""
    schema_version: Literal[1] = 1

    @property
    def decision_id(self) -> str:
        return self.event_id

    def logged_candidate(self) -> LoggedCandidate | None:
        """The candidate the decision chose (placed first); None for binary decisions."""
        return next((c for c in self.candidates if c.id == self.choice), None)


class DecisionHeader(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A decision event without its candidates: what experiment readers group and count by.
    Not tracked by the garbage collector (``gc=False``, as `FeedbackEvent` and `TrainingDecision`:
    nothing in them refers back to them): readers hold tens of thousands at once, and collecting
    them cost a report's readers 0.35-0.55 us per record (60,000 records of the log of
    ``bench/experiment_report.py``, decoded with the collector on and off)."""

    event_id: str
    use_case: str
    unit_id: str
    timestamp: datetime
    context: dict[str, FeatureValue]
    experiment: str | None = None
    arm: str | None = None
    experiment_phase: int | None = None
    active: bool = True
    choice: str | None = None
    schema_version: Literal[1] = 1

    def feature(self, name: str) -> FeatureValue:
        """The context feature ``name`` as logged (None if it was not)."""
        return self.context.get(name)


Event = TypeVar("Event")


class RecordDecoder(Generic[Event]):
    """Decodes logged records of one kind of event, one (raising `EventFormatError`) or a batch
    (`readable`) at a time."""

    def __init__(self, event_type: type[Event], kind: str) -> None:
        self._decoder = msgspec.json.Decoder(event_type)
        self._kind = kind

    def __call__(self, record: bytes) -> Event:
        return _decoded(self._decoder, record, self._kind)

    def readable(self, records: Sequence[bytes]) -> list[Event | None]:
        """Each record's event, None for a record that is not one (of this schema version). One
        pass through the decoder while every record reads, not a Python call around it for each
        (with ``gc=False`` on the structs: a report's reader 3.28 -> 2.77 us per feedback record,
        3.89 -> 3.60 us per decision)."""
        decode = self._decoder.decode
        try:
            return [decode(record) for record in records]
        except msgspec.DecodeError:
            return [self._or_none(record) for record in records]

    def _or_none(self, record: bytes) -> Event | None:
        try:
            return self._decoder.decode(record)
        except msgspec.DecodeError:
            return None


class _KeptContext(msgspec.Struct, frozen=True, gc=False):
    """The base of a decision's context features kept by `decision_header_decoder`."""

    attributes: ClassVar[dict[str, str]] = {}
    """feature name -> its attribute (features are named freely; attributes are ``f<i>``)."""

    def get(self, name: str) -> FeatureValue:
        attribute = self.attributes.get(name)
        value: FeatureValue = None if attribute is None else getattr(self, attribute)
        return value


@functools.cache
def decision_header_decoder(context: tuple[str, ...]) -> RecordDecoder[DecisionHeader]:
    """A decoder of decision headers that keeps only the ``context`` features named (read them
    with `DecisionHeader.feature`): the others are skipped, never built. The context's dict was
    half of decoding a header of ``bench/experiment_report.py`` (1 KB, 5 candidates): 3.95 ->
    2.78 us keeping all 3 of its features as fields. A feature kept must be a `FeatureValue`;
    one not kept may hold anything."""
    attributes = {name: f"f{i}" for i, name in enumerate(context)}
    kept = msgspec.defstruct(
        "KeptContext",
        [(attribute, FeatureValue, None) for attribute in attributes.values()],
        bases=(_KeptContext,),
        rename={attribute: name for name, attribute in attributes.items()},
        namespace={"attributes": attributes},
        frozen=True,
        gc=False,
    )
    header = msgspec.defstruct(
        "DecisionHeaderKept",
        [("context", kept)],
        bases=(DecisionHeader,),
        frozen=True,
        kw_only=True,
        gc=False,
    )
    return RecordDecoder[DecisionHeader](header, "decision")  # type: ignore[arg-type]  # a subclass, made here


class _CandidateUnread(msgspec.Struct, frozen=True):
    id: str
    features: msgspec.Raw


class TrainingDecision(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A decision event as the trainer's join reads it: each candidate's features stay encoded
    until `shown_features` asks for a shown one (a decision shows one candidate of 20, or a few
    slots): a third of the cost of decoding a whole 20-candidate event (``bench/event_codec.py``)."""

    event_id: str
    use_case: str
    timestamp: datetime
    context: dict[str, FeatureValue]
    candidates: list[_CandidateUnread]
    choice: str | None
    propensity: float
    model_versions: dict[str, str]
    policy: PolicyKind
    arm: str | None = None
    active: bool = True
    slots: list[LoggedSlot] | None = None
    schema_version: Literal[1] = 1

    def shown_features(self, candidate: str | None) -> dict[str, FeatureValue]:
        """The features of the candidate (empty for none, or a candidate not among them)."""
        for unread in self.candidates:
            if unread.id == candidate:
                return _decoded(_features, unread.features, "decision")
        return {}


class FeedbackEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Logged for every accepted outcome report, and for every activation and abandonment.

    Whether a decision counts: it is abandoned if any event abandons it (the product never showed
    it: the SDK gave up waiting and used its fallback); otherwise it counts if it was logged
    active, or an event activates it, or any report of an outcome names it. Activations ride on
    the feedback topic, as reports without outcomes, so that a reader of an earlier version sees
    only a report with nothing in it.
    """

    event_id: str
    """Equal to the feedback id (the idempotency key); ``activate.<decision>`` or
    ``abandon.<decision>`` for an activation event."""
    decision_id: str
    use_case: str | None
    """None for orphan feedback, whose decision the service did not know."""
    outcomes: dict[str, float]
    timestamp: datetime
    """When the outcome happened (the attribution window is measured to it)."""
    received_at: datetime
    orphan: bool = False
    activation: ActivationKind | None = None
    """Set on an activation event (whose ``outcomes`` are empty)."""
    candidate_id: str | None = None
    """Rankings: the shown candidate the outcomes are about; None: the decision's choice (the
    top slot of a ranking)."""
    slot: int | None = None
    """The slot ``candidate_id`` was shown in (0 is the top), when the service knew it."""
    schema_version: Literal[1] = 1

    def slot_key(self, choice: str | None) -> str | None:
        """What the report is about, within its decision: None for the decision's choice (the
        top slot), else the candidate; each (decision, outcome, key) counts once."""
        return None if self.candidate_id is None or self.candidate_id == choice else self.candidate_id


class EventFormatError(ClosedLoopError):
    """A logged record that is not a decision or feedback event of a schema this version reads."""

    code = "event_format"


def _builtin(value: Any) -> Any:
    """numpy scalars (a float64 feature from product code, a prediction) as the Python number."""
    item = getattr(value, "item", None)
    if item is None:
        raise TypeError(f"cannot log a value of type {type(value).__name__}: {value!r}")
    return item()


_encoder = msgspec.json.Encoder(enc_hook=_builtin)
_decision = msgspec.json.Decoder(DecisionEvent)
_header = msgspec.json.Decoder(DecisionHeader)
FEEDBACK_DECODER = RecordDecoder(FeedbackEvent, "feedback")
_training = msgspec.json.Decoder(TrainingDecision)
_features = msgspec.json.Decoder(dict[str, FeatureValue])


def encode_decision(event: DecisionEvent) -> bytes:
    return _encoder.encode(event)


def encode_feedback(event: FeedbackEvent) -> bytes:
    return _encoder.encode(event)


def decode_decision(record: bytes) -> DecisionEvent:
    return _decoded(_decision, record, "decision")


def decode_decision_header(record: bytes) -> DecisionHeader:
    return _decoded(_header, record, "decision")


def decode_training_decision(record: bytes) -> TrainingDecision:
    return _decoded(_training, record, "decision")


def decode_feedback(record: bytes) -> FeedbackEvent:
    return FEEDBACK_DECODER(record)


def _decoded(decoder: msgspec.json.Decoder[Event], record: bytes, kind: str) -> Event:
    try:
        return decoder.decode(record)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError that names the field
        raise EventFormatError(
            f"A logged record is not a {kind} event of schema version {EVENT_SCHEMA_VERSION}: {exc}.",
            hint="A newer closedloop may have written it: upgrade this reader, or skip the record.",
        ) from exc
