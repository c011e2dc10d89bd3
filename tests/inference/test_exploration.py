import numpy as np

from inference.exploration import (
    MAX_PENDING, Arm, ExploredSlot, add_observation, attribute, choose_topics, explore_count, posterior,
    remember_explored,
)
from inference.schemas import EventType


def test_posterior_mixes_a_bounded_global_prior_with_the_users_own_observations():
    assert posterior(None, None, 20) == (1.0, 1.0)
    a, b = posterior(Arm(shown=1000, rewarded=500), None, 20)
    assert abs(a - 11) < 0.1 and abs(b - 11) < 0.1  # worth 20 observations, not 1000
    a2, b2 = posterior(Arm(shown=1000, rewarded=500), Arm(shown=10, rewarded=0), 20)
    assert a2 == a and b2 == b + 10
    a3, _ = posterior(Arm(shown=4, rewarded=4), None, 20)  # a thin global arm is worth only 4
    assert a3 < 1 + 4 + 0.01


def test_explore_count_follows_the_rate():
    rng = np.random.default_rng(0)
    assert explore_count(10, 0.0, rng) == 0
    assert explore_count(10, 1.0, rng) == 10
    mean = np.mean([explore_count(10, 0.2, rng) for _ in range(2000)])
    assert 1.8 < mean < 2.2


def test_thompson_prefers_topics_that_paid_off_and_avoids_those_the_user_refused():
    rng = np.random.default_rng(0)
    global_arms = {"good": Arm(200, 180), "bad": Arm(200, 2), "new": Arm()}
    picks = [choose_topics(["good", "bad", "new"], global_arms, {}, 1, rng)[0] for _ in range(500)]
    assert picks.count("good") > 350 and picks.count("bad") < 10 and picks.count("new") > 20
    refused = {"good": Arm(shown=60, rewarded=0)}
    picks = [choose_topics(["good", "bad", "new"], global_arms, refused, 1, rng)[0] for _ in range(500)]
    assert picks.count("good") < 150 and picks.count("new") > 300
    assert choose_topics([], global_arms, {}, 2, rng) == []
    assert len(set(choose_topics(["a", "b", "c"], {}, {}, 2, rng))) == 2


def test_add_observation_is_pure_and_bounded():
    arms = {"a": Arm(1, 0)}
    out = add_observation(arms, "b", 1, 1, limit=2)
    assert arms == {"a": Arm(1, 0)} and out["b"] == Arm(1, 1)
    out = add_observation(out, "c", 1, 0, limit=2)
    assert "c" in out and len(out) == 2


def test_feedback_counts_a_show_once_and_a_reward_once():
    pending = remember_explored((), [ExploredSlot("r1", "x", "t1"), ExploredSlot("r1", "y", "t2")])
    pending, fb = attribute(pending, rec_id="r1", item_id="x", type=EventType.impression)
    assert (fb.topic, fb.shown, fb.rewarded) == ("t1", 1, 0)
    pending, fb = attribute(pending, rec_id="r1", item_id="x", type=EventType.impression)
    assert fb is None
    pending, fb = attribute(pending, rec_id="r1", item_id="x", type=EventType.click)
    assert (fb.shown, fb.rewarded) == (0, 1)
    pending, fb = attribute(pending, rec_id="r1", item_id="x", type=EventType.purchase)
    assert fb is None
    # a click with no impression before it counts the show too
    pending, fb = attribute(pending, rec_id="r1", item_id="y", type=EventType.add_to_cart)
    assert (fb.topic, fb.shown, fb.rewarded) == ("t2", 1, 1)
    # wrong rec, no rec, a view: nothing
    assert attribute(pending, rec_id="r2", item_id="x", type=EventType.click)[1] is None
    assert attribute(pending, rec_id=None, item_id="x", type=EventType.click)[1] is None
    assert attribute(pending, rec_id="r1", item_id="x", type=EventType.view)[1] is None


def test_pending_slots_are_bounded_and_the_latest_wins():
    pending = ()
    for n in range(MAX_PENDING + 5):
        pending = remember_explored(pending, [ExploredSlot(f"r{n}", f"i{n}", "t")])
    assert len(pending) == MAX_PENDING and pending[-1].item_id == f"i{MAX_PENDING + 4}"
    pending = remember_explored(pending, [ExploredSlot("new", pending[0].item_id, "t")])
    assert sum(s.item_id == pending[-1].item_id for s in pending) == 1
