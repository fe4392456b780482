"""The distributed event log: Apache Kafka through aiokafka.

- The producer is idempotent with ``acks=all``: ``produce`` returns once every
  in-sync replica has the record. Partitions are chosen by us with the same
  crc32 mapping the embedded log uses, so a key lands on the same partition
  number on either backend (the monitor relies on pings and its state
  sharing partition numbers).
- Topics are created at start with the configured partition count;
  registry-like topics (latest value per key) are compacted.
- Consumers never auto-commit: a service commits after its effects are done.
- ``prefix`` namespaces every topic name on the broker (tests, or several
  installations on one cluster); records come back with the plain name.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as KafkaTP
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from runtime import metrics
from schemas.events import TOPIC_CHECKS, TOPIC_DEAD_LETTER, TOPIC_MONITOR_STATE, TOPIC_PINGS, TOPIC_TRANSITIONS

from .base import Consumer, EventLog, LogUnavailable, Record, TopicPartition, partition_for

log = logging.getLogger(__name__)
_LATENCY = metrics.PRODUCE_SECONDS.labels("kafka")
_ERRORS = metrics.PRODUCE_ERRORS.labels("kafka")

# Topics whose records are "the latest value for this key": Kafka keeps the last one per key.
COMPACTED = frozenset({TOPIC_CHECKS, TOPIC_MONITOR_STATE})
# Created at start so consumers can subscribe before anything was produced.
KNOWN_TOPICS = (TOPIC_PINGS, TOPIC_CHECKS, TOPIC_TRANSITIONS, TOPIC_DEAD_LETTER, TOPIC_MONITOR_STATE)

ACK_TIMEOUT_S = 10.0  # longest a produce waits for acks before the caller hears LogUnavailable
# Records of one partition gathered at once from which they go to aiokafka as a record batch of their
# own rather than one by one: under load that saves aiokafka's future and callbacks per record, while
# a few records at a time are sent sooner by joining its open batch one by one (bench/edge.py
# compares both at high and low connection counts).
_BATCH_FROM = 16


class KafkaEventLog(EventLog):
    def __init__(
        self,
        bootstrap: str,
        default_partitions: int = 4,
        prefix: str = "",
        replication_factor: int = 1,
        ack_timeout_s: float = ACK_TIMEOUT_S,
    ) -> None:
        self.bootstrap = bootstrap
        self.default_partitions = default_partitions
        self.prefix = prefix
        self.replication_factor = replication_factor
        self.ack_timeout_s = ack_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._counts: dict[str, int] = {}
        self._ensured: set[str] = set()
        self._queue: collections.deque = collections.deque()  # records given to send(), not yet to aiokafka
        self._inflight: collections.deque = collections.deque()  # (deadline, futures) of batches aiokafka holds
        self._wake = asyncio.Event()
        self._sender: asyncio.Task | None = None

    def name(self, topic: str) -> str:
        return self.prefix + topic

    def plain(self, name: str) -> str:
        return name[len(self.prefix):] if self.prefix and name.startswith(self.prefix) else name

    async def start(self) -> None:
        await self.ensure_topics(list(KNOWN_TOPICS))
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=True,
            # No fixed wait: aiokafka keeps one request in flight per broker, and the pings arriving
            # meanwhile share the next one, as group commit does on SQLite; a linger would only add
            # its wait to every acknowledgement.
            linger_ms=0,
            max_batch_size=256 * 1024,
            request_timeout_ms=int(self.ack_timeout_s * 1000),
            # A partition a fresh topic just got is refused (NotLeaderForPartition) for a moment while the
            # broker takes up leadership, and each retry waits this long: short, so the first pings of a
            # new installation wait little more than that moment. Also the pace of retries while a
            # broker is down.
            retry_backoff_ms=50,
        )
        await self._producer.start()
        self._sender = asyncio.create_task(self._send_loop(), name="kafka-send")

    async def close(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            self._wake.set()  # hands what is queued to aiokafka, then ends
            await asyncio.gather(sender, return_exceptions=True)
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()  # flushes what is pending
        self._fail_queued("event log is closed")
        self._inflight.clear()

    async def ensure_topics(self, topics: list[str]) -> None:
        missing = [t for t in topics if t not in self._ensured]
        if not missing:
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=30_000)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            new = [
                NewTopic(
                    self.name(t),
                    self.default_partitions,
                    self.replication_factor,
                    topic_configs={"cleanup.policy": "compact"} if t in COMPACTED else {},
                )
                for t in missing
                if self.name(t) not in existing
            ]
            if new:
                response = await admin.create_topics(new, timeout_ms=30_000)
                for topic, code, *_ in response.topic_errors:
                    if code not in (0, TopicAlreadyExistsError.errno):
                        raise LogUnavailable(f"creating topic {topic}: error code {code}")
                log.info("created topics %s", ", ".join(t.name for t in new))
            for described in await admin.describe_topics([self.name(t) for t in missing]):
                if described["partitions"]:
                    self._counts[self.plain(described["topic"])] = len(described["partitions"])
        finally:
            await admin.close()
        self._ensured.update(missing)

    async def _partition_count(self, topic: str) -> int:
        count = self._counts.get(topic)
        if count is None:
            await self.ensure_topics([topic])
            count = self._counts.get(topic)
            if count is None:
                parts = await self._producer.partitions_for(self.name(topic))
                count = self._counts[topic] = len(parts)
        return count

    async def partitions(self, topic: str) -> list[int]:
        return list(range(await self._partition_count(topic)))

    async def produce(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> tuple[int, int]:
        if self._producer is None:
            raise LogUnavailable("event log is closed")
        try:
            if partition is None and key is not None:
                partition = partition_for(key, await self._partition_count(topic))
            started = time.perf_counter()
            async with asyncio.timeout(self.ack_timeout_s):
                meta = await self._producer.send_and_wait(self.name(topic), value, key=key, partition=partition)
            _LATENCY.observe(time.perf_counter() - started)
        except (KafkaError, TimeoutError, OSError) as exc:
            _ERRORS.inc()
            raise LogUnavailable(f"Kafka did not acknowledge: {exc.__class__.__name__}: {exc}") from exc
        return meta.partition, meta.offset

    def send(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> asyncio.Future:
        """``produce`` without a task per record: records are queued for one sender task, which hands
        what has gathered to aiokafka, per partition as one record batch (from _BATCH_FROM records;
        each record's offset is the batch's base + its place) or else one by one, and resolves each
        record's future from the delivery. A record whose
        partition is not known yet (the first of a topic, or no key) goes through ``produce``."""
        if partition is None:
            count = self._counts.get(topic)
            if key is None or count is None or self._sender is None:
                return super().send(topic, value, key, partition)
            partition = partition_for(key, count)
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self._sender is None:
            self._reject(fut, LogUnavailable("event log is closed"))
            return fut
        self._queue.append((self.name(topic), partition, key, value, fut, loop.time()))
        self._wake.set()
        return fut

    async def _send_loop(self) -> None:
        queue = self._queue
        sweep_s = min(0.5, self.ack_timeout_s / 4)
        while True:
            self._wake.clear()
            while queue:
                groups: dict[tuple[str, int], list] = {}
                while queue:
                    name, partition, *record = queue.popleft()
                    groups.setdefault((name, partition), []).append(record)
                for (name, partition), records in groups.items():
                    if len(records) < _BATCH_FROM:
                        await self._send_each(name, partition, records)
                    else:
                        await self._send_batches(name, partition, records)
            self._expire()
            if self._sender is None:  # closing: everything queued was handed over
                return
            try:
                async with asyncio.timeout(sweep_s):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _send_each(self, name: str, partition: int, records: list) -> None:
        """A few records: each into aiokafka's open batch for the partition, which the next request
        takes, however far the request before it has got (lowest latency when load is light)."""
        for key, value, fut, queued in records:
            await self._hand_over(self._producer.send(name, value, key=key, partition=partition), [fut], queued, 0)

    async def _send_batches(self, name: str, partition: int, records: list) -> None:
        """Records of one partition, in order, as few record batches as fit. aiokafka takes a batch
        for a partition once the one before it went out in a request: meanwhile more records gather,
        and the next batch is bigger (the same group commit the SQLite log does)."""
        i = 0
        while i < len(records):
            batch = self._producer.create_batch()
            start = i
            while i < len(records) and batch.append(key=records[i][0], value=records[i][1], timestamp=None):
                i += 1
            if i == start:  # one record larger than a whole batch
                self._failed(records[i][2], KafkaError("record larger than max_batch_size"))
                i += 1
                continue
            futures = [fut for _, _, fut, _ in records[start:i]]
            # Timed from the oldest record: the batch fails when that one is ack_timeout_s old.
            await self._hand_over(self._producer.send_batch(batch, name, partition=partition), futures, records[start][3], 1)

    async def _hand_over(self, sending, futures: list, queued: float, step: int) -> None:
        """Await aiokafka taking a record or batch (it waits for room while a broker is down), then
        have its delivery resolve ``futures``; all fail ack_timeout_s after ``queued``."""
        deadline = queued + self.ack_timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                delivery = await sending
        except (KafkaError, OSError, TimeoutError) as exc:
            for fut in futures:
                self._failed(fut, exc)
            return
        delivery.add_done_callback(lambda d: self._delivered(d, futures, queued, step))
        self._inflight.append((deadline, futures))

    def _expire(self) -> None:
        """Records not acknowledged within ack_timeout_s fail (as ``produce`` times out): aiokafka
        keeps retrying a broker that is down rather than failing what it holds."""
        inflight, now = self._inflight, asyncio.get_running_loop().time()
        while inflight and (inflight[0][0] <= now or all(f.done() for f in inflight[0][1])):
            _, futures = inflight.popleft()
            for fut in futures:
                self._failed(fut, TimeoutError(f"no acknowledgement within {self.ack_timeout_s:g}s"))

    def _delivered(self, delivery: asyncio.Future, futures: list, queued: float, step: int) -> None:
        """``futures`` of one batch (step 1: offsets base, base + 1, ...) or one record (step 0)."""
        if delivery.cancelled():
            exc = KafkaError("cancelled")
        else:
            exc = delivery.exception()
        if exc is not None:
            for fut in futures:
                self._failed(fut, exc)
            return
        meta = delivery.result()
        elapsed = asyncio.get_running_loop().time() - queued
        for i, fut in enumerate(futures):
            if not fut.done():
                _LATENCY.observe(elapsed)
                fut.set_result((meta.partition, meta.offset + i * step))

    @staticmethod
    def _reject(fut: asyncio.Future, exc: LogUnavailable) -> None:
        if not fut.done():
            _ERRORS.inc()
            fut.set_exception(exc)

    def _failed(self, fut: asyncio.Future, exc: BaseException) -> None:
        self._reject(fut, LogUnavailable(f"Kafka did not acknowledge: {exc.__class__.__name__}: {exc}"))

    def _fail_queued(self, reason: str) -> None:
        while self._queue:
            self._reject(self._queue.popleft()[4], LogUnavailable(reason))

    def consumer(self, topics: list[str], group: str | None) -> "KafkaConsumer":
        return KafkaConsumer(self, topics, group)


class KafkaConsumer(Consumer):
    def __init__(self, log_: KafkaEventLog, topics: list[str], group: str | None) -> None:
        self._log = log_
        self.topics = topics
        self.group = group
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        await self._log.ensure_topics(self.topics)
        names = [self._log.name(t) for t in self.topics]
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._log.bootstrap,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            session_timeout_ms=6000,  # a killed member's partitions move on within seconds
            heartbeat_interval_ms=2000,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=100,
        )
        await self._consumer.start()
        if self.group is None:
            tps = [KafkaTP(n, p) for n in names for p in range(await self._log._partition_count(self._log.plain(n)))]
            self._consumer.assign(tps)
            await self._consumer.seek_to_beginning(*tps)
        else:
            self._consumer.subscribe(names)

    def assignment(self) -> set[TopicPartition]:
        if self._consumer is None:
            return set()
        return {TopicPartition(self._log.plain(tp.topic), tp.partition) for tp in self._consumer.assignment()}

    async def getmany(self, max_records: int = 10_000, timeout_ms: int = 200) -> list[Record]:
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        plain = self._log.plain
        return [
            Record(plain(m.topic), m.partition, m.offset, m.key, m.value, m.timestamp)
            for msgs in batches.values()
            for m in msgs
        ]

    async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        if self.group is None:
            return
        if offsets is None:
            await self._consumer.commit()
        elif offsets:
            await self._consumer.commit({KafkaTP(self._log.name(tp.topic), tp.partition): o for tp, o in offsets.items()})

    async def end_offsets(self) -> dict[TopicPartition, int]:
        tps = list(self._consumer.assignment())
        if not tps:
            return {}
        ends = await self._consumer.end_offsets(tps)
        return {TopicPartition(self._log.plain(tp.topic), tp.partition): o for tp, o in ends.items()}

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()
