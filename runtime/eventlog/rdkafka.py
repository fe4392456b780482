"""The distributed event log with records sent through librdkafka (confluent-kafka) instead of aiokafka.

Everything but the sending is ``KafkaEventLog``'s: topics, consumers (aiokafka), partitions chosen by us,
the outage watch (a record is refused at once while the broker is away; a stall, a refused connection or a
fatal producer error takes the producers down; the probe brings new ones), the acknowledgement timeout,
the bounded close. What differs is the producer, a ``_Lane`` here:

- a record is handed to librdkafka at once (``produce``: its C threads batch, encode and send, several
  requests in flight per broker, idempotent, ``acks=all``), with a delivery callback;
- its delivery reports are served on the event loop's thread (``poll(0)`` at the end of a turn that handed
  records over, and every POLL_S while answers are awaited), resolving the records' futures with
  (partition, offset). (A thread of its own serving them took more CPU than it saved: its callbacks and the
  loop took turns with the interpreter lock at every report.)

``PINGSTREAM_KAFKA_CLIENT=librdkafka`` chooses it; aiokafka stays the default. bench/produce.py measured the
hand-over at 35 µs of CPU per record against aiokafka's 60 at 10,000 records/s. In the whole system at
10,000 pings/s (bench/e2e.py) the edges used 0.06 cores less but the broker 0.1 more (more, smaller produce
requests, each with its fsync): no gain there yet (bench/results/produce.md).
"""

from __future__ import annotations

import asyncio
import functools
import logging

from runtime import logthrottle

from .base import LogUnavailable
from .kafka import _LATENCY, START_TIMEOUT_S, KafkaEventLog

log = logging.getLogger(__name__)
_LIBRDKAFKA_LOG = logging.getLogger("librdkafka")
logthrottle.throttle("librdkafka", prefix=True)

LINGER_MS = 5
POLL_S = 0.002  # while records await their answer and none are handed over, delivery reports are served this often


class _Lane:
    """One librdkafka producer, its delivery reports served on the event loop's thread: ``poll(0)`` once per
    loop turn in which records were handed over, and every POLL_S while any await their answer."""

    def __init__(self, owner: "RdKafkaEventLog", config: dict) -> None:
        from confluent_kafka import Producer

        self.owner = owner
        self.loop = asyncio.get_running_loop()
        self.fatal: str | None = None  # a fatal error librdkafka reported: every later record would fail
        self.producer = Producer({**config, "error_cb": self._error})
        self.waiting = 0  # records handed over, not answered yet
        self._poll_due: asyncio.Handle | None = None

    def _error(self, err) -> None:
        if err.fatal():
            self.fatal = f"producer failed: {err.name()}"

    def handed(self) -> None:
        """A record was handed over: its answer is looked for at the end of this loop turn."""
        self.waiting += 1
        if self._poll_due is None:
            self._poll_due = self.loop.call_soon(self.poll)

    def delivery(self, fut: asyncio.Future, queued: float, err, msg) -> None:  # within poll: on the loop's thread
        self.waiting -= 1
        self.owner._resolve(fut, queued, err, msg)

    def poll(self) -> None:
        self._poll_due = None
        try:
            self.producer.poll(0)
        except Exception:  # noqa: BLE001 - a failing callback must not end the deliveries
            log.exception("serving Kafka delivery reports failed")
        if self.waiting > 0 and self._poll_due is None:
            self._poll_due = self.loop.call_later(POLL_S, self.poll)

    async def flush(self) -> None:
        """Until librdkafka has answered every record it holds (``close`` bounds it and fails what is left)."""
        while self.waiting > 0:
            self.poll()
            await asyncio.sleep(POLL_S)

    def stop(self) -> None:
        """Drop what is held (its records fail) and stop looking for answers."""
        if self._poll_due is not None:
            self._poll_due.cancel()
            self._poll_due = None
        try:
            self.producer.purge()
            self.producer.poll(0)
        except Exception:  # noqa: BLE001 - a producer being dropped
            pass


class RdKafkaEventLog(KafkaEventLog):
    def __init__(self, *args, **kwargs) -> None:
        # One producer: librdkafka pipelines its requests itself (aiokafka's lanes put requests side by side;
        # here two producers per edge process took 1.1 cores at 10,000 pings/s against 0.7 for one).
        kwargs["producers"] = 1
        super().__init__(*args, **kwargs)

    # --- producers --------------------------------------------------------------------------------------

    async def _new_producer(self) -> _Lane:
        lane = _Lane(self, {
            "bootstrap.servers": self.bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            # A request gathers up to LINGER_MS of records: librdkafka keeps several requests in flight, so
            # without it records go a few at a time and each request costs the edge and the broker (an fsync).
            "linger.ms": LINGER_MS,
            "message.timeout.ms": int(self.ack_timeout_s * 1000),
            "retry.backoff.ms": 50,
            # Its log through Python's logging, errors only, repeated lines throttled: the outage watch reports
            # an outage (librdkafka would print each failed reconnect to stderr).
            "logger": _LIBRDKAFKA_LOG,
            "log_level": 3,
        })
        try:
            # Bootstrap and metadata: a broker that is not there fails the start, as aiokafka's ``start`` does.
            await asyncio.get_running_loop().run_in_executor(None, lane.producer.list_topics, None, START_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - KafkaException and friends
            lane.stop()
            raise LogUnavailable(f"Kafka producer could not start: {exc.__class__.__name__}: {exc}") from exc
        return lane

    def _drop(self, producer: _Lane) -> None:
        producer.stop()

    def _fatal(self) -> str | None:
        return next((lane.fatal for lane in self._producers if lane.fatal), None)

    async def _send_loop(self, lane: int) -> None:
        """No queue to hand over (records go to librdkafka in ``send``): records past their acknowledgement
        timeout fail, a few times a second, until the log closes."""
        while self._senders:
            self._expire()
            await asyncio.sleep(self.sweep_s)

    # --- records ------------------------------------------------------------------------------------------

    def _enqueue(self, topic: str, value: bytes, key: bytes | None, partition: int, fut: asyncio.Future) -> None:
        self._hand(self._producers[partition % len(self._producers)], topic, value, key, partition, fut)

    def _hand(self, lane: _Lane, topic: str, value: bytes, key: bytes | None, partition: int | None,
              fut: asyncio.Future) -> None:
        queued = fut.get_loop().time()
        try:
            # Partition -1 (librdkafka's RD_KAFKA_PARTITION_UA): its partitioner picks one.
            lane.producer.produce(self.name(topic), value, key=key, partition=-1 if partition is None else partition,
                                  on_delivery=functools.partial(lane.delivery, fut, queued))
        except BufferError:
            self._failed(fut, LogUnavailable("Kafka producer queue full"))
            return
        except Exception as exc:  # noqa: BLE001 - KafkaException: the record was not taken
            self._failed(fut, LogUnavailable(f"Kafka refused the record: {exc}"))
            return
        lane.handed()
        self._inflight.append((queued + self.ack_timeout_s, [fut]))

    def _resolve(self, fut: asyncio.Future, queued: float, err, msg) -> None:
        """A record's delivery report (on the loop's thread)."""
        if fut.done():
            return
        if err is not None:
            self._failed(fut, LogUnavailable(f"Kafka did not acknowledge: {err.name()}: {err.str()}"))
            return
        offset = msg.offset()
        if offset is None or offset < 0:
            # A report of success without an offset is no acknowledgement: one such record (among the first of a topic
            # just made, idempotent, acks=all) was in no reading of its partition afterwards
            # (tests/integration/test_eventlog_contract.py). It fails, so the ping is answered 503, not 200. librdkafka
            # reports this when the broker answers a batch with DUPLICATE_SEQUENCE_NUMBER: it takes the batch as
            # written by an earlier send whose answer it missed, and has no offset to give.
            self._failed(fut, LogUnavailable("Kafka gave the record no offset: its delivery is not certain"))
            return
        now = self._last_ack = fut.get_loop().time()
        _LATENCY.observe(now - queued)
        fut.set_result((msg.partition(), offset))

    async def _send_unkeyed(self, topic: str, value: bytes) -> tuple[int, int]:
        fut = asyncio.get_running_loop().create_future()
        self._hand(self._producers[0], topic, value, None, None, fut)
        return await fut

    async def _metadata_partitions(self, name: str) -> int:
        """A topic just created has no partitions in the metadata for a moment (its leaders are being elected):
        asked again until it has, within START_TIMEOUT_S."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while True:
            meta = await loop.run_in_executor(None, self._producers[0].producer.list_topics, name, START_TIMEOUT_S)
            described = meta.topics.get(name)
            if described is not None and described.partitions:
                return len(described.partitions)
            if loop.time() >= deadline:
                raise LogUnavailable(f"Kafka has no partitions for {name}")
            await asyncio.sleep(0.1)

