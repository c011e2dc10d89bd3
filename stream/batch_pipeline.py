"""Handle a stream of batches one step overlapped: a batch's answers go out while the next is computed.

An agent handles a batch in three steps: validate it (the worker's process), compute it (the
recommender's process), finish it (publish the answers, wait for the broker's acks, ack the
input). Done one batch after the other, the recommender's process sat idle while the worker
waited for the broker: at 1,000 events/s that was a sixth of each batch (bench/reports/
perf-20261207). Here a batch's `finish` runs as a task while the next batch is taken, validated
and computed, with these guarantees:

- `compute` is called one batch at a time, in batch order (profile updates stay ordered);
- `finish` and `ack` run in batch order, and a batch is acked only after its `finish` returned,
  so Faust's at-least-once delivery holds: what was not acked is consumed again;
- at most one batch is finishing while the next is computed: while `finish` cannot complete
  (a broker refusing sends), no further batch is taken;
- an exception from `validate` or `compute` (the worker stops) leaves that batch and every later
  one unacked.

`validate`, `compute` and `finish` do their own retrying (stream/app.py wraps them in
`until_done`); this module only orders them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import Any, TypeVar

B = TypeVar("B")  # a batch as taken from the stream
A = TypeVar("A")  # what validation accepted of it


async def handle_overlapped(
    batches: AsyncIterable[B],
    *,
    validate: Callable[[B], Awaitable[A]],
    compute: Callable[[A], Awaitable[Any]],
    finish: Callable[[A, Any], Awaitable[None]],
    ack: Callable[[B], Awaitable[None]],
    on_done: Callable[[float], None] | None = None,
    stop_timeout_s: float = 30.0,
) -> None:
    """Take every batch of `batches` and handle it: validate, compute, then (in a task) finish
    and ack. `on_done` gets each batch's seconds from being taken to being acked. On leaving
    (the stream ended, or the agent was cancelled), waits up to `stop_timeout_s` for the last
    batch to finish."""
    finishing: asyncio.Task | None = None
    try:
        async for batch in batches:
            taken_at = time.perf_counter()
            accepted = await validate(batch)
            computing = asyncio.create_task(compute(accepted))
            previous, finishing = finishing, asyncio.create_task(
                _finish(batch, accepted, computing, finishing, finish, ack, on_done, taken_at))
            await computing
            if previous is not None:
                await previous
    finally:
        if finishing is not None:
            done, _ = await asyncio.wait([finishing], timeout=stop_timeout_s)
            for task in done:  # its error, if any, was raised above already or stops the worker
                if not task.cancelled():
                    task.exception()


async def _finish(batch, accepted, computing: asyncio.Task, previous: asyncio.Task | None,
                  finish, ack, on_done, taken_at: float) -> None:
    result = await computing
    if previous is not None:
        await previous
    await finish(accepted, result)
    await ack(batch)
    if on_done is not None:
        on_done(time.perf_counter() - taken_at)
