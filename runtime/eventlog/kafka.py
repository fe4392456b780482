"""The distributed event log: Apache Kafka through aiokafka.

- The producer is idempotent with ``acks=all``: ``produce`` returns once every
  in-sync replica has the record. Partitions are chosen by us with the same
  crc32 mapping the embedded log uses, so a key lands on the same partition
  number on either backend (the monitor relies on pings and its state
  sharing partition numbers).
- Several producers ("lanes", ``producers``), partition p always on lane
  p % lanes, so each partition keeps one idempotent sequence. aiokafka keeps
  one produce request in flight per producer and broker, and a broker that
  fsyncs what it acknowledges appends a request's partitions one after the
  other: lanes put requests for different partitions in flight side by side,
  and the broker's fsyncs overlap (bench/e2e.py: the Kafka edge's throughput
  is bounded by that round trip, not by its CPU).
- Topics are created at start with the configured partition count;
  registry-like topics (latest value per key) are compacted.
- Consumers never auto-commit: a service commits after its effects are done
  (``kafka_consumer.py``).
- ``prefix`` namespaces every topic name on the broker (tests, or several
  installations on one cluster); records come back with the plain name.
- Outages: a watch task declares the log unavailable when the broker refuses
  connections, when records wait ``STALL_S`` without any acknowledgement, or
  when the producer hit a fatal state (aiokafka's idempotent producer never
  recovers from OutOfOrderSequenceNumber / ProducerFenced: it fails every
  later send). Then what it holds fails at once, the producer is dropped, and
  every record is refused at once (the edge answers 503 without waiting) while
  the broker is probed every ``PROBE_S``; once it answers, a new producer (a new
  producer id, sequences from 0) takes over. An outage is logged once when it
  starts, every ``SUMMARY_S`` while it lasts (with the records refused), and
  once when it ends; aiokafka's own repeated lines are throttled
  (``runtime.logthrottle``).

This module is longer than the others on purpose: it is one class whose parts (sending in
batches, the outage watch and its probe, topic creation) share the producer's state and its
lifecycle; split apart they would pass that state back and forth.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from runtime import logthrottle, metrics
from schemas.events import (
    TOPIC_CHECKS,
    TOPIC_DEAD_LETTER,
    TOPIC_DELIVERIES,
    TOPIC_MONITOR_STATE,
    TOPIC_NOTIFIER_PINGS,
    TOPIC_PINGS,
    TOPIC_TRANSITIONS,
)

from .base import Consumer, EventLog, LogUnavailable, partition_for
from .kafka_consumer import KafkaConsumer, read_range
from .rdkafka_consumer import RdKafkaConsumer

log = logging.getLogger(__name__)
_LATENCY = metrics.PRODUCE_SECONDS.labels("kafka")
_ERRORS = metrics.PRODUCE_ERRORS.labels("kafka")
_AVAILABLE = metrics.LOG_AVAILABLE.labels("kafka")
# aiokafka logs each failed reconnect, each retried request: thousands of lines a second during an outage.
logthrottle.throttle("aiokafka", prefix=True)

# Topics whose records are "the latest value for this key": Kafka keeps the last one per key.
COMPACTED = frozenset({TOPIC_CHECKS, TOPIC_MONITOR_STATE, TOPIC_NOTIFIER_PINGS})
# Created at start so consumers can subscribe before anything was produced.
KNOWN_TOPICS = (TOPIC_PINGS, TOPIC_CHECKS, TOPIC_TRANSITIONS, TOPIC_DEAD_LETTER, TOPIC_MONITOR_STATE, TOPIC_DELIVERIES,
                TOPIC_NOTIFIER_PINGS)

ACK_TIMEOUT_S = 10.0  # longest a produce waits for acks before the caller hears LogUnavailable
STALL_S = 3.0  # records waiting this long with no acknowledgement at all: the broker is away
PROBE_S = 1.0  # while it is away, how often the broker is probed (a TCP connect, then a new producer)
WATCH_S = 0.25  # pace of the watch task
SUMMARY_S = 10.0  # while it is away, one log line this often
START_TIMEOUT_S = 5.0  # a new producer that has no producer id by then is dropped; probed again later
CLOSE_S = 3.0  # close: what can be flushed within this is flushed, the rest is failed
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
        producers: int = 1,
        consumer_client: str = "librdkafka",
    ) -> None:
        self.bootstrap = bootstrap
        self.consumer_client = consumer_client  # what reads (``consumer``): librdkafka's or aiokafka's
        self.default_partitions = default_partitions
        self.prefix = prefix
        self.replication_factor = replication_factor
        self.ack_timeout_s = ack_timeout_s
        self.stall_s = min(STALL_S, ack_timeout_s)
        self.sweep_s = min(0.5, ack_timeout_s / 4)  # how often records past their acknowledgement timeout fail
        self.lanes = max(1, producers)
        self._producers: list[AIOKafkaProducer] = []  # one per lane; none while the broker is away (and closed)
        self._counts: dict[str, int] = {}
        self._ensured: set[str] = set()
        # Per lane: records given to send(), not yet to aiokafka, and the task handing them over.
        self._queues = [collections.deque() for _ in range(self.lanes)]
        self._wakes = [asyncio.Event() for _ in range(self.lanes)]
        self._senders: list[asyncio.Task] = []
        self._inflight: collections.deque = collections.deque()  # (deadline, futures) of batches aiokafka holds
        self._watch: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()  # producers being dropped
        self._last_ack = 0.0  # loop time of the last acknowledgement
        self._down_since: float | None = None  # loop time the broker was found away
        self._down_reason = ""
        self._refused = 0  # records refused at once during this outage
        self._closed = False

    @property
    def _producer(self) -> AIOKafkaProducer | None:
        """The first lane's producer (metadata, records without a key); None while the broker is away."""
        return self._producers[0] if self._producers else None

    def name(self, topic: str) -> str:
        return self.prefix + topic

    def plain(self, name: str) -> str:
        return name[len(self.prefix):] if self.prefix and name.startswith(self.prefix) else name

    @property
    def unavailable(self) -> str | None:
        if self._closed:
            return "event log is closed"
        if self._down_since is None:
            return None
        return f"Kafka unreachable for {asyncio.get_running_loop().time() - self._down_since:.0f} s ({self._down_reason})"

    async def start(self) -> None:
        """Connect (the topics made if missing, a producer per lane); LogUnavailable when the broker does
        not answer (the services try again: ``pingstream.cli``)."""
        try:
            await self.ensure_topics(list(KNOWN_TOPICS))
            self._producers = await self._new_producers()
        except (KafkaError, OSError) as exc:  # OSError: TimeoutError too
            raise LogUnavailable(f"Kafka at {self.bootstrap} not reachable: {exc or exc.__class__.__name__}") from exc
        self._last_ack = asyncio.get_running_loop().time()
        _AVAILABLE.set(1)
        self._senders = [asyncio.create_task(self._send_loop(lane), name=f"kafka-send-{lane}")
                         for lane in range(self.lanes)]
        self._watch = asyncio.create_task(self._watch_loop(), name="kafka-watch")

    async def _new_producers(self) -> list[AIOKafkaProducer]:
        """A producer per lane, all started, or none (LogUnavailable)."""
        started = await asyncio.gather(*(self._new_producer() for _ in range(self.lanes)), return_exceptions=True)
        failed = [r for r in started if isinstance(r, BaseException)]
        if failed:
            for producer in started:
                if not isinstance(producer, BaseException):
                    self._drop(producer)
            raise failed[0]
        return started

    async def _new_producer(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
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
            # new installation wait little more than that moment.
            retry_backoff_ms=50,
        )
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await producer.start()  # bootstrap, then a producer id (InitProducerId)
        except BaseException as exc:
            self._drop(producer)
            if isinstance(exc, (KafkaError, OSError, TimeoutError)):
                raise LogUnavailable(f"Kafka producer could not start: {exc.__class__.__name__}: {exc}") from exc
            raise
        return producer

    def _drop(self, producer: AIOKafkaProducer) -> None:
        """Stop ``producer`` in the background, bounded: its sender is cancelled first (aiokafka's
        ``stop`` would otherwise wait for a flush a missing broker never allows)."""

        async def drop() -> None:
            task = producer._sender.sender_task if producer._sender is not None else None
            if task is not None and not task.done():
                task.cancel()
            try:
                async with asyncio.timeout(CLOSE_S):
                    await producer.stop()
            except BaseException as exc:  # noqa: BLE001 - whatever it was, this producer is gone
                log.debug("dropped producer did not stop cleanly: %r", exc)

        task = asyncio.create_task(drop(), name="kafka-drop-producer")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- outages ----------------------------------------------------------------------------------

    async def _watch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_probe = next_summary = 0.0
        while not self._closed:
            now = loop.time()
            try:
                if self._producers:
                    reason = self._fatal() or self._stalled(now)
                    if reason is None and now - self._last_ack > 1.0 and now >= next_probe:
                        # Idle or waiting: is the broker there at all? (A stopped broker refuses at once.)
                        next_probe = now + PROBE_S
                        if not await self._reachable():
                            reason = "connection refused"
                    if reason is not None:
                        self._go_down(reason)
                        next_probe = next_summary = loop.time() + PROBE_S
                elif now >= next_probe:
                    next_probe = now + PROBE_S
                    if await self._reachable():
                        try:
                            producers = await self._new_producers()
                        except LogUnavailable as exc:
                            self._down_reason = str(exc)
                        else:
                            self._come_back(producers)
                    if not self._producers and loop.time() >= next_summary:
                        next_summary = loop.time() + SUMMARY_S
                        log.warning("%s; %d records refused so far", self.unavailable, self._refused)
            except Exception:  # the watch must outlive any surprise
                log.exception("Kafka watch failed; going on")
            await asyncio.sleep(WATCH_S)

    def _fatal(self) -> str | None:
        """A producer aiokafka has given up on: its sender ended (OutOfOrderSequenceNumber,
        ProducerFenced, ...) and every later send would fail with that error. One lane's is
        enough: every lane is replaced."""
        for producer in self._producers:
            task = producer._sender.sender_task if producer._sender is not None else None
            if task is not None and task.done():
                exc = None if task.cancelled() else task.exception()
                return f"producer failed: {exc.__class__.__name__ if exc else 'sender cancelled'}"
            exc = producer._message_accumulator._exception
            if exc is not None:
                return f"producer failed: {exc.__class__.__name__}"
        return None

    def _stalled(self, now: float) -> str | None:
        while self._inflight and all(f.done() for f in self._inflight[0][1]):
            self._inflight.popleft()
        if not self._inflight:
            return None
        oldest = self._inflight[0][0] - self.ack_timeout_s
        if now - oldest >= self.stall_s and now - self._last_ack >= self.stall_s:
            return f"no acknowledgement for {now - max(oldest, self._last_ack):.1f} s"
        return None

    async def _reachable(self) -> bool:
        for server in self.bootstrap.split(","):
            host, _, port = server.strip().rpartition(":")
            try:
                async with asyncio.timeout(1.0):
                    _, writer = await asyncio.open_connection(host.strip("[]") or "127.0.0.1", int(port))
            except (OSError, TimeoutError, ValueError):
                continue
            writer.close()
            return True
        return False

    def _go_down(self, reason: str) -> None:
        """Fail what is held, drop the producers, refuse every record at once until the probe succeeds."""
        producers, self._producers = self._producers, []
        self._down_since, self._down_reason, self._refused = asyncio.get_running_loop().time(), reason, 0
        _AVAILABLE.set(0)
        log.error("Kafka unavailable (%s): records are refused at once; probing every %g s", reason, PROBE_S)
        self._fail_queued(f"Kafka unavailable: {reason}")
        inflight, self._inflight = self._inflight, collections.deque()
        for _, futures in inflight:
            for fut in futures:
                self._reject(fut, LogUnavailable(f"Kafka unavailable: {reason}"))
        for producer in producers:
            self._drop(producer)

    def _come_back(self, producers: list[AIOKafkaProducer]) -> None:
        loop = asyncio.get_running_loop()
        log.warning("Kafka reachable again after %.1f s (new producers took over); %d records were refused",
                    loop.time() - self._down_since, self._refused)
        self._producers, self._down_since, self._down_reason = producers, None, ""
        self._last_ack = loop.time()
        _AVAILABLE.set(1)

    # --- closing ----------------------------------------------------------------------------------

    async def close(self) -> None:
        """Bounded, also while the broker is away: what can be acknowledged within CLOSE_S is, the rest fails."""
        if self._closed:
            return
        self._closed = True
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_S
        senders, self._senders = self._senders, []
        if senders:
            for wake in self._wakes:
                wake.set()  # hands what is queued to aiokafka, then ends
            try:
                async with asyncio.timeout_at(deadline):
                    await asyncio.gather(*senders, return_exceptions=True)
            except TimeoutError:
                for sender in senders:
                    sender.cancel()
                await asyncio.gather(*senders, return_exceptions=True)
        producers, self._producers = self._producers, []
        if producers:
            try:
                async with asyncio.timeout_at(deadline):
                    await asyncio.gather(*(producer.flush() for producer in producers))
            except TimeoutError:
                log.warning("closing with records Kafka did not acknowledge within %g s", CLOSE_S)
            for producer in producers:
                self._drop(producer)
        self._fail_queued("event log is closed")
        for _, futures in self._inflight:
            for fut in futures:
                self._reject(fut, LogUnavailable("event log is closed"))
        self._inflight.clear()
        if self._background:
            await asyncio.wait(self._background, timeout=CLOSE_S + 1)
        _AVAILABLE.set(0)

    async def ensure_topics(self, topics: list[str]) -> None:
        missing = [t for t in topics if t not in self._ensured]
        if not missing:
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=30_000)
        try:
            await admin.start()
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
                if not self._producers:
                    raise LogUnavailable(self.unavailable or "Kafka unavailable")
                count = self._counts[topic] = await self._metadata_partitions(self.name(topic))
        return count

    async def _metadata_partitions(self, name: str) -> int:
        """The partition count of topic ``name`` as the producer's metadata has it."""
        return len(await self._producer.partitions_for(name))

    async def partitions(self, topic: str) -> list[int]:
        return list(range(await self._partition_count(topic)))

    async def produce(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> tuple[int, int]:
        if self._closed:
            raise LogUnavailable("event log is closed")
        if not self._producers:
            self._refused += 1
            _ERRORS.inc()
            raise LogUnavailable(self.unavailable or "Kafka unavailable")
        try:
            if partition is None and key is not None:
                partition = partition_for(key, await self._partition_count(topic))
            if partition is None:  # no key: the client picks the partition
                started = time.perf_counter()
                async with asyncio.timeout(self.ack_timeout_s):
                    placed = await self._send_unkeyed(topic, value)
                _LATENCY.observe(time.perf_counter() - started)
                return placed
        except (KafkaError, TimeoutError, OSError, AttributeError) as exc:  # AttributeError: the producer went
            _ERRORS.inc()
            raise LogUnavailable(f"Kafka did not acknowledge: {exc.__class__.__name__}: {exc}") from exc
        # Keyed records share the sender with the edge's pings, so the watch sees them waiting.
        return await self.send(topic, value, key, partition)

    async def _send_unkeyed(self, topic: str, value: bytes) -> tuple[int, int]:
        """A record without a key, on the partition the client picks: (partition, offset) once acknowledged."""
        meta = await self._producer.send_and_wait(self.name(topic), value)
        return meta.partition, meta.offset

    def send(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> asyncio.Future:
        """``produce`` without a task per record: records are queued for their lane's sender task,
        which hands what has gathered to aiokafka, per partition as one record batch (from _BATCH_FROM
        records; each record's offset is the batch's base + its place) or else one by one, and
        resolves each record's future from the delivery. A record whose
        partition is not known yet (the first of a topic, or no key) goes through ``produce``."""
        if partition is None:
            count = self._counts.get(topic)
            if key is None or count is None or not self._senders:
                return super().send(topic, value, key, partition)
            partition = partition_for(key, count)
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if not self._senders:
            self._reject(fut, LogUnavailable("event log is closed"))
            return fut
        if not self._producers:  # the broker is away: no waiting for an acknowledgement that cannot come
            self._refused += 1
            self._reject(fut, LogUnavailable(self.unavailable or "Kafka unavailable"))
            return fut
        self._enqueue(topic, value, key, partition, fut)
        return fut

    def _enqueue(self, topic: str, value: bytes, key: bytes | None, partition: int, fut: asyncio.Future) -> None:
        """Queue the record for its lane's sender task."""
        lane = partition % self.lanes
        self._queues[lane].append((self.name(topic), partition, key, value, fut, fut.get_loop().time()))
        self._wakes[lane].set()

    async def _send_loop(self, lane: int) -> None:
        queue, wake = self._queues[lane], self._wakes[lane]
        while True:
            wake.clear()
            while queue:
                groups: dict[tuple[str, int], list] = {}
                while queue:
                    name, partition, *record = queue.popleft()
                    groups.setdefault((name, partition), []).append(record)
                for (name, partition), records in groups.items():
                    if not self._producers:  # went away meanwhile
                        for record in records:
                            self._reject(record[2], LogUnavailable(self.unavailable or "Kafka unavailable"))
                    elif len(records) < _BATCH_FROM:
                        await self._send_each(self._producers[lane], name, partition, records)
                    else:
                        await self._send_batches(self._producers[lane], name, partition, records)
            self._expire()
            if not self._senders:  # closing: everything queued was handed over
                return
            try:
                async with asyncio.timeout(self.sweep_s):
                    await wake.wait()
            except TimeoutError:
                pass

    async def _send_each(self, producer: AIOKafkaProducer, name: str, partition: int, records: list) -> None:
        """A few records: each into aiokafka's open batch for the partition, which the next request
        takes, however far the request before it has got (lowest latency when load is light). One
        timeout for them all, from the oldest: the rest fail once that one is ack_timeout_s old."""
        i = 0
        try:
            async with asyncio.timeout_at(records[0][3] + self.ack_timeout_s):
                for i, (key, value, fut, queued) in enumerate(records):
                    self._track(await producer.send(name, value, key=key, partition=partition), [fut], queued, 0)
        except (KafkaError, OSError, TimeoutError) as exc:
            for _, _, fut, _ in records[i:]:
                self._failed(fut, exc)

    async def _send_batches(self, producer: AIOKafkaProducer, name: str, partition: int, records: list) -> None:
        """Records of one partition, in order, as few record batches as fit. aiokafka takes a batch
        for a partition once the one before it went out in a request: meanwhile more records gather,
        and the next batch is bigger (the same group commit the SQLite log does)."""
        i = 0
        while i < len(records):
            batch = producer.create_batch()
            start = i
            while i < len(records) and batch.append(key=records[i][0], value=records[i][1], timestamp=None):
                i += 1
            if i == start:  # one record larger than a whole batch
                self._failed(records[i][2], KafkaError("record larger than max_batch_size"))
                i += 1
                continue
            futures = [fut for _, _, fut, _ in records[start:i]]
            # Timed from the oldest record: the batch fails when that one is ack_timeout_s old.
            await self._hand_over(producer.send_batch(batch, name, partition=partition), futures, records[start][3], 1)

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
        self._track(delivery, futures, queued, step)

    def _track(self, delivery: asyncio.Future, futures: list, queued: float, step: int) -> None:
        """Resolve ``futures`` from aiokafka's ``delivery``; watched until ack_timeout_s after ``queued``."""
        delivery.add_done_callback(lambda d: self._delivered(d, futures, queued, step))
        self._inflight.append((queued + self.ack_timeout_s, futures))

    def _expire(self) -> None:
        """Records not acknowledged within ack_timeout_s fail (as ``produce`` times out): aiokafka
        keeps retrying a broker that is down rather than failing what it holds."""
        inflight, now = self._inflight, asyncio.get_running_loop().time()
        while inflight and (inflight[0][0] <= now or all(f.done() for f in inflight[0][1])):
            _, futures = inflight.popleft()
            pending = [fut for fut in futures if not fut.done()]  # usually none: acknowledged meanwhile
            if pending:
                exc = TimeoutError(f"no acknowledgement within {self.ack_timeout_s:g}s")
                for fut in pending:
                    self._failed(fut, exc)

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
        now = asyncio.get_running_loop().time()
        self._last_ack = now
        elapsed = now - queued
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
        for queue in self._queues:
            while queue:
                self._reject(queue.popleft()[4], LogUnavailable(reason))

    def consumer(self, topics: list[str], group: str | None, *, from_end: bool = False) -> Consumer:
        """A consumer of ``topics`` (``PINGSTREAM_KAFKA_CONSUMER``): librdkafka's (rdkafka_consumer.py) or aiokafka's
        (kafka_consumer.py); both assign by range, and a group's members are switched together."""
        if self.consumer_client == "aiokafka":
            return KafkaConsumer(self, topics, group, from_end=from_end)
        return RdKafkaConsumer(self, topics, group, from_end=from_end)

    async def read_range(self, topic: str, partition: int, first: int, last: int) -> list:
        """The records of ``topic``'s ``partition`` from offset ``first`` to ``last``, outside any group."""
        return await read_range(self, topic, partition, first, last)
