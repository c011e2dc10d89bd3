"""Faust's worker with a deadline on its orderly stop.

On SIGTERM Faust stops its consumer, which leaves the consumer group and commits what was
acked. With the broker unreachable that never finishes: aiokafka retries the coordinator
forever, and a worker told to stop kept running (seen: still stopping two minutes after SIGTERM
with its broker gone, when it was killed) until its orchestrator killed it, which also killed
its recommender process before it could persist the popularity counted since the last flush.

With a deadline the worker, once `stop_timeout_s` has passed since the stop began, closes its
recommender process (which persists its state and releases the store) and exits with 1.
Nothing is lost: what was not acknowledged is consumed again by the next owner of its
partition. Set the deadline below the orchestrator's grace period (deploy/: 60 s).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import faust

log = logging.getLogger("streamrec.worker")


class DeadlineWorker(faust.Worker):
    def __init__(self, *args: Any, stop_timeout_s: float, on_overdue: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stop_timeout_s, self.on_overdue = stop_timeout_s, on_overdue

    async def on_stop(self) -> None:
        await super().on_stop()
        # A thread, not a task: the event loop may be what is stuck.
        timer = threading.Timer(self.stop_timeout_s, self._overdue)
        timer.daemon = True  # a stop that finishes in time exits without waiting for it
        timer.start()

    def _overdue(self) -> None:
        log.error("the worker did not stop within STREAMREC_STOP_TIMEOUT_S=%gs (is the broker unreachable?); "
                  "persisting the recommender's state and exiting: unacknowledged input is consumed again",
                  self.stop_timeout_s)
        try:
            self.on_overdue()
        except Exception:  # noqa: BLE001 - exit regardless; say what failed
            log.exception("closing the recommender failed")
        logging.shutdown()
        os._exit(1)
