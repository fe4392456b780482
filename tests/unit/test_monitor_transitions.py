"""The state machine, as Healthchecks behaves, and its properties."""

from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.transitions import CheckState, Plan, apply, expire, reconfigure
from schemas.events import Paused, PingEvent, Resumed, stable_id

CHECK = "5bf66975-d4c7-4bf5-bcc8-b8d8a82ea278"
PLAN = Plan(project_id="p1", timeout_s=60, grace_s=30)
T0 = 1_760_000_000.0


def ping(kind: str, at: float, n: int = 0, **kw) -> PingEvent:
    return PingEvent(
        event_id=f"ev-{kind}-{at}-{n}",
        check_id=CHECK,
        project_id="p1",
        kind=kind,
        received_at=datetime.fromtimestamp(at, timezone.utc),
        **kw,
    )


def pause(at: float, n: int = 0) -> Paused:
    return Paused(event_id=f"pause-{at}-{n}", check_id=CHECK, project_id="p1", at=datetime.fromtimestamp(at, timezone.utc))


def resume(at: float, n: int = 0) -> Resumed:
    return Resumed(event_id=f"resume-{at}-{n}", check_id=CHECK, project_id="p1", at=datetime.fromtimestamp(at, timezone.utc))


def run(events, plan=PLAN, until=None, state=None):
    """Fold (event, at) pairs read at offsets 0, 1, ..., then expire up to ``until``."""
    out = []
    for offset, (event, at) in enumerate(events):
        state, ts = apply(state, event, at, plan, position=(0, offset))
        out += ts
    if until is not None and state is not None:
        state, ts = expire(state, until, plan, CHECK)
        out += ts
    return state, out


def flips(transitions):
    return [(t.from_status, t.to_status, t.at.timestamp() - T0) for t in transitions]


def test_it_goes_up_on_the_first_success():
    state, out = run([(ping("success", T0), T0)])
    assert flips(out) == [("new", "up", 0)]
    assert state.deadline == T0 + 60
    assert out[0].cause_event_id == f"ev-success-{T0}-0"
    assert out[0].event_id == stable_id(CHECK, "new", "up", f"ev-success-{T0}-0")
    assert out[0].project_id == "p1"


def test_it_goes_to_grace_then_down_when_pings_stop():
    state, out = run([(ping("success", T0), T0)], until=T0 + 200)
    assert flips(out) == [("new", "up", 0), ("up", "grace", 60), ("grace", "down", 90)]
    assert out[-1].cause_event_id == ""
    assert state.deadline is None and state.status == "down"


def test_it_stays_up_one_microsecond_before_deadline_plus_grace():
    _, out = run([(ping("success", T0), T0)], until=T0 + 89.999)
    assert flips(out)[-1][1] == "grace"


def test_a_late_ping_reports_the_down_in_between():
    _, out = run([(ping("success", T0), T0), (ping("success", T0 + 100), T0 + 100)])
    assert flips(out) == [("new", "up", 0), ("up", "grace", 60), ("grace", "down", 90), ("down", "up", 100)]


def test_a_ping_in_grace_brings_it_back_up():
    _, out = run([(ping("success", T0), T0), (ping("success", T0 + 70), T0 + 70)], until=T0 + 129)
    assert flips(out) == [("new", "up", 0), ("up", "grace", 60), ("grace", "up", 70)]


def test_it_goes_down_on_fail_and_checkin_fail():
    _, out = run([(ping("success", T0), T0), (ping("fail", T0 + 1, exit_status=3), T0 + 1)])
    assert flips(out)[-1] == ("up", "down", 1)
    assert out[-1].reason == "fail ping (exit status 3)"
    _, out = run([(ping("fail", T0, source="checkin"), T0)])
    assert flips(out) == [("new", "down", 0)] and out[0].reason == "checkin status=fail"


def test_a_start_shows_started_and_times_out_after_grace():
    _, out = run([(ping("success", T0), T0), (ping("start", T0 + 10), T0 + 10)], until=T0 + 100)
    assert flips(out) == [("new", "up", 0), ("up", "started", 10), ("started", "down", 40)]
    assert out[-1].reason == "run did not finish within grace"


def test_a_run_that_finishes_goes_up():
    _, out = run([(ping("start", T0), T0), (ping("success", T0 + 5), T0 + 5)], until=T0 + 60)
    assert flips(out) == [("new", "started", 0), ("started", "up", 5)]


def test_a_start_after_the_expected_time_does_not_extend_the_deadline():
    # expected at 60, grace 30: started at 80, still down at 90 (min(grace start, start) + grace)
    _, out = run([(ping("success", T0), T0), (ping("start", T0 + 80), T0 + 80)], until=T0 + 200)
    assert flips(out)[-2:] == [("grace", "started", 80), ("started", "down", 90)]


def test_log_and_ign_pings_change_nothing():
    _, out = run([(ping("success", T0), T0), (ping("log", T0 + 10), T0 + 10), (ping("ign", T0 + 20), T0 + 20)])
    assert flips(out) == [("new", "up", 0)]


def test_pause_then_a_ping_brings_it_back():
    _, out = run([(ping("success", T0), T0), (pause(T0 + 10), T0 + 10), (ping("success", T0 + 500), T0 + 500)])
    assert flips(out) == [("new", "up", 0), ("up", "paused", 10), ("paused", "up", 500)]


def test_a_paused_manual_resume_check_ignores_pings_until_resumed():
    plan = Plan(project_id="p1", timeout_s=60, grace_s=30, manual_resume=True)
    events = [(ping("fail", T0), T0), (pause(T0 + 10), T0 + 10), (ping("success", T0 + 20), T0 + 20)]
    events += [(resume(T0 + 30), T0 + 30), (ping("success", T0 + 40), T0 + 40)]
    _, out = run(events, plan=plan, until=T0 + 1000)
    assert flips(out)[:4] == [("new", "down", 0), ("down", "paused", 10), ("paused", "new", 30), ("new", "up", 40)]


def test_a_paused_check_never_goes_down_by_itself():
    _, out = run([(ping("success", T0), T0), (pause(T0 + 10), T0 + 10)], until=T0 + 10_000)
    assert flips(out)[-1] == ("up", "paused", 10)


def test_resume_of_a_check_that_is_not_paused_does_nothing():
    _, out = run([(ping("success", T0), T0), (resume(T0 + 10), T0 + 10)])
    assert flips(out) == [("new", "up", 0)]


def test_a_deadline_in_an_ingest_gap_is_postponed_by_the_gap():
    state, _ = apply(None, ping("success", T0), T0, PLAN)
    gaps = [(T0 + 10, T0 + 500)]  # deaf from 10 to 500: grace start 60 -> 550, down 90 -> 580
    state, out = expire(state, T0 + 549, PLAN, CHECK, gaps)
    assert out == [] and state.status == "up"
    state, out = expire(state, T0 + 1000, PLAN, CHECK, gaps)
    assert flips(out) == [("up", "grace", 550), ("grace", "down", 580)]


def test_an_event_already_folded_is_skipped_after_a_restart():
    s1, _ = apply(None, ping("success", T0), T0, PLAN, position=(0, 5))
    s2, _ = apply(s1, ping("fail", T0 + 1), T0 + 1, PLAN, position=(0, 6))
    again, out = apply(s2, ping("success", T0), T0, PLAN, position=(0, 5))
    assert out == [] and again == s2


def test_a_schedule_change_recomputes_the_expected_time():
    state, _ = apply(None, ping("success", T0), T0, PLAN)
    state, _ = expire(state, T0 + 70, PLAN, CHECK)
    assert state.status == "grace"
    longer = Plan(project_id="p1", timeout_s=3600, grace_s=30)
    state, out = reconfigure(state, T0 + 70, longer, CHECK)
    assert flips(out) == [("grace", "up", 70)]
    assert state.deadline == T0 + 3600


def test_the_state_is_small():
    import sys

    s = CheckState("up", "up", T0, T0 + 60, None, T0 + 60, 3, 123)
    assert sys.getsizeof(s) <= 160  # eighteen 8-byte slots and the object header


# --- properties ---------------------------------------------------------------

KINDS = ["success", "fail", "start", "log", "ign", "pause", "resume"]
steps = st.lists(
    st.tuples(st.sampled_from(KINDS), st.floats(min_value=0.0, max_value=200.0, allow_nan=False)),
    max_size=25,
)
plans = st.builds(
    Plan,
    project_id=st.just("p1"),
    timeout_s=st.floats(min_value=1, max_value=120),
    grace_s=st.floats(min_value=0, max_value=60),
    manual_resume=st.booleans(),
)


def make_events(raw):
    t, events = T0, []
    for n, (kind, dt) in enumerate(raw):
        t += dt
        if kind == "pause":
            events.append((pause(t, n), t))
        elif kind == "resume":
            events.append((resume(t, n), t))
        else:
            events.append((ping(kind, t, n), t))
    return events


@settings(max_examples=400, deadline=None)
@given(steps, plans, st.lists(st.floats(min_value=0, max_value=3000), max_size=10))
def test_expiring_more_often_changes_nothing(raw, plan, probes):
    """Replay determinism: the transitions (and ids) do not depend on how often the clock ticks."""
    events = make_events(raw)
    end = (events[-1][1] if events else T0) + 5000
    _, plain = run(events, plan=plan, until=end)
    state, ticked = None, []
    times = sorted([T0 + p for p in probes])
    for offset, (event, at) in enumerate(events):
        while times and times[0] < at and state is not None:
            state, ts = expire(state, times.pop(0), plan, CHECK)
            ticked += ts
        state, ts = apply(state, event, at, plan, position=(0, offset))
        ticked += ts
    if state is not None:
        state, ts = expire(state, end, plan, CHECK)
        ticked += ts
    assert [t.event_id for t in ticked] == [t.event_id for t in plain]
    assert ticked == plain
    _, again = run(events, plan=plan, until=end)
    assert again == plain


@settings(max_examples=400, deadline=None)
@given(steps, plans)
def test_never_down_before_the_deadline_plus_grace(raw, plan):
    """Reference model: a missed-deadline down comes no earlier than expected + grace
    after the last success, or last start + grace for a run; statuses chain."""
    events = make_events(raw)
    state, out = None, []
    last_success = last_start = None
    previous = "new"
    for offset, (event, at) in enumerate(events + [(None, (events[-1][1] if events else T0) + 10_000)]):
        if state is not None:
            state, ts = expire(state, at, plan, CHECK)
            for t in ts:
                when = t.at.timestamp()
                if t.to_status == "down":
                    if t.from_status == "started":
                        # Healthchecks: min(grace start, last start) + grace
                        bound = last_start
                        if last_success is not None:
                            bound = min(bound, last_success + plan.timeout_s)
                        assert when >= bound + plan.grace_s - 1e-6
                    else:
                        assert t.from_status == "grace"
                        assert when >= last_success + plan.timeout_s + plan.grace_s - 1e-6
                if t.to_status == "grace":
                    assert when >= last_success + plan.timeout_s - 1e-6
            out += ts
        if event is None:
            break
        before = state
        state, ts = apply(state, event, at, plan, position=(0, offset))
        out += ts
        paused_mr = before is not None and before.base == "paused" and plan.manual_resume
        if isinstance(event, PingEvent) and not paused_mr:
            if event.kind in ("success", "fail"):
                last_success = at if event.kind == "success" else None
                last_start = None
            elif event.kind == "start":
                last_start = at
        elif isinstance(event, (Paused, Resumed)) and (before is None or (before.base == "paused") == isinstance(event, Resumed)):
            last_start = None  # pausing an unpaused check, or resuming a paused one, ends the run
    for t in out:
        # a transition changes the displayed status, Healthchecks' stored one (a flip), or both
        assert t.from_status == previous and (t.to_status != t.from_status or t.to_base != t.from_base)
        previous = t.to_status
    if state is not None:
        assert state.status == previous
    assert len({t.event_id for t in out}) == len(out)


@settings(max_examples=300, deadline=None)
@given(steps, plans, st.floats(min_value=0, max_value=300), st.floats(min_value=1, max_value=5000))
def test_no_check_goes_down_inside_an_ingest_gap(raw, plan, gap_at, gap_len):
    events = make_events(raw)
    gaps = [(T0 + gap_at, T0 + gap_at + gap_len)]
    # no events inside the gap: pingstream heard nothing then
    events = [(e, at) for e, at in events if not gaps[0][0] < at <= gaps[0][1]]
    state, out = None, []
    for event, at in events:
        state, ts = apply(state, event, at, plan, gaps=gaps)
        out += ts
    if state is not None:
        state, ts = expire(state, T0 + 20_000, plan, CHECK, gaps)
        out += ts
    for t in out:
        if t.cause_event_id == "":
            # (Transition.at has microseconds: a deadline right at either end of the gap rounds into it)
            assert not gaps[0][0] + 1e-6 < t.at.timestamp() <= gaps[0][1] - 1e-6


# --- flips: Healthchecks' stored status (base) ---------------------------------


def base_flips(transitions):
    return [(t.from_base, t.to_base) for t in transitions if t.from_base != t.to_base]


def test_it_flips_new_to_up_on_the_first_success_after_a_start():
    _, out = run([(ping("start", T0), T0), (ping("success", T0 + 5), T0 + 5)])
    assert base_flips(out) == [("new", "up")]
    assert [(t.from_status, t.to_status) for t in out] == [("new", "started"), ("started", "up")]


def test_it_records_a_flip_on_pause_and_on_resume():
    _, out = run([(ping("success", T0), T0), (pause(T0 + 10), T0 + 10), (resume(T0 + 20), T0 + 20)])
    assert base_flips(out) == [("new", "up"), ("up", "paused"), ("paused", "new")]


def test_it_records_no_flip_when_a_paused_check_is_paused_again():
    _, out = run([(pause(T0), T0), (pause(T0 + 1, n=1), T0 + 1)])
    assert base_flips(out) == [("new", "paused")]


def test_it_flips_a_down_check_down_no_more_on_another_fail():
    _, out = run([(ping("fail", T0), T0), (ping("fail", T0 + 1, n=1), T0 + 1)])
    assert base_flips(out) == [("new", "down")]


def test_it_leaves_a_paused_check_paused_on_a_start_until_its_run_times_out():
    state, out = run([(pause(T0), T0), (ping("start", T0 + 10), T0 + 10)], until=T0 + 100)
    assert base_flips(out) == [("new", "paused"), ("paused", "down")]
    assert out[-1].at.timestamp() == T0 + 40 and state.base == "down"


def test_it_keeps_a_run_going_on_a_success_with_another_rid():
    rid_a, rid_b = "7e0b0c8e-0000-4000-8000-00000000000a", "7e0b0c8e-0000-4000-8000-00000000000b"
    state, out = run([(ping("start", T0, rid=rid_a), T0), (ping("success", T0 + 5, rid=rid_b), T0 + 5)])
    assert state.last_start == T0 and state.base == "up"
    # the displayed status stays "started", the stored one flips: the transition is emitted all the same
    assert [(t.from_status, t.to_status, t.from_base, t.to_base) for t in out] == [
        ("new", "started", "new", "new"), ("started", "started", "new", "up")]


def test_it_ends_a_run_on_a_success_with_its_rid():
    rid_a = "7e0b0c8e-0000-4000-8000-00000000000a"
    state, _ = run([(ping("start", T0, rid=rid_a), T0), (ping("success", T0 + 5, rid=rid_a), T0 + 5)])
    assert state.last_start is None and state.status == "up"


def test_it_flips_to_down_at_the_missed_deadline():
    _, out = run([(ping("success", T0), T0)], until=T0 + 200)
    assert [(t.from_base, t.to_base, t.at.timestamp() - T0) for t in out if t.from_base != t.to_base] == [
        ("new", "up", 0), ("up", "down", 90)]


def upstream_flips(events, manual_resume: bool) -> list[tuple[str, str]]:
    """``create_flip`` calls of Healthchecks' Check.ping, pause and resume (no deadline passes)."""
    status, out = "new", []
    for event, _ in events:
        if isinstance(event, Paused):
            new = "paused"
        elif isinstance(event, Resumed):
            new = "new" if status == "paused" else status
        elif event.kind in ("success", "fail") and not (status == "paused" and manual_resume):
            new = "up" if event.kind == "success" else "down"
        else:
            new = status
        if new != status:
            out.append((status, new))
        status = new
    return out


@settings(max_examples=300, deadline=None)
@given(steps, st.booleans())
def test_its_flips_are_upstreams_create_flip_calls(raw, manual_resume):
    plan = Plan(project_id="p1", timeout_s=1e9, grace_s=1e9, manual_resume=manual_resume)
    events = make_events(raw)
    _, out = run(events, plan=plan)
    assert base_flips(out) == upstream_flips(events, manual_resume)
    for before, after in zip(out, out[1:]):
        assert after.from_base == before.to_base
