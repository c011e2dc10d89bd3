"""Item popularity counted by every worker: one share per event partition, merged for ranking.

A worker counts only the events of the partitions it consumes. Kept in one blob per store, the
counts were overwritten by whichever worker flushed last, so with several workers popularity
reflected one worker's share of the traffic. Now each partition's counts are a share of their own
(collection `popularity_shares`), written only by the worker that consumes that partition (Kafka
gives a partition to one consumer of a group at a time), and every worker ranks by the merge of
all shares, read again at each flush (`STREAMREC_POPULARITY_FLUSH_S`). Purchases per value
segment (what "popular with customers like you" explains) are shared the same way, in shares of
their own per partition and segment.

A partition that moves to another worker is read from its stored share there on its first
event. Its old owner writes a share only after counting into it, so it stops writing once it has
written what it counted. Only what the old owner counted after its last flush, written after the
new owner had read the share, is overwritten: at most one flush interval of one partition's
counts per rebalance.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from inference.catalog import Popularity
from inference.state_blobs import StateBlobs
from inference.store import VectorStore

SHARES = "popularity_shares"
# Events handed over without a partition (the Kafka-free API) are counted into this share.
DEFAULT_SHARE = "local"
# The share a store's single pre-shares popularity blob became (read, never counted into again).
LEGACY_SHARE = "legacy"

Snapshot = Mapping[str, Sequence[float]]  # item id -> (decayed count, as of this event time)


def combine(shares: Iterable[Snapshot], half_life_s: float) -> Popularity:
    """One popularity from several shares: per item, each count decayed to the latest time any
    share counted it, and summed (the order of shares does not matter)."""
    combined = Popularity(half_life_s)
    for share in shares:
        for item_id, (count, updated) in share.items():
            combined.merge(item_id, float(count), float(updated))
    return combined


def segment_share(share: str, segment: str) -> str:
    """The name of the share that counts one value segment's purchases in a partition."""
    return f"{share}/{segment}"


def combine_all(shares: Mapping[str, Snapshot], half_life_s: float) -> tuple[Popularity, dict[str, Popularity]]:
    """Item popularity, and popularity per value segment, from every share by name."""
    groups: dict[str, list[Snapshot]] = defaultdict(list)
    for name, counts in shares.items():
        groups[name.partition("/")[2]].append(counts)  # "" for the item shares
    items = combine(groups.pop("", []), half_life_s)
    return items, {segment: combine(counts, half_life_s) for segment, counts in groups.items()}


class PopularityShares:
    """The shares in the vector store, one JSON point per share."""

    def __init__(self, store: VectorStore):
        self._blobs = StateBlobs(store, collection=SHARES)

    def get(self, share: str) -> Snapshot:
        return self._blobs.get(share) or {}

    def put(self, share: str, counts: Snapshot) -> None:
        self._blobs.put(share, counts)  # JSON writes the (count, time) tuples as lists

    def all(self) -> dict[str, Snapshot]:
        return self._blobs.all()
