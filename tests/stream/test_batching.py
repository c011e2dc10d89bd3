"""Batches stay open while events keep coming and close after a quiet gap or the longest wait
(stream/batching.py), seen through a real worker: one recommendation per user per batch."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from inference.schemas import Event, EventType, Item, Recommendation
from tests.fixtures.kafka_fixtures import Deployment

T0 = datetime(2011, 5, 1, 10, 0, tzinfo=timezone.utc)
GAP_S = 0.15  # between a user's events: well inside the quiet gap below
IDLE_S = 0.6
MAX_WAIT_S = 2.0


def purchase(event_id: str, user: str, n: int) -> Event:
    return Event(schema=1, event_id=event_id, user_id=user, type=EventType.purchase,
                 ts=T0 + timedelta(seconds=n), item_id=f"i{n % 20}", quantity=1, price=1.0)


def trickle(d: Deployment, user: str, count: int) -> list[str]:
    ids = []
    for n in range(count):
        e = purchase(f"{user}-{n}", user, n)
        d.send("events", user, e)
        ids.append(e.event_id)
        time.sleep(GAP_S)
    return ids


@pytest.fixture(scope="module")
def deployment(broker, tmp_path_factory, tiny_onnx_dir):
    d = Deployment(broker, tmp_path_factory.mktemp("batching"), tiny_onnx_dir,
                   STREAMREC_BATCH_WINDOW_S=str(IDLE_S), STREAMREC_BATCH_MAX_WAIT_S=str(MAX_WAIT_S))
    worker = d.start_worker()
    for n in range(20):
        d.send("items", f"i{n}", Item(schema=1, item_id=f"i{n}", title=f"product {n}", price=float(n)))
    worker.wait_for(lambda s: s["processed"].get("item", 0) >= 20, 60, "the catalog")
    yield d
    d.close()


def recs_for(messages, user: str) -> list[Recommendation]:
    return [r for r in (Recommendation.model_validate_json(m.value) for m in messages) if r.user_id == user]


def test_events_closer_than_the_quiet_gap_are_one_batch(deployment):
    """6 events over 0.75 s: a fixed 0.6 s window would split them; a growing batch does not."""
    recs = deployment.reader("recommendations")
    ids = trickle(deployment, "gina", 6)
    recs.until(lambda ms: any(r.trigger_event_id == ids[-1] for r in recs_for(ms, "gina")))
    time.sleep(IDLE_S * 2)  # nothing else may still be on its way
    answered = recs_for(recs.until(lambda ms: True, timeout=1), "gina")
    assert [r.trigger_event_id for r in answered] == [ids[-1]]


def test_a_batch_closes_at_the_longest_wait_while_events_keep_coming(deployment):
    """24 events over 3.6 s, never a quiet gap: batches close every 2 s, so more than one answer."""
    recs = deployment.reader("recommendations")
    ids = trickle(deployment, "hugo", 24)
    answered = recs_for(recs.until(lambda ms: any(r.trigger_event_id == ids[-1] for r in recs_for(ms, "hugo"))), "hugo")
    triggers = [r.trigger_event_id for r in answered]
    assert len(triggers) >= 2 and triggers[-1] == ids[-1]
    assert len(set(triggers)) == len(triggers) and set(triggers) <= set(ids)
