"""The dead-letter topic: records a service could not process, kept with where they came from.

A poison record (undecodable, or one that makes a fold raise) must neither stop
a consumer nor be silently dropped: it is logged with topic/partition/offset,
written here, and the consumer moves on.
"""

from __future__ import annotations

import logging

import msgspec

from schemas.events import TOPIC_DEAD_LETTER

from . import metrics
from .eventlog.base import EventLog, Record

log = logging.getLogger(__name__)


class DeadLetter(msgspec.Struct, frozen=True):
    service: str
    topic: str
    partition: int
    offset: int
    error: str
    key: bytes | None
    value: bytes


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(DeadLetter)


def decode(value: bytes) -> DeadLetter:
    return _decoder.decode(value)


async def send(event_log: EventLog, service: str, record: Record, error: BaseException | str) -> None:
    reason = error if isinstance(error, str) else f"{error.__class__.__name__}: {error}"
    log.error("%s: poison record %s/%d@%d sent to %s: %s", service, record.topic, record.partition,
              record.offset, TOPIC_DEAD_LETTER, reason[:300])
    letter = DeadLetter(service, record.topic, record.partition, record.offset, reason[:2000], record.key, record.value)
    await event_log.produce(TOPIC_DEAD_LETTER, _encoder.encode(letter), key=record.key)
    metrics.DEAD_LETTERS.labels(service).inc()
