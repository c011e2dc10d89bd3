"""Fresh popularity for the offline protocol: time-correct decayed counts in one sweep."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference.ranking import popularity_score
from training.fresh_popularity import decayed_counts, log_scaled_rows, training_purchases
from training.split import ProtocolSplit


def reference(event_times, event_items, case_times, n_items, half_life_s):
    out = np.zeros((len(case_times), n_items))
    for c, t in enumerate(case_times):
        for te, i in zip(event_times, event_items):
            if te < t:
                out[c, i] += 2.0 ** (-(t - te) / half_life_s)
    return out


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 4)), max_size=40),
    st.lists(st.integers(0, 450), min_size=1, max_size=12),
    st.sampled_from([0.5, 3.0, 50.0]),
)
def test_decayed_counts_equal_the_event_by_event_sum_of_what_came_strictly_before(events, cases, half_life):
    """Half-lives this short against times this far apart make the sweep rebase its sums."""
    events = sorted(events)
    times = np.asarray([float(t) for t, _ in events])
    items = np.asarray([i for _, i in events], dtype=np.int64)
    got = decayed_counts(times, items, np.asarray(cases, dtype=np.float64), 5, half_life)
    want = reference(times, items, cases, 5, half_life)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-300)


def test_decayed_counts_refuse_a_non_positive_half_life():
    with pytest.raises(ValueError, match="half_life_s"):
        decayed_counts(np.zeros(1), np.zeros(1, dtype=np.int64), np.ones(1), 1, 0.0)


def test_rows_are_log_scaled_by_their_own_maximum_as_the_worker_scales_candidates():
    counts = np.array([[0.0, 1.0, 4.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    scaled = log_scaled_rows(counts)
    for row, out in zip(counts, scaled):
        assert out.tolist() == pytest.approx([popularity_score(v, row.max()) for v in row])


def test_training_purchases_are_the_history_units_only_in_time_order():
    split = ProtocolSplit(
        name="t", unit="basket", item_ids=list("abcd"), users=["u", "v"],
        units=[[[0, 1], [2], [3], [0]], [[3], [2], [1]]],
        unit_times=[[10.0, 20.0, 30.0, 40.0], [5.0, 25.0, 35.0]],
    )
    times, items = training_purchases(split)
    # u's first two baskets (its last two are validation and test), v's first (one history unit)
    assert times.tolist() == [5.0, 10.0, 10.0, 20.0] and items.tolist() == [3, 0, 1, 2]
    with pytest.raises(ValueError, match="one time per unit"):
        ProtocolSplit(name="t", unit="basket", item_ids=["a"], users=["u"], units=[[[0], [0]]], unit_times=[[1.0]])
