"""The catalog as arrays (unit vectors, stock, category, price), searched exactly in memory.

Why: the worker retrieves a few queries per recommendation, and the embedded engine scores each
against every point of an unindexed collection. Over 3,453 items one float32 matrix product
answers a query in about a third of the engine's time (p50 0.33 against 0.91 ms; 32 queries per
call 12,909 against 4,563 queries/s), exactly (bench/retrieval.py, bench/reports/perf-20261207b). Past tens of thousands of items an HNSW index wins, so the recommender asks this
only up to `STREAMREC_EXACT_RETRIEVAL_MAX_ITEMS` (inference/recommender.py) and asks the store
above it. The store stays the catalog's truth: these arrays mirror the worker's item cache.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from inference.store import Filter, ScoredIds

_MISSING = -1  # the category code of an item without one

# What a filter may name for the arrays to answer it; a filter on any other payload field goes
# to the store, which holds the whole payload.
EQUALS_FIELDS = frozenset({"in_stock", "category"})
ANY_OF_FIELDS = frozenset({"category"})
RANGE_FIELDS = frozenset({"price"})

# A filter passing fewer than 1 in this many items is searched over the rows it passes alone.
RESTRICTIVE_SHARE_INVERSE = 4


class CatalogMatrix:
    """Rows of items, found by id; a forgotten item's row is reused by the next new one.

    Scores are cosines (`normalize`, the store's metric for text vectors) or, for the event
    encoder's item vectors, plain dot products: their lengths are part of what training learned."""

    def __init__(self, dim: int, capacity: int = 1024, *, normalize: bool = True) -> None:
        self.dim = dim
        self.normalize = normalize
        self._ids: list[str | None] = []
        self._row: dict[str, int] = {}
        self._free: list[int] = []
        self._vectors = np.zeros((capacity, dim), dtype=np.float32)
        self._live = np.zeros(capacity, dtype=bool)
        self._in_stock = np.zeros(capacity, dtype=bool)
        self._category = np.full(capacity, _MISSING, dtype=np.int32)
        self._price = np.full(capacity, np.nan, dtype=np.float64)
        self._codes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._row

    def _grow(self) -> None:
        size = 2 * len(self._live)
        self._vectors = np.resize(self._vectors, (size, self.dim))
        for name, fill in (("_live", False), ("_in_stock", False), ("_category", _MISSING), ("_price", np.nan)):
            old = getattr(self, name)
            new = np.full(size, fill, dtype=old.dtype)
            new[:len(old)] = old
            setattr(self, name, new)

    def put(self, item_id: str, vector: np.ndarray, *, in_stock: bool, category: str | None,
            price: float | None) -> None:
        """Add an item or overwrite its row. With `normalize` the vector is stored at unit length:
        the store searches by cosine, so a score here is the same number it would give."""
        row = self._row.get(item_id)
        if row is None:
            if self._free:
                row = self._free.pop()
            else:
                row = len(self._ids)
                if row == len(self._live):
                    self._grow()
                self._ids.append(None)
            self._row[item_id] = row
            self._ids[row] = item_id
        v = np.asarray(vector, dtype=np.float32)
        if v.shape != (self.dim,):
            raise ValueError(f"item {item_id!r}: a vector of shape {v.shape}, the catalog holds {self.dim}-d ones")
        norm = float(np.linalg.norm(v)) if self.normalize else 0.0
        self._vectors[row] = v / norm if norm > 0 else v
        self._live[row] = True
        self._in_stock[row] = in_stock
        self._category[row] = _MISSING if category is None else self._codes.setdefault(category, len(self._codes))
        self._price[row] = np.nan if price is None else price

    def vector(self, item_id: str) -> np.ndarray | None:
        """The item's stored vector (unit length with `normalize`), or None if it is not held."""
        row = self._row.get(item_id)
        return None if row is None else self._vectors[row]

    def forget(self, item_id: str) -> None:
        row = self._row.pop(item_id, None)
        if row is None:
            return
        self._ids[row] = None
        self._live[row] = False
        self._free.append(row)

    @staticmethod
    def answers(f: Filter | None) -> bool:
        """Whether every condition of `f` names a field these arrays hold."""
        return f is None or (set(f.equals) <= EQUALS_FIELDS and set(f.any_of) <= ANY_OF_FIELDS
                             and set(f.ranges) <= RANGE_FIELDS)

    def _mask(self, f: Filter | None) -> np.ndarray:
        """Rows that pass `f`, with the store's meaning: every condition must hold, and an item
        without the field a condition names fails it."""
        n = len(self._ids)
        mask = self._live[:n].copy()
        if f is None:
            return mask
        if not self.answers(f):
            raise ValueError(f"the catalog arrays cannot answer {f!r}: ask the store")
        for key, value in f.equals.items():
            if key == "in_stock":
                mask &= self._in_stock[:n] == bool(value) if isinstance(value, bool) else False
            else:
                mask &= self._category[:n] == self._codes.get(value, -2) if isinstance(value, str) else False
        for values in f.any_of.values():
            codes = [self._codes[v] for v in values if isinstance(v, str) and v in self._codes]
            mask &= np.isin(self._category[:n], codes)
        for lo, hi in f.ranges.values():
            if lo is None and hi is None:
                continue
            price = self._price[:n]
            with np.errstate(invalid="ignore"):
                mask &= ~np.isnan(price) & (price >= (-np.inf if lo is None else lo)) \
                    & (price <= (np.inf if hi is None else hi))
        for item_id in f.exclude_ids:
            row = self._row.get(item_id)
            if row is not None:
                mask[row] = False
        return mask

    def search(self, queries: np.ndarray, limit: int, *, filters: Sequence[Filter | None]) -> list[ScoredIds]:
        """Each query's `limit` best items (by cosine, or dot product without `normalize`) among
        those its filter passes, best first:
        `VectorStore.search_ids` answered from the arrays.

        Queries sharing a Filter object (a user's several queries) share one mask. Queries whose
        filter passes most items are scored in one product against every row: a handful of
        queries costs about what one does, the rows being read once. A restrictive filter's
        queries score only the rows it passes, as the engine does with its payload index."""
        matrix = np.asarray(queries, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] != self.dim:
            raise ValueError(f"queries of shape {matrix.shape}, the catalog holds {self.dim}-d vectors")
        if len(filters) != len(matrix):
            raise ValueError(f"search got {len(matrix)} queries but {len(filters)} filters")
        n = len(self._ids)
        if limit <= 0 or n == 0 or len(matrix) == 0:
            return [ScoredIds([], []) for _ in range(len(matrix))]
        if self.normalize:
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            matrix = matrix / np.where(norms > 0, norms, 1.0)
        groups: dict[int, tuple[Filter | None, list[int]]] = {}
        for j, f in enumerate(filters):
            groups.setdefault(id(f), (f, []))[1].append(j)
        out: list[ScoredIds | None] = [None] * len(matrix)
        dense: list[tuple[list[int], np.ndarray]] = []
        for f, rows in groups.values():
            passing = np.flatnonzero(self._mask(f))
            if len(passing) * RESTRICTIVE_SHARE_INVERSE < n:
                for j, scores in zip(rows, matrix[rows] @ self._vectors[passing].T):
                    out[j] = self._best(scores, passing, limit)
            else:
                dense.append((rows, passing))
        if dense:
            order = [j for rows, _ in dense for j in rows]
            products = iter(matrix[order] @ self._vectors[:n].T)
            for rows, passing in dense:
                for j in rows:
                    out[j] = self._best(next(products)[passing], passing, limit)
        return out

    def _best(self, scores: np.ndarray, rows: np.ndarray, limit: int) -> ScoredIds:
        """The `limit` highest of `scores` (those of `rows`), best first."""
        top = np.argpartition(-scores, limit - 1)[:limit] if len(scores) > limit else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        ids = self._ids
        return ScoredIds([ids[r] for r in rows[top].tolist()], scores[top].tolist())
