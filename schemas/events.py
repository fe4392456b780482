"""Every event the pipeline carries, and the one codec that reads and writes them.

Events are msgspec Structs: frozen, tagged by a ``type`` field, encoded as JSON
(bytes as base64, datetimes as RFC 3339 with microseconds, always UTC).
Decoding skips event types this version does not know (returns ``None``) so an
older consumer keeps running when a newer producer adds a type.

Topics (see ``schemas/topics/*.md``):
- ``pingstream.pings``: PingEvent, Paused, Resumed, Tick — keyed by check uuid
  (Tick: no key, written to every partition).
- ``pingstream.checks``: ProjectUpserted, ProjectDeleted, CheckUpserted,
  CheckDeleted — compacted, keyed by ``project:<id>`` / check uuid.
- ``pingstream.checks``: also ChannelUpserted, ChannelDeleted — keyed by ``channel:<id>``.
- ``pingstream.transitions``: Transition, Flapping, Broken, IngestGap, IngestAnomaly — keyed by check uuid
  (the last two: no key).
- ``pingstream.deliveries``: Delivery — keyed by check uuid (ingest gaps: none).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Literal, Union

import msgspec

TOPIC_PINGS = "pingstream.pings"
TOPIC_CHECKS = "pingstream.checks"
TOPIC_TRANSITIONS = "pingstream.transitions"
TOPIC_DEAD_LETTER = "pingstream.dead-letter"
TOPIC_MONITOR_STATE = "pingstream.monitor-state"  # compacted: the monitor's per-check state
TOPIC_DELIVERIES = "pingstream.deliveries"  # the notifier's outcome of each alert to each channel
TOPIC_NOTIFIER_PINGS = "pingstream.notifier-pings"  # compacted: the last pings the notifier keeps per check

PingKind = Literal["success", "start", "fail", "log", "ign"]
Status = Literal["new", "up", "grace", "down", "started", "paused"]
ScheduleKind = Literal["simple", "cron", "oncalendar"]


class _Event(msgspec.Struct, frozen=True, tag_field="type", kw_only=True, gc=False):
    """``gc=False``: an event holds values and structs of values, never itself, so the cycle collector need not
    track it (a projector's batch makes 50,000 of them at once; the collector walked each)."""

    event_id: str


# --- pingstream.pings -------------------------------------------------------


class PingFacts(_Event, frozen=True, tag="ping"):
    """A ping's leading fields, what the projector's fold reads: a reader may decode a ping as this alone
    (``decoders``), leaving the rest in the record's bytes. On the wire it is a ``PingEvent``."""

    check_id: str
    project_id: str
    kind: PingKind
    received_at: datetime
    exit_status: int | None = None
    rid: str | None = None


class PingEvent(PingFacts, frozen=True, tag="ping"):
    method: str = "GET"
    scheme: str = "http"
    remote_addr: str = ""
    user_agent: str = ""
    body: bytes = b""
    body_size: int = 0
    source: Literal["ping", "checkin"] = "ping"


class Paused(_Event, frozen=True, tag="paused"):
    check_id: str
    project_id: str
    at: datetime


class Resumed(_Event, frozen=True, tag="resumed"):
    check_id: str
    project_id: str
    at: datetime


class Tick(_Event, frozen=True, tag="tick"):
    """Clock pulse: the edge writes one to every partition about once a second."""

    at: datetime
    partition: int


# --- pingstream.checks (registry) ------------------------------------------


class Window(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A maintenance window or a snooze (pingstream's extension): transitions inside it are recorded
    as always, their notifications held. One-off (``start``..``end``) or recurring (from each fire
    of ``cron`` in ``tz``, for ``duration_s``)."""

    id: str
    kind: Literal["maintenance", "snooze"] = "maintenance"
    start: datetime | None = None
    end: datetime | None = None
    cron: str | None = None
    duration_s: int | None = None
    tz: str = "UTC"


class Project(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    ping_key: str
    api_key: str
    api_key_readonly: str
    created: datetime
    windows: tuple[Window, ...] = ()  # the project's maintenance windows (every check's)


class CheckConfig(msgspec.Struct, frozen=True, kw_only=True):
    """A check's whole configuration, as the registry carries it."""

    id: str
    project_id: str
    name: str = ""
    slug: str = ""
    tags: str = ""
    desc: str = ""
    kind: ScheduleKind = "simple"
    timeout_s: int = 86400
    grace_s: int = 3600
    schedule: str = "* * * * *"
    tz: str = "UTC"
    manual_resume: bool = False
    methods: str = ""  # "" = any method, "POST" = only POST counts
    filter_subject: bool = False  # e-mail pings' subject (Healthchecks); kept for the API
    filter_body: bool = False  # e-mail pings' body (Healthchecks); kept for the API
    filter_http_body: bool = False  # HTTP ping bodies decide the action by the keywords
    filter_default_fail: bool = False  # with a filter, a body matching no keyword is a failure
    success_kw: str = ""
    failure_kw: str = ""
    start_kw: str = ""
    monitor_type: str = ""  # "SCHEDULED" for checks created through the Overwatch API
    paused: bool = False  # set by the pause API; lets edges ignore pings to manual_resume checks
    paused_at: datetime | None = None  # when the pause API last paused it (the Paused event's ``at``)
    resumed_at: datetime | None = None  # when the resume API last resumed it (the Resumed event's ``at``)
    channels: tuple[str, ...] = ()  # ids of the project's channels alerted about it (sorted)
    created: datetime
    # pingstream's extension (issue #19), every one off by default so a check behaves as in Healthchecks:
    failure_threshold: int = 1  # consecutive failures (fail pings, missed periods, runs over time) to go down
    recovery_threshold: int = 1  # consecutive successes to come back up from down
    # a run shorter / longer than this is a failure ("ran too short" at its finish, "ran too long" from its
    # start); "auto": the 1st / 99th percentile of the check's own recent runs (monitor.learned)
    min_runtime_s: float | Literal["auto"] | None = None
    max_runtime_s: float | Literal["auto"] | None = None
    windows: tuple[Window, ...] = ()  # maintenance windows and snoozes of this check
    flapping_threshold: int | None = None  # more up/down changes than this within a day: one Flapping event
    broken_after_s: int | None = None  # down this long: one Broken event
    depends_on: tuple[str, ...] = ()  # parent check uuids (same project): while one is down, this one's alerts are held


ChannelKind = Literal["webhook", "email", "apprise"]
AlertEvent = Literal["down", "up", "started", "grace", "failure", "paused", "ingest_gap", "flapping", "broken",
                     "ingest_anomaly"]


class ChannelConfig(msgspec.Struct, frozen=True, kw_only=True):
    """An integration of a project: where and how alerts about its checks go.

    ``secret`` (webhooks: Standard Webhooks' ``whsec_...``) and ``url`` (Apprise URLs carry
    tokens) are for the notifier only: never logged, never in a GET answer."""

    id: str
    project_id: str
    name: str = ""
    kind: ChannelKind
    events: tuple[AlertEvent, ...] = ("down", "up")
    url: str = ""  # webhook: the target (a template); apprise: the Apprise URL
    email: str = ""  # email: the recipient
    method: str = "POST"  # webhook
    headers: tuple[tuple[str, str], ...] = ()  # webhook: extra headers (values are templates)
    body: str = ""  # webhook: the body template; empty = the default JSON document
    secret: str = ""  # webhook: the signing secret
    created: datetime  # transitions before this moment are never sent to it


class ChannelUpserted(_Event, frozen=True, tag="channel_upserted"):
    channel: ChannelConfig


class ChannelDeleted(_Event, frozen=True, tag="channel_deleted"):
    channel_id: str
    project_id: str


class ProjectUpserted(_Event, frozen=True, tag="project_upserted"):
    project: Project


class ProjectDeleted(_Event, frozen=True, tag="project_deleted"):
    project_id: str


class CheckUpserted(_Event, frozen=True, tag="check_upserted"):
    check: CheckConfig


class CheckDeleted(_Event, frozen=True, tag="check_deleted"):
    check_id: str
    project_id: str


# --- pingstream.transitions -------------------------------------------------


class Transition(_Event, frozen=True, tag="transition"):
    """A change of the displayed status (for alerting) or of Healthchecks' stored status (a flip), or both.

    ``from_base``/``to_base`` are Healthchecks' stored status (new, up, down, paused) before and
    after: when they differ, the change is one of the check's ``/flips/``. Empty from older producers.
    """

    check_id: str
    project_id: str
    from_status: Status
    to_status: Status
    at: datetime
    reason: str
    cause_event_id: str = ""
    from_base: str = ""
    to_base: str = ""
    # Why notifications for this transition are held ("maintenance", "snooze", "dependency:<uuid>",
    # "flapping"); None: notify as usual. The status changed and is recorded either way.
    held: str | None = None
    # Which of pingstream's rules made this transition ("failure_threshold", "recovery_threshold",
    # "max_runtime", "min_runtime", ...); None: Healthchecks' own logic (a ping, grace, pause).
    rule: str | None = None
    # Set on the announcement a window's end makes (``rule="window_end"``): the check went down inside a
    # window of this kind ("maintenance", "snooze"), its down was held, and it is still down when the
    # window ends. The status did not change (from == to); alerting consumers send it as a down.
    released_from: str | None = None


class Flapping(_Event, frozen=True, tag="flapping"):
    """The check changed between up and down more than its ``flapping_threshold`` times within a day:
    announced once; its transitions are held (``held: "flapping"``) until it calms."""

    check_id: str
    project_id: str
    at: datetime
    flips: int  # up/down changes in the day before ``at``


class Broken(_Event, frozen=True, tag="broken"):
    """The check has been down for its ``broken_after`` seconds: announced once per time down."""

    check_id: str
    project_id: str
    at: datetime
    down_since: datetime


class IngestGap(_Event, frozen=True, tag="ingest_gap"):
    """The stream clock saw no ticks from ``start`` to ``end``: data, not jobs, went missing."""

    start: datetime
    end: datetime
    partition: int


class IngestAnomaly(_Event, frozen=True, tag="ingest_anomaly"):
    """The volume gate: the project's pings (or those from one of its source networks: ``network``) in
    the minute ``start``..``end`` fell abnormally below the same minute on earlier days (``baseline``,
    the median); its checks' deadlines in that minute
    (``unknown``: how many) did not fire: their outcome is unknown, the checks moved on to their next period."""

    project_id: str
    start: datetime
    end: datetime
    volume: int
    baseline: float
    unknown: int
    # The source network that fell (``10.1.2.0/24``, ``2001:db8:1::/48``) while the project's others
    # stayed: only checks whose latest ping came from it were judged unknown. None: the whole project.
    network: str | None = None


# --- pingstream.deliveries -------------------------------------------------


class Delivery(_Event, frozen=True, kw_only=True, tag="delivery"):
    """How one alert (a transition or ingest gap) to one channel ended. ``event_id`` is
    ``stable_id(alert_id, channel_id)``: a delivery re-done after a restart has the same id."""

    alert_id: str  # the transition's (or ingest gap's) event_id: the idempotency key sent
    check_id: str = ""  # empty for an ingest gap
    project_id: str
    channel_id: str
    channel_kind: str
    event: str  # down, up, started, grace, failure, paused, ingest_gap, flapping, broken, ingest_anomaly
    # check_id empty also for an ingest anomaly (project_id says whose)
    status: Literal["delivered", "failed", "held"]
    attempts: int = 0
    error: str = ""
    at: datetime  # when the transition happened
    finished: datetime


Event = Union[
    PingEvent,
    Paused,
    Resumed,
    Tick,
    ProjectUpserted,
    ProjectDeleted,
    CheckUpserted,
    CheckDeleted,
    ChannelUpserted,
    ChannelDeleted,
    Transition,
    Flapping,
    Broken,
    IngestGap,
    IngestAnomaly,
    Delivery,
]

KNOWN_TYPES = frozenset(t.__struct_config__.tag for t in Event.__args__)


class _Envelope(msgspec.Struct):
    type: str


_encoder = msgspec.json.Encoder()
_envelope_decoder = msgspec.json.Decoder(_Envelope)


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def decoders(union) -> tuple[Callable[[bytes], Any], Callable[[list[bytes]], list]]:
    """``(decode, decode_all)`` for a tagged union of event Structs (``Event``, or a reader's lighter view of it).

    ``decode`` decodes one record; ``None`` for a well-formed event of a type we do not know. It raises
    ``msgspec.DecodeError`` / ``msgspec.ValidationError`` for bytes that are not an event at all (a poison
    record: callers dead-letter it).
    ``decode_all`` decodes a batch of records at once, in C (no Python call per record). It raises on the
    first record that is not an event this version knows (poison, or a newer type): callers then take that
    batch one record at a time with ``decode``."""
    decoder = msgspec.json.Decoder(union)

    def decode(data: bytes):
        try:
            return decoder.decode(data)
        except msgspec.ValidationError:
            if _envelope_decoder.decode(data).type not in KNOWN_TYPES:
                return None
            raise

    def decode_all(values: list[bytes]) -> list:
        return list(map(decoder.decode, values))

    return decode, decode_all


decode, decode_all = decoders(Event)


# --- ids and time -----------------------------------------------------------


class _Entropy(threading.local):
    """Bytes from the OS's CSPRNG, fetched 4 KiB at a time instead of one getrandom call per id
    (a syscall per id is a visible share of the edge's event-loop thread on the fast ping path). Per thread, and
    dropped in a forked child so parent and child never share bytes."""

    def __init__(self) -> None:
        self.pool = memoryview(b"")
        self.pos = 0

    def take(self, n: int) -> bytes:
        pos = self.pos
        if pos + n > len(self.pool):
            self.pool, pos = memoryview(os.urandom(4096)), 0
        self.pos = pos + n
        return self.pool[pos : pos + n]


_entropy = _Entropy()


def _forget_entropy() -> None:
    global _entropy
    _entropy = _Entropy()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_entropy)


def uuid7(now_ns: int | None = None) -> str:
    """A UUIDv7 (RFC 9562): 48-bit ms timestamp, version, variant, random rest — sortable by time.

    Formatted from hex strings (the edge makes one per ping): the timestamp's 12 digits, then 74 random bits
    (12 after the version digit 7, 2 in the variant's digit, 60 after it) from 10 random bytes' 20 digits."""
    ms = (now_ns if now_ns is not None else time.time_ns()) // 1_000_000
    t = f"{ms & 0xFFFF_FFFF_FFFF:012x}"
    r = _entropy.take(10).hex()
    return f"{t[:8]}-{t[8:]}-7{r[1:4]}-{_VARIANT_DIGIT[r[4]]}{r[5:8]}-{r[8:]}"


_NAMESPACE = uuid.UUID("6f0c5d1e-3b1a-4c36-9a53-0d2f4a0a7e11")
_NAMESPACE_BYTES = _NAMESPACE.bytes
# The variant's hex digit (RFC 9562: the two high bits of byte 8 are 10) for each digit the hash put there.
_VARIANT_DIGIT = {digit: "89ab"[int(digit, 16) & 0x3] for digit in "0123456789abcdef"}


def stable_id(*parts: str) -> str:
    """A deterministic uuid (v5) from parts: replays and racing edges agree on it.

    ``uuid.uuid5(_NAMESPACE, "\\x1f".join(parts))`` as a string, formatted from the SHA-1 digest directly (the
    version digit 5, the variant's bits): ``uuid.uuid5`` builds two UUID objects, and the monitor makes an id for
    every transition (it cost three times what this does)."""
    h = hashlib.sha1(_NAMESPACE_BYTES + "\x1f".join(parts).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT_DIGIT[h[16]]}{h[17:20]}-{h[20:32]}"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(dt: datetime | None) -> datetime | None:
    """An aware UTC datetime: naive ones (as ClickHouse hands some back) are taken as UTC."""
    if dt is None:
        return None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)
