"""A simulated product with a hidden ground truth: users, items, and how users respond to items.

Users belong to a segment and use a device; items have a category, a price and a quality. Whether
a user clicks an item, and then buys it, follows probabilities that the platform never sees: it
only sees the features and, through feedback, the outcomes drawn from them. Knowing the truth lets
the demo and the benchmarks compute the exact expected reward of any policy, including the best
one possible (the oracle).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from closedloop.contracts import FeatureValue

SEGMENTS = ("student", "parent", "professional", "retired")
DEVICES = ("mobile", "desktop")
CATEGORIES = ("news", "sports", "music", "games", "food", "travel")
PURCHASE_WEIGHT = 2.0
"""The value function of the demo's use case: click + 2 * purchase."""


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


@dataclass(frozen=True)
class Request:
    """One moment a user needs a decision: who they are and which items are candidates."""

    unit_id: str
    context: dict[str, Any]
    candidates: dict[str, dict[str, FeatureValue]]
    """Candidate id -> features, in the order the product would show them by default."""
    segment: int
    device: int
    items: np.ndarray
    """Indices into the catalog, in candidate order."""


@dataclass(frozen=True)
class Response:
    clicked: bool
    purchased: bool
    click_delay: float
    """Seconds after the decision."""
    purchase_delay: float

    @property
    def reward(self) -> float:
        return float(self.clicked) + PURCHASE_WEIGHT * float(self.purchased)


class World:
    def __init__(self, *, seed: int = 0, users: int = 5000, items: int = 300, candidates: int = 20) -> None:
        self.rng = np.random.default_rng(seed)
        truth = np.random.default_rng(seed + 10_000)  # the truth stays the same whatever is drawn
        self.candidates_per_request = candidates
        self.user_segment = truth.integers(len(SEGMENTS), size=users)
        self.user_device = truth.integers(len(DEVICES), size=users)
        self.item_category = truth.integers(len(CATEGORIES), size=items)
        self.item_price = np.round(truth.gamma(2.0, 10.0, size=items), 2)
        self.item_quality = np.round(truth.beta(2.0, 2.0, size=items), 3)
        self.affinity = truth.normal(0.0, 1.2, size=(len(SEGMENTS), len(CATEGORIES)))
        self.device_bonus = truth.normal(0.0, 0.6, size=(len(DEVICES), len(CATEGORIES)))

    # -- the hidden truth -------------------------------------------------------------------------

    def click_probability(self, segment: int, device: int, items: np.ndarray) -> np.ndarray:
        category = self.item_category[items]
        logit = (
            -2.2
            + self.affinity[segment, category]
            + self.device_bonus[device, category]
            + 1.5 * (self.item_quality[items] - 0.5)
        )
        return _sigmoid(logit)

    def purchase_probability(self, segment: int, items: np.ndarray) -> np.ndarray:
        """Probability of a purchase given a click."""
        category = self.item_category[items]
        logit = -0.8 + 0.6 * self.affinity[segment, category] - 0.06 * (self.item_price[items] - 20.0)
        return _sigmoid(logit)

    def expected_reward(self, request: Request) -> np.ndarray:
        """click + 2 * purchase, in expectation, for each candidate of the request."""
        click = self.click_probability(request.segment, request.device, request.items)
        return np.asarray(
            click * (1.0 + PURCHASE_WEIGHT * self.purchase_probability(request.segment, request.items))
        )

    # -- drawing ----------------------------------------------------------------------------------

    def request(self) -> Request:
        user = int(self.rng.integers(len(self.user_segment)))
        segment, device = int(self.user_segment[user]), int(self.user_device[user])
        items = self.rng.choice(len(self.item_category), size=self.candidates_per_request, replace=False)
        return Request(
            unit_id=f"user-{user}",
            context={
                "segment": SEGMENTS[segment],
                "device": DEVICES[device],
                "hour": int(self.rng.integers(24)),
            },
            candidates={
                f"item-{item}": {
                    "category": CATEGORIES[self.item_category[item]],
                    "price": float(self.item_price[item]),
                    "quality": float(self.item_quality[item]),
                }
                for item in items
            },
            segment=segment,
            device=device,
            items=items,
        )

    def respond(self, request: Request, position: int) -> Response:
        """The user's response to the candidate at ``position``, with when each outcome happens."""
        item = request.items[position : position + 1]
        clicked = bool(self.rng.random() < self.click_probability(request.segment, request.device, item)[0])
        purchased = clicked and bool(self.rng.random() < self.purchase_probability(request.segment, item)[0])
        return Response(
            clicked=clicked,
            purchased=purchased,
            click_delay=float(self.rng.exponential(120.0)),
            purchase_delay=float(self.rng.exponential(1800.0)),
        )
