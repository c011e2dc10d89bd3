"""Soak: the whole pipeline at a steady rate for a long time; is anything drifting?

Starts a Tansu broker and one worker (embedded store, the shipped encoder), replays the Online
Retail catalog, then publishes purchase events at a fixed rate for `--minutes`, cycling through
the real log with fresh event ids and timestamps moved forward each round (so profiles keep
changing and nothing is a duplicate). Every `--every` seconds it samples throughput, freshness
(event published → its recommendation received) and the worker's RSS. It writes a CSV and a PNG
plot and prints a table comparing the first and last fifth of the run (the baseline is the run's
own beginning: flat memory and stable freshness mean the last fifth matches the first).
`--warmup-minutes` runs that long first (profiles fill, caches reach their caps) and leaves it out
of the comparison; the CSV and the plot keep it.

Freshness is split at the recommendation record's timestamp (set when the worker hands it to its
producer): *to worker* (event handed to the producer → recommendation produced: the event's trip
through the broker, queueing and processing) and *delivery* (→ read by this program: the
recommendation's trip through the broker). The broker's own CPU is sampled beside the worker's,
so a drift can be placed in streamrec or in the broker.

    python -m bench.soak --minutes 30 --warmup-minutes 7 --rate 30 --customers 100

The local broker (Tansu 0.6, memory storage) stops answering fetches near the tail of a
partition that holds about 18,000 record batches (`python -m bench.broker_limits` measures it),
and it cannot trim a topic (no DeleteRecords). The soak therefore spreads its events over
`--partitions` partitions (16 by default) and refuses a run that would pass 15,000 batches in
one partition; a real Kafka cluster has no such limit (retention trims it).
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench.pipeline import cpu_seconds, stage_totals
from bench.report import tree_status
from inference.recommender import encoder_dir
from inference.schemas import Event
from inference.settings import InferenceSettings
from stream.broker import LocalBroker, free_port
from stream.demo import RecommendationLog
from stream.replay import Paced, producer, publish, retail_events, retail_items
from stream.settings import StreamSettings
from stream.worker_process import WorkerProcess
from training.datasets import default_online_retail_path, load_online_retail, sample_customers


# Below the local broker's cliff (~18,000 record batches per partition), with a margin.
BROKER_BATCHES_PER_PARTITION = 15_000


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of the worker and its recommender process: VmRSS (all), RssAnon (heap: a
    leak shows here) or RssFile (mapped files, e.g. the store's segments, which the kernel can drop)."""
    return tree_status(pid).get(field, 0) / 2**20


def endless(events: list[Event], span_s: float):
    """The log again and again, each round later in time and with new event ids."""
    round_ = 0
    while True:
        shift = round_ * span_s
        for e in events:
            yield e.model_copy(update={
                "event_id": f"{e.event_id}#r{round_}",
                "ts": datetime.fromtimestamp(e.ts.timestamp() + shift, tz=timezone.utc),
            })
        round_ += 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0, help="measured minutes (after the warm-up)")
    p.add_argument("--warmup-minutes", type=float, default=0.0,
                   help="minutes run first and left out of the first/last comparison")
    p.add_argument("--rate", type=float, default=200.0, help="events per second")
    p.add_argument("--customers", type=int, default=300)
    p.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--partitions", type=int, default=16,
                   help="partitions per topic (keeps each under the local broker's batch limit)")
    p.add_argument("--out", type=Path, default=Path("bench/results") / f"soak-{time.strftime('%Y%m%d-%H%M%S')}")
    args = p.parse_args()
    total_events = args.rate * (args.minutes + args.warmup_minutes) * 60
    per_partition = total_events / args.partitions
    if per_partition > BROKER_BATCHES_PER_PARTITION:
        p.error(f"{per_partition:,.0f} events per partition would pass the local broker's limit of "
                f"{BROKER_BATCHES_PER_PARTITION:,} record batches per partition (see the module docstring); "
                f"use --partitions {int(np.ceil(total_events / BROKER_BATCHES_PER_PARTITION))} or more")
    args.out.mkdir(parents=True, exist_ok=True)

    onnx_dir = encoder_dir(InferenceSettings())
    log = sample_customers(load_online_retail(default_online_retail_path()), args.customers, seed=0)
    items, events = list(retail_items(log)), list(retail_events(log))
    span = events[-1].ts.timestamp() - events[0].ts.timestamp() + 86_400
    print(f"soak: {args.warmup_minutes:g} min warm-up + {args.minutes:g} min at {args.rate:.0f} events/s; "
          f"{len(items)} items, {len(events)} events per round; "
          f"load average {os.getloadavg()}", flush=True)

    rows = []
    with tempfile.TemporaryDirectory(prefix="streamrec-soak-") as tmp, LocalBroker(log_path=Path(tmp) / "broker.log") as broker:
        settings = StreamSettings(kafka_bootstrap_servers=broker.bootstrap, topic_partitions=args.partitions)
        broker.create_topics(settings.topics(), partitions=settings.topic_partitions)
        env = {"STREAMREC_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "STREAMREC_DATA_DIR": str(Path(tmp) / "state"),
               "STREAMREC_ENCODER_ONNX_DIR": str(onnx_dir)}
        # The worker log is kept beside the results: a soak that goes wrong must be explainable.
        with WorkerProcess(env, log_path=args.out / "worker.log", http_port=free_port()) as worker:
            kafka = producer(broker.bootstrap)
            publish(kafka, settings.topic("items"), items, label="catalog", progress=False)
            worker.wait_for(lambda s: s["processed"].get("item", 0) >= len(items), 600, "the catalog")
            recs = RecommendationLog(broker.bootstrap, settings.topic("recommendations"))
            sent: dict[str, float] = {}
            stop = threading.Event()

            def produce() -> None:
                pace = Paced(args.rate)
                for event in endless(events, span):
                    if stop.is_set():
                        break
                    pace.wait()
                    kafka.send(settings.topic("events"), key=event.user_id.encode(), value=event.to_bytes())
                    sent[event.event_id] = time.time()

            thread = threading.Thread(target=produce, daemon=True)
            start = time.time()
            thread.start()
            seen_recs, seen_sent = 0, 0
            # The worker's own time per event batch and its CPU: if freshness drifts while these
            # stay flat, the drift is in the transport (broker), not in streamrec's processing.
            batch_key = ("streamrec_batch_seconds_sum", "events")
            count_key = ("streamrec_batch_seconds_count", "events")
            last_metrics = stage_totals(worker)
            last_cpu, last_broker_cpu = cpu_seconds(worker.proc.pid), cpu_seconds(broker.pid)
            while time.time() - start < (args.warmup_minutes + args.minutes) * 60:
                time.sleep(args.every)
                now = time.time()
                window = [(i, t) for i, t in list(recs.received.items())[seen_recs:]]
                seen_recs += len(window)
                latencies = [t - sent[i] for i, t in window if i in sent]
                to_worker = [recs.published[i] - sent[i] for i, _ in window if i in sent and i in recs.published]
                delivery = [t - recs.published[i] for i, t in window if i in recs.published]
                n_sent = len(sent)
                stats = worker.stats()
                row = {
                    "t_s": round(now - start, 1),
                    "warmup": now - start <= args.warmup_minutes * 60,
                    "sent_per_s": round((n_sent - seen_sent) / args.every, 1),
                    "processed": sum(v for k, v in stats["processed"].items() if k.startswith("event.")),
                    "recs_per_s": round(len(window) / args.every, 1),
                    "freshness_p50_ms": _ms(latencies, 50),
                    "freshness_p99_ms": _ms(latencies, 99),
                    "to_worker_p50_ms": _ms(to_worker, 50),
                    "to_worker_p99_ms": _ms(to_worker, 99),
                    "delivery_p50_ms": _ms(delivery, 50),
                    "delivery_p99_ms": _ms(delivery, 99),
                    "behind": n_sent - sum(v for k, v in stats["processed"].items() if k.startswith("event.")),
                    "worker_rss_mb": round(rss_mb(worker.proc.pid), 1),
                    "worker_anon_mb": round(rss_mb(worker.proc.pid, "RssAnon"), 1),
                    "loadavg_1m": round(os.getloadavg()[0], 2),
                }
                metrics, cpu, broker_cpu = stage_totals(worker), cpu_seconds(worker.proc.pid), cpu_seconds(broker.pid)
                batches = metrics.get(count_key, 0) - last_metrics.get(count_key, 0)
                busy = metrics.get(batch_key, 0) - last_metrics.get(batch_key, 0)
                row["worker_batch_ms"] = round(1000 * busy / batches, 2) if batches else None
                # The part spent in the recommender process (the rest: validation, and waiting for
                # the broker to acknowledge what was published).
                stages = (metrics.get(("streamrec_stage_seconds_sum", "recommender"), 0)
                          - last_metrics.get(("streamrec_stage_seconds_sum", "recommender"), 0))
                row["worker_stages_ms"] = round(1000 * stages / batches, 2) if batches else None
                row["worker_cpu_pct"] = round(100 * (cpu - last_cpu) / args.every, 1)
                row["broker_cpu_pct"] = round(100 * (broker_cpu - last_broker_cpu) / args.every, 1)
                last_metrics, last_cpu, last_broker_cpu = metrics, cpu, broker_cpu
                seen_sent = n_sent
                rows.append(row)
                print(row, flush=True)
            stop.set()
            thread.join(timeout=10)
            kafka.flush()
            kafka.close()
            recs.close()

    with open(args.out / "soak.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, args.out / "soak.png", args.rate)
    summarise(rows, args)


def _ms(seconds: list[float], q: float) -> float | None:
    return round(float(np.percentile(seconds, q)) * 1000, 1) if seconds else None


def _fifth(rows: list[dict], last: bool) -> list[dict]:
    n = max(len(rows) // 5, 1)
    return rows[-n:] if last else rows[:n]


def summarise(rows: list[dict], args) -> None:
    def med(part, key):
        values = [r[key] for r in part if r[key] is not None]
        return float(np.median(values)) if values else float("nan")

    measured = [r for r in rows if not r["warmup"]] or rows
    first, last = _fifth(measured, False), _fifth(measured, True)
    print(f"\n== soak {args.minutes:g} min at {args.rate:g} events/s after {args.warmup_minutes:g} min of warm-up "
          f"({time.strftime('%Y-%m-%d %H:%M')}) ==")
    print(f"{'metric (median of samples)':<34}{'first fifth':>14}{'last fifth':>14}{'last/first':>12}")
    for key in ("sent_per_s", "recs_per_s", "behind", "freshness_p50_ms", "freshness_p99_ms", "to_worker_p50_ms",
                "to_worker_p99_ms", "delivery_p50_ms", "delivery_p99_ms", "worker_batch_ms", "worker_stages_ms",
                "worker_cpu_pct", "broker_cpu_pct", "worker_rss_mb", "worker_anon_mb", "loadavg_1m"):
        a, b = med(first, key), med(last, key)
        print(f"{key:<34}{a:>14.1f}{b:>14.1f}{(b / a if a else float('nan')):>12.2f}")
    t = np.array([r["t_s"] for r in measured]) / 3600
    for key in ("worker_rss_mb", "worker_anon_mb"):
        slope = float(np.polyfit(t, [r[key] for r in measured], 1)[0]) if len(measured) > 2 else float("nan")
        print(f"{key} trend over the measured minutes: {slope:+.1f} MB/hour")
    print(f"csv and plot in {args.out}")


def plot(rows: list[dict], path: Path, rate: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t_s"] / 60 for r in rows]
    fig, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    axes[0].plot(t, [r["sent_per_s"] for r in rows], label="published")
    axes[0].plot(t, [r["recs_per_s"] for r in rows], label="recommendations")
    axes[0].axhline(rate, color="grey", linestyle=":", label="target rate")
    axes[0].set_ylabel("per second")
    axes[0].legend()
    axes[1].plot(t, [r["freshness_p50_ms"] for r in rows], label="p50")
    axes[1].plot(t, [r["freshness_p99_ms"] for r in rows], label="p99")
    axes[1].plot(t, [r["delivery_p50_ms"] for r in rows], label="of which delivery, p50", linestyle="--")
    axes[1].set_ylabel("freshness, ms")
    axes[1].set_yscale("log")
    axes[1].legend()
    axes[2].plot(t, [r["worker_cpu_pct"] for r in rows], label="worker CPU %")
    axes[2].plot(t, [r["broker_cpu_pct"] for r in rows], label="broker CPU %")
    axes[2].plot(t, [r["worker_batch_ms"] for r in rows], label="worker ms per batch")
    axes[2].legend()
    axes[3].plot(t, [r["worker_rss_mb"] for r in rows], label="RSS")
    axes[3].plot(t, [r["worker_anon_mb"] for r in rows], label="of which anonymous (heap)")
    axes[3].set_ylabel("worker memory, MB")
    axes[3].legend()
    axes[3].set_xlabel("minutes")
    warm = [r["t_s"] / 60 for r in rows if r["warmup"]]
    if warm:
        for ax in axes:
            ax.axvspan(0, max(warm), color="grey", alpha=0.15, label=None)
    fig.suptitle(f"streamrec soak at {rate:g} events/s")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
