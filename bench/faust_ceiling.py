"""The framework's own ceiling: a Faust agent that does no work, reading a topic from the start.

The pipeline bench compares the worker with a bare aiokafka consumer. Between the two sits
Faust itself: its consumer thread, per-message Event objects, the stream's processors and acks.
This program is that middle row: one Faust app (streamrec's app class and batch stream, the
worker's batch size and windows) whose agent only counts what `take_growing` hands it (`count`),
or also validates each message as the worker does (`decode`: stream.intake.decode), or counts
Faust's plain per-message iteration, `async for value in stream` (`each`). It reads the
topic as a new consumer group from the earliest offset, times from the first message to the
expected count, prints one JSON line `{"events": n, "seconds": s, "rate": r}` and stops.

Run by bench.pipeline in a child process (a Faust worker owns its process's event loop):

    python -m bench.faust_ceiling --bootstrap HOST:PORT --topic T --expected N [--work count|decode|each]
        [--workdir DIR]

The agent ends the process with os._exit, which skips every cleanup: the Faust workdir is then
removed by whoever made it (the caller's --workdir, or this program's own temporary one).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable

import faust

from inference.schemas import Event
from stream.batching import GrowingBatchStream
from stream.intake import Limits, decode
from stream.settings import StreamSettings
from stream.transport import StreamrecApp

WORKS = ("count", "decode", "each")


def build(bootstrap: str, topic: str, expected: int, work: str, settings: StreamSettings,
          on_done: Callable[[], None] = lambda: None) -> StreamrecApp:
    app = StreamrecApp(
        f"bench-ceiling-{uuid.uuid4().hex[:8]}",  # a new group: reads from the earliest offset
        broker=f"kafka://{bootstrap}",
        store="memory://",
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        autodiscover=False,
        Stream=GrowingBatchStream,
    )
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    source = app.topic(topic, value_type=bytes, value_serializer="raw", internal=False)
    limits = Limits()
    seen = {"n": 0, "first": 0.0}

    def counted(n: int) -> None:
        if not seen["n"]:
            seen["first"] = time.perf_counter()
        seen["n"] += n
        if seen["n"] >= expected:
            seconds = time.perf_counter() - seen["first"]
            print(json.dumps({"events": seen["n"], "seconds": seconds, "rate": seen["n"] / seconds}), flush=True)
            on_done()
            os._exit(0)  # a bench child: no commit or group leave to wait for

    @app.agent(source)
    async def count(stream):
        if work == "each":
            async for _ in stream:
                counted(1)
            return
        async for batch in stream.take_growing(settings.batch_size, idle_s=settings.batch_window_s,
                                               max_wait_s=settings.batch_max_wait_s):
            if work == "decode":
                for event in batch:
                    decode(event.value, Event, limits)
            counted(len(batch))

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--expected", type=int, required=True)
    parser.add_argument("--work", choices=WORKS, default="count")
    parser.add_argument("--workdir", help="the Faust workdir, kept (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="streamrec-ceiling-")
    remove = (lambda: None) if args.workdir else (lambda: shutil.rmtree(workdir, ignore_errors=True))
    app = build(args.bootstrap, args.topic, args.expected, args.work, StreamSettings(), on_done=remove)
    sys.argv = [sys.argv[0]]
    try:
        faust.Worker(app, loglevel="WARNING", quiet=True, workdir=workdir, redirect_stdouts=False).execute_from_commandline()
    finally:
        remove()
    return 1  # the agent exits the process when it has counted everything; reaching here is a failure


if __name__ == "__main__":
    raise SystemExit(main())
