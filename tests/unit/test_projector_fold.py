"""The projector's pure fold: durations as Healthchecks computes them, counts, replay safety."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from projector.fold import CheckFold, fold, state_from_row, state_row
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
    return [r[-1] for r in rows.pings]


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


def test_transitions_and_pause_set_the_status():
    t = Transition(event_id="t1", check_id=CHECK, project_id=PROJECT, from_status="new", to_status="up", at=T0,
                   reason="success")
    states, rows = run([ping("success", 0), t])
    assert states[CHECK].status == "up" and len(rows.transitions) == 1
    fold(states, [(Paused(event_id="p", check_id=CHECK, project_id=PROJECT, at=T0), 10)])
    assert states[CHECK].status == "paused"
    fold(states, [(Resumed(event_id="r", check_id=CHECK, project_id=PROJECT, at=T0), 11)])
    assert (states[CHECK].status, states[CHECK].last_ping) == ("new", None)


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
    for row in rows.pings:
        d = row[-1]
        if d is not None:
            n_runs += 1
            assert by_kind[row[0]].kind in ("success", "fail")
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
