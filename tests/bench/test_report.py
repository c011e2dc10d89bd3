"""Smoke tests of the bench programs' helpers (statistics, tables, exact top-k, synthetic data).

The benchmarks themselves are programs, not tests: nothing here runs one or looks at a time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import numpy as np

from bench.memory import DIM, Shop, state_fields, vector_chars
from bench.pipeline import Wire
from bench.report import percentiles, process_tree, ratio, rss_bytes, spread, table
from bench.retrieval import make_items, make_queries, numpy_mask, numpy_topk, numpy_topk_batch
from inference.profile_store import profile_to_point
from inference.schemas import Event, EventType


def test_spread_is_median_with_min_and_max_and_skips_nan():
    assert spread([3.0, 1.0, 2.0]) == "2.0 (1.0–3.0)"
    assert spread([float("nan"), 5.0]) == "5.0"
    assert spread([]) == "n/a"
    assert spread([1500.0, 2500.0, 2000.0], 0) == "2,000 (1,500–2,500)"


def test_percentiles_and_ratio():
    p50, p99 = percentiles(list(range(1, 101)))
    assert 50 <= p50 <= 51 and 98 <= p99 <= 100
    assert all(v != v for v in percentiles([]))
    assert ratio(3.0, 1.5) == "2.00×"
    assert ratio(1.0, 0.0) == "n/a"


def test_table_prints_markdown(capsys):
    table(["a", "bb"], [[1, "x"], ["long cell", 2]])
    lines = [line for line in capsys.readouterr().out.splitlines() if line]
    assert lines[0].startswith("| a") and set(lines[1]) <= {"|", "-"}
    assert len(lines) == 4 and all(line.count("|") == 3 for line in lines)


def test_numpy_topk_is_exact_and_respects_the_mask():
    vectors, category, price, in_stock = make_items(3000, seed=1)
    queries, filters = make_queries(4, 3000, seed=1)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    for q, f in zip(queries, filters):
        scores = vectors @ q
        top = numpy_topk(vectors, q, None)
        assert list(top) == list(np.argsort(-scores, kind="stable")[:100])
        mask = numpy_mask(category, price, in_stock, *f)
        filtered = numpy_topk(vectors, q, mask)
        assert mask[filtered].all() and len(filtered) == min(100, mask.sum())
    batch = numpy_topk_batch(vectors, queries, None)
    assert [list(b) for b in batch] == [list(numpy_topk(vectors, q, None)) for q in queries]


def test_shop_profiles_are_realistic_and_variants_differ():
    shop = Shop(seed=3)
    profile = shop.profile("u1", 30)
    assert profile.events == 30 and profile.long_term is not None and len(profile.seen_events) == 30
    state = profile_to_point(profile, DIM).payload["state"]
    fields = state_fields(profile)
    assert set(fields) == set(json.loads(state))
    # each field's bytes plus one comma between fields and the braces make the whole string
    assert sum(fields.values()) + len(fields) - 1 + 2 == len(state)
    assert vector_chars(profile) == (2 * 2048 if profile.session is not None else 2048)
    other = shop.variant(profile, "u2")
    assert other.user_id == "u2" and other.recent == profile.recent
    assert not np.array_equal(other.long_term.total, profile.long_term.total)
    assert other.seen_events != profile.seen_events


def test_wire_cycles_with_fresh_event_ids():
    ts = datetime(2011, 1, 1, tzinfo=timezone.utc)
    events = [Event(schema=1, event_id=f"e{i}", user_id="u", type=EventType.view, ts=ts, item_id="i") for i in range(3)]
    wire = Wire(events)
    ids = [m[0] for m in wire.take(7)]
    assert ids == ["e0", "e1", "e2", "e0~1", "e1~1", "e2~1", "e0~2"]
    assert len(set(ids)) == len(ids)


def test_a_process_tree_counts_the_children_memory_too():
    # A child that holds 64 MiB resident: the tree's memory must include it.
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; b = b'x' * (64 << 20); "
                              "sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(60)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        me = os.getpid()
        assert child.pid in process_tree(me) and process_tree(child.pid) == [child.pid]
        alone, tree = rss_bytes(me)[0], rss_bytes(me, tree=True)[0]
        assert tree - alone >= 64 << 20
    finally:
        child.kill()
        child.wait()
