"""Text siblings: the nearest known item by text, and how much of its vector a new item takes."""

from __future__ import annotations

import numpy as np
import pytest

from inference.clustering import unit_rows
from inference.text_siblings import check_siblings, nearest_known, sibling_weights


def test_each_query_gets_its_nearest_known_row_and_their_cosine():
    known = unit_rows(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    queries = np.array([
        [0.0, 5.0, 0.5],   # cosine 0.995 with row 1 (length does not matter)
        [1.0, 1.0, 0.0],   # cosine 0.707 with rows 0 and 1: a tie goes to the lower row
        [0.2, 0.0, 1.0],   # cosine 0.981 with row 2
    ])
    rows, similarity = nearest_known(queries, known)
    assert rows.tolist() == [1, 0, 2]
    np.testing.assert_allclose(similarity, [5 / np.sqrt(25.25), np.sqrt(0.5), 1 / np.sqrt(1.04)], rtol=1e-6)
    rows, similarity = nearest_known(queries[0], known)  # one vector is a batch of one
    assert rows.tolist() == [1] and similarity.shape == (1,)


def test_zero_rows_are_nobodys_sibling_and_an_empty_catalog_has_none():
    known = np.array([[0.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    rows, similarity = nearest_known(np.array([[1.0, 0.0]]), known)
    assert similarity.tolist() == [0.0]
    assert sibling_weights(similarity, 0.1, 0.05).tolist() == [0.0]
    rows, similarity = nearest_known(np.array([[1.0, 0.0], [0.0, 1.0]]), np.zeros((0, 2)))
    assert rows.tolist() == [-1, -1] and similarity.tolist() == [0.0, 0.0]


def test_the_siblings_share_is_whole_from_the_similarity_up_and_rises_over_the_ramp_below_it():
    similarity = np.array([0.5, 0.75, 0.8, 0.825, 0.85, 0.97])
    np.testing.assert_allclose(sibling_weights(similarity, 0.85, 0.1), [0.0, 0.0, 0.5, 0.75, 1.0, 1.0], atol=1e-5)
    assert sibling_weights(similarity, 0.85, 0.0).tolist() == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]  # a step


@pytest.mark.parametrize(("full_at", "ramp", "match"), [
    (0.0, 0.0, "similarity"), (-0.5, 0.0, "similarity"), (1.5, 0.0, "similarity"),
    (0.85, -0.1, "ramp"), (0.85, 0.85, "ramp"), (0.5, 0.6, "ramp"),
])
def test_a_similarity_outside_zero_to_one_or_a_ramp_reaching_zero_is_refused(full_at, ramp, match):
    with pytest.raises(ValueError, match=match):
        check_siblings(full_at, ramp)
    with pytest.raises(ValueError, match=match):
        sibling_weights(np.ones(1), full_at, ramp)
