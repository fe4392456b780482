"""A reference alerting consumer: POST each transition as JSON to its project's URL.

- Runs in the consumer shell (``runtime.consumer``), which commits what
  ``handle`` names: the commit point below, not the end of the batch.
- At least once: a record's offset is committed only when every delivery of
  it and of the records before it (in its partition) has succeeded, so a
  restart redelivers what was not confirmed. Receivers dedupe on ``event_id``.
- A failing endpoint never blocks other projects: each project has its own
  queue and worker that retries with exponential backoff (capped) forever;
  meanwhile other projects' deliveries go on (only the commit point waits).
- Ingest gaps go to every configured URL: they explain missing data.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import aiohttp

from runtime.consumer import Batch, ConsumerShell, retry
from runtime.eventlog.base import EventLog, TopicPartition
from schemas.events import TOPIC_TRANSITIONS, IngestGap, Transition, decode

log = logging.getLogger(__name__)

GROUP = "pingstream-webhooks"


class _Pending:
    """Per partition: offsets handed out and not yet delivered; the commit point is the lowest."""

    def __init__(self) -> None:
        self.open: dict[TopicPartition, dict[int, int]] = {}  # tp -> {offset: deliveries left}
        self.read: dict[TopicPartition, int] = {}  # tp -> next offset after the last one read

    def add(self, tp: TopicPartition, offset: int, deliveries: int) -> None:
        self.read[tp] = offset + 1
        if deliveries:
            self.open.setdefault(tp, {})[offset] = deliveries

    def done(self, tp: TopicPartition, offset: int) -> None:
        left = self.open[tp][offset] - 1
        if left:
            self.open[tp][offset] = left
        else:
            del self.open[tp][offset]

    def commit_point(self) -> dict[TopicPartition, int]:
        return {tp: min(self.open.get(tp) or [nxt]) for tp, nxt in self.read.items()}


class _Refused(Exception):
    """The endpoint answered, but not with success."""


async def run_webhooks(
    event_log: EventLog,
    url_for: Callable[[str], str | None],
    stop: asyncio.Event,
    *,
    max_backoff_s: float = 60.0,
    first_backoff_s: float = 0.5,
    timeout_s: float = 10.0,
) -> None:
    """Deliver until ``stop``. ``url_for(project_id)`` names the project's webhook (None: no webhook)."""
    pending = _Pending()
    queues: dict[str, asyncio.Queue] = {}
    workers: list[asyncio.Task] = []
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))

    async def post(url: str, body: bytes) -> None:
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
            if resp.status >= 300:
                raise _Refused(f"HTTP {resp.status}")

    async def worker(queue: asyncio.Queue) -> None:
        while True:
            url, body, tp, offset = await queue.get()
            # Retried until delivered (no stop: workers are cancelled when the sink stops).
            await retry(f"webhook {url}", lambda: post(url, body), logger=log,
                        first_backoff_s=first_backoff_s, max_backoff_s=max_backoff_s)
            pending.done(tp, offset)

    def enqueue(url: str, body: bytes, tp: TopicPartition, offset: int) -> None:
        queue = queues.get(url)
        if queue is None:
            queue = queues[url] = asyncio.Queue()
            workers.append(asyncio.create_task(worker(queue), name=f"webhook {url}"))
        queue.put_nowait((url, body, tp, offset))

    async def handle(batch: Batch) -> dict[TopicPartition, int]:
        for r in batch.records:
            tp = TopicPartition(r.topic, r.partition)
            try:
                event = decode(r.value)
            except Exception as exc:
                log.error("undecodable record %s/%d@%d: %s", r.topic, r.partition, r.offset, exc)
                event = None
            urls: list[str] = []
            if isinstance(event, Transition):
                url = url_for(event.project_id)
                urls = [url] if url else []
            elif isinstance(event, IngestGap):
                urls = sorted({u for u in (url_for(p) for p in _projects(url_for)) if u})
            pending.add(tp, r.offset, len(urls))
            for url in urls:
                enqueue(url, r.value, tp, r.offset)
        # Called for empty batches too: deliveries finished meanwhile move the commit point.
        return pending.commit_point()

    try:
        async with event_log.consumer([TOPIC_TRANSITIONS], group=GROUP) as consumer:
            await ConsumerShell("webhooks", consumer, handle, logger=log).run(stop)
    finally:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await session.close()


def _projects(url_for) -> list[str]:
    """Projects with a webhook, if ``url_for`` can tell (a dict's ``get``); else none."""
    owner = getattr(url_for, "__self__", None)
    return list(owner) if isinstance(owner, dict) else []
