"""Non-learned baselines of the offline protocol: popularity and item co-occurrence.

Both are fitted on the history units of all users (the training data of every system) and score
all items for a chunk of users, as the learned systems do.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from training.split import Phase, ProtocolSplit, without_items


def training_units(split: ProtocolSplit, drop: np.ndarray | None = None) -> list[list[list[int]]]:
    """Each user's history units, without the items in ``drop`` (held-out cold-start items)."""
    return [without_items(split.history(u), drop) for u in range(split.n_users)]


def item_counts(split: ProtocolSplit, drop: np.ndarray | None = None) -> np.ndarray:
    """How often each item occurs in the training units."""
    flat = [item for units in training_units(split, drop) for unit in units for item in unit]
    return np.bincount(np.asarray(flat, dtype=np.int64), minlength=split.n_items).astype(np.float64)


class Popularity:
    """Rank items by their count in the training data (the same list for everyone)."""

    name = "popularity"

    def __init__(self) -> None:
        self.counts: torch.Tensor | None = None

    def fit(self, split: ProtocolSplit, drop: np.ndarray | None = None) -> "Popularity":
        self.counts = torch.from_numpy(item_counts(split, drop)).to(torch.float32)
        return self

    def scores(self, split: ProtocolSplit, users: np.ndarray, phase: Phase) -> torch.Tensor:
        if self.counts is None:
            raise RuntimeError("fit() the popularity baseline before scoring")
        return self.counts.expand(len(users), -1)


def cooccurrence_counts(
    split: ProtocolSplit, window: int, drop: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directed co-occurrence counts (rows, cols, values) over the training units: (i, j) counts
    when j is in the same unit as i (baskets) or in one of the ``window`` units after it,
    weighted 1 / distance in units."""
    n = split.n_items
    keys, weights = [], []
    for units in training_units(split, drop):
        arrays = [np.asarray(unit, dtype=np.int64) for unit in units]
        for a, left in enumerate(arrays):
            if split.unit == "basket" and len(left) > 1:
                i, j = np.meshgrid(left, left, indexing="ij")
                off = i != j
                keys.append(i[off] * n + j[off])
                weights.append(np.ones(int(off.sum())))
            for d in range(1, window + 1):
                if a + d >= len(arrays):
                    break
                i, j = np.meshgrid(left, arrays[a + d], indexing="ij")
                off = i != j
                keys.append(i[off] * n + j[off])
                weights.append(np.full(int(off.sum()), 1.0 / d))
    if not keys:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    key, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    return key // n, key % n, np.bincount(inverse, weights=np.concatenate(weights))


class CoOccurrence:
    """Item-to-item co-occurrence: P(j | i) from training units, summed over a user's recent items.

    Pairs (i, j) count when j is in the same unit as i (baskets) or in one of the ``window``
    units after it, weighted 1 / distance in units. A user's score for j is the sum over items
    i of their last ``recent`` input units, weighted ``decay ** age``, of the row-normalised
    counts. Popularity, scaled below any co-occurrence signal, breaks ties and fills in for users
    whose items co-occur with nothing.
    """

    name = "cooccurrence"

    def __init__(self, window: int = 3, recent: int = 3, decay: float = 0.5) -> None:
        if window < 1 or recent < 1 or not 0.0 < decay <= 1.0:
            raise ValueError("window and recent must be >= 1 and decay in (0, 1]")
        self.window, self.recent, self.decay = window, recent, decay
        self.matrix_t: torch.Tensor | None = None
        self.prior: torch.Tensor | None = None

    def fit(self, split: ProtocolSplit, drop: np.ndarray | None = None) -> "CoOccurrence":
        n = split.n_items
        rows, cols, value = cooccurrence_counts(split, self.window, drop)
        row_sum = np.bincount(rows, weights=value, minlength=n)
        value = value / row_sum[rows]
        # Stored transposed, so scoring is one CSR x dense product: (C^T W^T)^T = W C.
        coo = torch.sparse_coo_tensor(
            torch.from_numpy(np.stack([cols, rows])),
            torch.from_numpy(value.astype(np.float32)),
            (n, n),
            check_invariants=False,
        ).coalesce()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            self.matrix_t = coo.to_sparse_csr()
        counts = item_counts(split, drop)
        self.prior = torch.from_numpy(1e-6 * counts / max(counts.max(), 1.0)).to(torch.float32)
        return self

    def user_weights(self, split: ProtocolSplit, users: np.ndarray, phase: Phase) -> torch.Tensor:
        rows, cols, values = [], [], []
        for row, u in enumerate(users):
            units = split.inputs(int(u), phase)[-self.recent :]
            for age, unit in enumerate(reversed(units)):
                rows.extend([row] * len(unit))
                cols.extend(unit)
                values.extend([self.decay**age] * len(unit))
        weights = torch.zeros(len(users), split.n_items)
        weights.index_put_(
            (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)),
            torch.as_tensor(values, dtype=torch.float32),
            accumulate=True,
        )
        return weights

    def scores(self, split: ProtocolSplit, users: np.ndarray, phase: Phase) -> torch.Tensor:
        if self.matrix_t is None or self.prior is None:
            raise RuntimeError("fit() the co-occurrence baseline before scoring")
        weights = self.user_weights(split, users, phase)
        return (self.matrix_t @ weights.T).T + self.prior
