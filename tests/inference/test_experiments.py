from collections import Counter
from datetime import datetime, timezone

import pytest

from inference.experiments import DEFAULT_VARIANT, VariantSpec, assign_variant, report, tally, wilson
from inference.schemas import Event, Recommendation, RecommendedItem

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_assignment_is_deterministic_and_follows_the_weights():
    variants = {"control": VariantSpec(weight=3), "explore": VariantSpec(weight=1, exploration_rate=0.3)}
    users = [f"u{n}" for n in range(20_000)]
    first = [assign_variant(u, variants, "s1") for u in users]
    assert first == [assign_variant(u, variants, "s1") for u in users]
    share = Counter(first)["explore"] / len(users)
    assert 0.23 < share < 0.27
    moved = sum(a != b for a, b in zip(first, (assign_variant(u, variants, "s2") for u in users)))
    assert moved > 1000  # a new salt reshuffles
    assert assign_variant("u1", {}, "s1") == DEFAULT_VARIANT


def test_wilson_interval_contains_the_rate_and_narrows():
    lo, hi = wilson(10, 100)
    assert lo < 0.1 < hi
    lo2, hi2 = wilson(100, 1000)
    assert hi2 - lo2 < hi - lo
    assert wilson(0, 0) == (0.0, 1.0)
    assert wilson(0, 50)[0] == 0.0


def rec(rec_id, variant, user="u"):
    return Recommendation(rec_id=rec_id, user_id=user, items=[RecommendedItem(item_id="i", score=1, position=1,
                          reason="r")], model_version="m", variant=variant, generated_at=NOW)


def ev(n, type, rec_id, item="i", price=None, quantity=1, user="u"):
    return Event.model_validate({"schema": 1, "event_id": f"e{n}", "user_id": user, "type": type, "ts": NOW,
                                 "item_id": item, "rec_id": rec_id, "price": price, "quantity": quantity})


def test_tally_attributes_feedback_to_the_recommendations_variant():
    recs = [rec("r1", "a"), rec("r2", "b"), rec("r3", None)]
    events = [
        ev(1, "impression", "r1"), ev(2, "impression", "r1"),  # the same impression twice: once
        ev(3, "impression", "r1", item="j"), ev(4, "click", "r1"), ev(5, "purchase", "r1", price=5.0, quantity=2),
        ev(6, "impression", "r2"), ev(7, "click", "unknown"), ev(8, "impression", "r3"),
    ]
    t = tally(recs, events)
    assert (t["a"].impressions, t["a"].clicks, t["a"].purchases, t["a"].revenue) == (2, 1, 1, 10.0)
    assert (t["b"].impressions, t["b"].clicks) == (1, 0)
    assert t[DEFAULT_VARIANT].impressions == 1
    rows = {r.variant: r for r in report(t)}
    assert rows["a"].ctr == pytest.approx(0.5) and rows["a"].ctr_ci[0] < 0.5 < rows["a"].ctr_ci[1]
    assert rows["a"].revenue_per_impression == pytest.approx(5.0)
    assert rows["b"].conversion == 0.0
