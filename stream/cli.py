"""`streamrec`: the one command-line entry point (worker, broker, replay, recommend, export, demo)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _worker(args: argparse.Namespace) -> int:
    import signal

    import faust

    from inference.settings import InferenceSettings
    from stream.app import build_app
    from stream.recommender_process import RecommenderFailed, RecommenderProcess
    from stream.settings import StreamSettings
    from stream.stop_deadline import DeadlineWorker

    stream_settings, inference_settings = StreamSettings(), InferenceSettings()
    # Faust runs in the data directory; with a Qdrant server nothing else would create it.
    inference_settings.data_dir.mkdir(parents=True, exist_ok=True)
    # A recommender that dies stops the worker (its orchestrator restarts it): SIGTERM is Faust's
    # orderly stop, which commits only what was answered.
    recommender = RecommenderProcess(loglevel=args.loglevel,
                                     on_death=lambda reason: os.kill(os.getpid(), signal.SIGTERM))
    try:
        recommender.start()
    except RecommenderFailed as exc:
        logging.getLogger("streamrec").error("%s", exc)
        return 1
    app = build_app(stream_settings, recommender, default_k=inference_settings.default_k,
                    catalog_refresh_s=inference_settings.catalog_refresh_s)
    logging.getLogger("streamrec").info(
        "worker: model %s (%s) on %s, event encoder %s, store %s, broker %s", recommender.model_version,
        recommender.ready.precision, list(recommender.ready.providers), recommender.event_encoder or "none",
        inference_settings.qdrant_url or inference_settings.data_dir,
        stream_settings.kafka_bootstrap_servers,
    )
    worker = DeadlineWorker(app, loglevel=args.loglevel, quiet=True, workdir=str(inference_settings.data_dir),
                            stop_timeout_s=stream_settings.stop_timeout_s, on_overdue=recommender.close)
    try:
        worker.execute_from_commandline()
    finally:
        # A clean stop persists the popularity counted since the last timer flush.
        recommender.close()
        if recommender.died is not None:
            raise SystemExit(1)
    return 0


def _broker(args: argparse.Namespace) -> int:
    from stream.broker import run_from_args

    return run_from_args(args)


def _replay(args: argparse.Namespace) -> int:
    from stream.replay import producer, publish, retail_events, retail_items
    from stream.settings import StreamSettings
    from training.datasets import default_online_retail_path, load_online_retail, sample_customers

    settings = StreamSettings()
    log = load_online_retail(args.path or default_online_retail_path())
    if args.customers:
        log = sample_customers(log, args.customers, seed=args.seed)
    items, events = list(retail_items(log)), list(retail_events(log))
    kafka = producer(settings.kafka_bootstrap_servers, settings)
    try:
        if not args.events_only:
            t = publish(kafka, settings.topic("items"), items, label="items")
            print(f"published {len(items)} items in {t:.1f}s")
        if not args.items_only:
            t = publish(kafka, settings.topic("events"), events, rate=args.rate, label="events")
            print(f"published {len(events)} events in {t:.1f}s ({len(events) / max(t, 1e-9):.0f}/s)")
    finally:
        kafka.close()
    return 0


def _recommend(args: argparse.Namespace) -> int:
    from stream.settings import StreamSettings

    settings = StreamSettings()
    query = urllib.parse.urlencode({"k": args.k, **({"request_id": args.request_id} if args.request_id else {})})
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::") else settings.http_host
    url = f"http://{host}:{settings.http_port}/recommendations/{urllib.parse.quote(args.user, safe='')}?{query}"
    headers = {"Authorization": f"Bearer {settings.http_token.get_secret_value()}"} if settings.http_token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            rec = json.load(response)
    except urllib.error.URLError as exc:
        print(f"streamrec recommend: no worker answered at {url} ({exc}). Start one with `streamrec worker`"
              " and set STREAMREC_HTTP_PORT to its port.", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(rec, indent=2))
        return 0
    print(f"recommendations for {rec['user_id']} (model {rec['model_version']})")
    for item in rec["items"]:
        print(f"{item['position']:>3}. {item['item_id']:<14} {item['score']:.3f}  {item['reason']}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from inference.recommender import encoder_dir
    from inference.settings import InferenceSettings

    settings = InferenceSettings()
    if args.model_dir:
        settings = settings.model_copy(update={"encoder_model_dir": Path(args.model_dir), "encoder_onnx_dir": None})
    print(encoder_dir(settings))
    return 0


def _index(args: argparse.Namespace) -> int:
    """Build the HNSW index of the served items collection: with no worker running, since the
    embedded store has one user at a time and the build holds the process (~20 s at 100k items)."""
    from inference.recommender import ITEMS, store_from
    from inference.settings import InferenceSettings
    from inference.state_blobs import StateBlobs
    from inference.store import StoreUnavailable

    settings = InferenceSettings()
    try:
        store = store_from(settings)
    except StoreUnavailable as exc:
        print(f"streamrec index: {exc}; stop the worker that uses it first", file=sys.stderr)
        return 1
    with store:
        serving = StateBlobs(store).get("serving") or {}
        collection = args.collection or serving.get("collections", {}).get(serving.get("version"), ITEMS)
        if not store.has_collection(collection):
            print(f"streamrec index: no collection {collection!r} in {settings.qdrant_url or settings.data_dir}",
                  file=sys.stderr)
            return 1
        print(f"indexing {collection} ({store.count(collection):,} points)...", flush=True)
        result = store.build_index(collection)
    print(f"{collection}: {result['indexed_vectors']:,} of {result['points']:,} vectors in the HNSW index, "
          f"{result['segments']} segments, vectors quantized: {result['quantization']}, {result['seconds']} s")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from stream.demo import run_demo

    return run_demo(customers=args.customers, rate=args.rate, shown=args.show, seed=args.seed)


def _bench(args: argparse.Namespace) -> int:
    # bench/ sits beside the packages in the repository (it is not installed): run it from there.
    import runpy

    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    sys.argv = [f"bench/{args.program}.py", *args.args]
    runpy.run_module(f"bench.{args.program}", run_name="__main__", alter_sys=True)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from training.evaluate_cli import run_cli

    return run_cli(args)


def _purchase_model(args: argparse.Namespace) -> int:
    from training.purchase_probability import run

    return run(args)


def _ab_report(args: argparse.Namespace) -> int:
    from stream.ab_report import run

    return run(args)


def _train(args: argparse.Namespace) -> int:
    """Refit, evaluate, export; announce the new version unless told not to; repeat on --every."""
    import time

    from inference.schemas import ModelUpdate, utcnow
    from stream.model_updates import announce
    from stream.settings import StreamSettings
    from training.finetune import run

    while True:
        if args.from_topics:
            args.format, args.events, args.items = "dump", *_dump_topics(StreamSettings(), args.from_topics)
        try:
            result = run(args)
        except (FileNotFoundError, ValueError) as exc:
            print(f"streamrec train: {exc}", file=sys.stderr)
            return 2
        if not result.published:
            print(f"not announced: {result.reason}", file=sys.stderr)
        elif args.no_announce:
            print(f"trained {result.version} at {result.path} (not announced: --no-announce)")
        else:
            manifest = result.manifest
            announce(StreamSettings(), ModelUpdate(version=result.version, path=str(result.path), dim=int(manifest["dim"]),
                                                   at=utcnow(), reason="train", metrics=manifest.get("metrics")))
            print(f"announced {result.version} on {StreamSettings().topic('model-updates')}")
        if not args.every_hours:
            return 0 if result.published else 1
        time.sleep(args.every_hours * 3600)


def _dump_topics(settings, folder: Path) -> tuple[Path, Path]:
    """The logged events and the catalog, as JSON lines, from the topics (what training reads)."""
    from stream.topic_reader import read_to_end

    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "events.jsonl", folder / "items.jsonl"
    for topic, path in zip(("events", "items"), paths):
        with path.open("wb") as out:
            for value in read_to_end(settings, settings.topic(topic), timeout_s=3600):
                out.write(value.replace(b"\n", b" ") + b"\n")
    return paths


def _rollback(args: argparse.Namespace) -> int:
    from inference.recommender import encoder_dir
    from inference.settings import InferenceSettings
    from stream.model_updates import announce, as_rollback, default_update, history, rollback_target
    from stream.settings import StreamSettings

    settings = StreamSettings()
    try:
        target = rollback_target(history(settings), default_update(encoder_dir(InferenceSettings())), args.to)
    except ValueError as exc:
        print(f"streamrec rollback: {exc}", file=sys.stderr)
        return 1
    announce(settings, as_rollback(target, "rollback"))
    print(f"announced rollback to {target.version} ({target.path})")
    return 0


def _settings(args: argparse.Namespace) -> int:
    from stream.settings_doc import settings_markdown, with_settings_block

    if args.readme:
        args.readme.write_text(with_settings_block(args.readme.read_text()))
    else:
        print(settings_markdown())
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamrec", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    w = sub.add_parser("worker", help="run a stream worker (settings from STREAMREC_* variables)")
    w.add_argument("--loglevel", default="info")
    w.set_defaults(func=_worker)

    from stream.broker import add_arguments

    b = sub.add_parser("broker", help="run the local Kafka-protocol broker (Tansu) for development")
    add_arguments(b)
    b.set_defaults(func=_broker)

    r = sub.add_parser("replay", help="publish the Online Retail catalog, then its purchases in time order")
    r.add_argument("--path", type=Path, default=None, help="Online Retail .csv.gz or .parquet (default: ../shared/data)")
    r.add_argument("--customers", type=int, default=0, help="only this many customers (0: all)")
    r.add_argument("--rate", type=float, default=0.0, help="events per second (0: as fast as possible)")
    r.add_argument("--seed", type=int, default=0)
    only = r.add_mutually_exclusive_group()
    only.add_argument("--items-only", action="store_true")
    only.add_argument("--events-only", action="store_true")
    r.set_defaults(func=_replay)

    rec = sub.add_parser("recommend", help="ask a running worker for a user's recommendations")
    rec.add_argument("user")
    rec.add_argument("-k", type=int, default=10)
    rec.add_argument("--request-id", default=None,
                     help="name the request: asking again with the same id gets the same recommendation id and "
                          "exploration draws")
    rec.add_argument("--json", action="store_true")
    rec.set_defaults(func=_recommend)

    e = sub.add_parser("export", help="export the encoder to ONNX (cached) and print its folder")
    e.add_argument("--model-dir", default=None, help="a Hugging Face model folder (default: the shipped MiniLM)")
    e.set_defaults(func=_export)

    ix = sub.add_parser("index", help="build the HNSW index of the served items collection (no worker running)")
    ix.add_argument("--collection", default=None, help="another collection than the one being served")
    ix.set_defaults(func=_index)

    d = sub.add_parser("demo", help="broker + worker + a replay of real data, then print what it recommends")
    d.add_argument("--customers", type=int, default=200, help="Online Retail customers to replay")
    d.add_argument("--rate", type=float, default=0.0,
                   help="events/s in the freshness phase (0: half the throughput measured just before)")
    d.add_argument("--show", type=int, default=3, help="customers to print")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_demo)

    from training.evaluate_cli import add_evaluate_arguments

    ev = sub.add_parser("evaluate", help="offline protocol: streamrec vs popularity, co-occurrence, RecBole SASRec")
    add_evaluate_arguments(ev)
    ev.set_defaults(func=_evaluate)

    from training.finetune import add_arguments as add_train_arguments

    tr = sub.add_parser("train", help="refit the encoder on logged events, evaluate, export ONNX, announce it")
    add_train_arguments(tr)
    tr.add_argument("--no-announce", action="store_true", help="write the version but do not announce it")
    tr.add_argument("--from-topics", type=Path, default=None, metavar="DIR",
                    help="train on the logged events: dump the events and items topics into DIR first "
                         "(then as --format dump)")
    tr.add_argument("--every-hours", type=float, default=0.0,
                    help="keep running: refit every this many hours (0: once); the k8s CronJob is the alternative")
    tr.set_defaults(func=_train)

    rb = sub.add_parser("rollback", help="announce the previously served model version (or --to VERSION)")
    rb.add_argument("--to", default=None, help="a version announced before, or the shipped default's version")
    rb.set_defaults(func=_rollback)

    from training.purchase_probability import add_arguments as add_purchase_model_arguments

    pm = sub.add_parser("purchase-model",
                        help="fit and validate the purchase-probability model (RFM logistic regression) on Online Retail")
    add_purchase_model_arguments(pm)
    pm.set_defaults(func=_purchase_model)

    from stream.ab_report import add_arguments as add_ab_report_arguments

    ab = sub.add_parser("ab-report", help="per-variant impressions, CTR, conversion and revenue with 95%% intervals")
    add_ab_report_arguments(ab)
    ab.set_defaults(func=_ab_report)

    from training import exploration_sim

    xs = sub.add_parser("explore-sim", help="offline replay on Online Retail: does the exploration bandit find "
                        "users' new interests sooner than pure exploitation, and at what NDCG@10 cost")
    exploration_sim.add_arguments(xs)
    xs.set_defaults(func=exploration_sim.run)

    s = sub.add_parser("settings", help="print every setting with its environment variable and default")
    s.add_argument("--readme", type=Path, default=None, help="rewrite the settings block of this README instead")
    s.set_defaults(func=_settings)

    bn = sub.add_parser("bench", help="run a benchmark program from bench/ (prints tables; see bench/README.md)")
    bn.add_argument("program", choices=["pipeline", "encoder", "retrieval", "memory", "soak", "broker_limits"])
    bn.add_argument("args", nargs=argparse.REMAINDER, help="the program's own options (e.g. --sizes 10000)")
    bn.set_defaults(func=_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
