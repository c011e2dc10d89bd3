"""Popularity: decayed counts, and a top-n that ranks without decaying every count; the item cache
in front of a real embedded store."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference.catalog import ITEMS, ItemCache, ItemRecord, Popularity, record_from_point
from inference.store import Filter, Point, open_store

HALF_LIFE = 86_400.0

events = st.lists(
    st.tuples(st.sampled_from([f"i{k}" for k in range(30)]), st.floats(0.1, 5.0), st.floats(0, 60 * 86_400.0)),
    min_size=1, max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(events, st.integers(1, 40))
def test_top_matches_ranking_by_the_decayed_value(log, n):
    pop = Popularity(HALF_LIFE)
    for item, weight, ts in log:
        pop.add(item, weight, ts)
    top = pop.top(n)
    values = [pop.value(i) for i in top]
    assert values == pytest.approx(sorted(values, reverse=True), rel=1e-9)
    assert len(top) == min(n, len({item for item, _, _ in log}))
    rest = [pop.value(i) for i in pop.snapshot() if i not in top]
    if rest:
        assert min(values) >= max(rest) * (1 - 1e-9)
    asked = [*top, "never-counted", *top[:1]]
    assert pop.values(asked).tolist() == pytest.approx([pop.value(i) for i in asked], rel=1e-12)


items = st.sampled_from([f"i{k}" for k in range(25)])
times = st.floats(0, 60 * 86_400.0)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), items, st.sampled_from([0.0, 0.5, 1.0, 3.0]), times),
        st.tuples(st.just("merge"), items, st.floats(0.0, 5.0), times),
        st.tuples(st.just("restore"), items, st.floats(0.0, 5.0), times),
        st.tuples(st.just("forget"), items),
        st.tuples(st.just("top"), st.integers(1, 12)),
    ),
    min_size=1, max_size=150,
)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_top_kept_up_to_date_equals_ranking_everything_at_each_call(ops):
    """`top` keeps each asked-for n current as items are counted, merged, restored and forgotten:
    at every call it holds what ranking every counted item would give (ties in any order)."""
    pop = Popularity(HALF_LIFE)
    for op, *args in ops:
        if op == "top":
            [n] = args
            top = pop.top(n)
            keys = {i: pop._rank[i] for i in pop.snapshot()}
            expected = sorted(keys.values(), reverse=True)[:n]
            assert [keys[i] for i in top] == expected
            assert len(set(top)) == len(top)
        elif op == "forget":
            pop.forget(*args)
        else:
            getattr(pop, op)(*args)


def test_an_old_burst_ranks_below_steady_recent_interest():
    pop = Popularity(HALF_LIFE)
    for _ in range(8):
        pop.add("old", 1.0, 0.0)  # 8 a month ago
    pop.add("new", 1.0, 30 * 86_400.0)  # 1 today
    assert pop.top(2) == ["new", "old"]
    assert pop.value("old") == pytest.approx(8 * 0.5**30)


def test_restore_and_forget_keep_the_ranking_in_step():
    pop = Popularity(HALF_LIFE)
    pop.restore("a", 4.0, 0.0)
    pop.restore("b", 1.0, 86_400.0)
    assert pop.top(2) == ["a", "b"]  # 4 halved once beats 1
    pop.forget("a")
    assert pop.top(2) == ["b"]


# --------------------------------------------------------------------------- the item cache


def _point(item_id: str, price: float) -> Point:
    return Point(item_id, np.full(4, 0.5, dtype=np.float32), {"title": item_id, "price": price, "in_stock": True})


def test_the_item_cache_rereads_an_expired_record_and_forgets_an_item_the_store_lost(tmp_path):
    """Another worker changed or deleted the item in the shared store: this cache sees it once
    its copy expires, and not before (one read per batch of misses)."""
    store = open_store(url=None, api_key=None, data_dir=tmp_path)
    try:
        store.ensure_collection(ITEMS, 4)
        store.upsert(ITEMS, [_point("a", 1.0), _point("b", 2.0)])
        now = [0.0]
        cache = ItemCache(store, ttl_s=10.0, clock=lambda: now[0])
        assert {i: r.price for i, r in cache.get_many(["a", "b"]).items()} == {"a": 1.0, "b": 2.0}

        store.upsert(ITEMS, [_point("a", 9.0)])  # as another worker would
        store.delete(ITEMS, ["b"])
        now[0] = 9.9
        assert {i: r.price for i, r in cache.get_many(["a", "b"]).items()} == {"a": 1.0, "b": 2.0}
        now[0] = 10.0
        assert {i: r.price for i, r in cache.get_many(["a", "b"]).items()} == {"a": 9.0}
        assert [r.item_id for r in cache.records()] == ["a"] and len(cache) == 1

        cache.put(ItemRecord("c", np.zeros(4, dtype=np.float32), "c", None, 3.0, True))
        now[0] = 25.0  # both expired: still listed as the catalog last seen, re-read when asked for
        assert sorted(r.item_id for r in cache.records()) == ["a", "c"]
        assert cache.get_many(["c"]) == {}  # "c" was never in the store
        assert [r.item_id for r in cache.records()] == ["a"]
    finally:
        store.close()


def test_the_item_cache_evicts_the_least_recently_written_beyond_its_capacity(tmp_path):
    store = open_store(url=None, api_key=None, data_dir=tmp_path)
    try:
        store.ensure_collection(ITEMS, 4)
        store.upsert(ITEMS, [_point(f"i{n}", float(n)) for n in range(5)])
        cache = ItemCache(store, capacity=3)
        cache.get_many([f"i{n}" for n in range(5)])
        assert len(cache) == 3
        assert len(cache.get_many([f"i{n}" for n in range(5)])) == 5  # evicted ones are read again
    finally:
        store.close()


def test_the_cache_mirrors_what_it_holds_into_its_matrix_and_says_when_it_holds_everything(tmp_path):
    """A re-read record, a forgotten one and a full read (`load`) all reach the arrays that the
    recommender searches; `complete` holds after a full read within capacity, not after an eviction."""
    store = open_store(url=None, api_key=None, data_dir=tmp_path)
    try:
        store.ensure_collection(ITEMS, 4)
        store.upsert(ITEMS, [_point(f"i{n}", float(n)) for n in range(4)])
        now = [0.0]
        cache = ItemCache(store, capacity=5, ttl_s=10.0, clock=lambda: now[0], matrix_dim=4, matrix_max_items=5)
        assert not cache.complete
        cache.load(record_from_point(p) for p in store.scroll(ITEMS, with_vectors=True))
        assert cache.complete and len(cache.matrix) == 4

        store.upsert(ITEMS, [_point("i0", 99.0), _point("new", 1.0)])  # another worker
        store.delete(ITEMS, ["i1"])
        now[0] = 10.0
        cache.get_many(["i0", "i1"])  # expired: read again
        assert "i1" not in cache.matrix and "new" not in cache.matrix
        cheap = Filter(ranges={"price": (None, 50.0)})
        assert "i0" not in cache.matrix.search(np.ones((1, 4), dtype=np.float32), 10, filters=[cheap])[0].ids

        cache.put(ItemRecord("mine", np.ones(4, dtype=np.float32), "mine", None, 2.0, True))  # written here
        cache.load([record_from_point(p) for p in store.scroll(ITEMS, with_vectors=True)], keep=["mine"])
        assert sorted(r.item_id for r in cache.records()) == ["i0", "i2", "i3", "mine", "new"]
        assert len(cache.matrix) == 5 and cache.complete

        cache.put(ItemRecord("sixth", np.ones(4, dtype=np.float32), "sixth", None, 2.0, True))
        assert len(cache) == 5 and len(cache.matrix) == 5 and not cache.complete  # one was evicted
    finally:
        store.close()


def test_the_mirror_is_dropped_past_its_maximum_and_built_again_by_a_full_read_that_fits(tmp_path):
    store = open_store(url=None, api_key=None, data_dir=tmp_path)
    try:
        store.ensure_collection(ITEMS, 4)
        store.upsert(ITEMS, [_point(f"i{n}", float(n)) for n in range(3)])
        cache = ItemCache(store, matrix_dim=4, matrix_max_items=3)
        cache.load(record_from_point(p) for p in store.scroll(ITEMS, with_vectors=True))
        assert len(cache.matrix) == 3
        cache.put(ItemRecord("i3", np.ones(4, dtype=np.float32), "i3", None, 3.0, True))
        assert cache.matrix is None and len(cache) == 4  # the store searches a catalog this big
        cache.load(record_from_point(p) for p in store.scroll(ITEMS, with_vectors=True))  # i3 was never stored
        assert len(cache.matrix) == 3 and sorted(cache.matrix._row) == ["i0", "i1", "i2"]
        assert ItemCache(store).matrix is None and ItemCache(store, matrix_dim=4).matrix is None  # off by default
    finally:
        store.close()
