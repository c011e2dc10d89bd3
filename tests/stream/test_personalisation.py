"""Exploration, segments and A/B variants on a real worker, broker and embedded Qdrant."""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime, timedelta, timezone

import pytest

from inference.schemas import Event, EventType, Item, Recommendation, SegmentChange
from stream import ab_report
from stream.settings import StreamSettings
from stream.topic_reader import read_to_end
from tests.fixtures.kafka_fixtures import Deployment

T0 = datetime(2011, 6, 1, 9, 0, tzinfo=timezone.utc)
WORDS = ["teacup", "candle", "doormat", "lantern", "notebook", "apron", "clock", "basket"]
ITEMS = [Item(schema=1, item_id=f"i{n}", title=f"{WORDS[n % 8]} {WORDS[(n // 8) % 8]} model {n}", price=1.0 + n)
         for n in range(64)]
VARIANTS = {"control": {"weight": 1, "exploration_rate": 0.0}, "explore": {"weight": 1, "exploration_rate": 0.5}}


def ev(event_id, user, item, type=EventType.purchase, minutes=0, rec_id=None, price=5.0):
    return Event(schema=1, event_id=event_id, user_id=user, type=type, ts=T0 + timedelta(minutes=minutes),
                 item_id=item, quantity=1, price=price, rec_id=rec_id)


@pytest.fixture(scope="module")
def deployment(broker, tmp_path_factory, tiny_onnx_dir):
    d = Deployment(broker, tmp_path_factory.mktemp("personal"), tiny_onnx_dir, STREAMREC_TOPICS="6",
                   STREAMREC_AB_VARIANTS=json.dumps(VARIANTS), STREAMREC_RFM_FREQUENCY="[2, 3, 4, 5]",
                   STREAMREC_RFM_MONETARY="[5, 10, 20, 40]")
    worker = d.start_worker()
    for item in ITEMS:
        d.send("items", item.item_id, item)
    worker.wait_for(lambda s: s["processed"].get("item", 0) >= len(ITEMS), 60, "the catalog")
    yield d
    d.close()


def recs_for(reader, trigger_ids: set[str]) -> dict[str, Recommendation]:
    messages = reader.until(lambda ms: trigger_ids <= {Recommendation.model_validate_json(m.value).trigger_event_id
                                                       for m in ms})
    out = {}
    for m in messages:
        rec = Recommendation.model_validate_json(m.value)
        if rec.trigger_event_id in trigger_ids:
            out[rec.trigger_event_id] = rec
    return out


def test_a_click_on_an_explored_item_changes_the_bandit_and_variants_are_recorded(deployment):
    d, worker = deployment, deployment.worker
    reader = d.reader("recommendations")
    users = [f"shopper-{n}" for n in range(16)]
    for user in users:
        d.send("events", user, ev(f"{user}-1", user, "i1"))
    recs = recs_for(reader, {f"{u}-1" for u in users})
    variants = {r.variant for r in recs.values()}
    assert variants == {"control", "explore"}
    assert not any(i.explore for r in recs.values() if r.variant == "control" for i in r.items)
    explored = [(r, i) for r in recs.values() if r.variant == "explore" for i in r.items if i.explore]
    assert explored, "the explore variant explored nothing"
    rec, item = explored[0]
    assert item.reason.startswith("something new to explore: ")

    before = worker.stats()["bandit"]
    d.send("events", rec.user_id, ev(f"{rec.user_id}-imp", rec.user_id, item.item_id, EventType.impression, 1,
                                     rec_id=rec.rec_id))
    d.send("events", rec.user_id, ev(f"{rec.user_id}-click", rec.user_id, item.item_id, EventType.click, 2,
                                     rec_id=rec.rec_id))
    stats = worker.wait_for(lambda s: sum(a["rewarded"] for a in s["bandit"].values())
                            > sum(a["rewarded"] for a in before.values()), 60, "the bandit to learn")
    changed = {t: a for t, a in stats["bandit"].items() if a != before.get(t)}
    assert len(changed) == 1
    (topic, arm), = changed.items()
    assert arm["name"] in item.reason
    assert (arm["shown"], arm["rewarded"]) == (before.get(topic, {}).get("shown", 0) + 1,
                                               before.get(topic, {}).get("rewarded", 0) + 1)
    metrics = worker.get_text("/metrics")
    assert 'streamrec_exploration_rate{variant="explore"}' in metrics
    assert 'streamrec_exploration_rate{variant="control"} 0.0' in metrics

    # the A/B report reads the same topics and attributes the impression and click to the variant
    os.environ.update({k: v for k, v in d.env.items() if k in ("STREAMREC_KAFKA_BOOTSTRAP_SERVERS",
                                                               "STREAMREC_TOPIC_PREFIX")})
    try:
        rows = {r.variant: r for r in ab_report.report(ab_report.tally(
            list(ab_report._parse(read_to_end(StreamSettings(), d.topic("recommendations")),
                                  Recommendation, {}, "r")),
            ab_report._parse(read_to_end(StreamSettings(), d.topic("events")), Event, {}, "e"),
        ))}
        assert rows["explore"].impressions == 1 and rows["explore"].clicks == 1
        assert rows["control"].recommendations + rows["explore"].recommendations >= len(users)
        assert ab_report.run(argparse.Namespace(json=False, timeout=60)) == 0
    finally:
        for k in ("STREAMREC_KAFKA_BOOTSTRAP_SERVERS", "STREAMREC_TOPIC_PREFIX"):
            os.environ.pop(k, None)


def test_segments_change_after_the_right_purchases(deployment):
    d, user = deployment, "segment-climber"
    reader = d.reader("segments")

    def changes():
        return [SegmentChange.model_validate_json(m.value) for m in reader.messages
                if SegmentChange.model_validate_json(m.value).user_id == user]

    d.send("events", user, ev(f"{user}-0", user, "i3", EventType.view))
    reader.until(lambda ms: len(changes()) >= 1)
    for n, price in enumerate([5.0, 5.0, 1.0, 50.0], start=1):  # one at a time: segments are per batch
        d.send("events", user, ev(f"{user}-{n}", user, f"i{n + 10}", minutes=n, price=price))
        reader.until(lambda ms, n=n: len(changes()) >= n + 1)
    assert [(c.previous, c.segment) for c in changes()] == [
        (None, "prospect"), ("prospect", "new"), ("new", "potential_loyalist"), ("potential_loyalist", "loyal"),
        ("loyal", "champions"),
    ]
    last = changes()[-1]
    assert (last.frequency, last.r, last.f) == (4, 5, 4) and 0 < last.purchase_probability < 1
    stats = d.worker.wait_for(lambda s: s["segments"].get("champions", 0) >= 1, 30, "segment counts")
    assert stats["segments"]["champions"] >= 1
    about = d.worker.get(f"/users/{user}")
    assert (about["segment"], about["rfm"]["frequency"]) == ("champions", 4)
