"""A notifier on a real embedded log, and what the monitor and the edge would write to that log."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from datetime import timedelta

from checks.channels import channel_from_spec
from notify.service import Notifier
from runtime.config import Config
from runtime.eventlog.sqlite import SqliteEventLog
from runtime.registry import Registry, add_channel, create_project, save_check
from schemas.events import (
    TOPIC_DELIVERIES,
    TOPIC_PINGS,
    TOPIC_TRANSITIONS,
    ChannelConfig,
    CheckConfig,
    Delivery,
    IngestGap,
    PingEvent,
    Transition,
    decode,
    encode,
    stable_id,
    utcnow,
    uuid7,
)


@dataclasses.dataclass
class Rig:
    log: object  # an EventLog
    registry: Registry  # the writers' (an edge's) view
    project: object
    config: Config
    notifier: Notifier | None = None
    stop: asyncio.Event | None = None
    task: asyncio.Task | None = None

    async def check(self, **fields) -> CheckConfig:
        fields.setdefault("id", str(uuid7()))
        fields.setdefault("channels", tuple(sorted(c.id for c in self.registry.project_channels(self.project.id))))
        check = CheckConfig(project_id=fields.pop("project_id", self.project.id), created=utcnow(), **fields)
        await save_check(self.log, self.registry, check)
        return check

    async def channel(self, **spec) -> ChannelConfig:
        channel = channel_from_spec(spec, id=str(uuid7()), project_id=self.project.id, created=utcnow(),
                                    allow_private=True)
        await add_channel(self.log, self.registry, channel)
        return channel

    async def ping(self, check: CheckConfig, kind: str = "success", exit_status: int | None = None,
                   body: bytes = b"") -> PingEvent:
        ping = PingEvent(event_id=uuid7(), check_id=check.id, project_id=check.project_id, kind=kind,
                         received_at=utcnow(), exit_status=exit_status, body=body, body_size=len(body))
        await self.log.produce(TOPIC_PINGS, encode(ping), key=check.id.encode())
        return ping

    async def transition(self, check: CheckConfig, frm: str, to: str, reason: str = "no ping within schedule + grace",
                         cause: PingEvent | None = None, from_base: str = "", to_base: str = "",
                         event_type=Transition, **extra) -> Transition:
        cause_id = cause.event_id if cause else ""
        t = event_type(event_id=stable_id(check.id, frm, to, cause_id or str(uuid7())), check_id=check.id,
                       project_id=check.project_id, from_status=frm, to_status=to,
                       at=cause.received_at if cause else utcnow(), reason=reason, cause_event_id=cause_id,
                       from_base=from_base or ("up" if frm in ("up", "grace", "started") else frm),
                       to_base=to_base or ("up" if to in ("up", "grace", "started") else to), **extra)
        await self.log.produce(TOPIC_TRANSITIONS, encode(t), key=check.id.encode())
        return t

    async def gap(self) -> IngestGap:
        now = utcnow()
        gap = IngestGap(event_id=str(uuid7()), start=now - timedelta(seconds=30), end=now, partition=0)
        await self.log.produce(TOPIC_TRANSITIONS, encode(gap))
        return gap

    async def deliveries(self) -> list[Delivery]:
        consumer = self.log.consumer([TOPIC_DELIVERIES], group=None)
        await consumer.start()
        out = []
        try:
            while records := await consumer.getmany(timeout_ms=0):
                out.extend(e for r in records if isinstance(e := decode(r.value), Delivery))
        finally:
            await consumer.close()
        return out

    async def wait_deliveries(self, n: int, timeout_s: float = 15.0) -> list[Delivery]:
        for _ in range(int(timeout_s / 0.05)):
            found = await self.deliveries()
            if len(found) >= n:
                return found
            await asyncio.sleep(0.05)
        raise AssertionError(f"{len(found)} deliveries recorded, expected {n}: {found}")

    async def start(self, **notifier_fields) -> Notifier:
        self.stop = asyncio.Event()
        self.notifier = Notifier(self.log, self.config, **notifier_fields)
        self.task = asyncio.create_task(self.notifier.run(self.stop))
        waiter = asyncio.ensure_future(self.notifier.consuming.wait())
        done, _ = await asyncio.wait([waiter, self.task], timeout=20, return_when=asyncio.FIRST_COMPLETED)
        if self.task in done:
            self.task.result()
        assert waiter in done, "the notifier did not start consuming"
        return self.notifier

    async def halt(self) -> None:
        if self.task is not None:
            self.stop.set()
            await asyncio.wait_for(self.task, 20)
            self.task = None


@contextlib.asynccontextmanager
async def rig(tmp_path, event_log=None, **env):
    """A rig on the embedded log in ``tmp_path``, or on ``event_log`` (started; closed by its owner)."""
    base = {"PINGSTREAM_DATA": str(tmp_path), "PINGSTREAM_WEBHOOK_ALLOW_PRIVATE": "1",
            "PINGSTREAM_NOTIFY_RETRY_S": "3", "PINGSTREAM_NOTIFY_TIMEOUT_S": "2",
            "PINGSTREAM_PUBLIC_URL": "https://ping.example.com"}
    config = Config.from_env({**base, **env})
    log = event_log
    if log is None:
        log = SqliteEventLog(config.sqlite_path, default_partitions=2)
        await log.start()
    registry = Registry()
    project = await create_project(log, "acme", registry)
    r = Rig(log, registry, project, config)
    try:
        yield r
    finally:
        await r.halt()
        if event_log is None:
            await log.close()
