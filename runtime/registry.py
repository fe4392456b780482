"""The in-memory view of the registry topic (projects, checks and channels).

Every service that needs check configuration (the edge to resolve pings, the
monitor for schedules) folds ``pingstream.checks`` into a ``Registry``: it
reads the topic from the beginning at start, then follows it live.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import defaultdict

import secrets

import msgspec

from schemas.events import (
    TOPIC_CHECKS,
    ChannelConfig,
    ChannelDeleted,
    ChannelUpserted,
    CheckConfig,
    CheckDeleted,
    CheckUpserted,
    Project,
    ProjectDeleted,
    ProjectUpserted,
    decode,
    encode,
    utcnow,
    uuid7,
)

from . import health, metrics
from .eventlog.base import EventLog

log = logging.getLogger(__name__)


def project_key(project_id: str) -> bytes:
    return f"project:{project_id}".encode()


def channel_key(channel_id: str) -> bytes:
    return f"channel:{channel_id}".encode()


def event_key(event) -> bytes:
    """The registry topic's key of an event: the check's uuid, ``project:<id>`` or ``channel:<id>``."""
    if isinstance(event, ChannelUpserted):
        return channel_key(event.channel.id)
    if isinstance(event, ChannelDeleted):
        return channel_key(event.channel_id)
    if isinstance(event, CheckUpserted):
        return event.check.id.encode()
    if isinstance(event, CheckDeleted):
        return event.check_id.encode()
    if isinstance(event, ProjectUpserted):
        return project_key(event.project.id)
    return project_key(event.project_id)


def _digest(secret: str) -> bytes:
    # Keys (ping keys and API keys) are indexed by their hash: a lookup compares digests, never
    # the secret itself byte by byte, so response timing tells nothing about a key's prefix.
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


class Followed:
    """A book ``follow`` folds the registry topic into, which can be waited on until it holds what the log held
    (``caught_up``): the edges' and the notifier's ``Registry``, the monitor's ``PlanBook``."""

    def __init__(self) -> None:
        # Set by ``follow``: the log's end of the registry topic, what has been folded, who waits for it.
        self._end_offsets = None
        self._seen: dict = {}
        self._waiting: list[tuple[dict, asyncio.Future]] = []

    async def caught_up(self, timeout_s: float = 2.0) -> None:
        """Wait (at most ``timeout_s``) until this book holds every registry event in the log when
        called: what another process (another edge behind the same port) wrote just before is seen
        here too. At once when nothing new is in the log, or when no follower runs."""
        if self._end_offsets is None:
            return
        try:
            end = await self._end_offsets()
        except Exception as exc:  # the log away: answer from what is known
            log.debug("registry end offsets unavailable: %s", exc)
            return
        if self._reached(end):
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append((end, waiter))
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout_s)
        except asyncio.TimeoutError:
            pass

    def _reached(self, end: dict) -> bool:
        seen = self._seen
        return all(seen.get(tuple(tp), 0) >= offset for tp, offset in end.items())

    def _folded(self) -> None:
        """``follow`` folded more: wake who waited for it."""
        if self._waiting:
            still = []
            for end, waiter in self._waiting:
                if self._reached(end):
                    if not waiter.done():
                        waiter.set_result(None)
                else:
                    still.append((end, waiter))
            self._waiting = still


class Registry(Followed):
    def __init__(self) -> None:
        super().__init__()
        self.projects: dict[str, Project] = {}
        self.checks: dict[str, CheckConfig] = {}
        self.channels: dict[str, ChannelConfig] = {}
        self._by_ping_key: dict[bytes, Project] = {}  # digest -> project
        self._by_api_key: dict[bytes, tuple[Project, bool]] = {}  # digest -> (project, read_only)
        self._by_slug: dict[tuple[str, str], set[str]] = defaultdict(set)  # (project, slug) -> ids
        # project -> its check ids, in the order of self.checks (a dict as an ordered set)
        self._by_project: dict[str, dict[str, None]] = defaultdict(dict)

    # --- folding events ---

    def apply(self, event) -> None:
        if isinstance(event, CheckUpserted):
            self._put_check(event.check)
        elif isinstance(event, ChannelUpserted):
            self.channels[event.channel.id] = event.channel
        elif isinstance(event, ChannelDeleted):
            self.channels.pop(event.channel_id, None)
        elif isinstance(event, CheckDeleted):
            self._drop_check(event.check_id)
        elif isinstance(event, ProjectUpserted):
            self._drop_project_keys(event.project.id)
            p = event.project
            self.projects[p.id] = p
            self._by_ping_key[_digest(p.ping_key)] = p
            if p.api_key:
                self._by_api_key[_digest(p.api_key)] = (p, False)
            if p.api_key_readonly:
                self._by_api_key[_digest(p.api_key_readonly)] = (p, True)
        elif isinstance(event, ProjectDeleted):
            self._drop_project_keys(event.project_id)
            self.projects.pop(event.project_id, None)
            for check_id in list(self._by_project.get(event.project_id, ())):
                self._drop_check(check_id)
            for channel_id in [c.id for c in self.channels.values() if c.project_id == event.project_id]:
                del self.channels[channel_id]

    def _put_check(self, check: CheckConfig) -> None:
        self._drop_check(check.id)
        self.checks[check.id] = check
        self._by_project[check.project_id][check.id] = None
        if check.slug:
            self._by_slug[(check.project_id, check.slug)].add(check.id)

    def _drop_check(self, check_id: str) -> None:
        old = self.checks.pop(check_id, None)
        if old is not None:
            ids = self._by_project.get(old.project_id)
            if ids is not None:
                ids.pop(check_id, None)
                if not ids:
                    del self._by_project[old.project_id]
        if old is not None and old.slug:
            ids = self._by_slug.get((old.project_id, old.slug))
            if ids is not None:
                ids.discard(check_id)
                if not ids:
                    del self._by_slug[(old.project_id, old.slug)]

    def _drop_project_keys(self, project_id: str) -> None:
        old = self.projects.get(project_id)
        if old is None:
            return
        self._by_ping_key.pop(_digest(old.ping_key), None)
        self._by_api_key.pop(_digest(old.api_key), None)
        self._by_api_key.pop(_digest(old.api_key_readonly), None)

    # --- lookups ---

    def project_by_ping_key(self, ping_key: str) -> Project | None:
        return self._by_ping_key.get(_digest(ping_key))

    def project_by_api_key(self, api_key: str) -> tuple[Project, bool] | None:
        """(project, read_only) for an API key, or None."""
        return self._by_api_key.get(_digest(api_key))

    def checks_by_slug(self, project_id: str, slug: str) -> list[CheckConfig]:
        return [self.checks[i] for i in self._by_slug.get((project_id, slug), ())]

    def project_checks(self, project_id: str) -> list[CheckConfig]:
        return [self.checks[i] for i in self._by_project.get(project_id, ())]

    def project_check_count(self, project_id: str) -> int:
        return len(self._by_project.get(project_id, ()))

    def project_channels(self, project_id: str) -> list[ChannelConfig]:
        """The project's channels, oldest first."""
        return sorted((c for c in self.channels.values() if c.project_id == project_id),
                      key=lambda c: (c.created, c.id))

    def check_channels(self, check: CheckConfig) -> tuple[str, ...]:
        """The check's channel ids that exist (a removed channel's id may linger in its config:
        the registry's partitions are folded in no particular order relative to each other)."""
        return tuple(c for c in check.channels if c in self.channels)


async def save(event_log: EventLog, registry: Registry | None, event) -> None:
    """Write a registry event to the log (durably), then apply that same event to ``registry``
    so the writer reads its own write before the topic comes back around."""
    await event_log.produce(TOPIC_CHECKS, encode(event), key=event_key(event))
    if registry is not None:
        registry.apply(event)


async def save_check(event_log: EventLog, registry: Registry | None, check: CheckConfig) -> None:
    await save(event_log, registry, CheckUpserted(event_id=uuid7(), check=check))


async def add_channel(event_log: EventLog, registry: Registry, channel: ChannelConfig) -> None:
    """Save a new channel and assign it to every check of its project (as Healthchecks assigns a
    new integration): the channel first, so no check names a channel the log has not."""
    await save(event_log, registry, ChannelUpserted(event_id=uuid7(), channel=channel))
    updated = [msgspec.structs.replace(check, channels=tuple(sorted(registry.check_channels(check) + (channel.id,))))
               for check in registry.project_checks(channel.project_id) if channel.id not in check.channels]
    for i in range(0, len(updated), 500):  # written concurrently: the log acknowledges them together
        await asyncio.gather(*(save_check(event_log, registry, check) for check in updated[i:i + 500]))


async def remove_channel(event_log: EventLog, registry: Registry, channel: ChannelConfig) -> None:
    """Delete a channel; checks that name it ignore it from then on (``check_channels``)."""
    await save(event_log, registry, ChannelDeleted(event_id=uuid7(), channel_id=channel.id,
                                                   project_id=channel.project_id))


def new_project(name: str) -> Project:
    # 32-character API keys: Healthchecks' clients and its auth check expect that length.
    return Project(
        id=str(uuid7()),
        name=name,
        ping_key=secrets.token_urlsafe(16),
        api_key=secrets.token_urlsafe(24),
        api_key_readonly=secrets.token_urlsafe(24),
        created=utcnow(),
    )


async def create_project(event_log: EventLog, name: str, registry: Registry | None = None) -> Project:
    project = new_project(name)
    await save(event_log, registry, ProjectUpserted(event_id=uuid7(), project=project))
    return project


LAG_EVERY_S = 5.0
STALL_S = 120.0


async def follow(
    registry: Registry, event_log: EventLog, ready: asyncio.Event, stop: asyncio.Event, name: str = "registry",
    *, timestamps: bool = False,
) -> None:
    """Fold the registry topic into ``registry``; set ``ready`` once caught up with its end (with
    ``timestamps``, each event is applied with its record's timestamp: ``apply(event, ms)``). Its lag
    is the ``pingstream_consumer_lag{group=name}`` gauge; ``name`` is also its entry in /healthz and
    /readyz (not ready until caught up)."""
    beat = health.loop(name, STALL_S)
    health.check(name, lambda: None if ready.is_set() else "not caught up with the registry topic yet")
    consumer = event_log.consumer([TOPIC_CHECKS], group=None)
    try:
        await consumer.start()
        end = await consumer.end_offsets()
        seen: dict = {}
        syncable = isinstance(registry, Followed)
        if syncable:
            registry._seen = seen
            registry._end_offsets = consumer.end_offsets
        caught_up = all(v == 0 for v in end.values())
        if caught_up:
            ready.set()
        next_lag = time.monotonic() + LAG_EVERY_S
        while not stop.is_set():
            beat.beat()
            records = await consumer.getmany(max_records=10_000, timeout_ms=100)
            for r in records:
                try:
                    event = decode(r.value)
                except Exception as exc:
                    log.error("undecodable registry record %s/%d@%d: %s", r.topic, r.partition, r.offset, exc)
                    continue
                if event is not None:
                    if timestamps:
                        registry.apply(event, r.timestamp_ms)
                    else:
                        registry.apply(event)
                seen[(r.topic, r.partition)] = r.offset + 1
            if syncable:
                registry._folded()
            if not caught_up and all(seen.get(tuple(tp), 0) >= off for tp, off in end.items()):
                caught_up = True
                ready.set()
            if time.monotonic() >= next_lag:
                next_lag = time.monotonic() + LAG_EVERY_S
                await _record_lag(name, consumer, seen)
    finally:
        if isinstance(registry, Registry):
            registry._end_offsets = None
            for _, waiter in registry._waiting:
                if not waiter.done():
                    waiter.set_result(None)
            registry._waiting = []
        health.forget(name)
        await consumer.close()


async def _record_lag(name: str, consumer, seen: dict) -> None:
    try:
        async with asyncio.timeout(2.0):  # during an outage: a short wait, every few seconds
            ends = await consumer.end_offsets()
    except Exception as exc:  # best effort, as every lag gauge
        log.debug("registry end offsets unavailable: %s", exc)
        return
    for tp, end in ends.items():
        metrics.CONSUMER_LAG.labels(name, tp.topic, str(tp.partition)).set(max(0, end - seen.get(tuple(tp), 0)))
