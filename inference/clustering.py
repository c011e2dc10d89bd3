"""Clustering maths for interest groups and exploration topics: pure numpy, no I/O.

Three uses, one module because they share the geometry (unit vectors, cosine similarity):
- global spherical k-means: catalog topics (the bandit's arms) and user interest groups;
- per-user interest centroids in the spirit of PinnerSage: cluster a user's recent item vectors
  and keep each cluster's medoid, so retrieval can ask for every interest, not their average;
- names for clusters, made from the titles of the items nearest to each centroid.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

STOPWORDS = frozenset(
    "a an and the of in on for with to set box pack small large mini big assorted design "
    "de la le les et du des der die das und mit von el los las y con para".split()
)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms == 0, 1.0, norms)).astype(np.float32)


def kmeans(vectors: np.ndarray, k: int, *, seed: int = 0, iterations: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means with k-means++ seeding: (unit centroids (k', d), label per row).

    Deterministic for a seed. k' = min(k, number of distinct rows); an emptied cluster is
    re-seeded with the row farthest from its centroid, so every centroid keeps members.
    """
    x = unit_rows(np.asarray(vectors, dtype=np.float32))
    n = len(x)
    if n == 0:
        return np.zeros((0, x.shape[1] if x.ndim == 2 else 0), np.float32), np.zeros(0, np.int64)
    k = max(1, min(k, len(np.unique(x.round(6), axis=0))))
    rng = np.random.default_rng(seed)
    centroids = [x[rng.integers(n)]]
    distance = 1.0 - x @ centroids[0]
    for _ in range(1, k):
        weights = np.clip(distance, 0, None) ** 2
        total = weights.sum()
        pick = rng.choice(n, p=weights / total) if total > 0 else rng.integers(n)
        centroids.append(x[pick])
        distance = np.minimum(distance, 1.0 - x @ x[pick])
    c = np.stack(centroids)
    labels = np.full(n, -1)
    for _ in range(iterations):
        similarity = x @ c.T
        new_labels = similarity.argmax(axis=1)
        for j in range(len(c)):
            if not (new_labels == j).any():  # re-seed an empty cluster at the worst-served row
                served = similarity[np.arange(n), new_labels].copy()
                served[np.bincount(new_labels, minlength=len(c))[new_labels] <= 1] = np.inf  # never empty another
                new_labels[int(served.argmin())] = j
        if (new_labels == labels).all():
            break
        labels = new_labels
        c = unit_rows(np.stack([x[labels == j].sum(axis=0) for j in range(len(c))]))
    return c, labels


def nearest(centroids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (by cosine) for each row of `vectors`."""
    if len(centroids) == 0:
        return np.full(len(vectors), -1)
    return (np.asarray(vectors, dtype=np.float32) @ centroids.T).argmax(axis=1)


@dataclass(frozen=True)
class InterestCentroid:
    """One of a user's interests: the medoid item of a cluster of their recent items."""

    vector: np.ndarray
    weight: float  # share of the user's (event-weighted) recent activity in this cluster
    medoid_item: str


def interest_centroids(
    item_ids: Sequence[str],
    vectors: np.ndarray,
    weights: Sequence[float],
    *,
    max_clusters: int = 3,
    merge_similarity: float = 0.55,
) -> list[InterestCentroid]:
    """PinnerSage-style interests: average-linkage agglomerative clustering of a user's recent
    item vectors, merged while the closest pair of clusters is more similar than
    `merge_similarity`; the `max_clusters` heaviest clusters, each represented by its medoid
    (an actual item, so retrieval around it stays on real interests), heaviest first."""
    n = len(item_ids)
    if n == 0:
        return []
    x = unit_rows(np.asarray(vectors, dtype=np.float32))
    w = np.asarray(weights, dtype=np.float64)
    sim = (x @ x.T).astype(np.float64)
    # Average linkage by the Lance-Williams update: merging a and b, the similarity of the new
    # cluster to c is the size-weighted mean of a's and b's; O(n^2) per merge, no pair loops.
    # Plain Python scalars in the loop: it runs for every recommendation, and numpy scalar
    # arithmetic and index helpers cost more than the n <= MAX_RECENT rows themselves.
    between = sim.copy()
    np.fill_diagonal(between, -np.inf)
    sizes = [1.0] * n
    members: list[list[int] | None] = [[i] for i in range(n)]
    for _ in range(n - 1):
        a, b = divmod(int(between.argmax()), n)
        if between[a, b] < merge_similarity:
            break
        size_a, size_b = sizes[a], sizes[b]
        merged = (size_a * between[a] + size_b * between[b]) / (size_a + size_b)
        merged[a] = merged[b] = -np.inf
        between[a] = merged
        between[:, a] = merged
        between[b] = -np.inf
        between[:, b] = -np.inf
        sizes[a] = size_a + size_b
        members[a] += members[b]  # type: ignore[operator]
        members[b] = None
    total = float(w.sum()) or 1.0
    out = []
    for group in members:
        if group is None:
            continue
        inner = sim[group][:, group] @ w[group]
        medoid = group[int(inner.argmax())]
        out.append(InterestCentroid(x[medoid], float(w[group].sum()) / total, item_ids[medoid]))
    out.sort(key=lambda c: (-c.weight, c.medoid_item))
    return out[:max_clusters]


_WORD = re.compile(r"[^\W\d_]{3,}", re.UNICODE)


def cluster_name(centroid: np.ndarray, item_vectors: np.ndarray, titles: Sequence[str], *, top: int = 8,
                 words: int = 3) -> str:
    """A readable name: the most frequent content words in the titles of the items nearest to
    the centroid (weighted by closeness), e.g. "teacup · regency · saucer"."""
    if len(titles) == 0:
        return "unnamed"
    similarity = np.asarray(item_vectors, dtype=np.float32) @ centroid
    order = np.argsort(-similarity)[:top]
    counts: Counter[str] = Counter()
    for rank, i in enumerate(order):
        seen = set()
        for word in _WORD.findall(titles[i].lower()):
            if word not in STOPWORDS and word not in seen:
                counts[word] += top - rank
                seen.add(word)
    if not counts:
        return titles[order[0]][:40].lower()
    return " · ".join(w for w, _ in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))[:words])
