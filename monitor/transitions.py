"""The per-check state machine: pure functions, time is an argument.

``apply(state | None, event, now, plan) -> (state, transitions)`` folds one
event of the pings topic into a check's state; ``expire(state, now, plan)``
fires the deadlines that stream time has passed. Neither does I/O or reads
the wall clock, so a replay of the same events yields the same transitions
with the same ids.

Statuses follow Healthchecks (``Check.ping``, ``get_status``,
``going_down_after``). ``base`` is what Healthchecks stores (new, up, down,
paused); ``status`` is what it displays and what consumers were last told::

        success ping            fail ping, or grace over, or run over grace
    new ─────────────► up ──────────────────────────────────────────► down
     ▲                 │ ▲  next expected time                         │
     │ resume          │ │  passed                success ping         │
     │                 ▼ │  (success ping: back up)  ◄─────────────────┘
   paused ◄── pause ── grace ──── grace over ───► down
                                                  ▲
    any ── start ping ──► started ── run longer than grace ─┘
                            └── success/fail ping ──► up / down

- A start ping shows ``started`` until the run ends or exceeds the grace
  time; a start after the next expected time does not extend the deadline
  (Healthchecks: going down after min(grace start, last start) + grace). A
  fail ends the run; a success ends it when its rid is the start's or it has
  none (a success of another run leaves this one going, as ``Check.ping``).
- A start leaves a paused check paused (its run can still time out: down);
  a success or fail un-pauses it. A paused ``manual_resume`` check ignores
  pings (the edge already marks them ``ign``) until resumed.
- ``log`` and ``ign`` pings change nothing but move time forward.

Every change of ``base`` is a flip in Healthchecks' sense (``create_flip``:
a ping's new status, pause, resume, and the missed deadline ``sendalerts``
marks down) and is emitted, with ``from_base``/``to_base``, even when the
displayed status stays the same.

pingstream's rules (issue #19; each off by default, which is Healthchecks):

- ``failure_threshold`` / ``recovery_threshold``: fail pings, missed periods, runs over
  time and runs too short are failures; the base status goes down only at the Nth
  consecutive one (below it a missed period waits for the next period, a run over time
  is forgotten) and back up only at the Mth consecutive success (``_judge``).
- ``max_runtime_s``: a run deadline from its start (before any finish); ``min_runtime_s``:
  judged at the finish; ``"auto"``: learned from the check's runs (``monitor.learned``).
- ``flapping_threshold``: more up/down flips than this within a day: one ``Flapping``
  event, the flips held until it calms (``_watch_flips``); ``broken_after_s``: a deadline
  of a down check, one ``Broken`` event.
- ``unknown`` spans (the volume gate's anomalous minutes): a deadline inside one is
  neither a failure nor a success (``_unknown``).

Every transition says which rule made it (``rule``); holds for windows and
dependencies are decided outside the fold, by ``monitor.holds``.

Deadlines inside an ingest gap (stream time pingstream did not hear) are
postponed by the gap's length: time we were deaf does not count against a
check, so no check goes down because of our own outage. The check's anchors
(grace start, run start) move with it, so later deadlines keep their spacing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import msgspec

from schemas.events import Broken, Flapping, Paused, PingEvent, Resumed, Transition, stable_id

from checks.schedule import next_expected, to_datetime

from . import learned

_replace = msgspec.structs.replace


@dataclass(frozen=True, slots=True)
class Plan:
    """The slice of a check's configuration the state machine needs (interned: shared by checks)."""

    project_id: str
    kind: str = "simple"
    timeout_s: float = 86400.0
    grace_s: float = 3600.0
    schedule: str = "* * * * *"
    tz: str = "UTC"
    manual_resume: bool = False
    failure_threshold: int = 1
    recovery_threshold: int = 1
    min_runtime_s: float | str | None = None  # seconds, or "auto": learned (monitor.learned)
    max_runtime_s: float | str | None = None
    flapping_threshold: int | None = None
    broken_after_s: float | None = None

    def next_expected(self, last_ping: float) -> float:
        return next_expected(self.kind, self.timeout_s, self.schedule, self.tz, last_ping)


class CheckState(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One check, about 120 bytes: a million fit easily (array_like keeps the persisted form small)."""

    status: str = "new"  # displayed, the last status consumers were told
    base: str = "new"  # Healthchecks' stored status: new | up | down | paused
    last_ping: float | None = None  # last success/fail, POSIX seconds of stream time
    grace_start: float | None = None  # base up: when the next ping is overdue
    last_start: float | None = None  # a run in progress since
    deadline: float | None = None  # the next moment the status changes by itself
    partition: int = -1  # where the check's events live (for the ingest gaps of that partition)
    offset: int = -1  # last folded record: a replay after a restart skips what the state already holds
    last_start_rid: str | None = None  # the rid of the run in progress (a success with another rid leaves it running)
    fails: int = 0  # consecutive failures (fail pings, missed periods, runs over time or too short)
    oks: int = 0  # consecutive successes
    runs: tuple[tuple[float, float], ...] | None = None  # recent (finished_at, duration_s): "auto" run time bounds
    flips: tuple[float, ...] | None = None  # times of recent up/down changes (flapping_threshold)
    flapping: bool = False
    down_since: float | None = None  # base down since (broken_after_s)
    broken: bool = False  # reported broken in this time down
    # Its down was held by a window of this kind: announced when the window ends (``monitor.state``).
    held_down: str | None = None
    # The source network of its latest ping (with the volume gate: ``monitor.volume.network_of``).
    network: str | None = None


Gaps = Sequence[tuple[float, float]]


def _settle(s: CheckState, now: float, plan: Plan) -> CheckState:
    """Displayed status and next deadline from the base status and anchors, at ``now``."""
    if s.base == "down":
        if s.down_since is None:
            s = _replace(s, down_since=now, broken=False)
    elif s.down_since is not None or s.broken:
        s = _replace(s, down_since=None, broken=False)
    grace = plan.grace_s
    if s.last_start is not None:
        start_over = s.last_start
        if s.base == "up" and s.grace_start is not None:
            start_over = min(s.grace_start, s.last_start)
        deadline = start_over + grace
        longest = _max_runtime(s, plan)
        if longest is not None:
            deadline = min(deadline, s.last_start + longest)
        return _replace(s, status="started", deadline=deadline)
    if s.base == "up" and s.grace_start is not None:
        if now < s.grace_start:
            return _replace(s, status="up", deadline=s.grace_start)
        return _replace(s, status="grace", deadline=s.grace_start + grace)
    if s.base == "down" and plan.broken_after_s is not None and not s.broken:
        return _replace(s, status="down", deadline=s.down_since + plan.broken_after_s)
    return _replace(s, status=s.base, deadline=None)


def _max_runtime(s: CheckState, plan: Plan) -> float | None:
    """The longest a run started at ``s.last_start`` may take (learned bounds: as they stood at its start)."""
    if plan.max_runtime_s == "auto":
        return learned.bounds(s.runs, s.last_start)[1]
    return plan.max_runtime_s


def _min_runtime(s: CheckState, plan: Plan, now: float) -> float | None:
    if plan.min_runtime_s == "auto":
        return learned.bounds(s.runs, now)[0]
    return plan.min_runtime_s


def _gap_shift(due: float, gaps: Gaps) -> float:
    for start, end in gaps:
        if start < due <= end:
            return end - start
    return 0.0


def _postpone(s: CheckState, delta: float) -> CheckState:
    return _replace(
        s,
        grace_start=None if s.grace_start is None else s.grace_start + delta,
        down_since=None if s.down_since is None else s.down_since + delta,
        last_start=None if s.last_start is None else s.last_start + delta,
        deadline=None if s.deadline is None else s.deadline + delta,
    )


def _us(t: float) -> str:
    return str(round(t * 1_000_000))


def transition(
    check_id: str, plan: Plan, frm: str, to: str, at: float, reason: str, cause_event_id: str = "", cause: str = "",
    from_base: str = "", to_base: str = "", rule: str | None = None,
) -> Transition:
    """A Transition whose id is a function of (check, from, to, cause): replays re-emit the same id."""
    return Transition(
        event_id=stable_id(check_id, frm, to, cause or cause_event_id),
        check_id=check_id,
        project_id=plan.project_id,
        from_status=frm,
        to_status=to,
        at=to_datetime(at),
        reason=reason,
        cause_event_id=cause_event_id,
        from_base=from_base,
        to_base=to_base,
        rule=rule,
    )


def _changed(old: CheckState, new: CheckState) -> bool:
    return new.status != old.status or new.base != old.base


def _judge(s: CheckState, ok: bool, plan: Plan, cause_rule: str | None = None) -> tuple[CheckState, str | None]:
    """A success or a failure counted against the thresholds: the new base status and the rule that decided.

    With the default thresholds (1, 1) this is Healthchecks: a success is up, a failure down. A
    failure below ``failure_threshold`` leaves the base as it was (a paused check counts as new);
    a success below ``recovery_threshold`` leaves a down check down. ``cause_rule`` names the rule
    that made this outcome a failure (``max_runtime``, ``min_runtime``, ...) and wins over the
    threshold's name when the check goes down."""
    if ok:
        oks = s.oks + 1
        if s.base == "down" and oks < plan.recovery_threshold:
            return _replace(s, fails=0, oks=oks), None
        rule = "recovery_threshold" if s.base == "down" and plan.recovery_threshold > 1 else None
        return _replace(s, base="up", fails=0, oks=oks), rule
    fails = s.fails + 1
    if s.base != "down" and fails < plan.failure_threshold:
        return _replace(s, base="new" if s.base == "paused" else s.base, fails=fails, oks=0), None
    rule = cause_rule
    if rule is None and s.base != "down" and plan.failure_threshold > 1:
        rule = "failure_threshold"
    return _replace(s, base="down", fails=fails, oks=0), rule


def _counted(reason: str, s: CheckState, plan: Plan) -> str:
    if plan.failure_threshold > 1 and s.base == "down" and s.fails:
        return f"{reason} ({s.fails} consecutive failures)"
    return reason


def _unknown(s: CheckState, due: float, plan: Plan) -> CheckState | None:
    """A deadline inside a volume anomaly (``monitor.volume``): its outcome is unknown, neither a
    failure nor a success. A run's outcome is forgotten; an overdue ping or an ending grace period
    moves the check on to its next period. None: a deadline of another kind (postpone it)."""
    if s.last_start is not None:
        return _replace(s, last_start=None)
    if s.base == "up" and s.grace_start is not None:
        return _replace(s, grace_start=plan.next_expected(s.grace_start))
    return None


def expire(
    state: CheckState, now: float, plan: Plan, check_id: str, gaps: Gaps = (), unknown: Gaps = ()
) -> tuple[CheckState, list[Transition]]:
    """Fire every deadline at or before ``now``, in order (up → grace → down can happen in one call).

    A run over its time and a missed period are failures: below ``failure_threshold`` the run is
    forgotten, or the check waits for its next period, and the base status stays as it was.

    ``unknown``: spans of a volume anomaly; a deadline inside one has an unknown outcome (see
    ``_unknown``), reported with ``rule="volume_gate"`` when the displayed status changes."""
    out: list[Transition] = []
    while state.deadline is not None and state.deadline <= now:
        due = state.deadline
        shift = _gap_shift(due, gaps)
        if shift > 0:
            state = _postpone(state, shift)
            continue
        span = _gap_shift(due, unknown) if unknown else 0.0
        if span > 0:
            new = _unknown(state, due, plan)
            if new is None:
                state = _postpone(state, span)
                continue
            new = _settle(new, due, plan)
            if _changed(state, new):
                out.append(transition(check_id, plan, state.status, new.status, due,
                                      "outcome unknown: the project's ping volume fell abnormally",
                                      cause=f"unknown:{_us(due)}:{state.offset}", from_base=state.base,
                                      to_base=new.base, rule="volume_gate"))
            state = new
            continue
        rule = None
        if state.last_start is not None:
            longest = _max_runtime(state, plan)
            over_max = longest is not None and due == state.last_start + longest
            reason = "run longer than max_runtime" if over_max else "run did not finish within grace"
            new, rule = _judge(_replace(state, last_start=None), False, plan, "max_runtime" if over_max else None)
            if new.base == "down":
                new = _replace(new, grace_start=None)
            elif new.grace_start is not None and new.grace_start + plan.grace_s <= due:
                # The run's time and the period's grace ended together: one failure, not two.
                new = _replace(new, grace_start=plan.next_expected(new.grace_start))
        elif state.base == "down":
            # Down for broken_after_s: announced once (the status stays down).
            out.append(Broken(event_id=stable_id(check_id, "broken", _us(state.down_since)), check_id=check_id,
                              project_id=plan.project_id, at=to_datetime(due),
                              down_since=to_datetime(state.down_since)))
            state = _settle(_replace(state, broken=True), due, plan)
            continue
        elif state.status == "grace":
            reason = "no ping within schedule + grace"
            new, rule = _judge(state, False, plan)
            # Below the threshold the missed period is counted and the next one awaited.
            new = _replace(new, grace_start=None if new.base == "down" else plan.next_expected(state.grace_start))
        else:
            reason = "ping overdue, grace period started"
            new = state
        new = _settle(new, due, plan)
        if _changed(state, new):
            # The offset of the last folded record tells apart two cycles that hit the same due time.
            cause = f"deadline:{_us(due)}:{state.offset}"
            t = transition(check_id, plan, state.status, new.status, due, _counted(reason, new, plan),
                           cause=cause, from_base=state.base, to_base=new.base, rule=rule)
            new = _watch_flips(new, t, plan, out)
        state = new
    return state, out


_DAY_S = 86400.0
_UPDOWN = frozenset({"up", "down"})


def _watch_flips(s: CheckState, t: Transition, plan: Plan, out: list) -> CheckState:
    """Append ``t`` to ``out``, counting it against ``flapping_threshold`` when it is an up/down flip.

    More flips than the threshold within a day: one Flapping event, and this flip and the
    following transitions are held ("flapping"). A flip that finds at most the threshold in
    the day before it has calmed down: it and what follows are notified again."""
    limit = plan.flapping_threshold
    if limit is None:
        if s.flips is not None or s.flapping:
            s = _replace(s, flips=None, flapping=False)
        out.append(t)
        return s
    if t.from_base in _UPDOWN and t.to_base in _UPDOWN and t.from_base != t.to_base:
        at = t.at.timestamp()
        flips = tuple(f for f in (s.flips or ()) if f > at - _DAY_S)[-limit:] + (at,)
        if len(flips) > limit and not s.flapping:
            out.append(Flapping(event_id=stable_id(t.check_id, "flapping", _us(at)), check_id=t.check_id,
                                project_id=t.project_id, at=t.at, flips=len(flips)))
            s = _replace(s, flapping=True)
        elif len(flips) <= limit and s.flapping:
            s = _replace(s, flapping=False)
        s = _replace(s, flips=flips)
    out.append(_replace(t, held="flapping") if s.flapping else t)
    return s


def _ping_reason(event: PingEvent) -> str:
    if event.kind == "fail":
        if event.source == "checkin":
            return "checkin status=fail"
        if event.exit_status:
            return f"fail ping (exit status {event.exit_status})"
        return "fail ping"
    return f"{event.kind} ping"


def _completion(state: CheckState, event: PingEvent, now: float, plan: Plan) -> tuple[CheckState, str | None, str]:
    """A success or fail ping: the run it ends (if any), its duration rules, the thresholds."""
    up = event.kind == "success"
    reason = _ping_reason(event)
    run_goes_on = up and event.rid is not None and event.rid != state.last_start_rid
    cause_rule, runs = None, state.runs
    if up and state.last_start is not None and event.rid == state.last_start_rid:
        duration = now - state.last_start  # the run this success ends (Healthchecks' last_duration)
        shortest = _min_runtime(state, plan, now)
        if shortest is not None and duration < shortest:
            up, cause_rule = False, "min_runtime"
            reason = f"run shorter than min_runtime ({duration:.3f}s < {shortest:g}s)"
        if "auto" in (plan.min_runtime_s, plan.max_runtime_s):
            runs = learned.remember(runs, now, duration)
    new, rule = _judge(state, up, plan, cause_rule)
    new = _replace(
        new,
        last_ping=now,
        grace_start=plan.next_expected(now) if new.base == "up" else None,
        last_start=state.last_start if run_goes_on else None,
        runs=runs,
    )
    return new, rule, _counted(reason, new, plan)


def stays_up(state: CheckState, event, now: float, plan: Plan, partition: int, offset: int) -> CheckState | None:
    """Most pings, in one step: a success of a check that is up, no run going on, its deadline ahead, read
    after what ``state`` holds. The check stays up and its next period starts now: what ``apply`` comes to
    for it (tests/unit/test_monitor_fast_path.py holds them equal). None for any other ping or state."""
    if (state.status == "up" and state.base == "up" and state.last_start is None and state.deadline is not None
            and now < state.deadline and state.down_since is None and not state.broken and type(event) is PingEvent
            and event.kind == "success" and (offset < 0 or partition != state.partition or offset > state.offset)):
        grace_start = plan.next_expected(now)
        if now < grace_start:
            return _replace(state, last_ping=now, grace_start=grace_start, deadline=grace_start, fails=0,
                            oks=state.oks + 1, partition=partition, offset=offset)
    return None


def apply(
    state: CheckState | None,
    event: PingEvent | Paused | Resumed,
    now: float,
    plan: Plan,
    *,
    position: tuple[int, int] = (-1, -1),
    gaps: Gaps = (),
    unknown: Gaps = (),
) -> tuple[CheckState, list[Transition]]:
    """Fold one event (at stream time ``now``) read from ``position`` = (partition, offset)."""
    partition, offset = position
    if state is None:
        state = CheckState(partition=partition)
    elif offset >= 0 and partition == state.partition and offset <= state.offset:
        return state, []  # already in the state (restart between state write and offset commit)
    else:
        new = stays_up(state, event, now, plan, partition, offset)
        if new is not None:
            return new, []
    check_id = event.check_id
    # Deadlines that passed before this event happened come first: a ping after
    # grace + timeout means the check was down in between (as Healthchecks' sendalerts would have said).
    state, out = expire(state, now, plan, check_id, gaps, unknown)
    reason, cause, rule = "", event.event_id, None
    if isinstance(event, PingEvent):
        kind = event.kind
        if state.base == "paused" and plan.manual_resume:
            kind = "ign"  # a paused manual_resume check waits for resume, whatever the edge thought
        if kind == "start":
            new = _replace(state, last_start=now, last_start_rid=event.rid)
            reason = _ping_reason(event)
        elif kind == "success" or kind == "fail":
            new, rule, reason = _completion(state, event, now, plan)
        else:
            new = state
            reason = _ping_reason(event)
    elif isinstance(event, Paused):
        # Healthchecks' pause: status paused, the run (if any) forgotten, no deadline;
        # pausing a paused check changes nothing (a run started since goes on).
        if state.base == "paused":
            new = state
        else:
            new = _replace(state, base="paused", last_start=None, grace_start=None, fails=0, oks=0)
        reason = "paused"
    elif isinstance(event, Resumed):
        if state.base != "paused":
            new = state
        else:
            new = _replace(state, base="new", last_ping=None, last_start=None, grace_start=None, fails=0, oks=0)
        reason = "resumed"
    else:
        return state, out
    new = _settle(new, now, plan)
    if _changed(state, new):
        t = transition(check_id, plan, state.status, new.status, now, reason, cause_event_id=cause,
                       from_base=state.base, to_base=new.base, rule=rule)
        new = _watch_flips(new, t, plan, out)
    return _replace(new, partition=partition, offset=offset), out


def reconfigure(
    state: CheckState, now: float, plan: Plan, check_id: str, previous: Plan | None = None
) -> tuple[CheckState, list[Transition]]:
    """The check's configuration changed: recompute its next expected time from its last ping.

    Like Healthchecks after an API update. The id's cause is the stream time of
    the change; a deadline already passed under the new plan fires at the next
    ``expire``.

    Periods already judged under the ``previous`` plan stay judged: a missed period counted
    below ``failure_threshold`` (or one the volume gate judged unknown) moved the check on to
    its next period, and recomputing from the last ping would count it once more. The new
    plan's next expected time is taken from where the previous plan had got to.
    """
    new = state
    if state.base == "up" and state.last_ping is not None:
        grace_start = plan.next_expected(state.last_ping)
        if previous is not None and state.grace_start is not None:
            judged_until = state.grace_start  # periods before it were judged (counted or unknown)
            if judged_until > previous.next_expected(state.last_ping):
                for _ in range(_MAX_PERIODS_SKIPPED):
                    if grace_start >= judged_until:
                        break
                    grace_start = plan.next_expected(grace_start)
                else:
                    grace_start = max(grace_start, judged_until)
        new = _replace(state, grace_start=grace_start)
    new = _settle(new, now, plan)
    out = []
    if new.status != state.status:
        out.append(transition(check_id, plan, state.status, new.status, now, "schedule changed",
                              cause=f"config:{_us(now)}", from_base=state.base, to_base=new.base))
    return new, out


_MAX_PERIODS_SKIPPED = 10_000  # a period much shorter than the one before: start from where it got to
