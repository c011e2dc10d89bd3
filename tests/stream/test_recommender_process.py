"""The recommender in its own process: a real child on the tiny ONNX encoder and embedded Qdrant,
fed over its pipe, as the worker feeds it."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from inference.schemas import Event, EventType, Item, Recommendation
from stream.recommender_process import (
    OPERATIONS, Outgoing, RecommenderFailed, RecommenderProcess, RecommenderService, RemoteError,
)
from tests.fixtures.kafka_fixtures import Deployment

T0 = datetime(2011, 5, 1, 10, 0, tzinfo=timezone.utc)
ITEMS = [Item(schema=1, item_id=f"i{n}", title=f"lantern teacup model {n}", price=1.0 + n) for n in range(24)]


def ev(n: int, user: str, item: str) -> Event:
    return Event(schema=1, event_id=f"{user}-e{n}", user_id=user, type=EventType.purchase,
                 ts=T0 + timedelta(minutes=n), item_id=item, quantity=1, price=5.0)


@pytest.fixture
def child_env(monkeypatch, tmp_path: Path, tiny_onnx_dir: Path) -> Path:
    """The child reads its settings from the environment, as the worker's does."""
    monkeypatch.setenv("STREAMREC_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("STREAMREC_ENCODER_ONNX_DIR", str(tiny_onnx_dir))
    monkeypatch.setenv("STREAMREC_ENCODER_THREADS", "1")
    monkeypatch.setenv("STREAMREC_TOPICS", "4")
    monkeypatch.setenv("STREAMREC_INTEREST_GROUPS", "2")
    return tmp_path / "state"


def started(**kw) -> RecommenderProcess:
    return RecommenderProcess(loglevel="warning", **kw).start()


def test_every_operation_the_worker_may_send_is_a_method_of_the_service():
    assert all(callable(getattr(RecommenderService, op, None)) for op in OPERATIONS)
    assert set(RecommenderService.LANES) <= OPERATIONS


def test_events_come_back_as_wire_ready_recommendations_with_their_stage_timings(child_env):
    stages: list[tuple[str, float]] = []
    recommender = started(on_stage=lambda name, seconds: stages.append((name, seconds)))
    try:
        assert recommender.ready.precision and recommender.ready.providers
        recommender.submit("items", ITEMS).result(timeout=60)
        events = [ev(0, "u1", "i3"), ev(1, "u1", "i4"), ev(0, "u2", "i7")]
        out, _segments = recommender.submit("events", events, ["0", "0", "1"]).result(timeout=60)
        recs = [o for o in out if o.topic == "recommendations"]
        assert recs and all(isinstance(o, Outgoing) for o in out)
        assert {o.trigger_event_id for o in recs} <= {e.event_id for e in events}
        first = Recommendation.model_validate_json(recs[0].value)
        assert recs[0].key == first.user_id.encode() and recs[0].slots == len(first.items) > 0
        assert recommender.items_cached == len(ITEMS)  # the snapshot that came with the answer
        assert recommender.event_encoder is None  # the test encoder's folder has no tower
        assert all(seconds >= 0 for _, seconds in stages)
        # every stage of an event batch, each timed once per batch (the bench adds them up)
        names = [name for name, _ in stages]
        assert {"encode", "load", "fold", "queries", "retrieve", "rank", "save", "serialize"} <= set(names)
        assert all(names.count(stage) == 1 for stage in ("fold", "queries", "retrieve", "rank", "serialize"))
        answer = recommender.submit("recommend", "u1", 5, None).result(timeout=60)
        assert answer["user_id"] == "u1" and len(answer["items"]) == 5
    finally:
        recommender.close()


def test_a_failed_operation_raises_its_error_in_the_worker_and_the_child_keeps_serving(child_env):
    recommender = started()
    try:
        with pytest.raises(Exception) as failed:
            recommender.submit("events", [ev(0, "u1", "i3")], ["0", "1"]).result(timeout=60)
        assert not isinstance(failed.value, RecommenderFailed)
        assert recommender.submit("status").result(timeout=60)  # still alive
        with pytest.raises(ValueError, match="unknown recommender operation"):
            recommender.submit("flush_everything")
    finally:
        recommender.close()
    assert recommender.died is None


def test_close_flushes_and_releases_the_store_for_the_next_process(child_env):
    first = started()
    first.submit("items", ITEMS).result(timeout=60)
    first.submit("events", [ev(0, "u1", "i3"), ev(1, "u1", "i5")], ["0", "0"]).result(timeout=60)
    first.close()
    assert first.process.exitcode == 0
    with pytest.raises(RecommenderFailed, match="closing"):
        first.submit("status").result(timeout=5)

    second = started()  # the store's lock was released; the state is there
    try:
        user = second.submit("describe_user", "u1").result(timeout=60)
        assert user["events"] == 2
        assert second.items_cached == len(ITEMS)
    finally:
        second.close()


def test_a_dead_child_fails_what_was_pending_and_tells_the_worker(child_env):
    died = threading.Event()
    reasons: list[str] = []
    recommender = started(on_death=lambda reason: (reasons.append(reason), died.set()))
    recommender.submit("items", ITEMS).result(timeout=60)
    os.kill(recommender.process.pid, signal.SIGKILL)
    assert died.wait(30)
    assert "exited with -9" in reasons[0] and recommender.died == reasons[0]
    with pytest.raises(RecommenderFailed):
        recommender.submit("status").result(timeout=5)
    recommender.close(timeout_s=5)


def test_a_child_that_cannot_open_its_encoder_fails_the_start_with_its_traceback(child_env, monkeypatch, tmp_path):
    monkeypatch.setenv("STREAMREC_ENCODER_ONNX_DIR", str(tmp_path / "no-such-model"))
    recommender = RecommenderProcess(loglevel="critical")
    with pytest.raises(RecommenderFailed, match="could not start(.|\n)*Traceback"):
        recommender.start()
    recommender.close(timeout_s=5)
    assert recommender.process.exitcode == 1


def test_an_exception_that_cannot_be_pickled_arrives_as_a_remote_error():
    from stream.recommender_process import _picklable

    class Local(Exception):  # not importable by name: pickling it fails
        pass

    assert isinstance(_picklable(Local("x")), RemoteError)
    assert isinstance(_picklable(ValueError("x")), ValueError)


def recommender_of(pid: int) -> int:
    """The worker's recommender process (multiprocessing's resource tracker is a child too)."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            for child in map(int, f.read().split()):
                with open(f"/proc/{child}/cmdline", "rb") as cmdline:
                    if b"spawn_main" in cmdline.read():
                        found.append(child)
    (child,) = found
    return child


def gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":  # exited, not yet reaped
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_worker_and_recommender_process_live_and_die_together(broker, tmp_path_factory, tiny_onnx_dir):
    d = Deployment(broker, tmp_path_factory.mktemp("recommender_process"), tiny_onnx_dir)
    try:
        worker = d.start_worker()
        for item in ITEMS:
            d.send("items", item.item_id, item)
        worker.wait_for(lambda s: s["processed"].get("item", 0) >= len(ITEMS), 60, "the catalog")
        child = recommender_of(worker.proc.pid)

        os.kill(child, signal.SIGKILL)  # the recommender dies: the worker stops, for a restart
        assert worker.proc.wait(60) != 0
        assert "the recommender process exited with -9" in worker.log_tail(80)

        worker = d.start_worker()  # its replacement opens the same store and answers
        recs = d.reader("recommendations")
        d.send("events", "u1", ev(0, "u1", "i3"))
        assert recs.until(lambda ms: any(Recommendation.model_validate_json(m.value).trigger_event_id == "u1-e0"
                                         for m in ms))
        child = recommender_of(worker.proc.pid)
        worker.kill()  # the worker is killed outright: its recommender goes with it
        assert gone(child, 10), "the recommender outlived its worker"
    finally:
        d.close()
