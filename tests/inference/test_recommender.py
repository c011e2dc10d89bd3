"""The engine as a library, on the tiny ONNX encoder and a real embedded Qdrant: exploration and
its feedback loop, value segments, explanations, A/B variants, interest groups, erasure."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from inference.catalog import item_payload
from inference.exploration import Arm
from inference.profile_store import USERS
from inference.recommender import Recommender
from inference.schemas import (
    Erasure, Event, EventType, Intent, Item, Recommendation, RequestFilters, SegmentChange,
)
from inference.settings import InferenceSettings
from inference.store import Filter, Point, open_store, point_u64, point_uuid

T0 = datetime(2011, 5, 1, 10, 0, tzinfo=timezone.utc)
WORDS = ["teacup", "candle", "doormat", "lantern", "notebook", "apron", "clock", "basket"]
ITEMS = [Item(schema=1, item_id=f"i{n}", title=f"{WORDS[n % 8]} {WORDS[(n // 8) % 8]} model {n}", price=1.0 + n)
         for n in range(64)]


def settings(tmp_path: Path, **kw) -> InferenceSettings:
    base = dict(data_dir=tmp_path, topics=6, interest_groups=2, exploration_rate=0.3,
                rfm_frequency=[2, 3, 4, 5], rfm_monetary=[5, 10, 20, 40])
    return InferenceSettings(**{**base, **kw})


def open_engine(tmp_path: Path, tiny_encoder, **kw) -> Recommender:
    s = settings(tmp_path, **kw)
    return Recommender(tiny_encoder, open_store(url=None, api_key=None, data_dir=s.data_dir), s)


@pytest.fixture
def engine(tmp_path, tiny_encoder):
    r = open_engine(tmp_path, tiny_encoder)
    r.upsert_items(ITEMS)
    yield r
    r.store.close()


def ev(n, user, item, type=EventType.purchase, minutes=0, rec_id=None, price=5.0):
    return Event(schema=1, event_id=f"{user}-e{n}", user_id=user, type=type, ts=T0 + timedelta(minutes=minutes),
                 item_id=item, quantity=1, price=price, rec_id=rec_id)


def recs(messages) -> list[Recommendation]:
    return [m for m in messages if isinstance(m, Recommendation)]


def test_explored_slots_are_marked_new_to_the_user_and_explained(engine):
    seen_explore = 0
    for n in range(12):
        user = f"u{n}"
        rec = recs(engine.process_events([ev(0, user, "i1"), ev(1, user, "i9", minutes=1)]))[0]
        assert len(rec.items) == 10 and [i.position for i in rec.items] == list(range(1, 11))
        known = {engine.topics.of("i1"), engine.topics.of("i9")}
        for item in rec.items:
            if item.explore:
                seen_explore += 1
                assert engine.topics.of(item.item_id) not in known
                assert item.reason.startswith("something new to explore: ")
                assert engine.topics.name(engine.topics.of(item.item_id)) in item.reason
            assert item.item_id not in {"i1", "i9"}
        assert len({i.item_id for i in rec.items}) == len(rec.items)
    assert seen_explore > 0
    assert 0 < engine.status()["explored_share"] < 0.7


def test_a_click_on_an_explored_item_updates_the_bandit_once(engine):
    rec = None
    for n in range(30):  # find a recommendation that explored
        rec = recs(engine.process_events([ev(0, f"c{n}", "i2")]))[0]
        if any(i.explore for i in rec.items):
            break
    explored = next(i for i in rec.items if i.explore)
    topic = engine.topics.of(explored.item_id)
    user = rec.user_id
    before = engine.arms.get(topic, Arm())
    engine.process_events([ev(10, user, explored.item_id, EventType.impression, 1, rec_id=rec.rec_id)])
    assert engine.arms[topic] == Arm(before.shown + 1, before.rewarded)
    click = ev(11, user, explored.item_id, EventType.click, 2, rec_id=rec.rec_id)
    engine.process_events([click])
    assert engine.arms[topic] == Arm(before.shown + 1, before.rewarded + 1)
    assert engine.profile(user).topics[topic] == Arm(1, 1)
    engine.process_events([click])  # redelivered: nothing twice
    engine.process_events([ev(12, user, explored.item_id, EventType.purchase, 3, rec_id=rec.rec_id)])
    assert engine.arms[topic] == Arm(before.shown + 1, before.rewarded + 1)
    # a click on an exploited item of the same recommendation teaches the bandit nothing
    exploited = next(i for i in rec.items if not i.explore)
    engine.process_events([ev(13, user, exploited.item_id, EventType.click, 4, rec_id=rec.rec_id)])
    assert engine.arms[topic] == Arm(before.shown + 1, before.rewarded + 1)


def test_bandit_and_topics_survive_a_restart(tmp_path, tiny_encoder):
    engine = open_engine(tmp_path, tiny_encoder)
    engine.upsert_items(ITEMS)
    rec = next(r for n in range(30) for r in recs(engine.process_events([ev(0, f"r{n}", "i3")]))
               if any(i.explore for i in r.items))
    explored = next(i for i in rec.items if i.explore)
    engine.process_events([ev(1, rec.user_id, explored.item_id, EventType.click, 1, rec_id=rec.rec_id)])
    arms, names = dict(engine.arms), list(engine.topics.names)
    engine.store.close()
    again = open_engine(tmp_path, tiny_encoder)
    try:
        assert again.arms == arms and again.topics.names == names
        assert again.topics.of(explored.item_id) == engine.topics.of(explored.item_id)
        assert again.profile(rec.user_id).topics == engine.profile(rec.user_id).topics
    finally:
        again.store.close()


def test_segments_change_after_the_right_purchases(engine):
    user = "shopper"
    out = engine.process_events([ev(0, user, "i1", EventType.view)])
    changes = [m for m in out if isinstance(m, SegmentChange)]
    assert [(c.segment, c.previous) for c in changes] == [("prospect", None)]
    out = engine.process_events([ev(1, user, "i2", minutes=1)])
    (change,) = [m for m in out if isinstance(m, SegmentChange)]
    assert (change.segment, change.previous, change.f) == ("new", "prospect", 1)
    assert 0.0 <= change.purchase_probability <= 1.0 and change.horizon_days == 30
    out = engine.process_events([ev(2, user, "i3", minutes=2)])  # f = 2: potential loyalist
    assert [(c.segment, c.previous) for c in out if isinstance(c, SegmentChange)] == [("potential_loyalist", "new")]
    out = engine.process_events([ev(3, user, "i4", minutes=3, price=1.0)])  # f = 3, still potential? no: loyal
    assert [c.segment for c in out if isinstance(c, SegmentChange)] == ["loyal"]
    out = engine.process_events([ev(4, user, "i6", minutes=4, price=50.0)])  # f = 4: champions
    assert [c.segment for c in out if isinstance(c, SegmentChange)] == ["champions"]
    out = engine.process_events([ev(5, user, "i7", EventType.view, minutes=5)])  # a view changes nothing
    assert not [c for c in out if isinstance(c, SegmentChange)]
    assert engine.profile(user).segment == "champions"
    assert engine.status()["segments"]["champions"] == 1


def test_a_catalog_change_another_worker_consumed_reaches_this_one_within_the_cache_ttl(tmp_path, tiny_encoder):
    """Each worker consumes only its share of the items topic. Worker b, which never saw the
    messages, must stop recommending a deleted item, and apply a new price to its filters, once
    its cached copies expire (STREAMREC_ITEM_CACHE_TTL_S)."""
    s = settings(tmp_path, item_cache_ttl_s=0.5, exploration_rate=0.0)
    store = open_store(url=None, api_key=None, data_dir=s.data_dir)
    try:
        a = Recommender(tiny_encoder, store, s)
        a.upsert_items(ITEMS)
        b = Recommender(tiny_encoder, store, s)  # warm-loads the catalog from the shared store
        bought = ["i1"] * 4 + ["i2"] * 3 + [f"i{n}" for n in range(3, 15)]
        b.process_events([ev(n, f"fan{n}", item) for n, item in enumerate(bought)])  # b's own popularity

        def popular_under(max_price: float) -> list[str]:
            filters = RequestFilters(max_price=max_price)
            return [i.item_id for i in b.recommend("newcomer", k=10, filters=filters).items]

        assert popular_under(100.0)[:2] == ["i1", "i2"]
        a.upsert_items([Item(schema=1, item_id="i1", title="", deleted=True),
                        ITEMS[2].model_copy(update={"price": 500.0})])
        assert popular_under(100.0)[:2] == ["i1", "i2"]  # b still trusts its copies
        time.sleep(0.6)
        after = popular_under(100.0)
        assert "i1" not in after and "i2" not in after and len(after) == 10
        assert set(after) <= {f"i{n}" for n in range(3, 15)}
    finally:
        store.close()


def test_a_deleted_item_leaves_every_popularity_count(engine):
    # A purchase counts for the segment the buyer is in before it (none for the first one).
    engine.process_events([ev(0, "buyer", "i3")])
    engine.process_events([ev(1, "buyer", "i1", minutes=1), ev(2, "buyer", "i2", minutes=2)])

    def counted(item_id: str) -> bool:
        return any(item_id in pop.snapshot() for pop in engine.segment_popularity.values())

    assert counted("i1") and counted("i2") and "i1" in engine.popularity.snapshot()

    engine.upsert_items([Item(schema=1, item_id="i1", title="", deleted=True)])

    assert "i1" not in engine.popularity.snapshot() and not counted("i1")
    assert counted("i2")


def test_every_reason_cites_something_true_of_the_user(engine):
    engine.seed_interests([Intent(schema=1, user_id="talker", text="teacup and candle lover")])
    engine.process_events([ev(0, "talker", "i0", EventType.view), ev(1, "talker", "i17", minutes=1)])
    for n in range(20):
        engine.process_events([ev(0, f"g{n}", f"i{n}"), ev(1, f"g{n}", f"i{n + 8}", minutes=1)])
    engine.refresh_groups()
    assert engine.groups is not None
    for user in ["talker", "g1", "g5", "newcomer"]:
        rec = engine.recommend(user)
        profile = engine.profile(user)
        titles = {r.item_id: engine.items.get_many([r.item_id])[r.item_id].title for r in profile.recent}
        for item in rec.items:
            reason = item.reason
            if reason.startswith("because you "):
                cited = reason.split('"')[1]
                assert cited in titles.values(), (user, reason)
            elif reason.startswith("something new to explore"):
                assert item.explore
            elif reason == "matches the interests you told us about":
                assert profile.stated_interest
            elif reason.startswith("popular with shoppers who like"):
                assert reason.split('"')[1] == engine.groups.group_of(profile.long_term.direction())[0]
            elif reason.startswith("popular with our"):
                assert profile.segment and profile.segment.replace("_", " ") in reason
            elif reason == "close to your recent activity":
                assert profile.recent
            else:
                assert reason in ("popular with shoppers right now", "new in the catalog"), reason


def test_ab_variants_are_recorded_and_change_the_strategy(tmp_path, tiny_encoder):
    engine = open_engine(tmp_path, tiny_encoder, exploration_rate=0.0, ab_variants={
        "control": {"weight": 1}, "explore": {"weight": 1, "exploration_rate": 1.0}})
    engine.upsert_items(ITEMS)
    try:
        by_variant: dict[str, list[Recommendation]] = {}
        for n in range(16):
            rec = recs(engine.process_events([ev(0, f"ab{n}", "i4")]))[0]
            assert rec.variant == engine.strategy(rec.user_id).variant
            by_variant.setdefault(rec.variant, []).append(rec)
        assert set(by_variant) == {"control", "explore"}
        assert not any(i.explore for r in by_variant["control"] for i in r.items)
        assert all(any(i.explore for i in r.items) for r in by_variant["explore"])
    finally:
        engine.store.close()


def test_interest_centroids_retrieve_around_each_interest(engine):
    user = "two-hobbies"
    engine.process_events([ev(n, user, item, EventType.view, n) for n, item in enumerate(["i0", "i8", "i3", "i11"])])
    queries = engine._queries(engine.profile(user), 3)
    assert 1 <= len(queries) <= 4
    assert all(np.isclose(np.linalg.norm(q), 1.0, atol=1e-4) for q in queries)


@pytest.mark.parametrize("phrases", [8, 0])
def test_an_intent_that_lists_interests_is_answered_from_each_of_them(tmp_path, tiny_encoder, phrases):
    """"teacup teacup, lantern lantern" retrieves with the whole text and with each phrase: an item's
    similarity is its best cosine to any of them (the offline phrase match); 0 turns it off."""
    engine = open_engine(tmp_path, tiny_encoder, exploration_rate=0.0, intent_phrases=phrases)
    try:
        engine.upsert_items(ITEMS)
        text = "teacup teacup, lantern lantern"
        (rec,) = engine.seed_interests([Intent(schema=1, user_id="new", text=text)])
        profile = engine.profile("new")
        assert len(profile.stated_phrases) == (2 if phrases else 0)
        assert engine.describe_user("new")["stated_interests_retrieved"] == len(profile.stated_phrases)
        queries = np.stack(engine._queries(profile, engine.settings.interest_clusters))
        vectors = tiny_encoder.encode([text, "teacup teacup", "lantern lantern"])
        assert np.allclose(queries, vectors[:len(queries)], atol=1e-5)
        records = engine.items.get_many(i.item_id for i in ITEMS)
        best = {i: float(np.max(queries @ r.vector)) for i, r in records.items()}
        expected = sorted(best, key=lambda i: (-best[i], i))[:10]
        assert [i.item_id for i in rec.items] == expected
    finally:
        engine.store.close()


def test_exact_retrieval_in_memory_recommends_what_the_store_recommends(tmp_path, tiny_encoder):
    """The same events, the same catalog: one engine retrieves from its in-memory arrays (the
    default for a catalog this size), the other from the embedded store; the answers match."""
    answers = []
    for max_items in (20_000, 0):
        engine = open_engine(tmp_path / str(max_items), tiny_encoder, exact_retrieval_max_items=max_items,
                             exploration_rate=0.0)
        try:
            engine.upsert_items(ITEMS)
            calls = []
            engine.store.search_ids = lambda *a, _search=engine.store.search_ids, **kw: calls.append(1) or _search(*a, **kw)
            events = [ev(n, f"u{n % 5}", f"i{(n * 7) % 64}", EventType.view, n) for n in range(30)]
            answers.append([[i.item_id for i in r.items] for r in recs(engine.process_events(events))])
            filters = RequestFilters(category=None, min_price=10.0, max_price=40.0)
            answers[-1].append([i.item_id for i in engine.recommend("u1", k=8, filters=filters).items])
            assert bool(calls) == (max_items == 0)
        finally:
            engine.store.close()
    assert answers[0] == answers[1] and all(answers[0])


def test_a_catalog_refresh_brings_other_workers_items_and_keeps_this_ones_newer_changes(tmp_path, tiny_encoder):
    """With a shared store the worker reads the catalog again (refresh_catalog): an item another
    worker added becomes retrievable, one it deleted leaves; an item this worker changed while
    the read ran keeps this worker's version."""
    engine = open_engine(tmp_path, tiny_encoder, exploration_rate=0.0)
    try:
        engine.upsert_items(ITEMS)
        other = Item(schema=1, item_id="from-b", title="teacup teacup model 0", price=2.0)
        vector = engine.encoder.encode(["teacup teacup model 0"])[0]
        engine.store.upsert(engine.items_collection, [Point("from-b", vector, item_payload(other, "x"))])
        engine.store.delete(engine.items_collection, ["i8"])
        query = vector[None, :]
        assert "from-b" not in engine._retrieve(query, 64, [None])[0].ids

        collection = engine.begin_catalog_read()
        records = list(engine.read_catalog(collection))  # read before the change below
        engine.upsert_items([ITEMS[5].model_copy(update={"price": 777.0})])  # between the read and the install
        assert engine.install_catalog(collection, records) == 64
        found = engine._retrieve(query, 64, [None])[0].ids
        assert "from-b" in found and "i8" not in found
        assert engine.items.get_many(["i5"])["i5"].price == 777.0
        expensive = Filter(ranges={"price": (700.0, None)})
        assert engine._retrieve(query, 64, [expensive])[0].ids == ["i5"]
    finally:
        engine.store.close()


def test_a_catalog_too_big_for_memory_is_searched_in_the_store_and_never_copied(tmp_path, tiny_encoder):
    engine = open_engine(tmp_path, tiny_encoder, exploration_rate=0.0, exact_retrieval_max_items=40)
    try:
        engine.upsert_items(ITEMS[:40])
        assert len(engine.items.matrix) == 40 and engine.begin_catalog_read() == engine.items_collection
        engine.install_catalog(engine.items_collection, engine.read_catalog())
        engine.upsert_items(ITEMS[40:])
        assert engine.items.matrix is None and engine.begin_catalog_read() is None
        calls = []
        engine.store.search_ids = lambda *a, _search=engine.store.search_ids, **kw: calls.append(1) or _search(*a, **kw)
        engine.process_events([ev(0, "u", "i3", EventType.view)])
        assert calls
    finally:
        engine.store.close()


def test_flush_state_flushes_the_store(engine, monkeypatch):
    """The periodic flush is what lets the embedded engine truncate its log (test_store.py
    shows the growth without it)."""
    flushes = []
    monkeypatch.setattr(engine.store, "flush", lambda: flushes.append(True))
    engine.process_events([ev(0, "u-flush", "i1")])
    engine.flush_state()
    engine.flush_state()  # nothing new to persist: the store is still flushed
    assert len(flushes) == 2


def test_an_erased_user_leaves_nothing_behind(engine):
    user = "forget-me"
    rec = recs(engine.process_events([ev(0, user, "i1"), ev(1, user, "i2", minutes=1)]))[0]
    for item in rec.items[:3]:
        engine.process_events([ev(int(item.position) + 10, user, item.item_id, EventType.click, 2, rec_id=rec.rec_id)])
    engine.flush_state()
    (confirmed,) = engine.erase_users([Erasure(schema=1, erasure_id="x1", user_id=user)])
    assert "profile" in confirmed.erased
    for collection in ("users", "items", "state", "popularity_shares"):
        for point in engine.store.scroll(collection):
            assert user not in json.dumps(point.payload), (collection, point.id)
            assert user != point.id
    assert engine.profile(user).events == 0


def test_describe_user_says_what_the_engine_holds(engine):
    user = "described"
    engine.process_events([ev(n, user, item, minutes=n) for n, item in enumerate(["i0", "i8", "i3"])])
    about = engine.describe_user(user)
    assert about["segment"] == engine.profile(user).segment == "loyal"
    assert about["rfm"]["frequency"] == 3 and 0 < about["purchase_probability"] < 1
    assert {i["item_id"] for i in about["interests"]} <= {"i0", "i8", "i3"}
    assert abs(sum(i["weight"] for i in about["interests"]) - 1) < 0.01  # three items, at most three clusters
    assert about["variant"] == "default"
    stranger = engine.describe_user("nobody")
    assert stranger["segment"] == "prospect" and stranger["purchase_probability"] is None and not stranger["interests"]


def swap(engine: Recommender, encoder, path=None) -> dict:
    plan = engine.plan_swap(encoder, path)
    return engine.finish_swap(plan, encoder.encode(plan.texts))


def test_a_model_swap_re_embeds_the_catalog_and_rebuilds_profiles_in_the_new_space(tmp_path, tiny_encoder,
                                                                                    tiny_onnx_dir_v2):
    from inference.encoder import TextEncoder

    engine = open_engine(tmp_path, tiny_encoder)
    engine.upsert_items(ITEMS)
    engine.process_events([ev(0, "swapper", "i1"), ev(1, "swapper", "i2", minutes=1)])
    v1 = engine.model_version
    v2_encoder = TextEncoder(tiny_onnx_dir_v2, device="cpu", threads=1)
    plan = engine.plan_swap(v2_encoder, str(tiny_onnx_dir_v2))
    assert len(plan.to_embed) == len(ITEMS) and not plan.reused
    # the catalog changes while the new model embeds: those changes must reach the new collection
    engine.upsert_items([Item(schema=1, item_id="late", title="lantern teacup late arrival"),
                         Item(schema=1, item_id="i63", title="", deleted=True)])
    rec_during = engine.recommend("swapper")  # still answering, with the old model
    assert rec_during.model_version == v1
    result = engine.finish_swap(plan, v2_encoder.encode(plan.texts))
    assert (result["version"], result["previous"], result["items"]) == (v2_encoder.version, v1, len(ITEMS))
    assert engine.model_version == v2_encoder.version and engine.items_collection != "items"
    assert engine.store.point_id(engine.items_collection) is point_u64  # made like the first
    late = engine.items.get_many(["late"])["late"]
    assert np.allclose(late.vector, v2_encoder.encode(["lantern teacup late arrival"])[0], atol=1e-5)
    assert engine.items.get_many(["i63"]) == {}
    rec = engine.recommend("swapper")
    assert rec.model_version == v2_encoder.version and len(rec.items) == 10
    profile = engine.profile("swapper")
    assert profile.space == v2_encoder.version
    expected = v2_encoder.encode([engine.items.get_many(["i2"])["i2"].title])[0]
    assert float(profile.long_term.direction() @ expected) > 0.5  # refolded from the new vectors
    engine.store.close()

    # a restart keeps serving the rolled-out model; a rollback to the first reuses its vectors
    again = open_engine(tmp_path, tiny_encoder)  # what open_recommender does with the serving state
    try:
        assert again.blobs.get("serving")["version"] == v2_encoder.version
        again_v2 = Recommender(v2_encoder, again.store, again.settings,
                               items_collection=again.blobs.get("serving")["collections"][v2_encoder.version])
        back = swap(again_v2, tiny_encoder)
        # the first collection saw the changes made while it served (the late item, the deletion)
        assert back["version"] == v1 and back["reused"] == len(ITEMS) and back["embedded"] == 0
        assert again_v2.items_collection == "items"
        assert again_v2.recommend("swapper").model_version == v1
        assert again_v2.profile("swapper").space is None
    finally:
        again.store.close()


def test_items_are_searched_by_compact_point_ids_and_users_keep_uuids(engine):
    """Items are searched on every event (64-bit ids spare a uuid.UUID per hit); users are only
    read by id and may number 10^8, where 64-bit ids could collide."""
    assert engine.store.point_id(engine.items_collection) is point_u64
    assert engine.store.point_id(USERS) is point_uuid


def test_a_model_of_another_dimension_is_refused(engine, tmp_path):
    class Wide:
        dim, version = engine.dim + 1, "wide"

    with pytest.raises(ValueError, match="dimension"):
        engine.plan_swap(Wide())


def test_groups_read_page_by_page_equal_groups_read_at_once(engine, monkeypatch):
    """The worker reads the users collection a page at a time between batches: the segment
    counts and groups come out as from one read."""
    import inference.recommender as recommender_module

    for n in range(30):
        engine.process_events([ev(0, f"g{n}", f"i{n % 20}"), ev(1, f"g{n}", f"i{(n + 8) % 20}", minutes=1)])
    whole = engine.refresh_groups()
    assert whole["interest_groups"]
    monkeypatch.setattr(recommender_module, "USERS_PAGE", 7)
    pages = 0
    real_page = engine.users_page

    def counted_page(offset=None):
        nonlocal pages
        pages += 1
        return real_page(offset)

    monkeypatch.setattr(engine, "users_page", counted_page)
    paged = engine.refresh_groups()
    assert pages == 5 and sum(paged["segments"].values()) == 30
    assert paged["segments"] == whole["segments"] and paged["interest_groups"] == whole["interest_groups"]


# ---- the event encoder (user tower) ----------------------------------------------------------
def tower_engine(tmp_path: Path, tiny_encoder, **kw) -> Recommender:
    from inference.event_encoder import EventEncoder
    from tests.fixtures.tiny_tower import build_tiny_tower

    tower = EventEncoder(build_tiny_tower(tiny_encoder, ITEMS[:48], tmp_path / "tower"))
    s = settings(tmp_path, **{"exploration_rate": 0.0, "weight_popularity": 0.0, "weight_category": 0.0, **kw})
    engine = Recommender(tiny_encoder, open_store(url=None, api_key=None, data_dir=s.data_dir), s, tower=tower)
    engine.upsert_items(ITEMS)  # i48..i63 are new to the tower: placed by their text
    return engine


def tower_top(engine: Recommender, history: list[tuple[str, float]], k: int, exclude: set[str]) -> list[str]:
    """The top k by the tower's own arithmetic: its user vector from (item, time) oldest first,
    dot products with every catalog item's tower vector."""
    from inference.event_encoder import Window, unit_ages

    tower = engine.tower
    records = engine.items.get_many(i for i, _ in history)
    ages, units = unit_ages([t for _, t in history])
    vectors = np.stack([tower.item_vector(i, records[i].vector, records[i].title) for i, _ in history])
    user = tower.user_vectors([Window(vectors, ages, units)])[0]
    catalog = engine.items.get_many(i.item_id for i in ITEMS)
    scores = {i: float(user @ tower.item_vector(i, r.vector, r.title)) for i, r in catalog.items() if i not in exclude}
    return sorted(scores, key=lambda i: (-scores[i], i))[:k]


def test_users_with_recent_items_are_answered_by_the_event_encoder(tmp_path, tiny_encoder):
    engine = tower_engine(tmp_path, tiny_encoder)
    try:
        # a basket of two lines (one timestamp), then a view of an item the tower never saw
        events = [ev(0, "u", "i3"), ev(1, "u", "i17"), ev(2, "u", "i50", EventType.view, minutes=5)]
        rec = recs(engine.process_events(events))[0]
        history = [("i3", 0.0), ("i17", 0.0), ("i50", 300.0)]
        assert [i.item_id for i in rec.items] == tower_top(engine, history, 10, exclude={"i3", "i17"})
        assert rec.model_version == f"{tiny_encoder.version}+{engine.tower.version}"
        assert len(engine.items.tower_matrix) == len(ITEMS)
        # an impression says nothing of interest: the window is unchanged
        engine.process_events([ev(3, "u", "i40", EventType.impression, minutes=6)])
        assert [i.item_id for i in engine.recommend("u").items] == [i.item_id for i in rec.items]
        # a request filter the in-memory copy answers is applied to the tower's candidates
        cheap = engine.recommend("u", k=5, filters=RequestFilters(max_price=20.0))
        assert cheap.items and all(int(i.item_id[1:]) + 1.0 <= 20.0 for i in cheap.items)
    finally:
        engine.store.close()


def test_users_without_recent_items_keep_the_text_path(tmp_path, tiny_encoder):
    engine = tower_engine(tmp_path, tiny_encoder)
    plain = open_engine(tmp_path / "plain", tiny_encoder, exploration_rate=0.0, weight_popularity=0.0,
                        weight_category=0.0)
    try:
        plain.upsert_items(ITEMS)
        intent = [Intent(schema=1, user_id="new", text="a candle and a lantern")]
        with_tower, without = engine.seed_interests(intent)[0], plain.seed_interests(intent)[0]
        assert [i.item_id for i in with_tower.items] == [i.item_id for i in without.items]
    finally:
        engine.store.close()
        plain.store.close()


def test_a_deleted_item_leaves_the_event_encoders_retrieval_at_once(tmp_path, tiny_encoder):
    engine = tower_engine(tmp_path, tiny_encoder)
    try:
        first = recs(engine.process_events([ev(0, "d", "i5")]))[0].items[0].item_id
        engine.upsert_items([Item(schema=1, item_id=first, title="", deleted=True)])
        assert first not in engine.items.tower_matrix
        assert first not in [i.item_id for i in engine.recommend("d").items]
    finally:
        engine.store.close()


def test_a_model_swap_brings_its_event_encoder_and_a_version_without_one_drops_it(tmp_path, tiny_encoder,
                                                                                 tiny_onnx_dir_v2):
    from inference.encoder import TextEncoder
    from inference.event_encoder import EventEncoder
    from tests.fixtures.tiny_tower import build_tiny_tower

    engine = tower_engine(tmp_path, tiny_encoder)
    try:
        engine.process_events([ev(0, "s", "i2")])
        v2 = TextEncoder(tiny_onnx_dir_v2, device="cpu", threads=1)
        tower_v2 = EventEncoder(build_tiny_tower(v2, ITEMS, tmp_path / "tower-v2", seed=8))
        plan = engine.plan_swap(v2, str(tiny_onnx_dir_v2), tower_v2)
        assert engine.recommend("s").model_version.endswith(engine.tower.version)  # the old one until the switch
        engine.finish_swap(plan, v2.encode(plan.texts))
        assert engine.tower is tower_v2 and len(engine.items.tower_matrix) == len(ITEMS)
        assert engine.recommend("s").model_version == f"{v2.version}+{tower_v2.version}"
        back = engine.plan_swap(tiny_encoder, None)
        engine.finish_swap(back, tiny_encoder.encode(back.texts))
        assert engine.tower is None and engine.items.tower_matrix is None
        assert engine.recommend("s").model_version == tiny_encoder.version
    finally:
        engine.store.close()
