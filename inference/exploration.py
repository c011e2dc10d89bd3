"""Exploration: a Thompson-sampling bandit over catalog topics, with a per-user posterior.

Arms are topics (clusters of the catalog's item vectors). Each arm keeps how often an explored
item of that topic was shown and how often it was rewarded (click, add to cart or purchase
attributed to the recommendation by `rec_id`). A user's posterior for a topic is the global rate
as a prior worth at most `prior_strength` observations plus the user's own observations, so the
bandit learns both which topics tend to catch on and what this user already turned down.

Pure functions over immutable values; the recommender persists the state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from inference.schemas import EventType

REWARD_TYPES = frozenset({EventType.click, EventType.add_to_cart, EventType.purchase})
MAX_PERSONAL_TOPICS = 16
"""Per-user arms kept; the least-shown are forgotten first (a bounded profile)."""
MAX_PENDING = 20
"""Explored items per user still waiting for feedback (the most recent recommendations)."""


@dataclass(frozen=True)
class Arm:
    shown: float = 0.0
    rewarded: float = 0.0

    def rate(self) -> float:
        """Posterior mean under a uniform prior."""
        return (self.rewarded + 1.0) / (self.shown + 2.0)


@dataclass(frozen=True)
class ExploredSlot:
    """An explored item in a published recommendation, waiting for its feedback."""

    rec_id: str
    item_id: str
    topic: str
    impressed: bool = False
    rewarded: bool = False


@dataclass(frozen=True)
class Feedback:
    """What one event taught the bandit: the topic, and whether it counts a show and/or a reward."""

    topic: str
    shown: int
    rewarded: int


def posterior(global_arm: Arm | None, personal: Arm | None, prior_strength: float) -> tuple[float, float]:
    """Beta(alpha, beta) for one user and topic: the global rate as a prior worth
    min(prior_strength, global observations) pseudo-observations, plus the user's own."""
    g = global_arm or Arm()
    p = personal or Arm()
    strength = min(prior_strength, g.shown)
    rate = g.rate()
    alpha = 1.0 + strength * rate + p.rewarded
    beta = 1.0 + strength * (1.0 - rate) + max(p.shown - p.rewarded, 0.0)
    return alpha, beta


def explore_count(k: int, rate: float, rng: np.random.Generator) -> int:
    """How many of k slots explore: each slot independently with probability `rate`."""
    if k <= 0 or rate <= 0:
        return 0
    return int(rng.binomial(k, min(rate, 1.0)))


def choose_topics(
    topics: Sequence[str],
    global_arms: Mapping[str, Arm],
    personal: Mapping[str, Arm],
    n: int,
    rng: np.random.Generator,
    *,
    prior_strength: float = 20.0,
) -> list[str]:
    """Thompson sampling: draw a rate for every topic from its posterior, keep the n best."""
    if n <= 0 or not topics:
        return []
    draws = []
    for topic in topics:
        alpha, beta = posterior(global_arms.get(topic), personal.get(topic), prior_strength)
        draws.append((float(rng.beta(alpha, beta)), topic))
    draws.sort(key=lambda d: (-d[0], d[1]))
    return [t for _, t in draws[:n]]


def add_observation(arms: Mapping[str, Arm], topic: str, shown: float, rewarded: float,
                    limit: int | None = None) -> dict[str, Arm]:
    """A new arm table with one observation added; with a limit, the least-shown arms go first."""
    out = dict(arms)
    arm = out.get(topic, Arm())
    out[topic] = replace(arm, shown=arm.shown + shown, rewarded=arm.rewarded + rewarded)
    if limit is not None and len(out) > limit:
        keep = sorted(out.items(), key=lambda ta: (-ta[1].shown, ta[0] != topic, ta[0]))[:limit]
        out = dict(keep)
    return out


def remember_explored(pending: tuple[ExploredSlot, ...], slots: Sequence[ExploredSlot]) -> tuple[ExploredSlot, ...]:
    """Add newly explored items, replacing an older pending slot for the same item."""
    items = {s.item_id for s in slots}
    kept = tuple(s for s in pending if s.item_id not in items)
    return (kept + tuple(slots))[-MAX_PENDING:]


def attribute(
    pending: tuple[ExploredSlot, ...], *, rec_id: str | None, item_id: str | None, type: EventType
) -> tuple[tuple[ExploredSlot, ...], Feedback | None]:
    """Match an event to an explored slot by (rec_id, item_id). An impression counts a show once;
    a reward counts once per slot (and a show, if no impression was reported before it), so a
    topic's rewards never exceed its shows."""
    if rec_id is None or item_id is None or (type is not EventType.impression and type not in REWARD_TYPES):
        return pending, None
    for n, slot in enumerate(pending):
        if slot.rec_id != rec_id or slot.item_id != item_id:
            continue
        if type is EventType.impression:
            if slot.impressed:
                return pending, None
            updated, feedback = replace(slot, impressed=True), Feedback(slot.topic, 1, 0)
        else:
            if slot.rewarded:
                return pending, None
            updated = replace(slot, impressed=True, rewarded=True)
            feedback = Feedback(slot.topic, 0 if slot.impressed else 1, 1)
        return pending[:n] + (updated,) + pending[n + 1:], feedback
    return pending, None
