"""Popularity and co-occurrence baselines on hand-made splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.baselines import CoOccurrence, Popularity, item_counts
from training.split import ProtocolSplit


def basket_split() -> ProtocolSplit:
    # Items a..e; history units are all but the last two units of each user.
    return ProtocolSplit(
        name="toy",
        unit="basket",
        item_ids=list("abcde"),
        users=["u", "v"],
        units=[
            [[0, 1], [2], [3], [4]],  # history: {a, b} then {c}
            [[0], [1, 0], [2], [3]],  # history: {a} then {b, a}
        ],
    )


def test_popularity_counts_history_units_only() -> None:
    split = basket_split()
    assert item_counts(split).tolist() == [3, 2, 1, 0, 0]
    drop = np.array([True, False, False, False, False])
    assert item_counts(split, drop).tolist() == [0, 2, 1, 0, 0]

    scores = Popularity().fit(split).scores(split, np.array([0, 1]), "test")
    assert scores.shape == (2, 5)
    assert scores[1].tolist() == [3, 2, 1, 0, 0]


def test_cooccurrence_counts_same_basket_and_next_units() -> None:
    split = basket_split()
    model = CoOccurrence(window=1, recent=1, decay=0.5).fit(split)
    dense = model.matrix_t.to_dense().T  # rows: from item, columns: to item, row-normalised
    # a: with b in a basket twice (u, v), followed by c once (u), by b and a's basket once (v).
    # Raw counts from a: b 1 (u basket) + 1 (v next basket) + 1 (v same basket) = 3, c 1.
    assert dense[0].tolist() == pytest.approx([0, 3 / 4, 1 / 4, 0, 0])
    # c is never followed by anything in a history: an empty row.
    assert dense.sum(dim=1)[:3].tolist() == pytest.approx([1, 1, 0])

    # User v's last input unit for the test is [c] (units[:-1][-1]): c co-occurs with nothing
    # seen after it, so popularity (tiny) decides.
    scores = model.scores(split, np.array([1]), "test")
    assert torch.argmax(scores[0]).item() == 0


def test_cooccurrence_recent_units_are_decayed() -> None:
    split = ProtocolSplit(
        name="seq",
        unit="item",
        item_ids=list("abcd"),
        users=["u", "w", "x"],
        units=[[[0], [1], [2], [3], [0], [1]], [[2], [3], [0], [1]], [[0], [0], [0], [0]]],
    )
    model = CoOccurrence(window=1, recent=2, decay=0.5).fit(split)
    weights = model.user_weights(split, np.array([0]), "test")
    # Known past of u for the test: a b c d a -> the last two units a (age 0) and d (age 1).
    assert weights[0].tolist() == [1.0, 0.0, 0.0, 0.5]


def test_baselines_need_fit() -> None:
    split = basket_split()
    with pytest.raises(RuntimeError, match="fit"):
        Popularity().scores(split, np.array([0]), "test")
    with pytest.raises(ValueError):
        CoOccurrence(window=0)
