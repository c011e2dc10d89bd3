"""Small engine-wide state (bandit arms, catalog topics, per-segment popularity) as JSON blobs.

Kept in the vector store's `state` collection, next to the profiles, so it is as durable as
they are, survives a restart of the dev broker, and works the same embedded or on a server.
Blobs hold aggregates only, never a user id, so an erasure has nothing to remove here.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from inference.store import Point, VectorStore

STATE = "state"


class StateBlobs:
    """Named JSON values, one point each, in a collection of their own (`state` by default)."""

    def __init__(self, store: VectorStore, collection: str = STATE):
        self._store, self._collection = store, collection
        store.ensure_collection(collection, 1)

    def get(self, name: str) -> Any | None:
        found = self._store.retrieve(self._collection, [name])
        return json.loads(found[0].payload["json"]) if found else None

    def put(self, name: str, value: Any) -> None:
        payload = {"json": json.dumps(value, separators=(",", ":"))}
        self._store.upsert(self._collection, [Point(name, np.ones(1, dtype=np.float32), payload)])

    def delete(self, name: str) -> None:
        self._store.delete(self._collection, [name])

    def all(self) -> dict[str, Any]:
        """Every value of the collection by name."""
        return {point.id: json.loads(point.payload["json"]) for point in self._store.scroll(self._collection)}
