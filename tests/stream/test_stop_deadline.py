"""A worker told to stop while its broker is gone stops within STREAMREC_STOP_TIMEOUT_S, having
persisted what its recommender counted (stream/stop_deadline.py)."""

from __future__ import annotations

import time

import pytest

from inference.popularity_shares import PopularityShares
from inference.schemas import EventType
from stream.broker import LocalBroker, free_port
from tests.fixtures.fault_fixtures import Answers, answered_events, catalog, embedded_store, shop_events, start_worker
from tests.fixtures.kafka_fixtures import Deployment

SEED = 71
ITEMS = catalog(20, SEED)
DEADLINE_S = 3.0


@pytest.mark.integration  # its own broker: it is stopped under the worker
def test_a_worker_stopped_with_its_broker_gone_persists_its_state_and_exits_1_at_the_deadline(
    tmp_path_factory, tiny_onnx_dir
):
    root = tmp_path_factory.mktemp("stop_deadline")
    broker = LocalBroker(free_port(), log_path=root / "tansu.log")
    # No timer flush: what is found stored below was persisted by the overdue stop.
    d = Deployment(broker, root, tiny_onnx_dir, STREAMREC_STOP_TIMEOUT_S=str(DEADLINE_S),
                   STREAMREC_POPULARITY_FLUSH_S="3600")
    try:
        worker = start_worker(d)
        for item in ITEMS:
            d.send("items", item.item_id, item)
        worker.wait_for(lambda s: s["processed"].get("item", 0) >= len(ITEMS), 120, "the catalog")
        events = shop_events(SEED, 120, ITEMS, n_users=6, duplicate_rate=0.0)
        recs = d.reader("recommendations")
        for e in events:
            d.producer.send(d.topic("events"), key=e.user_id.encode(), value=e.to_bytes())
        d.producer.flush()
        want, answers = set(answered_events(events).values()), Answers()
        recs.until(lambda ms: want <= answers.update(ms).triggers, timeout=90)

        broker.stop()
        time.sleep(1.0)
        started = time.monotonic()
        code = worker.stop(timeout=60)  # SIGTERM; SIGKILL only after 60 s
        took = time.monotonic() - started
        assert code == 1, f"exit code {code}:\n{worker.log_tail()}"
        assert DEADLINE_S <= took < DEADLINE_S + 20, took
        assert "did not stop within STREAMREC_STOP_TIMEOUT_S" in worker.log_path.read_text()
    finally:
        d.close()
        broker.stop()

    bought = {e.item_id for e in events if e.type is EventType.purchase}
    with embedded_store(d.root / "state") as store:  # its lock released: the recommender closed it
        counted = {item for share in PopularityShares(store).all().values() for item in share}
    assert bought and bought <= counted
