"""The notifier (``pingstream notify``; ``up`` runs it): transitions in, alerts out, at least once.

- It reads ``pingstream.pings`` and ``pingstream.transitions`` in one consumer group. A group that
  has no committed offsets starts at the end of both: turning the notifier on never replays
  history. A restarted notifier resumes from its committed offsets.
- Each transition becomes alerts to the channels its check had when it happened (``History``)
  that chose its event (``alerts.alert_events``) and existed before it was published (a new
  channel starts from now). A check's Flapping and Broken events go to its channels that chose
  ``flapping`` / ``broken``; ingest gaps to every channel that chose ``ingest_gap``, and the volume
  gate's IngestAnomaly to the project's channels that chose ``ingest_anomaly``: the same
  semantics (idempotency key = the event's id, committed after delivery).
- Each channel has its own queue and workers; an attempt is bounded by a timeout; failures are
  retried with exponential backoff and jitter for a bounded time (``notify_retry_s``), then the
  delivery is ``failed``. A slow or dead endpoint holds only its own channel's workers.
- Every finished delivery (delivered, failed, or held: the transition says why it is not sent)
  is written to ``pingstream.deliveries``. Only when every delivery of a transition is finished
  is its offset committable, and the pings offsets are held back to what the oldest unfinished
  transition had read (its causing ping is read again after a restart). So a kill -9 loses no
  alert; what was sent and not yet committed is sent again, with the same idempotency key
  (the transition's id: ``Idempotency-Key`` and Standard Webhooks' ``webhook-id``).
- The last pings it keeps per check (for an alert's "last ping" and $BODY) are written to the
  compacted ``pingstream.notifier-pings`` before the pings' offsets are committed, and read back
  before it consumes again (``history.LastPings``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field

from prometheus_client import Counter, Histogram

from runtime import metrics
from runtime.config import Config
from runtime.consumer import Batch, Batches, ConsumerShell, Stopped, next_offsets, retry
from runtime.eventlog.base import EventLog, Record, TopicPartition
from runtime.registry import follow
from schemas.events import (
    TOPIC_DELIVERIES,
    TOPIC_NOTIFIER_PINGS,
    TOPIC_PINGS,
    TOPIC_TRANSITIONS,
    Broken,
    ChannelConfig,
    Delivery,
    Flapping,
    IngestAnomaly,
    IngestGap,
    PingEvent,
    Transition,
    decode,
    encode,
    stable_id,
    utcnow,
)

from . import alerts, safety
from .history import History, LastPings
from .senders import Permanent, Senders, describe

log = logging.getLogger(__name__)

GROUP = "pingstream-notify"
CAUSE_WAIT_S = 1.0  # a transition waits this long at most for its causing ping to be read
REGISTRY_WAIT_S = 5.0  # and at most this long for the registry follower to read what was in the log before it
WORKERS_PER_CHANNEL = 32  # concurrent requests to one channel
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 300.0
COMMIT_EVERY_S = 0.5  # offsets are committed at most this often (a write to the log each)
BATCH_WAIT_S = 0.1  # a batch gathers records this long after its first: under load, a few reads a second
BUSY_RECORDS, BUSY_WAIT_S = 250, 0.4  # at this many records per BATCH_WAIT_S, a batch gathers this long (fewer turns)
DRAIN_S = 5.0  # on a graceful stop, how long deliveries in flight may take to finish
RESTORE_TIMEOUT_S = 60.0  # longest one reading of pingstream.notifier-pings may take at start (then retried)

DELIVERIES = Counter("pingstream_notifications", "Finished alert deliveries, per channel kind and outcome",
                     ["kind", "status"], registry=metrics.REGISTRY)
ATTEMPT_FAILURES = Counter("pingstream_notification_attempt_failures",
                           "Failed delivery attempts (retried or not), per channel kind", ["kind"],
                           registry=metrics.REGISTRY)
DELIVERY_SECONDS = Histogram("pingstream_notification_seconds",
                             "Transition published → alert delivered, per channel kind", ["kind"],
                             buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
                             registry=metrics.REGISTRY)


@dataclass
class _Open:
    left: int
    pings_read: dict  # the pings positions when the transition was read


class Pending:
    """Per partition, the transitions read whose deliveries are not all finished; the commit point."""

    def __init__(self) -> None:
        self.open: dict[TopicPartition, dict[int, _Open]] = {}
        self.read: dict[TopicPartition, int] = {}  # next offset after the last one read

    def read_to(self, tp: TopicPartition, offset: int) -> None:
        self.read[tp] = offset + 1

    def read_through(self, records: list[Record]) -> None:
        """``read_to`` the last of ``records`` in each of their partitions."""
        self.read.update(next_offsets(records))

    def assigned(self, positions: dict[TopicPartition, int]) -> None:
        """The consumer's partitions now. Newly assigned ones start where the consumer stands (committed
        with the next batch, so a new group's start at the end holds across a restart even before
        anything was read); partitions moved to another member are no longer committed from here
        (their unfinished transitions are read, and sent with the same key, by the new owner)."""
        for tp in [tp for tp in self.read if tp not in positions]:
            del self.read[tp]
        for tp, position in positions.items():
            self.read.setdefault(tp, position)

    def add(self, tp: TopicPartition, offset: int, deliveries: int) -> None:
        pings_read = {p: o for p, o in self.read.items() if p.topic == TOPIC_PINGS}
        self.open.setdefault(tp, {})[offset] = _Open(deliveries, pings_read)

    def more(self, tp: TopicPartition, offset: int, deliveries: int) -> None:
        self.open[tp][offset].left += deliveries

    def done(self, tp: TopicPartition, offset: int) -> None:
        entry = self.open[tp][offset]
        entry.left -= 1
        if entry.left == 0:
            del self.open[tp][offset]

    def commit_point(self) -> dict[TopicPartition, int]:
        out = {}
        for tp, nxt in self.read.items():
            if tp.topic != TOPIC_PINGS:
                opened = self.open.get(tp)
                out[tp] = min(opened) if opened else nxt
        held = [e.pings_read for tp, opened in self.open.items() if tp in self.read for e in opened.values()]
        for tp, nxt in self.read.items():
            if tp.topic == TOPIC_PINGS:
                out[tp] = min([nxt] + [r[tp] for r in held if tp in r])
        return out


@dataclass
class _Waiting:
    event: Transition | IngestGap | Flapping | Broken | IngestAnomaly
    tp: TopicPartition
    offset: int
    published_ms: int
    deadline: float  # monotonic: plan it then even if its cause was not read


@dataclass
class _Job:
    alert: alerts.Alert
    channel: ChannelConfig
    tp: TopicPartition
    offset: int
    published_ms: int


@dataclass
class Notifier:
    """The notifier's state; ``run`` wires it to the log."""

    event_log: EventLog
    config: Config
    history: History = field(default_factory=History)
    pings: LastPings = field(default_factory=LastPings)
    pending: Pending = field(default_factory=Pending)
    first_backoff_s: float = FIRST_BACKOFF_S
    max_backoff_s: float = MAX_BACKOFF_S

    def __post_init__(self) -> None:
        self.waiting: list[_Waiting] = []
        self.queues: dict[str, asyncio.Queue] = {}
        self.workers: list[asyncio.Task] = []
        self.senders: Senders | None = None
        self._committed: dict[TopicPartition, int] = {}  # as last handed to the shell to commit
        self._committed_at = 0.0
        self.outcomes: asyncio.Queue = asyncio.Queue()  # (job, Delivery) finished, to be recorded
        self.consuming = asyncio.Event()  # set once its consumer reads (where a new group starts: the end)

    # --- reading ---

    async def handle(self, batch: Batch) -> dict[TopicPartition, int]:
        records = batch.records
        # Only pings of checks some channel hears about are kept (clock ticks have no key): the others only
        # move the read positions, taken for each run of them at once (in C loops: a batch holds thousands),
        # so a notifier without channels costs the ping path next to nothing.
        heard = self.history.heard
        kept = [i for i, r in enumerate(records) if r.topic != TOPIC_PINGS or r.key in heard]
        passed = 0
        waiting = len(self.waiting)
        for i in kept:
            if i > passed:
                self.pending.read_through(records[passed:i])
            passed = i + 1
            r = records[i]
            tp = TopicPartition(r.topic, r.partition)
            self.pending.read_to(tp, r.offset)
            try:
                event = decode(r.value)
            except Exception as exc:
                log.error("undecodable record %s/%d@%d: %s", r.topic, r.partition, r.offset, exc)
                continue
            if isinstance(event, PingEvent):
                self.pings.add(event)
            elif isinstance(event, (Transition, IngestGap, Flapping, Broken, IngestAnomaly)):
                self.pending.add(tp, r.offset, 1)  # one for planning it: nothing commits past it before
                self.waiting.append(_Waiting(event, tp, r.offset, r.timestamp_ms, time.monotonic() + CAUSE_WAIT_S))
        if passed < len(records):
            self.pending.read_through(records[passed:])
        if len(self.waiting) > waiting:
            # An alert is built from the check as it was when its transition was published: the registry
            # follower must first read every check edit in the log now, which includes those published before
            # the transition (at once when it has; however loaded the process is, rather than after a slack).
            await self.history.caught_up(REGISTRY_WAIT_S)
        self._plan_ready()
        # Called for empty batches too: deliveries finished meanwhile move the commit point. Only
        # partitions whose point moved are committed, at most every COMMIT_EVERY_S: a commit is a write
        # to the log, which the edge needs for pings (what a crash makes the notifier read again is
        # only sent again with the same key).
        now = time.monotonic()
        if now < self._committed_at + COMMIT_EVERY_S:
            return {}
        point = self.pending.commit_point()
        moved = {tp: o for tp, o in point.items() if self._committed.get(tp) != o}
        if moved:
            if not await self._save_pings():
                return {}  # the pings read stay uncommitted: read again after a restart, they are kept again
            self._committed_at = now
            self._committed.update(moved)
        return moved

    async def _save_pings(self) -> bool:
        """Write the last pings changed since the last commit (before the commit that moves past their
        records); False if the log refused them (they are written with the next commit)."""
        records = self.pings.changes()
        if not records:
            return True
        try:
            await asyncio.gather(*(self.event_log.produce(TOPIC_NOTIFIER_PINGS, value, key=key)
                                   for key, value in records))
        except Exception as exc:  # noqa: BLE001 - the log is away: nothing is committed meanwhile
            self.pings.unsent(records)
            log.warning("notify: the last pings could not be written (%s: %s); not committing yet",
                        exc.__class__.__name__, exc)
            return False
        return True

    async def _restore_pings(self) -> int:
        """Read ``pingstream.notifier-pings`` to its end into ``self.pings``; the number of records read."""
        def apply(records) -> None:
            for r in records:
                if r.key:
                    try:
                        self.pings.restore(r.key, r.value)
                    except Exception as exc:  # noqa: BLE001 - one check's last pings unknown, not a stop
                        log.error("undecodable record %s/%d@%d: %s", r.topic, r.partition, r.offset, exc)

        return await self.event_log.read_to_end(TOPIC_NOTIFIER_PINGS, apply)

    def _ready(self, w: _Waiting, now: float) -> bool:
        if now >= w.deadline:
            return True
        t = w.event
        if isinstance(t, Transition) and t.cause_event_id and t.reason not in ("paused", "resumed"):
            return self.pings.seen(t.check_id, t.cause_event_id)
        return True

    def _plan_ready(self) -> None:
        now = time.monotonic()
        still = []
        for w in self.waiting:
            if self._ready(w, now):
                self._plan(w)
            else:
                still.append(w)
        self.waiting = still

    def _plan(self, w: _Waiting) -> None:
        for alert, channel in self.alerts_for(w.event, w.published_ms):
            self.pending.more(w.tp, w.offset, 1)
            self._queue(channel).put_nowait(_Job(alert, channel, w.tp, w.offset, w.published_ms))
        self.pending.done(w.tp, w.offset)

    def alerts_for(self, event, published_ms: int) -> list[tuple[alerts.Alert, ChannelConfig]]:
        """The alerts a transition or ingest gap makes, with the channel each goes to."""
        h = self.history

        def started(channel: ChannelConfig) -> bool:  # a new channel starts from now
            return channel.created.timestamp() * 1000 <= published_ms

        if isinstance(event, IngestGap):
            return [(alerts.Alert(id=event.event_id, event="ingest_gap", status="ingest_gap", at=event.end, gap=event),
                     c) for c in h.channels.values() if "ingest_gap" in c.events and started(c)]
        if isinstance(event, IngestAnomaly):
            project = h.projects.get(event.project_id)
            return [(alerts.Alert(id=event.event_id, event="ingest_anomaly", status="ingest_anomaly", at=event.end,
                                  notice=event, project_name=project.name if project else ""), c)
                    for c in h.channels.values()
                    if c.project_id == event.project_id and "ingest_anomaly" in c.events and started(c)]
        if isinstance(event, (Flapping, Broken)):
            events = ("flapping",) if isinstance(event, Flapping) else ("broken",)
        else:
            events = alerts.alert_events(event)
        check = h.check_at(event.check_id, published_ms)
        if not events or check is None:
            return []
        notice = None if isinstance(event, Transition) else event
        out = []
        for channel_id in check.channels:
            channel = h.channels.get(channel_id)
            if channel is None or channel.project_id != event.project_id or not started(channel):
                continue
            chosen = alerts.chosen(channel, events)
            if chosen is None:
                continue
            project = h.projects.get(event.project_id)
            alert = alerts.Alert(
                id=event.event_id, event=chosen, status=chosen if notice or event.released_from else event.to_status,
                at=event.at,
                transition=None if notice else event, notice=notice, check=check,
                project_name=project.name if project else "",
                last_ping=self.pings.at(event.check_id, event.at, getattr(event, "cause_event_id", "")),
                ping_url=f"{self.config.public_url}/ping/{event.check_id}",
            )
            out.append((alert, channel))
        return out

    # --- delivering ---

    def _queue(self, channel: ChannelConfig) -> asyncio.Queue:
        queue = self.queues.get(channel.id)
        if queue is None:
            queue = self.queues[channel.id] = asyncio.Queue()
            for i in range(WORKERS_PER_CHANNEL):
                self.workers.append(asyncio.create_task(self._worker(queue), name=f"notify {channel.id}/{i}"))
        return queue

    async def _worker(self, queue: asyncio.Queue) -> None:
        while True:
            job: _Job = await queue.get()
            record = await self.attempt(job)
            self.outcomes.put_nowait((job, record))

    async def _recorder(self) -> None:
        """Writes finished deliveries to the log, many at once (the log acknowledges concurrent
        records with one sync), and only then lets their transitions' offsets move: a delivery
        whose outcome is not in the log is done again after a restart."""
        while True:
            done = [await self.outcomes.get()]
            while not self.outcomes.empty() and len(done) < 1000:
                done.append(self.outcomes.get_nowait())
            await asyncio.gather(*(self._record(record) for _, record in done))
            for job, _ in done:
                self.pending.done(job.tp, job.offset)

    async def _record(self, record: Delivery) -> None:
        key = record.check_id.encode() if record.check_id else None
        await retry(f"recording delivery {record.event_id}",
                    lambda: self.event_log.produce(TOPIC_DELIVERIES, encode(record), key=key), logger=log)

    async def deliver(self, job: _Job) -> Delivery:
        """Attempt ``job`` until it is finished and record its outcome."""
        record = await self.attempt(job)
        await self._record(record)
        return record

    async def attempt(self, job: _Job) -> Delivery:
        """Send ``job`` (retrying for a bounded time); its outcome, not yet recorded."""
        alert, channel = job.alert, job.channel
        timeout_s, retry_s = self.config.notify_timeout_s, self.config.notify_retry_s
        began = time.monotonic()
        attempts, error, backoff = 0, "", self.first_backoff_s
        held = getattr(alert.transition, "held", None) if alert.transition is not None else None
        if held:
            status, error = "held", str(held)[:200]
        else:
            while True:
                if channel.id not in self.history.channels:
                    status, error = "failed", "channel removed"
                    break
                attempts += 1
                try:
                    async with asyncio.timeout(timeout_s):
                        await self.senders.send(channel, alert)
                    status = "delivered"
                    break
                except (Permanent, safety.PrivateTarget) as exc:
                    ATTEMPT_FAILURES.labels(channel.kind).inc()
                    status, error = "failed", describe(exc, timeout_s)
                    break
                except Exception as exc:
                    ATTEMPT_FAILURES.labels(channel.kind).inc()
                    error = describe(exc, timeout_s)
                    delay = backoff * random.uniform(0.5, 1.5)  # jitter: retries of many alerts spread out
                    if time.monotonic() - began + delay > retry_s:
                        status = "failed"
                        break
                    log.warning("alert %s to channel %s (%s): attempt %d failed (%s); retrying in %.1f s",
                                alert.id, channel.id, channel.kind, attempts, error, delay)
                    await asyncio.sleep(delay)
                    backoff = min(backoff * 2, self.max_backoff_s)
        if status == "failed":
            log.error("alert %s to channel %s (%s) failed after %d attempt(s): %s",
                      alert.id, channel.id, channel.kind, attempts, error)
        record = Delivery(
            event_id=stable_id("delivery", alert.id, channel.id), alert_id=alert.id,
            check_id=alerts.check_id(alert),
            project_id=channel.project_id, channel_id=channel.id, channel_kind=channel.kind, event=alert.event,
            status=status, attempts=attempts, error=error, at=alert.at, finished=utcnow(),
        )
        DELIVERIES.labels(channel.kind, status).inc()
        if status == "delivered":
            DELIVERY_SECONDS.labels(channel.kind).observe(max(0.0, time.time() - job.published_ms / 1000))
        return record

    # --- running ---

    async def _drain(self, consumer) -> None:
        """A graceful stop: deliveries in flight get ``DRAIN_S`` to finish, then what is finished is
        committed (the rest is sent again, with the same key, by the next notifier)."""
        deadline = time.monotonic() + DRAIN_S
        while (self.waiting or any(self.pending.open.values())) and time.monotonic() < deadline:
            self._plan_ready()
            await asyncio.sleep(0.05)
        if not await self._save_pings():
            return  # not committed: the next notifier reads those pings again
        try:
            await consumer.commit(self.pending.commit_point())
        except Exception as exc:  # the log went away: the next notifier reads those records again
            log.warning("notify: last commit refused (%s: %s)", exc.__class__.__name__, exc)

    async def run(self, stop: asyncio.Event) -> None:
        ready, follower_stop = asyncio.Event(), asyncio.Event()
        follower = asyncio.create_task(follow(self.history, self.event_log, ready, follower_stop,
                                              name="notify registry", timestamps=True))
        self.senders = Senders(smtp=self.config.smtp, allow_private=self.config.webhook_allow_private,
                               timeout_s=self.config.notify_timeout_s)
        self.workers.append(asyncio.create_task(self._recorder(), name="notify recorder"))
        try:
            while not ready.is_set():  # channels and checks first: a transition needs them
                if stop.is_set() or follower.done():
                    return
                try:
                    await asyncio.wait_for(ready.wait(), 0.5)
                except TimeoutError:
                    pass
            try:
                restored = await retry(
                    "notify last pings", lambda: asyncio.wait_for(self._restore_pings(), RESTORE_TIMEOUT_S),
                    stop=stop, logger=log)
            except Stopped:
                return
            if restored:
                log.info("notify: the last pings of %d checks read back (%d records)", len(self.pings), restored)
            consumer = self.event_log.consumer([TOPIC_PINGS, TOPIC_TRANSITIONS], group=GROUP, from_end=True)
            async with consumer:
                self.consuming.set()
                async def on_assignment(assigned: set[TopicPartition]) -> None:
                    positions = await consumer.positions()
                    self._committed.clear()  # also reported after a refused commit: commit all again
                    self.pending.assigned({tp: positions[tp] for tp in assigned if tp in positions})

                shell = ConsumerShell("notify", consumer, self.handle, group=GROUP, logger=log, log_every_s=60.0,
                                      batches=Batches(consumer, max_records=10_000, max_wait_s=BATCH_WAIT_S,
                                                      poll_ms=50, busy_records=BUSY_RECORDS,
                                                      busy_wait_s=BUSY_WAIT_S),
                                      on_assignment=on_assignment)
                await shell.run(stop)
                await self._drain(consumer)
        finally:
            for w in self.workers:
                w.cancel()
            await asyncio.gather(*self.workers, return_exceptions=True)
            await self.senders.close()
            follower_stop.set()
            await asyncio.gather(follower, return_exceptions=True)
            if follower.done() and not follower.cancelled() and follower.exception() is not None:
                raise follower.exception()


async def run(config: Config, event_log: EventLog, stop: asyncio.Event) -> None:
    await Notifier(event_log, config).run(stop)
