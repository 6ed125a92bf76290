"""Names shared across components: Redis keys of the registry and decision index, Kafka topics.

Everything that writes or reads one of these imports it from here, so a rename happens once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RegistryKeys:
    """Redis keys of the model registry under one prefix.

    ``model:{use_case}:{outcome}:{version}``  hash: ``text`` (LightGBM model text), ``meta`` (JSON)
    ``versions:{use_case}:{outcome}``         sorted set of versions, scored by version number
    ``champion:{use_case}:{outcome}``         string: the serving version
    ``pinned:{use_case}:{outcome}``           string: a version an operator pinned (the trainer keeps it)
    ``sequence:{use_case}:{outcome}``         counter that numbers new versions
    ``generation``                             counter bumped on every champion change
    ``changes``                                pub/sub channel announcing champion changes
    ``experiments``                            hash: experiment name -> JSON list of its phases
    """

    prefix: str

    def model(self, use_case: str, outcome: str, version: str) -> str:
        return f"{self.prefix}:registry:model:{use_case}:{outcome}:{version}"

    def versions(self, use_case: str, outcome: str) -> str:
        return f"{self.prefix}:registry:versions:{use_case}:{outcome}"

    def champion(self, use_case: str, outcome: str) -> str:
        return f"{self.prefix}:registry:champion:{use_case}:{outcome}"

    def pinned(self, use_case: str, outcome: str) -> str:
        return f"{self.prefix}:registry:pinned:{use_case}:{outcome}"

    def sequence(self, use_case: str, outcome: str) -> str:
        return f"{self.prefix}:registry:sequence:{use_case}:{outcome}"

    @property
    def generation(self) -> str:
        return f"{self.prefix}:registry:generation"

    @property
    def changes(self) -> str:
        return f"{self.prefix}:registry:changes"

    @property
    def experiments(self) -> str:
        return f"{self.prefix}:registry:experiments"


@dataclass(frozen=True)
class DecisionIndexKeys:
    """Redis keys that let feedback be checked against decisions and counted once."""

    prefix: str

    def decision(self, decision_id: str) -> str:
        return f"{self.prefix}:decision:{decision_id}"

    def outcome_reported(self, decision_id: str, outcome: str, candidate: str | None = None) -> str:
        """``candidate``: a shown candidate of a ranking other than its top (whose reports, like
        a choice's, have none); outcome names hold no colon, so the two forms never meet."""
        if candidate is None:
            return f"{self.prefix}:reported:{decision_id}:{outcome}"
        return f"{self.prefix}:reported:{decision_id}:{outcome}:{candidate}"

    def feedback_seen(self, decision_id: str, feedback_id: str) -> str:
        """A feedback id is an idempotency key within its decision: reused on another decision,
        it is another report."""
        return f"{self.prefix}:feedback:{decision_id}:{feedback_id}"

    def request_seen(self, request_id: str) -> str:
        return f"{self.prefix}:request:{request_id}"


@dataclass(frozen=True)
class AccessKeys:
    """Redis keys of API keys and their rate limits.

    ``access:keys``            hash: key id -> JSON record (name, scopes, use cases, hash, revoked_at)
    ``access:rate:{key_id}``   hash: the key's shared token bucket (tokens, updated), expiring when idle
    """

    prefix: str

    @property
    def api_keys(self) -> str:
        return f"{self.prefix}:access:keys"

    def rate_bucket(self, key_id: str) -> str:
        return f"{self.prefix}:access:rate:{key_id}"


@dataclass(frozen=True)
class Topics:
    prefix: str

    @property
    def decisions(self) -> str:
        return f"{self.prefix}.decisions"

    @property
    def feedback(self) -> str:
        return f"{self.prefix}.feedback"
