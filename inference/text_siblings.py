"""Text siblings: a new item whose text nearly repeats a known item's starts from that item's vector.

Catalogs list one product in many variants ("GOLD MUG BONE CHINA TREE OF LIFE", "SILVER MUG
BONE CHINA TREE OF LIFE": cosine 0.94 in the shipped encoder's space). The event encoder's
item tower places an item it never saw by a function of its text learned across the catalog;
for an unseen item that vector comes out shorter than learned ones and ranks low. A variant's
learned sibling already carries what buyers do with the product, popularity included, so
starting the new item there is the better first guess where the texts are that close.

From ``full_at`` up the new item takes its sibling's vector; over the ``ramp`` below it, a mix
that moves linearly from its own text-made vector to the sibling's. On the known items of
Online Retail (each item's nearest other item by text, README "A ramp below the sibling cosine"),
the sibling's vector and the text-made one point about equally close to an item's learned
vector at cosines 0.75-0.85 (0.47-0.49 against 0.50-0.48), and a mix of the two closer than
either (0.56): below the step the text-made vector was all a near-variant got.

Training (training/model.py) and the worker (inference/event_encoder.py) both place new items
with these functions, so the evaluation measures what the worker serves.
"""

from __future__ import annotations

import numpy as np

from inference.clustering import unit_rows

DEFAULT_MIN_SIMILARITY = 0.85
"""Text cosine from which a new item takes its nearest known item's vector (picked on Online
Retail's whole-basket validation NDCG@10 over 0.8, 0.85, 0.9, 0.95)."""
DEFAULT_RAMP = 0.1
"""Width of the cosine range below :data:`DEFAULT_MIN_SIMILARITY` over which a new item's vector
moves from its own text-made one to its sibling's (0: a step). On Online Retail (README, "A ramp
below the sibling cosine") 0.1 found new items 19% more often on validation than the step, for
0.4% of whole-basket validation NDCG@10: a trade made for new items, which 0 declines."""


def check_siblings(full_at: float, ramp: float) -> None:
    """Refuse a sibling cosine outside (0, 1] or a ramp that is negative or reaches zero."""
    if not 0.0 < full_at <= 1.0:
        raise ValueError(f"the sibling similarity must be in (0, 1], not {full_at}")
    if not 0.0 <= ramp < full_at:
        raise ValueError(f"the sibling ramp must be in [0, {full_at}) for a similarity of {full_at}, not {ramp}")


def nearest_known(queries: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query text vector (m, d), the row of ``known`` (k, d: unit rows, zero rows for
    items that cannot be siblings) with the highest cosine, and that cosine; (-1, 0) for an
    empty catalog. Ties go to the lowest row. (:func:`unit_rows` keeps a zero row zero.)"""
    queries = unit_rows(np.atleast_2d(queries))
    if len(known) == 0:
        return np.full(len(queries), -1, dtype=np.int64), np.zeros(len(queries), dtype=np.float32)
    similarity = queries @ np.asarray(known, dtype=np.float32).T
    best = similarity.argmax(axis=1)
    return best.astype(np.int64), similarity[np.arange(len(queries)), best].astype(np.float32)


def sibling_weights(similarity: np.ndarray, full_at: float, ramp: float = DEFAULT_RAMP) -> np.ndarray:
    """The share of the sibling's vector in a new item's: 1 from ``full_at`` up, 0 below
    ``full_at - ramp``, linear in between (a step at ``full_at`` where ``ramp`` is 0)."""
    check_siblings(full_at, ramp)
    similarity = np.asarray(similarity, dtype=np.float32)
    if ramp == 0.0:
        return (similarity >= full_at).astype(np.float32)
    return np.clip((similarity - (full_at - ramp)) / ramp, 0.0, 1.0).astype(np.float32)


def mixed_with_sibling(own, sibling, weight):
    """A new item's vector: ``weight`` (:func:`sibling_weights`) of its sibling's, the rest its
    own (numpy arrays or torch tensors alike)."""
    return weight * sibling + (1.0 - weight) * own
