"""Faust's aiokafka transport with a configurable fetch wait.

faust-streaming 0.15.3 hard-codes `fetch_max_wait_ms=1500` for worker consumers. A broker that
does not wake waiting fetches on new data (Tansu, in development) then adds up to 1.5 s to every
event's freshness; on real Kafka it bounds idle-partition latency too. We set aiokafka's value
after construction and before `start()`, which is where aiokafka builds its fetcher from it.
"""

from __future__ import annotations

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport):
        consumer = super()._create_worker_consumer(transport)
        if not hasattr(consumer, "_fetch_max_wait_ms"):
            raise RuntimeError("aiokafka changed: AIOKafkaConsumer._fetch_max_wait_ms is gone; re-check stream/transport.py")
        consumer._fetch_max_wait_ms = self.app.fetch_max_wait_ms
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class StreamrecApp(faust.App):
    """A Faust app whose worker consumers use `fetch_max_wait_ms` instead of Faust's 1500 ms."""

    fetch_max_wait_ms: int = 10

    def _new_transport(self):
        return _Transport(self.conf.broker_consumer, self)
