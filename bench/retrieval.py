"""Top-100 retrieval from the vector store (EdgeStore) beside numpy brute force.

For each size (unit 384-d items clustered around one centre per 500 items, as a catalog's text
embeddings cluster, with a realistic item payload: category among 50, price, in_stock 90% true,
plus the title and text hash the worker stores; queries around the same centres), it measures,
with and without the recommender's kind of filter (in_stock + category any_of 5 + price range):

- EdgeStore.search: p50/p99 latency of one query and sequential QPS;
- EdgeStore.search_ids with 32 queries per call (what the worker does per batch: ids and scores): QPS;
- CatalogMatrix.search, single and 32 per call: the worker's exact search in memory, which it uses
  instead of the store for catalogs up to STREAMREC_EXACT_RETRIEVAL_MAX_ITEMS;
- numpy brute force in the same process on the same vectors: float32 matmul + argpartition, the
  filter as a boolean mask computed per query (the baseline), single and 32-query batches;
- the engine alone (EdgeShard.query, bypassing the adapter), without and with the payload of the
  100 hits: where the time goes (the adapter always asks for payloads);
- recall@100 of the store against exact numpy (1.0 for exact search; with --index, the HNSW
  graph's, at STREAMREC_QDRANT_HNSW_EF's default width);
- the worker's own filter (in_stock + exclude the user's purchased items, 0/100/500 ids): the
  store beside numpy with the excluded rows masked, and the cost of building the filter alone.

Usage: python -m bench.retrieval [--sizes 10000,100000] [--queries 100] [--repeats 3] [--blas-threads 1]
       [--index [--quantization int8,none] [--oversampling 2] [--sweep ef=128,ef=512,acorn=0.4,exact]] [--keep DIR]
The 1M case is opt-in (--sizes 10000,100000,1000000): upserting takes minutes at ~13k/s.
--index builds the HNSW index after the upsert (EdgeStore.build_index, what `streamrec index`
runs; its time is printed: ~20 s at 100k items and 12 min at 1M here with int8) and measures
search over it instead of exact, once per --quantization; --sweep adds the engine under other
search parameters (HNSW width, ACORN, exact) on the same queries, per filter kind: the
restrictive one above, the worker's (in stock, 500 bought) and none. --keep DIR keeps the stores
and reuses a complete one in a later run with the same size, seed and quantization.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import MIN_REPEATS, footer, header, median, mib, note, percentiles, ratio, rss_bytes, spread, table
from inference.blas import blas_threads
from inference.catalog_matrix import CatalogMatrix
from inference.store import QUANTIZATIONS, EdgeStore, Filter, IndexParams, Point

DIM = 384
K = 100
CATEGORIES = 50
BATCH = 32
UPSERT_BATCH = 1000
COLLECTION = "items"
CLUSTER = 500  # items per centre
SPREAD = 0.06  # per-dimension noise around a centre: cosine ~0.65 to it in 384-d


def centres(n: int, seed: int) -> np.ndarray:
    """One unit centre per CLUSTER items: HNSW on uniform random 384-d vectors finds ~15% of the
    true top-100 (every point is about as far from a query as every other); text embeddings of
    a catalog are nothing like that."""
    rng = np.random.default_rng(seed + 10)
    c = rng.standard_normal((max(n // CLUSTER, 1), DIM), dtype=np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def around(c: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` unit vectors, each near a random centre (cosine ~0.65 to it)."""
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):  # chunks: no float64 copy of the whole 1M matrix
        m = min(100_000, n - start)
        chunk = c[rng.integers(0, len(c), m)] + SPREAD * rng.standard_normal((m, DIM), dtype=np.float32)
        out[start : start + m] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def make_items(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors (float32), category codes, prices and in-stock flags for `n` items."""
    rng = np.random.default_rng(seed)
    vectors = around(centres(n, seed), n, rng)
    # Category sizes follow a Zipf-like law, as shop catalogs do (a few large, many small).
    weights = 1.0 / np.arange(1, CATEGORIES + 1) ** 0.8
    category = rng.choice(CATEGORIES, size=n, p=weights / weights.sum()).astype(np.int32)
    price = np.round(rng.lognormal(mean=np.log(10.0), sigma=1.0, size=n), 2).astype(np.float64)
    in_stock = rng.random(n) < 0.9
    return vectors, category, price, in_stock


def make_queries(n: int, items: int, seed: int) -> tuple[np.ndarray, list[tuple[np.ndarray, float, float]]]:
    """Query vectors (near the items' centres) and, per query, a filter: 5 categories and a price range."""
    rng = np.random.default_rng(seed + 1)
    q = around(centres(items, seed), n, rng)
    filters = []
    for _ in range(n):
        cats = np.sort(rng.choice(CATEGORIES, size=5, replace=False)).astype(np.int32)
        lo = float(rng.choice([0.0, 2.0, 5.0]))
        hi = float(rng.choice([20.0, 50.0, 100.0]))
        filters.append((cats, lo, hi))
    return q, filters


def store_filter(cats: np.ndarray, lo: float, hi: float) -> Filter:
    return Filter(equals={"in_stock": True}, any_of={"category": [f"cat{c:02d}" for c in cats]},
                  ranges={"price": (lo, hi)})


def fill_matrix(vectors, category, price, in_stock) -> CatalogMatrix:
    """The same items in the worker's in-memory arrays (what its item cache mirrors them into)."""
    matrix = CatalogMatrix(DIM, capacity=len(vectors))
    for i in range(len(vectors)):
        matrix.put(f"i{i}", vectors[i], in_stock=bool(in_stock[i]), category=f"cat{int(category[i]):02d}",
                   price=float(price[i]))
    return matrix


def fill_store(store: EdgeStore, vectors, category, price, in_stock) -> float:
    """Upsert every item through the adapter, as the worker does; returns points/s (upsert + flush)."""
    store.ensure_collection(COLLECTION, DIM, keyword_fields=("category",), bool_fields=("in_stock",),
                            float_fields=("price",), compact_ids=True)  # as the recommender's items
    rng = np.random.default_rng(7)
    words = np.array(["RED", "VINTAGE", "HEART", "T-LIGHT", "HOLDER", "JUMBO", "BAG", "SET", "OF", "6",
                      "CERAMIC", "MUG", "GLASS", "LANTERN", "CHRISTMAS", "PINK", "RETROSPOT", "CAKE"])
    n = len(vectors)
    spent = 0.0  # only the adapter's upsert calls are timed, not building the test payloads
    for start in range(0, n, UPSERT_BATCH):
        stop = min(n, start + UPSERT_BATCH)
        points = [
            Point(
                f"i{i}",
                vectors[i],
                {
                    "title": " ".join(rng.choice(words, size=5)),
                    "category": f"cat{int(category[i]):02d}",
                    "price": float(price[i]),
                    "in_stock": bool(in_stock[i]),
                    "text_hash": f"{i:024x}",
                    "popularity": [0.0, 0.0],
                },
            )
            for i in range(start, stop)
        ]
        t = time.perf_counter()
        store.upsert(COLLECTION, points)
        spent += time.perf_counter() - t
        if n >= 200_000 and (stop // UPSERT_BATCH) % 100 == 0:
            print(f"  … upserted {stop:,}/{n:,} ({stop / spent:,.0f}/s)", file=sys.stderr, flush=True)
    t = time.perf_counter()
    store.flush()
    return n / (spent + time.perf_counter() - t)


def engine_request(store: EdgeStore, q: np.ndarray, f: Filter | None, with_payload: bool) -> qe.QueryRequest:
    """The adapter's request, built here: what the engine alone costs, with or without payloads."""
    from inference.store import _edge_filter

    return qe.QueryRequest(limit=K, query=qe.Query.Nearest(q.tolist()), filter=_edge_filter(f, store.point_id(COLLECTION)),
                           with_payload=with_payload, with_vector=False, params=store.search_params)


def blas_contention(vectors: np.ndarray, queries: np.ndarray, threads: int) -> str:
    """numpy's single-query time at 1 and 2 OpenBLAS threads (the 2-thread one stalls under load)."""
    out = []
    for t in (1, 2):
        blas_threads(t)
        times = []
        for q in queries[:20]:
            start = time.perf_counter()
            numpy_topk(vectors, q, None)
            times.append(time.perf_counter() - start)
        out.append(f"{t} thread{'s' if t > 1 else ''} p50 {percentiles([x * 1000 for x in times], (50,))[0]:.2f} ms")
    blas_threads(threads)
    return ", ".join(out)


def numpy_topk(vectors: np.ndarray, q: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    scores = vectors @ q
    if mask is not None:
        scores[~mask] = -np.inf
        k = min(K, int(mask.sum()))
    else:
        k = K
    if k == 0:
        return np.empty(0, dtype=np.int64)
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top], kind="stable")]


def numpy_topk_batch(vectors: np.ndarray, qs: np.ndarray, masks: list[np.ndarray] | None) -> list[np.ndarray]:
    scores = vectors @ qs.T  # (n, batch)
    out = []
    for j in range(qs.shape[0]):
        col = scores[:, j]
        if masks is not None:
            col = np.where(masks[j], col, -np.inf)
        top = np.argpartition(-col, K - 1)[:K]
        out.append(top[np.argsort(-col[top], kind="stable")])
    return out


def numpy_mask(category, price, in_stock, cats, lo, hi) -> np.ndarray:
    return in_stock & np.isin(category, cats) & (price >= lo) & (price <= hi)


EXCLUDED = (0, 100, 500)  # purchased items a profile excludes (MAX_PURCHASED is 500)


def run_exclusion(store: EdgeStore, n: int, label: str, vectors: np.ndarray, in_stock: np.ndarray,
                  queries: np.ndarray, repeats: int, seed: int) -> list[list[object]]:
    """The recommender's filter: in stock and not already bought (Filter.exclude_ids)."""
    from inference.store import _edge_filter

    rng = np.random.default_rng(seed + 2)
    rows = []
    nq = min(len(queries), 50)
    for excluded in EXCLUDED:
        idx = [rng.choice(n, size=excluded, replace=False) for _ in range(nq)]
        filters = [Filter(equals={"in_stock": True}, exclude_ids=tuple(f"i{j}" for j in ix)) for ix in idx]
        store_p50, store_p99, build_p50, np_p50, recalls = [], [], [], [], []
        for rep in range(repeats):
            t_store, t_build, t_np = [], [], []
            for i in range(nq):
                start = time.perf_counter()
                hits = store.search(COLLECTION, queries[i], K, filter=filters[i])
                t_store.append(time.perf_counter() - start)
                start = time.perf_counter()
                _edge_filter(filters[i], store.point_id(COLLECTION))
                t_build.append(time.perf_counter() - start)
                start = time.perf_counter()
                mask = in_stock.copy()
                mask[idx[i]] = False
                exact = numpy_topk(vectors, queries[i], mask)
                t_np.append(time.perf_counter() - start)
                if rep == 0:
                    recalls.append(len({f"i{j}" for j in exact} & {h.id for h in hits}) / K)
            store_p50.append(percentiles([t * 1000 for t in t_store], (50,))[0])
            store_p99.append(percentiles([t * 1000 for t in t_store], (99,))[0])
            build_p50.append(percentiles([t * 1000 for t in t_build], (50,))[0])
            np_p50.append(percentiles([t * 1000 for t in t_np], (50,))[0])
        rows.append([label, f"{excluded:,}", spread(store_p50, 2), spread(store_p99, 2), spread(build_p50, 2),
                     spread(np_p50, 2),
                     ratio(median(store_p50), median(np_p50)), f"{np.mean(recalls):.4f}"])
    return rows


SWEEP_DEFAULT = "ef=128,ef=256,ef=512,acorn=0.4,exact"


def sweep_params(spec: str, adapter: qe.SearchParams) -> list[tuple[str, qe.SearchParams]]:
    """Named engine search parameters from `ef=N`, `acorn=S` (ACORN below selectivity S, ef 128)
    and `exact`; each keeps the adapter's quantization parameters (rescoring and oversampling)."""
    rescore = adapter.quantization
    out = []
    for word in (w.strip() for w in spec.split(",") if w.strip()):
        name, _, value = word.partition("=")
        if name == "ef":
            out.append((f"hnsw_ef {int(value)}", qe.SearchParams(hnsw_ef=int(value), quantization=rescore)))
        elif name == "acorn":
            out.append((f"hnsw_ef 128 + ACORN below {float(value):g}", qe.SearchParams(
                hnsw_ef=128, quantization=rescore,
                acorn=qe.AcornSearchParams(enable=True, max_selectivity=float(value)))))
        elif name == "exact":
            out.append(("exact", qe.SearchParams(exact=True)))
        else:
            raise SystemExit(f"--sweep: unknown entry {word!r} (ef=N, acorn=S, exact)")
    return out


def run_sweep(shard: qe.EdgeShard, point_id: Callable[[str], Any], label: str,
              params: list[tuple[str, qe.SearchParams]], queries: np.ndarray,
              cases: list[tuple[str, list[Filter | None], list[set[str]]]], repeats: int) -> list[list[object]]:
    """The engine alone (ids only) under each search parameter set, per filter kind: p50/p99, recall@100."""
    from inference.store import _edge_filter

    rows = []
    for case, filters, exact_ids in cases:
        expected = [{point_id(i) for i in ids} for ids in exact_ids]
        edge_filters = [_edge_filter(f, point_id) for f in filters]
        for name, sp in params:
            p50, p99, recalls = [], [], []
            for rep in range(repeats):
                times = []
                for i, q in enumerate(queries):
                    request = qe.QueryRequest(limit=K, query=qe.Query.Nearest(q.tolist()), filter=edge_filters[i],
                                              with_payload=False, with_vector=False, params=sp)
                    start = time.perf_counter()
                    hits = shard.query(request)
                    times.append((time.perf_counter() - start) * 1000)
                    if rep == 0:
                        recalls.append(len(expected[i] & {h.id if isinstance(h.id, int) else str(h.id) for h in hits})
                                       / max(len(expected[i]), 1))
                p50.append(percentiles(times, (50,))[0])
                p99.append(percentiles(times, (99,))[0])
            rows.append([label, case, name, spread(p50, 2), spread(p99, 2),
                         f"{np.mean(recalls):.4f} (min {np.min(recalls):.2f})"])
            print(f"  … {label} sweep: {case}, {name} done", file=sys.stderr, flush=True)
    return rows


COMPLETE = "bench-complete.json"  # written into a kept store once it is filled (and indexed)


def open_filled(root: Path, index: IndexParams, built_index: bool, n: int, data) -> tuple[EdgeStore, str]:
    """The store under `root`, filled (and indexed) as asked: reused when an earlier run completed
    it with the same items (same size, seed and parameters name the folder), else built now."""
    marker = root / COMPLETE
    if marker.is_file():
        store = EdgeStore(root, index=index)
        if store.count(COLLECTION) == n:
            return store, f"reused from {root} (built by an earlier run: {marker.read_text().strip()})"
        store.close()
    shutil.rmtree(root, ignore_errors=True)
    store = EdgeStore(root, index=index)
    upsert_rate = fill_store(store, *data)
    how = f"upserted at {upsert_rate:,.0f} points/s (adapter, batches of {UPSERT_BATCH})"
    if built_index:
        print(f"  … {n:,}: building the HNSW index ({index.quantization})", file=sys.stderr, flush=True)
        built = store.build_index(COLLECTION)
        how += (f"; HNSW index built in {built['seconds']:,.1f} s (EdgeStore.build_index, `streamrec index`): "
                f"{built['indexed_vectors']:,} of {built['points']:,} vectors indexed, {built['segments']} segments")
    store.flush()
    marker.write_text(json.dumps({"built": time.strftime("%Y-%m-%d %H:%M"), "how": how}) + "\n")
    return store, how


def run_size(n: int, n_queries: int, repeats: int, seed: int, workdir: Path, threads: int,
             exclusion_rows: list[list[object]], sweep_rows: list[list[object]], index: bool,
             params: IndexParams, sweep: str, keep: bool) -> list[list[object]]:
    t0 = time.perf_counter()
    vectors, category, price, in_stock = make_items(n, seed)
    queries, filters = make_queries(n_queries, n, seed)
    matrix = fill_matrix(vectors, category, price, in_stock)
    label = f"{n:,}, {params.quantization}" if index else f"{n:,}"
    root = workdir / f"store-{n}-seed{seed}-{params.quantization if index else 'exact'}"
    store, how = open_filled(root, params, index, n, (vectors, category, price, in_stock))
    try:
        note(f"{label}: {how}; searches use {store.search_params}")
        shard = store._shard(COLLECTION)[0]  # the engine itself, to separate adapter cost (bench only)
        pass_share = float(np.mean([numpy_mask(category, price, in_stock, *f).mean() for f in filters]))
        note(f"{label}: the filters let {pass_share:.1%} of the items through on average; "
             f"process RSS {mib(rss_bytes()[0])}; setup {time.perf_counter() - t0:.0f} s")
        note(f"{label}: numpy unfiltered top-{K} with OpenBLAS at {blas_contention(vectors, queries, threads)}")

        rows = []
        for filtered in (False, True):
            lat = {"store": [], "matrix": [], "numpy": [], "engine": [], "engine_p": []}
            qps = {"store": [], "matrix": [], "numpy": [], "engine": [], "engine_p": [], "store_b": [], "matrix_b": [],
                   "numpy_b": [], "engine_b": [], "engine_p_b": []}
            recalls: list[float] = []
            matrix_recalls: list[float] = []
            for rep in range(repeats):
                times = {"store": [], "matrix": [], "numpy": [], "engine": [], "engine_p": []}
                for i in range(n_queries):
                    f = filters[i]
                    start = time.perf_counter()
                    hits = store.search(COLLECTION, queries[i], K, filter=store_filter(*f) if filtered else None)
                    times["store"].append(time.perf_counter() - start)
                    start = time.perf_counter()
                    in_memory = matrix.search(queries[i:i + 1], K, filters=[store_filter(*f) if filtered else None])
                    times["matrix"].append(time.perf_counter() - start)
                    start = time.perf_counter()
                    mask = numpy_mask(category, price, in_stock, *f) if filtered else None
                    exact = numpy_topk(vectors, queries[i], mask)
                    times["numpy"].append(time.perf_counter() - start)
                    for system, with_payload in (("engine", False), ("engine_p", True)):
                        request = engine_request(store, queries[i], store_filter(*f) if filtered else None, with_payload)
                        start = time.perf_counter()
                        shard.query(request)
                        times[system].append(time.perf_counter() - start)
                    if rep == 0:
                        expected = {f"i{j}" for j in exact}
                        got = {h.id for h in hits}
                        recalls.append(len(expected & got) / max(len(expected), 1))
                        matrix_recalls.append(len(expected & set(in_memory[0].ids)) / max(len(expected), 1))
                for system in times:
                    lat[system].append([t * 1000 for t in times[system]])
                    qps[system].append(n_queries / sum(times[system]))

                # Batches of 32 queries per call, as the worker retrieves for a batch of users.
                n_batches = max(1, n_queries // BATCH)
                t_store = t_matrix = t_np = 0.0
                for b in range(n_batches):
                    idx = [(b * BATCH + j) % n_queries for j in range(BATCH)]
                    fs = [store_filter(*filters[j]) if filtered else None for j in idx]
                    start = time.perf_counter()
                    store.search_ids(COLLECTION, queries[idx], K, filters=fs)
                    t_store += time.perf_counter() - start
                    start = time.perf_counter()
                    matrix.search(queries[idx], K, filters=fs)
                    t_matrix += time.perf_counter() - start
                    start = time.perf_counter()
                    masks = [numpy_mask(category, price, in_stock, *filters[j]) for j in idx] if filtered else None
                    numpy_topk_batch(vectors, queries[idx], masks)
                    t_np += time.perf_counter() - start
                qps["store_b"].append(n_batches * BATCH / t_store)
                qps["matrix_b"].append(n_batches * BATCH / t_matrix)
                qps["numpy_b"].append(n_batches * BATCH / t_np)

            def p(system: str, q: int) -> list[float]:
                return [percentiles(r, (q,))[0] for r in lat[system]]

            kind = "filtered" if filtered else "no filter"
            names = (("store", "EdgeStore.search (adapter)"), ("matrix", "CatalogMatrix.search (in memory)"),
                     ("engine_p", "EdgeShard.query + payload"),
                     ("engine", "EdgeShard.query, ids only"), ("numpy", "numpy brute force (baseline)"))
            for system, name in names:
                rows.append([
                    label, kind, name,
                    spread(p(system, 50), 2), spread(p(system, 99), 2),
                    spread(qps[system], 0), spread(qps[system + "_b"], 0) if qps[system + "_b"] else "–",
                    ratio(median(qps[system]), median(qps["numpy"])),
                    {"store": f"{np.mean(recalls):.4f} (min {np.min(recalls):.2f})",
                     "matrix": f"{np.mean(matrix_recalls):.4f} (min {np.min(matrix_recalls):.2f})",
                     "numpy": "1 (exact)"}.get(system, "–"),
                ])
            print(f"  … {label} {kind} done", file=sys.stderr, flush=True)
        exclusion_rows += run_exclusion(store, n, label, vectors, in_stock, queries, repeats, seed)
        if sweep and index:
            excluded = np.random.default_rng(seed + 3).choice(n, size=(n_queries, EXCLUDED[-1]))
            masks = [numpy_mask(category, price, in_stock, *f) for f in filters]
            worker_masks = []
            for row in excluded:
                m = in_stock.copy()
                m[row] = False
                worker_masks.append(m)
            cases = [
                ("category + price + in stock", [store_filter(*f) for f in filters],
                 [{f"i{j}" for j in numpy_topk(vectors, q, m)} for q, m in zip(queries, masks)]),
                (f"the worker's (in stock, {EXCLUDED[-1]} bought)",
                 [Filter(equals={"in_stock": True}, exclude_ids=tuple(f"i{j}" for j in row)) for row in excluded],
                 [{f"i{j}" for j in numpy_topk(vectors, q, m)} for q, m in zip(queries, worker_masks)]),
                ("none", [None] * n_queries, [{f"i{j}" for j in numpy_topk(vectors, q, None)} for q in queries]),
            ]
            sweep_rows += run_sweep(shard, store.point_id(COLLECTION), label, sweep_params(sweep, store.search_params),
                                    queries, cases, repeats)
        return rows
    finally:
        store.close()
        size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        note(f"{label}: store directory {mib(size)} on disk (apparent size)" + (f", kept in {root}" if keep else ""))
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
        del vectors, matrix
        gc.collect()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000", help="comma-separated item counts (1M: 1000000, opt-in)")
    p.add_argument("--queries", type=int, default=100, help="queries per repetition (1M uses min(this, 50))")
    p.add_argument("--repeats", type=int, default=MIN_REPEATS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--blas-threads", type=int, default=1,
                   help="numpy's OpenBLAS threads for the baseline (default 1: 2 threads stall on a loaded 2-core box)")
    p.add_argument("--workdir", type=Path, default=None, help="where the temporary stores go (default: /tmp)")
    p.add_argument("--index", action="store_true",
                   help="build the HNSW index after the upsert and search over it (default: exact search)")
    p.add_argument("--quantization", default="int8",
                   help=f"with --index: comma-separated, each measured in turn ({', '.join(QUANTIZATIONS)}; "
                        "default int8, STREAMREC_QDRANT_QUANTIZATION's default)")
    p.add_argument("--oversampling", type=float, default=IndexParams.oversampling,
                   help="with int8: candidates per hit taken from the quantized scores before rescoring "
                        "(STREAMREC_QDRANT_OVERSAMPLING)")
    p.add_argument("--sweep", default=SWEEP_DEFAULT,
                   help=f"with --index: engine search parameters measured on the same queries per filter kind "
                        f"(ef=N, acorn=S, exact; default {SWEEP_DEFAULT}; empty: none)")
    p.add_argument("--keep", type=Path, default=None,
                   help="keep the filled (and indexed) stores in this folder and reuse them in later runs with "
                        "the same size, seed and quantization (the 1M index takes tens of minutes to build)")
    args = p.parse_args(argv)
    quantizations = [q for q in args.quantization.split(",") if q] if args.index else ["none"]
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s]
    threads = blas_threads(args.blas_threads)

    started = header(f"Retrieval: EdgeStore {'HNSW' if args.index else 'exact'} top-100 vs numpy brute force")
    note(f"{DIM}-d unit vectors around one centre per {CLUSTER} items (cosine ~0.65 to it), queries around the "
         f"same centres; top-{K}; {args.repeats} repetitions of the query set; "
         f"numpy baseline with {threads} OpenBLAS thread(s)")
    note("filter = in_stock=true AND category any_of 5 (of 50, Zipf-sized) AND price in a range; "
         "numpy applies the same filter as a boolean mask computed per query (inside the timing)")
    rows: list[list[object]] = []
    exclusion_rows: list[list[object]] = []
    sweep_rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-retrieval-", dir=args.workdir) as tmp:
        where = args.keep or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        for n in sizes:
            for quantization in quantizations:
                # Exact search over 1M items is slow enough that fewer queries are asked there.
                nq = min(args.queries, 50) if n >= 1_000_000 and not args.index else args.queries
                params = IndexParams(quantization=quantization, oversampling=args.oversampling)
                rows += run_size(n, nq, args.repeats, args.seed, where, args.blas_threads, exclusion_rows,
                                 sweep_rows, args.index, params, args.sweep, args.keep is not None)
    table(
        ["items", "filter", "system", "p50 ms", "p99 ms", "QPS (1 query/call)", f"QPS ({BATCH}/call)",
         "QPS vs numpy", "recall@100"],
        rows,
    )
    note("cells: median of the repetitions (min–max); recall from the first repetition, mean over queries")
    table(["items", "excluded ids", "EdgeStore.search p50 ms", "p99 ms", "of which building the filter (ms)",
           "numpy p50 ms (mask)", "store ÷ numpy latency", "recall@100"], exclusion_rows)
    note("the worker's filter for a user: in_stock=true AND NOT has_id(purchased); building it hashes every "
         "excluded id to its point id (inference.store._edge_filter) on each query")
    if sweep_rows:
        table(["items, quantization", "filter", "engine search parameters", "p50 ms", "p99 ms", "recall@100"],
              sweep_rows)
        note("the engine alone (EdgeShard.query, ids only) on the same queries; recall against numpy's exact top-100 "
             "under the same filter; the adapter's own parameters are the first table's")
    footer(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
