"""Text siblings: the nearest known item by text, where the texts are close enough."""

from __future__ import annotations

import numpy as np
import pytest

from inference.clustering import unit_rows
from inference.text_siblings import nearest_known


def test_each_query_gets_its_nearest_known_row_only_from_the_threshold_up():
    known = unit_rows(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    queries = np.array([
        [0.0, 5.0, 0.5],   # cosine 0.995 with row 1 (length does not matter)
        [1.0, 1.0, 0.0],   # cosine 0.707 with rows 0 and 1: below 0.85
        [0.2, 0.0, 1.0],   # cosine 0.981 with row 2
    ])
    assert nearest_known(queries, known, 0.85).tolist() == [1, -1, 2]
    assert nearest_known(queries, known, 0.7).tolist() == [1, 0, 2]  # a tie goes to the lower row
    assert nearest_known(queries[0], known, 0.85).tolist() == [1]  # one vector is a batch of one


def test_zero_rows_are_nobodys_sibling_and_an_empty_catalog_has_none():
    known = np.array([[0.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    assert nearest_known(np.array([[1.0, 0.0]]), known, 0.1).tolist() == [-1]
    assert nearest_known(np.array([[1.0, 0.0], [0.0, 1.0]]), np.zeros((0, 2)), 0.5).tolist() == [-1, -1]


@pytest.mark.parametrize("threshold", [0.0, -0.5, 1.5])
def test_a_threshold_outside_zero_to_one_is_refused(threshold):
    with pytest.raises(ValueError, match="min_similarity"):
        nearest_known(np.ones((1, 2)), np.ones((1, 2)), threshold)
