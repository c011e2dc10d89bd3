"""User profiles persisted in the vector store's `users` collection, with an LRU cache in front.

Why the vector store and not a Faust table: its write-ahead log makes a profile durable the
moment it is upserted (so offsets can be committed after it), it survives a restart of the dev
broker (which keeps nothing), and the HTTP view and the CLI read the same state the worker
writes. The point's vector is the user's long-term interest, usable for user-user search.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

import numpy as np

from inference.exploration import Arm, ExploredSlot
from inference.profiles import Interest, Profile, RecentItem, Rfm
from inference.schemas import EventType
from inference.store import Point, VectorStore

USERS = "users"


def _vector_b64(vector: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")


def _vector_from_b64(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32)


def _interest_to_json(interest: Interest | None) -> list | None:
    if interest is None:
        return None
    return [_vector_b64(interest.total), interest.mass, interest.updated]


def _interest_from_json(data: list | None) -> Interest | None:
    if data is None:
        return None
    total, mass, updated = data
    return Interest(_vector_from_b64(total), float(mass), float(updated))


def pseudonymiser(key: bytes | None) -> Callable[[str], str]:
    """The id profiles are stored under: the user id itself, or its keyed hash when a key is set."""
    if key is None:
        return lambda user_id: user_id
    return lambda user_id: "u_" + hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()[:32]


def profile_to_point(profile: Profile, dim: int, stored_id: str | None = None) -> Point:
    """The profile as one point: its vector is the long-term interest, its state one JSON string.

    One opaque string instead of nested payload fields: the store converts a payload key by key,
    and a profile written on every batch must be cheap to write (vectors travel as base64 float32).
    """
    direction = profile.long_term.direction() if profile.long_term else None
    if direction is None:
        # Qdrant needs a vector for every point; a user with no interest yet gets a fixed unit one.
        direction = np.zeros(dim, dtype=np.float32)
        direction[0] = 1.0
    state = {
        "long_term": _interest_to_json(profile.long_term),
        "session": _interest_to_json(profile.session),
        "session_id": profile.session_id,
        "categories": profile.categories,
        "categories_updated": profile.categories_updated,
        "recent": [[r.item_id, r.type.value, r.ts] for r in profile.recent],
        "purchased": list(profile.purchased),
        "seen_events": base64.b64encode(np.asarray(profile.seen_events, dtype="<u8").tobytes()).decode("ascii"),
        "rfm": [profile.rfm.first_ts, profile.rfm.last_purchase_ts, profile.rfm.purchases, profile.rfm.monetary],
        "events": profile.events,
        "stated_interest": profile.stated_interest,
        "segment": profile.segment,
        "space": profile.space,
        "topics": {t: [a.shown, a.rewarded] for t, a in profile.topics.items()},
        "exploring": [[e.rec_id, e.item_id, e.topic, e.impressed, e.rewarded] for e in profile.exploring],
    }
    stored_id = stored_id or profile.user_id
    payload = {"user_id": stored_id, "state": json.dumps(state, separators=(",", ":"))}
    return Point(id=stored_id, vector=direction, payload=payload)


def profile_from_point(point: Point) -> Profile:
    state = json.loads(point.payload["state"])
    first_ts, last_purchase_ts, purchases, monetary = state["rfm"]
    return Profile(
        user_id=point.payload["user_id"],
        long_term=_interest_from_json(state["long_term"]),
        session=_interest_from_json(state["session"]),
        session_id=state["session_id"],
        categories={str(k): float(v) for k, v in state["categories"].items()},
        categories_updated=state["categories_updated"],
        recent=tuple(RecentItem(i, EventType(t), float(ts)) for i, t, ts in state["recent"]),
        purchased=tuple(state["purchased"]),
        seen_events=tuple(int(k) for k in np.frombuffer(base64.b64decode(state["seen_events"]), dtype="<u8")),
        rfm=Rfm(first_ts, last_purchase_ts, int(purchases), float(monetary)),
        events=int(state["events"]),
        stated_interest=bool(state["stated_interest"]),
        segment=state.get("segment"),
        space=state.get("space"),
        topics={str(t): Arm(float(a), float(b)) for t, (a, b) in state.get("topics", {}).items()},
        exploring=tuple(ExploredSlot(r, i, t, bool(im), bool(rw)) for r, i, t, im, rw in state.get("exploring", ())),
    )


class ProfileRepository:
    """Loads and saves profiles in batches; the cache makes a user's next event a memory hit.

    Callers use the shop's user ids; what is stored is keyed by `stored_id(user_id)` (a keyed hash
    when pseudonymisation is on), so the store never holds the raw id.
    """

    def __init__(self, store: VectorStore, dim: int, *, collection: str = USERS, capacity: int = 100_000,
                 stored_id: Callable[[str], str] = pseudonymiser(None)):
        self._store, self._dim, self._collection, self._capacity = store, dim, collection, capacity
        self._stored_id = stored_id
        self._cache: OrderedDict[str, Profile] = OrderedDict()

    def _remember(self, profile: Profile) -> None:
        self._cache[profile.user_id] = profile
        self._cache.move_to_end(profile.user_id)
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)

    def get_many(self, user_ids: Iterable[str]) -> dict[str, Profile]:
        """Every requested user, new users as empty profiles."""
        wanted = list(dict.fromkeys(user_ids))
        found = {u: self._cache[u] for u in wanted if u in self._cache}
        missing = {self._stored_id(u): u for u in wanted if u not in found}
        if missing:
            for point in self._store.retrieve(self._collection, list(missing)):
                user_id = missing[point.id]
                found[user_id] = replace(profile_from_point(point), user_id=user_id)
                self._remember(found[user_id])
        return {u: found.get(u) or Profile(user_id=u) for u in wanted}

    def get(self, user_id: str) -> Profile:
        return self.get_many([user_id])[user_id]

    def save_many(self, profiles: Sequence[Profile]) -> None:
        """One store call; the cache is updated only after the write succeeded."""
        if not profiles:
            return
        self._store.upsert(self._collection, [profile_to_point(p, self._dim, self._stored_id(p.user_id)) for p in profiles])
        for p in profiles:
            self._remember(p)

    def delete(self, user_id: str) -> bool:
        """Erase a user's profile from the store and the cache; True if there was one."""
        stored = self._stored_id(user_id)
        existed = bool(self._store.retrieve(self._collection, [stored])) or user_id in self._cache
        self._store.delete(self._collection, [stored])
        self._cache.pop(user_id, None)
        return existed

    def invalidate(self) -> None:
        """Drop the cache (e.g. after a store error, so the next read sees what is durable)."""
        self._cache.clear()
