"""`streamrec demo`: a real broker, a real worker and real data, end to end, then a report.

Starts the local Tansu broker and a worker (embedded Qdrant, the shipped encoder), replays the
catalog and then the purchases of a sample of Online Retail customers through Kafka, measures
throughput and freshness from the recommendations that come back, prints a few customers'
purchases beside their recommendations, then what a new customer who only typed their
interests is recommended, and stops everything it started.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from kafka import KafkaConsumer

from inference.recommender import encoder_dir
from inference.schemas import Intent, Recommendation
from inference.settings import InferenceSettings
from stream.broker import LocalBroker, free_port
from stream.replay import producer, publish, retail_events, retail_items
from stream.settings import StreamSettings
from stream.worker_process import WorkerProcess
from training.datasets import default_online_retail_path, load_online_retail, sample_customers

THROUGHPUT_SHARE = 0.8
"""The first 80% of events go as fast as possible (throughput); the rest at a fixed rate (freshness)."""
NEW_CUSTOMER = Intent(schema=1, user_id="demo-new-customer",
                      text="union jack bunting, christmas napkins, hanging t-light holder")
"""A customer with no history who typed what they like (`streamrec.intents`)."""


class RecommendationLog:
    """Consumes the recommendations topic in a thread and notes when each arrived."""

    def __init__(self, bootstrap: str, topic: str):
        self.received: dict[str, float] = {}  # trigger_event_id -> wall time
        # trigger_event_id -> the record's timestamp: when the worker handed it to its producer
        self.published: dict[str, float] = {}
        self.count = 0
        self._stop = threading.Event()
        self._consumer = KafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
            fetch_max_wait_ms=10, consumer_timeout_ms=200,
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for message in self._consumer:
                now = time.time()
                rec = Recommendation.model_validate_json(message.value)
                self.count += 1
                if rec.trigger_event_id:
                    self.received.setdefault(rec.trigger_event_id, now)
                    self.published.setdefault(rec.trigger_event_id, message.timestamp / 1000)
                if self._stop.is_set():
                    break

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()


def _percentiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    arr = np.asarray(values) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def run_demo(*, customers: int, rate: float, shown: int, seed: int) -> int:
    t_start = time.perf_counter()
    logging.getLogger("kafka").setLevel(logging.ERROR)  # its event-loop timing warnings are noise here
    inference_settings = InferenceSettings()
    print("• exporting the shipped encoder to ONNX (cached after the first run)…", flush=True)
    onnx_dir = encoder_dir(inference_settings)
    print("• loading Online Retail…", flush=True)
    log = sample_customers(load_online_retail(default_online_retail_path()), customers, seed=seed)
    items, events = list(retail_items(log)), list(retail_events(log))
    print(f"  {customers} customers, {len(items)} items, {len(events)} purchase events", flush=True)

    with tempfile.TemporaryDirectory(prefix="streamrec-demo-") as tmp, LocalBroker(log_path=Path(tmp) / "broker.log") as broker:
        settings = StreamSettings(kafka_bootstrap_servers=broker.bootstrap)
        broker.create_topics(
            settings.topics(), partitions=settings.topic_partitions,
        )
        print(f"• broker (Tansu) on {broker.bootstrap}; starting the worker…", flush=True)
        env = {
            "STREAMREC_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "STREAMREC_DATA_DIR": str(Path(tmp) / "state"),
            "STREAMREC_ENCODER_ONNX_DIR": str(onnx_dir),
            "STREAMREC_GROUPS_REFRESH_S": "20",
        }
        with WorkerProcess(env, log_path=Path(tmp) / "worker.log", http_port=free_port()) as worker:
            recs = RecommendationLog(broker.bootstrap, settings.topic("recommendations"))
            kafka = producer(broker.bootstrap)
            try:
                t0 = time.perf_counter()
                publish(kafka, settings.topic("items"), items, label="catalog")
                worker.wait_for(lambda s: s["processed"].get("item", 0) >= len(items), 600, "the catalog")
                catalog_s = time.perf_counter() - t0
                print(f"  catalog embedded and indexed: {len(items)} items in {catalog_s:.1f}s "
                      f"({len(items) / catalog_s:.0f} items/s)", flush=True)

                sent: dict[str, float] = {}
                split = int(len(events) * THROUGHPUT_SHARE)
                fast, paced = events[:split], events[split:]
                t1 = time.time()
                publish(kafka, settings.topic("events"), fast, label="events (max rate)",
                        on_sent=sent.__setitem__)
                worker.wait_for(lambda s: sum(v for k, v in s["processed"].items() if k.startswith("event.")) >= split,
                                600, "the max-rate events")
                fast_s = time.time() - t1
                # Freshness is measured below saturation: by default at half the rate just sustained.
                rate = rate or max(round(split / fast_s / 2), 1)
                publish(kafka, settings.topic("events"), paced, rate=rate, label=f"events ({rate:.0f}/s)",
                        on_sent=sent.__setitem__)
                worker.wait_for(lambda s: sum(v for k, v in s["processed"].items() if k.startswith("event.")) >= len(events),
                                600, "all events")
                deadline = time.time() + 10
                last = {e.event_id for e in paced[-50:]} & set(sent)
                while time.time() < deadline and not last <= set(recs.received):
                    time.sleep(0.1)
                kafka.send(settings.topic("intents"), key=NEW_CUSTOMER.user_id.encode(), value=NEW_CUSTOMER.to_bytes())
                kafka.flush()
                worker.wait_for(lambda s: s["processed"].get("intent", 0) >= 1, 60, "the new customer's intent")
            finally:
                kafka.close()
                recs.close()

            paced_ids = {e.event_id for e in paced}
            paced_lat = [recs.received[i] - sent[i] for i in paced_ids if i in recs.received]
            all_lat = [recs.received[i] - sent[i] for i in sent if i in recs.received]
            stats = worker.stats()
            metrics = worker.get_text("/metrics")
            _print_groups(stats)
            _print_customers(worker, log, shown)
            _print_new_customer(worker, log)
            p50, p99 = _percentiles(paced_lat)
            s50, s99 = _percentiles(all_lat)
            print("\n== measured on this run ==")
            print(f"throughput (max-rate phase): {split} events in {fast_s:.2f}s = {split / fast_s:,.0f} events/s")
            print(f"freshness at {rate:.0f} events/s (event published -> recommendation received, "
                  f"{len(paced_lat)} recommendations): p50 {p50:.1f} ms, p99 {p99:.1f} ms")
            print(f"freshness over the whole replay incl. the max-rate backlog: p50 {s50:.1f} ms, p99 {s99:.1f} ms")
            print(f"recommendations published: {stats['published']}; dead-lettered: {stats['dead_lettered'] or 0}; "
                  f"model {stats['model_version']}")
            _print_metrics(metrics)
    print(f"demo finished in {time.perf_counter() - t_start:.0f}s; broker and worker stopped.")
    return 0


def _print_metrics(exposition: str) -> None:
    """The worker's Prometheus counters and gauges as scraped at the end (histogram buckets left out)."""
    print("\n== GET /metrics (streamrec_* series, without histogram buckets) ==")
    for line in exposition.splitlines():
        if line.startswith("streamrec_") and "_bucket{" not in line and "_created" not in line:
            print("  " + line)


def _print_groups(stats: dict) -> None:
    print("\n== interest groups (k-means over users' interest vectors) ==")
    for group in stats.get("interest_groups", []):
        print(f"  {group['users']:>4} users  {group['name']}")
    print("== value segments ==  " + ", ".join(f"{k} {v}" for k, v in stats.get("segments", {}).items()))
    rates = stats.get("exploration_rate", {})
    print("== exploration ==  " + ", ".join(f"{v}: {100 * r:.1f}% of slots" for v, r in rates.items())
          + f"; {stats.get('topics', 0)} catalog topics")


def _print_customers(worker: WorkerProcess, log, shown: int) -> None:
    titles = dict(zip(log.items.item_id, log.items.title))
    counts = log.purchases.groupby("user_id").invoice.nunique().sort_values(ascending=False)
    for user_id in counts.index[:shown]:
        bought = log.purchases[log.purchases.user_id == user_id]
        last_invoice = bought.invoice.iloc[-1]
        print(f"\n== customer {user_id}: {bought.invoice.nunique()} orders, {len(bought)} lines; "
              f"last order {last_invoice} on {bought.ts.iloc[-1]:%Y-%m-%d} ==")
        print("  last purchases:")
        for row in bought.tail(5).itertuples():
            print(f"    - {titles.get(row.item_id, row.item_id)} ({row.item_id})")
        about = worker.get(f"/users/{user_id}")
        rfm = about["rfm"]
        probability = about["purchase_probability"]
        print(f"  segment: {about['segment']} (R{rfm['r']} F{rfm['f']} M{rfm['m']}: {rfm['frequency']} lines, "
              f"£{rfm['monetary']:,.0f}); P(buys within {about['horizon_days']:.0f} days) = "
              f"{'–' if probability is None else f'{probability:.2f}'}")
        print(f"  interest group: {about['interest_group'] or '–'}")
        print("  interests retrieved from: " + "; ".join(f"{i['title']} ({i['weight']:.0%})" for i in about["interests"]))
        _print_recommended(worker, user_id, titles)


def _print_new_customer(worker: WorkerProcess, log) -> None:
    """A customer known only by their words: each interest they listed is retrieved from."""
    titles = dict(zip(log.items.item_id, log.items.title))
    about = worker.get(f"/users/{NEW_CUSTOMER.user_id}")
    print(f"\n== a new customer, no purchases, who typed: \"{NEW_CUSTOMER.text}\" ==")
    print(f"  interests retrieved from: the whole text and {about['stated_interests_retrieved']} phrases of it "
          "(the text itself is not kept)")
    _print_recommended(worker, NEW_CUSTOMER.user_id, titles)


def _print_recommended(worker: WorkerProcess, user_id: str, titles: dict[str, str]) -> None:
    # A named request draws its exploration from its id: the demo shows the same slots on every run.
    rec = worker.get(f"/recommendations/{user_id}?k=8&request_id=demo-{user_id}")
    print("  recommended now:")
    for item in rec["items"]:
        mark = " [explore]" if item.get("explore") else ""
        print(f"    {item['position']}. {titles.get(item['item_id'], item['item_id'])} ({item['item_id']}) "
              f"score {item['score']:.3f}{mark} — {item['reason']}")
