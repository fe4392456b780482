"""The state of one running monitor: check states, stream clock, deadline heap, and what the
current batch changed. No I/O: the service (``monitor.service``) reads the records it folds
and writes what ``take`` hands back."""

from __future__ import annotations

import logging
import math
import sys
from collections import ChainMap

import msgspec

from checks.idempotency import RecentIds, is_derived
from checks.schedule import to_datetime
from checks.windows import hold_ends
from schemas.events import IngestAnomaly, IngestGap, Paused, PingEvent, Resumed, Tick, Transition, decode, stable_id

from . import store
from .clock import DeadlineHeap, StreamClock
from .holds import Down, hold, note_down, released, window_held_down
from .plans import PlanBook
from .transitions import CheckState, apply, expire, reconfigure, stays_up
from .volume import VolumeGate, network_of, scope_of

log = logging.getLogger(__name__)


def _event_time(event) -> float | None:
    if isinstance(event, PingEvent):
        return event.received_at.timestamp()
    if isinstance(event, (Tick, Paused, Resumed)):
        return event.at.timestamp()
    return None


def _us(t: float) -> str:
    return str(round(t * 1_000_000))


class Monitor:
    """State of one running monitor: check states, clock, heap, and what the current batch changed."""

    def __init__(self, plans: PlanBook, clock: StreamClock, volume_gate: VolumeGate | None = None) -> None:
        self.plans = plans
        self.clock = clock
        self.gate = volume_gate
        self.states: dict[str, CheckState] = {}
        self.heap = DeadlineHeap()
        self.out: list = []  # events for pingstream.transitions, in order
        self.dirty: set[str] = set()  # check ids whose state changed in this batch
        self.dirty_clock: set[int] = set()
        self.poison: list = []  # (record, exception) of this batch, for the dead-letter topic
        self.counts = {"records": 0, "transitions": 0, "gaps": 0, "errors": 0, "anomalies": 0, "unknown": 0}
        self.down: Down = {}  # when each check last went down (and came back): parents for depends_on
        # The same for parents as the transitions topic tells (``follow_parent``): those another monitor owns.
        self.parents_down: Down = {}
        self._pending: list[tuple[str, str, list]] = []  # transitions of the current step, holds not yet decided
        # Checks whose down a window held (CheckState.held_down), and when their windows end.
        self.held_down: set[str] = set()
        self.releases = DeadlineHeap()
        # Keyed pings (Idempotency-Key) applied per check, and the seen records of this batch.
        self.recent: dict[str, RecentIds] = {}
        self.seen_out: list[tuple[bytes, bytes]] = []

    def restore(
        self, states: dict[str, CheckState], clocks: dict[int, store.ClockRecord],
        seen: dict[str, store.SeenRecord] | None = None, volume: tuple[dict, dict] | None = None,
    ) -> None:
        """Take over the states loaded for the partitions the clock was assigned (``clock.assign``),
        and with the volume gate its history (``volume``: the HourRecords and GateRecords loaded)."""
        if self.gate is not None:
            self.gate.restore(self.clock.watermarks, *(volume or ({}, {})))
        for check_id, state in states.items():
            check_id = sys.intern(check_id)
            self.states[check_id] = state
            self.heap.push(state.deadline, check_id)
            if state.base == "down":
                self.down[check_id] = (float("-inf"), None)
                if state.held_down is not None:
                    self._await_release(check_id, state)
        for p, c in clocks.items():
            self.clock.restore(p, c.watermark, c.gaps)
        seen = seen or {}
        # In the order applied; the ids alone are sorted (a pair per key would be as big again as a key's record).
        for event_id in sorted(seen, key=lambda i: seen[i].at):
            s = seen[event_id]
            state = states.get(s.check_id)
            if state is not None and state.partition == s.partition and s.offset <= state.offset:
                self._remember(s.check_id, event_id, s.at)
            elif state is None:
                self._forget_seen([event_id])  # its check is gone
            # else: the state was written before it; the ping is read again and remembered then

    def _remember(self, check_id: str, event_id: str, at: float) -> None:
        recent = self.recent.get(check_id)
        if recent is None:
            recent = self.recent[check_id] = RecentIds()
        self._forget_seen(recent.add(event_id, at))

    def _forget_seen(self, event_ids) -> None:
        self.seen_out += [(store.seen_key(i), b"") for i in event_ids]

    def _put(self, check_id: str, old: CheckState | None, new: CheckState) -> None:
        self.states[check_id] = new
        if old is None or new.deadline != old.deadline:
            self.heap.push(new.deadline, check_id)
        if new is not old:
            self.dirty.add(check_id)

    def _emit(self, check_id: str, project_id: str, transitions: list) -> None:
        if transitions:
            self._pending.append((check_id, project_id, transitions))

    def _flush(self) -> None:
        """Queue the step's transitions, each marked when its notification is to be held.

        In two passes: first every check's own ups and downs of this step, then the holds, so a
        child whose deadline fired in the same step as its parent's (before it, in heap order)
        still sees the parent down."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        for _, _, transitions in pending:
            for t in transitions:
                note_down(self.down, t)
        down = self._parents_down()
        for check_id, project_id, transitions in pending:
            windows = self.plans.windows(check_id, project_id)
            parents = self.plans.parents.get(check_id, ())
            if windows or parents:
                transitions = [hold(t, windows, parents, down) for t in transitions]
            self.out += transitions
            self._follow_hold(check_id, transitions)

    # --- a down held by a window: announced when the window ends (monitor.holds.released) ---

    def _follow_hold(self, check_id: str, transitions: list) -> None:
        state = self.states.get(check_id)
        if state is None:
            return
        mark = window_held_down(state.held_down, transitions)
        if mark != state.held_down:
            state = msgspec.structs.replace(state, held_down=mark)
            self.states[check_id] = state
            self.dirty.add(check_id)
        if mark is None:
            self.held_down.discard(check_id)
        else:
            self._await_release(check_id, state)

    def _await_release(self, check_id: str, state: CheckState) -> None:
        self.held_down.add(check_id)
        plan = self.plans.get(check_id, "")
        end = hold_ends(self.plans.windows(check_id, plan.project_id), state.down_since)
        if end is not None:
            self.releases.push(end, check_id)

    def _release(self, check_id: str, now: float) -> None:
        """Announce the check's held down if its windows have ended by ``now`` and it is still down."""
        state = self.states.get(check_id)
        if state is None or state.held_down is None or state.base != "down" or state.down_since is None:
            self.held_down.discard(check_id)
            return
        plan = self.plans.get(check_id, "")
        end = hold_ends(self.plans.windows(check_id, plan.project_id), state.down_since)
        if end is None or end > now:
            return  # still held (the windows were extended: their end is queued)
        t = released(check_id, plan.project_id, state.status, state.down_since, end, state.held_down)
        # A parent down, or the check flapping, still holds it (recorded, not notified).
        parents = self.plans.parents.get(check_id, ())
        t = hold(t, (), parents, self._parents_down()) if parents else t
        if state.flapping and t.held is None:
            t = msgspec.structs.replace(t, held="flapping")
        self.out.append(t)
        self.states[check_id] = msgspec.structs.replace(state, held_down=None)
        self.dirty.add(check_id)
        self.held_down.discard(check_id)

    def _release_due(self, now: float) -> None:
        for _, check_id in self.releases.pop_due(now):
            if check_id in self.held_down:
                self._release(check_id, now)

    def _parents_down(self):
        """Where parents were down: what this monitor folded itself first, then what the transitions
        topic said (parents in partitions another monitor owns)."""
        return ChainMap(self.down, self.parents_down) if self.parents_down else self.down

    def follow_parent(self, event) -> None:
        """Fold an event of the transitions topic (any partition, any monitor's): a parent's downs
        and ups, so a child here sees a parent another monitor owns."""
        if isinstance(event, Transition) and event.check_id in self.plans.parent_ids:
            note_down(self.parents_down, event)

    def fold(self, record) -> None:
        try:
            self._fold(record)
        except Exception as exc:  # a poison record must not stop monitoring: dead-letter it and go on
            self.counts["errors"] += 1
            self.poison.append((record, exc))
        if self._pending:
            self._flush()

    def _fold(self, record) -> None:
        event = decode(record.value)
        self.counts["records"] += 1
        at = event.received_at.timestamp() if type(event) is PingEvent else _event_time(event)
        if at is None:
            return  # a type this version does not know, or not ours
        gap = self.clock.observe(record.partition, at)
        self.dirty_clock.add(record.partition)
        if gap is not None:
            start, end = gap
            self.counts["gaps"] += 1
            log.warning("ingest gap on %s/%d: no events for %.1fs", record.topic, record.partition, end - start)
            self.out.append(
                IngestGap(
                    event_id=stable_id("ingest_gap", str(record.partition), _us(start), _us(end)),
                    start=to_datetime(start),
                    end=to_datetime(end),
                    partition=record.partition,
                )
            )
        if isinstance(event, Tick):
            return
        # Other checks' deadlines up to now fire before this event (a parent that went down
        # earlier is down when this check's transition is judged). The clock is never past the
        # event's time: nothing queued before it, nothing to fire.
        earliest = self.heap.earliest()
        if earliest is not None and earliest <= at:
            self.advance()
        check_id = event.check_id
        keyed = isinstance(event, PingEvent) and is_derived(event.event_id)
        if not keyed and self.gate is None:
            old = self.states.get(check_id)
            if old is not None and old.held_down is None:
                new = stays_up(old, event, at, self.plans.get(check_id, event.project_id), record.partition,
                               record.offset)
                if new is not None:  # most pings: no transition, no gap or anomaly to look at (as ``apply``)
                    self._put(check_id, old, new)
                    return
        check_id = sys.intern(check_id)
        if keyed:
            recent = self.recent.get(check_id)
            if recent is not None and recent.repeat(event.event_id, at):
                return  # a retry of a ping already applied (Idempotency-Key): no second effect
        network = None
        if self.gate is not None and isinstance(event, PingEvent):
            network = network_of(event.remote_addr)
            self.gate.count(event.project_id, at, record.partition, record.offset, network)
        old = self.states.get(check_id)
        if old is not None and old.held_down is not None:
            self._release(check_id, at)  # its window ended before this event: announced first
            old = self.states.get(check_id)
        plan = self.plans.get(check_id, event.project_id)
        new, transitions = apply(
            old, event, at, plan, position=(record.partition, record.offset),
            gaps=self.clock.gaps_of(record.partition),
            unknown=self._unknown(plan.project_id, old.network if old is not None else None),
        )
        if network is not None and new.network != network and new is not old:
            new = msgspec.structs.replace(new, network=sys.intern(network))
        self._put(check_id, old, new)
        self._emit(check_id, plan.project_id, transitions)
        if keyed and new is not old:  # applied now, not skipped as already in the state
            self._remember(check_id, event.event_id, at)
            self.seen_out.append((store.seen_key(event.event_id),
                                  store.encode_seen(store.SeenRecord(check_id, at, record.partition, record.offset))))

    def reconfigure(self) -> None:
        """Apply registry changes: deleted checks are forgotten, changed plans move deadlines."""
        now = self.clock.now
        for check_id in self.plans.deleted:
            self.down.pop(check_id, None)
            self.parents_down.pop(check_id, None)
            self.held_down.discard(check_id)
            if self.states.pop(check_id, None) is not None:
                self.dirty.add(check_id)
            recent = self.recent.pop(check_id, None)
            if recent is not None:
                self._forget_seen(recent.ids())
        self.plans.deleted.clear()
        if self.plans.windows_changed:
            # Windows added, moved or removed: a held down may be announced at another time.
            changed, self.plans.windows_changed = self.plans.windows_changed, set()
            for check_id in list(self.held_down):
                state = self.states.get(check_id)
                plan = self.plans.plans.get(check_id)
                if state is not None and plan is not None and (check_id in changed or plan.project_id in changed):
                    self._await_release(check_id, state)
        if now is None:
            return  # no stream time yet: keep the changes for later
        # Deadlines the clock passed before the change fire first, under the plan they were set by.
        due_until = now if self.gate is None else math.nextafter(self.gate.complete_until(now), -math.inf)
        for check_id in self.plans.changed:
            old = self.states.get(check_id)
            if old is not None:
                plan = self.plans.plans[check_id]
                previous = self.plans.previous.get(check_id)
                transitions = []
                if old.deadline is not None and old.deadline <= due_until:
                    before = previous or plan
                    current, transitions = expire(old, due_until, before, check_id, self.clock.gaps_of(old.partition),
                                                  self._unknown(before.project_id, old.network))
                else:
                    current = old
                new, more = reconfigure(current, now, plan, check_id, previous)
                self._put(check_id, old, new)
                self._emit(check_id, plan.project_id, transitions + more)
        self.plans.changed.clear()
        self.plans.previous.clear()
        self._flush()

    def _unknown(self, project_id: str, network: str | None = None) -> tuple:
        """The volume anomalies of the project, and of the network the check last pinged from:
        deadlines in them have unknown outcomes."""
        return self.gate.spans_of(project_id, network) if self.gate is not None else ()

    def advance(self) -> None:
        """Fire every deadline the global clock has passed, earliest first.

        With the volume gate, only deadlines of minutes the gate has judged (complete ones) fire;
        those in a project's anomalous minute have unknown outcomes (counted)."""
        now = self.clock.now
        if now is None:
            return
        anomalies, unknown = [], {}
        if self.gate is not None:
            anomalies = self.gate.judge(now)
            now = math.nextafter(self.gate.complete_until(now), -math.inf)
        for due, check_id in self.heap.pop_due(now):
            state = self.states.get(check_id)
            if state is None or state.deadline != due:
                continue  # stale heap entry (rescheduled or deleted check)
            plan = self.plans.get(check_id, "")  # "" only for a check the registry never had
            scope = self.gate.covers(plan.project_id, due, state.network) if anomalies else None
            if scope is not None:
                key = (scope, int(due // 60))
                unknown[key] = unknown.get(key, 0) + 1  # a missed deadline: its outcome is unknown
            new, transitions = expire(state, now, plan, check_id, self.clock.gaps_of(state.partition),
                                      self._unknown(plan.project_id, state.network))
            self._put(check_id, state, new)
            self._emit(check_id, plan.project_id, transitions)
        self._flush()
        self._release_due(now)
        for project_id, network, minute, volume, baseline in anomalies:
            n = unknown.get((scope_of(project_id, network), minute), 0)
            self.counts["anomalies"] += 1
            self.counts["unknown"] += n
            start = minute * 60.0
            named = (project_id, str(minute)) if network is None else (project_id, network, str(minute))
            self.out.append(IngestAnomaly(
                event_id=stable_id("ingest_anomaly", *named), project_id=project_id,
                start=to_datetime(start), end=to_datetime(start + 60.0), volume=volume, baseline=float(baseline),
                unknown=n, network=network))
        if len(self.heap) > 2 * len(self.states) + 10_000:
            self.heap.compact(lambda due, cid: (s := self.states.get(cid)) is not None and s.deadline == due)

    def take(self) -> tuple[list, list[tuple[bytes, bytes]]]:
        """The batch's output events and state records; resets the batch."""
        records = []
        for check_id in self.dirty:
            state = self.states.get(check_id)
            records.append((check_id.encode(), b"" if state is None else store.encode_state(state)))
        for p in self.dirty_clock:
            records.append((store.clock_key(p), store.encode_clock(self.clock.watermarks.get(p), self.clock.gaps_of(p))))
        records += self.seen_out
        self.seen_out = []
        if self.gate is not None:
            records += [store.volume_record(key, value) for key, value in self.gate.records()]
        out, self.out = self.out, []
        self.dirty, self.dirty_clock = set(), set()
        self.counts["transitions"] += sum(1 for e in out if not isinstance(e, (IngestGap, IngestAnomaly)))
        return out, records
