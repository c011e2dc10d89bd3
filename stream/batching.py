"""Batches that grow while events keep coming: a Faust stream with `take_growing`.

Faust's `take_events(max_, within)` handles whatever arrived in a fixed window after the previous
batch was handled (the buffer is closed while a batch is being handled). With a short window a
worker draining a backlog handles ~60 events at a time, and a recommendation per user per batch
costs the same whether it covers 1 event or 20; with a long window every quiet event waits the
whole window. `take_growing` keeps a batch open while events keep arriving and closes it after a
quiet gap (`idle_s`), at `max_` events, or `max_wait_s` after its first event, whichever comes
first: an event that arrives alone is handled after `idle_s`, and a backlog drains in full batches.

It is `take_events` of faust-streaming 0.15.3 with only the wait changed (same buffering
processor, the buffer closed while the batch is handled, every event acked after its batch was
handled), so the worker keeps Faust's at-least-once semantics; `_check_faust` fails loudly if the
private parts it uses move.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import faust
from faust.types import EventT
from mode.utils.aiter import aiter
from mode.utils.futures import notify

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
        batch, i.e. after it handled this one."""
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
        events: list[EventT] = []
        buffer_full = asyncio.Event()
        buffer_consumed = asyncio.Event()
        buffer_consuming: asyncio.Future | None = None
        loop = asyncio.get_running_loop()
        first_at = last_at = 0.0
        acks_enabled = self.enable_acks

        async def add_to_buffer(value):
            nonlocal buffer_consuming, first_at, last_at
            try:
                if buffer_consuming is not None:  # the batch is being handled: wait for it
                    try:
                        await buffer_consuming
                    finally:
                        buffer_consuming = None
                event = self.current_event
                if event is None:
                    raise RuntimeError("take_growing found current_event is None")
                last_at = loop.time()
                if not events:
                    first_at = last_at
                events.append(event)
                if len(events) >= max_:
                    buffer_full.set()
                    buffer_consumed.clear()
                    await self.wait(buffer_consumed)  # never more than max_ in a batch
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
                await self.wait_for_stopped(buffer_full, timeout=idle_s)
                # Still filling: wait until idle_s after the latest event, or the longest wait.
                while events and not buffer_full.is_set() and not self.should_stop:
                    now = loop.time()
                    close_at = min(last_at + idle_s, first_at + max_wait_s)
                    if now >= close_at:
                        break
                    await self.wait_for_stopped(buffer_full, timeout=close_at - now)
                if not events:
                    continue
                buffer_consuming = loop.create_future()
                batch = list(events)
                try:
                    yield batch
                finally:
                    events.clear()
                    for event in batch:
                        await self.ack(event)
                    notify(buffer_consuming)
                    buffer_full.clear()
                    buffer_consumed.set()
        finally:
            self.enable_acks = acks_enabled
            self._processors.remove(add_to_buffer)

