"""The popularity top-n a recommendation batch asks for, beside ranking every counted item.

Each batch the recommender counts its events into `Popularity` and asks for the top 20 of each
user's segment (explanations: "popular in your segment"); a user with no candidates also gets
the top 400 (`limit * 4`). `Popularity.top` keeps each asked-for n up to date as items are
counted (inference.catalog._TopKeys). The baseline, in the same run on the same counts, ranks
every counted item at each call (`heapq.nlargest` over the rank keys), as `top` did before.

Per size (items counted so far), a batch is 23 events (the worker's batch at 1,000 events/s in
bench.pipeline) drawn from a Pareto law over the items (a few best sellers, a long tail), then
top 20 and top 400. Printed: ms per batch for each (median of repetitions), and whether both
return the same ranking keys.

Usage: python -m bench.popularity [--sizes 3000,100000,1000000] [--batches 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import heapq
import random
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import MIN_REPEATS, footer, header, median, note, ratio, spread, table
from inference.catalog import Popularity

BATCH = 23
TOPS = (20, 400)
HALF_LIFE_S = 7 * 86_400.0


def filled(n_items: int) -> tuple[Popularity, float]:
    pop, ts = Popularity(HALF_LIFE_S), 0.0
    for i in range(n_items):
        pop.add(f"i{i}", 1.0, ts)
        ts += 0.01
    return pop, ts


def ranked_by_scan(pop: Popularity, n: int) -> list[str]:
    """The baseline: every counted item ranked at each call."""
    rank = pop._rank
    return heapq.nlargest(n, rank, key=rank.__getitem__)


def run(pop: Popularity, ts: float, n_items: int, batches: int, top, seed: int) -> tuple[float, float]:
    """ms per batch (events counted, then each top asked for); returns it and the next time."""
    rnd = random.Random(seed)
    start = time.perf_counter()
    for _ in range(batches):
        for _ in range(BATCH):
            pop.add(f"i{int(rnd.paretovariate(1.2)) % n_items}", 1.0, ts)
            ts += 0.01
        for n in TOPS:
            top(pop, n)
    return (time.perf_counter() - start) / batches * 1000, ts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="3000,100000,1000000", help="items counted before measuring")
    p.add_argument("--batches", type=int, default=200, help="batches per repetition (1M: a tenth for the baseline)")
    p.add_argument("--repeats", type=int, default=MIN_REPEATS)
    args = p.parse_args(argv)

    started = header("Popularity top-n per batch: kept up to date vs ranking every counted item")
    rows = []
    for n_items in (int(s) for s in args.sizes.split(",") if s):
        kept, scan, same = [], [], True
        for rep in range(args.repeats):
            pop, ts = filled(n_items)
            for n in TOPS:
                pop.top(n)  # the first call ranks everything once, as a worker's first batch does
            ms, ts = run(pop, ts, n_items, args.batches, Popularity.top, seed=rep)
            kept.append(ms)
            scan_batches = max(args.batches // (10 if n_items >= 1_000_000 else 1), 5)
            ms, ts = run(pop, ts, n_items, scan_batches, ranked_by_scan, seed=rep + 100)
            scan.append(ms)
            for n in TOPS:
                keys = [pop._rank[i] for i in pop.top(n)]
                same &= keys == [pop._rank[i] for i in ranked_by_scan(pop, n)]
        rows.append([f"{n_items:,}", spread(kept, 3), spread(scan, 3), ratio(median(scan), median(kept), 0),
                     "yes" if same else "NO"])
    table(["items counted", "top kept up to date, ms/batch", "baseline: rank all, ms/batch", "speed-up",
           "same ranking"], rows)
    note(f"a batch: {BATCH} events counted (Pareto 1.2 over the items), then top {TOPS[0]} and top {TOPS[1]}; "
         "median (min–max) over repetitions; same ranking: both return the same rank keys in the same order")
    footer(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
