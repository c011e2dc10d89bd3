"""Full-ranking metrics (DESIGN §4): HR@k, NDCG@k, MRR and catalog coverage, basket-aware.

Ranking is over all items: the items a case excludes (already seen) are pushed below every other
item, the rest are ordered by score, ties broken by item index (lower first), so a constant score
(e.g. a cold popularity baseline) ranks deterministically and never in the target's favour by
accident. A target's rank is its 1-based position in that order.

A unit with several target items (a basket) scores HR@k = 1 when any target is in the top k,
NDCG@k = DCG of all its targets in the top k over the ideal DCG of min(|targets|, k) hits, and
reciprocal rank of its best-ranked target. For one target these are the usual leave-one-out
metrics.

Imports only numpy and torch: the RecBole peer runner (its own venv) uses it too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

METRIC_KEYS = ("hr@10", "ndcg@10", "mrr", "coverage")


def rank_items(
    scores: torch.Tensor,
    exclude: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    k: int = 10,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Rank one chunk of cases: ``scores`` (cases x items).

    Returns the top-``k`` item indices per case (``k`` columns) and, per case, the 1-based ranks
    of its targets (in the order given).
    """
    if scores.dim() != 2 or scores.shape[0] != len(exclude) or len(exclude) != len(targets):
        raise ValueError(
            f"scores must be (cases, items) with one exclude/targets entry per case; got "
            f"{tuple(scores.shape)}, {len(exclude)} excludes, {len(targets)} targets"
        )
    n_cases, n_items = scores.shape
    if not 1 <= k <= n_items:
        raise ValueError(f"k must be between 1 and the number of items ({n_items}), not {k}")
    scores = scores.detach().to(torch.float32).cpu().clone()
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN; the model diverged or a score function is broken")
    if n_cases == 0:
        return np.zeros((0, k), dtype=np.int64), []
    rows, cols = _ragged_coords(exclude)
    if len(cols):
        scores[torch.from_numpy(rows), torch.from_numpy(cols)] = -torch.inf
    top = top_k(scores, k)
    t_rows, t_cols = _ragged_coords(targets)
    flat = target_ranks(scores, torch.from_numpy(t_rows), torch.from_numpy(t_cols))
    bounds = np.cumsum([len(t) for t in targets])[:-1]
    return top, np.split(flat, bounds)


def top_k(scores: torch.Tensor, k: int) -> np.ndarray:
    """The ``k`` best items per row, by score descending then item index ascending."""
    n_rows, n_items = scores.shape
    best = torch.topk(scores, k, dim=1).values
    kth = best[:, -1:]
    # Float sums: torch sums and cumsums over bool are several times slower (exact below 2**24).
    room = k - (best > kth).sum(dim=1)
    tied = scores == kth
    chosen = (scores > kth) | tied
    # Where more items tie with the k-th score than places remain, the lowest indices win.
    crowded = (tied.float().sum(dim=1) > room).nonzero()[:, 0]
    if len(crowded):
        first = tied[crowded].float().cumsum(dim=1) <= room[crowded, None]
        chosen[crowded] = (scores[crowded] > kth[crowded]) | (tied[crowded] & first)
    cols = chosen.nonzero()[:, 1].reshape(n_rows, k)  # row-major: ascending index per row
    values = scores.gather(1, cols)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    return cols.gather(1, order).numpy().astype(np.int64)


def target_ranks(
    scores: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, block: int = 2048
) -> np.ndarray:
    """1-based rank of item ``cols[m]`` in row ``rows[m]`` of ``scores`` (ties by item index)."""
    n_items = scores.shape[1]
    index = torch.arange(n_items)
    out = torch.empty(len(rows), dtype=torch.int64)
    for lo in range(0, len(rows), block):
        r, c = rows[lo : lo + block], cols[lo : lo + block, None]
        block_scores = scores[r]
        own = block_scores.gather(1, c)
        ahead = (block_scores > own) | ((block_scores == own) & (index < c))
        out[lo : lo + block] = ahead.float().sum(dim=1).to(torch.int64) + 1
    return out.numpy()


def _ragged_coords(lists: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    rows = np.repeat(np.arange(len(lists), dtype=np.int64), lengths)
    cols = (
        np.concatenate([np.asarray(x, dtype=np.int64) for x in lists])
        if lengths.sum()
        else np.zeros(0, dtype=np.int64)
    )
    return rows, cols


def hit_at_k(ranks: Sequence[np.ndarray], k: int = 10) -> np.ndarray:
    """Per case: 1.0 when any target is ranked within the top ``k``."""
    return np.array([float((np.asarray(r) <= k).any()) for r in ranks])


def ndcg_at_k(ranks: Sequence[np.ndarray], k: int = 10) -> np.ndarray:
    """Per case: DCG of the targets in the top ``k`` over the ideal DCG of min(|targets|, k)."""
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discount)
    out = np.empty(len(ranks))
    for i, r in enumerate(ranks):
        r = np.asarray(r)
        if len(r) == 0:
            raise ValueError("a case without targets cannot be scored")
        top = r[r <= k]
        out[i] = discount[top - 1].sum() / ideal[min(len(r), k) - 1]
    return out


def reciprocal_rank(ranks: Sequence[np.ndarray]) -> np.ndarray:
    """Per case: 1 / rank of the best-ranked target (full ranking, no cut-off)."""
    return np.array([1.0 / float(np.min(r)) for r in ranks])


def coverage(top: np.ndarray, n_items: int) -> float:
    """Share of the catalog that appears in at least one case's top list."""
    return float(len(np.unique(top)) / n_items) if n_items else 0.0


def summarize(ranks: Sequence[np.ndarray], top: np.ndarray, n_items: int, k: int = 10) -> dict[str, float]:
    """Mean HR@k, NDCG@k, MRR over cases, and coverage of the top-k lists."""
    if len(ranks) == 0:
        return {f"hr@{k}": 0.0, f"ndcg@{k}": 0.0, "mrr": 0.0, "coverage": 0.0, "cases": 0}
    return {
        f"hr@{k}": float(hit_at_k(ranks, k).mean()),
        f"ndcg@{k}": float(ndcg_at_k(ranks, k).mean()),
        "mrr": float(reciprocal_rank(ranks).mean()),
        "coverage": coverage(top[:, :k], n_items),
        "cases": len(ranks),
    }
