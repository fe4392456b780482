"""Held notifications in the monitor (issue #19): maintenance windows and snoozes.

Driven through ``monitor.state.Monitor`` (the fold the service runs): registry events configure
it, encoded records of the pings topic feed it, its output is what the service produces."""

from __future__ import annotations

from datetime import datetime, timezone

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checks.windows import hold_ends
from monitor import store
from monitor.clock import StreamClock
from monitor.plans import PlanBook
from monitor.state import Monitor
from monitor.transitions import CheckState
from runtime.eventlog.base import Record
from schemas.events import (
    TOPIC_PINGS, CheckConfig, CheckUpserted, Paused, PingEvent, Project, ProjectUpserted, Resumed, Tick, Transition,
    Window, encode,
)

CHECK = "5bf66975-d4c7-4bf5-bcc8-b8d8a82ea278"
PROJECT = "019ab7ef-0000-7000-8000-000000000001"
T0 = 1_760_000_000.0


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


def _monitor(windows=(), project_windows=(), **fields) -> Monitor:
    plans = PlanBook()
    created = _dt(T0 - 10)
    plans.apply(ProjectUpserted(event_id="p", project=Project(
        id=PROJECT, name="p", ping_key="k", api_key="a", api_key_readonly="r", created=created,
        windows=tuple(project_windows))))
    plans.apply(CheckUpserted(event_id="c", check=CheckConfig(
        **{"id": CHECK, "project_id": PROJECT, "created": created, "timeout_s": 60, "grace_s": 30,
           "windows": tuple(windows), **fields})))
    return Monitor(plans, StreamClock([0], gap_threshold_s=1e9))


def _feed(monitor: Monitor, events, start: int = 0) -> list[Transition]:
    out = []
    for offset, event in enumerate(events, start=start):
        at = event.received_at if isinstance(event, PingEvent) else event.at
        monitor.fold(Record(TOPIC_PINGS, 0, offset, CHECK.encode(), encode(event), int(at.timestamp() * 1000)))
        monitor.reconfigure()
        monitor.advance()
        out += [e for e in monitor.take()[0] if isinstance(e, Transition)]
    return out


def ping(kind: str, t: float, n: int) -> PingEvent:
    return PingEvent(event_id=f"e{n}", check_id=CHECK, project_id=PROJECT, kind=kind, received_at=_dt(t))


def tick(t: float, n: int) -> Tick:
    return Tick(event_id=f"t{n}", at=_dt(t), partition=0)


def one_off(start: float, end: float, kind: str = "maintenance") -> Window:
    return Window(id=f"w{start}", kind=kind, start=_dt(start), end=_dt(end))


def test_a_transition_inside_a_window_is_recorded_and_held():
    m = _monitor(windows=[one_off(T0 + 5, T0 + 200)])
    out = _feed(m, [ping("success", T0, 0), ping("fail", T0 + 10, 1), ping("success", T0 + 300, 2)])
    assert [(t.to_status, t.held, t.rule) for t in out] == [
        ("up", None, None), ("down", "maintenance", None),
        ("down", None, "window_end"),  # still down when the window ended: announced then
        ("up", None, None)]


def test_a_missed_deadline_inside_a_project_window_is_held():
    m = _monitor(project_windows=[one_off(T0 + 50, T0 + 100)])
    out = _feed(m, [ping("success", T0, 0), tick(T0 + 95, 1), tick(T0 + 200, 2)])
    assert [(t.to_status, t.held) for t in out] == [
        ("up", None), ("grace", "maintenance"), ("down", "maintenance"), ("down", None)]
    assert out[-1].at == _dt(T0 + 100) and out[-1].released_from == "maintenance"


def test_a_snooze_holds_as_snooze_and_maintenance_wins():
    m = _monitor(windows=[one_off(T0 + 5, T0 + 20, "snooze")])
    out = _feed(m, [ping("success", T0, 0), ping("fail", T0 + 10, 1)])
    assert out[-1].held == "snooze"
    m = _monitor(windows=[one_off(T0 + 5, T0 + 20, "snooze"), one_off(T0 + 5, T0 + 20)])
    assert _feed(m, [ping("success", T0, 0), ping("fail", T0 + 10, 1)])[-1].held == "maintenance"


def test_a_recurring_window_in_its_time_zone():
    # 2025-10-09T08:53:20Z is T0; a window every day at 11:50 in Riga (UTC+3 then: 08:50 UTC) for 10 minutes
    w = Window(id="r", cron="50 11 * * *", duration_s=600, tz="Europe/Riga")
    m = _monitor(windows=[w], timeout_s=3600)
    out = _feed(m, [ping("success", T0 - 400, 0), ping("fail", T0, 1), ping("success", T0 + 600, 2)])
    assert [(t.to_status, t.held, t.rule) for t in out] == [
        ("up", None, None), ("down", "maintenance", None), ("down", None, "window_end"), ("up", None, None)]
    assert out[2].at == _dt(T0 + 400)  # 09:00 UTC, the window's end
    m = _monitor(windows=[Window(id="r", cron="50 11 * * *", duration_s=600, tz="UTC")], timeout_s=3600)
    out = _feed(m, [ping("success", T0 - 400, 0), ping("fail", T0, 1)])  # 11:50 UTC: not yet
    assert [t.held for t in out] == [None, None]


# --- a down held by a window is announced when the window ends ---------------------


def test_a_check_still_down_when_its_window_ends_is_announced_then():
    m = _monitor(windows=[one_off(T0 + 5, T0 + 200)])
    out = _feed(m, [ping("success", T0, 0), ping("fail", T0 + 10, 1), tick(T0 + 199, 2), tick(T0 + 201, 3)])
    assert [(t.to_status, t.held, t.rule) for t in out] == [
        ("up", None, None), ("down", "maintenance", None), ("down", None, "window_end")]
    end = out[-1]
    assert end.at == _dt(T0 + 200) and end.released_from == "maintenance"
    assert (end.from_status, end.from_base, end.to_base, end.cause_event_id) == ("down", "down", "down", "")
    assert "still down when the maintenance window ended" in end.reason


def test_a_check_back_up_within_its_window_is_not_announced():
    m = _monitor(windows=[one_off(T0 + 5, T0 + 200)], timeout_s=3600)
    out = _feed(m, [ping("success", T0, 0), ping("fail", T0 + 10, 1), ping("success", T0 + 50, 2),
                    tick(T0 + 1000, 3)])
    assert [(t.to_status, t.held) for t in out] == [("up", None), ("down", "maintenance"), ("up", "maintenance")]


def test_overlapping_windows_are_one_hold_and_a_snooze_says_so():
    m = _monitor(windows=[one_off(T0 + 5, T0 + 100, "snooze"), one_off(T0 + 90, T0 + 300, "snooze")])
    out = _feed(m, [ping("success", T0, 0), ping("fail", T0 + 10, 1), tick(T0 + 150, 2), tick(T0 + 400, 3)])
    assert [(t.at, t.released_from) for t in out if t.rule == "window_end"] == [(_dt(T0 + 300), "snooze")]


def test_a_window_extended_meanwhile_moves_the_announcement():
    m = _monitor(windows=[one_off(T0 + 5, T0 + 200)])
    out = _feed(m, [ping("success", T0, 0), ping("fail", T0 + 10, 1), tick(T0 + 100, 2)])
    m.plans.apply(CheckUpserted(event_id="c2", check=CheckConfig(
        id=CHECK, project_id=PROJECT, created=_dt(T0 - 10), timeout_s=60, grace_s=30,
        windows=(one_off(T0 + 5, T0 + 500),))))
    out += _feed(m, [tick(T0 + 300, 3), tick(T0 + 600, 4)])
    assert [(t.at, t.rule) for t in out if t.rule == "window_end"] == [(_dt(T0 + 500), "window_end")]


def test_the_announcement_survives_a_restart_with_the_same_id():
    events = [ping("success", T0, 0), ping("fail", T0 + 10, 1), tick(T0 + 100, 2)]
    later = [tick(T0 + 300, 3)]
    whole = [t for t in _feed(_monitor(windows=[one_off(T0 + 5, T0 + 200)]), events + later) if t.rule]
    m = _monitor(windows=[one_off(T0 + 5, T0 + 200)])
    _feed(m, events)
    # What the service wrote (monitor.store), read back into a fresh monitor.
    state = msgspec.json.decode(store.encode_state(m.states[CHECK]), type=CheckState)
    assert state.held_down == "maintenance"
    fresh = _monitor(windows=[one_off(T0 + 5, T0 + 200)])
    fresh.restore({CHECK: state}, {0: store.ClockRecord(T0 + 100)})
    again = []
    for offset, event in enumerate(later, start=len(events)):
        fresh.fold(Record(TOPIC_PINGS, 0, offset, None, encode(event), 0))
        fresh.advance()
        again += [e for e in fresh.take()[0] if isinstance(e, Transition)]
    assert [t.rule for t in whole] == ["window_end"] and again == whole


# --- property: a window never loses a transition ----------------------------------

KINDS = ["success", "fail", "start", "log", "pause", "resume", "tick"]
steps = st.lists(st.tuples(st.sampled_from(KINDS), st.floats(min_value=0.0, max_value=120.0)), max_size=25)
windows = st.lists(
    st.tuples(st.floats(min_value=0, max_value=2000), st.floats(min_value=1, max_value=500),
              st.sampled_from(["maintenance", "snooze"])),
    max_size=4,
)


def _events(raw):
    t, out = T0, []
    for n, (kind, dt) in enumerate(raw):
        t += dt
        if kind == "tick":
            out.append(tick(t, n))
        elif kind in ("pause", "resume"):
            out.append((Paused if kind == "pause" else Resumed)(event_id=f"c{n}", check_id=CHECK, project_id=PROJECT,
                                                                  at=_dt(t)))
        else:
            out.append(ping(kind, t, n))
    out.append(tick(t + 5000, len(raw)))
    return out


@settings(max_examples=200, deadline=None)
@given(steps, windows, st.integers(min_value=1, max_value=3))
def test_a_window_never_loses_a_transition(raw, spans, threshold):
    """With or without windows: the same transitions, same ids, same statuses; only ``held``
    differs, and it is set exactly for the transitions a window covers."""
    events = _events(raw)
    ws = [one_off(T0 + a, T0 + a + length, kind) for a, length, kind in spans]
    plain = _feed(_monitor(failure_threshold=threshold), events)
    out = _feed(_monitor(windows=ws, failure_threshold=threshold), events)
    held = [t for t in out if t.rule != "window_end"]
    assert [msgspec.structs.replace(t, held=None) for t in held] == plain
    for t in held:
        covering = [w for w in ws if w.start <= t.at < w.end]
        assert (t.held is not None) == bool(covering)
    _assert_held_downs_are_announced(out, ws)


def _assert_held_downs_are_announced(out: list[Transition], ws) -> None:
    """Every down a window held is announced at its windows' end exactly when the check is still
    down then (not when it came back up inside), once, with an id of the moment it went down."""
    announced = [t for t in out if t.rule == "window_end"]
    assert len({t.event_id for t in announced}) == len(announced)
    expected = []
    for i, t in enumerate(out):
        if t.to_base == "down" and t.from_base != "down" and t.held in ("maintenance", "snooze"):
            end = hold_ends(ws, t.at.timestamp())
            back_up = next((u for u in out[i + 1:] if u.from_base == "down" and u.to_base != "down"), None)
            if back_up is None or back_up.at.timestamp() >= end:
                # (the property's feed always ends far past every window)
                expected.append((end, t.held))
    assert [t.released_from for t in announced] == [kind for _, kind in expected]
    assert [t.at.timestamp() for t in announced] == pytest.approx([end for end, _ in expected], abs=1e-5)
    for t in announced:
        assert t.from_base == t.to_base == "down" and t.from_status == t.to_status and t.held is None


# --- dependencies -------------------------------------------------------------------

PARENT = "0a1b2c3d-0000-4000-8000-000000000001"


def _family(child_fields=None, parent_fields=None) -> Monitor:
    """A monitor with PARENT and CHECK (the child, depending on PARENT)."""
    m = _monitor(depends_on=(PARENT,), **(child_fields or {}))
    m.plans.apply(CheckUpserted(event_id="c2", check=CheckConfig(
        **{"id": PARENT, "project_id": PROJECT, "created": _dt(T0 - 10), "timeout_s": 60, "grace_s": 30,
           **(parent_fields or {})})))
    return m


def _of(check_id: str, event):
    return msgspec.structs.replace(event, check_id=check_id)


def _feed_records(monitor: Monitor, events) -> list[Transition]:
    out = []
    for offset, event in enumerate(events):
        at = event.received_at if isinstance(event, PingEvent) else event.at
        key = getattr(event, "check_id", "").encode() or None
        monitor.fold(Record(TOPIC_PINGS, 0, offset, key, encode(event), int(at.timestamp() * 1000)))
        monitor.reconfigure()
        monitor.advance()
        out += [e for e in monitor.take()[0] if isinstance(e, Transition)]
    return out


def test_a_childs_transitions_are_held_while_its_parent_is_down():
    m = _family()
    out = _feed_records(m, [
        _of(PARENT, ping("success", T0, 0)), ping("success", T0 + 1, 1),
        _of(PARENT, ping("fail", T0 + 2, 2)), ping("fail", T0 + 3, 3),
        _of(PARENT, ping("success", T0 + 4, 4)), ping("success", T0 + 5, 5), ping("fail", T0 + 6, 6),
    ])
    assert [(t.check_id == PARENT, t.to_status, t.held) for t in out] == [
        (True, "up", None), (False, "up", None),
        (True, "down", None), (False, "down", f"dependency:{PARENT}"),
        (True, "up", None), (False, "up", None), (False, "down", None),
    ]


def test_a_child_missing_its_deadline_with_its_parent_is_held_whatever_the_heap_order():
    m = _family()
    # Both miss their deadlines at the same moment (T0 + 90); the child's id sorts first in the heap.
    assert PARENT < CHECK  # (heap order: the parent first; the holds are decided after the whole step anyway)
    out = _feed_records(m, [ping("success", T0, 0), _of(PARENT, ping("success", T0, 1)), tick(T0 + 100, 2)])
    downs = {(t.check_id, t.held) for t in out if t.to_status == "down"}
    assert downs == {(PARENT, None), (CHECK, f"dependency:{PARENT}")}


who = st.sampled_from(["parent", "child"])
family_steps = st.lists(
    # (apart in time: at one and the same moment "was the parent down" depends on the order of the records)
    st.tuples(who, st.sampled_from(["success", "fail", "start", "tick"]), st.floats(min_value=0.5, max_value=120.0)),
    max_size=30,
)


def _family_events(raw) -> list:
    """The records of a drawn family sequence: ticks, the parent's and the child's pings, then a
    tick long after the last, so every deadline they set has passed."""
    t, events = T0, []
    for n, (whose, kind, dt) in enumerate(raw):
        t += dt
        if kind == "tick":
            events.append(tick(t, n))
        else:
            e = ping(kind, t, n)
            events.append(_of(PARENT, e) if whose == "parent" else e)
    events.append(tick(t + 5000, len(raw)))
    return events


@settings(max_examples=200, deadline=None)
@given(family_steps, st.integers(min_value=1, max_value=3))
def test_dependencies_never_hide_a_parents_own_alert(raw, threshold):
    """The parent's transitions are never held; the child's are held exactly while the parent
    was down (by the parent's own transitions); and nothing is lost: the child's transitions are
    the same as without the dependency."""
    events = _family_events(raw)
    fields = {"failure_threshold": threshold}
    out = _feed_records(_family(fields, fields), events)
    # the same records, the parent's pings as ticks (same offsets, same times): the child alone
    alone = _feed_records(_monitor(**fields), [
        tick(e.received_at.timestamp(), i) if getattr(e, "check_id", CHECK) == PARENT else e
        for i, e in enumerate(events)])
    parent = [x for x in out if x.check_id == PARENT]
    child = [x for x in out if x.check_id == CHECK]
    assert all(x.held is None for x in parent)
    assert [msgspec.structs.replace(x, held=None) for x in child] == alone
    spans, since = [], None
    for x in parent:
        if x.to_base == "down" and x.from_base != "down":
            since = x.at
        elif x.from_base == "down" and x.to_base != "down":
            spans.append((since, x.at))
            since = None
    if since is not None:
        spans.append((since, None))
    edges = {a for a, _ in spans} | {b for _, b in spans}
    for x in child:
        if x.at in edges:
            continue  # at the very moment the parent changed, "was it down" is a matter of order
        down = any(a <= x.at and (b is None or x.at < b) for a, b in spans)
        assert (x.held == f"dependency:{PARENT}") == down


# --- a parent another monitor owns -------------------------------------------------------


def _step(monitor: Monitor, partition: int, offset: int, event) -> list:
    at = event.received_at if isinstance(event, PingEvent) else event.at
    key = getattr(event, "check_id", "").encode() or None
    monitor.fold(Record(TOPIC_PINGS, partition, offset, key, encode(event), int(at.timestamp() * 1000)))
    monitor.reconfigure()
    monitor.advance()
    return monitor.take()[0]


def _two_monitors(events, fields=None) -> tuple[list[Transition], list[Transition]]:
    """The parent's records in partition 0, owned by monitor A; the child's in partition 1, owned by B.
    B reads what A emits as it would read the transitions topic (``follow_parent``). Each record's moment
    reaches both (the edge ticks every partition): A's first, as when B's monitor lags a little."""
    a, b = _family(fields, fields), _family(fields, fields)
    a.clock, b.clock = StreamClock([0], gap_threshold_s=1e9), StreamClock([1], gap_threshold_s=1e9)
    out_a, out_b = [], []
    for offset, event in enumerate(events):
        whose = getattr(event, "check_id", None)
        emitted = _step(a, 0, offset, event if whose == PARENT else tick_at(event, 0, offset))
        out_a += [e for e in emitted if isinstance(e, Transition)]
        for e in emitted:
            b.follow_parent(e)
        emitted = _step(b, 1, offset, event if whose == CHECK else tick_at(event, 1, offset))
        out_b += [e for e in emitted if isinstance(e, Transition)]
    return out_a, out_b


def tick_at(event, partition: int, n: int) -> Tick:
    at = event.received_at if isinstance(event, PingEvent) else event.at
    return Tick(event_id=f"t{n}", at=at, partition=partition)


def test_a_child_is_held_while_a_parent_in_another_monitors_partitions_is_down():
    events = [_of(PARENT, ping("success", T0, 0)), ping("success", T0 + 1, 1), _of(PARENT, ping("fail", T0 + 2, 2)),
              ping("fail", T0 + 3, 3), _of(PARENT, ping("success", T0 + 4, 4)), ping("success", T0 + 5, 5),
              ping("fail", T0 + 6, 6)]
    parent, child = _two_monitors(events)
    assert [(t.to_status, t.held) for t in parent] == [("up", None), ("down", None), ("up", None)]
    assert [(t.to_status, t.held) for t in child] == [
        ("up", None), ("down", f"dependency:{PARENT}"), ("up", None), ("down", None)]
    # Without reading the parent's transitions the child's monitor would not know (it fails open).
    b = _family()
    b.clock = StreamClock([1], gap_threshold_s=1e9)
    alone = [e for i, ev in enumerate(events) if ev.check_id == CHECK for e in _step(b, 1, i, ev)]
    assert [t.held for t in alone if isinstance(t, Transition)] == [None, None, None, None]


@settings(max_examples=150, deadline=None)
@given(family_steps, st.integers(min_value=1, max_value=3))
def test_two_monitors_hold_a_child_as_one_monitor_does(raw, threshold):
    events = _family_events(raw)
    fields = {"failure_threshold": threshold}
    one = _feed_records(_family(fields, fields), events)
    parent, child = _two_monitors(events, fields)
    assert parent == [x for x in one if x.check_id == PARENT]
    edges = {x.at for x in parent if (x.to_base == "down") != (x.from_base == "down")}
    assert [x for x in child if x.at not in edges] == [x for x in one if x.check_id == CHECK and x.at not in edges]
