"""The state machine's short way for the commonest ping (a success of a check that is up, no run going
on, its deadline ahead) comes to what the general way does, on states and plans of every kind."""

from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from monitor.transitions import CheckState, Plan, _settle, apply
from schemas.events import PingEvent

T0 = 1_767_225_600.0


class _Other(PingEvent, frozen=True, tag="ping"):
    """A ping the short way does not take (its type is not PingEvent): the general way's answer."""


def _ping(cls, kind: str, at: float, rid: str | None) -> PingEvent:
    return cls(event_id="e1", check_id="c1", project_id="p1", kind=kind, rid=rid,
               received_at=datetime.fromtimestamp(at, timezone.utc))


plans = st.builds(
    Plan,
    project_id=st.just("p1"),
    kind=st.sampled_from(["simple", "cron"]),
    timeout_s=st.sampled_from([1.0, 60.0, 3600.0]),
    grace_s=st.sampled_from([0.5, 60.0, 900.0]),
    schedule=st.sampled_from(["* * * * *", "*/5 * * * *", "0 3 * * *"]),
    tz=st.sampled_from(["UTC", "Europe/Riga"]),
    failure_threshold=st.integers(1, 3),
    recovery_threshold=st.integers(1, 3),
    min_runtime_s=st.sampled_from([None, 5.0, "auto"]),
    max_runtime_s=st.sampled_from([None, 30.0, "auto"]),
    flapping_threshold=st.sampled_from([None, 2]),
    broken_after_s=st.sampled_from([None, 600.0]),
)

offsets = st.floats(-4000.0, 4000.0, allow_nan=False)
maybe_time = st.one_of(st.none(), offsets.map(lambda d: T0 + d))

states = st.builds(
    CheckState,
    status=st.sampled_from(["new", "up", "grace", "down", "started", "paused"]),
    base=st.sampled_from(["new", "up", "down", "paused"]),
    last_ping=maybe_time,
    grace_start=maybe_time,
    last_start=st.one_of(st.none(), st.none(), maybe_time),
    deadline=maybe_time,
    partition=st.just(0),
    offset=st.integers(-1, 5),
    last_start_rid=st.sampled_from([None, "r1"]),
    fails=st.integers(0, 3),
    oks=st.integers(0, 3),
    down_since=st.one_of(st.none(), st.none(), maybe_time),
    broken=st.booleans(),
)


@settings(max_examples=2000, deadline=None)
@given(state=states, plan=plans, delta=offsets, kind=st.sampled_from(["success", "success", "fail", "start"]),
       rid=st.sampled_from([None, "r1", "r2"]))
def test_the_short_way_is_the_general_way(state, plan, delta, kind, rid):
    state = _settle(state, T0, plan)  # status and deadline as the state machine leaves them
    now = T0 + delta
    position = (0, 6)
    try:
        general = apply(state, _ping(_Other, kind, now, rid), now, plan, position=position)
    except TypeError:  # anchors no state the machine makes would lack (a run's bound without its start...)
        assume(False)
    fast = apply(state, _ping(PingEvent, kind, now, rid), now, plan, position=position)
    assert fast == general


def test_the_short_way_is_taken_for_a_success_of_an_up_check():
    plan = Plan(project_id="p1", timeout_s=60.0, grace_s=60.0)
    state = CheckState(status="up", base="up", last_ping=T0, grace_start=T0 + 60, deadline=T0 + 60, partition=0,
                       offset=1, oks=1)
    new, out = apply(state, _ping(PingEvent, "success", T0 + 10, None), T0 + 10, plan, position=(0, 2))
    assert out == []
    assert new == CheckState(status="up", base="up", last_ping=T0 + 10, grace_start=T0 + 70, deadline=T0 + 70,
                             partition=0, offset=2, oks=2)
