import numpy as np
import pytest

from inference.profiles import RecentItem
from inference.ranking import Candidate, Evidence, Weights, explain, popularity_score, rank
from inference.schemas import EventType


def unit(*xs):
    v = np.asarray(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


NO_EVIDENCE = Evidence(recent=(), vectors={}, titles={}, stated_interest=False)


def test_popularity_score_is_log_scaled_and_bounded():
    assert popularity_score(0, 10) == 0.0
    assert popularity_score(10, 10) == pytest.approx(1.0)
    assert 0.5 < popularity_score(3, 10) < 1.0
    assert popularity_score(5, 0) == 0.0


def test_rank_blends_similarity_with_popularity_and_is_deterministic():
    a = Candidate("a", 0.80, None, "A", None)
    b = Candidate("b", 0.78, None, "B", None)
    ranked = rank([a, b], k=2, popularity={"b": 100.0}, category_affinity={}, evidence=NO_EVIDENCE,
                  weights=Weights(1.0, 0.15, 0.0))
    assert [r.item_id for r in ranked] == ["b", "a"]
    ranked = rank([a, b], k=2, popularity={"b": 100.0}, category_affinity={}, evidence=NO_EVIDENCE,
                  weights=Weights(1.0, 0.0, 0.0))
    assert [r.item_id for r in ranked] == ["a", "b"]
    tie = rank([Candidate("z", 0.5, None, "Z", None), Candidate("y", 0.5, None, "Y", None)], k=2, popularity={},
               category_affinity={}, evidence=NO_EVIDENCE, weights=Weights())
    assert [r.item_id for r in tie] == ["y", "z"]


def test_rank_uses_category_affinity_and_truncates_to_k():
    cands = [Candidate(str(i), 0.5, None, str(i), "shoes" if i == 3 else "tents") for i in range(5)]
    ranked = rank(cands, k=2, popularity={}, category_affinity={"shoes": 1.0}, evidence=NO_EVIDENCE, weights=Weights())
    assert len(ranked) == 2 and ranked[0].item_id == "3"


def test_reason_cites_the_closest_history_item_with_the_true_verb():
    evidence = Evidence(
        recent=(RecentItem("tent", EventType.purchase, 1.0), RecentItem("mug", EventType.view, 2.0)),
        vectors={"tent": unit(1, 0, 0), "mug": unit(0, 1, 0)},
        titles={"tent": "2-person tent", "mug": "Enamel mug"},
        stated_interest=True,
    )
    near_tent = Candidate("stakes", 0.9, unit(0.9, 0.1, 0), "Tent stakes", None)
    assert explain(near_tent, evidence, 0.0) == 'because you bought "2-person tent"'
    near_mug = Candidate("cup", 0.9, unit(0.1, 0.9, 0), "Cup", None)
    assert explain(near_mug, evidence, 0.0) == 'because you viewed "Enamel mug"'
    unrelated = Candidate("x", 0.2, unit(0, 0, 1), "X", None)
    assert explain(unrelated, evidence, 0.0) == "matches the interests you told us about"


def test_reason_falls_back_to_activity_popularity_or_novelty():
    recent_only = Evidence(recent=(RecentItem("a", EventType.view, 1.0),), vectors={"a": unit(1, 0)},
                           titles={"a": "A"}, stated_interest=False)
    far = Candidate("b", 0.1, unit(0, 1), "B", None)
    assert explain(far, recent_only, 0.0) == "close to your recent activity"
    assert explain(far, NO_EVIDENCE, 0.3) == "popular with shoppers right now"
    assert explain(far, NO_EVIDENCE, 0.0) == "new in the catalog"


def test_an_item_is_never_its_own_evidence():
    evidence = Evidence(recent=(RecentItem("a", EventType.purchase, 1.0),), vectors={"a": unit(1, 0)},
                        titles={"a": "A"}, stated_interest=False)
    assert explain(Candidate("a", 1.0, unit(1, 0), "A", None), evidence, 0.0) == "close to your recent activity"
