"""Batches that grow while events keep coming: a Faust stream with `take_growing`.

Faust's `take_events(max_, within)` handles whatever arrived in a fixed window after the previous
batch was handled (the buffer is closed while a batch is being handled). With a short window a
worker draining a backlog handles ~60 events at a time, and a recommendation per user per batch
costs the same whether it covers 1 event or 20; with a long window every quiet event waits the
whole window. `take_growing` keeps a batch open while events keep arriving and closes it after a
quiet gap (`idle_s`), at `max_` events, or `max_wait_s` after its first event, whichever comes
first: an event that arrives alone is handled after `idle_s`, and a backlog drains in full batches.

The next batch fills while the caller handles the last one (Faust closes its buffer meanwhile):
the worker's process runs Faust's per-event work on the next batch while its recommender
process computes the last, and a backlog's next batch is ready the moment the last is done (with
the buffer closed, a fifth of a saturated worker's time went to refilling it, perf-20261203b).
At most `max_` events wait in the buffer; the rest stay in the consumer's queue.

It is `take_events` of faust-streaming 0.15.3 otherwise (same buffering processor, every event
acked after its batch was handled, in order), so the worker keeps Faust's at-least-once
semantics; `_check_faust` fails loudly if the private parts it uses move.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import faust
from faust.types import EventT
from mode.utils.aiter import aiter

# Methods of faust.Stream that take_growing calls (it also uses the instance list `_processors`).
_FAUST_PARTS = ("add_processor", "_enable_passive", "current_event", "ack", "wait_for_stopped")


def _check_faust() -> None:
    missing = [name for name in _FAUST_PARTS if not hasattr(faust.Stream, name)]
    if missing:
        raise RuntimeError(f"faust.Stream changed: {missing} gone; re-check stream/batching.py")


_check_faust()


class GrowingBatchStream(faust.Stream):
    """A Faust stream that can also hand out batches that grow while events keep coming."""

    def take_growing(self, max_: int, *, idle_s: float, max_wait_s: float) -> AsyncIterator[list[EventT]]:
        """Lists of at most `max_` events: each closes after `idle_s` without a new event, or
        `max_wait_s` after its first event. Events are acked once the caller asks for the next
        batch, i.e. after it handled this one; the next batch fills meanwhile."""
        if max_ < 1 or idle_s <= 0 or max_wait_s < idle_s:
            raise ValueError(
                f"take_growing needs max_ >= 1 and 0 < idle_s <= max_wait_s, not {max_}, {idle_s}, {max_wait_s}"
            )
        agen = self._take_growing(max_, idle_s, max_wait_s)
        # Registered like Faust's own take generators, so that stopping the stream closes it.
        active = getattr(self, "_active_agens", None)
        if active is not None:
            active.add(agen)
        return agen

    async def _take_growing(self, max_: int, idle_s: float, max_wait_s: float) -> AsyncIterator[list[EventT]]:
        events: list[EventT] = []  # the next batch, filling while the caller handles the last one
        arrived = asyncio.Event()  # set by the first event of a batch
        buffer_full = asyncio.Event()
        taken = asyncio.Event()  # a full buffer was taken as a batch
        loop = asyncio.get_running_loop()
        first_at = last_at = 0.0
        acks_enabled = self.enable_acks

        async def add_to_buffer(value):
            nonlocal first_at, last_at
            try:
                event = self.current_event
                if event is None:
                    raise RuntimeError("take_growing found current_event is None")
                last_at = loop.time()
                if not events:
                    first_at = last_at
                    arrived.set()
                events.append(event)
                if len(events) >= max_:
                    buffer_full.set()
                    taken.clear()
                    await self.wait(taken)  # never more than max_ waiting: the rest stays in Kafka's queue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.exception("Error adding to take_growing buffer: %r", exc)
                await self.crash(exc)
            return value

        self.enable_acks = False  # acked below, after the caller handled the batch
        self.add_processor(add_to_buffer)
        self._enable_passive(aiter(self.channel))
        try:
            while not self.should_stop:
                if not events:
                    # Nothing to time yet: sleep until the first event (a timed poll here cost an
                    # idle worker a fifth of a core: five agents waking every `idle_s`).
                    arrived.clear()
                    await self.wait_for_stopped(arrived)
                    continue
                # Filling: wait until idle_s after the latest event, or the longest wait.
                while events and not buffer_full.is_set() and not self.should_stop:
                    now = loop.time()
                    close_at = min(last_at + idle_s, first_at + max_wait_s)
                    if now >= close_at:
                        break
                    await self.wait_for_stopped(buffer_full, timeout=close_at - now)
                if not events:
                    continue
                batch = list(events)
                events.clear()
                buffer_full.clear()
                taken.set()
                try:
                    yield batch
                finally:
                    for event in batch:
                        await self.ack(event)
        finally:
            self.enable_acks = acks_enabled
            self._processors.remove(add_to_buffer)

