"""The protocol split: units, phases, exclusion, sampling and held-out items."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.datasets import SequenceData, clean_online_retail, split_last_unit
from training.split import (
    ProtocolSplit,
    eval_cases,
    held_out_items,
    sample_users,
    split_retail,
    split_sequences,
    warm_slices,
    without_items,
)


def test_sequences_split_leave_one_out_with_natural_item_order() -> None:
    data = SequenceData(
        sequences={"10": ["3", "10", "2", "3"], "2": ["2", "10"], "1": ["7"]},
        item_attributes={"2": ["5"], "3": ["5", "11"], "10": [], "7": ["1"]},
    )
    split = split_sequences(data, name="toy")

    assert split.item_ids == ["2", "3", "7", "10"]
    assert split.users == ["2", "10"]  # user 1 has one item only
    assert split.dropped_users == 1
    u = split.users.index("10")
    assert split.history(u) == [[1], [3]]
    assert split.inputs(u, "validation") == [[1], [3]]
    assert split.target(u, "validation") == [0]
    assert split.inputs(u, "test") == [[1], [3], [0]]
    assert split.target(u, "test") == [1]
    assert split.item_attributes == [[1], [1, 2], [0], []]
    assert split.n_attributes == 3
    # The same units as training.datasets.split_last_unit.
    hist, val, test = split_last_unit([[i] for i in ["3", "10", "2", "3"]])
    assert (hist, val, test) == (["3", "10"], ["2"], ["3"])


def retail_rows() -> pd.DataFrame:
    rows = [
        ("1", "2011-01-01 10:00:00", "A1", "RED MUG", 17850.0),
        ("1", "2011-01-01 10:00:00", "B2", "BLUE MUG", 17850.0),
        ("2", "2011-02-01 10:00:00", "C3", "TEAPOT", 17850.0),
        ("3", "2011-03-01 10:00:00", "A1", "RED MUG", 17850.0),
        ("3", "2011-03-01 10:00:00", "D4", "SPOON", 17850.0),
        ("4", "2011-03-01 10:00:00", "A1", "RED MUG", 12346.0),
    ]
    return pd.DataFrame(
        {
            "InvoiceNo": [r[0] for r in rows],
            "StockCode": [r[2] for r in rows],
            "Description": [r[3] for r in rows],
            "Quantity": 1,
            "InvoiceDate": [r[1] for r in rows],
            "UnitPrice": 1.0,
            "CustomerID": [r[4] for r in rows],
            "Country": "United Kingdom",
        }
    )


def test_retail_split_is_by_basket_with_titles() -> None:
    split = split_retail(clean_online_retail(retail_rows()))

    assert split.unit == "basket"
    assert split.item_ids == ["A1", "B2", "C3", "D4"]
    assert split.item_text == ["RED MUG", "BLUE MUG", "TEAPOT", "SPOON"]
    assert split.users == ["17850"] and split.dropped_users == 1
    assert split.history(0) == [[0, 1]]
    assert split.target(0, "validation") == [2]
    assert split.target(0, "test") == [0, 3]


def test_exclusion_drops_seen_targets_and_skips_users_left_without() -> None:
    split = ProtocolSplit(
        name="t",
        unit="basket",
        item_ids=list("abcde"),
        users=["u", "v"],
        units=[[[0, 1], [2], [0, 3]], [[4], [4]]],
    )
    excluded = eval_cases(split, "test", exclude_seen=True)
    assert excluded.users.tolist() == [0]
    assert excluded.exclude[0].tolist() == [0, 1, 2]
    assert excluded.targets[0].tolist() == [3]
    assert excluded.skipped == 1

    kept = eval_cases(split, "test", exclude_seen=False)
    assert kept.users.tolist() == [0, 1]
    assert kept.targets[0].tolist() == [0, 3] and kept.exclude[0].tolist() == []

    validation = eval_cases(split, "validation")
    assert validation.targets[0].tolist() == [2] and validation.exclude[0].tolist() == [0, 1]

    only = eval_cases(split, "test", exclude_seen=False, only_items=np.array([0, 0, 0, 1, 0], bool))
    assert only.users.tolist() == [0] and only.targets[0].tolist() == [3]
    with pytest.raises(ValueError, match="phase"):
        eval_cases(split, "train")  # type: ignore[arg-type]


def test_held_out_items_are_deterministic_and_about_the_fraction() -> None:
    split = ProtocolSplit(
        name="t", unit="item", item_ids=[str(i) for i in range(2000)], users=["u"], units=[[[0], [1]]]
    )
    mask = held_out_items(split, 0.1)
    assert mask.dtype == bool
    assert 150 < mask.sum() < 250
    assert (held_out_items(split, 0.1) == mask).all()
    assert held_out_items(split, 0.0).sum() == 0
    assert without_items([[0, 1], [2]], np.array([True, False, True])) == [[1]]


def test_sample_users_keeps_the_catalog() -> None:
    split = ProtocolSplit(
        name="t",
        unit="item",
        item_ids=list("abcd"),
        users=["u", "v", "w"],
        units=[[[0], [1]], [[1], [2]], [[2], [3]]],
    )
    sample = sample_users(split, 2, seed=1)
    assert sample.n_users == 2 and sample.item_ids == split.item_ids
    assert sample_users(split, 0) is split


def test_warm_slices_split_the_known_items_into_held_out_sized_parts() -> None:
    split = ProtocolSplit(
        name="t", unit="item", item_ids=[str(i) for i in range(2000)], users=["u"], units=[[[0], [1]]]
    )
    held_out = held_out_items(split, 0.1)
    slices = warm_slices(split, held_out)
    assert len(slices) == round((~held_out).sum() / held_out.sum()) in (9, 10)
    stacked = np.stack(slices)
    assert (stacked.sum(axis=0) == ~held_out).all()  # every known item in exactly one slice
    assert all(120 < s.sum() < 280 for s in slices)
    assert all((warm_slices(split, held_out)[k] == s).all() for k, s in enumerate(slices))
    assert warm_slices(split, np.zeros(2000, dtype=bool)) == []
