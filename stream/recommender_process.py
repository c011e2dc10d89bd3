"""The worker's `Recommender` in a child process of its own, fed over a pipe.

Why a process and not a thread: Faust's event loop, aiokafka's consumer thread and the
recommender share one interpreter lock in one process, so at load the Kafka threads queued for
it after every socket call and the recommender got well under one of the machine's cores
(bench/reports/perf-20261202b: the consumer thread's time was mostly waiting for the lock). In
a child process the recommender has an interpreter to itself; the worker's process keeps Kafka,
validation, publishing and HTTP.

The parent sends `(call id, operation, arguments)`; the child runs each operation on its lane
(one thread for all recommender state, one for periodic maintenance, one for model swaps, as
the worker did in-process) and answers `(call id, ok, result, stage timings, snapshot)`.
Messages cross as pickles: validated pydantic models in, wire-ready bytes out (`Outgoing`), so
the parent never re-encodes a recommendation.

The child owns the store: it opens it (and its file lock) and closes it. It ignores SIGINT
(a Ctrl-C reaches the whole process group; the parent stops first and then closes the child,
which flushes). A worker killed outright takes the child with it (`_die_with_parent`); a child
that dies makes the worker stop (`on_death`), unacked, for its orchestrator to restart.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NamedTuple

log = logging.getLogger("streamrec.recommender")


class RecommenderFailed(RuntimeError):
    """The recommender process could not start, or it died."""


class RemoteError(RuntimeError):
    """An operation failed in the recommender process with an exception that cannot be pickled."""


class Outgoing(NamedTuple):
    """One message for the worker to publish, encoded in the recommender process."""

    topic: str  # a name in stream.settings.TOPICS
    key: bytes
    value: bytes
    trigger_event_id: str | None = None  # recommendations: the event answered
    variant: str | None = None  # recommendations: the A/B variant
    slots: int = 0  # recommendations: items recommended
    explored: int = 0  # recommendations: of which explored
    segment: str | None = None  # segment changes: the new segment


class Ready(NamedTuple):
    model_version: str
    precision: str
    providers: tuple[str, ...]
    event_encoder: str | None  # the served event encoder's version, where the model has one


class Snapshot(NamedTuple):
    """What the worker's process reads without a call: sent with every answer."""

    model_version: str
    items_cached: int
    event_encoder: str | None


def outgoing(messages) -> list[Outgoing]:
    from inference.schemas import ErasureConfirmed, Recommendation, SegmentChange

    out = []
    for m in messages:
        if isinstance(m, Recommendation):
            out.append(Outgoing("recommendations", m.user_id.encode(), m.to_bytes(), m.trigger_event_id,
                                m.variant or "default", len(m.items), sum(i.explore for i in m.items)))
        elif isinstance(m, SegmentChange):
            out.append(Outgoing("segments", m.user_id.encode(), m.to_bytes(), segment=m.segment))
        elif isinstance(m, ErasureConfirmed):
            out.append(Outgoing("erasures-confirmed", m.user_id.encode(), m.to_bytes()))
        else:
            raise TypeError(f"nothing publishes a {type(m).__name__}")
    return out


# --------------------------------------------------------------------------- the child's side


class RecommenderService:
    """The operations the worker asks of its recommender, each on its lane."""

    LANES = {"persist_state": "maintenance", "refresh_groups": "maintenance", "refresh_catalog": "maintenance",
             "swap_model": "swap"}

    def __init__(self, recommender) -> None:
        self.recommender = recommender
        self.stages: deque[tuple[str, float]] = deque()
        recommender.on_stage = lambda name, seconds: self.stages.append((name, seconds))
        self.lanes = {name: ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
                      for name in ("recommender", "maintenance", "swap")}

    def lane(self, operation: str) -> ThreadPoolExecutor:
        return self.lanes[self.LANES.get(operation, "recommender")]

    def on_recommender(self, fn: Callable, *args: Any):
        """Run one step on the recommender's thread (from a maintenance or swap lane)."""
        return self.lanes["recommender"].submit(fn, *args).result()

    def snapshot(self) -> Snapshot:
        tower = self.recommender.tower
        return Snapshot(self.recommender.model_version, len(self.recommender.items),
                        None if tower is None else tower.version)

    def drain_stages(self) -> list[tuple[str, float]]:
        taken = []
        while self.stages:
            taken.append(self.stages.popleft())
        return taken

    # ---- the recommender's lane --------------------------------------------------------
    def _outgoing(self, messages) -> list[Outgoing]:
        """`outgoing`, timed as the stage `serialize`: the answers' JSON is work of this process too."""
        start = time.perf_counter()
        out = outgoing(messages)
        self.stages.append(("serialize", time.perf_counter() - start))
        return out

    def events(self, events, shares) -> tuple[list[Outgoing], dict[str, int] | None]:
        out = self._outgoing(self.recommender.process_events(events, shares))
        changed = any(o.topic == "segments" for o in out)
        return out, dict(self.recommender.segment_counts) if changed else None

    def items(self, items):
        return self.recommender.upsert_items(items)

    def intents(self, intents) -> list[Outgoing]:
        return self._outgoing(self.recommender.seed_interests(intents))

    def requests(self, requests) -> list[Outgoing]:
        return self._outgoing([self.recommender.recommend(r.user_id, k=r.k, filters=r.filters,
                                                          request_id=r.request_id) for r in requests])

    def erasures(self, erasures) -> list[Outgoing]:
        return self._outgoing(self.recommender.erase_users(erasures))

    def recommend(self, user_id: str, k: int, filters, request_id: str | None = None) -> dict:
        return self.recommender.recommend(user_id, k=k, filters=filters, request_id=request_id).model_dump(
            mode="json", by_alias=True)

    def describe_user(self, user_id: str) -> dict:
        return self.recommender.describe_user(user_id)

    def status(self) -> dict:
        return self.recommender.status()

    # ---- other lanes: steps on the recommender's thread, the slow part on their own --------
    def persist_state(self) -> None:
        """Write the popularity shares, merge every worker's (the slow part, off the
        recommender's thread), rank by the merge."""
        shares = self.on_recommender(self.recommender.write_state)
        merged = self.recommender.merge_popularity(shares)
        self.on_recommender(self.recommender.install_popularity, merged)

    def refresh_groups(self) -> dict:
        """The users collection a page at a time between event batches, then k-means here."""
        from inference.recommender import UsersRead

        read = UsersRead()
        while read.add(self.on_recommender(self.recommender.users_page, read.offset)):
            pass
        fitted = self.recommender.fit_groups(read.vectors, self.on_recommender(self.recommender.item_records))
        return self.on_recommender(self.recommender.install_groups, read.segments, fitted)

    def refresh_catalog(self) -> int:
        """Read the whole catalog again here (the slow part) and install it between two batches:
        the recommender's in-memory copy then holds what other workers upserted or deleted.
        Returns the items held, 0 where the catalog is too big to be copied."""
        collection = self.on_recommender(self.recommender.begin_catalog_read)
        if collection is None:  # too big to search in memory
            return 0
        records = list(self.recommender.read_catalog(collection))  # read here, not on the recommender's thread
        return self.on_recommender(self.recommender.install_catalog, collection, records)

    def swap_model(self, path: str, version: str) -> dict:
        """Load the announced encoder and embed the catalog with it here, while the recommender
        keeps answering with the old one; then switch between two batches."""
        from inference.recommender import ModelSwapError, open_encoder, open_event_encoder

        encoder = open_encoder(self.recommender.settings, Path(path))
        if encoder.version != version:
            raise ModelSwapError(f"{path} holds model {encoder.version}, not {version}")
        tower = open_event_encoder(self.recommender.settings, Path(path))
        plan = self.on_recommender(self.recommender.plan_swap, encoder, path, tower)
        vectors = encoder.encode(plan.texts)
        return self.on_recommender(self.recommender.finish_swap, plan, vectors)

    def close(self) -> None:
        """Persist the popularity counted since the last flush; release the store."""
        for name in ("maintenance", "swap"):
            self.lanes[name].shutdown(wait=True, cancel_futures=True)
        recommender = self.lanes["recommender"]
        recommender.submit(self.recommender.flush_state).result()
        recommender.submit(self.recommender.store.close).result()
        recommender.shutdown(wait=True)


OPERATIONS = frozenset({"events", "items", "intents", "requests", "erasures", "recommend", "describe_user",
                        "status", "persist_state", "refresh_groups", "refresh_catalog",
                        "swap_model"})


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - e.g. pydantic's ValidationError
        return RemoteError(f"{type(exc).__name__}: {exc}")


def _die_with_parent(parent_pid: int) -> None:
    """A worker killed outright takes its recommender with it, as one process would go: its
    replacement finds the store's lock free at once, and nothing is flushed that a crash of the
    worker would not have flushed (Linux's PR_SET_PDEATHSIG; the worker's main thread, which
    starts this process, lives as long as the worker)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the pipe's EOF below still stops this process
        return
    if os.getppid() != parent_pid:  # the worker died before the signal was asked for
        os._exit(1)


def _child_main(conn: Connection, loglevel: str, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=loglevel.upper(), stream=sys.stderr,
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    from inference.blas import blas_threads
    from inference.recommender import open_recommender
    from inference.settings import InferenceSettings
    from inference.store import StoreError

    try:
        settings = InferenceSettings()
        blas_threads(settings.blas_threads)
        recommender = open_recommender(settings)
    except BaseException as exc:  # noqa: BLE001 - told to the parent, which exits with it
        conn.send(("failed", "".join(traceback.format_exception(exc))))
        raise SystemExit(1) from None
    service = RecommenderService(recommender)
    conn.send(("ready", Ready(recommender.model_version, recommender.encoder.precision,
                              tuple(recommender.encoder.providers), service.snapshot().event_encoder)))
    send_lock = threading.Lock()

    def run(call_id: int, operation: str, args: tuple) -> None:
        try:
            ok, result = True, getattr(service, operation)(*args)
        except StoreError as exc:
            recommender.profiles.invalidate()  # what the cache holds may not be what was stored
            ok, result = False, _picklable(exc)
        except Exception as exc:  # noqa: BLE001 - the parent decides (dead letter, retry)
            ok, result = False, _picklable(exc)
        answer = (call_id, ok, result, service.drain_stages(), service.snapshot())
        with send_lock:
            try:
                conn.send(answer)
            except (OSError, ValueError) as exc:  # the parent is gone
                log.warning("could not answer the worker: %r", exc)
            except Exception as exc:  # noqa: BLE001 - an unpicklable result: say so, not hang
                conn.send((call_id, False, RemoteError(f"{operation} returned what cannot be sent: {exc!r}"),
                           [], service.snapshot()))

    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            log.warning("the worker's process went away; flushing and stopping")
            break
        if request is None:  # close
            break
        call_id, operation, args = request
        service.lane(operation).submit(run, call_id, operation, args)
    service.close()
    with send_lock:
        try:
            conn.send(("closed", None))
        except (OSError, ValueError):
            pass


# --------------------------------------------------------------------------- the worker's side


class RecommenderProcess:
    """Starts the child, sends it operations, resolves their futures from a reader thread."""

    def __init__(self, *, loglevel: str = "info", on_stage: Callable[[str, float], None] | None = None,
                 on_death: Callable[[str], None] | None = None) -> None:
        self.on_stage, self.on_death = on_stage, on_death
        self.loglevel = loglevel
        self.ready: Ready | None = None
        self.snapshot: Snapshot | None = None
        self._pending: dict[int, Future] = {}
        self._next_id = 0
        self._lock = threading.Lock()
        self._closing = False
        self._closed = threading.Event()
        self.died: str | None = None

    def start(self) -> RecommenderProcess:
        context = multiprocessing.get_context("spawn")
        parent_conn, child_conn = context.Pipe()
        self.process = context.Process(target=_child_main, args=(child_conn, self.loglevel, os.getpid()),
                                       name="streamrec-recommender", daemon=False)
        self.process.start()
        child_conn.close()
        self._conn = parent_conn
        try:
            kind, value = parent_conn.recv()
        except EOFError:
            self.process.join(timeout=5)
            raise RecommenderFailed(f"the recommender process exited with {self.process.exitcode} before it was ready") from None
        if kind == "failed":
            self.process.join(timeout=5)
            raise RecommenderFailed(f"the recommender could not start:\n{value}")
        self.ready = value
        self.snapshot = Snapshot(value.model_version, 0, value.event_encoder)
        threading.Thread(target=self._read, name="recommender-answers", daemon=True).start()
        return self

    @property
    def model_version(self) -> str:
        return self.snapshot.model_version

    @property
    def items_cached(self) -> int:
        return self.snapshot.items_cached

    @property
    def event_encoder(self) -> str | None:
        return self.snapshot.event_encoder

    def submit(self, operation: str, *args: Any) -> Future:
        if operation not in OPERATIONS:
            raise ValueError(f"unknown recommender operation {operation!r}")
        future: Future = Future()
        with self._lock:
            if self.died is not None or self._closing:
                future.set_exception(RecommenderFailed(self.died or "the recommender process is closing"))
                return future
            call_id = self._next_id = self._next_id + 1
            self._pending[call_id] = future
            try:
                self._conn.send((call_id, operation, args))
            except Exception as exc:
                del self._pending[call_id]
                if isinstance(exc, (OSError, EOFError)):
                    raise RecommenderFailed(f"the recommender process is gone: {exc!r}") from exc
                raise
        return future

    def _read(self) -> None:
        while True:
            try:
                answer = self._conn.recv()
            except (EOFError, OSError):
                break
            if answer[0] == "closed":
                break
            call_id, ok, result, stages, self.snapshot = answer
            if self.on_stage is not None:
                for name, seconds in stages:
                    self.on_stage(name, seconds)
            with self._lock:
                future = self._pending.pop(call_id)
            if ok:
                future.set_result(result)
            else:
                future.set_exception(result)
        self.process.join(timeout=5)
        with self._lock:
            if not self._closing:
                self.died = f"the recommender process exited with {self.process.exitcode}"
            reason = self.died or "the recommender process closed"
            pending, self._pending = list(self._pending.values()), {}
        self._closed.set()
        for future in pending:  # cancelled by the close, or lost with the process
            future.set_exception(RecommenderFailed(reason))
        if self.died is not None:
            log.error("%s; the worker stops", self.died)
            if self.on_death is not None:
                self.on_death(self.died)

    def close(self, timeout_s: float = 60.0) -> None:
        """Ask the child to flush and stop after what it was given; wait for it."""
        if not hasattr(self, "process"):
            return
        with self._lock:
            self._closing = True
            if self.died is None:
                try:
                    self._conn.send(None)
                except (OSError, ValueError):
                    pass
        if self.ready is not None:  # else no reader thread: the child failed to start
            self._closed.wait(timeout_s)
        self.process.join(timeout=timeout_s)
        if self.process.exitcode is None:
            log.error("the recommender process did not stop within %.0fs; terminating it", timeout_s)
            self.process.terminate()
            self.process.join(timeout=5)
