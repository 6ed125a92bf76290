"""Off-policy estimates for rankings decided with slots: the cascade (reward-interaction) IPS.

Each shown slot k of a logged ranking i has a reward r_ik (the value function of the outcomes
reported about that slot's candidate, defaults where none came) and a logged propensity mu_ik of
its candidate given the slots above; replaying the target policy on the same candidates gives
pi_ik, its probability of the same candidate in slot k given the same slots above
(`OfflinePolicy.batch_slot_probabilities`). If a slot's reward depends on its own candidate and
those above it but not on those below, the product of the ratios down to slot k reweights r_ik
without bias (McInerney et al. 2020; Kiyohara et al. 2022; obp's ``SlateRewardInteractionIPS``,
which ``tests/test_ranking_ope.py`` checks these numbers against):

    V = mean_i sum_k r_ik * prod_{j <= k} pi_ij / mu_ij

That holds for a position-based model (a click depends on the slot and the candidate in it) and
for a cascade (users read down and stop). Chosen over independent-slot IPS, whose weights need each
candidate's marginal probability of each slot (a sum over all prefixes under slot-by-slot
sampling, not cheap), and over the pseudo-inverse estimator, which needs additive rewards and a
logging policy that samples slots independently. The interval is normal on the per-ranking sums;
the self-normalised variant divides each slot's sum by its mean weight (delta-method interval),
trading a little bias for less variance when weights are large.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from closedloop.contracts import Attribution, UseCaseConfig
from closedloop.policy import FeatureEncoder, OfflinePolicy

from ._hashing import id_hash
from ._logged import LoggedDecisions, sampled_events
from ._offpolicy import PolicyValue, _mean_interval
from ._stats import Z


@dataclass(frozen=True)
class RankingEstimates:
    ips: PolicyValue
    """The cascade IPS."""
    snips: PolicyValue
    """Self-normalised per slot."""
    effective_sample_size: float
    """Of the deepest slot's weights: how many rankings the estimate is worth."""
    rankings: int


def cascade_weights(logged: np.ndarray, target: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """rankings x slots: the product of the target's and the logging policy's probability ratios
    down to each slot (0 beyond a ranking's shown slots)."""
    ratio = np.where(shown, target / np.where(shown, logged, 1.0), 1.0)
    return np.where(shown, np.cumprod(ratio, axis=1), 0.0)


def ranking_estimates(
    reward: np.ndarray, logged: np.ndarray, target: np.ndarray, shown: np.ndarray
) -> RankingEstimates:
    """Estimates of the target's expected sum of slot rewards per ranking, with 95% intervals.

    All inputs are rankings x slots: ``reward`` of each shown slot, ``logged`` and ``target`` the
    probabilities of its candidate there given the slots above, ``shown`` which slots were shown.
    """
    weights = cascade_weights(logged, target, shown)
    weighted = weights * np.where(shown, reward, 0.0)
    ips = _mean_interval(weighted.sum(axis=1))
    n = len(reward)
    mean_weight = weights.mean(axis=0)
    usable = mean_weight > 0
    per_slot = np.where(usable, weighted.mean(axis=0) / np.where(usable, mean_weight, 1.0), 0.0)
    # influence of each ranking on the ratio of means, slot by slot, summed over slots
    influence = np.where(
        usable, (weighted - per_slot * weights) / np.where(usable, mean_weight, 1.0), 0.0
    ).sum(axis=1)
    estimate = float(per_slot.sum())
    half = Z * float(np.std(influence, ddof=1)) / math.sqrt(n) if n > 1 else math.nan
    last = shown.sum(axis=1) - 1  # each ranking's deepest shown slot
    deepest = np.where(last >= 0, weights[np.arange(n), np.maximum(last, 0)], 0.0)
    ess = float(deepest.sum() ** 2 / (deepest**2).sum()) if (deepest**2).sum() > 0 else 0.0
    return RankingEstimates(
        ips=ips,
        snips=PolicyValue(estimate, estimate - half, estimate + half),
        effective_sample_size=ess,
        rankings=n,
    )


class LoggedRankings:
    """The sampled rankings decided with slots, as rankings x slots arrays for `ranking_estimates`:
    each shown slot's reward (the value function of its candidate's outcomes, defaults where no
    report came), logged propensity, and the stacked candidate rows a target policy replays."""

    def __init__(self, use_case: UseCaseConfig, data: LoggedDecisions) -> None:
        self._use_case = use_case
        encoder = FeatureEncoder(use_case)
        reports = _reports_by_row(data)
        defaults = np.array(list(Attribution.of(use_case).defaults.values()))
        names = list(use_case.outcomes)
        rows, offsets, candidates, shown, logged, rewards = [], [0], [], [], [], []
        self.unusable = 0
        for event, row in sampled_events(data):
            if event is None or not event.slots:
                continue
            if row is None:
                continue  # its window is still open
            ids = [c.id for c in event.candidates]
            if any(s.candidate not in ids or not 0 < s.propensity <= 1 for s in event.slots):
                self.unusable += 1
                continue
            features = [c.features for c in event.candidates]
            encoded = encoder.encode(event.context, features)
            rows.append(encoded)
            offsets.append(offsets[-1] + len(encoded))
            candidates.append(features)
            shown.append([ids.index(s.candidate) for s in event.slots])
            logged.append([s.propensity for s in event.slots])
            outcomes = np.tile(defaults, (len(event.slots), 1))
            slot_of = {id_hash(s.candidate): k for k, s in enumerate(event.slots)} | {0: 0}
            for (candidate, outcome), value in reports.get(row, {}).items():
                if candidate in slot_of:
                    outcomes[slot_of[candidate], outcome] = value
            columns = {name: outcomes[:, i] for i, name in enumerate(names)}
            value = use_case.policy.value_expression.evaluate(columns)
            rewards.append(np.broadcast_to(np.asarray(value, dtype=float), len(event.slots)))
        self.rows = np.vstack(rows) if rows else np.zeros((0, len(encoder.feature_names)))
        self.offsets = np.array(offsets)
        self.candidates = candidates
        self.shown = shown
        depth = max((len(s) for s in shown), default=0)
        self.mask = np.array([[k < len(s) for k in range(depth)] for s in shown], dtype=bool).reshape(
            -1, depth
        )
        self.logged = _padded(logged, depth)
        self.reward = _padded([list(r) for r in rewards], depth)

    def __len__(self) -> int:
        return len(self.shown)

    def estimate(self, policy: OfflinePolicy) -> RankingEstimates:
        target = policy.batch_slot_probabilities(self.rows, self.offsets, self.candidates, self.shown)
        depth = self.mask.shape[1]
        return ranking_estimates(
            self.reward, self.logged, _padded([list(t) for t in target], depth), self.mask
        )

    def logged_value(self) -> PolicyValue:
        return _mean_interval(np.where(self.mask, self.reward, 0.0).sum(axis=1))


def _padded(values: list[list[float]], depth: int) -> np.ndarray:
    matrix = np.zeros((len(values), depth))
    for i, row in enumerate(values):
        matrix[i, : len(row)] = row
    return matrix


def _reports_by_row(data: LoggedDecisions) -> dict[int, dict[tuple[int, int], float]]:
    """row -> (candidate hash, outcome index) -> the counted report's value."""
    found: dict[int, dict[tuple[int, int], float]] = {}
    reports = data.candidate_reports
    for row, candidate, outcome, value in zip(
        reports.row.tolist(),
        reports.candidate.tolist(),
        reports.outcome.tolist(),
        reports.value.tolist(),
        strict=True,
    ):
        found.setdefault(row, {})[(candidate, outcome)] = value
    return found
