"""The in-memory view of the registry topic (projects and checks).

Every service that needs check configuration (the edge to resolve pings, the
monitor for schedules) folds ``pingstream.checks`` into a ``Registry``: it
reads the topic from the beginning at start, then follows it live.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import defaultdict

from schemas.events import (
    TOPIC_CHECKS,
    CheckConfig,
    CheckDeleted,
    CheckUpserted,
    Project,
    ProjectDeleted,
    ProjectUpserted,
    decode,
)

from .eventlog.base import EventLog

log = logging.getLogger(__name__)


def project_key(project_id: str) -> bytes:
    return f"project:{project_id}".encode()


def _digest(secret: str) -> bytes:
    # Keys are indexed by their hash: a lookup compares digests, never the secret
    # itself byte by byte, so response timing tells nothing about a key's prefix.
    return hashlib.sha256(secret.encode()).digest()


class Registry:
    def __init__(self) -> None:
        self.projects: dict[str, Project] = {}
        self.checks: dict[str, CheckConfig] = {}
        self._by_ping_key: dict[str, Project] = {}
        self._by_api_key: dict[bytes, tuple[Project, bool]] = {}  # digest -> (project, read_only)
        self._by_slug: dict[tuple[str, str], set[str]] = defaultdict(set)  # (project, slug) -> ids
        self._changed = asyncio.Event()

    # --- folding events ---

    def apply(self, event) -> None:
        if isinstance(event, CheckUpserted):
            self._put_check(event.check)
        elif isinstance(event, CheckDeleted):
            self._drop_check(event.check_id)
        elif isinstance(event, ProjectUpserted):
            self._drop_project_keys(event.project.id)
            p = event.project
            self.projects[p.id] = p
            self._by_ping_key[p.ping_key] = p
            if p.api_key:
                self._by_api_key[_digest(p.api_key)] = (p, False)
            if p.api_key_readonly:
                self._by_api_key[_digest(p.api_key_readonly)] = (p, True)
        elif isinstance(event, ProjectDeleted):
            self._drop_project_keys(event.project_id)
            self.projects.pop(event.project_id, None)
            for check_id in [c.id for c in self.checks.values() if c.project_id == event.project_id]:
                self._drop_check(check_id)
        self._changed.set()
        self._changed = asyncio.Event()

    def _put_check(self, check: CheckConfig) -> None:
        self._drop_check(check.id)
        self.checks[check.id] = check
        if check.slug:
            self._by_slug[(check.project_id, check.slug)].add(check.id)

    def _drop_check(self, check_id: str) -> None:
        old = self.checks.pop(check_id, None)
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
        self._by_ping_key.pop(old.ping_key, None)
        self._by_api_key.pop(_digest(old.api_key), None)
        self._by_api_key.pop(_digest(old.api_key_readonly), None)

    # --- lookups ---

    def project_by_ping_key(self, ping_key: str) -> Project | None:
        return self._by_ping_key.get(ping_key)

    def project_by_api_key(self, api_key: str) -> tuple[Project, bool] | None:
        """(project, read_only) for an API key, or None."""
        return self._by_api_key.get(_digest(api_key))

    def checks_by_slug(self, project_id: str, slug: str) -> list[CheckConfig]:
        return [self.checks[i] for i in self._by_slug.get((project_id, slug), ())]

    def project_checks(self, project_id: str) -> list[CheckConfig]:
        return [c for c in self.checks.values() if c.project_id == project_id]

    async def wait_for(self, predicate, timeout_s: float) -> bool:
        """Wait until ``predicate(self)`` holds (e.g. our own write came back), up to a timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not predicate(self):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                return predicate(self)
        return True


async def follow(registry: Registry, event_log: EventLog, ready: asyncio.Event, stop: asyncio.Event) -> None:
    """Fold the registry topic into ``registry``; set ``ready`` once caught up with its end."""
    consumer = event_log.consumer([TOPIC_CHECKS], group=None)
    await consumer.start()
    try:
        end = await consumer.end_offsets()
        seen: dict = {}
        caught_up = all(v == 0 for v in end.values())
        if caught_up:
            ready.set()
        while not stop.is_set():
            records = await consumer.getmany(max_records=10_000, timeout_ms=100)
            for r in records:
                try:
                    event = decode(r.value)
                except Exception as exc:
                    log.error("undecodable registry record %s/%d@%d: %s", r.topic, r.partition, r.offset, exc)
                    continue
                if event is not None:
                    registry.apply(event)
                seen[(r.topic, r.partition)] = r.offset + 1
            if not caught_up and all(seen.get(tuple(tp), 0) >= off for tp, off in end.items()):
                caught_up = True
                ready.set()
    finally:
        await consumer.close()
