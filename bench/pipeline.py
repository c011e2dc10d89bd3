"""Events/s and freshness through one real worker, beside the raw consume rate of the same topic.

Everything is real and local: a Tansu broker on 127.0.0.1 (stream.broker.LocalBroker), one
`streamrec worker` child process (stream.worker_process.WorkerProcess) with the embedded store
and the shipped MiniLM encoder (ONNX), and an Online Retail slice (training.datasets +
stream.replay.retail_items/retail_events): its catalog first, then its purchases in time order
(cycled with new event ids when a phase needs more events than the slice has).

Measured, each phase repeated (default 3 times), median (min–max) over repetitions:

- freshness at fixed rates (default 100, 1,000 and 5,000 events/s): the event's scheduled send
  time (the bench's `Shop` sends what is due every 5 ms) -> its recommendation read by the
  Shop's consumer, matched by trigger_event_id (one recommendation per user per batch answers
  the user's last event in it, so only those events are matched); p50/p99; whether the producer
  kept the rate;
- saturation: a backlog sent as fast as the producer can; the worker's rate while it drains
  what is already queued (producer finished), and freshness under that backlog;
- the ceiling: a bare aiokafka consumer reading the same topic from the start (and the same with
  the worker's input validation, stream.intake.decode, per message), and message by message
  (`async for`); between it and the worker, Faust's own ceiling: an agent that does no work,
  message by message, in the worker's batches, and validating each message
  (bench/faust_ceiling.py);
- where the worker's time goes at saturation (its /metrics stage histograms, CPU from /proc);
- the worker's RSS (resident and peak) after start, after the catalog and at the end.

`--fresh repetition` (the default) starts a new broker and worker (catalog and warm-up included)
for every repetition; `--fresh once` keeps one of each for the whole run. Tansu's memory storage
scans a partition's record batches on every fetch, so its CPU per fetch grows with what the
topics hold, and on this 2-core machine the broker competes with the worker for the same cores:
the same 1,000 events/s phase took the broker 64% of a core after the run's earlier phases and
52% on a fresh broker, and its freshness p99 was 178 ms against 96 ms (perf-20261206b).

Usage: python -m bench.pipeline [--rates 100,1000,5000] [--duration 10] [--saturation-events 20000]
                                [--customers 1500] [--repeats 3] [--fresh once|repetition]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.faust_ceiling import WORKS as FAUST_WORKS
from bench.report import (MIN_REPEATS, footer, header, median, mib, note, percentiles, process_tree, ratio,
                          rss_bytes, rss_split, spread, table)
from inference.recommender import encoder_dir
from inference.schemas import Event
from inference.settings import InferenceSettings
from stream.broker import LocalBroker, free_port
from stream.metrics import WORKER_STAGES
from stream.replay import producer, publish, retail_events, retail_items
from stream.settings import TOPICS
from stream.worker_process import WorkerProcess
from training.datasets import default_online_retail_path, load_online_retail, sample_customers

PREFIX = "bench."
SUSTAIN_SHARE = 0.95  # a producer below 95% of the asked rate did not sustain it


@dataclass
class Wire:
    """Events serialised once, before any timing, cycled with fresh ids when the slice runs out."""

    events: list[Event]
    cursor: int = 0
    passes: int = 0

    @property
    def sent(self) -> int:
        return self.passes * len(self.events) + self.cursor

    def take(self, n: int) -> list[tuple[str, bytes, bytes]]:
        out = []
        for _ in range(n):
            event = self.events[self.cursor]
            if self.passes:
                event = event.model_copy(update={"event_id": f"{event.event_id}~{self.passes}"})
            out.append((event.event_id, event.user_id.encode(), event.to_bytes()))
            self.cursor += 1
            if self.cursor == len(self.events):
                self.cursor, self.passes = 0, self.passes + 1
        return out


@dataclass
class Phase:
    rate: float  # asked; 0 = as fast as possible
    n: int
    send_rate: float = 0.0
    e2e_rate: float = 0.0  # events processed / (first send -> last processed)
    drain_rate: float = float("nan")  # processed / s after the producer finished, from the backlog
    latencies_ms: list[float] = field(default_factory=list)
    answer_ms: list[float] = field(default_factory=list)  # send -> the worker handed the answer to its producer
    delivery_ms: list[float] = field(default_factory=list)  # that -> read by the bench
    matched: int = 0
    timed_out: bool = False
    busy_s: float = 0.0  # first send -> last event processed


class StatsPoller:
    """Samples the worker's processed-event count in a thread (10 Hz) while a phase runs."""

    def __init__(self, worker: WorkerProcess):
        self.worker, self.samples = worker, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StatsPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            stats = self.worker.get("/stats", quiet=True, timeout=5)
            if stats is not None:
                self.samples.append((time.time(), processed_events(stats)))
            self._stop.wait(0.1)

    def first_time_at_least(self, count: int) -> float | None:
        return next((t for t, c in self.samples if c >= count), None)

    def count_at(self, t: float) -> int:
        before = [c for ts, c in self.samples if ts <= t]
        return before[-1] if before else 0


def processed_events(stats: dict) -> int:
    return sum(v for k, v in stats["processed"].items() if k.startswith("event."))


class Shop:
    """The shop's side of the bench on one event loop in a thread of its own: an aiokafka producer
    that sends, every `tick_s`, the events whose time has come, and an aiokafka consumer that
    notes when each recommendation arrives.

    On 2 cores the bench's CPU is the worker's. kafka-python with a sleep and a send per event
    took 20% of a core at 1,000 events/s where this producer takes 9%, and a threaded kafka-python
    reader 9% where this one takes 4% (same broker, acks=1, fetch wait 10 ms;
    reports/perf-20261207). An event's send time is its scheduled time (first send + i / rate),
    never later than the producer took it, so freshness also counts any lag of the generator
    itself; sent flat out (rate 0), it is the time the producer took it."""

    def __init__(self, bootstrap: str, recommendations_topic: str, tick_s: float = 0.005):
        self.tick_s = tick_s
        self.received: dict[str, float] = {}  # trigger_event_id -> wall time it was read
        # trigger_event_id -> the record's timestamp: when the worker handed it to its producer
        self.published: dict[str, float] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="shop", daemon=True)
        self._thread.start()
        self._producer, self._consumer = self._call(self._start(bootstrap, recommendations_topic))
        self._reading = asyncio.run_coroutine_threadsafe(self._read(), self._loop)

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @staticmethod
    async def _start(bootstrap: str, topic: str):
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        # A 5 ms linger on top of the 5 ms tick: without it (linger 0) freshness at 100/s fell by ~6 ms,
        # but the broker stored twice the record batches, and Tansu's fetches scan them: at 1,000/s
        # its CPU rose 29% -> 36% of a core and p99 to 66-79 ms (reports/perf-20261207).
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5)
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=10)
        await producer.start()
        await consumer.start()
        return producer, consumer

    async def _read(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            now = time.time()
            for messages in batches.values():
                for message in messages:
                    trigger = json.loads(message.value).get("trigger_event_id")
                    if trigger:
                        self.received.setdefault(trigger, now)
                        self.published.setdefault(trigger, message.timestamp / 1000)

    def send(self, topic: str, messages: list[tuple[str, bytes, bytes]], rate: float) -> tuple[dict[str, float], float]:
        """Send pre-serialised events at `rate` per second (0: flat out); returns send times and rate."""
        return self._call(self._send(topic, messages, rate))

    async def _send(self, topic: str, messages: list[tuple[str, bytes, bytes]], rate: float):
        sent: dict[str, float] = {}
        start_wall, start = time.time(), time.perf_counter()
        i, n = 0, len(messages)
        while i < n:
            due = n if rate <= 0 else min(n, int((time.perf_counter() - start) * rate) + 1)
            for j in range(i, due):
                event_id, key, value = messages[j]
                await self._producer.send(topic, key=key, value=value)
                sent[event_id] = start_wall + j / rate if rate > 0 else time.time()
            i = due
            if i < n:
                await asyncio.sleep(max(start + i / rate - time.perf_counter(), self.tick_s))
        await self._producer.flush()
        elapsed = time.perf_counter() - start
        return sent, n / elapsed if elapsed > 0 else float("inf")

    def close(self) -> None:
        self._reading.cancel()

        async def stop():
            await self._producer.stop()
            await self._consumer.stop()

        try:
            self._call(stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()


def run_phase(worker: WorkerProcess, shop: Shop, wire: Wire, rate: float, n: int,
              timeout_floor: float = 120.0) -> Phase:
    phase = Phase(rate, n)
    messages = wire.take(n)
    base = processed_events(worker.stats())
    with StatsPoller(worker) as poller:
        t0 = time.time()
        sent, phase.send_rate = shop.send(PREFIX + "events", messages, rate)
        t_sent = time.time()
        deadline = time.time() + max(timeout_floor, n / 100)
        while time.time() < deadline:
            if poller.first_time_at_least(base + n) is not None:
                break
            time.sleep(0.05)
        else:
            phase.timed_out = True
    t_done = poller.first_time_at_least(base + n) or time.time()
    phase.busy_s = max(t_done - t0, 1e-9)
    phase.e2e_rate = n / phase.busy_s
    left_at_send_end = base + n - poller.count_at(t_sent)
    if left_at_send_end >= 0.2 * n and t_done > t_sent:
        phase.drain_rate = left_at_send_end / (t_done - t_sent)
    # The last recommendations may still be on their way to the reader. The last event sent is
    # its user's last in the worker's last batch, so its answer is the last to wait for.
    settle = time.time() + 10
    while time.time() < settle and messages[-1][0] not in shop.received:
        time.sleep(0.05)
    time.sleep(0.1)
    received, published = shop.received, shop.published
    lat = [(received[i] - t) * 1000 for i, t in sent.items() if i in received]
    phase.latencies_ms, phase.matched = lat, len(lat)
    phase.answer_ms = [(published[i] - t) * 1000 for i, t in sent.items() if i in published]
    phase.delivery_ms = [(received[i] - published[i]) * 1000 for i in sent if i in published]
    return phase


CONSUMER_READS = ("batches", "batches+decode", "each")


async def _consume(bootstrap: str, topic: str, expected: int, read: str) -> float:
    """Events/s of a bare aiokafka consumer reading `topic` from the start: `batches` takes up to
    10,000 records per getmany (the tightest ceiling), `batches+decode` also validates each
    message as the worker does, `each` is aiokafka's own per-message `async for`."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from stream.intake import Limits, decode

    if read not in CONSUMER_READS:
        raise ValueError(f"read must be one of {CONSUMER_READS}, not {read!r}")
    limits = Limits()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest", fetch_max_wait_ms=10)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = consumer.partitions_for_topic(topic) or {0}
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        await consumer.seek_to_beginning()
        count, start, last_progress = 0, time.perf_counter(), time.perf_counter()
        if read == "each":
            async def each() -> None:
                nonlocal count
                async for _ in consumer:
                    count += 1
                    if count >= expected:
                        return

            task = asyncio.ensure_future(each())
            seen = -1
            while not task.done():  # give up after 20 s without a record, as the batch reads do
                await asyncio.wait([task], timeout=20)
                if count == seen:
                    task.cancel()
                seen = count
            return count / (time.perf_counter() - start)
        while count < expected and time.perf_counter() - last_progress < 20:
            batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for messages in batches.values():
                count += len(messages)
                last_progress = time.perf_counter()
                if read == "batches+decode":
                    for m in messages:
                        decode(m.value, Event, limits)
        return count / (time.perf_counter() - start)
    finally:
        await consumer.stop()


def consume_rate(bootstrap: str, topic: str, expected: int, read: str) -> float:
    return asyncio.run(_consume(bootstrap, topic, expected, read))


def faust_rate(bootstrap: str, topic: str, expected: int, work: str, timeout_s: float = 180.0) -> float:
    """Events/s of a Faust agent that only counts (or validates) the topic (bench/faust_ceiling.py),
    in a child process; NaN if it did not finish. The child's Faust workdir is ours, so that it
    is removed even when the child is killed at the timeout."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="streamrec-ceiling-") as workdir:
        try:
            done = subprocess.run([sys.executable, "-m", "bench.faust_ceiling", "--bootstrap", bootstrap, "--topic",
                                   topic, "--expected", str(expected), "--work", work, "--workdir", workdir],
                                  capture_output=True, text=True, timeout=timeout_s,
                                  cwd=Path(__file__).resolve().parent.parent)
        except subprocess.TimeoutExpired:
            return float("nan")
    # Faust's worker writes terminal control codes before the line.
    found = re.findall(r'\{"events".*\}', done.stdout)
    if done.returncode != 0 or not found:
        print(f"  faust ceiling ({work}) failed: {done.stderr[-500:]}", file=sys.stderr)
        return float("nan")
    return float(json.loads(found[-1])["rate"])


_METRIC = re.compile(r'^(streamrec_(?:stage|batch)_seconds_(?:sum|count))\{(\w+)="([^"]+)"\} ([0-9.eE+-]+)$')


def spent_since(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {who: after[who] - before.get(who, 0.0) for who in after}


def stage_totals(worker: WorkerProcess) -> dict[tuple[str, str], float]:
    out = {}
    for line in worker.get_text("/metrics").splitlines():
        m = _METRIC.match(line)
        if m:
            out[(m.group(1), m.group(3))] = float(m.group(4))
    return out


def stage_rows(phase: str, before: dict, after: dict, n: int, wall: float, cpu: dict[str, float],
               recommendations: int = 0) -> list[list[object]]:
    """Per stage of the worker: calls, ms per call, µs per message, share of the phase's wall time.
    The worker's own stages (WORKER_STAGES) add up to its batches; the recommender process's
    stages add up to the `recommender` stage, less the pipe's round trip."""
    def delta(metric: str, label: str) -> tuple[float, float]:
        count = after.get((metric + "_count", label), 0.0) - before.get((metric + "_count", label), 0.0)
        return count, after.get((metric + "_sum", label), 0.0) - before.get((metric + "_sum", label), 0.0)

    def row(what: str, count: float, seconds: float) -> list[object]:
        per_call = f"{seconds / count * 1000:.2f}" if count else "–"
        return [phase, what, f"{int(count):,}" if count else "–", per_call, f"{seconds / n * 1e6:,.0f}",
                f"{seconds / wall:.0%}"]

    labels = {(metric, label) for metric, label in after if metric.endswith("_sum")}
    rows = []
    batches = batch_s = 0.0
    for metric, label in sorted(labels):
        if "batch" in metric:
            count, seconds = delta(metric[:-4], label)
            if count > 0:
                batches, batch_s = batches + count, batch_s + seconds
                rows.append(row(f"batch: {label}", count, seconds))
    own_s = child_s = 0.0
    child_rows = []
    for metric, label in sorted(labels):
        if "stage" not in metric:
            continue
        count, seconds = delta(metric[:-4], label)
        if count <= 0:
            continue
        if label in WORKER_STAGES:
            own_s += seconds
            rows.append(row(f"worker: {label}", count, seconds))
        else:
            child_s += seconds
            child_rows.append(row(f"  recommender process: {label}", count, seconds))
    if batches:
        rows.append(row("worker: rest of the batch (Faust, acks, scheduling)", 0, batch_s - own_s))
    rows += child_rows
    calls, call_s = delta("streamrec_stage_seconds", "recommender")
    if calls:
        rows.append(row("  recommender call minus its stages (pipe, pickles, the lane's queue)", 0, call_s - child_s))
    if batches:
        rows.append([phase, "messages per batch", "–", "–", f"{n / batches:,.1f}", "–"])
        if recommendations:
            rows.append([phase, "recommendations (distinct users) per batch", "–", "–",
                         f"{recommendations / batches:,.1f}", "–"])
    for who, seconds in cpu.items():
        rows.append([phase, f"CPU (user+sys): {who}", "–", "–", f"{seconds / n * 1e6:,.0f}",
                     f"{seconds / wall:.0%} of one core"])
    return rows


def _own_cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (all its threads, none of its children); 0 once gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and its descendants (the worker runs its recommender in a child)."""
    return sum(map(_own_cpu_seconds, process_tree(pid)))


def cpu_by_process(worker_pid: int, broker_pid: int | None) -> dict[str, float]:
    """CPU seconds so far of each process competing for this machine's cores in the bench."""
    worker = _own_cpu_seconds(worker_pid)
    return {
        "worker process (Kafka, validation, publishing)": worker,
        "recommender process": cpu_seconds(worker_pid) - worker,
        "broker": _own_cpu_seconds(broker_pid) if broker_pid else 0.0,
        "this bench (producer, recommendation reader)": _own_cpu_seconds(os.getpid()),
    }


def rss_text(pid: int) -> str:
    """Resident memory of a process and its descendants (peak: the sum of each one's)."""
    return f"{rss_split(pid, tree=True)}, peak {mib(rss_bytes(pid, tree=True)[1])}"


class Stack:
    """A local broker with every topic, one worker and the shop's side (`Shop`); on entry the
    catalog is published and embedded and the warm-up events are handled."""

    def __init__(self, root: Path, onnx_dir: Path, overrides: dict[str, str], items: list, wire: Wire,
                 warmup_events: int, *, catalog_rows: bool):
        self.root, self.onnx_dir, self.overrides = root, onnx_dir, overrides
        self.items, self.wire, self.warmup_events = items, wire, warmup_events
        self.want_catalog_rows = catalog_rows
        self.catalog_rows: list[list[object]] = []
        self._stack = contextlib.ExitStack()
        self.shop: Shop | None = None

    def __enter__(self) -> Stack:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def _start(self) -> None:
        self.root.mkdir(parents=True)
        self.broker = self._stack.enter_context(LocalBroker(log_path=self.root / "broker.log"))
        # Every topic the worker reads or writes, made before it starts: runs in which the local
        # broker created `segments` on the worker's first produce stalled (perf-20261130).
        self.broker.create_topics([PREFIX + t for t in TOPICS], partitions=4)
        env = {
            "STREAMREC_KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap,
            "STREAMREC_TOPIC_PREFIX": PREFIX,
            "STREAMREC_APP_ID": "streamrec-bench",
            "STREAMREC_DATA_DIR": str(self.root / "state"),
            "STREAMREC_ENCODER_ONNX_DIR": str(self.onnx_dir),
            "STREAMREC_SESSION_TIMEOUT_S": "6",
            **self.overrides,
        }
        t = time.perf_counter()
        self.worker = self._stack.enter_context(
            WorkerProcess(env, log_path=self.root / "worker.log", http_port=free_port()))
        self.pid = self.worker.proc.pid
        if self.want_catalog_rows:
            note(f"worker ready in {time.perf_counter() - t:.1f} s; RSS {rss_text(self.pid)}")
        self.shop = Shop(self.broker.bootstrap, PREFIX + "recommendations")
        self._stack.callback(self.close_clients)
        self.first_sent = self.wire.sent
        metrics0, cpu0 = stage_totals(self.worker), cpu_by_process(self.pid, self.broker.pid)
        t = time.perf_counter()
        catalog = producer(self.broker.bootstrap)
        try:
            publish(catalog, PREFIX + "items", self.items, progress=False)
        finally:
            catalog.close()
        self.worker.wait_for(lambda s: s["processed"].get("item", 0) >= len(self.items), 900, "the catalog")
        catalog_s = time.perf_counter() - t
        if self.want_catalog_rows:
            self.catalog_rows = stage_rows("catalog", metrics0, stage_totals(self.worker), len(self.items), catalog_s,
                                           spent_since(cpu0, cpu_by_process(self.pid, self.broker.pid)))
            note(f"catalog: {len(self.items):,} items embedded and stored in {catalog_s:.1f} s "
                 f"({len(self.items) / catalog_s:,.0f} items/s); worker RSS {rss_text(self.pid)}")
        run_phase(self.worker, self.shop, self.wire, 0, self.warmup_events)  # warm caches

    def close_clients(self) -> None:
        if self.shop is not None:
            self.shop.close()
            self.shop = None

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", default="100,1000,5000", help="fixed event rates (events/s)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of sending per fixed-rate repetition")
    p.add_argument("--saturation-events", type=int, default=20_000, help="backlog per saturation repetition")
    p.add_argument("--warmup-events", type=int, default=3_000)
    p.add_argument("--customers", type=int, default=1500, help="Online Retail customers in the slice")
    p.add_argument("--repeats", type=int, default=MIN_REPEATS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", choices=("once", "repetition"), default="repetition",
                   help="start the broker and the worker once for all phases, or afresh for every repetition")
    p.add_argument("--env", action="append", default=[], metavar="STREAMREC_X=VALUE",
                   help="a worker setting to override (repeatable), e.g. STREAMREC_BATCH_WINDOW_S=0.05")
    args = p.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r]  # --rates "" measures saturation only
    overrides = dict(item.split("=", 1) for item in args.env)
    if any(not k.startswith("STREAMREC_") for k in overrides):
        p.error("--env takes STREAMREC_* settings only")

    started = header("Pipeline: one worker (Tansu broker, embedded store, MiniLM ONNX) vs raw consume")
    onnx_dir = encoder_dir(InferenceSettings())
    log = sample_customers(load_online_retail(default_online_retail_path()), args.customers, seed=args.seed)
    items, events = list(retail_items(log)), list(retail_events(log))
    note(f"Online Retail slice: {args.customers:,} customers, {len(items):,} items, {len(events):,} purchase events "
         f"(cycled with new event ids when more are needed)")
    wire = Wire(events)
    note(f"broker Tansu (4 partitions per topic); worker settings: defaults "
         "(batch 500, window 2 ms, fetch wait 10 ms, 100 candidates, k 10) + session timeout 6 s"
         f"{''.join(f' + {k}={v}' for k, v in overrides.items())}; "
         "producer: aiokafka, acks=1, linger 5 ms, the events due sent every 5 ms (Shop; the catalog: "
         "stream.replay.producer)")
    note({"once": "one broker and one worker for every phase: the topics keep growing from phase to phase",
          "repetition": "a fresh broker and worker (catalog and warm-up included) for every repetition: Tansu's "
                        "fetch cost grows with the record batches a partition holds, which a Kafka cluster's "
                        "does not"}[args.fresh])

    phases: dict[str, list[Phase]] = {}
    breakdown: list[list[object]] = []
    plan = [(f"{rate:,.0f}/s", rate, int(rate * args.duration), rep) for rate in rates for rep in range(args.repeats)]
    plan += [("saturation", 0.0, args.saturation_events, rep) for rep in range(args.repeats)]
    groups = [plan] if args.fresh == "once" else [[step] for step in plan]
    ceiling: list[float] = []
    ceiling_v: list[float] = []
    ceiling_each: list[float] = []
    ceiling_faust: dict[str, list[float]] = {work: [] for work in FAUST_WORKS}
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        for g, group in enumerate(groups):
            last = g == len(groups) - 1
            with Stack(Path(tmp) / f"stack-{g}", onnx_dir, overrides, items, wire, args.warmup_events,
                       catalog_rows=g == 0) as stack:
                breakdown += stack.catalog_rows
                for name, rate, n, rep in group:
                    metrics0, cpu0 = stage_totals(stack.worker), cpu_by_process(stack.pid, stack.broker.pid)
                    published0 = stack.worker.stats()["published"]
                    phase = run_phase(stack.worker, stack.shop, wire, rate, n)
                    phases.setdefault(name, []).append(phase)
                    # one repetition per fixed rate, every saturation one: where a batch's time goes
                    if rep == 0 or rate == 0:
                        label = f"saturation {rep + 1}" if rate == 0 else name
                        # CPU is counted to after the settle wait (until the last answer arrived),
                        # while the share of wall uses busy_s: idle processes still cost a little
                        breakdown += stage_rows(label, metrics0, stage_totals(stack.worker), phase.n,
                                                phase.busy_s, spent_since(cpu0, cpu_by_process(stack.pid, stack.broker.pid)),
                                                stack.worker.stats()["published"] - published0)
                    print(f"  … {name} repetition {rep + 1} done", file=sys.stderr, flush=True)
                if last:
                    final_rss = rss_text(stack.pid)
                    broker_rss = rss_text(stack.broker.pid) if stack.broker.pid else "n/a"
                    stack.close_clients()
                    total = wire.sent - stack.first_sent
                    ceiling = [consume_rate(stack.broker.bootstrap, PREFIX + "events", total, "batches")
                               for _ in range(args.repeats)]
                    ceiling_v = [consume_rate(stack.broker.bootstrap, PREFIX + "events", total, "batches+decode")
                                 for _ in range(args.repeats)]
                    ceiling_each = [consume_rate(stack.broker.bootstrap, PREFIX + "events", total, "each")
                                    for _ in range(args.repeats)]
                    ceiling_faust = {work: [faust_rate(stack.broker.bootstrap, PREFIX + "events", total, work)
                                            for _ in range(args.repeats)] for work in FAUST_WORKS}

    rows = []
    ceil = median(ceiling)
    rows.append(["ceiling: bare aiokafka consumer, same topic", "–", "–", spread(ceiling, 0), "1.00×", "–", "–", "–"])
    for label, rates in [("ceiling + intake.decode(Event) per message", ceiling_v),
                         ("bare aiokafka consumer, message by message (async for)", ceiling_each),
                         ("Faust agent that only counts, message by message", ceiling_faust["each"]),
                         ("Faust agent that only counts (worker's batches)", ceiling_faust["count"]),
                         ("Faust agent + intake.decode(Event) per message", ceiling_faust["decode"])]:
        rows.append([label, "–", "–", spread(rates, 0), ratio(median(rates), ceil), "–", "–", "–"])
    for name, reps in phases.items():
        p50s = [percentiles(r.latencies_ms, (50,))[0] for r in reps]
        p99s = [percentiles(r.latencies_ms, (99,))[0] for r in reps]
        sends = [r.send_rate for r in reps]
        if name == "saturation":
            rate_col = "max"
            sustained = f"{spread(sends, 0)} sent/s"
            worker_rates = [r.drain_rate for r in reps]
            if all(r != r for r in worker_rates):
                worker_rates = [r.e2e_rate for r in reps]
                rate_note = " (producer-limited: no backlog built up)"
            else:
                rate_note = " (draining the backlog)"
        else:
            rate_col = name
            ok = all(s >= SUSTAIN_SHARE * r.rate for s, r in zip(sends, reps))
            sustained = f"{spread(sends, 0)}/s" + ("" if ok else " — producer could NOT sustain the rate")
            worker_rates = [r.e2e_rate for r in reps]
            rate_note = ""
        matched = sum(r.matched for r in reps) / max(sum(r.n for r in reps), 1)
        rows.append([
            f"worker at {rate_col}{rate_note}" + (" (TIMED OUT)" if any(r.timed_out for r in reps) else ""),
            sustained, f"{reps[0].n:,}", spread(worker_rates, 0), ratio(median(worker_rates), ceil),
            spread(p50s, 1), spread(p99s, 1), f"{matched:.0%}",
        ])
    table(["measurement", "producer achieved", "events/rep", "events/s", "vs ceiling", "freshness p50 ms",
           "freshness p99 ms", "events matched"], rows)
    note("events/s at a fixed rate: events / (first send -> worker counted the last); at saturation: events "
         "processed after the producer finished / time to finish them (pure worker capacity)")
    note("freshness: the event's scheduled send time (at a fixed rate; flat out, when the producer took it) -> "
         "recommendation read by the bench's aiokafka consumer (includes the generator's 5 ms tick, "
         "the producer's 5 ms linger and the reader's 10 ms fetch wait); matched share: events that were "
         "their user's last in a batch get a recommendation with their trigger_event_id")

    split = []
    for name, reps in phases.items():
        cells = []
        for values in ([r.answer_ms for r in reps], [r.delivery_ms for r in reps]):
            cells += [spread([percentiles(v, (q,))[0] for v in values], 1) for q in (50, 99)]
        split.append([name] + cells)
    table(["phase", "to the worker's answer p50 ms", "p99 ms", "delivery p50 ms", "p99 ms"], split)
    note("freshness split at the recommendation record's timestamp (when the worker's producer took it): "
         "send time -> answer covers the generator's tick, the producer's linger, the broker, the worker's fetch "
         "wait, batching and handling; delivery covers the broker's ack and the reader's fetch wait")

    table(["phase", "where the worker's time goes", "calls", "ms per call", "µs per message", "share of wall"],
          breakdown)
    note("from the worker's /metrics histograms (streamrec_batch_seconds, streamrec_stage_seconds) and "
         "/proc/<pid>/stat, as differences over each phase; wall = first send -> last message processed")
    note(f"worker RSS at end: {final_rss}; broker RSS: {broker_rss}")
    footer(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
