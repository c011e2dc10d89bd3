"""The recommendation engine as a library: catalog updates, events, stated interests, requests.

Composes the encoder, the vector store and the pure profile/ranking maths. Everything works on
batches so the worker makes one encoder call and a few store calls per batch, not per event.
No Kafka here: `stream/` feeds it, tests and the CLI call it directly.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from itertools import repeat
from pathlib import Path
from typing import Any, NamedTuple

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
from inference.catalog_matrix import CatalogMatrix
from inference.clustering import InterestCentroid, interest_centroids
from inference.encoder import TextEncoder
from inference.event_encoder import EventEncoder, Window, load_event_encoder, unit_ages
from inference.experiments import VariantSpec, assign_variant
from inference.explanations import Evidence, explain
from inference.exploration import (
    MAX_PERSONAL_TOPICS,
    Arm,
    ExploredSlot,
    add_observation,
    attribute,
    choose_topics,
    explore_count,
    remember_explored,
)
from inference.interest_groups import InterestGroups
from inference.interest_phrases import interest_phrases
from inference.popularity_shares import (
    DEFAULT_SHARE,
    LEGACY_SHARE,
    PopularityShares,
    Snapshot,
    combine,
    combine_all,
    segment_share,
)
from inference.profile_store import USERS, ProfileRepository, pseudonymiser, segment_and_interest
from inference.profiles import (
    EVENT_WEIGHTS,
    Profile,
    ProfileParams,
    apply_event,
    apply_stated_interest,
    category_affinity,
    query_vector,
    rebuild_interests,
    recent_weights,
)
from inference.purchase_probability import PurchaseModel, load_purchase_model
from inference.ranking import Candidate, CandidatePool, Ranked, Weights, best_per_item, rank
from inference.schemas import (
    Erasure,
    ErasureConfirmed,
    Event,
    EventType,
    Intent,
    Item,
    Message,
    Recommendation,
    RecommendedItem,
    RequestFilters,
    SegmentChange,
    utcnow,
)
from inference.segments import RfmCutoffs
from inference.segments import score as rfm_score
from inference.settings import InferenceSettings
from inference.state_blobs import StateBlobs
from inference.store import Filter, IndexParams, Point, ScoredIds, StoreUnavailable, VectorStore, open_store
from inference.topics import Topics

log = logging.getLogger("streamrec.recommender")

_REC_NAMESPACE = uuid.UUID("6f1c3a52-2b7e-4c1e-9d0a-5c2f7e8b9a10")
SEGMENT_POPULAR = 20
"""Items per segment that count as "popular in your segment" for explanations."""


USERS_PAGE = 256  # users read per step when groups are refreshed


class UsersPage(NamedTuple):
    vectors: list[np.ndarray]
    segments: Counter[str]
    next_offset: Any


class UsersRead:
    """The users collection read page by page: interest vectors and users per segment so far."""

    def __init__(self) -> None:
        self.vectors: list[np.ndarray] = []
        self.segments: Counter[str] = Counter()
        self.offset: Any = None

    def add(self, page: UsersPage) -> bool:
        """Take a page; whether there are more to read (from `offset`)."""
        self.vectors += page.vectors
        self.segments.update(page.segments)
        self.offset = page.next_offset
        return page.next_offset is not None


def rec_id_for(trigger: str) -> str:
    """Deterministic id, so a recommendation recomputed after a redelivery is recognisably the same."""
    return str(uuid.uuid5(_REC_NAMESPACE, trigger))


def _rng(rec_id: str) -> np.random.Generator:
    """Exploration draws seeded by the recommendation id: a recomputed answer explores the same way."""
    return np.random.default_rng(int.from_bytes(hashlib.blake2b(rec_id.encode(), digest_size=8).digest(), "big"))


@dataclass(frozen=True)
class Strategy:
    """What a variant changes: exploration rate, ranking weights, interest centroids per user."""

    variant: str
    exploration_rate: float
    weights: Weights
    interest_clusters: int


class ModelSwapError(ValueError):
    """A model update that cannot be served (e.g. another vector dimension)."""


@dataclass
class SwapPlan:
    """What a hot swap to `encoder` must do: the catalog's payloads, the vectors it can reuse from
    the target collection (same text under the same model), and the texts it must embed."""

    encoder: TextEncoder
    path: str | None
    collection: str
    tower: EventEncoder | None
    payloads: dict[str, dict]
    reused: dict[str, np.ndarray]
    to_embed: list[str]
    texts: list[str]


def _collection_for(version: str) -> str:
    """The items collection of a model version: a valid store name, unique per version."""
    digest = hashlib.blake2b(version.encode(), digest_size=4).hexdigest()
    return f"{ITEMS}.{re.sub(r'[^A-Za-z0-9_.-]', '-', version)[:80]}.{digest}"


def _payload_text(payload: dict) -> str:
    return payload.get("text") or item_text(payload.get("title", ""), payload.get("category"))


@dataclass(frozen=True)
class CatalogChange:
    upserted: int
    unchanged: int
    deleted: int


def _ensure_items_collection(store: VectorStore, name: str, dim: int) -> None:
    # Searched on every event: 64-bit point ids spare a uuid.UUID per hit (compact_ids).
    store.ensure_collection(name, dim, keyword_fields=("category",), bool_fields=("in_stock",), float_fields=("price",),
                            compact_ids=True)


class Recommender:
    def __init__(self, encoder: TextEncoder, store: VectorStore, settings: InferenceSettings, *,
                 items_collection: str = ITEMS, tower: EventEncoder | None = None):
        self.encoder, self.store, self.settings = encoder, store, settings
        self.tower = tower  # the event encoder of the served model version, where it has one
        self.on_stage: Callable[[str, float], None] | None = None  # told how long each stage took
        self.dim = encoder.dim
        self.items_collection = items_collection
        _ensure_items_collection(store, items_collection, self.dim)
        key = settings.pseudonymisation_key
        self.profiles = ProfileRepository(
            store, self.dim, capacity=settings.profile_cache_size,
            stored_id=pseudonymiser(key.get_secret_value().encode() if key else None),
        )
        store.ensure_collection(USERS, self.dim)
        self.items = self._item_cache(items_collection)
        self._changed_during_read: set[str] | None = None  # item ids touched while refresh_catalog reads
        # Ranks by every worker's counts: the merge of all shares, plus what this worker counted
        # since (inference/popularity_shares.py). `_counting` are the shares this worker counts
        # into, `_unwritten` those with counts not yet written.
        self.popularity = Popularity(settings.popularity_half_life_days * 86_400)
        self.shares = PopularityShares(store)
        self._counting: dict[str, Popularity] = {}
        self._unwritten: set[str] = set()
        # Counts made while a merge of the shares is computed elsewhere (write_state ->
        # merge_popularity -> install_popularity): (item, weight, time, segment or None).
        self._since_merge: list[tuple[str, float, float, str | None]] | None = None
        self.params = ProfileParams(
            long_term_half_life_s=settings.long_term_half_life_days * 86_400,
            session_half_life_s=settings.session_half_life_minutes * 60,
            session_gap_s=settings.session_gap_minutes * 60,
            session_weight=settings.session_weight,
        )
        self.weights = Weights(settings.weight_similarity, settings.weight_popularity, settings.weight_category)
        self.cutoffs = RfmCutoffs(settings.rfm_recency_days, settings.rfm_frequency, settings.rfm_monetary)
        self.purchase_model: PurchaseModel = load_purchase_model(settings.purchase_model_path)
        self.blobs = StateBlobs(store)
        self.clock = 0.0  # event time: the newest event seen (live: about now; a replay: then)
        self.topics: Topics | None = None
        self.arms: dict[str, Arm] = {}  # global bandit arms per topic
        self.groups: InterestGroups | None = None
        self.segment_counts: dict[str, int] = {}
        self.segment_popularity: dict[str, Popularity] = {}
        self.explored_slots = self.total_slots = 0  # for the exploration-rate metric
        self._changed_during_swap: set[str] | None = None  # item ids touched while a swap encodes
        serving = self.blobs.get("serving")
        if serving is None:  # the first model this store serves: its profiles carry no space tag
            serving = {"first_version": self.model_version, "collections": {self.model_version: items_collection}}
            self.blobs.put("serving", {**serving, "version": self.model_version, "path": None})
        self.first_version = serving["first_version"]
        self._load_catalog()
        self._load_state()

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
        """The text encoder's version: the space of the stored item and profile vectors."""
        return self.encoder.version

    @property
    def served_version(self) -> str:
        """What answers, as recommendations name it: the text encoder, and the event encoder
        beside it where the version has one."""
        return self.model_version if self.tower is None else f"{self.model_version}+{self.tower.version}"

    def _item_cache(self, collection: str) -> ItemCache:
        return ItemCache(self.store, collection, ttl_s=self.settings.item_cache_ttl_s, matrix_dim=self.dim,
                         matrix_max_items=self.settings.exact_retrieval_max_items, tower=self.tower)

    def _load_catalog(self) -> None:
        """Warm the item cache (one scroll at start-up)."""
        self.items.load(self.read_catalog())

    def read_catalog(self, collection: str | None = None) -> Iterator[ItemRecord]:
        """Every item of the collection as stored, a page at a time (any thread: it touches no
        recommender state)."""
        return map(record_from_point, self.store.scroll(collection or self.items_collection, with_vectors=True))

    def begin_catalog_read(self) -> str | None:
        """Step 1 of `refresh_catalog` (recommender thread): note the items changed from now on;
        None where the catalog is too big to be searched in memory (nothing to read then)."""
        limit = self.items.capacity if self.tower is not None else self.settings.exact_retrieval_max_items
        if self.store.count(self.items_collection) > limit:
            return None
        self._changed_during_read = set()
        return self.items_collection

    def install_catalog(self, collection: str, records: Iterable[ItemRecord]) -> int:
        """Step 3 (recommender thread): hold what was read, but for items changed here since."""
        changed, self._changed_during_read = self._changed_during_read, None
        if collection != self.items_collection or changed is None:  # a model swap came between
            return len(self.items)
        self.items.load(records, keep=changed)
        return len(self.items)

    def _retrieve(self, queries: np.ndarray, limit: int, filters: Sequence[Filter]) -> list[ScoredIds]:
        """Ids and scores per query: from the catalog arrays (exact, in memory) while the item
        cache holds the whole catalog and it is small enough, else from the store."""
        matrix = self.items.matrix
        if matrix is not None and self.items.complete and all(map(matrix.answers, filters)):
            return matrix.search(queries, limit, filters=filters)
        return self.store.search_ids(self.items_collection, queries, limit, filters=filters)

    def _load_state(self) -> None:
        """Popularity, topics, bandit arms and per-segment popularity from the state blobs."""
        # Blobs every worker overwrote, before shares: they become shares nobody counts into.
        legacy = self.blobs.get("popularity")
        if legacy is not None:
            self.shares.put(LEGACY_SHARE, legacy)
            self.blobs.delete("popularity")
        legacy_by_segment = self.blobs.get("segment_popularity")
        if legacy_by_segment is not None:
            for segment, counts in legacy_by_segment.items():
                self.shares.put(segment_share(LEGACY_SHARE, segment), counts)
            self.blobs.delete("segment_popularity")
        self.install_popularity(self.merge_popularity(self.shares.all()))
        topics = self.blobs.get(f"topics:{self.model_version}")
        self.topics, self.arms = None, {}
        if topics:
            self.topics = Topics.from_json(topics, self.items.records())
            bandit = self.blobs.get(f"bandit:{self.model_version}") or {}
            self.arms = {t: Arm(*v) for t, v in bandit.get("arms", {}).items()}

    def ensure_topics(self) -> Topics | None:
        """Cluster the catalog into topics once it is big enough (once per encoder version)."""
        if self.topics is not None and self.topics.version == self.model_version:
            return self.topics
        records = list(self.items.records())
        if len(records) < 2 * self.settings.topics:
            return None
        with self._stage("topics"):
            self.topics = Topics.build(records, self.settings.topics, self.model_version)
        self.arms = {}
        self.blobs.put(f"topics:{self.model_version}", self.topics.to_json())
        self._save_arms()
        log.info("catalog clustered into %d topics", len(self.topics.names))
        return self.topics

    def _save_arms(self) -> None:
        self.blobs.put(f"bandit:{self.model_version}",
                       {"arms": {t: [a.shown, a.rewarded] for t, a in self.arms.items()}})

    # ---- model swap ----------------------------------------------------------------------
    def plan_swap(self, encoder: TextEncoder, path: str | None = None, tower: EventEncoder | None = None) -> SwapPlan:
        """Step 1 of a hot swap (recommender thread, quick): the target collection and what the
        new model must embed. Items changed from now on are noted and redone in step 3."""
        if encoder.dim != self.dim:
            raise ModelSwapError(f"model {encoder.version} has dimension {encoder.dim}, the served one {self.dim}: "
                                 "a dimension change needs a new deployment (fresh users collection)")
        serving = self.blobs.get("serving")
        collection = serving["collections"].get(encoder.version) or _collection_for(encoder.version)
        _ensure_items_collection(self.store, collection, self.dim)
        payloads = {p.id: p.payload for p in self.store.scroll(self.items_collection)}
        reused: dict[str, np.ndarray] = {}
        ids = list(payloads)
        for start in range(0, len(ids), 1000):
            for point in self.store.retrieve(collection, ids[start:start + 1000], with_vectors=True):
                if point.payload.get("text_hash") == text_hash(_payload_text(payloads[point.id]), encoder.version):
                    reused[point.id] = point.vector
        to_embed = [i for i in ids if i not in reused]
        self._changed_during_swap = set()
        return SwapPlan(encoder, path, collection, tower, payloads, reused, to_embed,
                        [_payload_text(payloads[i]) for i in to_embed])

    def finish_swap(self, plan: SwapPlan, vectors: np.ndarray) -> dict:
        """Step 3 (recommender thread): redo items changed while step 2 embedded, write the new
        collection, then switch encoder, collection, topics and bandit between two batches."""
        changed, self._changed_during_swap = self._changed_during_swap or set(), None
        current = {p.id: p.payload for p in self.store.retrieve(self.items_collection, list(changed))}
        payloads = {i: p for i, p in plan.payloads.items() if i not in changed or i in current}
        payloads.update(current)
        new_vectors = {**plan.reused, **dict(zip(plan.to_embed, vectors))}
        redo = list(current)
        if redo:
            new_vectors.update(zip(redo, plan.encoder.encode([_payload_text(current[i]) for i in redo])))
        version = plan.encoder.version
        points = [Point(i, np.asarray(new_vectors[i], dtype=np.float32),
                        {**p, "text": _payload_text(p),
                         "text_hash": text_hash(_payload_text(p), version)})
                  for i, p in payloads.items()]
        for start in range(0, len(points), 1000):
            self.store.upsert(plan.collection, points[start:start + 1000])
        gone = [p.id for p in self.store.scroll(plan.collection) if p.id not in payloads]
        if gone:
            self.store.delete(plan.collection, gone)
        previous = self.model_version
        self.encoder, self.items_collection, self.tower = plan.encoder, plan.collection, plan.tower
        self.items = self._item_cache(plan.collection)
        self._load_catalog()
        self._load_state()
        self.profiles.invalidate()
        serving = self.blobs.get("serving")
        collections = {**serving["collections"], version: plan.collection}
        keep = {version, previous, serving["first_version"]}  # the first stays: it is the rollback floor
        for old_version, old_collection in list(collections.items()):
            if old_version not in keep:
                self.store.drop_collection(old_collection)
                del collections[old_version]
        history = [*serving.get("history", []), {"version": version, "path": plan.path, "at": time.time()}][-20:]
        self.blobs.put("serving", {**serving, "version": version, "path": plan.path, "collections": collections,
                                   "history": history})
        self.store.flush()
        log.info("now serving model %s (was %s): %d items, %d embedded, %d reused", version, previous,
                 len(points), len(plan.to_embed) + len(redo), len(plan.reused))
        return {"version": version, "previous": previous, "items": len(points),
                "embedded": len(plan.to_embed) + len(redo), "reused": len(plan.reused)}

    # ---- profiles ------------------------------------------------------------------------
    @property
    def space(self) -> str | None:
        """The tag stored with profile vectors: None for the first model this store served."""
        return None if self.model_version == self.first_version else self.model_version

    def _load_profiles(self, user_ids: Iterable[str]) -> dict[str, Profile]:
        """Profiles by user; those whose vectors belong to another model's space (written before
        a model swap) are refolded from their recent items in this one, and saved so once."""
        profiles = self.profiles.get_many(user_ids)
        stale = [p for p in profiles.values()
                 if p.space != self.space and (p.long_term is not None or p.session is not None)]
        if stale:
            records = self.items.get_many(r.item_id for p in stale for r in p.recent)
            vectors = {i: r.vector for i, r in records.items()}
            rebuilt = [rebuild_interests(p, vectors, self.space, self.params) for p in stale]
            self.profiles.save_many(rebuilt)
            profiles.update({p.user_id: p for p in rebuilt})
        return profiles

    def _save_profiles(self, profiles: Sequence[Profile]) -> None:
        self.profiles.save_many([p if p.space == self.space else replace(p, space=self.space) for p in profiles])

    # ---- catalog -------------------------------------------------------------------------
    def upsert_items(self, items: Sequence[Item]) -> CatalogChange:
        """Embed new or changed item text and upsert; deleted items leave retrieval at once."""
        latest = {i.item_id: i for i in items}  # the last message per item wins
        deleted = [i for i in latest.values() if i.deleted]
        live = [i for i in latest.values() if not i.deleted]
        if deleted:
            self.store.delete(self.items_collection, [i.item_id for i in deleted])
            for i in deleted:
                self.items.forget(i.item_id)
                self.popularity.forget(i.item_id)
                for share, counting in self._counting.items():
                    if counting.forget(i.item_id):
                        self._unwritten.add(share)
                for segment_popularity in self.segment_popularity.values():
                    segment_popularity.forget(i.item_id)
                if self.topics is not None:
                    self.topics.forget(i.item_id)
        texts = {i.item_id: item_text(i.title, i.category, i.description) for i in live}
        digests = {i.item_id: text_hash(texts[i.item_id], self.model_version) for i in live}
        for changing in (self._changed_during_swap, self._changed_during_read):
            if changing is not None:
                changing.update(latest)
        existing = {p.id: p for p in self.store.retrieve(self.items_collection, list(texts), with_vectors=True)}
        to_embed = [i for i in live if existing.get(i.item_id) is None
                    or existing[i.item_id].payload.get("text_hash") != digests[i.item_id]]
        vectors = dict(zip([i.item_id for i in to_embed], self._encode([texts[i.item_id] for i in to_embed])))
        points = []
        for item in live:
            vector = vectors[item.item_id] if item.item_id in vectors else existing[item.item_id].vector
            payload = item_payload(item, digests[item.item_id])
            points.append(Point(item.item_id, np.asarray(vector, dtype=np.float32), payload))
        if points:
            self.store.upsert(self.items_collection, points)
            records = [ItemRecord(p.id, p.vector, p.payload["title"], p.payload["category"], p.payload["price"],
                                  p.payload["in_stock"]) for p in points]
            for record in records:
                self.items.put(record)
            if self.topics is not None:
                self.topics.assign(records)
        return CatalogChange(upserted=len(to_embed), unchanged=len(live) - len(to_embed), deleted=len(deleted))

    def flush_state(self) -> int:
        """Write this worker's popularity shares and flush the store, then rank by every
        worker's shares (inference/popularity_shares.py); returns the items ranked. The worker
        does the same in three steps so that only the writes hold its recommender thread."""
        self.install_popularity(self.merge_popularity(self.write_state()))
        return len(self.popularity.snapshot())

    def write_state(self) -> dict[str, Snapshot]:
        """Write the popularity shares counted into since the last flush, flush the store, and
        return every share to merge (this worker's as counted so far); bandit arms are saved
        with each batch that changes them.

        One point per share, not a payload write per item: the embedded engine keeps every
        overwritten version until it optimises (which it never does here), so writing thousands
        of item payloads every few seconds grew the worker by ~350 bytes per write (measured).

        The store is flushed: the embedded engine truncates its write-ahead log and frees
        overwritten payload blocks only on a flush; without one, every profile write stayed on
        disk and in memory (~6.7 KB per event) and each batch got slower, which is what made the
        30-minute soak fall behind (bench/reports/soak-20261129).
        """
        for share in self._unwritten:
            self.shares.put(share, self._counting[share].snapshot())
        for share in set(self._counting) - self._unwritten:
            del self._counting[share]  # nothing counted since the last flush: its partition may have moved
        self._unwritten = set()
        self.store.flush()
        shares = self.shares.all()
        shares.update((share, pop.snapshot()) for share, pop in self._counting.items())
        self._since_merge = []
        return shares

    def merge_popularity(self, shares: Mapping[str, Snapshot]) -> tuple[Popularity, dict[str, Popularity]]:
        """Item and per-segment popularity from the shares `write_state` returned. Of the
        recommender's state it reads only which tops ranking asks for, so the worker runs it off
        the recommender thread (it is the slow part: a Python pass over every share's items).
        Those tops are ranked here too, so the recommender thread only keeps them up to date."""
        items, segments = combine_all(shares, self.popularity.half_life_s)
        items.keep_tops(self.popularity.tops_kept())
        for segment, popularity in segments.items():
            current = self.segment_popularity.get(segment)
            popularity.keep_tops(current.tops_kept() if current is not None else (SEGMENT_POPULAR,))
        return items, segments

    def install_popularity(self, merged: tuple[Popularity, dict[str, Popularity]]) -> None:
        """Rank by a merge from `merge_popularity`, with what was counted since its shares were read."""
        items, segments = merged
        for item_id, weight, ts, segment in self._since_merge or ():
            (items if segment is None else segments.setdefault(segment, Popularity(items.half_life_s))).add(
                item_id, weight, ts)
        self.popularity, self.segment_popularity = items, segments
        self._since_merge = None

    def _count(self, share: str, item_id: str, weight: float, ts: float, segment: str | None = None) -> None:
        """Count into `share` (written at the next flush) and into what ranking reads: item
        popularity, or `segment`'s purchases."""
        counting = self._counting.get(share)
        if counting is None:  # first event of this partition since the last flush: go on from its share
            counting = self._counting[share] = combine([self.shares.get(share)], self.popularity.half_life_s)
        counting.add(item_id, weight, ts)
        self._unwritten.add(share)
        (self.popularity if segment is None else self._segment_popularity(segment)).add(item_id, weight, ts)
        if self._since_merge is not None:
            self._since_merge.append((item_id, weight, ts, segment))

    # ---- events ----------------------------------------------------------------------------
    def process_events(self, events: Sequence[Event], shares: Sequence[str] | None = None) -> list[Message]:
        """Fold a batch of events into profiles, learn from feedback on explored items, re-segment,
        persist, and answer each user's last event.

        `shares` names, per event, the popularity share it is counted into: its partition, which
        no other worker consumes meanwhile (default: one share, `DEFAULT_SHARE`).

        Returns the recommendations (one per user per batch: it reflects all of that user's events
        in it) and the users' segment changes. A redelivered event (same event_id) changes no
        state but is answered again.
        """
        if not events:
            return []
        with self._stage("load"):
            profiles = self._load_profiles(e.user_id for e in events)
            records = self.items.get_many(e.item_id for e in events if e.item_id)
        before = dict(profiles)
        queries = [e for e in events if e.type is EventType.search and e.query]
        query_vectors = dict(zip((e.event_id for e in queries), self._encode([e.query for e in queries])))
        with self._stage("fold"):
            changed, last_event, arms_changed = self._fold(events, shares, profiles, records, query_vectors)
            segment_changes = []
            for user_id, profile in changed.items():
                profile, change = self._resegment(profile, before[user_id].segment)
                if change is not None:
                    profiles[user_id] = changed[user_id] = profile
                    segment_changes.append(change)
        users = list(last_event)
        answered = self._recommend_many(
            [profiles[u] for u in users], k=self.settings.default_k, filters=[None] * len(users),
            rec_ids=[rec_id_for(f"event:{last_event[u].event_id}") for u in users],
        )
        recs = []
        for user_id, (rec, explored) in zip(users, answered):
            if explored:
                profiles[user_id] = changed[user_id] = self._with_explored(profiles[user_id], explored)
            recs.append(rec.model_copy(update={"trigger_event_id": last_event[user_id].event_id}))
        with self._stage("save"):
            self._save_profiles(list(changed.values()))
            if arms_changed:
                self._save_arms()
        return [*recs, *segment_changes]

    def _fold(self, events: Sequence[Event], shares: Sequence[str] | None, profiles: dict[str, Profile],
              records: dict, query_vectors: dict[str, np.ndarray]) -> tuple[dict[str, Profile], dict[str, Event], bool]:
        """Apply each event to its user's profile (in `profiles`), count popularity, and learn from
        feedback on explored items. Returns the changed profiles, each user's last answerable
        event, and whether the bandit's arms changed."""
        changed: dict[str, Profile] = {}
        last_event: dict[str, Event] = {}
        arms_changed = False
        for event, share in zip(events, shares or repeat(DEFAULT_SHARE), strict=shares is not None):
            profile = profiles[event.user_id]
            record = records.get(event.item_id) if event.item_id else None
            vector = record.vector if record is not None else query_vectors.get(event.event_id)
            ts = event.ts.timestamp()
            after = apply_event(
                profile,
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
            if after is not profile:
                self.clock = max(self.clock, ts)
                exploring, feedback = attribute(after.exploring, rec_id=event.rec_id, item_id=event.item_id,
                                                type=event.type)
                if feedback is not None:
                    self.arms = add_observation(self.arms, feedback.topic, feedback.shown, feedback.rewarded)
                    personal = add_observation(after.topics, feedback.topic, feedback.shown, feedback.rewarded,
                                               limit=MAX_PERSONAL_TOPICS)
                    after = replace(after, exploring=exploring, topics=personal)
                    arms_changed = True
                profiles[event.user_id] = changed[event.user_id] = after
                if record is not None and EVENT_WEIGHTS[event.type] > 0:
                    self._count(share, record.item_id, EVENT_WEIGHTS[event.type], ts)
                if record is not None and event.type is EventType.purchase and after.segment is not None:
                    self._count(segment_share(share, after.segment), record.item_id, 1.0, ts, after.segment)
            if event.type is not EventType.impression:
                last_event[event.user_id] = event
        return changed, last_event, arms_changed

    def _segment_popularity(self, segment: str) -> Popularity:
        if segment not in self.segment_popularity:
            self.segment_popularity[segment] = Popularity(self.popularity.half_life_s)
        return self.segment_popularity[segment]

    def _resegment(self, profile: Profile, previous: str | None) -> tuple[Profile, SegmentChange | None]:
        """The user's value segment at the event-time clock; a change when it differs from the
        segment they had before this batch (a flip and back within one batch is no change)."""
        now = max(self.clock, profile.rfm.last_purchase_ts or 0.0)
        scored = rfm_score(profile.rfm, now, self.cutoffs)
        profile = replace(profile, segment=scored.segment)
        if scored.segment == previous:
            return profile, None
        if previous is not None and self.segment_counts.get(previous, 0) > 0:
            self.segment_counts[previous] -= 1
        self.segment_counts[scored.segment] = self.segment_counts.get(scored.segment, 0) + 1
        group = self._group(profile)
        return profile, SegmentChange(
            user_id=profile.user_id, segment=scored.segment, previous=previous, recency_days=scored.recency_days,
            frequency=profile.rfm.purchases, monetary=round(profile.rfm.monetary, 2), r=scored.r, f=scored.f,
            m=scored.m, purchase_probability=round(self.purchase_model.predict(profile.rfm, now), 4),
            horizon_days=int(self.purchase_model.horizon_days), interest_group=group[0] if group is not None else None,
            at=datetime.fromtimestamp(now, timezone.utc),
        )

    @staticmethod
    def _with_explored(profile: Profile, explored: Sequence[ExploredSlot]) -> Profile:
        return replace(profile, exploring=remember_explored(profile.exploring, explored))

    # ---- cold start --------------------------------------------------------------------------
    def seed_interests(self, intents: Sequence[Intent]) -> list[Recommendation]:
        """Embed users' own words into their profiles; the text itself is dropped, never stored."""
        if not intents:
            return []
        listed = [interest_phrases(i.text)[:self.settings.intent_phrases] for i in intents]
        listed = [phrases if len(phrases) > 1 else [] for phrases in listed]  # one phrase: the text itself
        vectors = self._encode([i.text for i in intents] + [p for phrases in listed for p in phrases])
        phrase_vectors = iter(vectors[len(intents):])
        profiles = self._load_profiles(i.user_id for i in intents)
        for intent, vector, phrases in zip(intents, vectors, listed):
            ts = (intent.ts or utcnow()).timestamp()
            profiles[intent.user_id] = apply_stated_interest(profiles[intent.user_id], vector, ts, self.params,
                                                             phrases=[next(phrase_vectors) for _ in phrases])
        users = list(dict.fromkeys(i.user_id for i in intents))
        answered = self._recommend_many([profiles[u] for u in users], k=self.settings.default_k,
                                        filters=[None] * len(users), rec_ids=[str(uuid.uuid4()) for _ in users])
        for user_id, (_, explored) in zip(users, answered):
            profiles[user_id] = self._with_explored(profiles[user_id], explored)
        self._save_profiles([profiles[u] for u in users])
        return [rec for rec, _ in answered]

    # ---- on demand -----------------------------------------------------------------------------
    def recommend(
        self, user_id: str, *, k: int | None = None, filters: RequestFilters | None = None,
        request_id: str | None = None,
    ) -> Recommendation:
        profile = self._load_profiles([user_id])[user_id]
        rec_id = rec_id_for(f"request:{request_id}") if request_id else str(uuid.uuid4())
        rec, explored = self._recommend_many([profile], k=k or self.settings.default_k, filters=[filters],
                                             rec_ids=[rec_id])[0]
        if explored:  # feedback on what was explored must find it
            self._save_profiles([self._with_explored(profile, explored)])
        return rec.model_copy(update={"request_id": request_id})

    def profile(self, user_id: str) -> Profile:
        return self._load_profiles([user_id])[user_id]

    def erase_users(self, erasures: Sequence[Erasure]) -> list[ErasureConfirmed]:
        """Forget users: their profile (vectors, history, aggregates, event ids, segment, bandit
        arms, pending explored items) leaves the store and the cache. What stays is anonymous:
        item popularity, global topic arms, per-segment popularity, group centroids."""
        confirmations = []
        for erasure in erasures:
            erased = ["profile", "vectors", "segment", "bandit"] if self.profiles.delete(erasure.user_id) else []
            confirmations.append(ErasureConfirmed(erasure_id=erasure.erasure_id, user_id=erasure.user_id,
                                                  erased=erased, at=utcnow()))
        self.store.flush()
        return confirmations

    # ---- interest groups and segments -------------------------------------------------------------
    def refresh_groups(self) -> dict:
        """Recompute the global interest groups from the stored user vectors and count users per
        value segment. The worker does the same in steps (`users_page` between event batches,
        `fit_groups` off the recommender thread, then `install_groups`), so that a large users
        collection never holds up events."""
        read = UsersRead()
        while read.add(self.users_page(read.offset)):
            pass
        return self.install_groups(read.segments, self.fit_groups(read.vectors, self.item_records()))

    def users_page(self, offset: Any = None) -> UsersPage:
        """One page of the users collection: interest vectors and users per value segment."""
        points, next_offset = self.store.scroll_page(USERS, offset, batch=USERS_PAGE, with_vectors=True)
        vectors, segments = [], Counter()
        for point in points:
            segment, has_interest = segment_and_interest(point)
            segments[segment or "prospect"] += 1
            if has_interest:
                vectors.append(point.vector)
        return UsersPage(vectors, segments, next_offset)

    def item_records(self) -> list[ItemRecord]:
        return list(self.items.records())

    def fit_groups(self, vectors: Sequence[np.ndarray], items: Sequence[ItemRecord]) -> InterestGroups | None:
        """k-means over user vectors (reads no recommender state: the worker runs it on another thread)."""
        return InterestGroups.fit(np.asarray(vectors, dtype=np.float32), items, self.settings.interest_groups,
                                  time.time())

    def install_groups(self, counts: Mapping[str, int], fitted: InterestGroups | None) -> dict:
        self.segment_counts = dict(counts)
        if fitted is not None:
            self.groups = fitted
        return self.status()

    def describe_user(self, user_id: str) -> dict:
        """What the engine holds about a user, in words: segment, purchase probability, interest
        group, the interests retrieval asks for, and their A/B variant (for operators and the demo)."""
        profile = self._load_profiles([user_id])[user_id]
        now = max(self.clock, profile.rfm.last_purchase_ts or 0.0)
        scored = rfm_score(profile.rfm, now, self.cutoffs)
        group = self._group(profile)
        interests = self._interests(profile, self.settings.interest_clusters)
        records = self.items.get_many(c.medoid_item for c in interests)
        return {
            "user_id": user_id,
            "events": profile.events,
            "segment": scored.segment,
            "rfm": {"recency_days": scored.recency_days, "frequency": profile.rfm.purchases,
                    "monetary": round(profile.rfm.monetary, 2), "r": scored.r, "f": scored.f, "m": scored.m},
            "purchase_probability": round(self.purchase_model.predict(profile.rfm, now), 4) if profile.events else None,
            "horizon_days": self.purchase_model.horizon_days,
            "interest_group": group[0] if group is not None else None,
            "interests": [{"item_id": c.medoid_item, "title": records[c.medoid_item].title,
                           "weight": round(c.weight, 3)} for c in interests],
            "stated_interests_retrieved": len(profile.stated_phrases),  # phrases of their words (never the text)
            "variant": self.strategy(user_id).variant,
            "exploring": [{"item_id": e.item_id, "topic": self.topics.name(e.topic) if self.topics else e.topic,
                           "impressed": e.impressed, "rewarded": e.rewarded} for e in profile.exploring],
        }

    def status(self) -> dict:
        return {
            "segments": dict(sorted(self.segment_counts.items(), key=lambda kv: -kv[1])),
            "interest_groups": self.groups.summary() if self.groups is not None else [],
            "topics": len(self.topics.names) if self.topics is not None else 0,
            "explored_share": self.explored_slots / self.total_slots if self.total_slots else 0.0,
            "bandit": {
                t: {"name": self.topics.name(t), "shown": a.shown, "rewarded": a.rewarded}
                for t, a in sorted(self.arms.items()) if self.topics is not None
            },
        }

    # ---- retrieval and ranking -------------------------------------------------------------------
    def strategy(self, user_id: str) -> Strategy:
        """The user's A/B variant and the settings it overrides."""
        variant = assign_variant(user_id, self.settings.ab_variants, self.settings.ab_salt)
        spec = self.settings.ab_variants.get(variant) or VariantSpec(weight=1.0)
        s = self.settings
        return Strategy(
            variant=variant,
            exploration_rate=s.exploration_rate if spec.exploration_rate is None else spec.exploration_rate,
            weights=Weights(
                s.weight_similarity if spec.weight_similarity is None else spec.weight_similarity,
                s.weight_popularity if spec.weight_popularity is None else spec.weight_popularity,
                s.weight_category if spec.weight_category is None else spec.weight_category,
            ),
            interest_clusters=s.interest_clusters if spec.interest_clusters is None else spec.interest_clusters,
        )

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

    def _interests(self, profile: Profile, clusters: int) -> list[InterestCentroid]:
        """The user's distinct recent interests (PinnerSage-style medoids), heaviest first."""
        records = self.items.get_many(r.item_id for r in profile.latest)
        recent = [(r, w) for r, w in zip(profile.latest, recent_weights(profile, self._now(profile), self.params))
                  if r.item_id in records]
        if not recent:
            return []
        return interest_centroids([r.item_id for r, _ in recent], np.stack([records[r.item_id].vector for r, _ in recent]),
                                  [w for _, w in recent], max_clusters=clusters)

    def _now(self, profile: Profile) -> float:
        """Event time for a user: the engine's clock, or the user's latest event if that is later."""
        return max(self.clock, profile.recent[-1].ts if profile.recent else 0.0, profile.rfm.last_purchase_ts or 0.0)

    def _group(self, profile: Profile) -> tuple[str, np.ndarray] | None:
        """The user's interest group (name, centroid), once groups exist and the user has an interest."""
        direction = profile.long_term.direction() if profile.long_term is not None else None
        return self.groups.group_of(direction) if self.groups is not None and direction is not None else None

    def _queries(self, profile: Profile, clusters: int) -> list[np.ndarray]:
        """The vectors to retrieve with: the blended interest, then each interest the user listed
        in their own words (while they have little behaviour), then the medoid of each of the
        user's distinct recent interests, so one strong interest cannot crowd out the others."""
        main = query_vector(profile, self.params)
        if main is None:
            return []
        queries = [main, *profile.stated_phrases]
        if clusters <= 1 or len(profile.recent) < 2:
            return queries
        centroids = self._interests(profile, clusters)
        return queries + [c.vector for c in centroids] if len(centroids) > 1 else queries

    def _recommend_many(
        self, profiles: Sequence[Profile], *, k: int, filters: Sequence[RequestFilters | None],
        rec_ids: Sequence[str],
    ) -> list[tuple[Recommendation, list[ExploredSlot]]]:
        limit = max(self.settings.candidates, k)
        strategies = [self.strategy(p.user_id) for p in profiles]
        store_filters = [self._store_filter(p, f) for p, f in zip(profiles, filters)]
        tower_found = self._tower_retrieve(profiles, store_filters, limit)
        with self._stage("queries"):
            # A user the event encoder answered needs only the blended interest (exploration reads it).
            queries = [self._queries(p, 1 if i in tower_found else s.interest_clusters)
                       for i, (p, s) in enumerate(zip(profiles, strategies))]
        flat = [(i, q) for i, qs in enumerate(queries) if i not in tower_found for q in qs]
        found_per_query: list = []
        if flat:
            with self._stage("retrieve"):
                # Ids and scores only: title, category and price come from the item cache.
                found_per_query = self._retrieve(np.stack([q for _, q in flat]), limit,
                                                 [store_filters[i] for i, _ in flat])
        topics = self.ensure_topics() if any(s.exploration_rate > 0 for s in strategies) else self.topics
        with self._stage("rank"):
            owners = [i for i, _ in flat] + list(tower_found)
            hits_by_index = self._candidate_pools(owners, [*found_per_query, *tower_found.values()])
            now = utcnow()
            out = []
            segment_popular: dict[str, frozenset[str]] = {}
            for i, profile in enumerate(profiles):
                strategy, rec_id = strategies[i], rec_ids[i]
                candidates = hits_by_index[i] if i in hits_by_index else \
                    CandidatePool.of(self._popular_candidates(profile, filters[i], limit))
                weights = strategy.weights
                boost = self.settings.segment_price_boost.get(profile.segment or "", 0.0)
                if boost:
                    weights = replace(weights, price=boost)
                ranked = rank(
                    candidates,
                    k=k,
                    popularity=self.popularity.values(candidates.item_ids),
                    category_affinity=category_affinity(profile),
                    weights=weights,
                )
                slots, explored = self._explore(profile, ranked, k, strategy, topics, filters[i], queries[i], rec_id)
                self.total_slots += len(slots)
                self.explored_slots += len(explored)
                evidence = self._evidence(profile, segment_popular)
                items = []
                for n, (entry, topic) in enumerate(slots, start=1):
                    c = entry.candidate
                    reason = explain(c.item_id, c.title, c.vector, evidence, entry.popularity,
                                     explored_topic=topics.name(topic) if topic is not None and topics else None)
                    items.append(RecommendedItem(item_id=c.item_id, score=round(entry.score, 6), position=n,
                                                 reason=reason, explore=topic is not None))
                out.append((
                    Recommendation(rec_id=rec_id, user_id=profile.user_id, items=items, model_version=self.served_version,
                                   variant=strategy.variant, generated_at=now),
                    explored,
                ))
        return out

    def _tower_retrieve(self, profiles: Sequence[Profile], store_filters: Sequence[Filter],
                        limit: int) -> dict[int, ScoredIds]:
        """Candidates from the event encoder, by profile index, for the users it can read: a fresh
        user vector from each one's recent items (one ONNX call for the batch), then the best
        items by dot product with it among those the filter passes, scores divided by the
        tower's scale (so they sit where the ranker's cosines do). Users with no recent item it
        can place keep the text queries; so does everyone while the item cache does not hold
        the whole catalog, or where a filter names a field the in-memory copy lacks."""
        tower, matrix = self.tower, self.items.tower_matrix
        if tower is None or matrix is None or not self.items.complete:
            return {}
        readable = [i for i, p in enumerate(profiles) if p.recent and matrix.answers(store_filters[i])]
        if not readable:
            return {}
        with self._stage("user_tower"):
            owners, windows = [], []
            for i in readable:
                window = tower_window(profiles[i], matrix)
                if window is not None:
                    owners.append(i)
                    windows.append(window)
            if not windows:
                return {}
            users = tower.user_vectors(windows)
        with self._stage("retrieve"):
            found = matrix.search(users, limit, filters=[store_filters[i] for i in owners])
        scale = tower.score_scale
        return {i: ScoredIds(ids, [score / scale for score in scores]) for i, (ids, scores) in zip(owners, found)}

    def _candidate_pools(self, owners: Sequence[int], found_per_query: Sequence) -> dict[int, CandidatePool]:
        """Each user's candidates from the results of their queries (`owners[j]` is the user of
        query j): an item found by several queries keeps its best similarity; candidates stay
        columns (CandidatePool) until ranking reads the few that can reach the top k."""
        per_user: dict[int, list] = {}
        for i, found in zip(owners, found_per_query):
            per_user.setdefault(i, []).append(found)
        merged = {i: best_per_item(results) for i, results in per_user.items()}
        wanted = {item_id for ids, _ in merged.values() for item_id in ids}
        records = self.items.get_many(wanted)
        pools = {}
        for i, (ids, similarities) in merged.items():
            found = list(map(records.get, ids))
            if len(records) < len(wanted):  # some were deleted since the search
                kept = [j for j, r in enumerate(found) if r is not None]
                ids, similarities, found = [ids[j] for j in kept], [similarities[j] for j in kept], \
                    [found[j] for j in kept]
            pools[i] = CandidatePool(ids, similarities, found)
        return pools

    def _evidence(self, profile: Profile, segment_popular: dict[str, frozenset[str]]) -> Evidence:
        records = self.items.get_many(r.item_id for r in profile.latest)
        group_name, group_centroid = self._group(profile) or (None, None)
        segment = profile.segment or ""
        if segment not in segment_popular:  # one top-N per segment per batch, not per user
            popular = self.segment_popularity.get(segment)
            segment_popular[segment] = frozenset(popular.top(SEGMENT_POPULAR)) if popular is not None else frozenset()
        return Evidence(
            recent=profile.latest,
            vectors={i: r.vector for i, r in records.items()},
            titles={i: r.title for i, r in records.items()},
            stated_interest=profile.stated_interest,
            group_name=group_name,
            group_centroid=group_centroid,
            segment=profile.segment,
            segment_popular=segment_popular[segment],
        )

    def _explore(
        self, profile: Profile, ranked: list[Ranked], k: int, strategy: Strategy, topics: Topics | None,
        filters: RequestFilters | None, queries: list[np.ndarray], rec_id: str,
    ) -> tuple[list[tuple[Ranked, str | None]], list[ExploredSlot]]:
        """Give some of the k slots to topics new to the user, chosen by Thompson sampling; each
        explored slot holds the topic's item closest to the user's interest (or its most popular
        item for a user with none yet) that passes the same filters."""
        plain: list[tuple[Ranked, str | None]] = [(r, None) for r in ranked]
        if topics is None or strategy.exploration_rate <= 0 or not ranked:
            return plain, []
        rng = _rng(rec_id)
        n = explore_count(min(k, len(ranked)), strategy.exploration_rate, rng)
        if n == 0:
            return plain, []
        known = {topics.of(r.item_id) for r in profile.latest} | {topics.of(r.item_id) for r in ranked}
        candidates = [t for t in topics.ids if t not in known]
        chosen = choose_topics(candidates, self.arms, profile.topics, n, rng,
                               prior_strength=self.settings.exploration_prior_strength)
        store_filter = self._store_filter(profile, filters)
        taken = {r.item_id for r in ranked} | set(store_filter.exclude_ids)
        picks: list[tuple[Ranked, str]] = []
        for topic in chosen:
            ids, matrix = topics.members(topic)
            if not ids:
                continue
            if queries:
                order = np.argsort(-(matrix @ queries[0]))
            else:
                order = np.argsort(-self.popularity.values(ids), kind="stable")
            for j in order[:200]:
                item_id = ids[j]
                if item_id in taken:
                    continue
                record = self.items.get_many([item_id]).get(item_id)
                if record is None or not _passes(record, store_filter):
                    continue
                sim = float(record.vector @ queries[0]) if queries else 0.0
                picks.append((Ranked(Candidate(item_id, sim, record.vector, record.title, record.category,
                                               record.price), sim, 0.0), topic))
                taken.add(item_id)
                break
        if not picks:
            return plain, []
        positions = set(rng.choice(len(ranked), size=len(picks), replace=False).tolist())
        exploit = iter(plain)
        explore = iter(picks)
        slots = [next(explore) if n in positions else next(exploit) for n in range(len(ranked))]
        return slots, [ExploredSlot(rec_id, r.item_id, topic) for r, topic in picks]

    def _popular_candidates(self, profile: Profile, filters: RequestFilters | None, limit: int) -> list[Candidate]:
        """For a user with no interest vector yet: the most popular items that pass the filters."""
        excluded = set(profile.purchased) if self.settings.exclude_purchased else set()
        store_filter = self._store_filter(profile, filters)
        out = []
        for item_id in self.popularity.top(limit * 4):
            record = self.items.get_many([item_id]).get(item_id)
            if record is None or item_id in excluded or not _passes(record, store_filter):
                continue
            out.append(Candidate(item_id, 0.0, record.vector, record.title, record.category, record.price))
            if len(out) >= limit:
                break
        return out


def tower_window(profile: Profile, tower_vectors: CatalogMatrix) -> Window | None:
    """The event encoder's view of a user's recent items: those whose events speak of interest
    (not impressions, not removals) and that the catalog's tower vectors still hold (the item
    cache mirrors each item's, `ItemCache.tower_matrix`), in order, a unit per timestamp (a
    basket's lines share theirs), behind the count of all the user's units. None where none
    is left."""
    vectors, keys = [], []
    for r in profile.recent:
        if EVENT_WEIGHTS[r.type] <= 0:
            continue
        vector = tower_vectors.vector(r.item_id)
        if vector is not None:
            vectors.append(vector)
            keys.append(r.ts)
    if not vectors:
        return None
    ages, units = unit_ages(keys)
    return Window(np.stack(vectors), ages, max(units, profile.units))


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
    """The exported encoder to serve: the configured folder, or the shipped model exported once;
    at `encoder_precision` int8, its int8 copy (quantized once)."""
    from inference.quantize import ensure_precision

    onnx_dir = settings.encoder_onnx_dir
    if onnx_dir is None:
        from inference.export import default_model_dir, ensure_exported  # needs torch: only when exporting

        onnx_dir = ensure_exported(settings.encoder_model_dir or default_model_dir(), settings.data_dir / "models")
    return ensure_precision(onnx_dir, settings.encoder_precision, settings.data_dir / "models")


def store_from(settings: InferenceSettings) -> VectorStore:
    """The vector store the settings name (raises StoreUnavailable at once: see open_store_waiting)."""
    return open_store(
        url=settings.qdrant_url,
        api_key=settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None,
        data_dir=settings.data_dir,
        timeout_s=settings.qdrant_timeout_s,
        index=IndexParams(hnsw_ef=settings.qdrant_hnsw_ef, quantization=settings.qdrant_quantization,
                          oversampling=settings.qdrant_oversampling,
                          acorn_max_selectivity=settings.qdrant_acorn_max_selectivity),
    )


def open_store_waiting(settings: InferenceSettings, *, sleep=time.sleep) -> VectorStore:
    """Open the vector store, retrying with back-off for up to `store_wait_s` while it is
    unreachable (server) or locked by another process (embedded), so a restart during a rolling
    update or a store outage delays the worker instead of crash-looping it."""
    deadline = time.monotonic() + settings.store_wait_s
    delay = 0.5
    while True:
        try:
            return store_from(settings)
        except StoreUnavailable as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("vector store unavailable, retrying in %.1fs: %s", delay, exc)
            sleep(delay)
            delay = min(delay * 2, 15.0)


def open_encoder(settings: InferenceSettings, onnx_dir: Path) -> TextEncoder:
    return TextEncoder(onnx_dir, device=settings.encoder_device, batch_size=settings.encoder_batch_size,
                       threads=settings.encoder_threads)


def open_event_encoder(settings: InferenceSettings, onnx_dir: Path) -> EventEncoder | None:
    """The event encoder in the served model's folder, unless `event_encoder` is off."""
    return load_event_encoder(onnx_dir) if settings.event_encoder else None


def open_recommender(settings: InferenceSettings) -> Recommender:
    """Everything the engine needs, from settings: vector store and encoder (exported if needed).
    A store that was switched to another model by a rollout keeps serving that model after a
    restart (its folder is recorded in the store's `serving` state)."""
    store = open_store_waiting(settings)
    serving = StateBlobs(store).get("serving") or {}
    rolled_out = serving.get("path")
    onnx_dir = Path(rolled_out) if rolled_out and Path(rolled_out).is_dir() else encoder_dir(settings)
    encoder = open_encoder(settings, onnx_dir)
    collection = serving.get("collections", {}).get(encoder.version, ITEMS)
    return Recommender(encoder, store, settings, items_collection=collection, tower=open_event_encoder(settings, onnx_dir))
