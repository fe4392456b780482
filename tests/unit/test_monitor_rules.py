"""pingstream's rules in the monitor's fold (issue #19): failure and recovery thresholds, run time bounds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.transitions import Plan, apply, expire, reconfigure

from .test_monitor_transitions import CHECK, T0, pause, ping, resume, run

PLAN = Plan(project_id="p1", timeout_s=60, grace_s=30)


def plan(**kw) -> Plan:
    return Plan(**{"project_id": "p1", "timeout_s": 60, "grace_s": 30, **kw})


def bases(transitions) -> list[tuple[str, str]]:
    return [(t.from_base, t.to_base) for t in transitions if t.from_base != t.to_base]


def test_it_leaves_the_check_up_until_the_third_failure():
    p = plan(failure_threshold=3)
    events = [(ping("success", T0), T0), (ping("fail", T0 + 1), T0 + 1), (ping("fail", T0 + 2, 1), T0 + 2)]
    state, out = run(events, plan=p)
    assert state.base == "up" and state.fails == 2
    assert bases(out) == [("new", "up")]
    state, out = apply(state, ping("fail", T0 + 3, 2), T0 + 3, p, position=(0, 3))
    assert [(t.to_status, t.rule) for t in out] == [("down", "failure_threshold")]
    assert "3 consecutive failures" in out[0].reason


def test_a_success_resets_the_count():
    p = plan(failure_threshold=2)
    kinds = ["success", "fail", "success", "fail", "success"]
    state, out = run([(ping(k, T0 + i, i), T0 + i) for i, k in enumerate(kinds)], plan=p)
    assert state.base == "up" and bases(out) == [("new", "up")]


def test_default_thresholds_are_healthchecks():
    state, out = run([(ping("success", T0), T0), (ping("fail", T0 + 1), T0 + 1)], plan=PLAN)
    assert bases(out) == [("new", "up"), ("up", "down")]
    assert all(t.rule is None and t.held is None for t in out)


def test_missed_periods_count_as_failures():
    p = plan(failure_threshold=2)
    state, out = run([(ping("success", T0), T0)], plan=p, until=T0 + 60 + 30)
    # first period missed: grace, then back to waiting for the next period (expected at T0 + 120)
    assert state.base == "up" and state.fails == 1 and state.grace_start == T0 + 120
    assert [(t.from_status, t.to_status) for t in out] == [("new", "up"), ("up", "grace"), ("grace", "up")]
    state, out = expire(state, T0 + 120 + 30, p, CHECK)
    assert [(t.to_status, t.rule) for t in out] == [("grace", None), ("down", "failure_threshold")]
    assert out[-1].at.timestamp() == T0 + 150


def test_a_ping_within_the_next_period_clears_a_missed_one():
    p = plan(failure_threshold=2)
    state, out = run([(ping("success", T0), T0), (ping("success", T0 + 100, 1), T0 + 100)], plan=p,
                     until=T0 + 100 + 60 + 29)
    assert state.base == "up" and state.fails == 0 and state.status == "grace"


def test_it_stays_down_until_the_second_success():
    p = plan(recovery_threshold=2)
    kinds = ["success", "fail", "success"]
    state, out = run([(ping(k, T0 + i, i), T0 + i) for i, k in enumerate(kinds)], plan=p)
    assert state.base == "down" and state.oks == 1
    assert bases(out) == [("new", "up"), ("up", "down")]
    state, out = apply(state, ping("success", T0 + 5, 9), T0 + 5, p, position=(0, 9))
    assert [(t.from_base, t.to_base, t.rule) for t in out] == [("down", "up", "recovery_threshold")]
    assert state.grace_start == T0 + 65


def test_a_failure_restarts_the_recovery_count():
    p = plan(recovery_threshold=2)
    kinds = ["success", "fail", "success", "fail", "success"]
    state, _ = run([(ping(k, T0 + i, i), T0 + i) for i, k in enumerate(kinds)], plan=p)
    assert state.base == "down" and state.oks == 1


def test_it_reports_a_run_too_long_before_the_finish():
    p = plan(max_runtime_s=10)
    state, out = run([(ping("success", T0), T0), (ping("start", T0 + 1, 1), T0 + 1)], plan=p, until=T0 + 11)
    assert state.base == "down" and state.last_start is None
    down = out[-1]
    assert (down.from_status, down.to_status, down.rule) == ("started", "down", "max_runtime")
    assert down.at.timestamp() == T0 + 11 and down.reason == "run longer than max_runtime"


def test_a_run_within_max_runtime_is_fine():
    p = plan(max_runtime_s=10)
    events = [(ping("success", T0), T0), (ping("start", T0 + 1, 1), T0 + 1), (ping("success", T0 + 9, 2), T0 + 9)]
    state, out = run(events, plan=p, until=T0 + 20)
    assert state.base == "up" and all(t.to_status != "down" for t in out)


def test_it_reports_a_run_too_short_at_the_finish():
    p = plan(min_runtime_s=5)
    events = [(ping("success", T0), T0), (ping("start", T0 + 1, 1), T0 + 1), (ping("success", T0 + 3, 2), T0 + 3)]
    state, out = run(events, plan=p)
    assert state.base == "down"
    assert (out[-1].to_status, out[-1].rule) == ("down", "min_runtime")
    assert "shorter than min_runtime" in out[-1].reason


def test_a_success_without_a_start_is_not_too_short():
    state, out = run([(ping("success", T0), T0), (ping("success", T0 + 1, 1), T0 + 1)], plan=plan(min_runtime_s=5))
    assert state.base == "up"


def test_run_rules_count_towards_the_threshold():
    p = plan(failure_threshold=2, max_runtime_s=10)
    events = [(ping("success", T0), T0), (ping("start", T0 + 1, 1), T0 + 1)]
    state, out = run(events, plan=p, until=T0 + 12)
    assert state.base == "up" and state.fails == 1 and state.last_start is None
    state, out = apply(state, ping("start", T0 + 13, 2), T0 + 13, p, position=(0, 2))
    state, out = expire(state, T0 + 23, p, CHECK)
    assert [(t.to_base, t.rule) for t in out] == [("down", "max_runtime")]


# --- properties ---------------------------------------------------------------

KINDS = ["success", "fail", "start", "log", "pause", "resume"]
steps = st.lists(
    st.tuples(st.sampled_from(KINDS), st.floats(min_value=0.0, max_value=200.0, allow_nan=False)),
    max_size=30,
)
rule_plans = st.builds(
    Plan,
    project_id=st.just("p1"),
    timeout_s=st.floats(min_value=1, max_value=120),
    grace_s=st.floats(min_value=1, max_value=60),  # (Healthchecks' minimum is 60 s: no two deadlines at once)
    failure_threshold=st.integers(min_value=1, max_value=5),
    recovery_threshold=st.integers(min_value=1, max_value=5),
    max_runtime_s=st.none() | st.floats(min_value=1, max_value=100),
)


def _events(raw):
    t, events = T0, []
    for n, (kind, dt) in enumerate(raw):
        t += dt
        make = {"pause": pause, "resume": resume}.get(kind)
        events.append((make(t, n) if make else ping(kind, t, n), t))
    return events


@settings(max_examples=400, deadline=None)
@given(steps, rule_plans)
def test_thresholds_never_alert_before_n(raw, p):
    """Reference model: a check goes down only after ``failure_threshold`` consecutive failures
    (fail pings, missed periods, runs over time), and comes back up only after ``recovery_threshold``
    consecutive successes; pause and resume start counting afresh."""
    events = _events(raw)
    state, fails, oks = None, 0, 0
    end = (events[-1][1] if events else T0) + 10_000
    for offset, (event, at) in enumerate(events + [(None, end)]):
        # Deadlines one at a time: each one passed in grace or during a run is a failure.
        while state is not None and state.deadline is not None and state.deadline <= at:
            before = state
            state, ts = expire(state, state.deadline, p, CHECK)
            if before.status in ("grace", "started"):
                fails, oks = fails + 1, 0
            for t in ts:
                if t.to_base == "down" and t.from_base != "down":
                    assert fails >= p.failure_threshold
        if event is None:
            break
        before = state
        state, ts = apply(state, event, at, p, position=(0, offset))
        kind = getattr(event, "kind", None)
        if kind == "fail":
            fails, oks = fails + 1, 0
        elif kind == "success":
            fails, oks = 0, oks + 1
        elif event.event_id.startswith("pause") and (before is None or before.base != "paused"):
            fails, oks = 0, 0
        elif event.event_id.startswith("resume") and before is not None and before.base == "paused":
            fails, oks = 0, 0
        for t in ts:
            if t.to_base == "down" and t.from_base != "down":
                assert fails >= p.failure_threshold
            if t.to_base == "up" and t.from_base == "down":
                assert oks >= p.recovery_threshold
        assert (state.fails, state.oks) == (fails, oks)


@settings(max_examples=300, deadline=None)
@given(steps, rule_plans)
def test_rules_replay_to_the_same_transitions(raw, p):
    """Determinism with the rules on: the same events give the same transitions with the same ids."""
    events = _events(raw)
    end = (events[-1][1] if events else T0) + 5000
    assert run(events, plan=p, until=end)[1] == run(events, plan=p, until=end)[1]


# --- learned run time bounds ("auto") -------------------------------------------

from monitor import learned  # noqa: E402


def _history(p, n: int, durations, t0=T0):
    """``n`` runs (start, then a success with the same rid) of the given durations, one a minute."""
    events, t = [], t0
    for i in range(n):
        d = durations[i % len(durations)]
        events.append((ping("start", t, 2 * i, rid=f"r{i}"), t))
        events.append((ping("success", t + d, 2 * i + 1, rid=f"r{i}"), t + d))
        t += 60
    return run(events, plan=p)


def test_learned_bounds_need_enough_runs():
    p = plan(timeout_s=3600, grace_s=3600, min_runtime_s="auto", max_runtime_s="auto")
    state, out = _history(p, learned.MIN_RUNS - 1, [10.0])
    assert learned.bounds(state.runs, T0 + 3600) == (None, None)
    assert state.base == "up"


def test_a_run_outside_the_learned_range_fails():
    p = plan(timeout_s=3600, grace_s=3600, min_runtime_s="auto", max_runtime_s="auto")
    durations = [10.0 + (i % 5) for i in range(30)]  # 10..14 s
    state, out = _history(p, 30, durations)
    assert learned.bounds(state.runs, T0 + 1800) == (10.0, 14.0)
    t = T0 + 30 * 60
    # too long: down at start + p99, before the finish
    state, _ = apply(state, ping("start", t, 100, rid="long"), t, p, position=(0, 100))
    assert state.deadline == t + 14.0
    state, out = expire(state, t + 14.0, p, CHECK)
    assert [(x.to_status, x.rule) for x in out] == [("down", "max_runtime")]
    # a normal run brings it back up; then one too short goes down at its finish
    t += 60
    state, _ = apply(state, ping("start", t, 101, rid="ok"), t, p, position=(0, 101))
    state, out = apply(state, ping("success", t + 12, 102, rid="ok"), t + 12, p, position=(0, 102))
    assert state.base == "up"
    t += 60
    state, _ = apply(state, ping("start", t, 103, rid="short"), t, p, position=(0, 103))
    state, out = apply(state, ping("success", t + 1, 104, rid="short"), t + 1, p, position=(0, 104))
    assert [(x.to_status, x.rule) for x in out] == [("down", "min_runtime")]


def test_the_history_is_bounded_and_forgets_old_runs():
    runs = None
    for i in range(500):
        runs = learned.remember(runs, T0 + i, float(i))
    assert len(runs) == learned.KEPT and runs[-1] == (T0 + 499, 499.0)
    runs = learned.remember(runs, T0 + 499 + learned.WINDOW_S + 1, 1.0)
    assert runs == ((T0 + 499 + learned.WINDOW_S + 1, 1.0),)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0.001, max_value=1e6), min_size=learned.MIN_RUNS, max_size=300))
def test_learned_bounds_lie_within_the_runs(durations):
    runs = None
    for i, d in enumerate(durations):
        runs = learned.remember(runs, T0 + i, d)
    low, high = learned.bounds(runs, T0 + len(durations))
    kept = [d for _, d in runs]
    assert min(kept) <= low <= high <= max(kept)
    below = sum(1 for d in kept if d < low)
    above = sum(1 for d in kept if d > high)
    assert below <= 0.01 * len(kept) + 1 and above <= 0.01 * len(kept) + 1


# --- flapping and broken ------------------------------------------------------------

from schemas.events import Broken, Flapping, Transition  # noqa: E402


def test_a_flapping_check_is_announced_once_and_its_flips_held():
    p = plan(timeout_s=3 * 86400, grace_s=3600, flapping_threshold=3)
    kinds = ["success", "fail", "success", "fail", "success", "fail", "success"]
    state, out = run([(ping(k, T0 + 60 * i, i), T0 + 60 * i) for i, k in enumerate(kinds)], plan=p)
    flaps = [e for e in out if isinstance(e, Flapping)]
    assert len(flaps) == 1 and flaps[0].flips == 4 and flaps[0].at.timestamp() == T0 + 240
    held = [(t.from_base, t.to_base, t.held) for t in out if isinstance(t, Transition)]
    assert held == [("new", "up", None), ("up", "down", None), ("down", "up", None), ("up", "down", None),
                    ("down", "up", "flapping"), ("up", "down", "flapping"), ("down", "up", "flapping")]
    assert state.flapping
    # A day later a flip finds no others in the day before it: calm again, notified.
    state, out = apply(state, ping("fail", T0 + 86400 + 400, 99), T0 + 86400 + 400, p, position=(0, 99))
    assert [(t.to_base, t.held) for t in out] == [("down", None)] and not state.flapping


def test_flips_are_kept_bounded():
    p = plan(timeout_s=3600, grace_s=3600, flapping_threshold=3)
    kinds = ["success", "fail"] * 50
    state, _ = run([(ping(k, T0 + i, i), T0 + i) for i, k in enumerate(kinds)], plan=p)
    assert len(state.flips) <= 4


def test_a_check_down_for_broken_after_is_reported_broken_once():
    p = plan(broken_after_s=3 * 86400)
    state, out = run([(ping("success", T0), T0), (ping("fail", T0 + 10, 1), T0 + 10)], plan=p,
                     until=T0 + 10 + 5 * 86400)
    broken = [e for e in out if isinstance(e, Broken)]
    assert len(broken) == 1
    assert broken[0].at.timestamp() == T0 + 10 + 3 * 86400 and broken[0].down_since.timestamp() == T0 + 10
    assert state.broken and state.deadline is None and state.status == "down"
    # up again, then down again: a new time down, reported again
    state, out = apply(state, ping("success", T0 + 6 * 86400, 2), T0 + 6 * 86400, p, position=(0, 2))
    state, out = apply(state, ping("fail", T0 + 6 * 86400 + 1, 3), T0 + 6 * 86400 + 1, p, position=(0, 3))
    state, out = expire(state, T0 + 10 * 86400, p, CHECK)
    assert [type(e) for e in out] == [Broken]


def test_without_the_settings_there_are_no_such_events():
    kinds = ["success", "fail"] * 10
    state, out = run([(ping(k, T0 + i, i), T0 + i) for i, k in enumerate(kinds)], plan=PLAN, until=T0 + 30 * 86400)
    assert all(isinstance(e, Transition) and e.held is None for e in out)


# --- unknown outcomes (the volume gate's anomalous minutes) -------------------------------


def test_a_deadline_in_an_anomalous_minute_moves_the_check_to_its_next_period():
    state, _ = run([(ping("success", T0), T0)], plan=PLAN)
    span = ((T0 + 60 - 1, T0 + 110),)  # the expected ping (T0 + 60) falls inside
    state, out = expire(state, T0 + 100, PLAN, CHECK, unknown=span)
    assert out == [] and state.status == "up" and state.grace_start == T0 + 120 and state.fails == 0
    state, out = expire(state, T0 + 121, PLAN, CHECK, unknown=span)
    assert [t.to_status for t in out] == ["grace"]  # the next period is judged as usual


def test_in_grace_when_the_anomaly_starts_back_to_up_with_the_rule():
    state, _ = run([(ping("success", T0), T0)], plan=PLAN, until=T0 + 70)
    assert state.status == "grace"
    state, out = expire(state, T0 + 95, PLAN, CHECK, unknown=((T0 + 80, T0 + 140),))
    assert [(t.from_status, t.to_status, t.rule) for t in out] == [("grace", "up", "volume_gate")]
    assert state.base == "up" and state.grace_start == T0 + 120


def test_a_run_in_an_anomalous_minute_is_forgotten_not_failed():
    state, _ = run([(ping("success", T0), T0), (ping("start", T0 + 1, 1), T0 + 1)], plan=plan(max_runtime_s=10))
    state, out = expire(state, T0 + 20, plan(max_runtime_s=10), CHECK, unknown=((T0 + 5, T0 + 15),))
    assert state.base == "up" and state.last_start is None
    assert [(t.from_status, t.to_status, t.rule) for t in out] == [("started", "up", "volume_gate")]


def test_a_state_persisted_before_the_rules_still_loads():
    """The monitor-state topic holds states written by the version before these fields (shorter arrays)."""
    from monitor import store

    old = b'["up","up",1.0,61.0,null,61.0,3,123,null]'
    state = store._state_decoder.decode(old)
    assert (state.base, state.fails, state.oks, state.runs, state.flapping, state.down_since) == (
        "up", 0, 0, None, False, None)
    assert store._state_decoder.decode(store.encode_state(state)) == state


# --- a configuration change never counts a missed period twice -----------------------

def _registry_monitor(**fields):
    from tests.unit.test_monitor_holds import _monitor
    return _monitor(**fields)


def _reconfigured(monitor, **fields) -> None:
    from tests.unit.test_monitor_holds import CHECK as ID, PROJECT, _dt
    from schemas.events import CheckConfig, CheckUpserted

    monitor.plans.apply(CheckUpserted(event_id="c2", check=CheckConfig(
        **{"id": ID, "project_id": PROJECT, "created": _dt(T0 - 10), "timeout_s": 60, "grace_s": 30, **fields})))


def test_a_rule_change_after_a_missed_period_does_not_count_it_again():
    """failure_threshold 3, every 60 s + 30 s grace: the first period is missed at T0 + 90 (one
    failure). Changing a rule field at T0 + 100 must not make that period count once more: the
    third failure is the period due at T0 + 180 + 30, not earlier."""
    from tests.unit.test_monitor_holds import _feed, ping as ping_of, tick

    m = _registry_monitor(failure_threshold=3)
    out = _feed(m, [ping_of("success", T0, 0), tick(T0 + 95, 1)])
    assert m.states[CHECK].fails == 1
    for n, fields in enumerate([{"failure_threshold": 3, "recovery_threshold": 2},
                                {"failure_threshold": 3, "recovery_threshold": 2, "grace_s": 31}]):
        _reconfigured(m, **fields)
        out += _feed(m, [tick(T0 + 100 + n, 2 + n)])
        assert m.states[CHECK].fails == 1, fields
    out += _feed(m, [tick(T0 + 200, 4)])
    assert m.states[CHECK].fails == 2 and m.states[CHECK].base == "up"
    out += _feed(m, [tick(T0 + 300, 5)])
    downs = [t for t in out if t.to_base == "down"]
    assert [(t.at.timestamp(), t.rule) for t in downs] == [(T0 + 180 + 31, "failure_threshold")]


def test_a_rule_change_does_not_count_a_period_the_volume_gate_judged_unknown():
    p = plan(failure_threshold=1)
    state, _ = run([(ping("success", T0), T0)], plan=p)
    unknown = ((T0 + 60 - 1e-6, T0 + 120 - 1e-6),)  # the minute the period's grace ends in
    state, out = expire(state, T0 + 95, p, CHECK, unknown=unknown)
    assert state.base == "up" and state.grace_start == T0 + 120
    state, out = reconfigure(state, T0 + 100, plan(failure_threshold=1, recovery_threshold=2), CHECK, previous=p)
    state, out = expire(state, T0 + 110, p, CHECK)
    assert state.base == "up" and out == []


def _steps():
    from tests.unit.test_monitor_holds import steps
    return steps


@settings(max_examples=150, deadline=None)
@given(_steps(), st.integers(min_value=1, max_value=3), st.integers(min_value=0, max_value=25))
def test_a_change_that_moves_no_timing_changes_no_transition(raw, threshold, at_step):
    """A registry update of a field that plays no part here (flapping_threshold far above any count),
    whenever it comes, leaves every transition as it was: nothing is counted again."""
    from tests.unit.test_monitor_holds import _events, _feed

    events = _events(raw)
    plain = _feed(_registry_monitor(failure_threshold=threshold), events)
    m = _registry_monitor(failure_threshold=threshold)
    cut = min(at_step, len(events))
    out = _feed(m, events[:cut])
    _reconfigured(m, failure_threshold=threshold, flapping_threshold=10_000)
    out += _feed(m, events[cut:], start=cut)
    assert out == plain
