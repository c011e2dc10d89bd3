"""A/B tests: deterministic assignment of users to strategy variants, and per-variant metrics.

Assignment hashes (salt, user id) to a point in [0, 1) and walks the variants' cumulative
weights, so a user keeps their variant across workers and restarts with no stored state, and
changing the salt reshuffles everyone. Metrics are computed from the feedback stream:
impressions, clicks and purchases that carry the `rec_id` of a recommendation whose variant is
known, with 95% intervals (Wilson for rates, normal for revenue per impression).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from inference.schemas import Event, EventType, Recommendation

DEFAULT_VARIANT = "default"
Z95 = 1.959964


class VariantSpec(BaseModel):
    """One strategy variant: its share of users and the settings it overrides (None: inherit)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weight: float = Field(gt=0, description="Relative share of users.")
    exploration_rate: float | None = Field(default=None, ge=0, le=1)
    weight_similarity: float | None = Field(default=None, ge=0)
    weight_popularity: float | None = Field(default=None, ge=0)
    weight_category: float | None = Field(default=None, ge=0)
    interest_clusters: int | None = Field(default=None, ge=1, le=8)


def assign_variant(user_id: str, variants: Mapping[str, VariantSpec], salt: str = "") -> str:
    """The variant of a user: stable for a (salt, user id, variants) triple."""
    if not variants:
        return DEFAULT_VARIANT
    digest = hashlib.sha256(f"{salt}\x00{user_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64
    names = sorted(variants)
    total = sum(variants[n].weight for n in names)
    edge = 0.0
    for name in names:
        edge += variants[name].weight / total
        if point < edge:
            return name
    return names[-1]


@dataclass
class VariantTally:
    recommendations: int = 0
    impressions: int = 0
    clicks: int = 0
    purchases: int = 0
    revenue: float = 0.0
    revenue_sq: float = 0.0  # sum of squared per-purchase revenue, for the interval
    users: set[str] = field(default_factory=set)


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval: sane at small counts and at rates near 0 or 1."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def tally(recommendations: Iterable[Recommendation], events: Iterable[Event]) -> dict[str, VariantTally]:
    """Count feedback per variant. Events whose rec_id names no known recommendation are ignored;
    an impression or click is counted once per (rec_id, item, type)."""
    variant_of: dict[str, str] = {}
    out: dict[str, VariantTally] = {}
    for rec in recommendations:
        variant = rec.variant or DEFAULT_VARIANT
        if rec.rec_id not in variant_of:
            out.setdefault(variant, VariantTally()).recommendations += 1
        variant_of[rec.rec_id] = variant
    seen: set[tuple[str, str | None, EventType]] = set()
    for event in events:
        variant = variant_of.get(event.rec_id or "")
        if variant is None:
            continue
        key = (event.rec_id, event.item_id, event.type)
        if event.type in (EventType.impression, EventType.click) and key in seen:
            continue
        seen.add(key)
        t = out.setdefault(variant, VariantTally())
        t.users.add(event.user_id)
        if event.type is EventType.impression:
            t.impressions += 1
        elif event.type is EventType.click:
            t.clicks += 1
        elif event.type is EventType.purchase:
            t.purchases += 1
            value = event.quantity * (event.price or 0.0)
            t.revenue += value
            t.revenue_sq += value * value
    return out


@dataclass(frozen=True)
class VariantReport:
    variant: str
    recommendations: int
    users: int
    impressions: int
    clicks: int
    purchases: int
    revenue: float
    ctr: float
    ctr_ci: tuple[float, float]
    conversion: float
    conversion_ci: tuple[float, float]
    revenue_per_impression: float
    revenue_per_impression_ci: tuple[float, float]


def report(tallies: Mapping[str, VariantTally]) -> list[VariantReport]:
    rows = []
    for name in sorted(tallies):
        t = tallies[name]
        n = t.impressions
        mean = t.revenue / n if n else 0.0
        variance = max(t.revenue_sq / n - mean * mean, 0.0) if n else 0.0
        half = Z95 * math.sqrt(variance / n) if n else 0.0
        rows.append(VariantReport(
            variant=name, recommendations=t.recommendations, users=len(t.users), impressions=n,
            clicks=t.clicks, purchases=t.purchases, revenue=round(t.revenue, 2),
            ctr=t.clicks / n if n else 0.0, ctr_ci=wilson(min(t.clicks, n), n),
            conversion=t.purchases / n if n else 0.0, conversion_ci=wilson(min(t.purchases, n), n),
            revenue_per_impression=mean, revenue_per_impression_ci=(max(mean - half, 0.0), mean + half),
        ))
    return rows
