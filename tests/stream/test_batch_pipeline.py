"""stream/batch_pipeline.py: the order and the overlap of validate, compute, finish and ack, with
fake steps on one event loop (no broker: the agents it drives run against one in test_pipeline.py,
test_outages.py and test_crash_recovery.py)."""

from __future__ import annotations

import asyncio

import pytest

from stream.batch_pipeline import handle_overlapped


async def from_list(batches, gap_s: float = 0.0):
    for batch in batches:
        if gap_s:
            await asyncio.sleep(gap_s)
        yield batch


class Recorder:
    """Fake steps that log what happened when, with a delay per step."""

    def __init__(self, compute_s: float = 0.02, finish_s: float = 0.02, fail_compute_at: int | None = None):
        self.log: list[tuple[str, int]] = []
        self.compute_s, self.finish_s, self.fail_compute_at = compute_s, finish_s, fail_compute_at
        self.computing = self.finishing = self.most_finishing = 0
        self.overlapped = 0  # computes that started while another batch was finishing
        self.done_s: list[float] = []

    async def validate(self, batch):
        self.log.append(("validate", batch))
        return batch

    async def compute(self, batch):
        assert self.computing == 0, "two computes at once"
        self.computing += 1
        self.overlapped += self.finishing > 0
        self.log.append(("compute", batch))
        await asyncio.sleep(self.compute_s)
        self.computing -= 1
        if batch == self.fail_compute_at:
            raise RuntimeError(f"the recommender died on batch {batch}")
        return batch * 10

    async def finish(self, batch, result):
        assert result == batch * 10
        self.finishing += 1
        self.most_finishing = max(self.most_finishing, self.finishing)
        self.log.append(("finish", batch))
        await asyncio.sleep(self.finish_s)
        self.finishing -= 1

    async def ack(self, batch):
        self.log.append(("ack", batch))

    def steps(self) -> dict:
        return dict(validate=self.validate, compute=self.compute, finish=self.finish, ack=self.ack,
                    on_done=self.done_s.append)

    def order(self, step: str) -> list[int]:
        return [batch for name, batch in self.log if name == step]


def test_every_step_runs_in_batch_order_and_each_ack_follows_its_finish():
    rec = Recorder()
    asyncio.run(handle_overlapped(from_list(range(8)), **rec.steps()))
    for step in ("validate", "compute", "finish", "ack"):
        assert rec.order(step) == list(range(8)), step
    for batch in range(8):
        assert rec.log.index(("finish", batch)) < rec.log.index(("ack", batch))
        assert rec.log.index(("compute", batch)) < rec.log.index(("finish", batch))
    assert len(rec.done_s) == 8 and all(s > 0 for s in rec.done_s)


def test_the_next_batch_is_computed_while_the_last_one_finishes():
    """The point of it: with compute and finish equally long, 8 batches take ~9 steps, not 16."""
    rec = Recorder(compute_s=0.03, finish_s=0.03)

    async def main():
        loop = asyncio.get_running_loop()
        start = loop.time()
        await handle_overlapped(from_list(range(8)), **rec.steps())
        return loop.time() - start

    elapsed = asyncio.run(main())
    assert rec.overlapped >= 6  # every compute after the first found the last batch finishing
    assert rec.most_finishing == 1
    assert elapsed < 16 * 0.03  # one after the other would take at least this


def test_at_most_one_batch_finishes_while_finish_is_slow():
    """A broker that is slow to acknowledge holds the agent back instead of piling batches up."""
    rec = Recorder(compute_s=0.001, finish_s=0.05)
    asyncio.run(handle_overlapped(from_list(range(6)), **rec.steps()))
    assert rec.most_finishing == 1
    # batch n+2 is validated only once batch n finished
    for batch in range(4):
        assert rec.log.index(("ack", batch)) < rec.log.index(("validate", batch + 2))


def test_a_failed_compute_stops_and_leaves_that_batch_and_later_ones_unacked():
    rec = Recorder(fail_compute_at=3)
    with pytest.raises(RuntimeError, match="died on batch 3"):
        asyncio.run(handle_overlapped(from_list(range(8)), **rec.steps()))
    assert rec.order("ack") == [0, 1, 2]
    assert 3 not in rec.order("finish") and max(rec.order("validate")) <= 3


def test_a_lone_batch_is_finished_without_waiting_for_the_next():
    """At a low rate the next batch may be seconds away: a batch's answers must not wait for it."""
    rec = Recorder(compute_s=0.01, finish_s=0.01)

    async def main():
        task = asyncio.create_task(handle_overlapped(from_list([0, 1], gap_s=0.5), **rec.steps()))
        await asyncio.sleep(0.5 + 0.1)  # batch 0 taken at ~0.5 s; batch 1 comes at ~1.0 s
        acked_before_next = rec.order("ack")
        await task
        return acked_before_next

    assert asyncio.run(main()) == [0]
    assert rec.order("ack") == [0, 1]


def test_cancelling_lets_the_finishing_batch_complete():
    """A stopping agent is cancelled while it waits for the next batch; the last batch's answers
    still go out and its input is acked."""
    rec = Recorder(compute_s=0.01, finish_s=0.1)

    async def endless():
        yield 0
        await asyncio.sleep(3600)

    async def main():
        task = asyncio.create_task(handle_overlapped(endless(), **rec.steps()))
        await asyncio.sleep(0.05)  # batch 0 computed, now finishing
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert rec.order("ack") == [0]
