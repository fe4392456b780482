"""Monitor state that survives a restart: the compacted topic ``pingstream.monitor-state``.

Key = check uuid, value = the CheckState as a JSON array (empty value: the
check was deleted). Key ``clock:<partition>`` holds that partition's watermark
and recent ingest gaps. Key ``seen:<event id>`` holds a ping sent with an
``Idempotency-Key`` that a check's state has applied (check, time, partition,
offset), so a restarted monitor still skips a retry of it within 24 h; an empty
value forgets it (past the window, or its check deleted). With the volume gate, key
``volume:<partition>`` holds the gate's progress on that partition (``GateRecord``) and
``volume:<partition>:<project>:<hour>`` that partition's pings of the project per minute of
the hour (``HourRecord``; empty value: forgotten), so a restarted gate is not blind. The service writes every state a batch changed
*before* committing the batch's offsets, so a restart resumes from states at
least as new as the offsets (records already folded are skipped by offset,
see ``CheckState.offset``) and re-emits no old transition.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import msgspec

from runtime.eventlog.base import EventLog
from schemas.events import TOPIC_MONITOR_STATE  # re-exported for the service

from .transitions import CheckState
from .volume import GateRecord, HourRecord

log = logging.getLogger(__name__)

_CLOCK = b"clock:"
_SEEN = b"seen:"
_VOLUME = b"volume:"


class ClockRecord(msgspec.Struct, frozen=True):
    watermark: float | None
    gaps: list[tuple[float, float]] = []


class SeenRecord(msgspec.Struct, frozen=True, array_like=True):
    """A keyed ping a check's state applied: ``offset`` tells whether the state written holds it."""

    check_id: str
    at: float
    partition: int
    offset: int


_state_decoder = msgspec.json.Decoder(CheckState)
_clock_decoder = msgspec.json.Decoder(ClockRecord)
_seen_decoder = msgspec.json.Decoder(SeenRecord)
_hour_decoder = msgspec.json.Decoder(HourRecord)
_gate_decoder = msgspec.json.Decoder(GateRecord)
_encoder = msgspec.json.Encoder()


def encode_state(state: CheckState) -> bytes:
    return _encoder.encode(state)


def clock_key(partition: int) -> bytes:
    return _CLOCK + str(partition).encode()


def seen_key(event_id: str) -> bytes:
    return _SEEN + event_id.encode()


def encode_seen(seen: SeenRecord) -> bytes:
    return _encoder.encode(seen)


def encode_clock(watermark: float | None, gaps) -> bytes:
    return _encoder.encode(ClockRecord(watermark, [tuple(g) for g in gaps]))


def volume_record(key, value: HourRecord | GateRecord | None) -> tuple[bytes, bytes]:
    """A record of the volume gate's history: ``key`` is a partition (its GateRecord) or
    ``(partition, project, hour)`` (its HourRecord; None deletes it)."""
    name = str(key) if isinstance(key, int) else f"{key[0]}:{key[1]}:{key[2]}"
    return _VOLUME + name.encode(), b"" if value is None else _encoder.encode(value)


class Loaded(NamedTuple):
    states: dict[str, CheckState]
    clocks: dict[int, ClockRecord]
    seen: dict[str, SeenRecord]  # by event id
    hours: dict[tuple[int, str, int], HourRecord] = {}  # the volume gate's counts
    gates: dict[int, GateRecord] = {}  # the volume gate's progress per partition


async def load(event_log: EventLog, partitions: set[int]) -> Loaded:
    """Read the state topic to its end; keep what belongs to ``partitions`` of the pings topic."""
    states: dict[str, CheckState] = {}
    clocks: dict[int, ClockRecord] = {}
    pings_seen: dict[str, SeenRecord] = {}
    check_ids: dict[str, str] = {}  # one string per check for its seen records (a fleet's keys are millions)
    hours: dict[tuple[int, str, int], HourRecord] = {}
    gates: dict[int, GateRecord] = {}

    def apply(records) -> None:
        for r in records:
            key = r.key or b""
            try:
                if key.startswith(_CLOCK):
                    p = int(key[len(_CLOCK):])
                    if p in partitions:
                        clocks[p] = _clock_decoder.decode(r.value)
                elif key.startswith(_SEEN):
                    event_id = key[len(_SEEN):].decode()
                    record = _seen_decoder.decode(r.value) if r.value else None
                    if record is not None and record.partition in partitions:
                        check_id = check_ids.setdefault(record.check_id, record.check_id)
                        if check_id is not record.check_id:
                            record = SeenRecord(check_id, record.at, record.partition, record.offset)
                        pings_seen[event_id] = record
                    else:
                        pings_seen.pop(event_id, None)
                elif key.startswith(_VOLUME):
                    # "<partition>" or "<partition>:<scope>:<hour>" (a network scope may hold ":")
                    name = key[len(_VOLUME):].decode()
                    head, _, rest = name.partition(":")
                    p = int(head)
                    if not rest:
                        if p in partitions and r.value:
                            gates[p] = _gate_decoder.decode(r.value)
                    else:
                        scope, _, hour = rest.rpartition(":")
                        hour_key = (p, scope, int(hour))
                        if p in partitions and r.value:
                            hours[hour_key] = _hour_decoder.decode(r.value)
                        else:
                            hours.pop(hour_key, None)
                elif not r.value:
                    states.pop(key.decode(), None)
                else:
                    state = _state_decoder.decode(r.value)
                    check_id = key.decode()
                    if state.partition in partitions:
                        states[check_id] = state
                    else:
                        states.pop(check_id, None)
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                log.error("bad monitor state record %s/%d@%d: %s", r.topic, r.partition, r.offset, exc)

    await event_log.read_to_end(TOPIC_MONITOR_STATE, apply)
    return Loaded(states, clocks, pings_seen, hours, gates)
