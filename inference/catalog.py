"""The item catalog as the worker sees it: item text, a cache of item vectors, fresh popularity."""

from __future__ import annotations

import hashlib
import heapq
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter

import numpy as np

from inference.catalog_matrix import CatalogMatrix
from inference.event_encoder import EventEncoder
from inference.profiles import decay
from inference.schemas import Item
from inference.store import Point, VectorStore

ITEMS = "items"


def item_text(title: str, category: str | None = None, description: str | None = None) -> str:
    """The text the encoder embeds for an item: title first (it carries most signal), then the rest."""
    parts = [title.strip()]
    if category:
        parts.append(category.strip())
    if description:
        parts.append(description.strip())
    return ". ".join(p for p in parts if p)


def text_hash(text: str, model_version: str) -> str:
    """Identifies an embedding: unchanged text under the same model needs no re-embedding."""
    return hashlib.blake2b(f"{model_version}\n{text}".encode(), digest_size=12).hexdigest()


@dataclass(frozen=True)
class ItemRecord:
    item_id: str
    vector: np.ndarray
    title: str
    category: str | None
    price: float | None
    in_stock: bool


def item_payload(item: Item, digest: str) -> dict:
    """The stored payload; `text` is what was embedded, so a model swap can re-embed it exactly."""
    return {
        "title": item.title,
        "text": item_text(item.title, item.category, item.description),
        "category": item.category,
        "price": item.price,
        "in_stock": item.in_stock,
        "text_hash": digest,
    }


def record_from_point(point: Point) -> ItemRecord:
    p = point.payload
    return ItemRecord(
        item_id=point.id,
        vector=np.asarray(point.vector, dtype=np.float32),
        title=p.get("title", point.id),
        category=p.get("category"),
        price=p.get("price"),
        in_stock=bool(p.get("in_stock", True)),
    )


class ItemCache:
    """LRU cache of item records in front of the vector store; one store call per batch of misses.

    A record is trusted for ``ttl_s`` after it was read or written here, then read again from the
    store: with several workers, each consumes only its share of the catalog topic, and this
    bounds how long another worker's change (price, stock, deletion) goes unseen here. An item
    the store no longer has is forgotten when it is next asked for. Expired records stay listed
    by :meth:`records` (the catalog as last seen, for clustering) until then.

    With `matrix_dim`, every record held is mirrored into `matrix` (CatalogMatrix: exact search
    in memory) while the cache holds at most `matrix_max_items`; past that the mirror is dropped,
    and a full read (`load`) of a catalog that fits builds it again. `complete` says the cache
    holds the whole collection as of its last full read, which is what makes searching the
    mirror equivalent to searching the store.

    With `tower` (the model's event encoder), every record held is also mirrored as its tower
    vector into `tower_matrix` (dot-product scores), whatever the catalog's size: 64-d vectors
    are cheap to hold and to score; it answers exactly while `complete`."""

    def __init__(self, store: VectorStore, collection: str = ITEMS, capacity: int = 200_000, *,
                 ttl_s: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 matrix_dim: int | None = None, matrix_max_items: int = 0, tower: EventEncoder | None = None):
        self._store, self._collection, self._capacity = store, collection, capacity
        self._ttl_s, self._clock = ttl_s, clock
        self._records: OrderedDict[str, ItemRecord] = OrderedDict()
        self._fresh_until: OrderedDict[str, float] = OrderedDict()  # in put order, so expiry is from the front
        self._expired: set[str] = set()
        self._matrix_dim, self._matrix_max = matrix_dim, matrix_max_items if matrix_dim else 0
        self.matrix: CatalogMatrix | None = CatalogMatrix(matrix_dim) if self._matrix_max > 0 else None
        self.complete = False
        self._tower = tower
        self.tower_matrix = CatalogMatrix(tower.dim, normalize=False) if tower is not None else None

    def load(self, records: Iterable[ItemRecord], *, keep: Iterable[str] = ()) -> None:
        """Hold exactly `records`, a full read of the collection (read as it streams: a catalog
        may be far bigger than the cache), except the items in `keep` (changed here since the
        read began), whose records here are newer than the read's."""
        keep, read = set(keep), set()
        for record in records:
            read.add(record.item_id)
            if record.item_id not in keep:
                self.put(record)
        for item_id in [i for i in self._records if i not in read and i not in keep]:
            self.forget(item_id)
        self.complete = len(read | keep) <= self._capacity
        if self.matrix is None and 0 < len(self._records) <= self._matrix_max:
            self.matrix = CatalogMatrix(self._matrix_dim, capacity=len(self._records))
            for record in self._records.values():
                self._mirror(record)

    def _mirror(self, record: ItemRecord) -> None:
        self.matrix.put(record.item_id, record.vector, in_stock=record.in_stock, category=record.category,
                        price=record.price)

    def _mirror_tower(self, record: ItemRecord) -> None:
        vector = self._tower.item_vector(record.item_id, record.vector, record.title)
        if vector is None:  # a tower without text cannot place an item it never saw
            self.tower_matrix.forget(record.item_id)
            return
        self.tower_matrix.put(record.item_id, vector, in_stock=record.in_stock, category=record.category,
                              price=record.price)

    def put(self, record: ItemRecord) -> None:
        item_id = record.item_id
        self._records[item_id] = record
        self._records.move_to_end(item_id)
        self._fresh_until[item_id] = self._clock() + self._ttl_s
        self._fresh_until.move_to_end(item_id)
        self._expired.discard(item_id)
        if self.tower_matrix is not None:
            self._mirror_tower(record)
        while len(self._records) > self._capacity:
            self.forget(next(iter(self._records)))
            self.complete = False
        if self.matrix is not None:
            if len(self._records) > self._matrix_max:
                self.matrix = None  # too big to search in memory: the store searches it, without a copy here
            else:
                self._mirror(record)

    def forget(self, item_id: str) -> None:
        self._records.pop(item_id, None)
        if self.matrix is not None:
            self.matrix.forget(item_id)
        if self.tower_matrix is not None:
            self.tower_matrix.forget(item_id)
        self._fresh_until.pop(item_id, None)
        self._expired.discard(item_id)

    def _expire(self) -> None:
        now, fresh = self._clock(), self._fresh_until
        while fresh:
            item_id, until = next(iter(fresh.items()))
            if until > now:
                return
            del fresh[item_id]
            self._expired.add(item_id)

    def get_many(self, item_ids: Iterable[str]) -> dict[str, ItemRecord]:
        self._expire()
        wanted = dict.fromkeys(item_ids)
        cached, expired = self._records.get, self._expired
        found = {i: r for i in wanted if (r := cached(i)) is not None and i not in expired}
        missing = [i for i in wanted if i not in found] if len(found) < len(wanted) else []
        if missing:
            for point in self._store.retrieve(self._collection, missing, with_vectors=True):
                record = record_from_point(point)
                self.put(record)
                found[record.item_id] = record
            for item_id in missing:
                if item_id not in found:
                    self.forget(item_id)  # deleted, perhaps by another worker
        return found

    @property
    def capacity(self) -> int:
        return self._capacity

    def records(self) -> Iterable[ItemRecord]:
        return self._records.values()

    def __len__(self) -> int:
        return len(self._records)


class _TopKeys:
    """The `n` items with the highest rank keys, kept up to date as keys change one at a time.

    Valid while keys only grow, which counting guarantees (a count plus a non-negative weight,
    both decayed to the later time, never ranks lower): an item outside the top can only enter
    when it is itself counted, by beating the lowest key inside. Lowest first in a heap whose
    outdated entries (a member counted again) are skipped when they surface."""

    def __init__(self, n: int, rank: dict[str, float]):
        self.n = n
        self.members = dict(heapq.nlargest(n, rank.items(), key=itemgetter(1)))
        self._rebuild_heap()

    def _rebuild_heap(self) -> None:
        self._heap = [(key, item_id) for item_id, key in self.members.items()]
        heapq.heapify(self._heap)

    def _lowest(self) -> tuple[float, str]:
        heap = self._heap
        while self.members.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # outdated: the member was counted again since
        return heap[0]

    def grown(self, item_id: str, key: float) -> None:
        """`item_id`'s key is now `key`, not lower than before."""
        members = self.members
        if item_id in members or len(members) < self.n:
            members[item_id] = key
            heapq.heappush(self._heap, (key, item_id))
            if len(self._heap) > 4 * self.n + 64:
                self._rebuild_heap()  # bounded: outdated entries of members counted often
        elif self.n > 0 and key > self._lowest()[0]:
            _, out = heapq.heappop(self._heap)
            del members[out]
            members[item_id] = key
            heapq.heappush(self._heap, (key, item_id))

    def ranked(self) -> list[str]:
        return sorted(self.members, key=self.members.__getitem__, reverse=True)


class Popularity:
    """Time-decayed interaction counts per item, decayed to the newest event time seen.

    Every count decays by the same factor, so the order of items never depends on "now": an
    item's rank key log2(count) + updated / half_life is fixed until it is counted again, and
    counting only raises it. `top(n)` is kept up to date per `n` asked for (_TopKeys) instead of
    ranking every counted item on each call: a top-n per segment per batch over every item
    ever counted cost a large catalog more than the recommendation itself."""

    def __init__(self, half_life_s: float):
        self.half_life_s = half_life_s
        self._counts: dict[str, tuple[float, float]] = {}
        self._rank: dict[str, float] = {}
        self._tops: dict[int, _TopKeys] = {}
        self.now = 0.0

    def _set(self, item_id: str, count: float, updated: float, *, grown: bool) -> None:
        """`grown`: the new key is not below the old one (counting), so the tops stay valid."""
        self._counts[item_id] = (count, updated)
        key = self._rank[item_id] = (math.log2(count) if count > 0 else -math.inf) + updated / self.half_life_s
        if grown:
            for top in self._tops.values():
                top.grown(item_id, key)
        else:
            self._tops.clear()  # rebuilt on the next `top`

    def add(self, item_id: str, weight: float, ts: float) -> None:
        count, updated = self._counts.get(item_id, (0.0, ts))
        ref = max(ts, updated)
        self._set(item_id, count * decay(ref - updated, self.half_life_s) + weight, ref, grown=weight >= 0)
        self.now = max(self.now, ts)

    def merge(self, item_id: str, count: float, updated: float) -> None:
        """Add another share's decayed count (`count` as of `updated`): both are decayed to the
        later of the two times and summed, so shares merge in any order to the same value."""
        own, own_updated = self._counts.get(item_id, (0.0, updated))
        ref = max(updated, own_updated)
        self._set(item_id, own * decay(ref - own_updated, self.half_life_s) + count * decay(ref - updated, self.half_life_s),
                  ref, grown=count >= 0)
        self.now = max(self.now, ref)

    def value(self, item_id: str) -> float:
        count, updated = self._counts.get(item_id, (0.0, self.now))
        return count * decay(self.now - updated, self.half_life_s)

    def values(self, item_ids: Sequence[str]) -> np.ndarray:
        """`value` of each item, as an array in the order given (hundreds per recommendation, so
        the decay is one numpy expression rather than a call per item)."""
        pairs = np.array(list(map(self._counts.get, item_ids, repeat((0.0, self.now)))), dtype=np.float64)
        if not len(pairs):
            return np.zeros(0)
        age = np.maximum(self.now - pairs[:, 1], 0.0)
        return pairs[:, 0] * 0.5 ** (age / self.half_life_s)

    def top(self, n: int) -> list[str]:
        """The `n` most popular items, most popular first."""
        top = self._tops.get(n)
        if top is None:
            top = self._tops[n] = _TopKeys(n, self._rank)
        return top.ranked()

    def tops_kept(self) -> tuple[int, ...]:
        """The n of each top kept up to date (asked for since the last change that reset them)."""
        return tuple(self._tops)

    def keep_tops(self, ns: Iterable[int]) -> None:
        """Rank these tops now (one pass over every counted item each), to be kept up to date after."""
        for n in ns:
            self.top(n)

    def forget(self, item_id: str) -> bool:
        """Drop an item's count; whether there was one."""
        self._rank.pop(item_id, None)
        for n in [n for n, top in self._tops.items() if item_id in top.members]:
            del self._tops[n]  # an item below may move up: rebuilt on the next `top`
        return self._counts.pop(item_id, None) is not None

    def snapshot(self) -> dict[str, tuple[float, float]]:
        return dict(self._counts)

    def restore(self, item_id: str, count: float, updated: float) -> None:
        self._set(item_id, count, updated, grown=False)
        self.now = max(self.now, updated)
