"""Replay a real dataset into the topics: the catalog first, then purchases in time order.

Turns the Online Retail log into the public message schemas, so what the worker sees is exactly
what a shop would publish.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pandas as pd
from kafka import KafkaProducer
from tqdm import tqdm

from inference.schemas import Event, EventType, Item
from stream.kafka_auth import kafka_python_config
from stream.settings import StreamSettings
from training.datasets import RetailLog


def retail_items(log: RetailLog) -> Iterator[Item]:
    for row in log.items.itertuples(index=False):
        yield Item(schema=1, item_id=row.item_id, title=row.title, price=float(row.price))


def retail_events(log: RetailLog) -> Iterator[Event]:
    """One purchase event per invoice line; the event id is stable, so a re-run replays identically."""
    seen: dict[str, int] = {}
    for row in log.purchases.itertuples(index=False):
        base = f"or-{row.invoice}-{row.item_id}"
        n = seen[base] = seen.get(base, -1) + 1
        yield Event(
            schema=1,
            event_id=base if n == 0 else f"{base}-{n}",
            user_id=row.user_id,
            type=EventType.purchase,
            ts=pd.Timestamp(row.ts).to_pydatetime(),
            item_id=row.item_id,
            quantity=int(row.quantity),
            price=float(row.price),
            session_id=str(row.invoice),
        )


def producer(bootstrap: str, settings: StreamSettings | None = None) -> KafkaProducer:
    """A producer for the given servers, secured like the worker when settings are given."""
    security = kafka_python_config(settings) if settings is not None else {}
    return KafkaProducer(bootstrap_servers=bootstrap.split(","), acks=1, linger_ms=5, retries=5, **security)


@dataclass
class Paced:
    """Sleeps so that sends keep to `rate` per second on average (0: as fast as possible)."""

    rate: float
    start: float = 0.0
    sent: int = 0

    def wait(self) -> None:
        if self.sent == 0:
            self.start = time.perf_counter()
        self.sent += 1
        if self.rate > 0:
            ahead = self.start + self.sent / self.rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)


def publish(
    kafka: KafkaProducer,
    topic: str,
    messages: list[Item] | list[Event],
    *,
    rate: float = 0.0,
    label: str = "",
    progress: bool = True,
    on_sent: Callable[[str, float], None] | None = None,
) -> float:
    """Send messages keyed by user (events) or item (catalog); returns the wall seconds it took.

    `on_sent(id, t)` is told the wall-clock time each message was handed to the producer.
    """
    pace = Paced(rate)
    start = time.perf_counter()
    for message in tqdm(messages, desc=label or topic, unit="msg", disable=not progress, mininterval=0.5):
        pace.wait()
        key = message.user_id if isinstance(message, Event) else message.item_id
        kafka.send(topic, key=key.encode(), value=message.to_bytes())
        if on_sent is not None:
            on_sent(message.event_id if isinstance(message, Event) else message.item_id, time.time())
    kafka.flush()
    return time.perf_counter() - start
