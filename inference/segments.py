"""Value segments from RFM: pure scoring of recency, frequency and monetary value.

Each of R, F and M gets a score 1..5 from four cutoffs (defaults: the quintile boundaries of the
cleaned Online Retail customers at the end of the log), then an ordered rule list maps (R, F, M)
to a named segment, the usual marketing vocabulary. Recency is measured on the event-time
clock, so a replayed log segments users as they were then, not as of today.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from inference.profiles import Rfm

SEGMENTS = (
    "prospect",  # no purchase yet
    "champions",
    "loyal",
    "new",
    "potential_loyalist",
    "promising",
    "cant_lose",
    "at_risk",
    "hibernating",
)


@dataclass(frozen=True)
class RfmCutoffs:
    """Four ascending boundaries per dimension; a value past n boundaries scores n + 1 (1..5)."""

    recency_days: Sequence[float] = (14.0, 32.0, 71.0, 179.0)  # fewer days is better
    frequency: Sequence[float] = (14.0, 29.0, 58.0, 121.0)  # purchase lines
    monetary: Sequence[float] = (250.0, 485.0, 925.0, 2045.0)


@dataclass(frozen=True)
class RfmScore:
    recency_days: float | None
    r: int
    f: int
    m: int
    segment: str


def _rank(value: float, cutoffs: Sequence[float]) -> int:
    return 1 + sum(value >= c for c in cutoffs)


def score(rfm: Rfm, now: float, cutoffs: RfmCutoffs = RfmCutoffs()) -> RfmScore:
    if rfm.purchases == 0 or rfm.last_purchase_ts is None:
        return RfmScore(None, 0, 0, 0, "prospect")
    days = max(now - rfm.last_purchase_ts, 0.0) / 86_400
    r = 6 - _rank(days, cutoffs.recency_days)
    f = _rank(rfm.purchases, cutoffs.frequency)
    m = _rank(rfm.monetary, cutoffs.monetary)
    return RfmScore(round(days, 3), r, f, m, segment_of(r, f, m))


def segment_of(r: int, f: int, m: int) -> str:
    """The first rule that matches, from the most to the least valuable."""
    if r >= 4 and f >= 4:
        return "champions"
    if r >= 3 and f >= 3:
        return "loyal"
    if r >= 4 and f == 1:
        return "new"
    if r >= 4:
        return "potential_loyalist"
    if r == 3:
        return "promising"
    if f >= 4 and m >= 4:
        return "cant_lose"
    if f >= 3:
        return "at_risk"
    return "hibernating"
