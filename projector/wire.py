"""The projector's reading of the log: pings decoded to what the fold reads, their rows made by ClickHouse.

A ``PingEvent`` record is read twice, by two parsers of the same bytes:

- ``decode``/``decode_all`` turn it into a ``PingFacts``: the fields the fold reads (ids, kind,
  rid, time, exit status), with the types and tag the contract (``schemas.events``) gives them.
  msgspec skips the rest (body, user agent, address...) without making a Python object of it.
  Every other event type decodes as ``schemas.events`` decodes it.
- ``PINGS_SELECT`` makes the ``pings`` row in ClickHouse from the record itself (``JSONExtract``
  into a named tuple, parsed once), beside the values the fold adds (``n``, ``duration_s``, and for
  a ping that ends a run, the start's event id, from which a view of ``pings_ending_runs`` makes
  the ``runs`` row: schemas/ddl.py).

Both read the record as the contract encodes it (msgspec JSON: bytes as base64, datetimes as RFC 3339,
UTC). A field the record leaves out takes the contract's default. The body is decoded leniently
(``tryBase64Decode``): bytes a producer got wrong make an empty body, not an insert that fails for
ever.
"""

from __future__ import annotations

from typing import Union

from schemas.events import Event, PingEvent, PingFacts, decoders

# A ping as ``PingFacts`` (msgspec skips the rest of its record), every other event as ``schemas.events`` has it.
decode, decode_all = decoders(Union[(PingFacts, *(t for t in Event.__args__ if t is not PingEvent))])


# --- the pings rows, made by ClickHouse from the records --------------------------------------

# What the pings and runs inserts send: each ping's record and what the fold adds to it (its ``n``, and for a
# ping that ends a run, the duration and the start's event id).
PINGS_SOURCE = (("record", "String"), ("n", "UInt64"), ("duration_s", "Nullable(Float64)"),
                ("start_event_id", "Nullable(String)"))

# The record's fields, by name, as JSONExtract finds them (a field left out is NULL here: see PINGS_SELECT).
_RECORD = ", ".join((
    "event_id String", "check_id String", "project_id String", "kind String", "exit_status Nullable(UInt8)",
    "rid Nullable(String)", "received_at String", "method Nullable(String)", "scheme Nullable(String)",
    "remote_addr Nullable(String)", "user_agent Nullable(String)", "body Nullable(String)",
    "body_size Nullable(UInt64)", "source Nullable(String)",
))

def _field(name: str) -> str:
    """The record's field ``name`` in ``p`` (the record's named tuple). ``tupleElement`` rather than ``p.name``:
    ClickHouse resolves each ``p.name`` as a compound identifier, about 0.6 ms of query analysis apiece, which a
    small batch pays in full (a one-row pings insert took 24 ms of CPU, 13 of them to analyse its SELECT)."""
    return f"tupleElement(p, '{name}')"


# The pings columns (projector.fold.COLUMNS["pings"] order) from ``{source}``, a table of PINGS_SOURCE;
# the defaults are PingEvent's.
PINGS_SELECT = (
    f"SELECT toUUID({_field('event_id')}), toUUID({_field('check_id')}), toUUID({_field('project_id')}), n, "
    f"{_field('kind')}, {_field('exit_status')}, CAST({_field('rid')}, 'Nullable(UUID)'), "
    f"parseDateTime64BestEffort({_field('received_at')}, 6, 'UTC'), ifNull({_field('method')}, 'GET'), "
    f"ifNull({_field('scheme')}, 'http'), ifNull({_field('remote_addr')}, ''), ifNull({_field('user_agent')}, ''), "
    f"tryBase64Decode(ifNull({_field('body')}, '')), ifNull({_field('body_size')}, 0), "
    f"ifNull({_field('source')}, 'ping'), duration_s, CAST(start_event_id, 'Nullable(UUID)') "
    f"FROM (SELECT JSONExtract(record, 'Tuple({_RECORD})') AS p, n, duration_s, start_event_id FROM {{source}})"
)
