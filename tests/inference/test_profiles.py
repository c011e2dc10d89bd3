import numpy as np
import pytest

from inference.profiles import (
    EVENT_WEIGHTS,
    MAX_PURCHASED,
    MAX_RECENT,
    MAX_STATED_PHRASES,
    PHRASES_UNTIL_RECENT,
    RECENT_INTERESTS,
    Profile,
    ProfileParams,
    apply_event,
    apply_stated_interest,
    category_affinity,
    decay,
    fold,
    query_vector,
    rebuild_interests,
)
from inference.schemas import EventType

PARAMS = ProfileParams(long_term_half_life_s=1000.0, session_half_life_s=100.0, session_gap_s=300.0, session_weight=0.5)


def unit(*xs):
    v = np.asarray(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def ev(profile, event_id, type=EventType.view, ts=0.0, item="a", vector=None, category=None, session=None,
       quantity=1, price=None):
    return apply_event(profile, event_id=event_id, type=type, ts=ts, item_id=item, vector=vector, category=category,
                       session_id=session, quantity=quantity, price=price, params=PARAMS)


def test_decay_halves_at_half_life_and_ignores_time_going_backwards():
    assert decay(1000.0, 1000.0) == pytest.approx(0.5)
    assert decay(0.0, 1000.0) == 1.0
    assert decay(-50.0, 1000.0) == 1.0


def test_fold_is_a_decayed_weighted_sum():
    a, b = unit(1, 0), unit(0, 1)
    i = fold(None, a, 2.0, 0.0, 1000.0)
    i = fold(i, b, 1.0, 1000.0, 1000.0)  # a has halved: 2 -> 1
    np.testing.assert_allclose(i.total, [1.0, 1.0], atol=1e-6)
    assert i.mass == pytest.approx(2.0)
    assert i.updated == 1000.0


def test_purchase_moves_interest_more_than_view():
    assert EVENT_WEIGHTS[EventType.purchase] > EVENT_WEIGHTS[EventType.add_to_cart] > EVENT_WEIGHTS[EventType.click] > EVENT_WEIGHTS[EventType.view]
    p = ev(Profile("u"), "e1", EventType.view, 0, "a", unit(1, 0))
    p = ev(p, "e2", EventType.purchase, 0, "b", unit(0, 1))
    direction = p.long_term.direction()
    assert direction[1] > direction[0]  # the purchased item dominates


def test_duplicate_event_changes_nothing():
    p = ev(Profile("u"), "e1", EventType.purchase, 10, "a", unit(1, 0), price=2.0, quantity=3)
    again = ev(p, "e1", EventType.purchase, 10, "a", unit(1, 0), price=2.0, quantity=3)
    assert again is p
    assert p.rfm.purchases == 1 and p.rfm.monetary == pytest.approx(6.0)


def test_session_resets_after_a_gap_or_new_session_id_but_long_term_keeps_history():
    p = ev(Profile("u"), "e1", ts=0, item="a", vector=unit(1, 0), session="s1")
    p = ev(p, "e2", ts=1000, item="b", vector=unit(0, 1), session="s1")  # gap 1000 > 300
    np.testing.assert_allclose(p.session.direction(), unit(0, 1), atol=1e-6)
    assert p.long_term.direction()[0] > 0
    p = ev(p, "e3", ts=1001, item="c", vector=unit(1, 1), session="s2")
    np.testing.assert_allclose(p.session.direction(), unit(1, 1), atol=1e-6)


def test_query_vector_blends_session_and_long_term():
    p = ev(Profile("u"), "e1", ts=0, item="a", vector=unit(1, 0), session="s1")
    p = ev(p, "e2", ts=10_000, item="b", vector=unit(0, 1), session="s2")
    q = query_vector(p, PARAMS)
    assert np.linalg.norm(q) == pytest.approx(1.0, abs=1e-6)
    assert q[1] > q[0] > 0


def test_query_vector_is_none_without_any_interest():
    assert query_vector(Profile("u"), PARAMS) is None
    p = ev(Profile("u"), "e1", ts=0, item="unknown", vector=None)
    assert query_vector(p, PARAMS) is None
    assert p.recent[-1].item_id == "unknown"


def test_recent_and_purchased_are_bounded_and_deduplicated():
    p = Profile("u")
    for n in range(MAX_PURCHASED + 30):
        p = ev(p, f"e{n}", EventType.purchase, n, f"i{n % (MAX_PURCHASED + 10)}", unit(1, 0))
    assert len(p.recent) == MAX_RECENT
    assert len(p.purchased) == MAX_PURCHASED
    assert len(set(p.purchased)) == len(p.purchased)
    p = ev(p, "again", EventType.view, 10_000, p.recent[0].item_id, unit(1, 0))
    assert [r.item_id for r in p.recent].count(p.recent[-1].item_id) == 1


def test_units_count_instants_with_an_item_of_interest_a_basket_counting_once():
    p = Profile("u")
    for n, item in enumerate(["a", "b", "c"]):  # one basket: three lines at one time
        p = ev(p, f"basket-{n}", EventType.purchase, 10.0, item, unit(1, 0))
    assert p.units == 1
    p = ev(p, "view", EventType.view, 20.0, "d", unit(1, 0))
    p = ev(p, "no-item", EventType.search, 30.0, None)  # no item: not a unit
    p = ev(p, "dupe", EventType.view, 20.0, "d", unit(1, 0))  # replayed: nothing changes
    assert p.units == 2
    if EVENT_WEIGHTS[EventType.remove_from_cart] <= 0:  # no interest: kept in recent, not a unit
        p = ev(p, "remove", EventType.remove_from_cart, 40.0, "a", unit(1, 0))
        assert p.units == 2 and p.recent[-1].item_id == "a"


def test_latest_is_the_newest_slice_of_recent_that_interest_maths_reads():
    p = Profile("u")
    for n in range(RECENT_INTERESTS + 5):
        p = ev(p, f"e{n}", EventType.view, float(n), f"i{n}", unit(1, 0))
    assert len(p.recent) == RECENT_INTERESTS + 5 <= MAX_RECENT
    assert p.latest == p.recent[-RECENT_INTERESTS:]


def test_rfm_counts_purchases_only():
    p = ev(Profile("u"), "v", EventType.view, 5, "a", unit(1, 0))
    p = ev(p, "b1", EventType.purchase, 10, "a", unit(1, 0), quantity=2, price=1.5)
    p = ev(p, "b2", EventType.purchase, 20, "b", unit(0, 1), quantity=1, price=4.0)
    assert (p.rfm.first_ts, p.rfm.last_purchase_ts, p.rfm.purchases) == (5, 20, 2)
    assert p.rfm.monetary == pytest.approx(7.0)


def test_category_preferences_decay_and_remove_from_cart_lowers_them():
    p = ev(Profile("u"), "e1", EventType.purchase, 0, "a", unit(1, 0), category="shoes")
    p = ev(p, "e2", EventType.view, 1000, "b", unit(0, 1), category="tents")
    assert p.categories["shoes"] == pytest.approx(4.0)  # 8 halved once
    assert category_affinity(p)["shoes"] == 1.0
    p = ev(p, "e3", EventType.remove_from_cart, 1000, "a", unit(1, 0), category="shoes")
    assert p.categories["shoes"] == pytest.approx(2.0)


def test_stated_interest_seeds_a_profile():
    p = apply_stated_interest(Profile("u"), unit(0, 1), 0.0, PARAMS)
    assert p.stated_interest
    np.testing.assert_allclose(query_vector(p, PARAMS), unit(0, 1), atol=1e-6)
    p = ev(p, "e1", EventType.purchase, 1, "a", unit(1, 0))
    q = query_vector(p, PARAMS)
    assert q[0] > 0 and q[1] > 0


def test_stated_phrases_are_kept_until_the_user_has_behaviour_of_their_own():
    phrases = [unit(1, 0), unit(0, 1)]
    p = apply_stated_interest(Profile("u"), unit(1, 1), 0.0, PARAMS, phrases=phrases)
    assert [v.tolist() for v in p.stated_phrases] == [v.tolist() for v in phrases]
    p = apply_stated_interest(p, unit(1, 1), 1.0, PARAMS, phrases=[unit(1, 2)] * MAX_STATED_PHRASES)
    assert len(p.stated_phrases) == MAX_STATED_PHRASES  # the newest kept
    for n in range(PHRASES_UNTIL_RECENT - 1):
        p = ev(p, f"e{n}", ts=2.0 + n, item=f"i{n}", vector=unit(1, 0))
        assert len(p.stated_phrases) == MAX_STATED_PHRASES
    p = ev(p, "last", ts=9.0, item="i9", vector=unit(1, 0))
    assert p.stated_phrases == ()
    assert apply_stated_interest(p, unit(1, 1), 10.0, PARAMS, phrases=phrases).stated_phrases == ()  # too late


def test_a_model_swap_drops_the_stated_phrases_with_the_old_space():
    p = apply_stated_interest(Profile("u"), unit(1, 1), 0.0, PARAMS, phrases=[unit(1, 0), unit(0, 1)])
    assert rebuild_interests(p, {}, "v2", PARAMS).stated_phrases == ()
