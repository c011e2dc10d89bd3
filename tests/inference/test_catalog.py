"""Popularity: decayed counts, and a top-n that ranks without decaying every count."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference.catalog import Popularity

HALF_LIFE = 86_400.0

events = st.lists(
    st.tuples(st.sampled_from([f"i{k}" for k in range(30)]), st.floats(0.1, 5.0), st.floats(0, 60 * 86_400.0)),
    min_size=1, max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(events, st.integers(1, 40))
def test_top_matches_ranking_by_the_decayed_value(log, n):
    pop = Popularity(HALF_LIFE)
    for item, weight, ts in log:
        pop.add(item, weight, ts)
    top = pop.top(n)
    values = [pop.value(i) for i in top]
    assert values == pytest.approx(sorted(values, reverse=True), rel=1e-9)
    assert len(top) == min(n, len({item for item, _, _ in log}))
    rest = [pop.value(i) for i in pop.snapshot() if i not in top]
    if rest:
        assert min(values) >= max(rest) * (1 - 1e-9)
    asked = [*top, "never-counted", *top[:1]]
    assert pop.values(asked).tolist() == pytest.approx([pop.value(i) for i in asked], rel=1e-12)


def test_an_old_burst_ranks_below_steady_recent_interest():
    pop = Popularity(HALF_LIFE)
    for _ in range(8):
        pop.add("old", 1.0, 0.0)  # 8 a month ago
    pop.add("new", 1.0, 30 * 86_400.0)  # 1 today
    assert pop.top(2) == ["new", "old"]
    assert pop.value("old") == pytest.approx(8 * 0.5**30)


def test_restore_and_forget_keep_the_ranking_in_step():
    pop = Popularity(HALF_LIFE)
    pop.restore("a", 4.0, 0.0)
    pop.restore("b", 1.0, 86_400.0)
    assert pop.top(2) == ["a", "b"]  # 4 halved once beats 1
    pop.forget("a")
    assert pop.top(2) == ["b"]
