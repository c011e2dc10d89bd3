"""SIGKILL the worker at random points of a live stream; the profiles must come out as if it never
crashed: nothing lost, nothing counted twice (issue 5).

The expected state is computed, not observed: the same events, in sending order, folded with the
pure maths of inference/profiles.py and the item vectors the worker stored. A second, clean
Deployment would share every bug of the pipeline it is compared with (an event it drops, it drops
twice); the oracle depends only on the input, and on apply_event, whose own rules are unit-tested.
Within a user the worker sees events in partition order, which is sending order, so the fold
order is the same; floats are then bitwise equal in practice and compared with a tight tolerance.
"""

from __future__ import annotations

import random
import time
from collections import Counter

from inference.recommender import rec_id_for
from tests.fixtures.fault_fixtures import (
    Answers,
    answered_events,
    catalog,
    compare_all,
    embedded_store,
    expected_profiles,
    kill_while_starting,
    new_worker,
    profile_params,
    shop_events,
    start_worker,
    stored_items,
    stored_profiles,
)
from tests.fixtures.kafka_fixtures import Deployment

SEED = 5_2024
N_ITEMS, N_USERS, N_EVENTS = 100, 50, 3_000
MID_STREAM_KILLS = 9
STARTUP_KILLS = 2  # kills of a worker that is still starting (loading, joining the group): 11 in all
MAX_KILL_DELAY_S = 2.0


def test_sigkill_at_random_points_loses_nothing_and_counts_nothing_twice(broker, tmp_path_factory, tiny_onnx_dir):
    rng = random.Random(SEED)
    items = catalog(N_ITEMS, SEED)
    events = shop_events(SEED, N_EVENTS, items, n_users=N_USERS)
    assert len({e.event_id for e in events}) == N_EVENTS and len(events) > N_EVENTS, "the stream re-sends some events"
    # Small batches: more commit points, so kills land between a profile write and its offset commit.
    d = Deployment(broker, tmp_path_factory.mktemp("crash_recovery"), tiny_onnx_dir, STREAMREC_BATCH_SIZE="32")
    try:
        worker = start_worker(d)
        for item in items:
            d.producer.send(d.topic("items"), key=item.item_id.encode(), value=item.to_bytes())
        d.producer.flush()
        worker.wait_for(lambda s: s["processed"].get("item", 0) >= N_ITEMS, 120, "the catalog")

        cuts = sorted(rng.sample(range(1, len(events)), MID_STREAM_KILLS))
        chunks = [events[a:b] for a, b in zip([0, *cuts], [*cuts, len(events)])]
        starting_kills = set(rng.sample(range(MID_STREAM_KILLS), STARTUP_KILLS))
        kills: list[str] = []
        for n, chunk in enumerate(chunks):
            for e in chunk:
                d.producer.send(d.topic("events"), key=e.user_id.encode(), value=e.to_bytes())
            d.producer.flush()
            if n == len(chunks) - 1:
                break
            delay = rng.uniform(0.0, MAX_KILL_DELAY_S)
            time.sleep(delay)
            stats = worker.get("/stats", quiet=True, timeout=2) or {}
            done = sum(v for k, v in stats.get("processed", {}).items() if k.startswith("event."))
            worker.kill()
            kills.append(f"mid-stream after {delay:.2f}s ({done} events processed by that worker)")
            if n in starting_kills:
                startup_delay = rng.uniform(0.5, 4.0)
                was_ready = kill_while_starting(new_worker(d), startup_delay)
                kills.append(f"while starting, after {startup_delay:.2f}s (ready: {was_ready})")
            worker = start_worker(d)
        assert len(kills) == MID_STREAM_KILLS + STARTUP_KILLS
        print("\n".join(["kills:", *kills]))

        want = set(answered_events(events).values())
        answers = Answers()
        d.reader("recommendations").until(lambda ms: want <= answers.update(ms).triggers, timeout=180)
        recs = answers.recs
        assert worker.alive(), "the last worker died on its own"
        worker.stop()
    finally:
        d.close()

    with embedded_store(d.root / "state") as store:
        actual, records = stored_profiles(store), stored_items(store)
    assert len(records) == N_ITEMS
    expected = expected_profiles(events, records, profile_params())
    problems = compare_all(actual, expected)
    assert not problems, f"{len(problems)} differences from a clean exactly-once pass:\n" + "\n".join(problems[:40])
    assert sum(p.events for p in actual.values()) == N_EVENTS

    # A redelivered event is answered again under the same deterministic rec_id, with the right key.
    assert all(r.rec_id == rec_id_for(f"event:{r.trigger_event_id}") for r in recs)
    by_id = {e.event_id: e for e in events}
    assert all(by_id[r.trigger_event_id].user_id == r.user_id for r in recs)
    answered_twice = sum(1 for c in Counter(r.trigger_event_id for r in recs).values() if c > 1)
    print(f"{len(recs)} recommendations for {N_EVENTS} events; {answered_twice} triggers answered more than once")
