"""The worker app's pure helpers (its agents run against a real broker in test_pipeline.py,
test_outages.py and the rest of this folder)."""

from __future__ import annotations

import asyncio

import pytest

from stream.app import SendTimeout, acknowledged


def test_acknowledged_returns_once_every_send_is_acked():
    async def main():
        loop = asyncio.get_running_loop()
        sends = [loop.create_future() for _ in range(3)]
        for n, send in enumerate(sends):
            loop.call_later(0.01 * n, send.set_result, n)
        await acknowledged(sends, 5.0, "recommendations")
        await acknowledged([], 0.01, "nothing")

    asyncio.run(main())


def test_acknowledged_gives_up_on_an_unanswered_send_without_cancelling_it():
    async def main():
        loop = asyncio.get_running_loop()
        answered, unanswered = loop.create_future(), loop.create_future()
        answered.set_result("ok")
        with pytest.raises(SendTimeout, match=r"did not acknowledge 1 of 2 recommendations within 0\.05s"):
            await acknowledged([answered, unanswered], 0.05, "recommendations")
        assert not unanswered.cancelled()  # the producer still owns it; a late ack must not fail
        unanswered.set_result("late")

    asyncio.run(main())


def test_acknowledged_raises_the_error_a_send_failed_with():
    async def main():
        loop = asyncio.get_running_loop()
        failed = loop.create_future()
        failed.set_exception(RuntimeError("NOT_LEADER_FOR_PARTITION"))
        with pytest.raises(RuntimeError, match="NOT_LEADER"):
            await acknowledged([failed], 1.0, "dead letters")

    asyncio.run(main())
