"""End to end through a real Tansu broker and a real embedded Qdrant, with a worker process."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import pytest

from inference.popularity_shares import PopularityShares
from inference.schemas import DeadLetter, Event, EventType, Item, Recommendation, Request
from inference.store import open_store
from stream.metrics import WORKER_STAGES
from kafka import KafkaAdminClient

from tests.fixtures.fault_fixtures import wait_until
from tests.fixtures.kafka_fixtures import Deployment

T0 = datetime(2011, 5, 1, 10, 0, tzinfo=timezone.utc)
ITEMS = [Item(schema=1, item_id=f"i{n}", title=f"product {n} in colour {n % 5}", price=float(n),
              category="even" if n % 2 == 0 else "odd") for n in range(40)]


def event(event_id, user, item, type=EventType.purchase, minutes=0):
    return Event(schema=1, event_id=event_id, user_id=user, type=type, ts=T0 + timedelta(minutes=minutes),
                 item_id=item, quantity=1, price=1.0)


def recs_of(messages) -> list[Recommendation]:
    return [Recommendation.model_validate_json(m.value) for m in messages]


@pytest.fixture(scope="module")
def deployment(broker, tmp_path_factory, tiny_onnx_dir):
    d = Deployment(broker, tmp_path_factory.mktemp("pipeline"), tiny_onnx_dir)
    worker = d.start_worker()
    for item in ITEMS:
        d.send("items", item.item_id, item)
    d.send("items", "i5", Item(schema=1, item_id="i5", title="", deleted=True))
    worker.wait_for(lambda s: s["processed"].get("item", 0) >= len(ITEMS) + 1, 60, "the catalog")
    yield d
    d.close()


def test_events_answer_the_right_user_without_bought_or_deleted_items(deployment):
    reader = deployment.reader("recommendations")
    a_events = [event("a1", "alice", "i1"), event("a2", "alice", "i2", minutes=1),
                event("a3", "alice", "i3", EventType.view, minutes=2)]
    b_events = [event("b1", "bob", "i10", EventType.click)]
    for e in a_events + b_events:
        deployment.send("events", e.user_id, e)
    messages = reader.until(lambda ms: {"a3", "b1"} <= {r.trigger_event_id for r in recs_of(ms)})
    by_trigger = {r.trigger_event_id: (r, m) for r, m in zip(recs_of(messages), messages)}
    alice, alice_msg = by_trigger["a3"]
    bob, bob_msg = by_trigger["b1"]
    assert alice.user_id == "alice" and alice_msg.key == b"alice"
    assert bob.user_id == "bob" and bob_msg.key == b"bob"
    alice_items = {i.item_id for i in alice.items}
    assert len(alice.items) == 10
    assert not alice_items & {"i1", "i2"}, "bought items must not be recommended"
    assert "i5" not in alice_items | {i.item_id for i in bob.items}, "deleted items must not be recommended"
    assert [i.position for i in alice.items] == list(range(1, 11))
    assert all(i.reason for i in alice.items) and alice.model_version
    metrics = deployment.worker.get_text("/metrics")
    assert 'streamrec_events_processed_total{type="purchase"}' in metrics
    assert "streamrec_freshness_seconds_count" in metrics and 'stage="retrieve"' in metrics
    assert all(f'stage="{stage}"' in metrics for stage in WORKER_STAGES)


def test_bad_input_is_dead_lettered_with_its_bytes_and_the_good_is_processed(deployment):
    dead = deployment.reader("deadletter")
    recs = deployment.reader("recommendations")
    bad = [
        b"{not json",
        json.dumps({"schema": 1, "event_id": "x1", "type": "view", "ts": "2011-05-01T10:00:00Z", "item_id": "i1"}).encode(),
        json.dumps({"schema": 1, "event_id": "x2", "user_id": "carol", "type": "view",
                    "ts": "2011-05-01T10:00:00Z", "item_id": "i1", "quantity": -4}).encode(),
        b"\xff\xfe bad utf8",
        b"[" * 20_000 + b"]" * 20_000,
    ]
    deployment.send("events", "carol", event("c1", "carol", "i7", EventType.view))
    for raw in bad:
        deployment.send("events", "carol", raw)
    deployment.send("events", "carol", event("c2", "carol", "i8", EventType.view, minutes=1))
    letters = [DeadLetter.model_validate_json(m.value) for m in dead.until(lambda ms: len(ms) >= len(bad))]
    assert sorted(base64.b64decode(dl.value) for dl in letters) == sorted(bad)
    reasons = {base64.b64decode(dl.value): dl.error.split(":")[0] for dl in letters}
    assert reasons[bad[0]] == "not_json" and reasons[bad[1]] == "invalid" and reasons[bad[2]] == "invalid"
    assert reasons[bad[3]] == "not_utf8" and reasons[bad[4]] in {"too_deep", "too_large"}
    assert all(dl.topic == deployment.topic("events") and dl.offset >= 0 for dl in letters)
    assert "user_id" in next(dl.error for dl in letters if base64.b64decode(dl.value) == bad[1])
    recs.until(lambda ms: "c2" in {r.trigger_event_id for r in recs_of(ms)})
    stats = deployment.worker.stats()
    assert sum(stats["dead_lettered"].values()) >= len(bad)


def test_requests_are_answered_with_k_items_within_the_filters(deployment):
    recs = deployment.reader("recommendations")
    deployment.send("events", "dave", event("d1", "dave", "i20", EventType.click))
    request = Request(schema=1, request_id="r-1", user_id="dave", k=3, filters={"max_price": 15, "category": "odd"})
    deployment.send("requests", "dave", request)
    answer = next(r for r in recs_of(recs.until(lambda ms: any(r.request_id == "r-1" for r in recs_of(ms))))
                  if r.request_id == "r-1")
    assert answer.user_id == "dave" and len(answer.items) == 3
    prices = {it.item_id: it.price for it in ITEMS}
    assert all(prices[i.item_id] <= 15 and int(i.item_id[1:]) % 2 == 1 for i in answer.items)


def test_http_view_answers_from_the_same_state_and_state_survives_a_restart(deployment):
    recs = deployment.reader("recommendations")
    deployment.send("events", "erin", event("e1", "erin", "i30"))
    recs.until(lambda ms: "e1" in {r.trigger_event_id for r in recs_of(ms)})
    live = deployment.worker.get("/recommendations/erin?k=40&request_id=page-7")
    assert live["user_id"] == "erin" and "i30" not in {i["item_id"] for i in live["items"]}
    assert live["request_id"] == "page-7"
    assert deployment.worker.get("/recommendations/erin?k=0", quiet=True)["error"]
    assert deployment.worker.get(f"/recommendations/erin?request_id={'r' * 129}", quiet=True)["error"]

    deployment.worker.stop()
    # The clean stop wrote popularity into the shares of the partitions the events came from
    # (`<partition>` for items, `<partition>/<segment>` per value segment).
    with open_store(url=None, api_key=None, data_dir=deployment.root / "state") as store:
        shares = PopularityShares(store).all()
    assert shares and {name.split("/")[0] for name in shares} <= {"0", "1", "2", "3"}, shares.keys()
    assert any("i30" in counts for counts in shares.values())
    worker = deployment.start_worker()
    again = worker.get("/recommendations/erin?k=40&request_id=page-7")
    assert "i30" not in {i["item_id"] for i in again["items"]}, "the purchase was forgotten across a restart"
    assert [i["item_id"] for i in again["items"]] == [i["item_id"] for i in live["items"]]
    assert again["rec_id"] == live["rec_id"], "the same request id is the same recommendation"
    assert worker.get("/recommendations/erin?k=40")["rec_id"] != live["rec_id"]


def test_the_worker_creates_the_topics_it_writes_at_start(broker, tmp_path_factory, tiny_onnx_dir):
    """Without this, the first segment change or dead letter would create its topic by a produce:
    with the broker's defaults, or (auto-creation off, as in deploy/) never, stalling the send."""
    d = Deployment(broker, tmp_path_factory.mktemp("declare"), tiny_onnx_dir, create_topics=False,
                   STREAMREC_TOPIC_PARTITIONS="2")  # Tansu would auto-create with 4
    written = ("recommendations", "segments", "deadletter", "erasures-confirmed")
    try:
        d.start_worker()
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        def partitions() -> dict[str, int] | None:
            found = {t["name"]: len(t["partitions"]) for t in admin.describe_topics([d.topic(n) for n in written])
                     if t["error_code"] == 0}
            return found if len(found) == len(written) else None

        try:
            described = wait_until(partitions, 30, "the written topics", interval=0.5)
        finally:
            admin.close()
        assert described == {d.topic(n): 2 for n in written}
    finally:
        d.close()
