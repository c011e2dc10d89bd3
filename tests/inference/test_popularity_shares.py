"""inference/popularity_shares.py: shares merge to the single count, and workers see each other's."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference.catalog import Popularity
from inference.popularity_shares import LEGACY_SHARE, SHARES, PopularityShares, combine, combine_all, segment_share
from inference.profiles import EVENT_WEIGHTS
from inference.recommender import Recommender
from inference.schemas import EventType
from inference.store import open_store
from tests.inference.test_recommender import ITEMS, ev
from tests.inference.test_recommender import settings as engine_settings

HALF_LIFE_S = 3600.0

events = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.floats(0.1, 5.0), st.floats(0.0, 20_000.0), st.integers(0, 3)),
    max_size=40,
)


@given(events)
@settings(max_examples=200, deadline=None)
def test_shares_combine_to_what_one_counter_of_every_event_holds(stream):
    """Events in time order, each counted into one of four shares (its partition): the merge of
    the shares equals one Popularity that counted them all, whatever the split and merge order."""
    stream = sorted(stream, key=lambda e: e[2])
    whole, shares = Popularity(HALF_LIFE_S), [Popularity(HALF_LIFE_S) for _ in range(4)]
    for item, weight, ts, share in stream:
        whole.add(item, weight, ts)
        shares[share].add(item, weight, ts)
    snapshots = [p.snapshot() for p in shares]
    for order in (snapshots, snapshots[::-1]):
        merged = combine(order, HALF_LIFE_S)
        merged.now = whole.now
        for item in "abc":
            assert abs(merged.value(item) - whole.value(item)) <= 1e-9 * max(1.0, whole.value(item))
    if stream:  # the same ranking, up to the order of items tied on count and time
        top, expected = combine(snapshots, HALF_LIFE_S).top(3), whole.top(3)
        assert sorted(top) == sorted(expected)
        assert [whole.value(i) for i in top] == pytest.approx([whole.value(i) for i in expected], rel=1e-9)


def test_segment_shares_combine_apart_from_the_item_shares():
    shares = {"0": {"a": [2.0, 10.0]}, "1": {"a": [1.0, 10.0]}, segment_share("0", "loyal"): {"b": [1.0, 10.0]},
              segment_share("1", "loyal"): {"b": [3.0, 10.0], "a": [1.0, 10.0]}, segment_share("1", "new"): {"c": [1.0, 5.0]}}
    items, by_segment = combine_all(shares, HALF_LIFE_S)
    assert items.snapshot() == {"a": (3.0, 10.0)}
    assert set(by_segment) == {"loyal", "new"}
    assert by_segment["loyal"].snapshot() == {"b": (4.0, 10.0), "a": (1.0, 10.0)}
    assert by_segment["new"].snapshot() == {"c": (1.0, 5.0)}


def purchases(item: str, n: int, user: str) -> list:
    return [ev(k, f"{user}{k}", item) for k in range(n)]


def test_workers_rank_by_every_partitions_counts_after_a_flush(tmp_path: Path, tiny_encoder):
    s = engine_settings(tmp_path, exploration_rate=0.0)
    store = open_store(url=None, api_key=None, data_dir=s.data_dir)
    try:
        a = Recommender(tiny_encoder, store, s)
        a.upsert_items(ITEMS)
        b = Recommender(tiny_encoder, store, s)
        a.process_events(purchases("i1", 3, "a"), shares=["0"] * 3)
        b.process_events(purchases("i2", 5, "b"), shares=["1"] * 5)
        assert a.popularity.top(5) == ["i1"] and b.popularity.top(5) == ["i2"]  # each its own, until a flush
        a.flush_state()
        b.flush_state()
        a.flush_state()
        for worker in (a, b):
            assert worker.popularity.top(2) == ["i2", "i1"]
            assert round(worker.popularity.value("i2") / worker.popularity.value("i1"), 6) == round(5 / 3, 6)
        assert set(PopularityShares(store).all()) == {"0", "1"}

        # Partition 0 moves to b: b goes on from a's share; a, which counts nothing more into it,
        # stops writing it and reads b's counts from the store.
        b.process_events(purchases("i1", 4, "b-moved"), shares=["0"] * 4)
        a.flush_state()
        b.flush_state()
        a.flush_state()
        assert PopularityShares(store).get("0")["i1"][0] == 7 * EVENT_WEIGHTS[EventType.purchase]  # 3 + 4
        assert a.popularity.top(2) == b.popularity.top(2) == ["i1", "i2"]
        assert a.popularity.value("i1") == b.popularity.value("i1")

        # Purchases per value segment are shared the same way.
        for k, item in enumerate(["i3", "i4", "i4", "i4"]):  # counted for the segment before each purchase
            a.process_events([ev(k, "regular", item, minutes=k)], shares=["2"])
        assert a.segment_popularity and not b.segment_popularity
        a.flush_state()
        b.flush_state()
        assert {seg: pop.snapshot() for seg, pop in b.segment_popularity.items()} == \
               {seg: pop.snapshot() for seg, pop in a.segment_popularity.items()}

        # A restarted worker ranks by the shares in the store.
        c = Recommender(tiny_encoder, store, s)
        assert c.popularity.top(2) == ["i1", "i2"] and c.popularity.value("i1") == a.popularity.value("i1")
    finally:
        store.close()


def test_a_store_with_one_popularity_blob_keeps_it_as_a_share(tmp_path: Path, tiny_encoder):
    s = engine_settings(tmp_path)
    store = open_store(url=None, api_key=None, data_dir=s.data_dir)
    try:
        first = Recommender(tiny_encoder, store, s)
        first.upsert_items(ITEMS)
        # As workers before shares wrote them: one blob each, overwritten by every worker.
        first.blobs.put("popularity", {"i5": [4.0, 1_300_000_000.0]})
        first.blobs.put("segment_popularity", {"loyal": {"i6": [2.0, 1_300_000_000.0]}})
        second = Recommender(tiny_encoder, store, s)
        assert second.popularity.top(1) == ["i5"] and second.popularity.value("i5") == 4.0
        assert second.segment_popularity["loyal"].snapshot() == {"i6": (2.0, 1_300_000_000.0)}
        assert first.blobs.get("popularity") is None and first.blobs.get("segment_popularity") is None
        assert PopularityShares(store).all() == {LEGACY_SHARE: {"i5": [4.0, 1_300_000_000.0]},
                                                 segment_share(LEGACY_SHARE, "loyal"): {"i6": [2.0, 1_300_000_000.0]}}
        assert store.count(SHARES) == 2
    finally:
        store.close()


def test_a_merge_made_off_the_recommender_thread_keeps_what_was_counted_meanwhile(tmp_path: Path, tiny_encoder):
    """The worker writes its shares, merges them on another thread while batches go on, then
    installs the merge: events counted in between (items and segments) are still in the ranking,
    exactly as if everything had been flushed at once."""
    s = engine_settings(tmp_path, exploration_rate=0.0)
    stepped_store = open_store(url=None, api_key=None, data_dir=tmp_path / "stepped")
    whole_store = open_store(url=None, api_key=None, data_dir=tmp_path / "whole")
    try:
        stepped, whole = Recommender(tiny_encoder, stepped_store, s), Recommender(tiny_encoder, whole_store, s)
        before = purchases("i1", 3, "a") + [ev(k, "regular", "i3", minutes=k) for k in range(3)]
        meanwhile = purchases("i2", 5, "b") + [ev(3 + k, "regular", "i4", minutes=3 + k) for k in range(2)]
        for engine in (stepped, whole):
            engine.upsert_items(ITEMS)
            engine.process_events(before, shares=["0"] * len(before))
        shares = stepped.write_state()
        stepped.process_events(meanwhile, shares=["1"] * len(meanwhile))
        stepped.popularity.top(5)  # as a user without candidates gets popular items
        asked = stepped.popularity.tops_kept()
        assert asked == (5,)
        merged = stepped.merge_popularity(shares)
        assert merged[0].tops_kept() == asked  # ranked off the recommender thread
        stepped.install_popularity(merged)
        whole.process_events(meanwhile, shares=["1"] * len(meanwhile))
        whole.flush_state()
        assert stepped.popularity.snapshot() == whole.popularity.snapshot()
        assert stepped.popularity.top(1) == ["i2"]  # counted only meanwhile
        for n in asked:  # the tops kept through the install equal a fresh ranking
            assert [stepped.popularity._rank[i] for i in stepped.popularity.top(n)] == \
                   [whole.popularity._rank[i] for i in whole.popularity.top(n)]
        assert any("i4" in p.snapshot() for p in stepped.segment_popularity.values())  # likewise
        assert {seg: p.snapshot() for seg, p in stepped.segment_popularity.items()} == \
               {seg: p.snapshot() for seg, p in whole.segment_popularity.items()}
        stepped.flush_state()  # and the next flush writes what was counted meanwhile
        assert PopularityShares(stepped_store).get("1")["i2"][0] == 5 * EVENT_WEIGHTS[EventType.purchase]
    finally:
        stepped_store.close()
        whole_store.close()
