"""Interest groups: global k-means over users' long-term interest vectors, named from items.

Recomputed on a timer from the profiles in the store (so they follow the shop's audience and
need no state of their own); a user's group is the centroid nearest their interest vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from inference.catalog import ItemRecord
from inference.clustering import cluster_name, kmeans, nearest


@dataclass(frozen=True)
class InterestGroups:
    centroids: np.ndarray
    names: tuple[str, ...]
    sizes: tuple[int, ...]
    computed_at: float  # wall-clock seconds

    @classmethod
    def fit(cls, user_vectors: np.ndarray, items: Sequence[ItemRecord], k: int, now: float,
            *, seed: int = 0) -> InterestGroups | None:
        """None until there are enough users and items to make k groups worth naming."""
        if len(user_vectors) < 3 * k or not items:
            return None
        centroids, labels = kmeans(user_vectors, k, seed=seed)
        item_vectors = np.stack([r.vector for r in items])
        titles = [r.title for r in items]
        names = tuple(cluster_name(c, item_vectors, titles) for c in centroids)
        sizes = tuple(int((labels == j).sum()) for j in range(len(centroids)))
        return cls(centroids, names, sizes, now)

    def group_of(self, vector: np.ndarray) -> tuple[str, np.ndarray]:
        """The name and centroid of the group nearest to a user vector."""
        j = int(nearest(self.centroids, vector[None, :])[0])
        return self.names[j], self.centroids[j]

    def summary(self) -> list[dict]:
        order = np.argsort(-np.asarray(self.sizes))
        return [{"name": self.names[j], "users": self.sizes[j]} for j in order]
