"""Prometheus metrics of a worker, served at `/metrics`.

Counters are read from the worker's own `WorkerState` at scrape time (the same numbers `/stats`
shows, counted once); latencies are Prometheus histograms. Each app gets its own registry, so
several apps in one process (tests) don't collide.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

CONTENT_TYPE = "text/plain; version=0.0.4"  # aiohttp adds the charset itself
FRESHNESS_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Stages timed in the worker's own process; each batch is (about) their sum. All other stages
# (load, encode, fold, queries, retrieve, rank, save, topics) run in the recommender process,
# within `recommender` (which also holds the pipe's round trip).
WORKER_STAGES = ("validate", "recommender", "publish")


@dataclass
class WorkerState:
    """Counters and health the HTTP views report; mutated only on the event loop."""

    processed: Counter = field(default_factory=Counter)  # "event.<type>", "item", "intent", "request"
    dead_lettered: Counter = field(default_factory=Counter)  # by reason code
    published: int = 0
    started_at: float = field(default_factory=time.time)
    healthy: bool = True
    last_error: str | None = None
    consumer_lag: dict[tuple[str, int], int] = field(default_factory=dict)
    freshness: deque = field(default_factory=lambda: deque(maxlen=10_000))  # (wall time, seconds)
    slots: Counter = field(default_factory=Counter)  # recommended slots by variant
    explored: Counter = field(default_factory=Counter)  # of which explored, by variant
    segment_changes: Counter = field(default_factory=Counter)  # by new segment
    segments: dict[str, int] = field(default_factory=dict)  # users per segment at the last count
    model_update: dict | None = None  # the last model rollout: version, status, timings
    broker_error: str | None = None  # set while no bootstrap server can be reached

    def freshness_summary(self, window_s: float = 60.0) -> dict:
        """p50/p99 freshness in milliseconds over the last `window_s` seconds (for /stats, /status)."""
        since = time.time() - window_s
        recent = [latency for at, latency in self.freshness if at >= since]
        if not recent:
            return {"n": 0, "p50_ms": None, "p99_ms": None}
        p50, p99 = np.percentile(np.asarray(recent) * 1000, [50, 99])
        return {"n": len(recent), "p50_ms": round(float(p50), 1), "p99_ms": round(float(p99), 1)}


class _StateCollector:
    def __init__(self, state: WorkerState, model_version):
        self._state, self._model_version = state, model_version

    def collect(self):
        events = CounterMetricFamily("streamrec_events_processed", "Events processed, by type.", labels=["type"])
        messages = CounterMetricFamily("streamrec_messages_processed", "Messages processed, by kind.", labels=["kind"])
        for key, n in self._state.processed.items():
            kind, _, event_type = key.partition(".")
            messages.add_metric([kind], n) if not event_type else events.add_metric([event_type], n)
        messages.add_metric(["event"], sum(n for k, n in self._state.processed.items() if k.startswith("event.")))
        dead = CounterMetricFamily("streamrec_deadletter", "Messages dead-lettered, by reason.", labels=["reason"])
        for reason, n in self._state.dead_lettered.items():
            dead.add_metric([reason], n)
        published = CounterMetricFamily("streamrec_recommendations_published", "Recommendations published.")
        published.add_metric([], self._state.published)
        model = GaugeMetricFamily("streamrec_model_info", "The encoder version being served.", labels=["version"])
        model.add_metric([self._model_version()], 1)
        healthy = GaugeMetricFamily("streamrec_healthy", "1 while the worker's dependencies answer.")
        healthy.add_metric([], 1 if self._state.healthy and self._state.broker_error is None else 0)
        lag = GaugeMetricFamily("streamrec_consumer_lag", "Messages not yet read, by partition.",
                                labels=["topic", "partition"])
        for (topic, partition), n in self._state.consumer_lag.items():
            lag.add_metric([topic, str(partition)], n)
        slots = CounterMetricFamily("streamrec_recommended_slots", "Recommended item slots, by A/B variant.",
                                    labels=["variant"])
        explored = CounterMetricFamily("streamrec_explored_slots", "Slots given to exploration, by A/B variant.",
                                       labels=["variant"])
        rate = GaugeMetricFamily("streamrec_exploration_rate", "Explored / recommended slots since start.",
                                 labels=["variant"])
        for variant, n in self._state.slots.items():
            slots.add_metric([variant], n)
            explored.add_metric([variant], self._state.explored[variant])
            rate.add_metric([variant], self._state.explored[variant] / n if n else 0.0)
        changes = CounterMetricFamily("streamrec_segment_changes", "Segment changes published, by new segment.",
                                      labels=["segment"])
        for segment, n in self._state.segment_changes.items():
            changes.add_metric([segment], n)
        users = GaugeMetricFamily("streamrec_segment_users", "Users per value segment at the last count.",
                                  labels=["segment"])
        for segment, n in self._state.segments.items():
            users.add_metric([segment], n)
        yield from (events, messages, dead, published, model, healthy, lag, slots, explored, rate, changes, users)


class WorkerMetrics:
    def __init__(self, state: WorkerState, model_version):
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_StateCollector(state, model_version))
        self.freshness = Histogram(
            "streamrec_freshness_seconds", "Event published to its recommendation published.",
            buckets=FRESHNESS_BUCKETS, registry=self.registry,
        )
        self.batch = Histogram("streamrec_batch_seconds", "Time to process one batch.", ["topic"],
                               buckets=LATENCY_BUCKETS, registry=self.registry)
        self.stage = Histogram("streamrec_stage_seconds", "Time in one stage of a batch.", ["stage"],
                               buckets=LATENCY_BUCKETS, registry=self.registry)

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage.labels(stage).observe(seconds)

    def time_stage(self, stage: str):
        """A context manager that times a stage of the worker's own process."""
        return self.stage.labels(stage).time()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
