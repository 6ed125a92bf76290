"""What an operator does to a champion: pin a version, roll back to the one before, unpin.

A pinned champion stays until it is unpinned: the trainer still trains and gates challengers and
publishes them (``status: held``), but does not promote them. Rolling back pins too, since the
model just removed was promoted by the same rules that would promote its successor.
"""

from __future__ import annotations

from dataclasses import dataclass

from closedloop.contracts import InvalidRequestError

from ._protocol import ModelRegistry, version_metadata


@dataclass(frozen=True)
class ChampionChange:
    use_case: str
    outcome: str
    previous: str | None
    champion: str | None
    pinned: bool


def pin_champion(registry: ModelRegistry, use_case: str, outcome: str, version: str) -> ChampionChange:
    """Make ``version`` the champion and keep it there."""
    previous = registry.champion(use_case, outcome)
    try:
        registry.set_champion(use_case, outcome, version)
    except KeyError:
        known = [v.version for v in registry.versions(use_case, outcome)]
        raise InvalidRequestError(
            f"{use_case}/{outcome} has no version {version!r}.",
            field="version",
            value=version,
            expected=f"one of {known[-10:]}" if known else "a published version (none yet)",
            hint=f"closedloop models --use-case {use_case} lists them.",
        ) from None
    registry.set_pinned(use_case, outcome, version)
    return ChampionChange(use_case, outcome, previous, version, pinned=True)


def roll_back_champion(registry: ModelRegistry, use_case: str, outcome: str) -> ChampionChange:
    """Make the champion's predecessor (the champion it replaced) the champion again, pinned."""
    current = registry.champion(use_case, outcome)
    if current is None:
        raise InvalidRequestError(
            f"{use_case}/{outcome} has no champion to roll back.",
            field="outcome",
            value=outcome,
            expected="an outcome with a champion",
        )
    lineage = version_metadata(registry, use_case, outcome, current).get("lineage") or {}
    parent = lineage.get("parent_version")
    if not parent:
        raise InvalidRequestError(
            f"{use_case}/{outcome}'s champion {current} replaced no earlier champion.",
            field="outcome",
            value=outcome,
            expected="a champion that replaced another",
            hint=f"Pin a version instead: closedloop models pin {use_case} {outcome} VERSION.",
        )
    change = pin_champion(registry, use_case, outcome, str(parent))
    return ChampionChange(use_case, outcome, current, change.champion, pinned=True)


def unpin_champion(registry: ModelRegistry, use_case: str, outcome: str) -> ChampionChange:
    """Let the trainer promote challengers again."""
    current = registry.champion(use_case, outcome)
    registry.set_pinned(use_case, outcome, None)
    return ChampionChange(use_case, outcome, current, current, pinned=False)
