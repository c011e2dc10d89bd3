import pytest

from inference.ranking import Candidate, Weights, popularity_score, rank


def test_popularity_score_is_log_scaled_and_bounded():
    assert popularity_score(0, 10) == 0.0
    assert popularity_score(10, 10) == pytest.approx(1.0)
    assert 0.5 < popularity_score(3, 10) < 1.0
    assert popularity_score(5, 0) == 0.0


def test_rank_blends_similarity_with_popularity_and_is_deterministic():
    a = Candidate("a", 0.80, None, "A", None)
    b = Candidate("b", 0.78, None, "B", None)
    ranked = rank([a, b], k=2, popularity={"b": 100.0}, category_affinity={}, weights=Weights(1.0, 0.15, 0.0))
    assert [r.item_id for r in ranked] == ["b", "a"]
    ranked = rank([a, b], k=2, popularity={"b": 100.0}, category_affinity={}, weights=Weights(1.0, 0.0, 0.0))
    assert [r.item_id for r in ranked] == ["a", "b"]
    tie = rank([Candidate("z", 0.5, None, "Z", None), Candidate("y", 0.5, None, "Y", None)], k=2, popularity={},
               category_affinity={}, weights=Weights())
    assert [r.item_id for r in tie] == ["y", "z"]


def test_rank_uses_category_affinity_and_truncates_to_k():
    cands = [Candidate(str(i), 0.5, None, str(i), "shoes" if i == 3 else "tents") for i in range(5)]
    ranked = rank(cands, k=2, popularity={}, category_affinity={"shoes": 1.0}, weights=Weights())
    assert len(ranked) == 2 and ranked[0].item_id == "3"


def test_a_price_boost_promotes_dearer_items_only_when_set():
    cheap = Candidate("cheap", 0.60, None, "Cheap", None, price=2.0)
    dear = Candidate("dear", 0.55, None, "Dear", None, price=80.0)
    plain = rank([cheap, dear], k=2, popularity={}, category_affinity={}, weights=Weights())
    assert [r.item_id for r in plain] == ["cheap", "dear"]
    boosted = rank([cheap, dear], k=2, popularity={}, category_affinity={}, weights=Weights(price=0.2))
    assert [r.item_id for r in boosted] == ["dear", "cheap"]
