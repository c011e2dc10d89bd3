"""Read a topic from its beginning until caught up: the A/B report, rollback history and the
training dump all need "everything logged so far" without joining a consumer group."""

from __future__ import annotations

import time
from collections.abc import Iterator

from kafka import KafkaConsumer, TopicPartition

from stream.kafka_auth import kafka_python_config
from stream.settings import StreamSettings


def read_to_end(settings: StreamSettings, topic: str, timeout_s: float = 60.0, idle_s: float = 1.0) -> Iterator[bytes]:
    """Every value of `topic` from the beginning until it is caught up: past the end offsets seen
    at the start and no new record for `idle_s`. (The idle rule matters with the dev broker, whose
    ListOffsets answers undercount; on Kafka the end offsets alone would do.)"""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False,
                             **kafka_python_config(settings))
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            return
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout_s
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} took over {timeout_s}s")
            batches = consumer.poll(timeout_ms=int(idle_s * 1000))
            for records in batches.values():
                for record in records:
                    yield record.value
            if not batches and all(consumer.position(tp) >= ends[tp] for tp in partitions):
                return
    finally:
        consumer.close()
