"""Text siblings: a new item whose text nearly repeats a known item's takes that item's vector.

Catalogs list one product in many variants ("GOLD MUG BONE CHINA TREE OF LIFE", "SILVER MUG
BONE CHINA TREE OF LIFE": cosine 0.94 in the shipped encoder's space). The event encoder's
item tower places an item it never saw by a function of its text learned across the catalog;
for an unseen item that vector comes out shorter than learned ones and ranks low. A variant's
learned sibling already carries what buyers do with the product, popularity included, so
starting the new item there is the better first guess where the texts are that close. Measured
on Online Retail (README, "Text siblings for new items"): at 0.85, whole-basket validation
NDCG@10 rose a little (0.0835 against 0.0826 without siblings) and new items were found 1.6
times as often; at 0.8 unrelated items inherit vectors and validation fell below no siblings.

Training (training/model.py) and the worker (inference/event_encoder.py) both place new items
with :func:`nearest_known`, so the evaluation measures what the worker serves.
"""

from __future__ import annotations

import numpy as np

from inference.clustering import unit_rows

DEFAULT_MIN_SIMILARITY = 0.85
"""Text cosine from which a new item takes its nearest known item's vector (picked on Online
Retail's whole-basket validation NDCG@10 over 0.8, 0.85, 0.9, 0.95)."""


def nearest_known(queries: np.ndarray, known: np.ndarray, min_similarity: float) -> np.ndarray:
    """For each query text vector (m, d), the row of ``known`` (k, d: unit rows, zero rows for
    items that cannot be siblings) with the highest cosine, or -1 where that cosine is below
    ``min_similarity``. Ties go to the lowest row. (:func:`unit_rows` keeps a zero row zero.)"""
    if not 0.0 < min_similarity <= 1.0:
        raise ValueError(f"min_similarity must be in (0, 1], not {min_similarity}")
    queries = unit_rows(np.atleast_2d(queries))
    if len(known) == 0:
        return np.full(len(queries), -1, dtype=np.int64)
    similarity = queries @ np.asarray(known, dtype=np.float32).T
    best = similarity.argmax(axis=1)
    found = similarity[np.arange(len(queries)), best] >= min_similarity
    return np.where(found, best, -1).astype(np.int64)
