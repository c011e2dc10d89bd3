"""The Faust app: topics, agents, timers and the HTTP views, wired around the recommender's process.

Thin by design: agents decode and validate raw bytes (rejects go to the dead-letter topic),
hand accepted messages in batches to the recommender, which runs in a child process of its own
(stream/recommender_process.py: so the event loop keeps heartbeating, consuming and answering
HTTP on another core), and publish the encoded messages it returns.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from faust.exceptions import ConsumerNotStarted
from faust.web import Request as WebRequest, Response, View

from inference.schemas import (MAX_ID_LEN, MAX_K, DeadLetter, Erasure, Event, Intent, Item, Message, ModelUpdate,
                               Request, RequestFilters, utcnow)
from inference.store import StoreError
from stream.batching import GrowingBatchStream
from stream.intake import Accepted, Limits, Rejected, decode
from stream.kafka_auth import faust_credentials
from stream.metrics import CONTENT_TYPE, WorkerMetrics, WorkerState
from stream.model_updates import ModelUpdateFollower
from stream.recommender_process import Outgoing, RecommenderFailed, RecommenderProcess
from stream.settings import TOPICS, StreamSettings
from stream.status_page import STATUS_PAGE
from stream.transport import StreamrecApp

log = logging.getLogger("streamrec.worker")

STORE_RETRY_MAX_S = 30.0


class SendTimeout(RuntimeError):
    """The broker took a send but did not acknowledge it in time (STREAMREC_SEND_TIMEOUT_S)."""


async def acknowledged(pending: Sequence[asyncio.Future], timeout_s: float, what: str) -> None:
    """Wait for the broker's acks of ``pending`` sends, at most ``timeout_s``: a broker that takes a
    send and never answers must not stall the worker for ever. Raises :class:`SendTimeout` (the
    batch is then handled again) or the first send's own error. Never cancels the sends: the
    producer still owns them, and a late ack is harmless (answers carry deterministic ids)."""
    if not pending:
        return
    done, late = await asyncio.wait(pending, timeout=timeout_s)
    if late:
        raise SendTimeout(f"the broker did not acknowledge {len(late)} of {len(pending)} {what} "
                          f"within {timeout_s:g}s (STREAMREC_SEND_TIMEOUT_S)")
    for future in done:
        future.result()


def build_app(settings: StreamSettings, recommender: RecommenderProcess, *, default_k: int,
              catalog_refresh_s: float | None = None) -> StreamrecApp:
    app = StreamrecApp(
        settings.app_id,
        broker=[f"kafka://{server.strip()}" for server in settings.kafka_bootstrap_servers.split(",")],
        store="memory://",
        web_host=settings.http_host,
        web_bind=settings.http_host,  # web_host only names the public URL; web_bind is the listen address
        web_port=settings.http_port,
        topic_partitions=settings.topic_partitions,
        consumer_auto_offset_reset=settings.auto_offset_reset,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_request_timeout=max(settings.session_timeout_s * 3, 30.0),
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        # The producer's own expiry of unanswered sends (Faust's default is 20 minutes).
        producer_request_timeout=settings.send_timeout_s,
        web_transport=f"tcp://{settings.http_host}:{settings.http_port}",
        autodiscover=False,
        broker_credentials=faust_credentials(settings),
        Stream=GrowingBatchStream,
    )
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    state = WorkerState()
    metrics = WorkerMetrics(state, lambda: recommender.model_version)
    recommender.on_stage = metrics.observe_stage
    app.streamrec_state = state
    app.recommender = recommender
    limits = Limits(settings.max_message_bytes, settings.max_json_depth, settings.max_future_skew_s)

    def raw_topic(name: str):
        return app.topic(
            settings.topic(name), key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

    topics = {name: raw_topic(name) for name in TOPICS}
    events_topic, items_topic = topics["events"], topics["items"]
    intents_topic, requests_topic = topics["intents"], topics["requests"]
    deadletter_topic, erasures_topic = topics["deadletter"], topics["erasures"]

    async def in_executor(operation: str, *args: Any):
        """Run a recommender operation in its process; retry store outages without dropping input."""
        delay = 0.5
        while True:
            try:
                result = await asyncio.wrap_future(recommender.submit(operation, *args))
            except StoreError as exc:
                state.healthy, state.last_error = False, f"vector store: {exc}"
                log.warning("vector store unavailable, retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, STORE_RETRY_MAX_S)
                continue
            if not state.healthy:
                log.info("vector store reachable again")
            state.healthy, state.last_error = True, None
            return result

    async def dead_letter(event, reason: Rejected) -> None:
        msg = event.message
        record = DeadLetter(
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=DeadLetter.encode_bytes(msg.key),
            value=DeadLetter.encode_bytes(msg.value),
            error=str(reason)[:2000],
            at=utcnow(),
        )
        # Wait for the broker's ack: the input's offset must not be committed before its dead letter.
        sent = await deadletter_topic.send(key=msg.key, value=record.to_bytes())
        await acknowledged([sent], settings.send_timeout_s, "dead letters")
        state.dead_lettered[reason.reason] += 1
        log.info("dead-lettered %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, reason)

    async def accept(batch, model: type[Message]) -> list[tuple[Any, Message]]:
        accepted = []
        for event in batch:
            result = decode(event.value, model, limits)
            if isinstance(result, Accepted):
                accepted.append((event, result.message))
            else:
                await dead_letter(event, result)
        return accepted

    async def process(accepted: list[tuple[Any, Message]], operation: str, *, by_partition: bool = False):
        """The whole batch in one call; if it fails for a reason other than the store, find the
        culprits one by one and dead-letter them, so one poisoned message never blocks the rest.
        `by_partition`: the operation also takes each message's partition (its popularity share).
        Returns the result of each call that went through: one, or one per message."""

        async def call(pairs: list[tuple[Any, Message]]):
            messages = [m for _, m in pairs]
            args = (messages, [str(e.message.partition) for e, _ in pairs]) if by_partition else (messages,)
            with metrics.time_stage("recommender"):
                return await in_executor(operation, *args)

        try:
            return [await call(accepted)]
        except RecommenderFailed:  # not the messages' fault: the worker stops, nothing is acked
            raise
        except Exception as exc:  # noqa: BLE001 - anything else is a bad message, isolate it
            log.warning("batch of %d failed (%r); retrying one by one", len(accepted), exc)
        results = []
        for event, message in accepted:
            try:
                results.append(await call([(event, message)]))
            except RecommenderFailed:
                raise
            except Exception as exc:  # noqa: BLE001
                await dead_letter(event, Rejected("processing_error", f"{type(exc).__name__}: {exc}"))
        return results

    async def publish(messages: Sequence[Outgoing] | None, published_at: dict[str, float] | None = None) -> None:
        """Send recommendations and segment changes (encoded by the recommender's process), then
        wait for the broker's acks: the batch's offsets are acked only after this."""
        messages = messages or ()
        with metrics.time_stage("publish"):
            pending = [await topics[m.topic].send(key=m.key, value=m.value) for m in messages]
            await acknowledged(pending, settings.send_timeout_s, "recommendations and segment changes")
        now = time.time()
        for m in messages:
            if m.topic == "recommendations":
                state.published += 1
                state.slots[m.variant] += m.slots
                state.explored[m.variant] += m.explored
                if published_at and m.trigger_event_id in published_at:
                    latency = max(now - published_at[m.trigger_event_id], 0.0)
                    metrics.freshness.observe(latency)
                    state.freshness.append((now, latency))
            elif m.topic == "segments":
                state.segment_changes[m.segment] += 1

    async def until_done(what: str, body: Callable[[], Awaitable[None]]) -> None:
        """Retry a batch's whole handling until it succeeds. Faust acks a batch even when its
        body raises, so nothing may escape: redoing a batch is safe (profile updates are
        idempotent by event id, recommendations carry deterministic ids)."""
        delay, failed = 0.5, False
        while True:
            try:
                await body()
                if failed:
                    log.info("a %s batch went through after retries", what)
                    state.healthy, state.last_error = True, None
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. the broker refusing our sends
                failed, state.healthy, state.last_error = True, False, f"{what}: {exc!r}"
                log.warning("handling a %s batch failed, retrying in %.1fs: %r", what, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, STORE_RETRY_MAX_S)

    def batches(name: str, model: type[Message], handle: Callable[[list[tuple[Any, Message]]], Awaitable[None]]):
        """An agent body: take batches, dead-letter what fails validation, hand over the rest."""

        async def agent(stream):
            async for batch in stream.take_growing(
                settings.batch_size, idle_s=settings.batch_window_s, max_wait_s=settings.batch_max_wait_s
            ):
                async def body(batch=batch):
                    with metrics.time_stage("validate"):
                        accepted = await accept(batch, model)
                    if accepted:
                        await handle(accepted)

                with metrics.batch.labels(name).time():
                    await until_done(name, body)

        agent.__name__ = f"on_{name}"
        return agent

    async def handle_items(accepted) -> None:
        await process(accepted, "items")
        state.processed["item"] += len(accepted)

    async def handle_events(accepted) -> None:
        # Kafka's CreateTime of each event: freshness is measured from publication.
        published_at = {m.event_id: e.message.timestamp for e, m in accepted}
        answered = await process(accepted, "events", by_partition=True)
        await publish([m for messages, _ in answered for m in messages], published_at)
        for _, segment_counts in answered:
            state.segments = segment_counts or state.segments
        for _, event in accepted:
            state.processed[f"event.{event.type.value}"] += 1

    async def handle_intents(accepted) -> None:
        await publish(_flat(await process(accepted, "intents")))
        state.processed["intent"] += len(accepted)

    async def handle_requests(accepted) -> None:
        await publish(_flat(await process(accepted, "requests")))
        state.processed["request"] += len(accepted)

    async def handle_erasures(accepted) -> None:
        # Confirmed only once the store's delete returned and was flushed.
        await publish(_flat(await process(accepted, "erasures")))
        state.processed["erasure"] += len(accepted)

    app.agent(erasures_topic, name="streamrec.on_erasures")(batches("erasures", Erasure, handle_erasures))
    app.agent(items_topic, name="streamrec.on_items")(batches("items", Item, handle_items))
    app.agent(events_topic, name="streamrec.on_events")(batches("events", Event, handle_events))
    app.agent(intents_topic, name="streamrec.on_intents")(batches("intents", Intent, handle_intents))
    app.agent(requests_topic, name="streamrec.on_requests")(batches("requests", Request, handle_requests))

    @app.task
    async def declare_topics():
        """Create every topic this worker reads or writes that does not exist yet, with
        STREAMREC_TOPIC_PARTITIONS partitions. Faust declares only its internal topics; without
        this, a topic the worker writes would first be created by a produce: with a broker's
        defaults, or (auto-creation off) never, stalling that send."""
        for topic in topics.values():
            try:
                await topic.maybe_declare()
            except Exception as exc:  # noqa: BLE001 - e.g. no CREATE right: the operator made them
                log.warning("could not create topic %s (%r); it must exist already", topic.get_topic_name(), exc)

    # Periodic work: in the recommender's process, its slow parts (merging every worker's
    # popularity shares, k-means over the users) on a thread there of their own, so that a batch
    # of events never waits behind a whole merge or fit (in-process, a flush held the recommender
    # 50-110 ms; reading the users for a groups refresh takes ~20 ms per 1,000 users).
    @app.timer(interval=settings.popularity_flush_s)
    async def persist_state():
        await in_executor("persist_state")

    async def refresh_groups() -> None:
        summary = await in_executor("refresh_groups")
        state.segments = summary["segments"]

    @app.task
    async def first_groups():
        """Groups and segment counts from what is stored, soon after start (then on the timer)."""
        await asyncio.sleep(2.0)
        await refresh_groups()

    app.timer(interval=settings.groups_refresh_s)(refresh_groups)

    if catalog_refresh_s is not None:
        @app.timer(interval=catalog_refresh_s)
        async def refresh_catalog():
            """Read the catalog again for exact retrieval: items other workers consumed."""
            await in_executor("refresh_catalog")

    # ---- model rollout: follow streamrec.model-updates, swap with no gap in answering ----------
    swap_lock = asyncio.Lock()

    async def apply_model_update(update: ModelUpdate) -> None:
        """Load the announced encoder and embed the catalog with it on a thread of its own while
        the recommender keeps answering with the old one; then switch between two batches."""
        async with swap_lock:
            if update.version == recommender.model_version:
                return
            state.model_update = {"version": update.version, "status": "embedding", "reason": update.reason,
                                  "started_at": time.time()}
            log.info("model update: switching to %s (%s)", update.version, update.reason or "announced")
            try:
                result = await in_executor("swap_model", update.path, update.version)
            except Exception as exc:  # noqa: BLE001 - a bad announcement must not stop the worker
                log.error("model update to %s failed, still serving %s: %s", update.version,
                          recommender.model_version, exc)
                state.model_update = {**state.model_update, "status": "failed", "error": str(exc)[:500]}
                return
            state.model_update = {**state.model_update, **result, "status": "serving",
                                  "seconds": round(time.time() - state.model_update["started_at"], 1)}

    @app.task
    async def follow_model_updates():
        loop = asyncio.get_running_loop()
        follower = ModelUpdateFollower(
            settings, lambda update: asyncio.run_coroutine_threadsafe(apply_model_update(update), loop)
        )
        app.model_update_follower = follower.start()

    servers = [server.strip() for server in settings.kafka_bootstrap_servers.split(",") if server.strip()]

    @app.timer(interval=settings.broker_check_s)
    async def check_broker():
        """Can any bootstrap server be reached at all? (Faust's consumer retries silently while
        the broker is away; this makes the outage visible on /health and /metrics.)"""
        errors = []
        for server in servers:
            host, _, port = server.rpartition(":")
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)), timeout=2.0)
            except (OSError, asyncio.TimeoutError, ValueError) as exc:
                errors.append(f"{server}: {exc!r}")
                continue
            writer.close()
            state.broker_error = None
            return
        if state.broker_error is None:
            log.warning("no Kafka bootstrap server reachable: %s", "; ".join(errors))
        state.broker_error = "broker unreachable: " + "; ".join(errors)

    @app.timer(interval=5.0)
    async def measure_lag():
        lag = {}
        for tp in app.consumer.assignment():
            position = await app.consumer.position(tp)
            if position is not None:
                lag[(tp.topic, tp.partition)] = max(app.consumer.highwater(tp) - position, 0)
        state.consumer_lag = lag

    @app.page("/status")
    class StatusView(View):
        async def get(self, request: WebRequest) -> Response:
            return self.html(STATUS_PAGE)

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request: WebRequest) -> Response:
            return self.bytes(metrics.exposition(), content_type=CONTENT_TYPE)

    token = settings.http_token.get_secret_value().encode() if settings.http_token else None

    def unauthorized(view: View, request: WebRequest) -> Response | None:
        """None when the request may proceed; a 401 when a token is configured and not presented."""
        if token is None:
            return None
        presented = request.headers.get("Authorization", "").removeprefix("Bearer ").encode()
        if hmac.compare_digest(presented, token):
            return None
        return view.json({"error": "missing or wrong bearer token"}, status=401)

    @app.page("/recommendations/{user_id}")
    class RecommendationsView(View):
        async def get(self, request: WebRequest, user_id: str) -> Response:
            if (denied := unauthorized(self, request)) is not None:
                return denied
            try:
                k = int(request.query.get("k", default_k))
                filters = RequestFilters(
                    category=request.query.get("category"),
                    max_price=_float_or_none(request.query.get("max_price")),
                    min_price=_float_or_none(request.query.get("min_price")),
                )
            except ValueError as exc:
                return self.json({"error": f"bad query parameter: {exc}"}, status=400)
            request_id = request.query.get("request_id")
            ids = (user_id,) if request_id is None else (user_id, request_id)
            if not 1 <= k <= MAX_K or not all(1 <= len(i) <= MAX_ID_LEN for i in ids):
                return self.json({"error": f"k must be 1..{MAX_K}, user_id and request_id 1..{MAX_ID_LEN} characters"},
                                 status=400)
            return self.json(await in_executor("recommend", user_id, k, filters, request_id))

    @app.page("/users/{user_id}")
    class UserView(View):
        async def get(self, request: WebRequest, user_id: str) -> Response:
            if (denied := unauthorized(self, request)) is not None:
                return denied
            if not 1 <= len(user_id) <= 128:
                return self.json({"error": "user_id must be 1..128 characters"}, status=400)
            return self.json(await in_executor("describe_user", user_id))

    def assigned_partitions() -> int:
        try:
            return len(app.consumer.assignment())
        except ConsumerNotStarted:  # asked before Faust's consumer thread is up
            return 0

    @app.page("/health")
    class HealthView(View):
        async def get(self, request: WebRequest) -> Response:
            healthy = state.healthy and state.broker_error is None
            body = {"status": "ok" if healthy else "degraded", "error": state.last_error or state.broker_error,
                    "model_version": recommender.model_version,
                    "assigned_partitions": assigned_partitions()}
            return self.json(body, status=200 if healthy else 503)

    @app.page("/stats")
    class StatsView(View):
        async def get(self, request: WebRequest) -> Response:
            if (denied := unauthorized(self, request)) is not None:
                return denied
            return self.json({
                "processed": dict(state.processed),
                "dead_lettered": dict(state.dead_lettered),
                "published": state.published,
                "uptime_s": round(time.time() - state.started_at, 1),
                "freshness_last_60s": state.freshness_summary(),
                "healthy": state.healthy and state.broker_error is None,
                "model_version": recommender.model_version,
                "event_encoder": recommender.event_encoder,
                "items_cached": recommender.items_cached,
                "model_update": state.model_update,
                "exploration_rate": {v: round(state.explored[v] / n, 4) for v, n in state.slots.items() if n},
                **await in_executor("status"),
            })

    return app


def _float_or_none(value: str | None) -> float | None:
    return None if value in (None, "") else float(value)


def _flat(results: list[list[Outgoing]]) -> list[Outgoing]:
    return [m for messages in results for m in messages]
