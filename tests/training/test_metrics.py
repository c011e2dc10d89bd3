"""Full-ranking metrics against hand-computed values and a brute-force reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.metrics import (
    coverage,
    hit_at_k,
    ndcg_at_k,
    rank_items,
    reciprocal_rank,
    summarize,
    top_k,
)


def arr(*values: int) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def test_rank_breaks_ties_by_item_index_and_pushes_excluded_items_last() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.9], [0.1, 0.9, 0.5, 0.9]])
    top, ranks = rank_items(scores, [arr(), arr(1)], [arr(2), arr(2, 0)], k=2)

    assert top.tolist() == [[1, 3], [3, 2]]
    assert [r.tolist() for r in ranks] == [[3], [2, 3]]


def test_constant_scores_rank_by_index() -> None:
    scores = torch.zeros(1, 6)
    top, ranks = rank_items(scores, [arr(0)], [arr(5, 1)], k=3)
    assert top.tolist() == [[1, 2, 3]]
    assert ranks[0].tolist() == [5, 1]


def test_top_k_and_ranks_match_a_brute_force_sort() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(30, 25)).astype(np.float32)  # many ties
    exclude = [rng.choice(25, size=rng.integers(0, 5), replace=False) for _ in range(30)]
    targets = [np.setdiff1d(rng.choice(25, size=3, replace=False), e) for e in exclude]
    targets = [t if len(t) else arr(int(np.setdiff1d(np.arange(25), e)[0])) for t, e in zip(targets, exclude)]

    top, ranks = rank_items(torch.from_numpy(scores), exclude, targets, k=7)

    for row in range(30):
        s = scores[row].astype(np.float64).copy()
        s[exclude[row]] = -np.inf
        order = np.lexsort((np.arange(25), -s))  # score descending, then index ascending
        assert top[row].tolist() == order[:7].tolist()
        position = np.empty(25, dtype=np.int64)
        position[order] = np.arange(1, 26)
        assert ranks[row].tolist() == position[targets[row]].tolist()


def test_top_k_with_fewer_ties_than_places() -> None:
    scores = torch.tensor([[3.0, 1.0, 2.0, 2.0, 0.0]])
    assert top_k(scores, 3).tolist() == [[0, 2, 3]]


def test_basket_metrics_by_hand() -> None:
    ranks = [arr(1, 3), arr(11), arr(2)]

    assert hit_at_k(ranks, 10).tolist() == [1.0, 0.0, 1.0]
    ideal_two = 1 + 1 / math.log2(3)
    expected = [(1 + 1 / math.log2(4)) / ideal_two, 0.0, 1 / math.log2(3)]
    assert ndcg_at_k(ranks, 10) == pytest.approx(expected)
    assert reciprocal_rank(ranks) == pytest.approx([1.0, 1 / 11, 0.5])


def test_ndcg_ideal_is_capped_at_k() -> None:
    # Twelve targets, the first ten ranked 1..10: a perfect top 10.
    assert ndcg_at_k([np.arange(1, 13)], 10) == pytest.approx([1.0])


def test_coverage_and_summary() -> None:
    top = np.array([[0, 1], [1, 2]])
    assert coverage(top, 8) == pytest.approx(3 / 8)
    summary = summarize([arr(1), arr(20)], top, n_items=8, k=2)
    assert summary == pytest.approx({"hr@2": 0.5, "ndcg@2": 0.5, "mrr": (1 + 1 / 20) / 2, "coverage": 3 / 8, "cases": 2})


def test_rank_items_rejects_nan_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match="NaN"):
        rank_items(torch.tensor([[0.0, float("nan")]]), [arr()], [arr(0)], k=1)
    with pytest.raises(ValueError, match="one exclude"):
        rank_items(torch.zeros(2, 3), [arr()], [arr(0)], k=1)
    with pytest.raises(ValueError, match="k must be"):
        rank_items(torch.zeros(1, 3), [arr()], [arr(0)], k=4)
