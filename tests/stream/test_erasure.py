"""Privacy on a real worker: erasure leaves nothing behind; pseudonymised ids never reach disk."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from inference.profile_store import USERS, pseudonymiser
from inference.schemas import Erasure, ErasureConfirmed, Event, EventType, Item, Recommendation
from inference.store import open_store
from tests.fixtures.kafka_fixtures import Deployment

TS = datetime(2011, 6, 1, tzinfo=timezone.utc)
KEY = "pseudonym-key-for-tests"


def stored_bytes(root) -> bytes:
    return b"".join(p.read_bytes() for p in (root / "state").rglob("*") if p.is_file())


def test_erasure_removes_the_profile_everywhere_and_ids_are_pseudonymised(broker, tmp_path_factory, tiny_onnx_dir):
    d = Deployment(broker, tmp_path_factory.mktemp("privacy"), tiny_onnx_dir, STREAMREC_PSEUDONYMISATION_KEY=KEY)
    try:
        worker = d.start_worker()
        for n in range(10):
            d.send("items", f"i{n}", Item(schema=1, item_id=f"i{n}", title=f"item {n}"))
        worker.wait_for(lambda s: s["processed"].get("item", 0) >= 10, 60, "the catalog")
        recs = d.reader("recommendations")
        for user in ("customer-forget-me", "customer-keep-me"):
            d.send("events", user, Event(schema=1, event_id=f"{user}-1", user_id=user, type=EventType.purchase,
                                         ts=TS, item_id="i1", price=3.0))
        recs.until(lambda ms: {"customer-forget-me-1", "customer-keep-me-1"}
                   <= {Recommendation.model_validate_json(m.value).trigger_event_id for m in ms})
        before = worker.get("/recommendations/customer-forget-me?k=10")
        assert "i1" not in {i["item_id"] for i in before["items"]}  # the profile exists: the purchase is excluded

        confirmed = d.reader("erasures-confirmed")
        d.send("erasures", "customer-forget-me", Erasure(schema=1, erasure_id="er-1", user_id="customer-forget-me"))
        message = confirmed.until(lambda ms: len(ms) >= 1)[0]
        confirmation = ErasureConfirmed.model_validate_json(message.value)
        assert (confirmation.erasure_id, confirmation.user_id) == ("er-1", "customer-forget-me")
        assert "profile" in confirmation.erased
        after = worker.get("/recommendations/customer-forget-me?k=10")
        assert "i1" in {i["item_id"] for i in after["items"]}, "after erasure the user is a stranger again"
        worker.stop()

        disk = stored_bytes(d.root)
        assert b"customer-keep-me" not in disk and b"customer-forget-me" not in disk, "raw user ids reached disk"
        hashed = pseudonymiser(KEY.encode())
        with open_store(url=None, api_key=None, data_dir=d.root / "state") as store:
            assert store.retrieve(USERS, [hashed("customer-forget-me")]) == []
            assert len(store.retrieve(USERS, [hashed("customer-keep-me")])) == 1
            for collection in ("users", "items", "state"):  # nor anywhere else, hashed or not
                for point in store.scroll(collection):
                    assert hashed("customer-forget-me") not in json.dumps(point.payload) + point.id
    finally:
        d.close()
