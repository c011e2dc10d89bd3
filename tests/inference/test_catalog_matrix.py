"""Exact search over the catalog arrays gives what the embedded engine gives for the same items
and filters, and the arrays follow every change made to them."""

from __future__ import annotations

import numpy as np
import pytest

from inference.catalog_matrix import CatalogMatrix
from inference.store import Filter, Point, open_store

DIM = 16


def _catalog(n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n // 20 + 1, DIM))
    vectors = (centres[np.arange(n) // 20] + 0.6 * rng.normal(size=(n, DIM))).astype(np.float32)
    payloads = [{"title": f"t{i}", "category": None if i % 17 == 0 else f"c{i % 7}",
                 "price": None if i % 13 == 0 else float(i % 40), "in_stock": i % 5 != 0} for i in range(n)]
    return [f"item{i}" for i in range(n)], vectors, payloads


def _matrix(ids, vectors, payloads) -> CatalogMatrix:
    m = CatalogMatrix(DIM, capacity=8)  # small: the arrays grow as items arrive
    for i, v, p in zip(ids, vectors, payloads):
        m.put(i, v, in_stock=p["in_stock"], category=p["category"], price=p["price"])
    return m


FILTERS = [
    None,
    Filter(equals={"in_stock": True}),
    Filter(equals={"in_stock": True}, exclude_ids=tuple(f"item{i}" for i in range(0, 300, 3))),
    Filter(equals={"in_stock": False, "category": "c3"}),
    Filter(any_of={"category": ["c1", "c4", "nowhere"]}, ranges={"price": (5.0, 25.0)}),
    Filter(ranges={"price": (None, 3.0)}),
    Filter(equals={"category": "nowhere"}),
]


@pytest.mark.parametrize("f", FILTERS, ids=lambda f: repr(f)[:60])
def test_the_arrays_find_what_the_engine_finds(tmp_path, f):
    ids, vectors, payloads = _catalog()
    store = open_store(url=None, api_key=None, data_dir=tmp_path)
    try:
        store.ensure_collection("items", DIM, keyword_fields=("category",), bool_fields=("in_stock",),
                                float_fields=("price",), compact_ids=True)
        store.upsert("items", [Point(i, v, p) for i, v, p in zip(ids, vectors, payloads)])
        queries = np.random.default_rng(1).normal(size=(5, DIM)).astype(np.float32)
        expected = store.search_ids("items", queries, 40, filters=[f] * 5)
    finally:
        store.close()
    found = _matrix(ids, vectors, payloads).search(queries, 40, filters=[f] * 5)
    for want, got in zip(expected, found):
        assert got.ids == want.ids
        assert np.allclose(got.scores, want.scores, atol=1e-5)


def test_queries_of_wide_and_restrictive_filters_mixed_in_one_call_get_their_own_answers():
    """Wide filters are scored in one product over every row, restrictive ones over the rows they
    pass: mixing them (and sharing Filter objects) in one call changes no query's answer."""
    m = _matrix(*_catalog())
    queries = np.random.default_rng(2).normal(size=(2 * len(FILTERS), DIM)).astype(np.float32)
    filters = FILTERS + FILTERS[::-1]
    together = m.search(queries, 25, filters=filters)
    for j, f in enumerate(filters):
        alone = m.search(queries[j:j + 1], 25, filters=[f])[0]
        assert together[j].ids == alone.ids and np.allclose(together[j].scores, alone.scores, atol=1e-6)


def test_a_row_follows_its_item_and_a_forgotten_row_is_reused():
    m = CatalogMatrix(2, capacity=2)
    m.put("a", np.array([1.0, 0.0]), in_stock=True, category="x", price=1.0)
    m.put("b", np.array([3.0, 4.0]), in_stock=True, category="x", price=2.0)  # stored at unit length
    m.put("c", np.array([0.0, 1.0]), in_stock=True, category="y", price=3.0)
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    (hit,) = m.search(q, 3, filters=[None])
    assert hit.ids == ["a", "b", "c"] and np.allclose(hit.scores, [1.0, 0.6, 0.0])

    m.put("a", np.array([1.0, 0.0]), in_stock=False, category="x", price=1.0)  # out of stock now
    assert m.search(q, 3, filters=[Filter(equals={"in_stock": True})])[0].ids == ["b", "c"]
    m.forget("b")
    assert "b" not in m and len(m) == 2
    m.put("d", np.array([0.8, 0.6]), in_stock=True, category=None, price=None)
    assert m._row["d"] == 1  # b's row
    np.testing.assert_allclose(m.vector("d"), [0.8, 0.6])  # d's own vector, not b's left behind
    assert m.vector("b") is None
    assert m.search(q, 5, filters=[None])[0].ids == ["a", "d", "c"]
    assert m.search(q, 5, filters=[Filter(equals={"category": "x"})])[0].ids == ["a"]
    assert m.search(q, 5, filters=[Filter(ranges={"price": (0.0, None)})])[0].ids == ["a", "c"]


def test_a_filter_on_a_field_the_arrays_do_not_hold_is_left_to_the_store():
    m = CatalogMatrix(2)
    m.put("a", np.ones(2), in_stock=True, category="x", price=1.0)
    assert m.answers(None) and m.answers(FILTERS[4])
    for f in (Filter(equals={"brand": "acme"}), Filter(any_of={"in_stock": [1]}), Filter(ranges={"rating": (4.0, None)})):
        assert not m.answers(f)
        with pytest.raises(ValueError, match="ask the store"):
            m.search(np.ones((1, 2), dtype=np.float32), 3, filters=[f])


def test_wrong_shapes_are_refused():
    m = CatalogMatrix(3)
    with pytest.raises(ValueError, match="3-d"):
        m.put("a", np.ones(2), in_stock=True, category=None, price=None)
    with pytest.raises(ValueError, match="3-d"):
        m.search(np.ones((1, 2), dtype=np.float32), 3, filters=[None])
    with pytest.raises(ValueError, match="2 filters"):
        m.search(np.ones((1, 3), dtype=np.float32), 3, filters=[None, None])
    assert m.search(np.ones((2, 3), dtype=np.float32), 3, filters=[None, None]) == [([], []), ([], [])]
