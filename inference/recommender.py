"""The recommendation engine as a library: catalog updates, events, stated interests, requests.

Composes the encoder, the vector store and the pure profile/ranking maths. Everything works on
batches so the worker makes one encoder call and a few store calls per batch, not per event.
No Kafka here: `stream/` feeds it, tests and the CLI call it directly.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inference.catalog import (
    ITEMS,
    ItemCache,
    ItemRecord,
    Popularity,
    item_payload,
    item_text,
    record_from_point,
    text_hash,
)
from inference.encoder import TextEncoder
from inference.profile_store import USERS, ProfileRepository, pseudonymiser
from inference.profiles import (
    EVENT_WEIGHTS,
    Profile,
    ProfileParams,
    apply_event,
    apply_stated_interest,
    category_affinity,
    query_vector,
)
from inference.ranking import Candidate, Evidence, Weights, rank
from inference.schemas import (
    Erasure,
    ErasureConfirmed,
    Event,
    EventType,
    Intent,
    Item,
    Recommendation,
    RecommendedItem,
    RequestFilters,
    utcnow,
)
from inference.settings import InferenceSettings
from inference.store import Filter, Point, StoreUnavailable, VectorStore, open_store

log = logging.getLogger("streamrec.recommender")

_REC_NAMESPACE = uuid.UUID("6f1c3a52-2b7e-4c1e-9d0a-5c2f7e8b9a10")


def rec_id_for(trigger: str) -> str:
    """Deterministic id, so a recommendation recomputed after a redelivery is recognisably the same."""
    return str(uuid.uuid5(_REC_NAMESPACE, trigger))


@dataclass(frozen=True)
class CatalogChange:
    upserted: int
    unchanged: int
    deleted: int


class Recommender:
    def __init__(self, encoder: TextEncoder, store: VectorStore, settings: InferenceSettings):
        self.encoder, self.store, self.settings = encoder, store, settings
        self.on_stage: Callable[[str, float], None] | None = None  # told how long each stage took
        self.dim = encoder.dim
        store.ensure_collection(
            ITEMS, self.dim, keyword_fields=("category",), bool_fields=("in_stock",), float_fields=("price",)
        )
        key = settings.pseudonymisation_key
        self.profiles = ProfileRepository(
            store, self.dim, capacity=settings.profile_cache_size,
            stored_id=pseudonymiser(key.get_secret_value().encode() if key else None),
        )
        store.ensure_collection(USERS, self.dim)
        self.items = ItemCache(store)
        self.popularity = Popularity(settings.popularity_half_life_days * 86_400)
        self.params = ProfileParams(
            long_term_half_life_s=settings.long_term_half_life_days * 86_400,
            session_half_life_s=settings.session_half_life_minutes * 60,
            session_gap_s=settings.session_gap_minutes * 60,
            session_weight=settings.session_weight,
        )
        self.weights = Weights(settings.weight_similarity, settings.weight_popularity, settings.weight_category)
        self._load_catalog()

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.on_stage is not None:
                self.on_stage(name, time.perf_counter() - start)

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._stage("encode"):
            return self.encoder.encode(texts)

    @property
    def model_version(self) -> str:
        return self.encoder.version

    def _load_catalog(self) -> None:
        """Warm the item cache and restore persisted popularity (one scroll at start-up)."""
        for point in self.store.scroll(ITEMS, with_vectors=True):
            self.items.put(record_from_point(point))
            pop = point.payload.get("popularity")
            if pop:
                self.popularity.restore(point.id, float(pop[0]), float(pop[1]))

    # ---- catalog -------------------------------------------------------------------------
    def upsert_items(self, items: Sequence[Item]) -> CatalogChange:
        """Embed new or changed item text and upsert; deleted items leave retrieval at once."""
        latest = {i.item_id: i for i in items}  # the last message per item wins
        deleted = [i for i in latest.values() if i.deleted]
        live = [i for i in latest.values() if not i.deleted]
        if deleted:
            self.store.delete(ITEMS, [i.item_id for i in deleted])
            for i in deleted:
                self.items.forget(i.item_id)
                self.popularity.forget(i.item_id)
        texts = {i.item_id: item_text(i.title, i.category, i.description) for i in live}
        digests = {i.item_id: text_hash(texts[i.item_id], self.model_version) for i in live}
        existing = {p.id: p for p in self.store.retrieve(ITEMS, list(texts), with_vectors=True)}
        to_embed = [i for i in live if existing.get(i.item_id) is None
                    or existing[i.item_id].payload.get("text_hash") != digests[i.item_id]]
        vectors = dict(zip([i.item_id for i in to_embed], self._encode([texts[i.item_id] for i in to_embed])))
        popularity = self.popularity.snapshot()
        points = []
        for item in live:
            vector = vectors[item.item_id] if item.item_id in vectors else existing[item.item_id].vector
            payload = item_payload(item, digests[item.item_id])
            count, updated = popularity.get(item.item_id, (0.0, 0.0))
            payload["popularity"] = [count, updated]
            points.append(Point(item.item_id, np.asarray(vector, dtype=np.float32), payload))
        if points:
            self.store.upsert(ITEMS, points)
            for point in points:
                p = point.payload
                self.items.put(ItemRecord(point.id, point.vector, p["title"], p["category"], p["price"], p["in_stock"]))
        return CatalogChange(upserted=len(to_embed), unchanged=len(live) - len(to_embed), deleted=len(deleted))

    def flush_popularity(self) -> int:
        """Persist popularity into item payloads, so a restarted worker ranks the same way."""
        snapshot = self.popularity.snapshot()
        present = {p.id for p in self.store.retrieve(ITEMS, list(snapshot))}
        for item_id in present:
            count, updated = snapshot[item_id]
            self.store.set_payload(ITEMS, item_id, {"popularity": [count, updated]})
        return len(present)

    # ---- events ----------------------------------------------------------------------------
    def process_events(self, events: Sequence[Event]) -> list[Recommendation]:
        """Fold a batch of events into profiles, persist them, answer each user's last event.

        One recommendation per user per batch: it reflects all of that user's events in it.
        A redelivered event (same event_id) changes no state but is answered again.
        """
        if not events:
            return []
        with self._stage("load"):
            profiles = self.profiles.get_many(e.user_id for e in events)
            records = self.items.get_many(e.item_id for e in events if e.item_id)
        queries = [e for e in events if e.type is EventType.search and e.query]
        query_vectors = dict(zip((e.event_id for e in queries), self._encode([e.query for e in queries])))
        changed: dict[str, Profile] = {}
        last_event: dict[str, Event] = {}
        for event in events:
            before = profiles[event.user_id]
            record = records.get(event.item_id) if event.item_id else None
            vector = record.vector if record is not None else query_vectors.get(event.event_id)
            ts = event.ts.timestamp()
            after = apply_event(
                before,
                event_id=event.event_id,
                type=event.type,
                ts=ts,
                item_id=event.item_id,
                vector=vector,
                category=record.category if record else None,
                session_id=event.session_id,
                quantity=event.quantity,
                price=event.price if event.price is not None else (record.price if record else None),
                params=self.params,
            )
            if after is not before:
                profiles[event.user_id] = changed[event.user_id] = after
                if record is not None and EVENT_WEIGHTS[event.type] > 0:
                    self.popularity.add(record.item_id, EVENT_WEIGHTS[event.type], ts)
            if event.type is not EventType.impression:
                last_event[event.user_id] = event
        with self._stage("save"):
            self.profiles.save_many(list(changed.values()))
        users = list(last_event)
        recs = self._recommend_many(
            [profiles[u] for u in users], k=self.settings.default_k, filters=[None] * len(users)
        )
        return [
            rec.model_copy(update={
                "rec_id": rec_id_for(f"event:{last_event[u].event_id}"),
                "trigger_event_id": last_event[u].event_id,
            })
            for u, rec in zip(users, recs)
        ]

    # ---- cold start --------------------------------------------------------------------------
    def seed_interests(self, intents: Sequence[Intent]) -> list[Recommendation]:
        """Embed users' own words into their profiles; the text itself is dropped, never stored."""
        if not intents:
            return []
        vectors = self._encode([i.text for i in intents])
        profiles = self.profiles.get_many(i.user_id for i in intents)
        for intent, vector in zip(intents, vectors):
            ts = (intent.ts or utcnow()).timestamp()
            profiles[intent.user_id] = apply_stated_interest(profiles[intent.user_id], vector, ts, self.params)
        users = list(dict.fromkeys(i.user_id for i in intents))
        self.profiles.save_many([profiles[u] for u in users])
        recs = self._recommend_many([profiles[u] for u in users], k=self.settings.default_k, filters=[None] * len(users))
        return [r.model_copy(update={"rec_id": str(uuid.uuid4())}) for r in recs]

    # ---- on demand -----------------------------------------------------------------------------
    def recommend(
        self, user_id: str, *, k: int | None = None, filters: RequestFilters | None = None,
        request_id: str | None = None,
    ) -> Recommendation:
        profile = self.profiles.get(user_id)
        rec = self._recommend_many([profile], k=k or self.settings.default_k, filters=[filters])[0]
        rec_id = rec_id_for(f"request:{request_id}") if request_id else str(uuid.uuid4())
        return rec.model_copy(update={"rec_id": rec_id, "request_id": request_id})

    def profile(self, user_id: str) -> Profile:
        return self.profiles.get(user_id)

    def erase_users(self, erasures: Sequence[Erasure]) -> list[ErasureConfirmed]:
        """Forget users: their profile (vectors, history, aggregates, event ids) leaves the store
        and the cache. Popularity counts are anonymous aggregates and stay."""
        confirmations = []
        for erasure in erasures:
            erased = ["profile"] if self.profiles.delete(erasure.user_id) else []
            confirmations.append(ErasureConfirmed(erasure_id=erasure.erasure_id, user_id=erasure.user_id,
                                                  erased=erased, at=utcnow()))
        self.store.flush()
        return confirmations

    # ---- retrieval and ranking -------------------------------------------------------------------
    def _store_filter(self, profile: Profile, filters: RequestFilters | None) -> Filter:
        equals: dict = {"in_stock": True}
        ranges: dict = {}
        if filters is not None:
            if filters.category:
                equals["category"] = filters.category
            if filters.min_price is not None or filters.max_price is not None:
                ranges["price"] = (filters.min_price, filters.max_price)
        exclude = profile.purchased if self.settings.exclude_purchased else ()
        return Filter(equals=equals, exclude_ids=tuple(exclude), ranges=ranges)

    def _recommend_many(
        self, profiles: Sequence[Profile], *, k: int, filters: Sequence[RequestFilters | None]
    ) -> list[Recommendation]:
        limit = max(self.settings.candidates, k)
        queries = [query_vector(p, self.params) for p in profiles]
        with_vector = [i for i, q in enumerate(queries) if q is not None]
        hits_by_index: dict[int, list[Candidate]] = {}
        if with_vector:
            with self._stage("retrieve"):
                batch = self.store.search_batch(
                    ITEMS,
                    np.stack([queries[i] for i in with_vector]),
                    limit,
                    filters=[self._store_filter(profiles[i], filters[i]) for i in with_vector],
                )
            for i, hits in zip(with_vector, batch):
                records = self.items.get_many(h.id for h in hits)
                hits_by_index[i] = [
                    Candidate(h.id, h.score, records[h.id].vector if h.id in records else None,
                              h.payload.get("title", h.id), h.payload.get("category"))
                    for h in hits
                ]
        now = utcnow()
        out = []
        for i, profile in enumerate(profiles):
            candidates = hits_by_index.get(i)
            if candidates is None:
                candidates = self._popular_candidates(profile, filters[i], limit)
            evidence_records = self.items.get_many(r.item_id for r in profile.recent)
            evidence = Evidence(
                recent=profile.recent,
                vectors={i_: r.vector for i_, r in evidence_records.items()},
                titles={i_: r.title for i_, r in evidence_records.items()},
                stated_interest=profile.stated_interest,
            )
            ranked = rank(
                candidates,
                k=k,
                popularity=self.popularity.values([c.item_id for c in candidates]),
                category_affinity=category_affinity(profile),
                evidence=evidence,
                weights=self.weights,
            )
            out.append(
                Recommendation(
                    rec_id="",
                    user_id=profile.user_id,
                    items=[
                        RecommendedItem(item_id=r.item_id, score=round(r.score, 6), position=n, reason=r.reason)
                        for n, r in enumerate(ranked, start=1)
                    ],
                    model_version=self.model_version,
                    generated_at=now,
                )
            )
        return out

    def _popular_candidates(self, profile: Profile, filters: RequestFilters | None, limit: int) -> list[Candidate]:
        """For a user with no interest vector yet: the most popular items that pass the filters."""
        excluded = set(profile.purchased) if self.settings.exclude_purchased else set()
        store_filter = self._store_filter(profile, filters)
        out = []
        for item_id in self.popularity.top(limit * 4):
            record = self.items.get_many([item_id]).get(item_id)
            if record is None or item_id in excluded or not _passes(record, store_filter):
                continue
            out.append(Candidate(item_id, 0.0, record.vector, record.title, record.category))
            if len(out) >= limit:
                break
        return out


def _passes(record: ItemRecord, f: Filter) -> bool:
    if f.equals.get("in_stock") is True and not record.in_stock:
        return False
    if "category" in f.equals and record.category != f.equals["category"]:
        return False
    lo, hi = f.ranges.get("price", (None, None))
    if (lo is not None or hi is not None) and record.price is None:
        return False
    return (lo is None or record.price >= lo) and (hi is None or record.price <= hi)


def encoder_dir(settings: InferenceSettings) -> Path:
    """The exported encoder to serve: the configured folder, or the shipped model exported once."""
    if settings.encoder_onnx_dir is not None:
        return settings.encoder_onnx_dir
    from inference.export import default_model_dir, ensure_exported  # needs torch: only when exporting

    return ensure_exported(settings.encoder_model_dir or default_model_dir(), settings.data_dir / "models")


def open_store_waiting(settings: InferenceSettings, *, sleep=time.sleep) -> VectorStore:
    """Open the vector store, retrying with back-off for up to `store_wait_s` while it is
    unreachable (server) or locked by another process (embedded), so a restart during a rolling
    update or a store outage delays the worker instead of crash-looping it."""
    deadline = time.monotonic() + settings.store_wait_s
    delay = 0.5
    while True:
        try:
            return open_store(
                url=settings.qdrant_url,
                api_key=settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None,
                data_dir=settings.data_dir,
                timeout_s=settings.qdrant_timeout_s,
            )
        except StoreUnavailable as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("vector store unavailable, retrying in %.1fs: %s", delay, exc)
            sleep(delay)
            delay = min(delay * 2, 15.0)


def open_recommender(settings: InferenceSettings) -> Recommender:
    """Everything the engine needs, from settings: encoder (exported if needed) and vector store."""
    encoder = TextEncoder(
        encoder_dir(settings),
        device=settings.encoder_device,
        batch_size=settings.encoder_batch_size,
        threads=settings.encoder_threads,
    )
    return Recommender(encoder, open_store_waiting(settings), settings)
