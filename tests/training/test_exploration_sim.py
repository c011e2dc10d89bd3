"""The exploration replay on tiny synthetic worlds: random vectors, no encoder, milliseconds."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest

from training.datasets import RetailLog
from training.exploration_sim import (
    Basket,
    Policy,
    PolicyStats,
    SimConfig,
    add_arguments,
    basket_ndcg,
    claims,
    policy_grid,
    retail_user_baskets,
    simulate,
    summarise,
)

DIM = 16


def clustered_world(n_topics: int, per_topic: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Item vectors in tight clusters around orthogonal directions, and each item's topic."""
    rng = np.random.default_rng(seed)
    centres = np.eye(DIM, dtype=np.float32)[:n_topics]
    topics = np.repeat(np.arange(n_topics), per_topic)
    vectors = centres[topics] + 0.05 * rng.standard_normal((len(topics), DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), topics


def items_of(topics: np.ndarray, topic: int) -> np.ndarray:
    return np.flatnonzero(topics == topic)


def test_rate_zero_never_explores_and_exploit_shows_nearest_unbought():
    vectors, topics = clustered_world(4, 20)
    rng = np.random.default_rng(1)
    baskets = {
        f"u{u}": [Basket(float(100 * s + u), rng.choice(items_of(topics, 0), 2, replace=False)) for s in range(6)]
        for u in range(5)
    }
    policies = [Policy("exploit", 0.0), Policy("random", 0.0, 3), Policy("thompson", 0.0, 4)]
    stats = simulate(vectors, topics, baskets, policies)
    for s in stats:
        assert s.explored == 0 and not s.explored_topics
    # without exploration every policy shows the same list, so the same accuracy and discovery
    assert len({(s.ndcg, s.hits, s.discovered) for s in stats}) == 1
    assert stats[0].steps == 5 * 5


def test_explored_items_are_never_already_bought_and_come_from_unbought_topics(monkeypatch):
    vectors, topics = clustered_world(5, 8)
    rng = np.random.default_rng(2)
    both = np.concatenate([items_of(topics, 0), items_of(topics, 1)])
    baskets = {
        f"u{u}": [Basket(float(10 * s + u), rng.choice(both, 3, replace=False) if s else both[[0, -1]])
                  for s in range(8)]
        for u in range(6)
    }
    shown_lists: list[tuple[str, list[int]]] = []
    import training.exploration_sim as sim

    real = sim.basket_ndcg

    def spy(shown, targets, k=10):
        shown_lists.append(list(shown))
        return real(shown, targets, k)

    monkeypatch.setattr(sim, "basket_ndcg", spy)
    stats = simulate(vectors, topics, baskets, [Policy("random", 1.0, 0), Policy("thompson", 1.0, 0)])
    assert all(s.explored > 0 for s in stats)
    # only topics 0 and 1 are ever bought, so only 2, 3, 4 may be explored
    for s in stats:
        assert set(s.explored_topics) <= {2, 3, 4}
    # every shown list (explored slots included) is free of items the user bought before: a
    # replay of one user makes that checkable from the lists
    one = {"u0": baskets["u0"]}
    shown_lists.clear()
    simulate(vectors, topics, one, [Policy("random", 1.0, 0)])
    bought: set[int] = set(baskets["u0"][0].items.tolist())
    steps = iter(shown_lists)
    for basket in baskets["u0"][1:]:
        if set(basket.items.tolist()) - bought:
            shown = next(steps)
            assert not set(shown) & bought
            assert len(shown) == len(set(shown)) == 10
        bought |= set(basket.items.tolist())


def test_thompson_learns_the_topic_that_is_always_rewarded():
    """Users buy topic 0, then at basket 4 try topic 3 for the first time; no other topic is
    ever bought. Explored topic-3 slots are rewarded, others never: thompson should learn to
    explore topic 3 far more than random's one in five."""
    vectors, topics = clustered_world(6, 10)
    rng = np.random.default_rng(3)
    baskets = {}
    for u in range(60):
        user = []
        for s in range(7):
            items = list(rng.choice(items_of(topics, 0), 2, replace=False))
            if s >= 4:
                items.append(int(rng.choice(items_of(topics, 3))))
            user.append(Basket(float(1000 * u + s), np.asarray(items)))
        baskets[f"u{u:02d}"] = user
    policies = [Policy("random", 0.1, 0), Policy("thompson", 0.1, 0)]
    random_stats, thompson_stats = simulate(vectors, topics, baskets, policies, SimConfig(horizon=3))

    def share(s: PolicyStats) -> float:
        return s.explored_topics[3] / sum(s.explored_topics.values())

    # random: 1 in 5 candidates at steps 1-4, none after topic 3 is bought
    assert share(random_stats) < 0.2
    assert share(thompson_stats) > 2 * share(random_stats)
    assert thompson_stats.rewarded > random_stats.rewarded
    assert thompson_stats.discovered >= random_stats.discovered


def test_basket_ndcg_hand_made():
    assert basket_ndcg([5, 1, 2], {5}) == (1.0, 1)
    ndcg, hit = basket_ndcg([1, 5, 2], {5})
    assert hit == 1 and ndcg == pytest.approx(1 / np.log2(3))
    # two targets, one shown first: DCG 1 over ideal 1 + 1/log2(3)
    ndcg, _ = basket_ndcg([7, 1, 2], {7, 9})
    assert ndcg == pytest.approx(1 / (1 + 1 / np.log2(3)))
    assert basket_ndcg([1, 2, 3], {9}) == (0.0, 0)
    # a target past k does not count
    assert basket_ndcg(list(range(20)), {15}, k=10) == (0.0, 0)
    with pytest.raises(ValueError):
        basket_ndcg([1], set())


def test_discovery_and_steps_ahead_hand_made():
    """Two topics of 10 items; the user buys topic 0 for three baskets, then topic 1. Exploit
    fills the list with topic 0's unbought items and only the slots left over go to topic 1."""
    vectors, topics = clustered_world(2, 10)
    t0, t1 = items_of(topics, 0), items_of(topics, 1)
    baskets = {"u": [Basket(0.0, t0[:2]), Basket(1.0, t0[2:4]), Basket(2.0, t0[4:5]), Basket(3.0, t1[:1])]}
    (stats,) = simulate(vectors, topics, baskets, [Policy("exploit", 0.0)], SimConfig(k=10))
    assert stats.new_interests == 1
    # step 1: 8 of topic 0 unbought -> 2 slots show topic 1 already: discovered 2 steps ahead
    assert stats.discovered == 1 and stats.steps_ahead == 2 and stats.discovered_ahead == 1
    assert stats.summary()["discovery"] == 1.0
    # k=5 leaves no room for topic 1 until the bought topic-0 items thin out (step 3: 5 left)
    (narrow,) = simulate(vectors, topics, baskets, [Policy("exploit", 0.0)], SimConfig(k=5))
    assert narrow.new_interests == 1 and narrow.discovered == 0


def test_rewards_follow_the_horizon():
    """An explored slot is rewarded only if its topic is bought within `horizon` baskets."""
    vectors, topics = clustered_world(2, 10)
    t0, t1 = items_of(topics, 0), items_of(topics, 1)
    # topic 1 is bought at basket 5; with rate 1 topic 1 is explored at steps 1..5
    baskets = {"u": [Basket(float(s), t0[s:s + 1]) for s in range(5)] + [Basket(5.0, t1[:1])]}
    for horizon, rewarded in ((1, 1), (3, 3), (10, 5)):
        (stats,) = simulate(vectors, topics, baskets, [Policy("random", 1.0, 0)], SimConfig(k=1, horizon=horizon))
        assert stats.explored == 5
        assert stats.rewarded == rewarded, horizon


def test_summary_rows_and_claims():
    vectors, topics = clustered_world(4, 10)
    rng = np.random.default_rng(4)
    baskets = {
        f"u{u}": [Basket(float(10 * s + u), rng.choice(items_of(topics, int(rng.integers(4))), 2, replace=False))
                  for s in range(6)]
        for u in range(8)
    }
    policies = policy_grid((0.1, 0.2), (0, 1))
    assert [p.label for p in policies].count("thompson@0.1") == 2 and policies[0].label == "exploit"
    rows = summarise(policies, simulate(vectors, topics, baskets, policies), ["a", "b", "c", "d"])
    assert [r["label"] for r in rows] == ["exploit", "random@0.1", "random@0.2", "thompson@0.1", "thompson@0.2"]
    assert rows[0]["ndcg_cost_pct"] == 0.0
    sentences = claims(rows, 10.0)
    assert len(sentences) == 4 and sentences[2].startswith("thompson@0.1 discovers")


def test_retail_user_baskets_orders_invoices_and_filters_users():
    ts = pd.to_datetime(["2011-01-01 10:00", "2011-01-01 10:00", "2011-01-02 00:00", "2011-01-03 00:00",
                         "2011-01-04 00:00", "2011-01-01 00:00"], utc=True)
    purchases = pd.DataFrame({
        "user_id": ["a", "a", "a", "a", "a", "b"],
        "item_id": ["x", "y", "x", "z", "x", "x"],
        "invoice": ["1", "1", "2", "3", "4", "5"],
        "ts": ts, "quantity": 1, "price": 1.0,
    })
    log = RetailLog(items=pd.DataFrame({"item_id": ["x", "y", "z"], "title": ["X", "Y", "Z"]}), purchases=purchases)
    out = retail_user_baskets(log, {"x": 0, "y": 1, "z": 2}, min_invoices=4)
    assert list(out) == ["a"]
    assert [b.items.tolist() for b in out["a"]] == [[0, 1], [0], [2], [0]]
    assert out["a"][1].ts - out["a"][0].ts == pytest.approx(14 * 3600)


def test_command_line_arguments():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--rate", "0.05,0.3", "--users", "50", "--json"])
    assert args.rate == (0.05, 0.3) and args.users == 50 and args.json and args.topics == 24
    with pytest.raises(SystemExit):
        parser.parse_args(["--rate", "1.5"])
