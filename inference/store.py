"""Vector-store adapter: one interface over embedded Qdrant Edge and qdrant-client.

Two backends sit behind `VectorStore`:

- `EdgeStore`: Qdrant's embedded engine (`qdrant-edge-py`), one `EdgeShard` per collection
  under ``data_dir/qdrant/<collection>/``. The default for the demo and single-machine use.
- `QdrantClientStore`: `qdrant-client`, against a server (production) or in its local
  ``":memory:"`` mode (an exact-search Python fallback for small test fixtures).

`open_store` picks one from the settings. Callers use string ids; Qdrant only takes unsigned
integers or UUIDs, so each id is stored as ``uuid5(ID_NAMESPACE, id)`` (or, in an embedded
collection made with ``compact_ids``, as the first 64 bits of that hash: `point_u64`) and the
original string is kept in the payload under the reserved key ``"_key"``, which never leaves
this module.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import math
import numbers
import os
import re
import shutil
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import qdrant_edge as qe

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

__all__ = [
    "ID_NAMESPACE",
    "KEY_FIELD",
    "CollectionNotFound",
    "DimensionMismatch",
    "EdgeStore",
    "Filter",
    "Hit",
    "IndexParams",
    "Point",
    "PointNotFound",
    "QdrantClientStore",
    "ScoredIds",
    "StoreError",
    "StoreUnavailable",
    "VectorStore",
    "open_store",
    "point_u64",
    "point_uuid",
]

# Fixed forever: stored point ids are derived from it (uuid5(NAMESPACE_URL, "streamrec:point-id")).
ID_NAMESPACE = uuid.UUID("22c787ed-2123-5ea4-b0fc-f795d7e7bfe2")
KEY_FIELD = "_key"
# How many candidates an HNSW search keeps in view (STREAMREC_QDRANT_HNSW_EF); see bench/retrieval.py --index.
DEFAULT_HNSW_EF = 128
MAX_KNOWN_KEYS = 1_000_000
"""Point ids whose key the embedded store remembers for id-only searches (~200 B each)."""
_NAMESPACE_BYTES = ID_NAMESPACE.bytes

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_META_FILE = "collection.json"
_SHARD_DIR = "shard"
_LOCK_FILE = ".lock"


# --------------------------------------------------------------------------- errors


class StoreError(RuntimeError):
    """A vector-store operation failed."""


class DimensionMismatch(StoreError):
    """A collection or vector has another dimension than the one asked for."""


class StoreUnavailable(StoreError):
    """The store cannot be used now: the server is unreachable or the directory is locked."""


class CollectionNotFound(StoreError):
    """The collection does not exist (call `ensure_collection` first)."""


class PointNotFound(StoreError):
    """`set_payload` was given the id of a point that does not exist."""


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Point:
    """A stored item: caller's string id, float32 vector (None when not fetched), payload."""

    id: str
    vector: np.ndarray | None
    payload: dict[str, Any]


@dataclass(frozen=True)
class Hit:
    """One search result; `vector` is filled only when the search asked for vectors."""

    id: str
    score: float
    payload: dict[str, Any]
    vector: np.ndarray | None = None


class ScoredIds(NamedTuple):
    """One query's results as two parallel lists, best first."""

    ids: list[str]
    scores: list[float]


@dataclass(frozen=True)
class Filter:
    """Conditions a search result must meet; all given conditions must hold."""

    equals: Mapping[str, str | int | bool] = field(default_factory=dict)
    any_of: Mapping[str, Sequence[str | int]] = field(default_factory=dict)
    exclude_ids: Sequence[str] = ()
    ranges: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, value in self.equals.items():
            if not isinstance(value, (str, bool, numbers.Integral)):
                raise TypeError(
                    f"Filter.equals[{key!r}] = {value!r}: only str, int and bool can be matched "
                    "exactly; use ranges for floats"
                )
        for key, values in self.any_of.items():
            if isinstance(values, (str, bytes)):
                raise TypeError(f"Filter.any_of[{key!r}] must be a sequence of values, not a string")
            bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (str, numbers.Integral))]
            if bad:
                raise TypeError(f"Filter.any_of[{key!r}] holds {bad!r}: only str and int values are allowed")
        if isinstance(self.exclude_ids, str):
            raise TypeError("Filter.exclude_ids must be a sequence of ids, not a string")
        for key, bounds in self.ranges.items():
            if len(bounds) != 2:
                raise TypeError(f"Filter.ranges[{key!r}] must be a (lo, hi) pair; use None for an open end")


QUANTIZATIONS = ("int8", "none")
# int8 bounds from the 99% quantile of each segment's values (Qdrant's recommended setting).
_INT8_QUANTILE = 0.99


@dataclass(frozen=True)
class IndexParams:
    """How indexed collections are built and searched (STREAMREC_QDRANT_*; bench/retrieval.py measures each).

    - `hnsw_ef`: candidates an HNSW search keeps in view. Higher: better recall, slower.
    - `quantization`: "int8" keeps a scalar-quantized copy of an indexed segment's vectors
      (4x smaller); the graph walk scores with it and the hits are rescored with the originals.
      `oversampling` x the asked limit is taken from the quantized scores before that rescoring,
      so the originals pick the final top; at 1 the quantization error decides what is kept.
    - `acorn_max_selectivity`: filters that pass less than this share of the points are searched
      with ACORN (neighbours of neighbours), which keeps recall when a filter combines conditions
      that no single field's extra graph links cover; 0 turns it off.

    Plain (not yet indexed) segments are always searched exactly, so none of this changes
    anything before `build_index`.
    """

    hnsw_ef: int = DEFAULT_HNSW_EF
    quantization: str = "int8"
    oversampling: float = 2.0
    acorn_max_selectivity: float = 0.0

    def __post_init__(self) -> None:
        if self.hnsw_ef < 1:
            raise ValueError(f"hnsw_ef must be at least 1, got {self.hnsw_ef}")
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, not {self.quantization!r}")
        if self.oversampling < 1.0:
            raise ValueError(f"oversampling must be at least 1, got {self.oversampling}")
        if not 0.0 <= self.acorn_max_selectivity <= 1.0:
            raise ValueError(f"acorn_max_selectivity must be within [0, 1], got {self.acorn_max_selectivity}")


def _search_params(api: Any, index: IndexParams) -> Any:
    """`index`'s search parameters in `api`, qdrant_edge or qdrant_client.models (same names)."""
    return api.SearchParams(
        hnsw_ef=index.hnsw_ef,
        quantization=api.QuantizationSearchParams(rescore=True, oversampling=index.oversampling)
        if index.quantization == "int8" else None,
        acorn=api.AcornSearchParams(enable=True, max_selectivity=index.acorn_max_selectivity)
        if index.acorn_max_selectivity > 0 else None,
    )


@functools.lru_cache(maxsize=1 << 18)
def point_uuid(id: str) -> str:
    """The Qdrant point id under which the caller's string `id` is stored: uuid5(ID_NAMESPACE, id).

    Cached: a user's purchased items are excluded by id in every query of every batch."""
    # uuid.uuid5 spelled out: 5x faster, and it runs for every id of every upsert and filter
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + id.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@functools.lru_cache(maxsize=1 << 18)
def point_u64(id: str) -> int:
    """The point id of `id` in a `compact_ids` collection: the first 64 bits of the same SHA-1
    as `point_uuid`. The engine hands it back as a plain int, where a UUID id costs a
    uuid.UUID object per search hit (8% of a recommendation over a small catalog)."""
    return int.from_bytes(hashlib.sha1(_NAMESPACE_BYTES + id.encode()).digest()[:8], "big")


# --------------------------------------------------------------------------- interface


class VectorStore(ABC):
    """Collections of float32 vectors under cosine distance, with JSON-like payloads."""

    @abstractmethod
    def ensure_collection(
        self,
        name: str,
        dim: int,
        *,
        keyword_fields: Sequence[str] = (),
        bool_fields: Sequence[str] = (),
        float_fields: Sequence[str] = (),
        compact_ids: bool = False,
    ) -> None:
        """Create the collection and its payload indexes if missing; idempotent.

        `compact_ids`: a new embedded collection stores 64-bit point ids (`point_u64`) instead of
        UUIDs, so id-only searches build no uuid.UUID per hit. Meant for collections searched
        on every event and of at most ~10^7 points (the odds that two keys share an id are then
        ~3e-6); an existing collection keeps the ids it was made with. The server backend stores
        UUIDs either way (its client returns ids as strings, which cost nothing extra).

        Raises DimensionMismatch if the collection exists with another dimension.
        """

    @abstractmethod
    def has_collection(self, name: str) -> bool: ...

    @abstractmethod
    def drop_collection(self, name: str) -> None:
        """Delete the collection and all its points; no-op if it does not exist."""

    @abstractmethod
    def upsert(self, name: str, points: Sequence[Point]) -> None:
        """Insert or replace points (vector and whole payload), as one batched call."""

    @abstractmethod
    def set_payload(self, name: str, id: str, payload: dict[str, Any]) -> None:
        """Merge top-level `payload` keys into an existing point's payload.

        Raises PointNotFound if there is no such point.
        """

    @abstractmethod
    def delete(self, name: str, ids: Sequence[str]) -> None:
        """Delete points; unknown ids are ignored. Deleted points leave search at once."""

    @abstractmethod
    def retrieve(self, name: str, ids: Sequence[str], *, with_vectors: bool = False) -> list[Point]:
        """Points by id, in the order of `ids`; missing ids are omitted."""

    @abstractmethod
    def search(
        self,
        name: str,
        vector: np.ndarray,
        limit: int,
        *,
        filter: Filter | None = None,
        with_vectors: bool = False,
    ) -> list[Hit]:
        """The `limit` nearest points by cosine similarity, best first."""

    @abstractmethod
    def search_batch(
        self, name: str, vectors: np.ndarray, limit: int, *, filters: Sequence[Filter | None],
    ) -> list[list[Hit]]:
        """`search` for each row of `vectors` with the matching filter, in one call.

        Pass the same Filter object for rows that share one; it is converted once.
        """

    @abstractmethod
    def search_ids(
        self, name: str, vectors: np.ndarray, limit: int, *, filters: Sequence[Filter | None],
    ) -> list[ScoredIds]:
        """`search_batch` without payloads or Hit objects: per row, the ids and their scores,
        best first. For callers that hold the payloads already (the recommender's item cache):
        a hit object per result was a fifth of a recommendation's time."""

    @abstractmethod
    def count(self, name: str) -> int: ...

    @abstractmethod
    def build_index(self, name: str) -> dict[str, Any]:
        """Build the collection's HNSW index now (the embedded engine never builds one by itself;
        a server builds its own in the background) and say what it holds: points, indexed
        vectors, segments, whether they are quantized, seconds."""

    @abstractmethod
    def scroll_page(self, name: str, offset: Any = None, *, batch: int = 256,
                    with_vectors: bool = False) -> tuple[list[Point], Any]:
        """Up to `batch` points from `offset` (None: the start) and the offset of the next page
        (None after the last): a long read done in short steps, between other work."""

    def scroll(self, name: str, *, batch: int = 256, with_vectors: bool = False) -> Iterator[Point]:
        """Every point of the collection, fetched `batch` at a time, in no promised order."""
        offset = None
        while True:
            points, offset = self.scroll_page(name, offset, batch=batch, with_vectors=with_vectors)
            yield from points
            if offset is None:
                return

    @abstractmethod
    def flush(self) -> None:
        """Make everything written so far durable."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release the store; idempotent. The store is unusable afterwards."""

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- shared helpers


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid collection name {name!r}: use 1-128 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )


def _vector_list(name: str, vector: Any, dim: int) -> list[float]:
    arr = np.asarray(vector, dtype=np.float32)
    if arr.ndim != 1 or arr.shape[0] != dim:
        raise DimensionMismatch(f"collection {name!r} holds {dim}-d vectors, got an array of shape {arr.shape}")
    return arr.tolist()


def _matrix(name: str, vectors: Any, dim: int) -> np.ndarray:
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise DimensionMismatch(f"collection {name!r} holds {dim}-d vectors, got an array of shape {arr.shape}")
    return arr


def _stored_payload(point: Point) -> dict[str, Any]:
    if KEY_FIELD in point.payload:
        raise ValueError(f"payload key {KEY_FIELD!r} is reserved for the point id (point {point.id!r})")
    return {**point.payload, KEY_FIELD: point.id}


def _unpack(record: Any) -> tuple[str, dict[str, Any]]:
    """The caller's id and the payload without it."""
    payload = dict(record.payload or {})
    payload.pop(KEY_FIELD, None)
    return _key_of(record), payload


def _key_of(record: Any) -> str:
    """The caller's id of a stored point. The Qdrant id is read only when the payload has no
    key: reading it builds a uuid.UUID, a third of the cost of a search hit."""
    key = (record.payload or {}).get(KEY_FIELD)
    return key if isinstance(key, str) else str(record.id)


def _as_array(vector: Any) -> np.ndarray | None:
    if vector is None:
        return None
    if isinstance(vector, Mapping):  # named-vector form: the default vector is named ""
        vector = vector.get("", next(iter(vector.values()), None))
    return None if vector is None else np.asarray(vector, dtype=np.float32)


def _filters_per_row(
    matrix: np.ndarray, filters: Sequence[Filter | None], convert: Callable[[Filter | None], Any]
) -> list[Any]:
    """Each query row's filter in the backend's form; rows that pass the same Filter object (a
    user's several queries) share one conversion."""
    if len(filters) != len(matrix):
        raise ValueError(f"search_batch got {len(matrix)} vectors but {len(filters)} filters")
    converted: dict[int, Any] = {}
    for f in filters:
        if id(f) not in converted:
            converted[id(f)] = convert(f)
    return [converted[id(f)] for f in filters]


def _in_id_order(ids: Sequence[str], points: Sequence[Point]) -> list[Point]:
    by_id = {p.id: p for p in points}
    return [by_id[i] for i in ids if i in by_id]


# --------------------------------------------------------------------------- edge backend


def _edge_scalar(value: str | int | bool) -> Any:
    if isinstance(value, bool):
        # qdrant-edge 0.9.0 turns a Python bool into the integer 1/0 (bool is an int
        # subclass), which never matches a stored JSON boolean; numpy.bool_ arrives as a bool.
        return np.bool_(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    return value


def _edge_filter(f: Filter | None, point_id: Callable[[str], Any]) -> qe.Filter | None:
    """`f` for the engine; `point_id` is the collection's id scheme (`EdgeStore.point_id`)."""
    if f is None:
        return None
    must: list[Any] = []
    must_not: list[Any] = []
    for key, value in f.equals.items():
        must.append(qe.FieldCondition(key, match=qe.MatchValue(_edge_scalar(value))))
    for key, values in f.any_of.items():
        must.append(qe.FieldCondition(key, match=qe.MatchAny([_edge_scalar(v) for v in values])))
    for key, (lo, hi) in f.ranges.items():
        if lo is not None or hi is not None:
            must.append(qe.FieldCondition(key, range=qe.RangeFloat(gte=lo, lte=hi)))
    if f.exclude_ids:
        must_not.append(qe.HasIdCondition(set(map(point_id, f.exclude_ids))))
    if not must and not must_not:
        return None
    return qe.Filter(must=must or None, must_not=must_not or None)


_EDGE_SCHEMA = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "bool": qe.PayloadSchemaType.Bool,
    "float": qe.PayloadSchemaType.Float,
}


class EdgeStore(VectorStore):
    """Embedded Qdrant Edge: one shard per collection under `root`.

    `root` is locked for the lifetime of the store: a second store on the same directory, in
    this process or another, raises StoreUnavailable. Search is exact until `build_index` builds
    a collection's HNSW graph; the worker never calls it (`EdgeShard.optimize()` holds the GIL:
    ~20 s at 100k items here with int8, 52 s without), `streamrec index` does, while no worker
    has the store open.
    """

    def __init__(self, root: Path, *, index: IndexParams = IndexParams()) -> None:
        self.root = Path(root)
        self.index = index
        # Exact over plain segments (all of them until `build_index`), the graph over indexed ones.
        self._search_params = _search_params(qe, index)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = _lock_directory(self.root)
        self._shards: dict[str, tuple[qe.EdgeShard, int]] = {}  # open shards and their dims
        # The caller's id of each point id a search returned. A search asks the engine for ids
        # only (building the payload of every hit was 60% of its time); point ids derive from
        # keys (a hash), so an entry never goes stale and the map is shared by all collections
        # (a UUID's int is above 2^76, so it never equals a 64-bit point id).
        self._keys: dict[int, str] = {}  # by the point id as an int: C-level hashing
        self._point_ids: dict[str, Callable[[str], Any]] = {}  # each open collection's id scheme
        self._mutex = threading.RLock()

    # -- collections

    def ensure_collection(
        self,
        name: str,
        dim: int,
        *,
        keyword_fields: Sequence[str] = (),
        bool_fields: Sequence[str] = (),
        float_fields: Sequence[str] = (),
        compact_ids: bool = False,
    ) -> None:
        _check_name(name)
        if not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        with self._mutex:
            self._check_open()
            meta = self._read_meta(name)
            if meta is None:
                # the meta file is written first: a crash before the shard exists leaves a
                # collection that is created on first open, never a shard of unknown dim
                meta = {"format": 1, "dim": dim, "distance": "cosine"}
                if compact_ids:
                    meta |= {"format": 2, "point_ids": "u64"}
                _write_json(self._dir(name) / _META_FILE, meta)
            elif meta["dim"] != dim:
                raise DimensionMismatch(
                    f"collection {name!r} in {self._dir(name)} exists with dim {meta['dim']}, "
                    f"not {dim}: drop it (drop_collection) or use another collection name"
                )
            shard, _ = self._shard(name)
            wanted = {f: "keyword" for f in keyword_fields}
            wanted |= {f: "bool" for f in bool_fields}
            wanted |= {f: "float" for f in float_fields}
            with _edge_errors(f"creating payload indexes on {name!r}"):
                existing = {k: v.data_type for k, v in shard.info().payload_schema.items()}
                for field_name, kind in wanted.items():
                    if existing.get(field_name) != _EDGE_SCHEMA[kind]:
                        shard.update(qe.UpdateOperation.create_field_index(field_name, _EDGE_SCHEMA[kind]))

    def has_collection(self, name: str) -> bool:
        self._check_open()
        return _NAME_RE.fullmatch(name) is not None and (self._dir(name) / _META_FILE).is_file()

    def drop_collection(self, name: str) -> None:
        _check_name(name)
        with self._mutex:
            self._check_open()
            entry = self._shards.pop(name, None)
            self._point_ids.pop(name, None)
            if entry is not None:
                with _edge_errors(f"closing {name!r}"):
                    entry[0].close()
            if self._dir(name).exists():
                shutil.rmtree(self._dir(name))

    # -- points

    def upsert(self, name: str, points: Sequence[Point]) -> None:
        shard, dim = self._shard(name)
        if not points:
            return
        point_id = self._point_ids[name]
        batch = []
        for p in points:
            if p.vector is None:
                raise ValueError(f"point {p.id!r} has no vector")
            batch.append(qe.Point(point_id(p.id), _vector_list(name, p.vector, dim), _stored_payload(p)))
        with _edge_errors(f"upserting into {name!r}"):
            shard.update(qe.UpdateOperation.upsert_points(batch))

    def set_payload(self, name: str, id: str, payload: dict[str, Any]) -> None:
        if KEY_FIELD in payload:
            raise ValueError(f"payload key {KEY_FIELD!r} is reserved for the point id")
        shard, _ = self._shard(name)
        if not payload:
            return
        with _edge_errors(f"setting payload of {id!r} in {name!r}"):
            shard.update(qe.UpdateOperation.set_payload([self._point_ids[name](id)], dict(payload)))

    def delete(self, name: str, ids: Sequence[str]) -> None:
        shard, _ = self._shard(name)
        if ids:
            with _edge_errors(f"deleting from {name!r}"):
                shard.update(qe.UpdateOperation.delete_points(list(map(self._point_ids[name], ids))))

    def retrieve(self, name: str, ids: Sequence[str], *, with_vectors: bool = False) -> list[Point]:
        shard, _ = self._shard(name)
        if not ids:
            return []
        with _edge_errors(f"retrieving from {name!r}"):
            records = shard.retrieve(list(map(self._point_ids[name], ids)), True, with_vectors)
        return _in_id_order(ids, [_edge_point(r, with_vectors) for r in records])

    def search(
        self,
        name: str,
        vector: np.ndarray,
        limit: int,
        *,
        filter: Filter | None = None,
        with_vectors: bool = False,
    ) -> list[Hit]:
        shard, dim = self._shard(name)
        query = _vector_list(name, vector, dim)
        if limit <= 0:
            return []
        with _edge_errors(f"searching {name!r}"):
            scored = shard.query(self._request(query, limit, _edge_filter(filter, self._point_ids[name]), with_vectors))
        return [_edge_hit(s, with_vectors) for s in scored]

    def search_batch(
        self, name: str, vectors: np.ndarray, limit: int, *, filters: Sequence[Filter | None],
    ) -> list[list[Hit]]:
        results = self._query_batch(name, vectors, limit, filters, True)
        return [[_edge_hit(s, False) for s in scored] for scored in results]

    def search_ids(
        self, name: str, vectors: np.ndarray, limit: int, *, filters: Sequence[Filter | None],
    ) -> list[ScoredIds]:
        results = self._query_batch(name, vectors, limit, filters, False)
        if self._point_ids[name] is point_u64:  # the engine returns ints: no uuid.UUID per hit
            point_ids = [[s.id for s in scored] for scored in results]
        else:
            point_ids = [[s.id.int for s in scored] for scored in results]
        keys = self._keys
        if len(keys) > MAX_KNOWN_KEYS:
            keys.clear()  # bounded memory; what is needed again is learnt again below
        unknown = {u for row in point_ids for u in row if u not in keys}
        if unknown:
            self._learn_keys(name, unknown)
        out = []
        for row, scored in zip(point_ids, results):
            found = list(map(keys.get, row))
            if None in found:  # deleted between the search and the lookup of its key
                kept = [j for j, key in enumerate(found) if key is not None]
                out.append(ScoredIds([found[j] for j in kept], [scored[j].score for j in kept]))
            else:
                out.append(ScoredIds(found, [s.score for s in scored]))
        return out

    def _learn_keys(self, name: str, point_ids: set[int]) -> None:
        shard, _ = self._shard(name)
        compact = self._point_ids[name] is point_u64
        with _edge_errors(f"retrieving keys from {name!r}"):
            records = shard.retrieve(list(point_ids) if compact else [str(uuid.UUID(int=u)) for u in point_ids],
                                     qe.PayloadSelector.Include([KEY_FIELD]), False)
        for r in records:
            self._keys[r.id if compact else r.id.int] = _key_of(r)

    def _query_batch(
        self, name: str, vectors: np.ndarray, limit: int, filters: Sequence[Filter | None],
        payload: bool,
    ) -> list[list[Any]]:
        shard, dim = self._shard(name)
        matrix = _matrix(name, vectors, dim)
        point_id = self._point_ids[name]
        row_filters = _filters_per_row(matrix, filters, lambda f: _edge_filter(f, point_id))
        if limit <= 0 or len(matrix) == 0:
            return [[] for _ in range(len(matrix))]
        requests = [self._request(row.tolist(), limit, f, False, payload)
                    for row, f in zip(matrix, row_filters, strict=True)]
        with _edge_errors(f"searching {name!r}"):
            return shard.query_batch(qe.QueryBatchRequest(requests))

    def count(self, name: str) -> int:
        shard, _ = self._shard(name)
        with _edge_errors(f"counting {name!r}"):
            return shard.count(qe.CountRequest(exact=True))

    def scroll_page(self, name: str, offset: Any = None, *, batch: int = 256,
                    with_vectors: bool = False) -> tuple[list[Point], Any]:
        if batch <= 0:
            raise ValueError(f"batch must be positive, got {batch}")
        shard, _ = self._shard(name)
        request = qe.ScrollRequest(offset=offset, limit=batch, with_payload=True, with_vector=with_vectors)
        with _edge_errors(f"scrolling {name!r}"):
            records, offset = shard.scroll(request)
        return [_edge_point(r, with_vectors) for r in records], offset

    # -- lifecycle

    def flush(self) -> None:
        with self._mutex:
            self._check_open()
            for name, (shard, _) in self._shards.items():
                with _edge_errors(f"flushing {name!r}"):
                    shard.flush()

    def close(self) -> None:
        with self._mutex:
            if self._lock_fd is None:
                return
            try:
                for name, (shard, _) in self._shards.items():
                    with _edge_errors(f"closing {name!r}"):
                        shard.flush()
                        shard.close()
            finally:
                self._shards.clear()
                os.close(self._lock_fd)  # releases the directory lock
                self._lock_fd = None

    # -- internals

    def _dir(self, name: str) -> Path:
        return self.root / name

    def _check_open(self) -> None:
        if self._lock_fd is None:
            raise StoreError(f"the vector store on {self.root} is closed")

    def _read_meta(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads((self._dir(name) / _META_FILE).read_text())
        except FileNotFoundError:
            return None

    def _shard(self, name: str) -> tuple[qe.EdgeShard, int]:
        """The collection's open shard and its dim, opening it on first use."""
        entry = self._shards.get(name)
        if entry is not None:
            return entry
        _check_name(name)
        with self._mutex:
            self._check_open()
            entry = self._shards.get(name)
            if entry is not None:
                return entry
            meta = self._read_meta(name)
            if meta is None:
                raise CollectionNotFound(f"collection {name!r} does not exist in {self.root}")
            path = self._dir(name) / _SHARD_DIR
            quantization = qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=_INT8_QUANTILE,
                                                       always_ram=True) if self.index.quantization == "int8" else None
            config = qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=meta["dim"], distance=qe.Distance.Cosine),
                                   quantization_config=quantization)
            with _edge_errors(f"opening {path}"):
                if (path / "edge_config.json").exists():
                    # A shard made without quantization gets it at its next `build_index`; "none"
                    # leaves a shard's persisted choice as it is.
                    shard = qe.EdgeShard.load(str(path), config if quantization is not None else None)
                else:
                    shard = qe.EdgeShard.create(str(path), config)
            self._point_ids[name] = point_u64 if meta.get("point_ids") == "u64" else point_uuid
            entry = self._shards[name] = (shard, meta["dim"])
            return entry

    def point_id(self, name: str) -> Callable[[str], Any]:
        """How the collection stores a key's point id: `point_u64` or `point_uuid`."""
        self._shard(name)
        return self._point_ids[name]

    @property
    def search_params(self) -> qe.SearchParams:
        """What every search asks the engine for (IndexParams)."""
        return self._search_params

    def _request(self, vector: list[float], limit: int, f: qe.Filter | None, with_vectors: bool,
                 payload: bool = True) -> qe.QueryRequest:
        return qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(vector),
            filter=f,
            with_payload=payload,
            with_vector=with_vectors,
            params=self._search_params,
        )

    def build_index(self, name: str) -> dict[str, Any]:
        with self._mutex:
            shard, _ = self._shard(name)
            start = time.perf_counter()
            with _edge_errors(f"indexing {name!r}"):
                shard.optimize()
                info = shard.info()
            # What the engine persisted for the shard is what its segments were built with.
            persisted = json.loads((self._dir(name) / _SHARD_DIR / "edge_config.json").read_text())
            return {"points": info.points_count, "indexed_vectors": info.indexed_vectors_count,
                    "segments": info.segments_count, "quantization": _quantization_name(persisted),
                    "seconds": round(time.perf_counter() - start, 1)}


def _quantization_name(config: Mapping[str, Any] | None) -> str:
    """"int8" for a scalar int8 quantization config (the engine's persisted JSON or a server's), else "none"."""
    quantization = (config or {}).get("quantization_config", config) or {}
    scalar = quantization.get("scalar") if isinstance(quantization, Mapping) else None
    return "int8" if isinstance(scalar, Mapping) and str(scalar.get("type", "")).lower() == "int8" else "none"


def _edge_point(record: Any, with_vectors: bool) -> Point:
    key, payload = _unpack(record)
    return Point(key, _as_array(record.vector) if with_vectors else None, payload)


def _edge_hit(scored: Any, with_vectors: bool) -> Hit:
    key, payload = _unpack(scored)
    return Hit(key, float(scored.score), payload, _as_array(scored.vector) if with_vectors else None)


@contextmanager
def _edge_errors(what: str) -> Iterator[None]:
    """Turn qdrant-edge's plain `Exception`s into StoreError subclasses."""
    try:
        yield
    except Exception as exc:
        if type(exc) is not Exception:  # our own errors, TypeError from bad arguments, ...
            raise
        message = str(exc)
        if "WouldBlock" in message:
            raise StoreUnavailable(
                f"{what}: the directory is locked by another process ({message}); stop that "
                "process or give this one another STREAMREC_DATA_DIR"
            ) from exc
        if "dimension error" in message:
            raise DimensionMismatch(f"{what}: {message}") from exc
        if message.startswith("No point with id"):
            raise PointNotFound(f"{what}: {message}") from exc
        raise StoreError(f"{what}: qdrant-edge failed: {message}") from exc


def _lock_directory(root: Path) -> int:
    # Our own lock, taken before any shard is opened: a second EdgeShard.load() of a directory
    # that is in use fails on the WAL lock only after opening the segments, and doing so was
    # seen to break the owner's next flush (qdrant-edge 0.9.0).
    path = root / _LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreUnavailable(
            f"the embedded Qdrant directory {root} is in use by another process (pid {holder}); "
            "stop it, give this process another STREAMREC_DATA_DIR, or set STREAMREC_QDRANT_URL "
            "to share a Qdrant server"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------- qdrant-client backend


class QdrantClientStore(VectorStore):
    """qdrant-client against a server, or in its local ":memory:" mode.

    Local mode ignores payload indexes (none are created there) and searches in Python, so
    keep it to small fixtures.
    """

    def __init__(self, client: QdrantClient, *, where: str, local: bool, index: IndexParams = IndexParams()) -> None:
        from qdrant_client import models

        self._client: QdrantClient | None = client
        self._m = models
        self.index = index
        int8 = index.quantization == "int8"
        # Local mode searches exactly and warns on every query that is given search params.
        self._search_params = None if local else _search_params(models, index)
        # Applies to collections this store creates; a server builds the quantized copy with the index.
        self._quantization = models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(
            type=models.ScalarType.INT8, quantile=_INT8_QUANTILE, always_ram=True)) if int8 and not local else None
        self._where = where
        self._local = local
        self._dims: dict[str, int] = {}

    # -- collections

    def ensure_collection(
        self,
        name: str,
        dim: int,
        *,
        keyword_fields: Sequence[str] = (),
        bool_fields: Sequence[str] = (),
        float_fields: Sequence[str] = (),
        compact_ids: bool = False,
    ) -> None:
        _check_name(name)
        if not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        m, client = self._m, self._open()
        with self._errors(f"creating collection {name!r}"):
            if not client.collection_exists(name):
                try:
                    client.create_collection(name, vectors_config=m.VectorParams(size=dim, distance=m.Distance.COSINE),
                                             quantization_config=self._quantization)
                except Exception:  # another worker may have created it in between
                    if not client.collection_exists(name):
                        raise
            self._dims.pop(name, None)
            existing = self._dim(name)
            if existing != dim:
                raise DimensionMismatch(
                    f"collection {name!r} on {self._where} exists with dim {existing}, not {dim}: "
                    "drop it (drop_collection) or use another collection name"
                )
            if self._local:
                return  # local mode ignores payload indexes and warns on each one
            schema = client.get_collection(name).payload_schema or {}
            wanted = {f: m.PayloadSchemaType.KEYWORD for f in keyword_fields}
            wanted |= {f: m.PayloadSchemaType.BOOL for f in bool_fields}
            wanted |= {f: m.PayloadSchemaType.FLOAT for f in float_fields}
            for field_name, kind in wanted.items():
                info = schema.get(field_name)
                if info is None or info.data_type != kind:
                    client.create_payload_index(name, field_name, field_schema=kind, wait=True)

    def has_collection(self, name: str) -> bool:
        client = self._open()
        with self._errors(f"looking up {name!r}"):
            return client.collection_exists(name)

    def drop_collection(self, name: str) -> None:
        client = self._open()
        self._dims.pop(name, None)
        with self._errors(f"dropping {name!r}"):
            client.delete_collection(name)

    # -- points

    def upsert(self, name: str, points: Sequence[Point]) -> None:
        client, dim = self._open(), self._dim(name)
        if not points:
            return
        structs = []
        for p in points:
            if p.vector is None:
                raise ValueError(f"point {p.id!r} has no vector")
            vector = _vector_list(name, p.vector, dim)
            structs.append(self._m.PointStruct(id=point_uuid(p.id), vector=vector, payload=_stored_payload(p)))
        with self._errors(f"upserting into {name!r}"):
            client.upsert(name, points=structs, wait=True)

    def set_payload(self, name: str, id: str, payload: dict[str, Any]) -> None:
        if KEY_FIELD in payload:
            raise ValueError(f"payload key {KEY_FIELD!r} is reserved for the point id")
        client = self._open()
        self._dim(name)  # CollectionNotFound before PointNotFound
        if not payload:
            return
        with self._errors(f"setting payload of {id!r} in {name!r}"):
            try:
                client.set_payload(name, payload=dict(payload), points=[point_uuid(id)], wait=True)
            except KeyError as exc:  # local mode's way of saying "no such point"
                raise PointNotFound(f"no point {id!r} in collection {name!r}") from exc

    def delete(self, name: str, ids: Sequence[str]) -> None:
        client = self._open()
        if not ids:
            self._dim(name)
            return
        selector = self._m.PointIdsList(points=[point_uuid(i) for i in ids])
        with self._errors(f"deleting from {name!r}"):
            client.delete(name, points_selector=selector, wait=True)

    def retrieve(self, name: str, ids: Sequence[str], *, with_vectors: bool = False) -> list[Point]:
        client = self._open()
        if not ids:
            self._dim(name)
            return []
        with self._errors(f"retrieving from {name!r}"):
            records = client.retrieve(
                name, ids=[point_uuid(i) for i in ids], with_payload=True, with_vectors=with_vectors
            )
        return _in_id_order(ids, [self._point(r, with_vectors) for r in records])

    def search(
        self,
        name: str,
        vector: np.ndarray,
        limit: int,
        *,
        filter: Filter | None = None,
        with_vectors: bool = False,
    ) -> list[Hit]:
        client = self._open()
        query = _vector_list(name, vector, self._dim(name))
        if limit <= 0:
            return []
        with self._errors(f"searching {name!r}"):
            response = client.query_points(
                name,
                query=query,
                query_filter=self._filter(filter),
                limit=limit,
                with_payload=True,
                with_vectors=with_vectors,
                search_params=self._search_params,
            )
        return [self._hit(s, with_vectors) for s in response.points]

    def search_batch(
        self, name: str, vectors: np.ndarray, limit: int, *, filters: Sequence[Filter | None],
    ) -> list[list[Hit]]:
        return [[self._hit(s, False) for s in points] for points in self._query_batch(name, vectors, limit, filters, True)]

    def search_ids(
        self, name: str, vectors: np.ndarray, limit: int, *, filters: Sequence[Filter | None],
    ) -> list[ScoredIds]:
        return [
            ScoredIds([_key_of(s) for s in points], [s.score for s in points])
            for points in self._query_batch(name, vectors, limit, filters, [KEY_FIELD])
        ]

    def _query_batch(
        self, name: str, vectors: np.ndarray, limit: int, filters: Sequence[Filter | None], payload: bool | list[str],
    ) -> list[list[Any]]:
        client = self._open()
        matrix = _matrix(name, vectors, self._dim(name))
        row_filters = _filters_per_row(matrix, filters, self._filter)
        if limit <= 0 or len(matrix) == 0:
            return [[] for _ in range(len(matrix))]
        requests = [
            self._m.QueryRequest(query=row.tolist(), filter=f, limit=limit, with_payload=payload,
                                 params=self._search_params)
            for row, f in zip(matrix, row_filters, strict=True)
        ]
        with self._errors(f"searching {name!r}"):
            responses = client.query_batch_points(name, requests=requests)
        return [r.points for r in responses]

    def count(self, name: str) -> int:
        client = self._open()
        with self._errors(f"counting {name!r}"):
            return client.count(name, exact=True).count

    def build_index(self, name: str) -> dict[str, Any]:
        """A server indexes in the background by its optimizer settings: report where it stands."""
        client = self._open()
        with self._errors(f"reading {name!r}"):
            info = client.get_collection(name)
        return {"points": info.points_count, "indexed_vectors": info.indexed_vectors_count,
                "segments": info.segments_count, "quantization": _quantization_name(
                    info.config.quantization_config.model_dump(mode="json")
                    if info.config.quantization_config is not None else None),
                "seconds": 0.0}

    def scroll_page(self, name: str, offset: Any = None, *, batch: int = 256,
                    with_vectors: bool = False) -> tuple[list[Point], Any]:
        if batch <= 0:
            raise ValueError(f"batch must be positive, got {batch}")
        client = self._open()
        with self._errors(f"scrolling {name!r}"):
            records, offset = client.scroll(name, limit=batch, offset=offset, with_payload=True,
                                            with_vectors=with_vectors)
        return [self._point(r, with_vectors) for r in records], offset

    # -- lifecycle

    def flush(self) -> None:
        # Writes use wait=True, so a server has them in its WAL when the call returns;
        # local memory mode has nothing to make durable.
        self._open()

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- internals

    def _open(self) -> QdrantClient:
        if self._client is None:
            raise StoreError(f"the vector store on {self._where} is closed")
        return self._client

    def _dim(self, name: str) -> int:
        dim = self._dims.get(name)
        if dim is None:
            with self._errors(f"looking up {name!r}"):
                vectors = self._open().get_collection(name).config.params.vectors
            if not isinstance(vectors, self._m.VectorParams):
                raise StoreError(f"collection {name!r} on {self._where} uses named vectors, which this store does not")
            dim = self._dims[name] = vectors.size
        return dim

    def _filter(self, f: Filter | None) -> Any:
        if f is None:
            return None
        m = self._m
        must: list[Any] = []
        for key, value in f.equals.items():
            value = value if isinstance(value, (str, bool)) else int(value)
            must.append(m.FieldCondition(key=key, match=m.MatchValue(value=value)))
        for key, values in f.any_of.items():
            anys = [v if isinstance(v, str) else int(v) for v in values]
            must.append(m.FieldCondition(key=key, match=m.MatchAny(any=anys)))
        for key, (lo, hi) in f.ranges.items():
            if lo is not None or hi is not None:
                must.append(m.FieldCondition(key=key, range=m.Range(gte=lo, lte=hi)))
        must_not = [m.HasIdCondition(has_id=[point_uuid(i) for i in f.exclude_ids])] if f.exclude_ids else []
        if not must and not must_not:
            return None
        return m.Filter(must=must or None, must_not=must_not or None)

    @staticmethod
    def _point(record: Any, with_vectors: bool) -> Point:
        key, payload = _unpack(record)
        return Point(key, _as_array(record.vector) if with_vectors else None, payload)

    @staticmethod
    def _hit(scored: Any, with_vectors: bool) -> Hit:
        key, payload = _unpack(scored)
        return Hit(key, float(scored.score), payload, _as_array(scored.vector) if with_vectors else None)

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn qdrant-client's transport, HTTP and local-mode errors into StoreError subclasses."""
        import httpx
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        try:
            yield
        except (ResponseHandlingException, httpx.TransportError) as exc:
            cause = getattr(exc, "source", exc)
            raise StoreUnavailable(
                f"{what}: Qdrant at {self._where} did not answer ({type(cause).__name__}: {cause}); "
                "check that the server is running and STREAMREC_QDRANT_URL points at it"
            ) from exc
        except UnexpectedResponse as exc:
            detail = exc.content.decode(errors="replace")[:300]
            if exc.status_code == 404:
                cls: type[StoreError] = CollectionNotFound if "ollection" in detail else PointNotFound
                raise cls(f"{what}: {detail}") from exc
            if exc.status_code in (401, 403):
                raise StoreUnavailable(
                    f"{what}: Qdrant at {self._where} refused the request ({exc.status_code}); "
                    "check the API key (STREAMREC_QDRANT_API_KEY)"
                ) from exc
            raise StoreError(f"{what}: Qdrant at {self._where} answered {exc.status_code}: {detail}") from exc
        except ValueError as exc:
            if re.fullmatch(r"Collection .* not found", str(exc)):  # local mode
                raise CollectionNotFound(f"{what}: {exc}") from exc
            raise


# --------------------------------------------------------------------------- factory


def open_store(*, url: str | None, api_key: str | None, data_dir: Path, timeout_s: float = 10.0,
               index: IndexParams = IndexParams()) -> VectorStore:
    """Open the store the settings ask for.

    url None or "": embedded Qdrant Edge under ``data_dir/"qdrant"``; ":memory:": qdrant-client's
    local memory mode; "http://..." or "https://...": a Qdrant server, checked at once.
    Raises StoreUnavailable if the directory is locked or the server cannot be reached.
    """
    if not url:
        return EdgeStore(Path(data_dir) / "qdrant", index=index)

    from qdrant_client import QdrantClient

    if url == ":memory:":
        return QdrantClientStore(QdrantClient(location=":memory:"), where=":memory:", local=True, index=index)
    if not re.match(r"https?://", url, re.IGNORECASE):
        raise ValueError(f"Qdrant url {url!r} must start with http:// or https:// (or be ':memory:' or empty)")
    client = QdrantClient(
        url=url,
        api_key=api_key or None,
        timeout=max(1, math.ceil(timeout_s)),
        check_compatibility=False,  # its probe only logs; ours below raises
    )
    store = QdrantClientStore(client, where=url, local=False, index=index)
    try:
        with store._errors("connecting"):
            client.get_collections()
    except BaseException:
        store.close()
        raise
    return store
