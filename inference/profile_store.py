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
from typing import Any

import numpy as np

from inference.exploration import Arm, ExploredSlot
from inference.profiles import Interest, Profile, RecentItem, Rfm
from inference.schemas import EventType
from inference.store import Point, VectorStore

USERS = "users"
STATE_VERSION = 3
"""Layout of the stored state string. 1: every field spelled out, both interest sums as base64;
2: the long-term sum as its norm (the point's vector is its direction), arrays packed, defaults left out;
3: as 2, with recent items' times as float32 seconds before the newest (5 characters each, not 10:
the window grew from 20 to 100 items for the event encoder). A time read back is within float32's
rounding of its age (under 1 s for events up to ~190 days older than the newest), and times that
were equal stay equal."""

TYPE_CODES: dict[EventType, str] = {
    EventType.view: "v", EventType.click: "c", EventType.add_to_cart: "a", EventType.remove_from_cart: "r",
    EventType.purchase: "p", EventType.search: "s", EventType.impression: "i",
}
"""One letter per event type in a stored recent-items list (fixed: stored states use them)."""
_TYPES_BY_CODE = {code: t for t, code in TYPE_CODES.items()}


class ProfileStateError(ValueError):
    """A stored profile state cannot be read into a Profile."""


# Base85 with the RFC 1924 alphabet (the same text as base64.b85encode) over whole 4-byte words,
# vectorised: 5 characters per 4 bytes instead of base64's 5.33, and no '"' or '\' to escape in
# JSON. The stdlib codec is pure Python, ~40x slower than base64 on a 384-d vector.
_B85_CHARS = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~",
                           dtype=np.uint8)
_B85_DIGITS = np.full(256, 255, dtype=np.uint8)
_B85_DIGITS[_B85_CHARS] = np.arange(85, dtype=np.uint8)
_B85_POWERS = 85 ** np.arange(4, -1, -1, dtype=np.uint32)  # 85**4 < 2**32
_B85_WEIGHTS = _B85_POWERS.astype(np.float64)  # a group's value is < 85**5 < 2**53: exact in float64


def b85_encode(array: np.ndarray) -> str:
    """The array's bytes as base85 text; its itemsize must be a multiple of 4 (float32, float64, uint64)."""
    data = np.ascontiguousarray(array).tobytes()
    if len(data) % 4:
        raise ValueError(f"b85_encode takes whole 4-byte words, got {len(data)} bytes")
    words = np.frombuffer(data, dtype=">u4").astype(np.uint32)
    return _B85_CHARS[(words[:, None] // _B85_POWERS) % 85].tobytes().decode("ascii")


def b85_decode(text: str, dtype: str) -> np.ndarray:
    """The array `b85_encode` wrote, as `dtype` (give the byte order, e.g. "<f4")."""
    digits = _B85_DIGITS[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]
    if len(digits) % 5 or digits.max(initial=0) == 255:
        raise ProfileStateError(f"not base85 of whole 4-byte words: {text[:40]!r}")
    words = digits.reshape(-1, 5) @ _B85_WEIGHTS
    if words.max(initial=0) > 0xFFFFFFFF:
        raise ProfileStateError(f"base85 group out of range in {text[:40]!r}")
    return np.frombuffer(words.astype(">u4").tobytes(), dtype=dtype)


def _packed_interest(interest: Interest) -> list:
    """An interest stored whole (layout 2): its float32 sum as base85, its mass and its time."""
    return [b85_encode(np.asarray(interest.total, dtype="<f4")), interest.mass, interest.updated]


def _vector_from_b85(text: str) -> np.ndarray:
    return b85_decode(text, "<f4").astype(np.float32)


def _vector_from_b64(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32)


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


def _placeholder(dim: int) -> np.ndarray:
    # Qdrant needs a vector for every point; a user with no interest yet gets a fixed unit one.
    vector = np.zeros(dim, dtype=np.float32)
    vector[0] = 1.0
    return vector


def profile_to_point(profile: Profile, dim: int, stored_id: str | None = None) -> Point:
    """The profile as one point: its vector is the long-term interest, its state one JSON string.

    One opaque string instead of nested payload fields: the store converts a payload key by key,
    and a profile written on every batch must be cheap to write. The long-term sum is stored as
    its norm beside the point's vector (its direction) rather than a second time; arrays travel as
    base85 of their raw bytes; fields at their default are left out (layout STATE_VERSION).
    """
    long_term, direction = profile.long_term, None
    state: dict[str, Any] = {"v": STATE_VERSION}
    if long_term is not None:
        direction = long_term.direction()
        if direction is not None:
            # the norm direction() divided by: norm x direction gives the sum back within 1 float32 ulp
            state["long_term"] = [float(np.linalg.norm(long_term.total)), long_term.mass, long_term.updated]
        else:  # a zero or non-finite sum has no direction to keep in the point: stored whole
            state["long_term"] = _packed_interest(long_term)
    if profile.session is not None:
        state["session"] = _packed_interest(profile.session)
    if profile.session_id is not None:
        state["session_id"] = profile.session_id
    if profile.categories or profile.categories_updated is not None:
        state["categories"] = [list(profile.categories), b85_encode(np.fromiter(profile.categories.values(), "<f8")),
                               profile.categories_updated]
    if profile.recent:
        newest = profile.recent[-1].ts
        state["recent"] = [[r.item_id for r in profile.recent], "".join(TYPE_CODES[r.type] for r in profile.recent),
                           b85_encode(np.array([newest - r.ts for r in profile.recent], dtype="<f4")), newest]
    if profile.purchased:
        state["purchased"] = list(profile.purchased)
    if profile.seen_events:
        state["seen_events"] = b85_encode(np.array(profile.seen_events, dtype="<u8"))
    if profile.rfm != Rfm():
        rfm = profile.rfm
        state["rfm"] = [rfm.first_ts, rfm.last_purchase_ts, rfm.purchases, rfm.monetary]
    if profile.events:
        state["events"] = profile.events
    if profile.units:
        state["units"] = profile.units
    if profile.stated_interest:
        state["stated_interest"] = True
    if profile.stated_phrases:
        state["stated_phrases"] = [len(profile.stated_phrases),
                                   b85_encode(np.stack(profile.stated_phrases).astype("<f4"))]
    if profile.segment is not None:
        state["segment"] = profile.segment
    if profile.space is not None:
        state["space"] = profile.space
    if profile.topics:
        state["topics"] = {t: [a.shown, a.rewarded] for t, a in profile.topics.items()}
    if profile.exploring:
        state["exploring"] = [[e.rec_id, e.item_id, e.topic, e.impressed, e.rewarded] for e in profile.exploring]
    stored_id = stored_id or profile.user_id
    payload = {"user_id": stored_id, "state": json.dumps(state, separators=(",", ":"))}
    return Point(id=stored_id, vector=_placeholder(dim) if direction is None else direction, payload=payload)


def profile_from_point(point: Point) -> Profile:
    """The profile `profile_to_point` stored, in any state layout written so far.

    A long-term interest stored as a norm needs the point's vector: fetch users with
    `with_vectors=True`. Raises ProfileStateError for a layout newer than this code, a missing
    vector or a corrupt packed array.
    """
    state = json.loads(point.payload["state"])
    version = state.get("v", 1)
    if version == 1:
        return _profile_from_v1(point.payload["user_id"], state)
    if version in (2, 3):
        return _profile_from_v2(point, state)
    raise ProfileStateError(
        f"profile {point.id!r} has state layout {version!r}; this code reads layouts 1-{STATE_VERSION}: "
        "upgrade it (stored profiles are never rewritten downwards)"
    )


def segment_and_interest(point: Point) -> tuple[str | None, bool]:
    """A stored user's value segment and whether they have a long-term interest, without decoding
    the whole profile (the periodic group refresh scans every user for just these two)."""
    state = json.loads(point.payload["state"])
    return state.get("segment"), state.get("long_term") is not None


def _profile_from_v2(point: Point, state: dict[str, Any]) -> Profile:
    """Layouts 2 and 3 (they differ in how recent items' times are packed)."""
    long_term = None
    if (lt := state.get("long_term")) is not None:
        scale, mass, updated = lt
        if isinstance(scale, str):
            total = _vector_from_b85(scale)
        elif point.vector is None:
            raise ProfileStateError(
                f"profile {point.id!r} keeps its long-term interest in the point's vector, which was not "
                "fetched: retrieve or scroll the users collection with with_vectors=True"
            )
        else:
            # in float64, then rounded once: within 1 float32 ulp of the sum that was saved (a few
            # where a server renormalised the stored direction)
            total = (np.asarray(point.vector, dtype=np.float64) * float(scale)).astype(np.float32)
        long_term = Interest(total, float(mass), float(updated))
    session = None
    if (s := state.get("session")) is not None:
        session = Interest(_vector_from_b85(s[0]), float(s[1]), float(s[2]))
    categories, categories_updated = {}, None
    if (c := state.get("categories")) is not None:
        names, scores, categories_updated = c
        categories = dict(zip(names, b85_decode(scores, "<f8").tolist(), strict=True))
    recent: tuple[RecentItem, ...] = ()
    if (r := state.get("recent")) is not None:
        if len(r) == 4:  # layout 3: ages before the newest
            ids, types, ages, newest = r
            times = (float(newest) - b85_decode(ages, "<f4").astype(np.float64)).tolist()
        else:
            ids, types, packed = r
            times = b85_decode(packed, "<f8").tolist()
        recent = tuple(RecentItem(i, _TYPES_BY_CODE[t], ts) for i, t, ts in zip(ids, types, times, strict=True))
    first_ts, last_purchase_ts, purchases, monetary = state.get("rfm", (None, None, 0, 0.0))
    return Profile(
        user_id=point.payload["user_id"],
        long_term=long_term,
        session=session,
        session_id=state.get("session_id"),
        categories=categories,
        categories_updated=categories_updated,
        recent=recent,
        purchased=tuple(state.get("purchased", ())),
        seen_events=tuple(b85_decode(state.get("seen_events", ""), "<u8").tolist()),
        rfm=Rfm(first_ts, last_purchase_ts, int(purchases), float(monetary)),
        events=int(state.get("events", 0)),
        units=int(state.get("units", 0)),
        stated_interest=bool(state.get("stated_interest", False)),
        stated_phrases=_phrases(state.get("stated_phrases")),
        segment=state.get("segment"),
        space=state.get("space"),
        topics={str(t): Arm(float(a), float(b)) for t, (a, b) in state.get("topics", {}).items()},
        exploring=tuple(ExploredSlot(r, i, t, bool(im), bool(rw)) for r, i, t, im, rw in state.get("exploring", ())),
    )


def _phrases(packed: list | None) -> tuple[np.ndarray, ...]:
    """Stated phrase vectors, stored as their count and one packed (count, dim) matrix."""
    if not packed:
        return ()
    count, values = packed
    flat = _vector_from_b85(values)
    if count <= 0 or len(flat) % count:
        raise ProfileStateError(f"{len(flat)} stated-phrase values do not make {count} vectors")
    return tuple(flat.reshape(count, -1))


def _profile_from_v1(user_id: str, state: dict[str, Any]) -> Profile:
    """Layout 1, as written before STATE_VERSION existed: still read, never written."""
    first_ts, last_purchase_ts, purchases, monetary = state["rfm"]
    return Profile(
        user_id=user_id,
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
            # with vectors: the point's vector is the direction of the stored long-term interest
            for point in self._store.retrieve(self._collection, list(missing), with_vectors=True):
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
