"""`streamrec ab-report`: per-variant online metrics of an A/B test, read from the topics.

Reads `recommendations` (which variant served each `rec_id`) and `events` (impressions, clicks
and purchases carrying a `rec_id`) from the beginning up to their current end, so the report is
a consistent snapshot of everything logged so far; malformed records are skipped and counted
(the worker has already dead-lettered them).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator

from kafka import KafkaConsumer, TopicPartition
from pydantic import ValidationError

from inference.experiments import VariantReport, report, tally
from inference.schemas import Event, Recommendation
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


def _parse(values: Iterator[bytes], model, skipped: dict[str, int], name: str) -> Iterator:
    for value in values:
        try:
            yield model.from_wire(value)
        except (ValidationError, ValueError):
            skipped[name] = skipped.get(name, 0) + 1


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def format_table(rows: list[VariantReport]) -> str:
    head = (f"{'variant':<14}{'recs':>8}{'users':>7}{'impr':>8}{'clicks':>8}  {'CTR [95% CI]':<24}"
            f"{'buys':>6}  {'conversion [95% CI]':<24}{'revenue':>10}  revenue/impression [95% CI]")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.variant:<14}{r.recommendations:>8}{r.users:>7}{r.impressions:>8}{r.clicks:>8}  "
            f"{_pct(r.ctr) + ' [' + _pct(r.ctr_ci[0]) + ', ' + _pct(r.ctr_ci[1]) + ']':<24}{r.purchases:>6}  "
            f"{_pct(r.conversion) + ' [' + _pct(r.conversion_ci[0]) + ', ' + _pct(r.conversion_ci[1]) + ']':<24}"
            f"{r.revenue:>10.2f}  {r.revenue_per_impression:.3f} "
            f"[{r.revenue_per_impression_ci[0]:.3f}, {r.revenue_per_impression_ci[1]:.3f}]"
        )
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--timeout", type=float, default=120.0, help="give up reading a topic after this many seconds")


def run(args: argparse.Namespace) -> int:
    settings = StreamSettings()
    skipped: dict[str, int] = {}
    recs = _parse(read_to_end(settings, settings.topic("recommendations"), args.timeout), Recommendation, skipped,
                  "recommendations")
    recommendations = list(recs)
    events = _parse(read_to_end(settings, settings.topic("events"), args.timeout), Event, skipped, "events")
    rows = report(tally(recommendations, events))
    if args.json:
        print(json.dumps({"variants": [r.__dict__ for r in rows], "skipped": skipped}, indent=2, default=list))
    else:
        print(format_table(rows) if rows else "no recommendations with feedback yet")
        if skipped:
            print(f"skipped malformed records: {skipped}")
    return 0
