"""Re-ranking and explanations: pure scoring over retrieved candidates.

The score blends what the vector store measured (similarity to the user's interest) with
signals it cannot see (fresh popularity, category preference). Each reason cites evidence that
is true of this user: a real history item close to the candidate, their stated interest, or
popularity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from inference.profiles import RecentItem
from inference.schemas import EventType

EVIDENCE_SIMILARITY = 0.5
"""Cosine above which a history item is cited as the reason for a candidate."""

_VERBS = {
    EventType.purchase: "bought",
    EventType.add_to_cart: "added",
    EventType.click: "viewed",
    EventType.view: "viewed",
    EventType.remove_from_cart: "looked at",
    EventType.search: "looked at",
}


@dataclass(frozen=True)
class Weights:
    similarity: float = 1.0
    popularity: float = 0.15
    category: float = 0.1


@dataclass(frozen=True)
class Candidate:
    item_id: str
    similarity: float
    vector: np.ndarray | None
    title: str
    category: str | None


@dataclass(frozen=True)
class Ranked:
    item_id: str
    score: float
    reason: str


def popularity_score(count: float, max_count: float) -> float:
    """Log-scaled popularity in [0, 1], so a few blockbusters don't swamp similarity."""
    if max_count <= 0 or count <= 0:
        return 0.0
    return math.log1p(count) / math.log1p(max_count)


def score(candidate: Candidate, popularity: float, category_affinity: float, weights: Weights) -> float:
    return (
        weights.similarity * candidate.similarity
        + weights.popularity * popularity
        + weights.category * category_affinity
    )


@dataclass(frozen=True)
class Evidence:
    """What a reason may cite: the user's recent items with their vectors and titles."""

    recent: Sequence[RecentItem]
    vectors: Mapping[str, np.ndarray]
    titles: Mapping[str, str]
    stated_interest: bool


def explain(candidate: Candidate, evidence: Evidence, popularity: float) -> str:
    best_id, best_sim = None, EVIDENCE_SIMILARITY
    if candidate.vector is not None:
        for item in evidence.recent:
            vec = evidence.vectors.get(item.item_id)
            if vec is None or item.item_id == candidate.item_id:
                continue
            sim = float(np.dot(vec, candidate.vector))
            if sim > best_sim or (best_id is not None and sim == best_sim):
                best_id, best_sim = item.item_id, sim
    if best_id is not None:
        verb = next(_VERBS[r.type] for r in reversed(evidence.recent) if r.item_id == best_id)
        return f'because you {verb} "{_short(evidence.titles.get(best_id, best_id))}"'
    if evidence.stated_interest:
        return "matches the interests you told us about"
    if evidence.recent:
        return "close to your recent activity"
    if popularity > 0:
        return "popular with shoppers right now"
    return "new in the catalog"


def rank(
    candidates: Sequence[Candidate],
    *,
    k: int,
    popularity: Mapping[str, float],
    category_affinity: Mapping[str, float],
    evidence: Evidence,
    weights: Weights,
) -> list[Ranked]:
    """Score, sort (ties by item id, so output is deterministic) and explain the top k."""
    max_pop = max((popularity.get(c.item_id, 0.0) for c in candidates), default=0.0)
    scored = []
    for c in candidates:
        pop = popularity_score(popularity.get(c.item_id, 0.0), max_pop)
        aff = category_affinity.get(c.category, 0.0) if c.category else 0.0
        scored.append((score(c, pop, aff, weights), c, pop))
    scored.sort(key=lambda t: (-t[0], t[1].item_id))
    return [Ranked(c.item_id, s, explain(c, evidence, p)) for s, c, p in scored[:k]]


def _short(title: str, limit: int = 60) -> str:
    return title if len(title) <= limit else title[: limit - 1].rstrip() + "…"
