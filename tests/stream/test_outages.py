"""Outages of the broker and of the vector store: the worker survives them, says what is wrong
where it can, and loses nothing it had accepted (issue 5).

- broker: Tansu keeps nothing across its own restart (memory storage), so what is tested is that
  the worker rides out the outage, processes new events from a fresh broker on the same port and
  keeps the profile state it had (state lives in the vector store, not in Kafka);
- vector store at start: a locked embedded directory and an unreachable server are waited for
  (STREAMREC_STORE_WAIT_S), and an unreachable server is reported clearly when the wait runs out;
- vector store mid-stream: a fake Qdrant server (tests/fixtures/fault_fixtures.py) goes down, loses
  write acknowledgements and answers 503; /health must go 503 and back, and no event may be lost or
  counted twice.
"""

from __future__ import annotations

import threading
import time

import pytest

from stream.broker import LocalBroker, free_port
from stream.worker_process import WorkerFailed
from tests.fixtures.broker_proxy import UnansweringProxy
from tests.fixtures.fault_fixtures import (
    T0,
    Answers,
    FakeQdrant,
    answered_events,
    catalog,
    compare_all,
    embedded_store,
    expected_profiles,
    new_worker,
    profile_params,
    shop_events,
    start_worker,
    stored_items,
    stored_profiles,
    wait_until,
)
from tests.fixtures.kafka_fixtures import TOPICS, Deployment, TopicReader

SEED = 55
RETRYING = "vector store unavailable, retrying"
ITEMS = catalog(30, SEED)


def send(d: Deployment, topic: str, messages, key) -> None:
    for m in messages:
        d.producer.send(d.topic(topic), key=key(m).encode(), value=m.to_bytes())
    d.producer.flush()


def wait_answered(reader: TopicReader, events, timeout: float = 90.0) -> None:
    want, answers = set(answered_events(events).values()), Answers()
    reader.until(lambda ms: want <= answers.update(ms).triggers, timeout=timeout)


@pytest.mark.integration  # its own broker, not the session one: it is stopped and replaced
def test_worker_rides_out_a_broker_restart_and_keeps_its_profiles(tmp_path_factory, tiny_onnx_dir):
    root = tmp_path_factory.mktemp("broker_outage")
    port = free_port()
    first = LocalBroker(port, log_path=root / "tansu-1.log")
    d = Deployment(first, root, tiny_onnx_dir)
    second = None
    try:
        worker = start_worker(d)
        send(d, "items", ITEMS, lambda i: i.item_id)
        worker.wait_for(lambda s: s["processed"].get("item", 0) >= len(ITEMS), 120, "the catalog")
        before = shop_events(SEED, 300, ITEMS, n_users=12, duplicate_rate=0.0)
        send(d, "events", before, lambda e: e.user_id)
        wait_answered(d.reader("recommendations"), before)
        pid = worker.pid()

        first.stop()
        down_since = time.monotonic()
        seen_health = []
        while time.monotonic() - down_since < 8.0:  # longer than the 6 s session timeout
            assert worker.alive(), f"the worker died while the broker was down:\n{worker.log_tail()}"
            seen_health.append(worker.get("/health", quiet=True, timeout=5))
            time.sleep(0.5)
        assert all(h is not None and "status" in h for h in seen_health), f"/health did not answer: {seen_health}"
        assert seen_health[-1]["status"] == "degraded" and "broker unreachable" in seen_health[-1]["error"]
        print(f"/health while the broker was down: {seen_health[-1]}")

        second = LocalBroker(port, log_path=root / "tansu-2.log")  # same port, empty cluster
        second.create_topics([d.topic(t) for t in TOPICS], partitions=4)
        after = shop_events(SEED + 1, 300, ITEMS, n_users=12, duplicate_rate=0.0,
                            start=T0.replace(day=20), id_prefix="after-")
        send(d, "events", after, lambda e: e.user_id)
        wait_answered(TopicReader(second.bootstrap, d.topic("recommendations")), after, timeout=120)
        assert worker.alive() and worker.pid() == pid
        wait_until(lambda: (worker.get("/health", quiet=True, timeout=5) or {}).get("status") == "ok", 30,
                   "/health to recover with the broker")
        worker.stop()
    finally:
        d.close()
        for b in (first, second):
            if b is not None:
                b.stop()

    with embedded_store(d.root / "state") as store:
        actual, records = stored_profiles(store), stored_items(store)
    problems = compare_all(actual, expected_profiles(before + after, records, profile_params()))
    assert not problems, "\n".join(problems[:40])


@pytest.mark.integration  # its own broker, advertised behind a proxy
def test_sends_the_broker_never_answers_degrade_health_then_go_through(tmp_path_factory, tiny_onnx_dir):
    """A broker that takes the worker's sends and never acknowledges them: the worker must not
    wait for ever. After STREAMREC_SEND_TIMEOUT_S /health says so; once the broker answers, the
    batch is handled again and every event is answered."""
    root = tmp_path_factory.mktemp("unanswered_sends")
    proxy = UnansweringProxy()
    broker = LocalBroker(log_path=root / "tansu.log", advertised_port=proxy.port)
    proxy.start(broker.port)
    d = Deployment(broker, root, tiny_onnx_dir, STREAMREC_SEND_TIMEOUT_S="3")
    try:
        worker = start_worker(d)
        send(d, "items", ITEMS, lambda i: i.item_id)
        worker.wait_for(lambda s: s["processed"].get("item", 0) >= len(ITEMS), 120, "the catalog")
        proxy.silence(b"faust")  # the worker's producer; the test's own producer is kafka-python
        events = shop_events(SEED + 5, 120, ITEMS, n_users=8, duplicate_rate=0.0)
        send(d, "events", events, lambda e: e.user_id)
        health = wait_until(
            lambda: (h := worker.get("/health", quiet=True, timeout=5)) and h.get("status") == "degraded" and h,
            60, "/health to report the unacknowledged sends")
        assert "did not acknowledge" in health["error"] and "STREAMREC_SEND_TIMEOUT_S" in health["error"], health
        assert proxy.silenced_connections >= 1
        assert worker.alive()
        print(f"/health while the broker did not answer: {health}")

        proxy.answer()
        wait_answered(d.reader("recommendations"), events)
        wait_until(lambda: (worker.get("/health", quiet=True, timeout=5) or {}).get("status") == "ok", 30,
                   "/health to recover once the broker answers")
        worker.stop()
    finally:
        d.close()
        broker.stop()
        proxy.stop()


def test_unreachable_qdrant_server_at_start_is_retried_then_reported_clearly(broker, tmp_path_factory, tiny_onnx_dir):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    d = Deployment(broker, tmp_path_factory.mktemp("store_unreachable"), tiny_onnx_dir,
                   STREAMREC_QDRANT_URL=url, STREAMREC_STORE_WAIT_S="12")
    try:
        worker = new_worker(d, startup_timeout=120)
        started = time.monotonic()
        with pytest.raises(WorkerFailed):
            worker.start()
        waited = time.monotonic() - started
        assert worker.proc.returncode not in (0, None)
        log = (d.root / "worker.log").read_text(errors="replace")
        assert log.count(RETRYING) >= 2, log[-3000:]  # it backed off before giving up
        final = [line for line in log.splitlines() if line.startswith("inference.store.StoreUnavailable")]
        assert final and url in final[-1] and "did not answer" in final[-1] and "STREAMREC_QDRANT_URL" in final[-1], log[-3000:]
        assert waited >= 7.0  # back-off 0.5 + 1 + 2 + 4 s before the next 8 s would pass the 12 s wait
    finally:
        d.close()


def test_qdrant_server_that_comes_up_late_is_waited_for_and_nothing_is_lost(broker, tmp_path_factory, tiny_onnx_dir):
    """Also the regression test for a server-mode start with a STREAMREC_DATA_DIR that does not exist
    yet (Faust chdirs into it; only the embedded store used to create it)."""
    fake = FakeQdrant()  # its port is chosen, but nothing listens yet
    d = Deployment(broker, tmp_path_factory.mktemp("store_late"), tiny_onnx_dir, STREAMREC_QDRANT_URL=fake.url)
    assert not (d.root / "state").exists()
    events = shop_events(SEED + 2, 200, ITEMS, n_users=10)
    try:
        send(d, "items", ITEMS, lambda i: i.item_id)
        log = d.root / "worker.log"

        def start_fake_once_the_worker_has_retried() -> None:
            wait_until(lambda: log.exists() and log.read_text(errors="replace").count(RETRYING) >= 2, 120,
                       "the worker to retry the unreachable store")
            fake.start()

        starter = threading.Thread(target=start_fake_once_the_worker_has_retried, daemon=True)
        starter.start()
        worker = start_worker(d)
        starter.join()
        worker.wait_for(lambda s: s["processed"].get("item", 0) >= len(ITEMS), 120, "the catalog")
        send(d, "events", events, lambda e: e.user_id)
        wait_answered(d.reader("recommendations"), events)
        worker.stop()
        store = fake.store()
        actual, records = stored_profiles(store), stored_items(store)
    finally:
        d.close()
        fake.stop()
    problems = compare_all(actual, expected_profiles(events, records, profile_params()))
    assert not problems, "\n".join(problems[:40])


def test_locked_embedded_store_at_start_is_waited_for_and_nothing_is_lost(broker, tmp_path_factory, tiny_onnx_dir):
    d = Deployment(broker, tmp_path_factory.mktemp("store_locked"), tiny_onnx_dir)
    events = shop_events(SEED + 3, 200, ITEMS, n_users=10)
    try:
        # Everything is on the broker before the worker can open its store.
        send(d, "items", ITEMS, lambda i: i.item_id)
        log = d.root / "worker.log"
        holder = embedded_store(d.root / "state")
        holder.__enter__()  # this test process now holds the directory lock

        def release_once_the_worker_has_retried() -> None:
            try:
                wait_until(lambda: log.exists() and log.read_text(errors="replace").count("is in use by another process") >= 2,
                           120, "the worker to retry the locked store")
            finally:
                holder.__exit__(None, None, None)

        releaser = threading.Thread(target=release_once_the_worker_has_retried, daemon=True)
        releaser.start()
        worker = start_worker(d)
        releaser.join()
        assert log.read_text(errors="replace").count(RETRYING) >= 2
        worker.wait_for(lambda s: s["processed"].get("item", 0) >= len(ITEMS), 120, "the catalog")
        send(d, "events", events, lambda e: e.user_id)
        wait_answered(d.reader("recommendations"), events)
        worker.stop()
    finally:
        d.close()
    with embedded_store(d.root / "state") as store:
        actual, records = stored_profiles(store), stored_items(store)
    problems = compare_all(actual, expected_profiles(events, records, profile_params()))
    assert not problems, "\n".join(problems[:40])


def test_store_outages_mid_stream_degrade_health_then_recover_losing_nothing(broker, tmp_path_factory, tiny_onnx_dir):
    """Server mode against the fake: each fault is switched on while a part of the stream is in
    flight, held until /health says degraded, then switched off."""
    faults = ("down", "lose_ack", "overloaded")
    events = shop_events(SEED + 4, 800, ITEMS, n_users=16)
    parts = [events[n * len(events) // 4:(n + 1) * len(events) // 4] for n in range(4)]
    with FakeQdrant() as fake:
        d = Deployment(broker, tmp_path_factory.mktemp("store_faults"), tiny_onnx_dir,
                       STREAMREC_QDRANT_URL=fake.url, STREAMREC_QDRANT_TIMEOUT_S="2", STREAMREC_BATCH_SIZE="32")
        try:
            worker = start_worker(d)
            pid = worker.pid()
            send(d, "items", ITEMS, lambda i: i.item_id)
            worker.wait_for(lambda s: s["processed"].get("item", 0) >= len(ITEMS), 120, "the catalog")
            reader = d.reader("recommendations")
            send(d, "events", parts[0], lambda e: e.user_id)
            wait_answered(reader, parts[0])
            for fault, part in zip(faults, parts[1:]):
                fake.mode = fault
                send(d, "events", part, lambda e: e.user_id)
                degraded = wait_until(
                    lambda: (h := worker.get("/health", quiet=True, timeout=5)) and h.get("status") == "degraded" and h,
                    60, f"/health to report the {fault!r} store as degraded",
                )
                assert "vector store" in (degraded.get("error") or ""), degraded
                time.sleep(1.5)  # let the worker retry against the fault a few times
                assert worker.alive() and worker.pid() == pid
                fake.mode = "up"
                wait_until(lambda: (worker.get("/health", quiet=True, timeout=5) or {}).get("status") == "ok",
                           60, f"/health to recover after {fault!r}")
                wait_answered(reader, part)
            wait_answered(reader, events)
            assert worker.alive() and worker.pid() == pid
            assert fake.faults.keys() == set(faults), fake.faults
            worker.stop()
        finally:
            d.close()
        store = fake.store()
        actual, records = stored_profiles(store), stored_items(store)
    problems = compare_all(actual, expected_profiles(events, records, profile_params()))
    assert not problems, "\n".join(problems[:40])
