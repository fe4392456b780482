"""The projector's pure fold: ``fold(states, records) -> Rows``. No I/O; time comes from the events.

Per check it keeps what the tables need (ping count, open starts per rid)
and what Healthchecks stores on its ``Check`` (status, last ping, last start
and its rid, last duration), plus the offsets already applied, so replaying
records a crash left uncommitted changes nothing and yields the same rows again.

Two kinds of duration, both as Healthchecks computes them:

- a ping's (``pings.duration_s``, ``runs``; ``Ping.duration``): a completion
  (success, fail, or exit status) pairs with the most recent unpaired start of
  the check with the same rid (no rid on both also pairs) that is at most 72
  hours older; that start is then used up. ``log`` and ``ign`` pings never
  pair and leave starts alone; pause and resume do not touch them (the ping
  log is all there is).
- the check's ``last_duration`` (``Check.ping``): one run at a time. A
  completion measures from the last start only when its rid is the start's;
  a fail, or a success without rid, ends the run anyway; a success with
  another rid leaves it running. Any success or fail clears the previous value.

The status is Healthchecks' stored one (new, up, down, paused): a success or
fail sets it (un-pausing a paused check), a start leaves it alone, pause and
resume set it, and a missed deadline the monitor reports (a Transition with
``to_base`` down and no causing ping) marks the check down, as ``sendalerts``
does, unless a ping or control event after that moment was folded already
(the two topics are read in no particular order). Displayed statuses (grace,
started) are computed at read time (``checks.document``). Every ping counts
in ``n_pings``.

A ping sent with ``Idempotency-Key`` has a derived event id (checks/idempotency.py):
the fold remembers those it applied per check (``recent``) and skips a repeat
within 24 h, so a retry is neither a row, nor a run, nor counted. The ids are
also rows of ``ping_keys``, with the ping's ``n``: a restart rebuilds ``recent``
from the rows whose ``n`` the check's state has counted (``Projector.load_states``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

import msgspec

from checks.idempotency import RecentIds, is_derived
from schemas.events import Paused, PingEvent, PingFacts, Resumed, Transition, as_utc

MAX_DURATION = timedelta(hours=72)
MAX_OPEN_STARTS = 64  # per check: concurrent runs distinguished by rid; older ones fall off

COMPLETIONS = frozenset({"success", "fail"})


class OpenStart(msgspec.Struct, array_like=True, frozen=True, gc=False):
    rid: str | None
    at: datetime
    event_id: str


class CheckFold(msgspec.Struct, kw_only=True):
    """One check's projected state; what a ``check_state`` row holds."""

    check_id: str
    project_id: str
    status: str = "new"  # Healthchecks' stored status: new | up | down | paused
    status_at: datetime | None = None  # when a ping or control event last set it
    n_pings: int = 0
    last_ping: datetime | None = None
    last_duration_s: float | None = None
    run_start: datetime | None = None  # Healthchecks' last_start: the run in progress (the API's ``started``)
    run_rid: str | None = None
    starts: list[OpenStart] = []  # open starts per rid, for the pings' durations and the runs table
    pings_offset: int = -1  # last applied offset of this check's pings partition
    transitions_offset: int = -1
    version: int = 0
    recent: RecentIds | None = None  # keyed pings applied (not a check_state column: see ping_keys)


@dataclass
class Rows:
    """Rows for each table in the DDL's column order (see COLUMNS): lists of tuples, but for ``pings``,
    kept as columns: the events themselves (and their index among the folded events), plus what the fold
    adds to each: ``n``, the duration, the event id of the start it ends (a ping with one ends a run). The
    projector sends ClickHouse each ping's record with those values, and ClickHouse makes the pings rows
    (projector/wire.py), and from them the runs rows (the views of ``pings_ending_runs``, schemas/ddl.py);
    ``ping_columns``, ``pings`` and ``runs`` are the same rows made in Python (from full ``PingEvent``s)."""

    ping_events: list = field(default_factory=list)  # the PingEvents that make a pings row, in order
    ping_index: list[int] = field(default_factory=list)  # the index of each of them in the folded events
    ping_n: list[int] = field(default_factory=list)
    ping_durations: list[float | None] = field(default_factory=list)
    ping_starts: list[str | None] = field(default_factory=list)  # the event id of the start a ping ends (a run)
    transitions: list[tuple] = field(default_factory=list)
    ping_keys: list[tuple] = field(default_factory=list)
    touched: dict[str, CheckFold] = field(default_factory=dict)  # check_state rows, one per check

    def ping_columns(self) -> list[list]:
        """The pings rows as columns, in COLUMNS["pings"] order (the events must be full ``PingEvent``s)."""
        ev = self.ping_events
        return [
            [e.event_id for e in ev], [e.check_id for e in ev], [e.project_id for e in ev], self.ping_n,
            [e.kind for e in ev], [e.exit_status for e in ev], [e.rid for e in ev], [e.received_at for e in ev],
            [e.method for e in ev], [e.scheme for e in ev], [e.remote_addr for e in ev], [e.user_agent for e in ev],
            [e.body for e in ev], [e.body_size for e in ev], [e.source for e in ev], self.ping_durations,
            self.ping_starts,
        ]

    @property
    def pings(self) -> list[tuple]:
        """The pings rows as tuples."""
        return list(zip(*self.ping_columns())) if self.ping_events else []

    @property
    def n_runs(self) -> int:
        """How many of the pings end a run."""
        starts = self.ping_starts
        return len(starts) - starts.count(None)

    @property
    def runs(self) -> list[tuple]:
        """The runs rows as tuples, one per ping that ends a run (it started ``duration`` before the ping)."""
        return [
            (e.event_id, start_id, e.check_id, e.project_id, e.rid, e.received_at - timedelta(seconds=duration),
             e.received_at, duration, e.kind, e.exit_status)
            for e, start_id, duration in zip(self.ping_events, self.ping_starts, self.ping_durations)
            if start_id is not None
        ]

    def check_state_rows(self, updated_at: datetime) -> list[tuple]:
        return [state_row(s, updated_at) for s in self.touched.values()]


COLUMNS = {
    "pings": ["event_id", "check_id", "project_id", "n", "kind", "exit_status", "rid", "received_at", "method",
              "scheme", "remote_addr", "user_agent", "body", "body_size", "source", "duration_s", "start_event_id"],
    "runs": ["event_id", "start_event_id", "check_id", "project_id", "rid", "started_at", "finished_at",
             "duration_s", "outcome", "exit_status"],
    "transitions": ["event_id", "check_id", "project_id", "from_status", "to_status", "at", "reason",
                    "cause_event_id", "from_base", "to_base", "held", "rule"],
    "ping_keys": ["event_id", "check_id", "received_at", "n"],
    "check_state": ["check_id", "project_id", "status", "last_ping", "last_start", "last_start_rid",
                    "last_duration_s", "n_pings", "started", "updated_at", "version", "open_starts",
                    "pings_offset", "transitions_offset", "status_at"],
}

_starts_encoder = msgspec.json.Encoder()
_starts_decoder = msgspec.json.Decoder(list[OpenStart])


def state_row(s: CheckFold, updated_at: datetime) -> tuple:
    return (
        s.check_id, s.project_id, s.status, s.last_ping, s.run_start, s.run_rid,
        s.last_duration_s, s.n_pings, 1 if s.run_start is not None else 0, updated_at, s.version,
        _starts_encoder.encode(s.starts).decode(), s.pings_offset, s.transitions_offset, s.status_at,
    )


# Rows written before the status was Healthchecks' stored one held displayed statuses.
_STORED = {"grace": "up", "started": "up"}


def state_from_row(row: dict) -> CheckFold:
    """The inverse of ``state_row`` (a ``check_state`` row read back as a dict)."""
    rid = row.get("last_start_rid")
    return CheckFold(
        check_id=str(row["check_id"]),
        project_id=str(row["project_id"]),
        status=_STORED.get(row["status"], row["status"]),
        status_at=as_utc(row.get("status_at")),
        n_pings=int(row["n_pings"]),
        last_ping=as_utc(row["last_ping"]),
        last_duration_s=row["last_duration_s"],
        run_start=as_utc(row.get("last_start")),
        run_rid=str(rid) if rid is not None else None,
        starts=_starts_decoder.decode(row["open_starts"]) if row.get("open_starts") else [],
        pings_offset=int(row["pings_offset"]),
        transitions_offset=int(row["transitions_offset"]),
        version=int(row["version"]),
    )


def _pair(state: CheckFold, event: PingEvent) -> OpenStart | None:
    """Take the most recent open start with the event's rid (within 72 h), if any.

    ``state.starts`` is replaced, never changed in place: ``fold`` keeps the old list to undo a failed event."""
    starts = state.starts
    rid = event.rid
    for i in range(len(starts) - 1, -1, -1):
        start = starts[i]
        if start.rid == rid:
            received_at = event.received_at
            state.starts = starts[:i] + starts[i + 1:]
            if received_at - start.at <= MAX_DURATION and start.at <= received_at:
                return start
            return None
    return None


def apply_ping(state: CheckFold, event: PingEvent, offset: int, rows: Rows) -> bool:
    """Fold one ping; False when its offset was applied before (nothing changes)."""
    if offset <= state.pings_offset:
        return False  # applied before a crash: its rows exist already
    state.pings_offset = offset
    event_id = event.event_id
    keyed = is_derived(event_id)
    if keyed:
        at = event.received_at.timestamp()
        if state.recent is not None and state.recent.repeat(event_id, at):
            return True  # a retry of a ping already applied (Idempotency-Key): no row, no count; the offset moved
    n = state.n_pings = state.n_pings + 1
    duration = start_id = None
    kind = event.kind
    received_at = event.received_at
    if kind == "start":
        # Upstream pairs a completion with the newest same-rid ping only: an older start with this rid is dead.
        rid = event.rid
        starts = state.starts
        if starts:
            starts = [s for s in starts if s.rid != rid]
            starts.append(OpenStart(rid, received_at, event_id))
            if len(starts) > MAX_OPEN_STARTS:
                del starts[0]
            state.starts = starts
        else:
            state.starts = [OpenStart(rid, received_at, event_id)]
        state.run_start, state.run_rid = received_at, rid
    elif kind == "success" or kind == "fail":
        # last_ping is the last success or fail, as upstream and the monitor have it (a start does not move it).
        last_ping = state.last_ping
        if last_ping is None or received_at > last_ping:
            state.last_ping = received_at
        rid = event.rid
        if state.starts:
            start = _pair(state, event)
            if start is not None:
                duration = (received_at - start.at).total_seconds()
                start_id = start.event_id  # a run: Rows.runs
        # Check.ping: the last duration, and whether the run in progress ends (see the module docstring).
        run_start = state.run_start
        if run_start is None:
            state.last_duration_s = None
        elif state.run_rid == rid:
            state.last_duration_s = (received_at - run_start).total_seconds()
            state.run_start = state.run_rid = None
        else:
            state.last_duration_s = None
            if kind == "fail" or rid is None:
                state.run_start = state.run_rid = None
            # else: a success of another run leaves this one going
        state.status = "up" if kind == "success" else "down"
        state.status_at = received_at
    rows.ping_events.append(event)
    rows.ping_n.append(n)
    rows.ping_durations.append(duration)
    rows.ping_starts.append(start_id)
    if keyed:
        if state.recent is None:
            state.recent = RecentIds()
        state.recent.add(event_id, at)
        rows.ping_keys.append((event_id, event.check_id, received_at, n))
    return True


def apply_control(state: CheckFold, event: Paused | Resumed, offset: int, rows: Rows | None = None) -> bool:
    if offset <= state.pings_offset:
        return False
    state.pings_offset = offset
    if isinstance(event, Paused):
        if state.status != "paused":  # pausing a paused check changes nothing, as upstream's pause
            state.status, state.status_at, state.run_start, state.run_rid = "paused", event.at, None, None
    elif state.status == "paused":
        # Resume clears the last ping and the run in progress, as upstream's resume does
        # (the ping log, and with it the pings' durations, stays as it is).
        state.status, state.status_at, state.last_ping, state.run_start, state.run_rid = "new", event.at, None, None, None
    return True


def apply_transition(state: CheckFold, event: Transition, offset: int, rows: Rows) -> bool:
    if offset <= state.transitions_offset:
        return False
    state.transitions_offset = offset
    missed_deadline = not event.cause_event_id and event.to_base and event.to_base != event.from_base
    if missed_deadline and (state.status_at is None or event.at > state.status_at):
        state.status = event.to_base  # what sendalerts does; the run, if any, stays "started" as upstream
    rows.transitions.append((
        event.event_id, event.check_id, event.project_id, event.from_status, event.to_status, event.at,
        event.reason, event.cause_event_id, event.from_base, event.to_base, event.held or "", event.rule or "",
    ))
    return True


_APPLY: dict[type, Callable[[CheckFold, object, int, Rows], bool]] = {
    PingEvent: apply_ping, PingFacts: apply_ping, Transition: apply_transition, Paused: apply_control,
    Resumed: apply_control,
}
_FIELDS = tuple(f.name for f in msgspec.structs.fields(CheckFold))


def _applier(event: object) -> Callable[[CheckFold, object, int, Rows], bool] | None:
    apply = _APPLY.get(type(event))
    if apply is None:  # a subclass, or a type the projector does not fold
        apply = next((f for t, f in _APPLY.items() if isinstance(event, t)), None)
    return apply


def folds_any(events: list[tuple[object, int]]) -> bool:
    """Whether any of the ``(event, offset)`` pairs is of a type ``fold`` applies (the edges' clock ticks are not)."""
    return any(_applier(event) for event, _ in events)


def fold(
    states: dict[str, CheckFold],
    events: list[tuple[object, int]],
    on_error: Callable[[int, Exception], None] | None = None,
) -> Rows:
    """Apply ``(event, offset)`` pairs in order to ``states`` (changed in place); return the rows.

    ``states`` must hold every check the events name (callers load missing ones first);
    a check not there starts new. Events of other types are ignored. An event that
    cannot be applied is reported to ``on_error(index, exception)`` (the caller
    dead-letters it) and leaves its check as it was; without ``on_error`` it raises.
    """
    rows = Rows()
    touched = rows.touched
    ping_events, ping_n, ping_durations = rows.ping_events, rows.ping_n, rows.ping_durations
    ping_index, ping_starts = rows.ping_index, rows.ping_starts
    transitions, ping_keys = rows.transitions, rows.ping_keys
    astuple = msgspec.structs.astuple
    appliers = _APPLY.get
    for i, (event, offset) in enumerate(events):
        apply = appliers(type(event)) or _applier(event)
        if apply is None:
            continue
        check_id = event.check_id
        state = states.get(check_id)
        if state is None:
            state = states[check_id] = CheckFold(check_id=check_id, project_id=event.project_id)
        # The apply functions replace ``starts`` rather than change it, so this shallow copy undoes them.
        saved = astuple(state)
        marks = (len(ping_events), len(transitions), len(ping_keys))
        try:
            applied = apply(state, event, offset, rows)
        except Exception as exc:
            if on_error is None:
                raise
            for name, value in zip(_FIELDS, saved):  # undo the partial change
                setattr(state, name, value)
            m = marks[0]
            del ping_events[m:], ping_n[m:], ping_durations[m:], ping_starts[m:]
            del transitions[marks[1]:], ping_keys[marks[2]:]
            on_error(i, exc)
            continue
        if len(ping_events) != marks[0]:
            ping_index.append(i)
        if applied and check_id not in touched:
            state.version += 1
            touched[check_id] = state
    return rows
