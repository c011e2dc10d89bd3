"""A new model version reaches a running worker with no gap in answering; rollback is one command."""

from __future__ import annotations

import shutil
import threading
import time
from datetime import datetime, timedelta, timezone

from inference.encoder import TextEncoder, read_manifest
from inference.event_encoder import EventEncoder, tower_folder
from inference.schemas import Event, EventType, Item, ModelUpdate, Recommendation, utcnow
from stream import cli
from stream.model_updates import announce
from stream.settings import StreamSettings
from tests.fixtures.kafka_fixtures import Deployment
from tests.fixtures.tiny_tower import build_tiny_tower

T0 = datetime(2011, 7, 1, 9, 0, tzinfo=timezone.utc)


class Poller(threading.Thread):
    """Asks the worker for recommendations every 20 ms and records every answer."""

    def __init__(self, worker, user: str):
        super().__init__(daemon=True)
        self.worker, self.user = worker, user
        self.answers: list[tuple[float, bool, str | None, float]] = []  # (at, ok, model, seconds)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            start = time.perf_counter()
            try:
                rec = self.worker.get(f"/recommendations/{self.user}?k=5", quiet=True)
                self.answers.append((time.time(), len(rec["items"]) == 5, rec["model_version"],
                                     time.perf_counter() - start))
            except Exception:  # noqa: BLE001 - a failed request is what this test counts
                self.answers.append((time.time(), False, None, time.perf_counter() - start))
            time.sleep(0.02)


def test_a_new_version_is_served_without_a_gap_and_rolled_back_with_one_command(
    broker, tmp_path_factory, tiny_onnx_dir, tiny_onnx_dir_v2, monkeypatch
):
    d = Deployment(broker, tmp_path_factory.mktemp("rollout"), tiny_onnx_dir)
    for key in ("STREAMREC_KAFKA_BOOTSTRAP_SERVERS", "STREAMREC_TOPIC_PREFIX", "STREAMREC_ENCODER_ONNX_DIR"):
        monkeypatch.setenv(key, d.env[key])
    items = [Item(schema=1, item_id=f"i{n}", title=f"lantern candle teacup {n} colour {n % 7}") for n in range(300)]
    # The new version carries an event encoder (as `streamrec train --tower` writes one): the
    # worker swaps both, and answers users with recent items from the user tower.
    v2_dir = tmp_path_factory.mktemp("v2") / "version"
    shutil.copytree(tiny_onnx_dir_v2, v2_dir)
    tower = EventEncoder(build_tiny_tower(TextEncoder(v2_dir, device="cpu", threads=1), items, tower_folder(v2_dir)))
    v1, v2 = read_manifest(tiny_onnx_dir)["version"], read_manifest(v2_dir)["version"]
    v2_served = f"{v2}+{tower.version}"
    try:
        worker = d.start_worker()
        for item in items:
            d.send("items", item.item_id, item)
        worker.wait_for(lambda s: s["processed"].get("item", 0) >= 300, 120, "the catalog")
        d.send("events", "reader", Event(schema=1, event_id="r0", user_id="reader", type=EventType.purchase, ts=T0,
                                         item_id="i3", price=2.0))
        worker.wait_for(lambda s: s["published"] >= 1, 60, "a first recommendation")

        poller = Poller(worker, "reader")
        poller.start()
        recs = d.reader("recommendations")
        announce(StreamSettings(), ModelUpdate(version=v2, path=str(v2_dir), dim=64, at=utcnow(),
                                               reason="train"))
        sent = []
        deadline = time.monotonic() + 120
        n = 0
        while worker.stats()["model_update"] is None or worker.stats()["model_update"]["status"] != "serving":
            # events keep flowing during the swap
            assert time.monotonic() < deadline, f"no switch: {worker.stats()['model_update']}"
            n += 1
            event_id = f"during-{n}"
            d.send("events", f"shopper-{n % 5}", Event(schema=1, event_id=event_id, user_id=f"shopper-{n % 5}",
                                                        type=EventType.view, ts=T0 + timedelta(minutes=n),
                                                        item_id=f"i{n % 300}"))
            sent.append(event_id)
            time.sleep(0.05)
        time.sleep(1.0)
        poller.stop.set()
        poller.join(5)

        stats = worker.stats()
        update = stats["model_update"]
        assert (update["status"], update["version"], update["previous"]) == ("serving", v2, v1)
        assert stats["event_encoder"] == tower.version  # /stats says the user tower is served
        assert update["embedded"] == 300 and update["reused"] == 0
        failed = [a for a in poller.answers if not a[1]]
        assert not failed, f"{len(failed)} of {len(poller.answers)} requests failed during the swap"
        models = [a[2] for a in poller.answers]
        switch = models.index(v2_served)
        assert switch > 0 and set(models[:switch]) == {v1} and set(models[switch:]) == {v2_served}, "one clean switch"
        answered = recs.until(lambda ms: set(sent) <= {Recommendation.model_validate_json(m.value).trigger_event_id
                                                       for m in ms})
        assert answered
        print(f"\nrollout: {len(poller.answers)} requests during the swap, none failed, slowest "
              f"{max(a[3] for a in poller.answers) * 1000:.0f} ms; swap took {update['seconds']} s; "
              f"{len(sent)} events sent during it, all answered")

        # rollback: one command; the first model's collection is reused, nothing is re-embedded
        assert cli.main(["rollback"]) == 0
        stats = worker.wait_for(lambda s: (s["model_update"]["version"], s["model_update"]["status"]) == (v1, "serving"),
                                60, "the rollback")
        assert stats["model_update"]["embedded"] == 0 and stats["model_update"]["reused"] == 300
        assert worker.get("/recommendations/reader?k=5")["model_version"] == v1
        assert worker.stats()["event_encoder"] is None  # the first version has none

        # forward again by name, then a restart keeps serving what was rolled out last
        assert cli.main(["rollback", "--to", v2]) == 0
        worker.wait_for(lambda s: s["model_version"] == v2, 60, "the roll-forward")
        assert worker.get("/recommendations/reader?k=5")["model_version"] == v2_served
        worker.stop()
        worker = d.start_worker()
        assert worker.stats()["model_version"] == v2 and worker.stats()["event_encoder"] == tower.version
        assert worker.get("/recommendations/reader?k=5")["model_version"] == v2_served
    finally:
        d.close()
