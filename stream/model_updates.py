"""Model rollout over `streamrec.model-updates`: announce a version, follow announcements, roll back.

Every worker must see every announcement, so the follower reads the topic without a consumer
group (all partitions, from the beginning) in a thread of its own; it hands over only the latest
announcement once it has caught up, so a restarted worker goes straight to the current version
instead of replaying the history. The topic is the rollout log: a rollback is one more
announcement, naming the version that served before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from pydantic import ValidationError

from inference.schemas import ModelUpdate, utcnow
from stream.topic_reader import read_to_end
from stream.kafka_auth import kafka_python_config
from stream.settings import StreamSettings

log = logging.getLogger("streamrec.model_updates")

def announce(settings: StreamSettings, update: ModelUpdate) -> None:
    """Publish an announcement and wait for the broker's ack."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all",
                             **kafka_python_config(settings))
    try:
        # Keyed by version: a compacted topic keeps the latest announcement of every version, so
        # both the current model (latest `at`) and what served before it (for rollback) survive.
        producer.send(settings.topic("model-updates"), key=update.version.encode(), value=update.to_bytes()).get(timeout=30)
    finally:
        producer.close()


def history(settings: StreamSettings, timeout_s: float = 60.0) -> list[ModelUpdate]:
    """Every valid announcement so far, oldest first."""
    out = []
    for value in read_to_end(settings, settings.topic("model-updates"), timeout_s):
        try:
            out.append(ModelUpdate.from_wire(value))
        except (ValidationError, ValueError):
            continue
    return sorted(out, key=lambda u: u.at)


def rollback_target(updates: list[ModelUpdate], default: ModelUpdate, to: str | None = None) -> ModelUpdate:
    """What a rollback announces: the named version, or the version that served before the
    current one (the shipped default when the history holds nothing earlier)."""
    if to is not None:
        named = [u for u in updates if u.version == to] + ([default] if default.version == to else [])
        if not named:
            raise ValueError(f"version {to!r} was never announced and is not the default ({default.version})")
        return named[-1]
    if not updates:
        raise ValueError("nothing was rolled out: the default model is already serving")
    current = updates[-1].version
    earlier = [u for u in updates[:-1] if u.version != current]
    return earlier[-1] if earlier else default


def as_rollback(update: ModelUpdate, reason: str) -> ModelUpdate:
    return update.model_copy(update={"at": utcnow(), "reason": reason})


class ModelUpdateFollower:
    """Follows the announcements in a daemon thread; `on_update` gets the latest after catch-up."""

    def __init__(self, settings: StreamSettings, on_update: Callable[[ModelUpdate], None], *, poll_s: float = 1.0):
        self._settings, self._on_update, self._poll_s = settings, on_update, poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-updates", daemon=True)
        self.handed: ModelUpdate | None = None

    def start(self) -> ModelUpdateFollower:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except Exception as exc:  # noqa: BLE001 - the broker may be away: try again, never die
                log.warning("following model updates failed, retrying in 5 s: %r", exc)
                self._stop.wait(5.0)

    def _follow(self) -> None:
        topic = self._settings.topic("model-updates")
        consumer = KafkaConsumer(bootstrap_servers=self._settings.kafka_bootstrap_servers, enable_auto_commit=False,
                                 **kafka_python_config(self._settings))
        try:
            partitions = consumer.partitions_for_topic(topic)
            while not partitions and not self._stop.wait(5.0):
                partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                return
            consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
            consumer.seek_to_beginning()
            latest: ModelUpdate | None = None
            while not self._stop.is_set():
                batches = consumer.poll(timeout_ms=int(self._poll_s * 1000))
                for records in batches.values():
                    for record in records:
                        try:
                            update = ModelUpdate.from_wire(record.value)
                        except (ValidationError, ValueError) as exc:
                            log.warning("ignoring a malformed model update at offset %d: %s", record.offset, exc)
                            continue
                        if latest is None or update.at >= latest.at:
                            latest = update
                if not batches and latest is not None and latest != self.handed:
                    self.handed = latest
                    self._on_update(latest)
        finally:
            consumer.close()


def default_update(onnx_dir: Path) -> ModelUpdate:
    """The shipped model as an announcement (what a rollback past every refit returns to)."""
    from inference.encoder import read_manifest

    manifest = read_manifest(onnx_dir)
    return ModelUpdate(version=str(manifest["version"]), path=str(onnx_dir), dim=int(manifest["dim"]), at=utcnow(),
                       reason="default")
