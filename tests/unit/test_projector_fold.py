"""The projector's pure fold: durations as Healthchecks computes them, counts, replay safety."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from projector.fold import COLUMNS, CheckFold, fold, state_from_row, state_row
from schemas.events import Paused, PingEvent, Resumed, Transition

CHECK = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
PROJECT = "019ab7ef-0000-7000-8000-000000000001"
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
RID_A = "7e0b0c8e-0000-4000-8000-00000000000a"
RID_B = "7e0b0c8e-0000-4000-8000-00000000000b"


def ping(kind: str, seconds: float, rid: str | None = None, n: int = 0, exit_status: int | None = None) -> PingEvent:
    return PingEvent(
        event_id=f"e{n}-{kind}-{seconds}", check_id=CHECK, project_id=PROJECT, kind=kind,
        received_at=T0 + timedelta(seconds=seconds), rid=rid, exit_status=exit_status,
    )


def run(events, states=None):
    states = {} if states is None else states
    rows = fold(states, [(e, i) for i, e in enumerate(events)])
    return states, rows


def durations(rows) -> list:
    return [r[COLUMNS["pings"].index("duration_s")] for r in rows.pings]


def test_start_then_success_has_a_duration_and_a_run():
    states, rows = run([ping("start", 0), ping("success", 42.5)])
    assert durations(rows) == [None, 42.5]
    [r] = rows.runs
    assert (r[7], r[8]) == (42.5, "success")
    s = states[CHECK]
    assert (s.n_pings, s.last_duration_s, s.run_start, s.last_ping) == (2, 42.5, None, T0 + timedelta(seconds=42.5))


def test_completion_without_start_has_no_duration():
    _, rows = run([ping("success", 0), ping("fail", 10, exit_status=1)])
    assert durations(rows) == [None, None] and rows.runs == []


def test_a_start_pairs_once_only():
    _, rows = run([ping("start", 0), ping("success", 5), ping("success", 9)])
    assert durations(rows) == [None, 5.0, None]


def test_log_and_ignored_never_pair_and_keep_the_start():
    _, rows = run([ping("start", 0), ping("log", 3), ping("ign", 4), ping("fail", 7, exit_status=3)])
    assert durations(rows) == [None, None, None, 7.0]
    assert rows.runs[0][8] == "fail" and rows.runs[0][9] == 3


def test_rid_must_match_and_no_rid_pairs_with_no_rid():
    _, rows = run([
        ping("start", 0, RID_A), ping("start", 1, RID_B), ping("success", 10, RID_A),
        ping("success", 12, None), ping("success", 15, RID_B),
    ])
    assert durations(rows) == [None, None, 10.0, None, 14.0]


def test_most_recent_start_wins():
    _, rows = run([ping("start", 0), ping("start", 30), ping("success", 40)])
    assert durations(rows) == [None, None, 10.0]


def test_72_hour_cut_off():
    limit = 72 * 3600
    _, rows = run([ping("start", 0), ping("success", limit)])
    assert durations(rows)[-1] == float(limit)
    _, rows = run([ping("start", 0), ping("success", limit + 1)])
    assert durations(rows)[-1] is None


def test_n_counts_every_ping_per_check():
    _, rows = run([ping(k, i) for i, k in enumerate(["success", "start", "log", "ign", "fail"])])
    assert [r[3] for r in rows.pings] == [1, 2, 3, 4, 5]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def pause(seconds: float, n: int = 0) -> Paused:
    return Paused(event_id=f"p{n}-{seconds}", check_id=CHECK, project_id=PROJECT, at=at(seconds))


def resume(seconds: float, n: int = 0) -> Resumed:
    return Resumed(event_id=f"r{n}-{seconds}", check_id=CHECK, project_id=PROJECT, at=at(seconds))


def missed_deadline(seconds: float, from_base: str = "up") -> Transition:
    return Transition(event_id=f"t-{seconds}", check_id=CHECK, project_id=PROJECT, from_status="grace",
                      to_status="down", at=at(seconds), reason="no ping within schedule + grace",
                      from_base=from_base, to_base="down")


def run_mixed(events):
    """Pings and control events on the pings topic (offsets 0, 1, ...), transitions on their own."""
    states, pings_offset, transitions_offset, rows = {}, 0, 0, None
    for e in events:
        if isinstance(e, Transition):
            rows = fold(states, [(e, transitions_offset)])
            transitions_offset += 1
        else:
            rows = fold(states, [(e, pings_offset)])
            pings_offset += 1
    return states[CHECK], rows


def test_it_sets_the_stored_status_from_successes_and_fails():
    state, _ = run_mixed([ping("success", 0)])
    assert state.status == "up"
    state, _ = run_mixed([ping("success", 0), ping("fail", 1)])
    assert state.status == "down"


def test_it_keeps_the_status_on_start_log_and_ign():
    state, _ = run_mixed([ping("start", 0), ping("log", 1), ping("ign", 2)])
    assert state.status == "new" and state.run_start == at(0)


def test_it_pauses_and_resumes_as_upstream():
    state, _ = run_mixed([ping("success", 0), ping("start", 1), pause(2)])
    assert (state.status, state.run_start, state.last_ping) == ("paused", None, at(0))
    state, _ = run_mixed([ping("success", 0), pause(2), resume(3)])
    assert (state.status, state.run_start, state.last_ping) == ("new", None, None)


def test_it_keeps_a_paused_check_paused_on_a_start():
    state, _ = run_mixed([pause(0), ping("start", 1)])
    assert (state.status, state.run_start) == ("paused", at(1))


def test_it_unpauses_a_paused_check_on_a_success_or_fail():
    assert run_mixed([pause(0), ping("success", 1)])[0].status == "up"
    assert run_mixed([pause(0), ping("fail", 1)])[0].status == "down"


def test_it_keeps_a_run_when_a_paused_check_is_paused_again():
    state, _ = run_mixed([pause(0), ping("start", 1), pause(2)])
    assert (state.status, state.run_start) == ("paused", at(1))


def test_it_ignores_a_resume_of_a_check_that_is_not_paused():
    state, _ = run_mixed([ping("success", 0), resume(1)])
    assert (state.status, state.last_ping) == ("up", at(0))


def test_it_keeps_the_ping_logs_starts_across_pause_and_resume():
    _, rows = run_mixed([ping("start", 0), pause(1), resume(2), ping("success", 3)])
    assert durations(rows) == [3.0]


def test_it_marks_the_check_down_on_a_missed_deadline():
    state, rows = run_mixed([ping("success", 0), missed_deadline(90)])
    assert state.status == "down" and len(rows.transitions) == 1


def test_it_ignores_a_missed_deadline_older_than_the_last_ping():
    # read after the ping that followed it (the topics are read in no particular order)
    state, _ = run_mixed([ping("success", 0), ping("success", 100), missed_deadline(90)])
    assert state.status == "up"


def test_it_keeps_the_run_started_after_its_deadline():
    state, _ = run_mixed([ping("start", 0), missed_deadline(30, from_base="new")])
    assert (state.status, state.run_start) == ("down", at(0))


def test_it_takes_no_status_from_a_transition_a_ping_caused():
    t = Transition(event_id="t1", check_id=CHECK, project_id=PROJECT, from_status="up", to_status="started",
                   at=at(1), reason="start ping", cause_event_id="e0-start-1", from_base="up", to_base="up")
    state, rows = run_mixed([ping("success", 0), t])
    assert state.status == "up" and rows.transitions[0][-4:] == ("up", "up", "", "")


def test_it_closes_a_run_on_a_success_without_rid():
    state, _ = run_mixed([ping("start", 0, RID_A), ping("success", 5)])
    assert (state.run_start, state.last_duration_s) == (None, None)


def test_it_keeps_a_run_open_on_a_success_with_another_rid():
    state, _ = run_mixed([ping("start", 0, RID_A), ping("success", 5, RID_B)])
    assert (state.run_start, state.run_rid, state.last_duration_s) == (at(0), RID_A, None)


def test_it_closes_a_run_on_a_fail_with_another_rid():
    state, _ = run_mixed([ping("start", 0, RID_A), ping("fail", 5, RID_B)])
    assert (state.run_start, state.last_duration_s) == (None, None)


def test_it_measures_the_last_duration_only_when_the_rid_matches_the_start():
    state, _ = run_mixed([ping("start", 0, RID_A), ping("fail", 5, RID_A)])
    assert (state.run_start, state.last_duration_s) == (None, 5.0)


def test_it_measures_the_last_duration_from_the_last_start_only():
    # the check has one run at a time (start B replaced A); the ping's duration pairs by rid
    state, rows = run_mixed([ping("start", 0, RID_A), ping("start", 1, RID_B), ping("success", 5, RID_A)])
    assert (state.last_duration_s, state.run_start) == (None, at(1))
    assert durations(rows) == [5.0]


def upstream_check(events) -> dict:
    """Healthchecks' stored fields after ``Check.ping`` and the pause/resume views, verbatim."""
    c = {"status": "new", "last_ping": None, "last_start": None, "last_start_rid": None, "last_duration": None}
    for e in events:
        if isinstance(e, Paused):
            if c["status"] != "paused":
                c.update(status="paused", last_start=None)
        elif isinstance(e, Resumed):
            if c["status"] == "paused":
                c.update(status="new", last_start=None, last_ping=None)
        elif e.kind == "start":
            c.update(last_start=e.received_at, last_start_rid=e.rid)
        elif e.kind in ("success", "fail"):
            c.update(last_ping=e.received_at, last_duration=None)
            if c["last_start"]:
                if c["last_start_rid"] == e.rid:
                    c["last_duration"] = (e.received_at - c["last_start"]).total_seconds()
                    c["last_start"] = None
                elif e.kind == "fail" or e.rid is None:
                    c["last_start"] = None
            c["status"] = "down" if e.kind == "fail" else "up"
    return c


mixed_kinds = st.sampled_from(["success", "start", "fail", "log", "ign", "pause", "resume"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(mixed_kinds, st.sampled_from([None, RID_A, RID_B]), st.floats(min_value=0, max_value=100)), max_size=40))
def test_it_stores_what_upstream_stores(raw):
    events, t = [], 0.0
    for i, (kind, rid, dt) in enumerate(raw):
        t += dt
        if kind == "pause":
            events.append(pause(t, i))
        elif kind == "resume":
            events.append(resume(t, i))
        else:
            events.append(ping(kind, t, rid, n=i))
    if not events:
        return
    state, _ = run_mixed(events)
    want = upstream_check(events)
    got = {"status": state.status, "last_ping": state.last_ping, "last_start": state.run_start,
           "last_duration": state.last_duration_s}
    assert got == {k: want[k] for k in got}
    if state.run_start is not None:
        assert state.run_rid == want["last_start_rid"]


def test_replayed_offsets_change_nothing():
    events = [ping("start", 0), ping("success", 5), ping("success", 7)]
    states, first = run(events)
    again = fold(states, [(e, i) for i, e in enumerate(events)])
    assert again.pings == [] and again.runs == [] and again.touched == {}
    assert states[CHECK].n_pings == 3


def test_a_failing_event_is_reported_and_undone():
    bad = PingEvent(event_id="bad", check_id=CHECK, project_id=PROJECT, kind="success",
                    received_at=datetime(2026, 1, 1))  # naive: cannot be compared with the others
    states = {}
    errors = []
    rows = fold(states, [(ping("success", 0), 0), (bad, 1), (ping("success", 2), 2)],
                on_error=lambda i, exc: errors.append(i))
    assert errors == [1]
    assert [r[0] for r in rows.pings] == ["e0-success-0", "e0-success-2"]
    assert states[CHECK].n_pings == 2


def test_each_ping_row_names_its_event_and_the_start_it_ends():
    """What the service sends ClickHouse beside each ping's record (projector/wire.py): its index among the
    folded events, and the start's event id when it ends a run; a failed or skipped event has no row."""
    bad = PingEvent(event_id="bad", check_id=CHECK, project_id=PROJECT, kind="success",
                    received_at=datetime(2026, 1, 1))  # naive: cannot be compared with the others
    tick = Transition(event_id="t", check_id=CHECK, project_id=PROJECT, from_status="new", to_status="up", at=T0,
                      reason="", cause_event_id="x")
    start, end = ping("start", 0, RID_A), ping("success", 2, RID_A)
    errors = []
    rows = fold({}, [(start, 0), (tick, 1), (ping("log", 1), 2), (end, 3), (bad, 4)],
                on_error=lambda i, exc: errors.append(i))
    assert errors == [4]
    assert rows.ping_index == [0, 2, 3]
    assert rows.ping_starts == [None, None, start.event_id]
    assert [r[1] for r in rows.runs] == [start.event_id]


def test_state_survives_a_round_trip_through_its_row():
    states, _ = run([ping("start", 0, RID_A), ping("success", 1)])
    row = state_row(states[CHECK], T0)
    from projector.fold import COLUMNS

    back = state_from_row(dict(zip(COLUMNS["check_state"], row)))
    assert back == states[CHECK]


kinds = st.sampled_from(["success", "start", "fail", "log", "ign"])
rids = st.sampled_from([None, RID_A, RID_B])
steps = st.lists(st.tuples(kinds, rids, st.floats(min_value=0, max_value=200_000)), max_size=60)


def _events(raw) -> list[PingEvent]:
    t, out = 0.0, []
    for i, (kind, rid, dt) in enumerate(raw):
        t += dt
        out.append(ping(kind, t, rid, n=i, exit_status=1 if kind == "fail" else None))
    return out


@settings(max_examples=300, deadline=None)
@given(steps)
def test_properties(raw):
    events = _events(raw)
    states, rows = run(events)
    assert len(rows.pings) == len(events)
    if events:
        assert states[CHECK].n_pings == len(events)
    by_kind = {e.event_id: e for e in events}
    n_runs = 0
    duration, start = COLUMNS["pings"].index("duration_s"), COLUMNS["pings"].index("start_event_id")
    for row in rows.pings:
        d = row[duration]
        assert (d is None) == (row[start] is None)  # a ping names the start it ends exactly when it has a duration
        if d is not None:
            n_runs += 1
            assert by_kind[row[0]].kind in ("success", "fail")
            assert by_kind[row[start]].kind == "start"
            assert 0 <= d <= 72 * 3600
    assert n_runs == len(rows.runs)
    # every run pairs a start with the same rid, each start used at most once
    starts = [r[1] for r in rows.runs]
    assert len(starts) == len(set(starts))
    for r in rows.runs:
        assert by_kind[r[1]].kind == "start" and by_kind[r[1]].rid == r[4]


@settings(max_examples=150, deadline=None)
@given(steps, st.integers(min_value=0, max_value=60))
def test_split_and_restored_like_one_batch(raw, cut):
    """Folding in two batches with the state written to and read back from a row equals one batch."""
    events = _events(raw)
    cut = min(cut, len(events))
    whole, rows_whole = run(events)
    states: dict[str, CheckFold] = {}
    rows_a = fold(states, [(e, i) for i, e in enumerate(events[:cut])])
    if CHECK in states:
        from projector.fold import COLUMNS

        states = {CHECK: state_from_row(dict(zip(COLUMNS["check_state"], state_row(states[CHECK], T0))))}
    rows_b = fold(states, [(e, i + cut) for i, e in enumerate(events[cut:])])
    assert rows_a.pings + rows_b.pings == rows_whole.pings
    assert rows_a.runs + rows_b.runs == rows_whole.runs
    if events:  # the same state, but for the version (one more per batch)
        import msgspec

        assert msgspec.structs.replace(states[CHECK], version=0) == msgspec.structs.replace(whole[CHECK], version=0)


def test_a_newer_start_with_the_same_rid_makes_the_older_one_stale():
    # Upstream pairs a completion with the newest same-rid ping only: after it, nothing is left to pair.
    _, rows = run([ping("start", 0), ping("start", 10), ping("success", 12), ping("success", 13)])
    assert durations(rows) == [None, None, 2.0, None]


def test_a_start_or_a_log_does_not_move_last_ping():
    states, _ = run([ping("success", 0), ping("start", 10), ping("log", 20), ping("ign", 30)])
    assert states[CHECK].last_ping == T0
    assert states[CHECK].run_start == T0 + timedelta(seconds=10)


def upstream_durations(pings: list[PingEvent]) -> list[float | None]:
    """``Ping.duration`` as Healthchecks defines it over the ping log: look back through earlier pings
    with the same rid, at most 72 h older; a start gives the duration, a success or fail first gives none."""
    out = []
    for i, p in enumerate(pings):
        duration = None
        if p.kind in ("success", "fail"):
            for q in reversed(pings[:i]):
                if q.rid != p.rid or q.received_at < p.received_at - timedelta(hours=72):
                    continue
                if q.kind == "start":
                    duration = (p.received_at - q.received_at).total_seconds()
                    break
                if q.kind in ("success", "fail"):
                    break
        out.append(duration)
    return out


@settings(max_examples=300, deadline=None)
@given(steps)
def test_durations_equal_upstreams_definition_over_the_ping_log(raw):
    events = _events(raw)
    _, rows = run(events)
    assert durations(rows) == upstream_durations(events)


def test_a_completion_without_a_start_clears_the_last_duration():
    states, _ = run([ping("start", 0), ping("success", 5), ping("success", 6)])
    assert states[CHECK].last_duration_s is None
