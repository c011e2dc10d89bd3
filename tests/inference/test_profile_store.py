"""Tests for inference/profile_store.py: the stored state layout, reading older layouts, the repository."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from inference.exploration import Arm, ExploredSlot
from inference.profile_store import (
    STATE_VERSION,
    TYPE_CODES,
    USERS,
    ProfileRepository,
    ProfileStateError,
    b85_decode,
    b85_encode,
    profile_from_point,
    profile_to_point,
    pseudonymiser,
    segment_and_interest,
)
from inference.profiles import Interest, Profile, ProfileParams, RecentItem, Rfm, apply_event, apply_stated_interest
from inference.schemas import EventType
from inference.store import Point, VectorStore, open_store

DIM = 4

FULL = Profile(
    user_id="u-1",
    long_term=Interest(np.array([0.5, -1.25, 2.0, 0.125], np.float32), 9.5, 1293840061.25),
    session=Interest(np.array([0.0, 1.5, -0.75, 3.0], np.float32), 2.0, 1293840099.123456),
    session_id="s-9",
    categories={"shoes": 3.75, "tents": -2.0},
    categories_updated=1293840099.123456,
    recent=(RecentItem("i-1", EventType.view, 1293840000.0), RecentItem("i-2", EventType.purchase, 1293840061.25),
            RecentItem("i-3", EventType.remove_from_cart, 1293840099.123456)),
    purchased=("i-2",),
    seen_events=(1, 2**64 - 1, 12345678901234567890),
    rfm=Rfm(1293840000.0, 1293840061.25, 1, 19.99),
    events=3, units=2, stated_interest=True, segment="new", space="enc-2",
    topics={"7": Arm(3.0, 1.0)},
    exploring=(ExploredSlot("r-1", "i-9", "7", True, False),),
)
"""Every field away from its default."""

# What the code before STATE_VERSION (layout 1) wrote for FULL and for an empty profile, verbatim.
V1_FULL = Point("u-1", np.array([0.2071121484041214, -0.5177803635597229, 0.8284485936164856, 0.05177803710103035],
                                np.float32), {"user_id": "u-1", "state": (
    '{"long_term":["AAAAPwAAoL8AAABAAAAAPg==",9.5,1293840061.25],"session":["AAAAAAAAwD8AAEC/AABAQA==",2.0,'
    '1293840099.123456],"session_id":"s-9","categories":{"shoes":3.75,"tents":-2.0},"categories_updated":'
    '1293840099.123456,"recent":[["i-1","view",1293840000.0],["i-2","purchase",1293840061.25],["i-3",'
    '"remove_from_cart",1293840099.123456]],"purchased":["i-2"],"seen_events":"AQAAAAAAAAD//////////9IKH+uMqVSr",'
    '"rfm":[1293840000.0,1293840061.25,1,19.99],"events":3,"stated_interest":true,"segment":"new","space":"enc-2",'
    '"topics":{"7":[3.0,1.0]},"exploring":[["r-1","i-9","7",true,false]]}')})
V1_EMPTY = Point("u-2", np.array([1.0, 0.0, 0.0, 0.0], np.float32), {"user_id": "u-2", "state": (
    '{"long_term":null,"session":null,"session_id":null,"categories":{},"categories_updated":null,"recent":[],'
    '"purchased":[],"seen_events":"","rfm":[null,null,0,0.0],"events":0,"stated_interest":false,"segment":null,'
    '"space":null,"topics":{},"exploring":[]}')})


def v1_point(profile: Profile, dim: int) -> Point:
    """Layout 1's writer, as it was: the reference for states already stored by running deployments."""
    def interest(i: Interest | None) -> list | None:
        return None if i is None else [base64.b64encode(np.asarray(i.total, "<f4").tobytes()).decode(), i.mass, i.updated]

    direction = profile.long_term.direction() if profile.long_term else None
    if direction is None:
        direction = np.zeros(dim, dtype=np.float32)
        direction[0] = 1.0
    state = {
        "long_term": interest(profile.long_term), "session": interest(profile.session),
        "session_id": profile.session_id, "categories": profile.categories,
        "categories_updated": profile.categories_updated,
        "recent": [[r.item_id, r.type.value, r.ts] for r in profile.recent], "purchased": list(profile.purchased),
        "seen_events": base64.b64encode(np.asarray(profile.seen_events, dtype="<u8").tobytes()).decode("ascii"),
        "rfm": [profile.rfm.first_ts, profile.rfm.last_purchase_ts, profile.rfm.purchases, profile.rfm.monetary],
        "events": profile.events, "stated_interest": profile.stated_interest, "segment": profile.segment,
        "space": profile.space, "topics": {t: [a.shown, a.rewarded] for t, a in profile.topics.items()},
        "exploring": [[e.rec_id, e.item_id, e.topic, e.impressed, e.rewarded] for e in profile.exploring],
    }
    return Point(profile.user_id, direction, {"user_id": profile.user_id, "state": json.dumps(state, separators=(",", ":"))})


def built_profiles(n: int, dim: int = 16, seed: int = 0) -> list[Profile]:
    """Profiles folded event by event, as the worker builds them (every event type, repeats, purchases)."""
    rng = np.random.default_rng(seed)
    items = rng.standard_normal((40, dim)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    types = list(EventType)
    out = []
    for u in range(n):
        p, ts = Profile(user_id=f"user-{u}"), 1.29e9 + float(rng.uniform(0, 1e7))
        if u % 4 == 0:
            p = apply_stated_interest(p, items[u % 40], ts, ProfileParams(),
                                      phrases=[items[(u + 1) % 40], items[(u + 2) % 40]] if u % 8 == 0 else ())
        for e in range(int(rng.integers(1, 60))):
            ts += float(rng.exponential(600))
            t, i = types[int(rng.integers(len(types)))], int(rng.integers(40))
            item = None if t is EventType.search else f"item-{i}"
            p = apply_event(p, event_id=f"{u}-{e}", type=t, ts=ts, item_id=item, vector=items[i],
                            category=f"cat-{i % 7}" if item else None, session_id=f"s{int(ts) // 7200}",
                            quantity=int(rng.integers(1, 4)), price=float(rng.uniform(1, 50)), params=ProfileParams())
        out.append(p)
    return out


def assert_same(got: Profile, want: Profile, long_term: str = "ulp") -> None:
    """Equal field by field. The long-term sum, rebuilt as norm x stored direction, may differ from the
    one saved by one float32 ulp ("ulp"), by a few where a server renormalises the direction ("server"),
    or must be bit-identical ("exact"). Recent items' times, stored as float32 ages before the newest, are
    within that rounding (exact for the newest)."""
    assert replace(got, long_term=None, session=None, stated_phrases=(), recent=()) == \
        replace(want, long_term=None, session=None, stated_phrases=(), recent=())
    assert_same_recent(got.recent, want.recent)
    assert [v.tobytes() for v in got.stated_phrases] == [v.tobytes() for v in want.stated_phrases]
    for a, b in ((got.long_term, want.long_term), (got.session, want.session)):
        assert (a is None) == (b is None)
        if a is not None:
            assert (a.mass, a.updated) == (b.mass, b.updated)
            assert a.total.dtype == np.float32 and a.total.shape == b.total.shape
    if want.session is not None:
        assert got.session.total.tobytes() == want.session.total.tobytes()
    if want.long_term is not None:
        g, w = got.long_term.total, want.long_term.total
        if long_term == "exact":
            assert g.tobytes() == w.tobytes()
        else:
            ulps = 1 if long_term == "ulp" else 4
            assert np.all(np.abs(g - w) <= ulps * np.spacing(np.abs(w))), float(np.max(np.abs(g - w)))


def assert_same_recent(got: tuple[RecentItem, ...], want: tuple[RecentItem, ...]) -> None:
    assert [(r.item_id, r.type) for r in got] == [(r.item_id, r.type) for r in want]
    if want:
        newest = want[-1].ts
        assert got[-1].ts == newest
        for g, w in zip(got, want, strict=True):
            age = np.float32(abs(newest - w.ts))
            assert abs(g.ts - w.ts) <= np.spacing(age) + 2 * np.spacing(newest), (g.ts, w.ts)


# --------------------------------------------------------------------------- encoding


@pytest.mark.parametrize("dtype", ["<f4", "<f8", "<u8"])
def test_b85_is_the_stdlib_base85_of_the_raw_bytes(dtype):
    rng = np.random.default_rng(1)
    for n in (0, 1, 7, 384):
        array = np.frombuffer(rng.bytes(n * np.dtype(dtype).itemsize), dtype=dtype)
        text = b85_encode(array)
        assert text == base64.b85encode(array.tobytes()).decode()
        assert b85_decode(text, dtype).tobytes() == array.tobytes()
    edges = np.array([0, 2**32 - 1, 2**64 - 1], dtype="<u8")
    assert b85_decode(b85_encode(edges), "<u8").tolist() == edges.tolist()


def test_b85_rejects_what_it_did_not_write():
    with pytest.raises(ValueError, match="4-byte"):
        b85_encode(np.zeros(3, dtype=np.uint8))
    for bad in ("0000", '"""""', "\\0000", "~~~~~"):  # not whole groups, not the alphabet, over 2**32-1
        with pytest.raises(ProfileStateError):
            b85_decode(bad, "<u4")


def test_type_codes_are_one_distinct_letter_per_event_type():
    assert set(TYPE_CODES) == set(EventType)
    assert len(set(TYPE_CODES.values())) == len(EventType) and all(len(c) == 1 for c in TYPE_CODES.values())


# --------------------------------------------------------------------------- round trip


def test_round_trip_of_a_profile_with_every_field():
    point = profile_to_point(FULL, DIM)
    assert np.allclose(point.vector, FULL.long_term.direction()) and point.payload["user_id"] == "u-1"
    state = json.loads(point.payload["state"])
    assert state["v"] == STATE_VERSION == 3
    assert isinstance(state["long_term"][0], float)  # the norm: the sum itself is not stored twice
    assert state["segment"] == "new"  # read directly by Recommender.refresh_groups
    assert_same(profile_from_point(point), FULL)


def test_stated_phrases_round_trip_and_a_corrupt_count_is_refused():
    phrases = (np.array([0.5, 0.5, 0.5, 0.5], np.float32), np.array([0.0, 1.0, 0.0, 0.0], np.float32))
    profile = replace(FULL, stated_phrases=phrases)
    point = profile_to_point(profile, DIM)
    assert_same(profile_from_point(point), profile)
    state = json.loads(point.payload["state"])
    state["stated_phrases"][0] = 3
    with pytest.raises(ProfileStateError, match="do not make 3 vectors"):
        profile_from_point(replace(point, payload={**point.payload, "state": json.dumps(state)}))


def test_round_trip_of_profiles_built_by_the_profile_maths():
    for profile in built_profiles(60):
        assert_same(profile_from_point(profile_to_point(profile, 16)), profile)


def test_long_term_is_rebuilt_from_the_point_vector_within_one_ulp_and_keeps_its_direction():
    rng = np.random.default_rng(2)
    for _ in range(200):
        total = (rng.standard_normal(384) * rng.uniform(1e-3, 1e3)).astype(np.float32)
        profile = Profile("u", long_term=Interest(total, 3.0, 1.3e9))
        point = profile_to_point(profile, 384)
        got = profile_from_point(point).long_term
        assert np.all(np.abs(got.total - total) <= np.spacing(np.abs(total)))
        assert np.allclose(got.direction(), point.vector, rtol=0, atol=2e-7)


def test_a_profile_without_interest_gets_the_placeholder_vector_and_stores_no_interest():
    empty = Profile(user_id="u-2")
    point = profile_to_point(empty, DIM)
    assert point.vector.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert json.loads(point.payload["state"]) == {"v": STATE_VERSION}
    assert segment_and_interest(point) == (None, False)  # what refresh_groups reads
    assert profile_from_point(point) == empty
    # the placeholder vector is never taken for an interest, with or without the vector fetched
    assert profile_from_point(replace(point, vector=None)) == empty


@pytest.mark.parametrize("total", [np.zeros(DIM, np.float32), np.array([np.nan, 1, 2, 3], np.float32),
                                   np.array([np.inf, 0, 0, 0], np.float32)])
def test_a_long_term_sum_without_a_direction_is_stored_whole(total):
    profile = Profile(user_id="u", long_term=Interest(total, 1.0, 5.0))
    point = profile_to_point(profile, DIM)
    assert point.vector.tolist() == [1.0, 0.0, 0.0, 0.0]
    got = profile_from_point(replace(point, vector=None))  # needs no vector
    assert got.long_term.total.tobytes() == total.tobytes() and (got.long_term.mass, got.long_term.updated) == (1.0, 5.0)


def test_reading_a_norm_without_the_point_vector_says_what_to_fetch():
    point = replace(profile_to_point(FULL, DIM), vector=None)
    with pytest.raises(ProfileStateError, match="with_vectors=True"):
        profile_from_point(point)


def test_segment_and_interest_read_from_both_layouts_without_decoding_the_profile():
    assert segment_and_interest(profile_to_point(FULL, DIM)) == ("new", True)
    assert segment_and_interest(V1_FULL) == ("new", True)
    assert segment_and_interest(V1_EMPTY) == (None, False)
    assert segment_and_interest(profile_to_point(Profile(user_id="u-3"), DIM)) == (None, False)


def test_a_newer_layout_is_refused_with_a_clear_error():
    point = Point("u", np.ones(DIM, np.float32), {"user_id": "u", "state": '{"v":4}'})
    with pytest.raises(ProfileStateError, match="layout 4"):
        profile_from_point(point)


def test_the_new_layout_is_smaller_than_the_old():
    for profile in built_profiles(20, dim=384, seed=3):
        new, old = profile_to_point(profile, 384), v1_point(profile, 384)
        saved = 1500 if profile.long_term is not None else 0  # at least the 2,048 base64 characters of the sum
        assert len(new.payload["state"]) < len(old.payload["state"]) - saved
        assert np.array_equal(new.vector, old.vector)


def test_recent_times_keep_their_order_and_ties_and_stay_within_a_second_over_half_a_year():
    newest = 1.7e9
    ages = [190 * 86400.0, 3600.5, 3600.5, 1.25, 0.0]  # oldest first, two events at the same time
    recent = tuple(RecentItem(f"i-{n}", EventType.view, newest - a) for n, a in enumerate(ages))
    got = profile_from_point(profile_to_point(Profile("u", recent=recent), DIM)).recent
    times = [r.ts for r in got]
    assert times == sorted(times) and times[1] == times[2] and times[-1] == newest
    assert max(abs(g - w.ts) for g, w in zip(times, recent, strict=True)) < 1.0


# --------------------------------------------------------------------------- earlier layouts (stored by earlier releases)

# What the code of layout 2 (recent times as float64, no unit count) wrote for FULL, verbatim.
V2_FULL = Point("u-1", np.array([0.2071121484041214, -0.5177803635597229, 0.8284485936164856, 0.05177803710103035],
                                np.float32), {"user_id": "u-1", "state": (
    '{"v":2,"long_term":[2.4141509532928467,9.5,1293840061.25],"session":["00000006*0002P0002Nh",2.0,'
    '1293840099.123456],"session_id":"s-9","categories":[["shoes","tents"],"00000000g^000000002M",'
    '1293840099.123456],"recent":[["i-1","i-2","i-3"],"vpr","0001>n@7_@002<0n@7_@wC2aSn@7_@"],'
    '"purchased":["i-2"],"seen_events":"0RR9100000|NsC0|NsC0(h48zjHy(s","rfm":[1293840000.0,1293840061.25,1,'
    '19.99],"events":3,"stated_interest":true,"segment":"new","space":"enc-2","topics":{"7":[3.0,1.0]},'
    '"exploring":[["r-1","i-9","7",true,false]]}')})


def test_states_written_by_the_second_layout_still_load_with_exact_times():
    got = profile_from_point(V2_FULL)
    assert_same(got, replace(FULL, units=0))
    assert got.recent == FULL.recent  # layout 2 stored the times themselves
    assert segment_and_interest(V2_FULL) == ("new", True)



def test_states_written_by_the_first_layout_still_load():
    assert_same(profile_from_point(V1_FULL), replace(FULL, units=0), "exact")  # layout 1 stored the sums
    assert_same(profile_from_point(replace(V1_FULL, vector=None)), replace(FULL, units=0), "exact")
    assert profile_from_point(V1_EMPTY) == Profile(user_id="u-2")


def test_the_reference_layout_1_writer_matches_what_was_stored():
    assert v1_point(FULL, DIM).payload == V1_FULL.payload
    assert v1_point(Profile(user_id="u-2"), DIM).payload == V1_EMPTY.payload
    for profile in built_profiles(40, seed=4):  # layout 1 predates the unit count: it reads as 0
        assert_same(profile_from_point(v1_point(profile, 16)), replace(profile, units=0), "exact")


# --------------------------------------------------------------------------- the repository, on both backends


@pytest.fixture(params=["edge", "memory"])
def store(request, tmp_path: Path) -> VectorStore:
    url = {"edge": None, "memory": ":memory:"}[request.param]
    s = open_store(url=url, api_key=None, data_dir=tmp_path)
    s.ensure_collection(USERS, 16)
    yield s
    s.close()


def test_repository_round_trip_through_the_store(store):
    profiles = built_profiles(30, seed=5) + [Profile(user_id="nobody-yet")]
    hashed = pseudonymiser(b"k" * 32)
    ProfileRepository(store, 16, stored_id=hashed).save_many(profiles)
    fresh = ProfileRepository(store, 16, stored_id=hashed)  # empty cache: everything comes from the store
    got = fresh.get_many([p.user_id for p in profiles])
    for p in profiles:
        assert_same(got[p.user_id], p, "server")  # a server renormalises the stored direction
    # what a saved-and-reloaded profile does next is what the original does
    params, vector = ProfileParams(), np.full(16, 0.25, np.float32)
    for p in profiles[:10]:
        def next_event(profile: Profile) -> Profile:
            return apply_event(profile, event_id="next", type=EventType.purchase, ts=1.4e9, item_id="item-1",
                               vector=vector, category="c", session_id="s", quantity=1, price=2.0, params=params)

        a, b = next_event(got[p.user_id]), next_event(p)
        assert replace(a, long_term=None, session=None, recent=()) == replace(b, long_term=None, session=None,
                                                                              recent=())
        assert_same_recent(a.recent, b.recent)
        assert a.session.total.tobytes() == b.session.total.tobytes()
        assert np.allclose(a.long_term.total, b.long_term.total, rtol=1e-6, atol=1e-7)


def test_repository_reads_profiles_stored_in_the_first_layout(store):
    profiles = built_profiles(10, seed=6)
    store.upsert(USERS, [v1_point(p, 16) for p in profiles])
    repo = ProfileRepository(store, 16)
    got = repo.get_many([p.user_id for p in profiles])
    for p in profiles:
        assert_same(got[p.user_id], replace(p, units=0), "exact")
    repo.save_many(list(got.values()))  # rewritten in the current layout on the next save
    for point in store.scroll(USERS, with_vectors=True):
        assert json.loads(point.payload["state"])["v"] == STATE_VERSION
        assert_same(profile_from_point(point), got[point.id], "server")
