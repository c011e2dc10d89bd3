"""The offline protocol's split (DESIGN §4) over integer item indices.

Per user, time-ordered units: the last unit is test, the one before it validation, the earlier
ones history. A unit is one item for sequence data (leave-one-out, as in the published S3-Rec
tables) and one basket (invoice) for retail logs, so a basket is never split between history and
target. Every system is trained on the history units of all users only; the validation unit picks
epochs / settings; the test unit is ranked with history + validation as the known past.

Items are indexed ``0..n_items-1`` over the whole catalog (every item of the file, also those seen
only in a test unit), so ranking is over all items.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from training.datasets import RetailLog, SequenceData, timed_retail_baskets

Phase = Literal["validation", "test"]
Unit = Literal["item", "basket"]
PHASES: tuple[Phase, ...] = ("validation", "test")


def natural_key(value: str) -> tuple[int, int | str]:
    """Sort key putting integer ids in numeric order ("2" < "10") before any other id."""
    return (0, int(value)) if value.isdigit() else (1, value)


@dataclass(frozen=True)
class ProtocolSplit:
    """Users' units as item indices, plus the catalog and optional item features.

    ``units[u]`` is user ``users[u]``'s units in time order (at least two); ``item_text[i]`` is
    item ``i``'s text ("" when it has none) or the list is None for text-less catalogs;
    ``item_attributes[i]`` lists attribute indices ``0..n_attributes-1`` (None: no attributes).
    ``unit_times[u][j]`` is when unit ``j`` of user ``u`` happened (epoch seconds; None where the
    format has no times, as S3-Rec sequences).
    """

    name: str
    unit: Unit
    item_ids: list[str]
    users: list[str]
    units: list[list[list[int]]]
    item_text: list[str] | None = None
    item_attributes: list[list[int]] | None = None
    n_attributes: int = 0
    dropped_users: int = 0
    unit_times: list[list[float]] | None = None
    item_index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.users) != len(self.units):
            raise ValueError(f"{len(self.users)} users but {len(self.units)} unit lists")
        for user, units in zip(self.users, self.units):
            if len(units) < 2:
                raise ValueError(f"user {user} has {len(units)} unit(s); the protocol needs >= 2")
        if self.item_text is not None and len(self.item_text) != len(self.item_ids):
            raise ValueError("item_text must have one entry per item")
        if self.item_attributes is not None and len(self.item_attributes) != len(self.item_ids):
            raise ValueError("item_attributes must have one entry per item")
        if self.unit_times is not None and [len(t) for t in self.unit_times] != [len(u) for u in self.units]:
            raise ValueError("unit_times must have one time per unit")
        object.__setattr__(self, "item_index", {item: i for i, item in enumerate(self.item_ids)})

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.users)

    def history(self, user: int) -> list[list[int]]:
        """Training units of a user (may be empty)."""
        return self.units[user][:-2]

    def inputs(self, user: int, phase: Phase) -> list[list[int]]:
        """The known past when ranking ``phase``: history, plus validation for the test."""
        return self.units[user][:-2] if phase == "validation" else self.units[user][:-1]

    def target(self, user: int, phase: Phase) -> list[int]:
        return self.units[user][-2] if phase == "validation" else self.units[user][-1]

    def describe(self) -> dict[str, int | str]:
        return {
            "name": self.name,
            "unit": self.unit,
            "users": self.n_users,
            "items": self.n_items,
            "units": sum(len(u) for u in self.units),
            "interactions": sum(len(unit) for units in self.units for unit in units),
            "dropped_users_with_fewer_than_2_units": self.dropped_users,
        }


def _index_units(
    user_units: dict[str, list[list[str]]], item_index: dict[str, int]
) -> tuple[list[str], list[list[list[int]]], int]:
    users, units, dropped = [], [], 0
    for user in sorted(user_units, key=natural_key):
        indexed = [[item_index[item] for item in unit] for unit in user_units[user] if unit]
        if len(indexed) < 2:
            dropped += 1
            continue
        users.append(user)
        units.append(indexed)
    return users, units, dropped


def split_sequences(data: SequenceData, name: str = "sequences") -> ProtocolSplit:
    """Leave-one-out split of S3-Rec style sequences (one item per unit).

    Item attributes, when the file has them, become attribute indices (sorted naturally).
    """
    items = sorted({item for seq in data.sequences.values() for item in seq}, key=natural_key)
    item_index = {item: i for i, item in enumerate(items)}
    users, units, dropped = _index_units(
        {user: [[item] for item in seq] for user, seq in data.sequences.items()}, item_index
    )
    attributes, n_attributes = None, 0
    if data.item_attributes:
        names = sorted({a for attrs in data.item_attributes.values() for a in attrs}, key=natural_key)
        attr_index = {a: i for i, a in enumerate(names)}
        attributes = [
            sorted({attr_index[a] for a in data.item_attributes.get(item, [])}) for item in items
        ]
        n_attributes = len(names)
    return ProtocolSplit(
        name=name,
        unit="item",
        item_ids=items,
        users=users,
        units=units,
        item_attributes=attributes,
        n_attributes=n_attributes,
        dropped_users=dropped,
    )


def split_retail(log: RetailLog, name: str = "online-retail") -> ProtocolSplit:
    """Basket split of a purchase log: one unit per invoice; item text is the Description."""
    items = log.items["item_id"].astype(str).tolist()
    item_index = {item: i for i, item in enumerate(items)}
    timed = timed_retail_baskets(log)  # a basket is never empty, so times stay aligned with units
    users, units, dropped = _index_units({u: [items for _, items in b] for u, b in timed.items()}, item_index)
    return ProtocolSplit(
        name=name,
        unit="basket",
        item_ids=items,
        users=users,
        units=units,
        item_text=log.items["title"].astype(str).tolist(),
        dropped_users=dropped,
        unit_times=[[t for t, _ in timed[u]] for u in users],
    )


def sample_users(split: ProtocolSplit, n: int, seed: int = 0) -> ProtocolSplit:
    """The split restricted to ``n`` users drawn deterministically; the catalog stays whole."""
    if n <= 0 or n >= split.n_users:
        return split
    chosen = np.sort(np.random.default_rng(seed).choice(split.n_users, size=n, replace=False))
    return ProtocolSplit(
        name=split.name,
        unit=split.unit,
        item_ids=split.item_ids,
        users=[split.users[u] for u in chosen],
        units=[split.units[u] for u in chosen],
        item_text=split.item_text,
        item_attributes=split.item_attributes,
        n_attributes=split.n_attributes,
        dropped_users=split.dropped_users,
        unit_times=None if split.unit_times is None else [split.unit_times[u] for u in chosen],
    )


def _item_buckets(split: ProtocolSplit, n: int, salt: str) -> np.ndarray:
    """Each item's bucket in ``0..n-1`` by a hash of its id: deterministic across runs."""
    return np.array(
        [int.from_bytes(hashlib.sha256(f"{salt}:{item}".encode()).digest()[:8], "big") % n for item in split.item_ids]
    )


def held_out_items(split: ProtocolSplit, fraction: float, salt: str = "cold") -> np.ndarray:
    """A deterministic ``fraction`` of the catalog (by a hash of each item id), as a bool mask.

    Used for the new-item cold start: these items are removed from all training data.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    return _item_buckets(split, 1_000_000, salt) < int(round(fraction * 1_000_000))


def warm_slices(split: ProtocolSplit, held_out: np.ndarray) -> list[np.ndarray]:
    """The items not ``held_out``, split by a hash of the id into slices of about the held-out
    share's size (bool masks): the warm side of the new-item comparison, scored the same way."""
    fraction = float(np.mean(held_out)) if len(held_out) else 0.0
    if fraction == 0.0:
        return []
    n = max(1, round((1.0 - fraction) / fraction))
    bucket = _item_buckets(split, n, "warm")
    return [(bucket == b) & ~held_out for b in range(n)]


def without_items(units: Sequence[Sequence[int]], drop: np.ndarray | None) -> list[list[int]]:
    """``units`` with the items where ``drop`` is True removed (empty units removed too)."""
    if drop is None:
        return [list(unit) for unit in units]
    kept = ([i for i in unit if not drop[i]] for unit in units)
    return [unit for unit in kept if unit]


@dataclass(frozen=True)
class EvalCases:
    """What one phase ranks: per scored user, the items left out of the ranking and the targets.

    ``skipped``: users not scored because no target was left (all already seen with exclusion,
    or none among ``only_items``).
    """

    phase: Phase
    users: np.ndarray
    exclude: list[np.ndarray]
    targets: list[np.ndarray]
    skipped: int

    def __len__(self) -> int:
        return len(self.users)


def eval_cases(
    split: ProtocolSplit,
    phase: Phase,
    *,
    exclude_seen: bool = True,
    only_items: np.ndarray | None = None,
) -> EvalCases:
    """The ranking cases of ``phase``.

    With ``exclude_seen`` every item of the user's known past is left out of the ranking, and
    targets already seen are dropped from the target unit (they cannot be recommended), so the
    figures measure new items; a user left without targets is skipped. Without it nothing is
    left out and repeat purchases count as hits. ``only_items`` (bool mask) keeps only those
    targets (cold-start items).
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, not {phase!r}")
    users, exclude, targets, skipped = [], [], [], 0
    empty = np.zeros(0, dtype=np.int64)
    for u in range(split.n_users):
        seen = np.unique(np.fromiter(_flat(split.inputs(u, phase)), dtype=np.int64))
        target = np.unique(np.asarray(split.target(u, phase), dtype=np.int64))
        if exclude_seen:
            target = np.setdiff1d(target, seen, assume_unique=True)
        if only_items is not None:
            target = target[only_items[target]]
        if len(target) == 0:
            skipped += 1
            continue
        users.append(u)
        exclude.append(seen if exclude_seen else empty)
        targets.append(target)
    return EvalCases(
        phase=phase,
        users=np.asarray(users, dtype=np.int64),
        exclude=exclude,
        targets=targets,
        skipped=skipped,
    )


def _flat(units: Iterable[Iterable[int]]) -> Iterable[int]:
    for unit in units:
        yield from unit
