"""Reading the distributed log through librdkafka (confluent-kafka), behind the ``Consumer`` interface.

What a Kafka log reads with (``KafkaEventLog.consumer``; ``PINGSTREAM_KAFKA_CONSUMER``, by default); its contract is
``kafka_consumer.KafkaConsumer``'s: no auto-commit (a service commits after its effects are done), committed
records only, the group's partitions given by range (a member has the same partition numbers of every topic:
a check's records go to one member; a group is switched from one client to the other as a whole: members of
both kinds agree on the assignor, but such a group did not settle under load, tests/integration/
test_group_copartitioning_kafka.py), and
every call that needs the broker bounded by ``CONSUMER_CALL_S``.

Why: aiokafka parses fetched records in Python on the event loop's thread, about 6 us a record (a
``ConsumerRecord`` of eleven fields each, then ours), a projector's largest cost on Kafka. librdkafka fetches
and parses on its own threads; what is left here is taking its messages and making our records of them, on a
thread of this consumer's, not the loop's. Draining 200,000 pings (bench/projector.py), that thread took 0.7-1.1 us
a record, and the projector's event loop 3.4-4.2 us where it took 6.7-8.2 with aiokafka (bench/results/projector.md).

``consume`` waits for ``num_messages`` or its timeout, whichever is first: a batch of 50,000 asked for would wait
out the whole timeout under light load. So ``getmany`` takes what is there at once, and only when nothing is,
waits for the first message, then takes what came with it: as aiokafka's ``getmany``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import uuid

from runtime import logthrottle

from .base import Consumer, LogUnavailable, Record, TopicPartition, as_record
from .kafka_consumer import CONSUMER_CALL_S, mixed_group, start_waiting

log = logging.getLogger(__name__)
_LIBRDKAFKA_LOG = logging.getLogger("librdkafka.consumer")
logthrottle.throttle("librdkafka.consumer", prefix=True)


START_METADATA_S = 2.0  # a start's first metadata request: longer, and a broker away is said only that late
_INCONSISTENT_GROUP_PROTOCOL = 23  # Kafka's error code: the members offer no assignor in common


def _failed(message) -> bool:
    return message.error() is not None


def _on_daemon_thread(fn) -> asyncio.Future:
    """``fn()`` on a thread of its own that does not hold the process at its exit (a close librdkafka does not
    finish, a broker away in the middle of a rebalance, must not keep a stopping service alive: an executor's
    threads are waited for at exit)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def settle(result, exc) -> None:
        if not done.done():
            done.set_exception(exc) if exc is not None else done.set_result(result)

    def run() -> None:
        try:
            result, exc = fn(), None
        except Exception as error:  # noqa: BLE001 - handed to the awaiting task
            result, exc = None, error
        try:
            loop.call_soon_threadsafe(settle, result, exc)
        except RuntimeError:  # the loop closed meanwhile
            pass

    threading.Thread(target=run, name="kafka-consumer-close", daemon=True).start()
    return done


class RdKafkaConsumer(Consumer):
    def __init__(self, log_, topics: list[str], group: str | None, *, from_end: bool = False) -> None:
        self._log = log_
        self.topics = topics
        self.group = group
        self.from_end = from_end
        self._consumer = None  # confluent_kafka.Consumer, once started
        self._plain: dict[str, str] = {}  # the broker's topic name -> ours (the log's prefix taken off)
        # consume on one thread, every other call on another: librdkafka lets them overlap, so a commit does not
        # wait behind a read waiting for records.
        self._reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kafka-consumer-read")
        self._calls = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kafka-consumer-call")
        self._reading: asyncio.Future | None = None
        self._fatal: str | None = None
        self._mixed = False  # the group refused this member: its others assign otherwise (``mixed_group``)

    # --- start and stop ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the group (or, without one, take every partition), asking again while the broker does not answer
        (``runtime.backoff``, as ``KafkaConsumer.start``)."""
        await start_waiting(self, self._start, self._drop, (LogUnavailable, OSError))

    async def _start(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer as Librdkafka
        from confluent_kafka import TopicPartition as KafkaTP

        await self._log.ensure_topics(self.topics)
        names = [self._log.name(t) for t in self.topics]
        self._plain = {name: topic for name, topic in zip(names, self.topics)}
        consumer = Librdkafka({
            "bootstrap.servers": self._log.bootstrap,
            # Without a group: librdkafka wants an id all the same; nothing is ever committed under it.
            "group.id": self.group or f"pingstream-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "latest" if self.from_end else "earliest",
            "isolation.level": "read_committed",
            "session.timeout.ms": 6000,  # a killed member's partitions move on within seconds
            "heartbeat.interval.ms": 2000,
            "partition.assignment.strategy": "range",
            "max.partition.fetch.bytes": 4 * 1024 * 1024,
            "fetch.wait.max.ms": 100,
            "error_cb": self._error,
            "logger": _LIBRDKAFKA_LOG,
            "log_level": 3,
        })
        self._consumer = consumer
        loop = asyncio.get_running_loop()
        try:
            # Bootstrap and metadata: a broker that is not there fails the start, as aiokafka's does.
            metadata = await loop.run_in_executor(self._calls, consumer.list_topics, None, START_METADATA_S)
        except Exception as exc:  # noqa: BLE001 - KafkaException and friends
            raise LogUnavailable(f"{exc.__class__.__name__}: {exc}") from None
        if self.group is None:
            where = OFFSET_END if self.from_end else OFFSET_BEGINNING
            consumer.assign([KafkaTP(name, p, where) for name in names
                             for p in sorted(metadata.topics[name].partitions) if name in metadata.topics])
        else:
            consumer.subscribe(names)

    def _error(self, err) -> None:  # on a librdkafka call's thread
        if err.code() == _INCONSISTENT_GROUP_PROTOCOL:
            self._mixed = True
        elif err.fatal():
            self._fatal = f"consumer failed: {err.name()}: {err.str()}"

    async def close(self) -> None:
        """Leave the group, bounded: without the broker the process goes anyway (the group notices the missing
        member by its session timeout)."""
        await self._drop()
        self._reader.shutdown(wait=False)
        self._calls.shutdown(wait=False)

    async def _drop(self) -> None:
        consumer, self._consumer = self._consumer, None
        reading, self._reading = self._reading, None
        if consumer is not None:
            if reading is not None:  # a read in progress ends within its timeout; close only after it
                await asyncio.wait({reading}, timeout=CONSUMER_CALL_S)
            try:
                await asyncio.wait_for(_on_daemon_thread(consumer.close), CONSUMER_CALL_S)
            except TimeoutError:
                log.warning("Kafka consumer did not stop within %g s; leaving it", CONSUMER_CALL_S)
            except Exception as exc:  # noqa: BLE001 - closing what failed already
                log.debug("closing the Kafka consumer: %s", exc)

    # --- reading ---------------------------------------------------------------------------------------

    def assignment(self) -> set[TopicPartition]:
        consumer = self._consumer
        if consumer is None:
            return set()
        try:
            assigned = consumer.assignment()
        except Exception:  # noqa: BLE001 - a consumer closed meanwhile
            return set()
        return {TopicPartition(self._plain.get(tp.topic, tp.topic), tp.partition) for tp in assigned}

    async def getmany(self, max_records: int = 10_000, timeout_ms: int = 200) -> list[Record]:
        if self._mixed:
            raise mixed_group(self.group)
        if self._fatal is not None:
            raise LogUnavailable(self._fatal)
        consumer = self._consumer
        if consumer is None:
            raise LogUnavailable("the Kafka consumer is closed")
        reading = self._reading = asyncio.get_running_loop().run_in_executor(
            self._reader, self._take, consumer, max_records, timeout_ms / 1000)
        reading.add_done_callback(self._read_done)
        return await asyncio.shield(reading)  # cancelled (a stop), the read still ends before ``close`` closes

    def _read_done(self, reading: asyncio.Future) -> None:
        if self._reading is reading:
            self._reading = None
        if not reading.cancelled():
            reading.exception()  # taken: a read whose caller went away (a stop) ends without a word

    def _take(self, consumer, max_records: int, timeout_s: float) -> list[Record]:
        """On the reading thread: what librdkafka holds, up to ``max_records``; if nothing, the first message to
        come within ``timeout_s`` and what came with it."""
        if self._consumer is not consumer:
            return []  # closed (or closing) since this read was asked for
        messages = consumer.consume(max_records, 0)
        if not messages and timeout_s > 0:
            messages = consumer.consume(1, timeout_s)
            if messages and max_records > 1:
                messages += consumer.consume(max_records - 1, 0)
        plain = self._plain
        if not any(map(_failed, messages)):
            return [as_record((plain[m.topic()], m.partition(), m.offset(), m.key(), m.value(), m.timestamp()[1]))
                    for m in messages]
        out = []
        for m in messages:
            err = m.error()
            if err is None:
                out.append(as_record((plain[m.topic()], m.partition(), m.offset(), m.key(), m.value(),
                                      m.timestamp()[1])))
            elif err.code() == _INCONSISTENT_GROUP_PROTOCOL:
                raise mixed_group(self.group)
            elif err.fatal():
                raise LogUnavailable(f"Kafka consumer: {err.name()}: {err.str()}")
            else:  # a partition's end, a topic gone...: librdkafka goes on
                log.warning("Kafka consumer: %s: %s", err.name(), err.str())
        return out

    # --- offsets ------------------------------------------------------------------------------------------

    async def _call(self, fn, *args):
        """``fn(*args)`` on the calling thread, bounded by CONSUMER_CALL_S."""
        async with asyncio.timeout(CONSUMER_CALL_S):
            return await asyncio.get_running_loop().run_in_executor(self._calls, fn, *args)

    def _kafka_tps(self, offsets: dict[TopicPartition, int]) -> list:
        from confluent_kafka import TopicPartition as KafkaTP

        return [KafkaTP(self._log.name(tp.topic), tp.partition, o) for tp, o in offsets.items()]

    async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        """Synchronous: returns once the group has the offsets; raises when it refused them (partitions moved to
        another member, a broker away): the records are read again, never lost."""
        if self.group is None or self._consumer is None:
            return
        consumer = self._consumer
        if offsets is None:
            await self._call(self._commit_consumed, consumer)
        elif offsets:
            partitions = self._kafka_tps(offsets)
            done = await self._call(lambda: consumer.commit(offsets=partitions, asynchronous=False))
            failed = [tp for tp in done or () if tp.error is not None]
            if failed:
                raise LogUnavailable(f"commit refused: {failed[0].error}")

    @staticmethod
    def _commit_consumed(consumer) -> None:
        from confluent_kafka import KafkaError, KafkaException

        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args and getattr(exc.args[0], "code", lambda: None)() == KafkaError._NO_OFFSET:
                return  # nothing read since the last commit
            raise

    async def positions(self) -> dict[TopicPartition, int]:
        """Per assigned partition, the offset of the next record this consumer reads: where it got to, else the
        group's committed offset, else where ``auto.offset.reset`` starts it (the log's start or end)."""
        consumer = self._consumer
        if consumer is None:
            return {}

        def find() -> dict[TopicPartition, int]:
            assigned = consumer.assignment()
            if not assigned:
                return {}
            out = {}
            unknown = []
            for tp in consumer.position(assigned):
                if tp.offset >= 0:
                    out[TopicPartition(self._plain[tp.topic], tp.partition)] = tp.offset
                else:
                    unknown.append(tp)
            if unknown and self.group is not None:
                still = []
                for tp in consumer.committed(unknown, timeout=CONSUMER_CALL_S):
                    if tp.offset >= 0:
                        out[TopicPartition(self._plain[tp.topic], tp.partition)] = tp.offset
                    else:
                        still.append(tp)
                unknown = still
            for tp in unknown:
                low, high = consumer.get_watermark_offsets(tp, timeout=CONSUMER_CALL_S, cached=False)
                out[TopicPartition(self._plain[tp.topic], tp.partition)] = high if self.from_end else low
            return out

        return await self._call(find)

    async def end_offsets(self) -> dict[TopicPartition, int]:
        consumer = self._consumer
        if consumer is None:
            return {}

        def find() -> dict[TopicPartition, int]:
            return {TopicPartition(self._plain[tp.topic], tp.partition):
                    consumer.get_watermark_offsets(tp, timeout=CONSUMER_CALL_S, cached=False)[1]
                    for tp in consumer.assignment()}

        return await self._call(find)
