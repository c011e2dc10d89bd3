from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import numpy as np

from inference.ranking import Candidate, CandidatePool, Weights, best_per_item, popularity_score, rank, score


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


def _rank_one_by_one(candidates, *, k, popularity, category_affinity, weights):
    """The definition rank() must match: score every candidate, sort by (-score, id), keep k."""
    max_pop = max((popularity.get(c.item_id, 0.0) for c in candidates), default=0.0)
    max_price = max((c.price or 0.0 for c in candidates), default=0.0)
    scored = []
    for c in candidates:
        pop = popularity_score(popularity.get(c.item_id, 0.0), max_pop)
        aff = category_affinity.get(c.category, 0.0) if c.category else 0.0
        price = popularity_score(c.price or 0.0, max_price) if weights.price else 0.0
        scored.append((-score(c, pop, aff, price, weights), c.item_id, pop))
    return [(i, -s, p) for s, i, p in sorted(scored)[:k]]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([0.1, 0.5, 0.5, 0.9]), st.sampled_from([None, "a", "b"]),
                       st.sampled_from([None, 0.0, 5.0, 20.0]), st.sampled_from([0.0, 1.0, 3.0])),
             max_size=60),
    st.integers(0, 15),
    st.sampled_from([0.0, 0.3]),
)
def test_rank_matches_scoring_every_candidate_one_by_one(rows, k, price_weight):
    """Many exact ties (repeated similarities and popularity), so the tie-break at the k-th place counts."""
    candidates = [Candidate(f"i{n:02d}", sim, None, f"t{n}", cat, price) for n, (sim, cat, price, _) in enumerate(rows)]
    popularity = {f"i{n:02d}": pop for n, (*_, pop) in enumerate(rows)}
    weights = Weights(price=price_weight)
    got = rank(candidates, k=k, popularity=popularity, category_affinity={"a": 0.7}, weights=weights)
    want = _rank_one_by_one(candidates, k=k, popularity=popularity, category_affinity={"a": 0.7}, weights=weights)
    assert [(r.item_id, r.score, r.popularity) for r in got] == want
    # The same candidates as columns over item records (what retrieval hands over) rank the same,
    # and the Candidates built from the pool are the ones a list would have held.
    records = [SimpleNamespace(vector=None, title=c.title, category=c.category, price=c.price) for c in candidates]
    pool = CandidatePool([c.item_id for c in candidates], [c.similarity for c in candidates], records)
    pooled = rank(pool, k=k, popularity=popularity, category_affinity={"a": 0.7}, weights=weights)
    assert [(r.candidate, r.score, r.popularity) for r in pooled] == [(r.candidate, r.score, r.popularity) for r in got]
    assert list(pool) == candidates and pool[1:3] == candidates[1:3] and CandidatePool.of(pool) is pool
    # Popularity as an array in the candidates' order (what the worker passes) ranks the same.
    aligned = np.array([popularity.get(c.item_id, 0.0) for c in candidates])
    by_array = rank(pool, k=k, popularity=aligned, category_affinity={"a": 0.7}, weights=weights)
    assert [(r.candidate, r.score, r.popularity) for r in by_array] == [(r.candidate, r.score, r.popularity) for r in got]


def test_rank_refuses_a_popularity_array_of_another_length():
    with pytest.raises(ValueError, match="2 values for 1 candidates"):
        rank([Candidate("a", 0.5, None, "A", None)], k=1, popularity=np.zeros(2), category_affinity={},
             weights=Weights())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.sampled_from([0.1, 0.2, 0.5, 0.9])),
                         max_size=8, unique_by=lambda hit: hit[0]), min_size=1, max_size=4))
def test_best_per_item_keeps_each_items_best_similarity(queries):
    """Several queries' results: every item once, with the highest similarity any query gave it."""
    results = [([i for i, _ in hits], [s for _, s in hits]) for hits in queries]
    want: dict[str, float] = {}
    for hits in queries:
        for item_id, similarity in hits:
            want[item_id] = max(want.get(item_id, -1.0), similarity)
    ids, similarities = best_per_item(results)
    assert dict(zip(ids, similarities)) == want and len(ids) == len(want)
