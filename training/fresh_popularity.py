"""Fresh popularity, time-correct, for the offline protocol: what the worker's ranker blends in.

The worker ranks candidates by similarity plus a weight times log-scaled popularity decayed with
a half-life (:mod:`inference.ranking`, :class:`inference.catalog.Popularity`). Offline, a case's
popularity must be what the worker would have known then: only training purchases strictly
before the case's own time count, each decayed by the time between. One sweep over the events in
time order serves every case.
"""

from __future__ import annotations

import numpy as np

from inference.ranking import log_scaled
from training.split import ProtocolSplit

# Rebase the running sums before 2 ** (age / half-life) can overflow a float64 (max ~2 ** 1023).
_REBASE_HALF_LIVES = 256.0


def training_purchases(split: ProtocolSplit) -> tuple[np.ndarray, np.ndarray]:
    """(times, items) of every item of every history unit (the training data), sorted by time."""
    if split.unit_times is None:
        raise ValueError(f"{split.name} has no unit times")
    times, items = [], []
    for units, unit_times in zip(split.units, split.unit_times):
        for unit, t in zip(units[:-2], unit_times[:-2]):
            times += [t] * len(unit)
            items += unit
    order = np.argsort(np.asarray(times, dtype=np.float64), kind="stable")
    return np.asarray(times, dtype=np.float64)[order], np.asarray(items, dtype=np.int64)[order]


def decayed_counts(
    event_times: np.ndarray, event_items: np.ndarray, case_times: np.ndarray, n_items: int, half_life_s: float,
) -> np.ndarray:
    """(n_cases, n_items): for each case, sum over events strictly before its time of
    2 ** -((case time - event time) / half_life_s). ``event_times`` must be sorted."""
    if half_life_s <= 0:
        raise ValueError(f"half_life_s must be positive, not {half_life_s}")
    out = np.zeros((len(case_times), n_items), dtype=np.float64)
    sums = np.zeros(n_items, dtype=np.float64)  # sum of 2 ** ((t_e - ref) / h)
    ref = float(event_times[0]) if len(event_times) else 0.0
    j = 0
    for c in np.argsort(case_times, kind="stable"):
        t = float(case_times[c])
        if (t - ref) / half_life_s > _REBASE_HALF_LIVES:
            sums *= 2.0 ** (-(t - ref) / half_life_s)
            ref = t
        k = int(np.searchsorted(event_times, t, side="left"))
        if k > j:
            np.add.at(sums, event_items[j:k], 2.0 ** ((event_times[j:k] - ref) / half_life_s))
            j = k
        out[c] = sums * 2.0 ** (-(t - ref) / half_life_s)
    return out


def log_scaled_rows(counts: np.ndarray) -> np.ndarray:
    """Each row log-scaled to [0, 1] by its own maximum, as the worker scales its candidates."""
    return np.stack([log_scaled(row, float(row.max())) for row in counts]) if len(counts) else counts
