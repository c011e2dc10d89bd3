"""Bytes of state per user: on disk in the store, as payload, and in the in-process profile cache.

Profiles are built with inference.profiles.apply_event over ~30 events each (a shop-like mix of
views, clicks, carts, purchases and searches on a 4,000-item catalog with 384-d unit vectors),
stored with inference.profile_store.profile_to_point through EdgeStore, and measured three ways:

(a) on disk: the `users` collection directory (allocated blocks and apparent size) / users,
    after a flush, at each requested user count (default 100k and 1M);
(b) payload: the length of the JSON state string, split by field, and what is left beyond the
    interest vectors it carries (the session sum; the long-term one is the point's vector, so the
    state keeps only its norm);
(c) cache: tracemalloc bytes retained per profile in ProfileRepository's LRU cache when profiles
    are loaded from the store (profile_from_point: nothing shared with other objects).

Baseline: the raw vectors (long-term + session interest, 2 x 384 float32 = 3,072 bytes).
Target to compare against: at most 2 KB of state per user beyond those vectors. A second table
gives the per-profile CPU cost of the codec beside stdlib pickle of the same Profile.

Users beyond --pool are the pool's profiles under a new user id, with freshly drawn interest
vectors and event keys (so no two stored states are byte-identical): building all 1M with
apply_event would take ~45 min of CPU here (~90 us per event); --pool 1000000 does exactly that.

Usage: python -m bench.memory [--users 100000,1000000] [--pool 20000] [--events 30]
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import os
import pickle
import sys
import tempfile
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import MIN_REPEATS, footer, header, median, mib, note, ratio, rss_bytes, rss_split, spread, table
from inference.profile_store import USERS, ProfileRepository, profile_from_point, profile_to_point
from inference.profiles import Interest, Profile, ProfileParams, apply_event
from inference.schemas import EventType
from inference.settings import InferenceSettings
from inference.store import EdgeStore

DIM = 384
VECTORS_BYTES = 2 * DIM * 4  # long-term + session interest, raw float32
TARGET_BEYOND = 2048
N_ITEMS = 4000
N_CATEGORIES = 50
UPSERT_BATCH = 500  # the worker's batch size
EVENT_MIX = {  # share of each event type in a shop's clickstream
    EventType.view: 0.50, EventType.click: 0.22, EventType.add_to_cart: 0.12,
    EventType.remove_from_cart: 0.03, EventType.purchase: 0.08, EventType.search: 0.05,
}


class Shop:
    """A catalog (ids like Online Retail stock codes, unit vectors, categories, prices) and users
    who browse it in sessions."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        rng = self.rng
        self.item_ids = [f"{20000 + 17 * i % 70000}{'' if i % 3 else 'A'}" for i in range(N_ITEMS)]
        v = rng.standard_normal((N_ITEMS, DIM), dtype=np.float32)
        self.vectors = v / np.linalg.norm(v, axis=1, keepdims=True)
        self.categories = [f"category-{c:02d}" for c in rng.integers(0, N_CATEGORIES, N_ITEMS)]
        self.prices = np.round(rng.lognormal(np.log(5), 1.0, N_ITEMS), 2)
        popularity = 1.0 / np.arange(1, N_ITEMS + 1) ** 0.9
        self.popularity = popularity / popularity.sum()
        self.types = list(EVENT_MIX)
        self.type_p = np.array(list(EVENT_MIX.values())) / sum(EVENT_MIX.values())
        self.params = ProfileParams()

    def profile(self, user_id: str, n_events: int, purchases_only: bool = False) -> Profile:
        rng = self.rng
        profile = Profile(user_id=user_id)
        ts = 1.29e9 + float(rng.uniform(0, 3e7))
        session = str(int(rng.integers(536_000, 582_000)))
        for e in range(n_events):
            if rng.random() < 0.15:  # a new visit, hours to days later
                ts += float(rng.exponential(3 * 86_400))
                session = str(int(rng.integers(536_000, 582_000)))
            else:
                ts += float(rng.exponential(60))
            kind = EventType.purchase if purchases_only else self.types[rng.choice(len(self.types), p=self.type_p)]
            if kind is EventType.search:
                q = rng.standard_normal(DIM, dtype=np.float32)
                item, vector, category, price = None, q / np.linalg.norm(q), None, None
            else:
                i = int(rng.integers(N_ITEMS)) if purchases_only else int(rng.choice(N_ITEMS, p=self.popularity))
                item, vector, category, price = self.item_ids[i], self.vectors[i], self.categories[i], float(self.prices[i])
            profile = apply_event(
                profile, event_id=f"ev-{rng.integers(1 << 62):016x}", type=kind, ts=ts, item_id=item, vector=vector,
                category=category, session_id=session, quantity=int(rng.integers(1, 13)), price=price,
                params=self.params,
            )
        return profile

    def variant(self, template: Profile, user_id: str) -> Profile:
        """The template's shape under a new id, with its own interest vectors and event keys."""
        rng = self.rng

        def fresh(interest: Interest | None) -> Interest | None:
            if interest is None:
                return None
            v = rng.standard_normal(DIM, dtype=np.float32)
            v *= float(np.linalg.norm(interest.total)) / float(np.linalg.norm(v))
            return Interest(v, interest.mass, interest.updated)

        keys = rng.integers(0, 1 << 63, len(template.seen_events), dtype=np.uint64)
        return replace(template, user_id=user_id, long_term=fresh(template.long_term), session=fresh(template.session),
                       seen_events=tuple(int(k) for k in keys))


def n_events(rng: np.random.Generator, mean: int) -> int:
    return max(5, int(rng.poisson(mean)))


def directory_bytes(path: Path) -> tuple[int, int, dict[str, int]]:
    """(allocated, apparent, allocated by top-level part) of everything under `path`."""
    allocated = apparent = 0
    parts: dict[str, int] = {}
    for dirpath, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            allocated += st.st_blocks * 512
            apparent += st.st_size
            rel = Path(dirpath).relative_to(path).parts
            key = "/".join(rel[:2]) if rel else name
            parts[key] = parts.get(key, 0) + st.st_blocks * 512
    return allocated, apparent, parts


def state_fields(profile: Profile) -> dict[str, int]:
    """Bytes of each field inside the JSON state string (key, quotes and separators included)."""
    state = json.loads(profile_to_point(profile, DIM).payload["state"])
    return {k: len(json.dumps({k: v}, separators=(",", ":"))) - 2 for k, v in state.items()}


def vector_chars(profile: Profile) -> int:
    """Characters both interest vectors take as base64 text (how state layout 1 stored them)."""
    n = 0
    for interest in (profile.long_term, profile.session):
        if interest is not None:
            n += len(base64.b64encode(np.ascontiguousarray(interest.total, dtype="<f4").tobytes()))
    return n


def state_vector_chars(profile: Profile) -> int:
    """Characters of the interest vectors inside the stored state: the encoded session sum, and the
    long-term sum only where it is stored whole (no direction); otherwise the state holds its norm."""
    state = json.loads(profile_to_point(profile, DIM).payload["state"])
    return sum(len(part[0]) for part in (state.get("long_term"), state.get("session"))
               if part is not None and isinstance(part[0], str))


def cache_bytes_per_profile(store: EdgeStore, user_ids: list[str]) -> float:
    """tracemalloc bytes retained per profile by a ProfileRepository cache filled from the store."""
    repo = ProfileRepository(store, DIM, capacity=len(user_ids) + 1)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for start in range(0, len(user_ids), UPSERT_BATCH):
        repo.get_many(user_ids[start : start + UPSERT_BATCH])
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(repo._cache) == len(user_ids)
    return (after - before) / len(user_ids)


def objects_bytes_per_profile(profiles: list[Profile]) -> float:
    """tracemalloc bytes per profile for profiles as apply_event leaves them (ids shared with events)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    copies = [profile_from_point(profile_to_point(p, DIM)) for p in profiles]
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del copies
    return (after - before) / len(profiles)


def codec_costs(profiles: list[Profile], shop: Shop, repeats: int) -> list[list[object]]:
    """Per-profile CPU cost of the stored form beside pickle; microseconds, median (min–max)."""
    sample = profiles[:2000]
    points = [profile_to_point(p, DIM) for p in sample]
    pickles = [pickle.dumps(p, protocol=pickle.HIGHEST_PROTOCOL) for p in sample]

    def per(fn, items) -> list[float]:
        out = []
        for _ in range(repeats):
            start = time.perf_counter()
            for x in items:
                fn(x)
            out.append((time.perf_counter() - start) / len(items) * 1e6)
        return out

    to_point = per(lambda p: profile_to_point(p, DIM), sample)
    from_point = per(profile_from_point, points)
    dumps = per(lambda p: pickle.dumps(p, protocol=pickle.HIGHEST_PROTOCOL), sample)
    loads = per(pickle.loads, pickles)
    # apply_event on a mid-life profile: the per-event cost of the profile maths
    base = sample[:200]
    item = 0

    def one_event(p: Profile) -> None:
        nonlocal item
        item = (item + 1) % N_ITEMS
        apply_event(p, event_id=f"bench-{item}", type=EventType.click, ts=p.rfm.first_ts or 1.3e9, item_id=shop.item_ids[item],
                    vector=shop.vectors[item], category=shop.categories[item], session_id="s", quantity=1,
                    price=1.0, params=shop.params)

    apply = per(one_event, base * 5)
    json_len = float(np.mean([len(p.payload["state"]) for p in points]))
    pickle_len = float(np.mean([len(b) for b in pickles]))
    return [
        ["encode: profile_to_point (JSON + base85)", spread(to_point, 1), ratio(median(to_point), median(dumps)),
         f"{json_len:,.0f} B state"],
        ["encode baseline: pickle.dumps(Profile)", spread(dumps, 1), "1.00×", f"{pickle_len:,.0f} B"],
        ["decode: profile_from_point", spread(from_point, 1), ratio(median(from_point), median(loads)), ""],
        ["decode baseline: pickle.loads", spread(loads, 1), "1.00×", ""],
        ["apply_event (one click on a ~30-event profile)", spread(apply, 1), "", ""],
    ]


def cache_total(per_profile: float, users: int, capacity: int) -> str:
    """What the LRU cache holds when `users` are active: it stops at its capacity."""
    held = mib(per_profile * min(users, capacity))
    return held if users <= capacity else f"{held} (capped at {capacity:,}; all {users:,}: {mib(per_profile * users)})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", default="100000,1000000", help="comma-separated user counts to measure at")
    p.add_argument("--pool", type=int, default=20_000, help="profiles built event by event with apply_event")
    p.add_argument("--events", type=int, default=30, help="mean events per user (Poisson, at least 5)")
    p.add_argument("--cache-sample", type=int, default=20_000, help="profiles loaded into the cache for (c)")
    p.add_argument("--repeats", type=int, default=MIN_REPEATS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=None, help="where the temporary store goes (default: /tmp)")
    args = p.parse_args(argv)
    checkpoints = sorted(int(u.replace("_", "")) for u in args.users.split(",") if u)

    started = header("Memory: bytes of state per user (store on disk, payload, profile cache)")
    shop = Shop(args.seed)
    pool_n = min(args.pool, checkpoints[-1])
    t = time.perf_counter()
    pool = [shop.profile(f"u{i:07d}", n_events(shop.rng, args.events)) for i in range(pool_n)]
    build_s = time.perf_counter() - t
    total_events = sum(x.events for x in pool)
    note(f"built {pool_n:,} profiles with apply_event: {total_events:,} events "
         f"({total_events / pool_n:.1f} per user, mix {', '.join(f'{k.value} {v:.0%}' for k, v in EVENT_MIX.items())}) "
         f"in {build_s:.0f} s = {build_s / total_events * 1e6:.0f} µs per event")
    if checkpoints[-1] > pool_n:
        note(f"users beyond {pool_n:,}: pool profiles under new ids with fresh interest vectors and event keys")
    heavy = shop.profile("u-heavy", 1200, purchases_only=True)
    note(f"saturated profile for comparison: 1,200 purchases -> {len(heavy.purchased)} purchased ids, "
         f"{len(heavy.seen_events)} event keys, {len(heavy.recent)} recent, {len(heavy.categories)} categories")

    # (b) payload, from the pool
    fields: dict[str, list[int]] = {}
    for prof in pool[:20_000]:
        for k, v in state_fields(prof).items():
            fields.setdefault(k, []).append(v)
    states = [len(profile_to_point(x, DIM).payload["state"]) for x in pool[:20_000]]
    vec_chars = [state_vector_chars(x) for x in pool[:20_000]]
    heavy_state = len(profile_to_point(heavy, DIM).payload["state"])
    heavy_fields = state_fields(heavy)

    rows_disk = []
    cache_per = float("nan")
    with tempfile.TemporaryDirectory(prefix="bench-memory-", dir=args.workdir) as tmp:
        root = Path(tmp) / "store"
        store = EdgeStore(root)
        store.ensure_collection(USERS, DIM)
        empty, _, _ = directory_bytes(root / USERS)
        note(f"empty users collection: {mib(empty)} allocated on disk (subtracted nowhere; shown for scale)")
        written = 0
        upsert_s = 0.0
        previous = None
        for target in checkpoints:
            while written < target:
                n = min(UPSERT_BATCH, target - written)
                batch = [pool[i] if i < pool_n else shop.variant(pool[i % pool_n], f"u{i:07d}")
                         for i in range(written, written + n)]
                start = time.perf_counter()
                store.upsert(USERS, [profile_to_point(x, DIM) for x in batch])
                upsert_s += time.perf_counter() - start
                written += n
                if written % 100_000 == 0:
                    print(f"  … {written:,} users stored ({written / upsert_s:,.0f}/s)", file=sys.stderr, flush=True)
            store.flush()
            allocated, apparent, parts = directory_bytes(root / USERS)
            per_user = allocated / target
            marginal = "–" if previous is None else f"{(allocated - previous[1]) / (target - previous[0]):,.0f}"
            previous = (target, allocated)
            rows_disk.append([
                f"{target:,}", f"{mib(allocated)} / {mib(apparent)}", f"{per_user:,.0f}", f"{apparent / target:,.0f}",
                marginal, f"{per_user - VECTORS_BYTES:,.0f}", ratio(per_user, VECTORS_BYTES, 1),
                "yes" if per_user - VECTORS_BYTES <= TARGET_BEYOND else "no",
            ])
            top = sorted(parts.items(), key=lambda kv: -kv[1])[:6]
            note(f"{target:,} users: on disk by part: " + ", ".join(f"{k} {mib(v)}" for k, v in top)
                 + f"; store upsert (profile_to_point + EdgeStore.upsert) {written / upsert_s:,.0f} users/s; "
                 f"process RSS {rss_split()}")
        # (c) cache, loading a sample of stored users through the real repository
        sample_ids = [f"u{i:07d}" for i in range(min(args.cache_sample, written))]
        cache_per = cache_bytes_per_profile(store, sample_ids)
        store.close()
        allocated, apparent, _ = directory_bytes(root / USERS)
        note(f"after close: {mib(allocated)} allocated / {mib(apparent)} apparent for {written:,} users "
             f"({allocated / written:,.0f} B/user allocated)")
    heavy_cache = objects_bytes_per_profile([heavy] * 200)
    pool_obj = objects_bytes_per_profile(pool[:5000])

    table(["users", "users dir (allocated / apparent)", "B/user allocated", "B/user apparent", "marginal B/user",
           "beyond 3,072 B vectors", "vs raw vectors", "≤ 2 KB beyond?"], rows_disk)

    mean_state, mean_vec = float(np.mean(states)), float(np.mean(vec_chars))
    rows_payload = [["raw vectors (baseline): 2 × 384 float32", f"{VECTORS_BYTES:,}", "", ""]]
    rows_payload.append(["JSON state string, whole (typical user)", f"{mean_state:,.0f}",
                         ratio(mean_state, VECTORS_BYTES, 1), f"{heavy_state:,}"])
    rows_payload.append(["  of which interest vectors (encoded session sum)", f"{mean_vec:,.0f}", "",
                         f"{state_vector_chars(heavy):,}"])
    rows_payload.append(["  state beyond the vectors", f"{mean_state - mean_vec:,.0f}",
                         "yes ≤ 2 KB" if mean_state - mean_vec <= TARGET_BEYOND else "no: > 2 KB",
                         f"{heavy_state - state_vector_chars(heavy):,}"])
    rows_payload.append(["  (for scale: both sums as base64, as layout 1 stored them)",
                         f"{np.mean([vector_chars(x) for x in pool[:20_000]]):,.0f}", "", f"{vector_chars(heavy):,}"])
    for k, v in sorted(fields.items(), key=lambda kv: -np.mean(kv[1])):
        rows_payload.append([f"    field {k}", f"{np.mean(v):,.0f}", "", f"{heavy_fields.get(k, 0):,}"])
    rows_payload.append(["point vector (long-term direction, float32)", f"{DIM * 4:,}", "", f"{DIM * 4:,}"])
    table(["payload part", "bytes (typical, mean)", "vs raw vectors / target", "bytes (saturated)"], rows_payload)

    capacity = InferenceSettings().profile_cache_size
    rows_cache = [
        ["raw vectors (baseline)", f"{VECTORS_BYTES:,}", "1.0×", "", ""],
        ["cached profile, loaded from the store (ProfileRepository)", f"{cache_per:,.0f}",
         ratio(cache_per, VECTORS_BYTES, 1), cache_total(cache_per, checkpoints[0], capacity),
         cache_total(cache_per, checkpoints[-1], capacity)],
        ["profile objects, typical (round-tripped, no cache)", f"{pool_obj:,.0f}", ratio(pool_obj, VECTORS_BYTES, 1), "", ""],
        ["profile objects, saturated", f"{heavy_cache:,.0f}", ratio(heavy_cache, VECTORS_BYTES, 1), "", ""],
    ]
    table(["in-process cache", "bytes/profile (tracemalloc)", "vs raw vectors",
           f"at {checkpoints[0]:,} users", f"at {checkpoints[-1]:,} users (STREAMREC_PROFILE_CACHE_SIZE {capacity:,})"], rows_cache)

    table(["per-profile CPU", "µs/profile", "vs pickle", "size"], codec_costs(pool, shop, args.repeats))
    note(f"target: ≤ {TARGET_BEYOND:,} B of state per user beyond its {VECTORS_BYTES:,} B of raw vectors")
    note(f"bench process RSS at end: {mib(rss_bytes()[0])} (peak {mib(rss_bytes()[1])})")
    footer(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
