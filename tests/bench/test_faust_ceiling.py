"""The Faust ceiling probe (bench/faust_ceiling.py) against the real broker: reading the worker's
way (batches, validation) reads the whole topic (the probe reports only once it has counted every
message), and a run that cannot finish reports NaN, not a rate; neither leaves its Faust workdir
behind (the probe ends with os._exit, which skips cleanup). (A Faust worker's group join takes
~20 s here, so one way only.)"""

from __future__ import annotations

import math
import tempfile
import uuid
from datetime import datetime, timezone

import pytest
from kafka import KafkaProducer

from bench.pipeline import faust_rate
from inference.schemas import Event, EventType

pytestmark = pytest.mark.integration

N = 300


@pytest.fixture(scope="module")
def topic(broker) -> str:
    name = f"ceiling-{uuid.uuid4().hex[:8]}"
    broker.create_topics([name], partitions=2)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
    for n in range(N):
        event = Event(schema=1, event_id=f"e{n}", user_id=f"u{n % 7}", type=EventType.purchase, item_id="i1",
                      ts=datetime.now(timezone.utc))
        producer.send(name, key=event.user_id.encode(), value=event.to_bytes())
    producer.flush()
    producer.close()
    return name


@pytest.fixture()
def temp_root(tmp_path, monkeypatch):
    """Temporary directories made by the probe or its caller land here, so that leftovers show."""
    root = tmp_path / "temp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    monkeypatch.setenv("TMPDIR", str(root))
    return root


def test_the_workers_way_reads_the_whole_topic(broker, topic, temp_root):
    rate = faust_rate(broker.bootstrap, topic, N, "decode", timeout_s=120)
    assert math.isfinite(rate) and rate > 0
    assert list(temp_root.iterdir()) == []


def test_a_run_that_cannot_finish_is_nan(broker, topic, temp_root):
    assert math.isnan(faust_rate(broker.bootstrap, topic, N + 1, "count", timeout_s=10))
    assert list(temp_root.iterdir()) == []
