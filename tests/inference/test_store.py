"""Tests for inference/store.py: one universal suite run against every VectorStore backend.

"edge" is the embedded Qdrant Edge engine in a temporary directory, "edge-compact" the same with
every collection made with `compact_ids` (64-bit point ids); "memory" is qdrant-client's
local ":memory:" mode, the code path production uses against a server. Tests that only make
sense for one backend (reopen, directory lock, unreachable server) follow the universal ones.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as qe

from inference.store import (
    ID_NAMESPACE,
    KEY_FIELD,
    CollectionNotFound,
    DimensionMismatch,
    EdgeStore,
    Filter,
    IndexParams,
    Point,
    PointNotFound,
    StoreError,
    StoreUnavailable,
    VectorStore,
    open_store,
    point_u64,
    point_uuid,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DIM = 8
COLL = "items"
FIELDS = dict(keyword_fields=("cat",), bool_fields=("in_stock",), float_fields=("price",))


def unit(i: int, dim: int = DIM) -> np.ndarray:
    v = np.zeros(dim, dtype=np.float32)
    v[i] = 1.0
    return v


def fan(deg: float) -> np.ndarray:
    """A unit vector `deg` degrees from unit(0) towards unit(1): cosine to unit(0) falls with deg."""
    rad = math.radians(deg)
    return (math.cos(rad) * unit(0) + math.sin(rad) * unit(1)).astype(np.float32)


# p0..p5 sit 0°, 10°, ..., 50° from unit(0), so a query along unit(0) ranks them in order.
CATS = ["shoes", "bags", "hats", "shoes", "bags", "hats"]
POINTS = [
    Point(
        f"p{k}",
        fan(10 * k),
        {
            "cat": CATS[k],
            "in_stock": k % 2 == 0,
            "price": 25 if k == 2 else 5.0 + 10 * k,  # one int among floats on purpose
            "tags": [f"t{k}", "all"],
        },
    )
    for k in range(6)
]


def ids(hits) -> list[str]:
    return [h.id for h in hits]


class CompactEdgeStore(EdgeStore):
    """The embedded store with every new collection made with `compact_ids`."""

    def ensure_collection(self, name: str, dim: int, **kwargs) -> None:
        super().ensure_collection(name, dim, **{**kwargs, "compact_ids": True})


def open_backend(backend: str, data_dir: Path) -> VectorStore:
    if backend == "edge-compact":
        return CompactEdgeStore(data_dir / "qdrant")
    url = {"edge": None, "memory": ":memory:"}[backend]
    return open_store(url=url, api_key=None, data_dir=data_dir)


@pytest.fixture
def fast_dir(tmp_path):
    """A scratch directory on tmpfs where there is one: the edge engine fsyncs on every
    collection and index it creates (~0.1 s each on disk), which would dominate the suite."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="streamrec-store-", dir=shm))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["edge", "edge-compact", "memory"])
def store(request, fast_dir):
    s = open_backend(request.param, fast_dir)
    yield s
    s.close()


@pytest.fixture
def filled(store):
    store.ensure_collection(COLL, DIM, **FIELDS)
    store.upsert(COLL, POINTS)
    return store


# --------------------------------------------------------------------------- universal suite


def test_upsert_then_search_finds_nearest(filled):
    hits = filled.search(COLL, unit(0), 3)
    assert ids(hits) == ["p0", "p1", "p2"]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[1].score == pytest.approx(math.cos(math.radians(10)), abs=1e-5)
    assert hits[0].payload == POINTS[0].payload
    assert hits[0].vector is None
    assert ids(filled.search(COLL, fan(31), 1)) == ["p3"]
    # an unnormalised query vector gives the same cosine ranking
    assert ids(filled.search(COLL, 7.0 * fan(49), 2)) == ["p5", "p4"]


def test_search_with_vectors_returns_them(filled):
    (hit,) = filled.search(COLL, fan(20), 1, with_vectors=True)
    assert hit.id == "p2"
    assert hit.vector.dtype == np.float32
    np.testing.assert_allclose(hit.vector, fan(20), atol=1e-6)


def test_filter_equals_bool(filled):
    in_stock = filled.search(COLL, unit(0), 10, filter=Filter(equals={"in_stock": True}))
    assert ids(in_stock) == ["p0", "p2", "p4"]
    out_of_stock = filled.search(COLL, unit(0), 10, filter=Filter(equals={"in_stock": False}))
    assert ids(out_of_stock) == ["p1", "p3", "p5"]


def test_filter_equals_keyword(filled):
    hits = filled.search(COLL, unit(0), 10, filter=Filter(equals={"cat": "bags"}))
    assert ids(hits) == ["p1", "p4"]


def test_filter_any_of_keyword(filled):
    hits = filled.search(COLL, unit(0), 10, filter=Filter(any_of={"cat": ["shoes", "hats"]}))
    assert ids(hits) == ["p0", "p2", "p3", "p5"]
    # matches one element of a list-valued field
    hits = filled.search(COLL, unit(0), 10, filter=Filter(any_of={"tags": ["t4", "t1"]}))
    assert ids(hits) == ["p1", "p4"]
    assert filled.search(COLL, unit(0), 10, filter=Filter(any_of={"cat": []})) == []


def test_filter_exclude_ids(filled):
    hits = filled.search(COLL, unit(0), 3, filter=Filter(exclude_ids=["p0", "p2", "unknown"]))
    assert ids(hits) == ["p1", "p3", "p4"]


def test_filter_ranges(filled):
    def search(lo, hi):
        return ids(filled.search(COLL, unit(0), 10, filter=Filter(ranges={"price": (lo, hi)})))

    assert search(15, 35) == ["p1", "p2", "p3"]  # bounds are inclusive; p2's price is an int
    assert search(None, 15) == ["p0", "p1"]
    assert search(40.5, None) == ["p4", "p5"]
    assert search(None, None) == [p.id for p in POINTS]


def test_filters_combine(filled):
    f = Filter(
        equals={"in_stock": True},
        any_of={"cat": ["shoes", "hats", "bags"]},
        exclude_ids=["p0"],
        ranges={"price": (None, 50.0)},
    )
    assert ids(filled.search(COLL, unit(0), 10, filter=f)) == ["p2", "p4"]
    assert ids(filled.search(COLL, unit(0), 10, filter=Filter())) == [p.id for p in POINTS]


def test_search_batch_matches_single_searches(filled):
    queries = np.stack([unit(0), fan(50), fan(25)])
    filters = [None, Filter(equals={"cat": "shoes"}), Filter(ranges={"price": (20, None)}, exclude_ids=["p3"])]
    batch = filled.search_batch(COLL, queries, 2, filters=filters)
    single = [filled.search(COLL, q, 2, filter=f) for q, f in zip(queries, filters, strict=True)]
    assert [ids(r) for r in batch] == [ids(r) for r in single] == [["p0", "p1"], ["p3", "p0"], ["p2", "p4"]]
    assert [h.score for h in batch[2]] == pytest.approx([h.score for h in single[2]], abs=1e-6)
    with pytest.raises(ValueError, match="filters"):
        filled.search_batch(COLL, queries, 2, filters=[None])


def test_search_ids_returns_the_ids_and_scores_of_search_batch(filled):
    shared = Filter(ranges={"price": (10, None)}, exclude_ids=["p1"])  # one object for several rows
    queries = np.stack([unit(0), fan(50), fan(25)])
    full = filled.search_batch(COLL, queries, 3, filters=[shared, shared, None])
    bare = filled.search_ids(COLL, queries, 3, filters=[shared, shared, None])
    assert [r.ids for r in bare] == [ids(r) for r in full]
    assert [s for r in bare for s in r.scores] == pytest.approx([h.score for r in full for h in r], abs=1e-6)
    assert all(h.payload for r in full for h in r)
    assert "p1" not in bare[0].ids + bare[1].ids
    assert filled.search_ids(COLL, queries, 0, filters=[None] * 3) == [([], [])] * 3
    with pytest.raises(ValueError, match="filters"):
        filled.search_ids(COLL, queries, 2, filters=[None])


def test_search_ids_names_points_the_store_has_not_seen_and_keeps_its_memory_bounded(filled, monkeypatch):
    """The embedded store searches for point ids only and names them from what it learnt; a
    full memory is dropped and learnt again, never answered wrong."""
    queries = np.stack([unit(0), fan(50)])
    want = [ids(r) for r in filled.search_batch(COLL, queries, 4, filters=[None, None])]
    assert [r.ids for r in filled.search_ids(COLL, queries, 4, filters=[None, None])] == want
    monkeypatch.setattr("inference.store.MAX_KNOWN_KEYS", 3)
    assert [r.ids for r in filled.search_ids(COLL, queries, 4, filters=[None, None])] == want
    filled.upsert(COLL, [Point("late", fan(1), {"category": "late", "price": 1.0, "in_stock": True})])
    assert filled.search_ids(COLL, unit(0)[None, :], 2, filters=[None])[0].ids == ["p0", "late"]


def test_delete_removes_from_search_at_once(filled):
    filled.delete(COLL, ["p0", "p2", "never-existed"])
    assert ids(filled.search(COLL, unit(0), 3)) == ["p1", "p3", "p4"]
    assert filled.count(COLL) == 4
    assert filled.retrieve(COLL, ["p0", "p1"]) == [Point("p1", None, POINTS[1].payload)]
    filled.delete(COLL, [])


def test_retrieve_with_and_without_vectors_and_missing_ids(filled):
    got = filled.retrieve(COLL, ["p3", "missing", "p1"])
    assert [p.id for p in got] == ["p3", "p1"]  # order follows the ids asked for
    assert all(p.vector is None for p in got)
    assert got[0].payload == POINTS[3].payload
    assert KEY_FIELD not in got[0].payload

    got = filled.retrieve(COLL, ["p5", "p0"], with_vectors=True)
    assert [p.id for p in got] == ["p5", "p0"]
    assert got[0].vector.dtype == np.float32
    np.testing.assert_allclose(got[0].vector, fan(50), atol=1e-6)
    assert filled.retrieve(COLL, []) == []
    assert filled.retrieve(COLL, ["missing"]) == []


def test_stored_vectors_are_unit_length(filled):
    filled.upsert(COLL, [Point("long", 3.0 * unit(2), {})])
    (p,) = filled.retrieve(COLL, ["long"], with_vectors=True)
    np.testing.assert_allclose(p.vector, unit(2), atol=1e-6)


def test_set_payload_merges(filled):
    filled.set_payload(COLL, "p0", {"in_stock": False, "price": 99.5, "new": {"a": [1, 2]}})
    (p,) = filled.retrieve(COLL, ["p0"])
    assert p.payload == {"cat": "shoes", "tags": ["t0", "all"], "in_stock": False, "price": 99.5, "new": {"a": [1, 2]}}
    # filters see the change at once
    assert "p0" not in ids(filled.search(COLL, unit(0), 10, filter=Filter(equals={"in_stock": True})))
    assert ids(filled.search(COLL, unit(0), 10, filter=Filter(ranges={"price": (90, None)}))) == ["p0"]
    with pytest.raises(PointNotFound):
        filled.set_payload(COLL, "missing", {"x": 1})
    with pytest.raises(ValueError, match=KEY_FIELD):
        filled.set_payload(COLL, "p0", {KEY_FIELD: "other"})


def test_upsert_overwrites(filled):
    filled.upsert(COLL, [Point("p0", unit(5), {"cat": "socks"})])
    assert filled.count(COLL) == len(POINTS)
    (p,) = filled.retrieve(COLL, ["p0"], with_vectors=True)
    assert p.payload == {"cat": "socks"}  # the whole payload is replaced
    np.testing.assert_allclose(p.vector, unit(5), atol=1e-6)
    assert ids(filled.search(COLL, unit(5), 1)) == ["p0"]
    assert "p0" not in ids(filled.search(COLL, unit(0), 10, filter=Filter(equals={"cat": "shoes"})))


def test_payload_values_round_trip(store):
    store.ensure_collection(COLL, DIM)
    payload = {"s": "ü", "i": -3, "f": 0.25, "b": False, "n": None, "l": [1, "x", True], "d": {"e": {"f": [0.5]}}}
    store.upsert(COLL, [Point("doc", unit(1), payload)])
    assert store.retrieve(COLL, ["doc"])[0].payload == payload
    with pytest.raises(ValueError, match=KEY_FIELD):
        store.upsert(COLL, [Point("bad", unit(1), {KEY_FIELD: "x"})])
    with pytest.raises(ValueError, match="no vector"):
        store.upsert(COLL, [Point("novec", None, {})])


def test_count_and_scroll(filled):
    assert filled.count(COLL) == len(POINTS)
    for batch in (1, 4, 256):
        scrolled = list(filled.scroll(COLL, batch=batch))
        assert sorted(p.id for p in scrolled) == [p.id for p in POINTS]
        assert all(p.vector is None for p in scrolled)
    by_id = {p.id: p for p in filled.scroll(COLL, batch=4, with_vectors=True)}
    for original in POINTS:
        assert by_id[original.id].payload == original.payload
        np.testing.assert_allclose(by_id[original.id].vector, original.vector, atol=1e-6)


def test_dimension_mismatch(filled):
    with pytest.raises(DimensionMismatch, match=COLL):
        filled.ensure_collection(COLL, DIM + 1)
    filled.ensure_collection(COLL, DIM, keyword_fields=("cat", "brand"))  # idempotent, may add indexes
    assert filled.count(COLL) == len(POINTS)
    with pytest.raises(DimensionMismatch):
        filled.search(COLL, np.ones(DIM + 1, dtype=np.float32), 1)
    with pytest.raises(DimensionMismatch):
        filled.upsert(COLL, [Point("wide", np.ones(DIM - 1, dtype=np.float32), {})])
    with pytest.raises(DimensionMismatch):
        filled.search_batch(COLL, np.ones((2, DIM + 1), dtype=np.float32), 1, filters=[None, None])


def test_collection_lifecycle(store):
    assert not store.has_collection(COLL)
    with pytest.raises(CollectionNotFound):
        store.search(COLL, unit(0), 1)
    with pytest.raises(CollectionNotFound):
        store.count(COLL)
    store.ensure_collection(COLL, DIM, **FIELDS)
    store.ensure_collection("other", 3)
    assert store.has_collection(COLL) and store.has_collection("other")
    assert store.count(COLL) == 0 and store.search(COLL, unit(0), 5) == []
    store.upsert(COLL, POINTS[:2])
    store.drop_collection(COLL)
    assert not store.has_collection(COLL) and store.has_collection("other")
    store.drop_collection(COLL)  # dropping a missing collection is a no-op
    store.ensure_collection(COLL, 4)  # recreated with another dim, empty
    assert store.count(COLL) == 0
    store.upsert(COLL, [Point("x", np.ones(4, dtype=np.float32), {})])
    assert ids(store.search(COLL, np.ones(4, dtype=np.float32), 1)) == ["x"]


def test_closed_store_refuses_work(store):
    store.ensure_collection(COLL, DIM)
    store.flush()
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.count(COLL)


def test_point_ids_are_uuid5_of_the_string_id():
    for key in ("", "item-1", "ü漢字", "x" * 500):
        assert point_uuid(key) == str(uuid.uuid5(ID_NAMESPACE, key))


def test_compact_point_ids_never_change():
    # Stored ids derive from these: a change would orphan every point of a compact collection.
    assert point_u64("item-1") == 8045043899018850716
    assert point_u64("") == 15956920804273256616
    assert all(0 <= point_u64(k) < 2**64 for k in ("a", "ü漢字", "x" * 500))


def test_compact_ids_are_fixed_when_the_collection_is_made(tmp_path):
    """A collection keeps the ids it was made with: asking for compact ids later changes nothing,
    so an embedded store from before compact ids keeps finding, filtering and deleting its points."""
    with open_backend("edge", tmp_path) as s:
        s.ensure_collection("old", DIM, **FIELDS)
        s.ensure_collection("new", DIM, **FIELDS, compact_ids=True)
        s.upsert("old", POINTS)
        s.upsert("new", POINTS)
    with open_backend("edge", tmp_path) as s:
        s.ensure_collection("old", DIM, **FIELDS, compact_ids=True)
        engine_ids = {name: {r.id for r in s._shard(name)[0].scroll(qe.ScrollRequest(limit=10, with_payload=False))[0]}
                      for name in ("old", "new")}
        assert engine_ids["new"] == {point_u64(p.id) for p in POINTS}
        assert {str(i) for i in engine_ids["old"]} == {point_uuid(p.id) for p in POINTS}
        for name in ("old", "new"):
            found = s.search_ids(name, np.stack([unit(0)]), 3, filters=[Filter(exclude_ids=("p1",))])
            assert found[0].ids == ["p0", "p2", "p3"]
            s.delete(name, ["p0"])
            assert [p.id for p in s.retrieve(name, ["p0", "p2"])] == ["p2"]


def test_invalid_input_is_rejected_early():
    with pytest.raises(TypeError, match="not a string"):
        Filter(any_of={"cat": "shoes"})
    with pytest.raises(TypeError, match="ranges"):
        Filter(equals={"price": 9.5})
    with pytest.raises(TypeError):
        Filter(any_of={"flag": [True]})
    with pytest.raises(ValueError, match="http"):
        open_store(url="localhost:6333", api_key=None, data_dir=Path("/nonexistent"))


# --------------------------------------------------------------------------- edge only


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_edge_reopen_keeps_points_and_dim(tmp_path):
    with open_backend("edge", tmp_path) as s:
        s.ensure_collection(COLL, DIM, **FIELDS)
        s.upsert(COLL, POINTS)
        s.set_payload(COLL, "p1", {"in_stock": True})
        s.delete(COLL, ["p5"])
    assert (tmp_path / "qdrant" / COLL).is_dir()

    with open_backend("edge", tmp_path) as s:
        assert s.has_collection(COLL)
        assert s.count(COLL) == 5
        with pytest.raises(DimensionMismatch):
            s.ensure_collection(COLL, DIM * 2)
        s.ensure_collection(COLL, DIM, **FIELDS)
        hits = s.search(COLL, unit(0), 10, filter=Filter(equals={"in_stock": True}))
        assert ids(hits) == ["p0", "p1", "p2", "p4"]
        assert s.retrieve(COLL, ["p3"])[0].payload == POINTS[3].payload


def test_edge_writes_survive_a_crash_without_flush(tmp_path):
    proc = run_python(
        f"""
        import os, numpy as np
        from pathlib import Path
        from inference.store import open_store, Point
        s = open_store(url=None, api_key=None, data_dir=Path({str(tmp_path)!r}))
        s.ensure_collection("items", 4)
        s.upsert("items", [Point(f"i{{k}}", np.eye(4, dtype=np.float32)[k % 4], {{"k": k}}) for k in range(50)])
        s.set_payload("items", "i7", {{"seen": True}})
        os._exit(0)  # no flush, no close
        """
    )
    assert proc.returncode == 0, proc.stderr
    with open_backend("edge", tmp_path) as s:
        assert s.count("items") == 50
        assert s.retrieve("items", ["i7"])[0].payload == {"k": 7, "seen": True}


def allocated_mb(path: Path) -> float:
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file()) / 2**20


def test_edge_flush_bounds_the_disk_under_overwrites(fast_dir):
    """Profiles are overwritten on every event. The engine truncates its write-ahead log (and
    frees overwritten payloads) only on flush, so a worker that never flushed grew without bound.
    Here: 20 points rewritten 3,000 times with 4 KB payloads (240 MB of writes)."""
    rng = np.random.default_rng(0)

    def rewrite(s: VectorStore, rounds: int, flush_every: int | None) -> None:
        for r in range(rounds):
            s.upsert(COLL, [Point(f"u{i}", rng.standard_normal(DIM).astype(np.float32), {"state": "x" * 4000 + str(r)})
                            for i in range(20)])
            if flush_every and r % flush_every == 0:
                s.flush()

    with open_backend("edge", fast_dir / "flushed") as s:
        s.ensure_collection(COLL, DIM)
        rewrite(s, 1000, flush_every=50)
        early = allocated_mb(fast_dir / "flushed")
        rewrite(s, 2000, flush_every=50)
        late = allocated_mb(fast_dir / "flushed")
        assert s.retrieve(COLL, ["u3"])[0].payload["state"].endswith("1999")  # the last round of the second call
    assert late < early + 16, (early, late)

    with open_backend("edge", fast_dir / "unflushed") as s:  # the control: the test can fail
        s.ensure_collection(COLL, DIM)
        rewrite(s, 1000, flush_every=None)
        early = allocated_mb(fast_dir / "unflushed")
        rewrite(s, 2000, flush_every=None)
        assert allocated_mb(fast_dir / "unflushed") > early + 100


def test_edge_locked_directory_raises_store_unavailable(tmp_path):
    owner = open_backend("edge", tmp_path)
    try:
        owner.ensure_collection(COLL, DIM, **FIELDS)
        owner.upsert(COLL, POINTS)
        owner.set_payload(COLL, "p0", {"seen": 1})  # unflushed change while someone else tries

        with pytest.raises(StoreUnavailable, match="in use by another process") as err:
            open_backend("edge", tmp_path)
        assert str(tmp_path / "qdrant") in str(err.value)

        proc = run_python(
            f"""
            from pathlib import Path
            from inference.store import open_store, StoreUnavailable
            try:
                open_store(url=None, api_key=None, data_dir=Path({str(tmp_path)!r}))
            except StoreUnavailable as exc:
                print("UNAVAILABLE", exc)
            """
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("UNAVAILABLE"), proc.stdout
        assert str(tmp_path / "qdrant") in proc.stdout and f"pid {os.getpid()}" in proc.stdout

        # the failed attempts left the owner intact
        owner.flush()
        assert owner.retrieve(COLL, ["p0"])[0].payload["seen"] == 1
    finally:
        owner.close()
    with open_backend("edge", tmp_path) as again:  # closing released the lock
        assert again.count(COLL) == len(POINTS)


# --------------------------------------------------------------------------- server only


def test_unreachable_server_raises_store_unavailable_quickly(tmp_path):
    # a bound socket that never listens: connections to it are refused
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(StoreUnavailable, match=url):
            open_store(url=url, api_key=None, data_dir=tmp_path, timeout_s=2.0)
        assert time.monotonic() - start < 2.0


def clustered(n: int, dim: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around n // 200 centres, as a catalog's text embeddings cluster (HNSW on
    uniform random vectors in 384-d finds a sixth of the true top-100: no real catalog is that),
    and query vectors around the same centres."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((n // 200, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, len(centres), n + queries)] + 0.06 * rng.standard_normal((n + queries, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[:n], x[n:]


@pytest.mark.parametrize("index", [IndexParams(), IndexParams(quantization="none"),
                                   IndexParams(acorn_max_selectivity=0.4)], ids=["int8", "float", "acorn"])
def test_build_index_makes_search_approximate_and_keeps_it_current(tmp_path: Path, index: IndexParams) -> None:
    """8,000 384-d points (12 MB: above the engine's indexing threshold): exact until indexed,
    then HNSW with recall@100 near 1, with and without a filter, for each kind of index and
    search; writes after it still count."""
    n, dim = 8000, 384
    vectors, queries = clustered(n, dim, 20)
    cats = np.arange(n) % 5
    with open_store(url=None, api_key=None, data_dir=tmp_path, index=index) as store:
        store.ensure_collection(COLL, dim, keyword_fields=("cat",))
        for lo in range(0, n, 1000):
            store.upsert(COLL, [Point(f"p{i}", vectors[i], {"cat": f"c{cats[i]}"}) for i in range(lo, lo + 1000)])

        def recall(filtered: bool) -> float:
            found = []
            for q in queries:
                scores = vectors @ q
                if filtered:
                    scores[cats != 2] = -np.inf
                exact = {f"p{i}" for i in np.argsort(-scores)[:100]}
                hits = store.search(COLL, q, 100, filter=Filter(equals={"cat": "c2"}) if filtered else None)
                found.append(len(exact & {h.id for h in hits}) / 100)
            return float(np.mean(found))

        assert recall(False) == recall(True) == 1.0  # exact before the index exists
        built = store.build_index(COLL)
        assert built["points"] == n and built["indexed_vectors"] == n and built["seconds"] >= 0
        assert built["quantization"] == index.quantization
        assert recall(False) >= 0.95 and recall(True) >= 0.95
        # A point written or deleted after the build is found, or not, at once.
        store.upsert(COLL, [Point("fresh", queries[0], {"cat": "c2"})])
        store.delete(COLL, ["p0"])
        assert store.search(COLL, queries[0], 1)[0].id == "fresh"
        assert "p0" not in {h.id for h in store.search(COLL, vectors[0], 100)}


def test_a_collection_built_without_quantization_gets_it_at_its_next_build(tmp_path: Path) -> None:
    """Switching STREAMREC_QDRANT_QUANTIZATION to int8 reaches an existing embedded collection at
    its next `streamrec index`; switching to none leaves a quantized one as it was built."""
    n, dim = 8000, 384
    vectors, queries = clustered(n, dim, 20)
    with open_store(url=None, api_key=None, data_dir=tmp_path, index=IndexParams(quantization="none")) as store:
        store.ensure_collection(COLL, dim)
        store.upsert(COLL, [Point(f"p{i}", vectors[i], {}) for i in range(n)])
        assert store.build_index(COLL)["quantization"] == "none"
    with open_store(url=None, api_key=None, data_dir=tmp_path) as store:
        built = store.build_index(COLL)
        assert built["quantization"] == "int8" and built["indexed_vectors"] == n
        exact = {f"p{i}" for i in np.argsort(-(vectors @ queries[0]))[:100]}
        assert len(exact & {h.id for h in store.search(COLL, queries[0], 100)}) >= 95
    with open_store(url=None, api_key=None, data_dir=tmp_path, index=IndexParams(quantization="none")) as store:
        assert store.build_index(COLL)["quantization"] == "int8"


@pytest.mark.parametrize("kwargs, message", [
    (dict(hnsw_ef=0), "hnsw_ef"),
    (dict(quantization="int4"), "quantization"),
    (dict(oversampling=0.5), "oversampling"),
    (dict(acorn_max_selectivity=1.5), "acorn_max_selectivity"),
])
def test_index_params_refuse_what_the_engine_cannot_do(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IndexParams(**kwargs)


def test_scroll_page_reads_every_point_once_in_short_steps(filled):
    seen, offset, pages = [], None, 0
    while True:
        points, offset = filled.scroll_page(COLL, offset, batch=4)
        assert len(points) <= 4
        seen += [p.id for p in points]
        pages += 1
        if offset is None:
            break
    assert sorted(seen) == sorted(p.id for p in POINTS) and pages == 2


def test_a_server_collection_is_created_with_the_int8_copy_unless_told_otherwise(tmp_path):
    """Against a server the quantization is part of the collection the store creates (the server
    builds the copy with its index), and build_index reports what the server says it has."""
    from qdrant_client import models

    from tests.fixtures.fault_fixtures import FakeQdrant

    with FakeQdrant() as fake:
        with open_store(url=fake.url, api_key=None, data_dir=tmp_path) as store:
            store.ensure_collection(COLL, DIM)
            created = fake.quantization[COLL]
            assert isinstance(created, models.ScalarQuantization)
            assert created.scalar.type == models.ScalarType.INT8 and created.scalar.always_ram
            assert store.build_index(COLL)["quantization"] == "int8"
        with open_store(url=fake.url, api_key=None, data_dir=tmp_path,
                        index=IndexParams(quantization="none")) as store:
            store.ensure_collection("plain", DIM)
            assert "plain" not in fake.quantization and store.build_index("plain")["quantization"] == "none"
            store.drop_collection(COLL)
            assert COLL not in fake.quantization
