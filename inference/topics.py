"""Catalog topics: clusters of item vectors, the arms the exploration bandit chooses among.

Built once per encoder version from the cached catalog (k-means), named from their items'
titles, persisted, and kept stable afterwards: a new item joins its nearest topic, so the
bandit's statistics keep their meaning while the catalog changes.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from inference.catalog import ItemRecord
from inference.clustering import cluster_name, kmeans, nearest


@dataclass
class Topics:
    version: str  # the encoder version whose vectors were clustered
    centroids: np.ndarray
    names: list[str]
    _of: dict[str, str] = field(default_factory=dict)  # item id -> topic id
    _members: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    _matrices: dict[str, tuple[list[str], np.ndarray]] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return [f"t{n}" for n in range(len(self.centroids))]

    def name(self, topic: str) -> str:
        return self.names[int(topic[1:])]

    @classmethod
    def build(cls, records: Sequence[ItemRecord], k: int, version: str, *, seed: int = 0) -> Topics:
        vectors = np.stack([r.vector for r in records])
        centroids, _ = kmeans(vectors, k, seed=seed)
        titles = [r.title for r in records]
        names = [cluster_name(c, vectors, titles) for c in centroids]
        topics = cls(version, centroids, names)
        topics.assign(records)
        return topics

    def assign(self, records: Iterable[ItemRecord]) -> None:
        """Put items into their nearest topic (new or re-embedded items)."""
        records = list(records)
        if not records:
            return
        labels = nearest(self.centroids, np.stack([r.vector for r in records]))
        for record, label in zip(records, labels):
            self.forget(record.item_id)
            topic = f"t{label}"
            self._of[record.item_id] = topic
            self._members.setdefault(topic, {})[record.item_id] = record.vector
            self._matrices.pop(topic, None)

    def forget(self, item_id: str) -> None:
        topic = self._of.pop(item_id, None)
        if topic is not None:
            self._members[topic].pop(item_id, None)
            self._matrices.pop(topic, None)

    def of(self, item_id: str) -> str | None:
        return self._of.get(item_id)

    def members(self, topic: str) -> tuple[list[str], np.ndarray]:
        """The topic's item ids and their vectors as one matrix (cached until membership changes)."""
        if topic not in self._matrices:
            members = self._members.get(topic, {})
            ids = list(members)
            matrix = np.stack([members[i] for i in ids]) if ids else np.zeros((0, self.centroids.shape[1]), np.float32)
            self._matrices[topic] = (ids, matrix)
        return self._matrices[topic]

    def to_json(self) -> dict:
        return {
            "version": self.version,
            "names": self.names,
            "dim": int(self.centroids.shape[1]),
            "centroids": base64.b64encode(np.ascontiguousarray(self.centroids, dtype="<f4").tobytes()).decode(),
        }

    @classmethod
    def from_json(cls, data: dict, records: Iterable[ItemRecord]) -> Topics:
        raw = np.frombuffer(base64.b64decode(data["centroids"]), dtype="<f4").astype(np.float32)
        topics = cls(data["version"], raw.reshape(-1, int(data["dim"])), list(data["names"]))
        topics.assign(records)
        return topics
