"""Re-ranking: pure scoring over retrieved candidates.

The score blends what the vector store measured (similarity to the user's interest) with
signals it cannot see (fresh popularity, category preference, and optionally a price boost for
a value segment, e.g. higher-value items for champions). Reasons are written afterwards by
`inference.explanations`, once exploration has filled its slots.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np


@dataclass(frozen=True)
class Weights:
    similarity: float = 1.0
    popularity: float = 0.15
    category: float = 0.1
    price: float = 0.0  # the boost for the user's segment (0: price plays no part)


@dataclass(frozen=True)
class Candidate:
    item_id: str
    similarity: float
    vector: np.ndarray | None
    title: str
    category: str | None
    price: float | None = None


class CandidatePool(Sequence[Candidate]):
    """Retrieved candidates as columns: ids, similarities and the items' records (anything with
    `vector`, `title`, `category` and `price`). A Candidate is built only when one is read:
    hundreds are retrieved per user and `rank` reads the dozen that can reach the top k, so
    building every one was a third of a recommendation's time."""

    __slots__ = ("item_ids", "similarities", "records")

    def __init__(self, item_ids: list[str], similarities: list[float], records: Sequence) -> None:
        self.item_ids, self.similarities, self.records = item_ids, similarities, records

    @classmethod
    def of(cls, candidates: Sequence[Candidate]) -> CandidatePool:
        if isinstance(candidates, CandidatePool):
            return candidates
        return cls([c.item_id for c in candidates], [c.similarity for c in candidates], list(candidates))

    def __len__(self) -> int:
        return len(self.item_ids)

    def __getitem__(self, j):  # Sequence's int/slice protocol
        if isinstance(j, slice):
            return [self[n] for n in range(*j.indices(len(self)))]
        r = self.records[j]
        if isinstance(r, Candidate):
            return r
        return Candidate(self.item_ids[j], self.similarities[j], r.vector, r.title, r.category, r.price)


def best_per_item(results: Sequence[tuple[Sequence[str], Sequence[float]]]) -> tuple[list[str], list[float]]:
    """Merge several queries' (ids, similarities): an item found more than once keeps its best
    similarity. One sort and one dict build in C, not a dict update per hit."""
    if len(results) == 1:
        return list(results[0][0]), list(results[0][1])
    ids = [i for found, _ in results for i in found]
    if not ids:
        return [], []
    similarities = np.concatenate([np.asarray(scores, dtype=np.float64) for _, scores in results])
    order = np.argsort(similarities, kind="stable").tolist()  # ascending: the best is written last
    merged = dict(zip(map(ids.__getitem__, order), similarities[order].tolist()))
    return list(merged), list(merged.values())


@dataclass(frozen=True)
class Ranked:
    candidate: Candidate
    score: float
    popularity: float  # the log-scaled popularity used in the score, in [0, 1]

    @property
    def item_id(self) -> str:
        return self.candidate.item_id


def popularity_score(count: float, max_count: float) -> float:
    """Log-scaled popularity in [0, 1], so a few blockbusters don't swamp similarity."""
    if max_count <= 0 or count <= 0:
        return 0.0
    return math.log1p(count) / math.log1p(max_count)


def score(candidate: Candidate, popularity: float, category_affinity: float, price: float, weights: Weights) -> float:
    return (
        weights.similarity * candidate.similarity
        + weights.popularity * popularity
        + weights.category * category_affinity
        + weights.price * price
    )


def rank(
    candidates: Sequence[Candidate],
    *,
    k: int,
    popularity: Mapping[str, float] | np.ndarray,
    category_affinity: Mapping[str, float],
    weights: Weights,
) -> list[Ranked]:
    """Score and sort (ties by item id, so output is deterministic); the top k.

    `popularity`: counts by item id, or an array of them in the candidates' order.

    Hundreds of candidates come in and ten go out, so numpy scores them all and `score` re-scores
    exactly only those that can reach the top k (within a rounding margin of the k-th): the
    result is the same as scoring and sorting every candidate one by one."""
    if not candidates or k <= 0:
        return []
    pool = CandidatePool.of(candidates)
    n = len(pool)
    if isinstance(popularity, np.ndarray):
        if len(popularity) != n:
            raise ValueError(f"popularity has {len(popularity)} values for {n} candidates")
        pops = popularity.astype(np.float64, copy=False)
    else:
        pops = np.fromiter(map(popularity.get, pool.item_ids, repeat(0.0)), np.float64, n)
    prices = np.fromiter((r.price or 0.0 for r in pool.records), np.float64, n)
    max_pop, max_price = float(pops.max()), float(prices.max())
    approx = weights.similarity * np.asarray(pool.similarities, dtype=np.float64)
    approx += weights.popularity * log_scaled(pops, max_pop)
    approx += weights.category * np.fromiter(
        (category_affinity.get(r.category, 0.0) if r.category else 0.0 for r in pool.records), np.float64, n)
    if weights.price:
        approx += weights.price * log_scaled(prices, max_price)
    if n > k:
        kth = np.partition(approx, n - k)[n - k]
        contenders = np.flatnonzero(approx >= kth - 1e-9 * max(1.0, abs(kth)))
    else:
        contenders = range(n)
    scored = []
    for j in contenders:
        c = pool[int(j)]
        pop = popularity_score(float(pops[j]), max_pop)
        aff = category_affinity.get(c.category, 0.0) if c.category else 0.0
        price = popularity_score(float(prices[j]), max_price) if weights.price else 0.0
        scored.append(Ranked(c, score(c, pop, aff, price, weights), pop))
    scored.sort(key=lambda r: (-r.score, r.item_id))
    return scored[:k]


def log_scaled(values: np.ndarray, max_value: float) -> np.ndarray:
    """`popularity_score` over an array."""
    if max_value <= 0:
        return np.zeros_like(values)
    return np.where(values > 0, np.log1p(np.maximum(values, 0.0)) / math.log1p(max_value), 0.0)
