"""The volume gate (issue #19): a project's partial outage gives unknowns and an ingest_anomaly, not downs.

Driven through ``monitor.state.Monitor`` with real records; the earlier days' volume (the
baseline) is counted into the gate directly, as the monitor would have counted those pings."""

from __future__ import annotations

from datetime import datetime, timezone

from monitor import volume
from monitor.clock import StreamClock
from monitor.plans import PlanBook
from monitor.state import Monitor
from runtime.eventlog.base import Record
from schemas.events import TOPIC_PINGS, CheckConfig, CheckUpserted, IngestAnomaly, PingEvent, Tick, Transition, encode

PROJECT = "019ab7ef-0000-7000-8000-000000000001"
T0 = 1_767_225_600.0  # a midnight (UTC)
N = 60
IDS = [f"00000000-0000-4000-8000-{i:012d}" for i in range(N)]


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


class Fleet:
    def __init__(self, gate: bool, days_of_history: int = 3) -> None:
        plans = PlanBook()
        for check_id in IDS:
            plans.apply(CheckUpserted(event_id="c", check=CheckConfig(
                id=check_id, project_id=PROJECT, created=_dt(T0 - 10 * 86400), timeout_s=60, grace_s=60)))
        self.gate = volume.VolumeGate() if gate else None
        if self.gate is not None:
            for day in range(1, days_of_history + 1):
                for minute in range(-10, 120):
                    for _ in range(N):  # every check once a minute
                        self.gate.count(PROJECT, T0 - day * 86400 + minute * 60 + 1)
        self.monitor = Monitor(plans, StreamClock([0], gap_threshold_s=1e9), self.gate)
        self.offset = 0
        self.out: list = []

    def feed(self, event, at: float) -> None:
        self.monitor.fold(Record(TOPIC_PINGS, 0, self.offset, None, encode(event), int(at * 1000)))
        self.offset += 1
        self.monitor.reconfigure()
        self.monitor.advance()
        self.out += self.monitor.take()[0]

    def minute(self, m: int, quiet: set[str]) -> None:
        """Minute ``m`` (from T0): every check not in ``quiet`` pings once, ticks every 10 s."""
        start = T0 + 60 * m
        for i, check_id in enumerate(IDS):
            if check_id not in quiet:
                at = start + 0.5 * i / N * 10
                self.feed(PingEvent(event_id=f"p{m}-{i}", check_id=check_id, project_id=PROJECT, kind="success",
                                    received_at=_dt(at)), at)
        for s in range(10, 60, 10):
            self.feed(Tick(event_id=f"t{m}-{s}", at=_dt(start + s), partition=0), start + s)

    def downs(self) -> list[Transition]:
        return [e for e in self.out if isinstance(e, Transition) and e.to_status == "down"]


QUIET = set(IDS[: N // 3])


def _outage(fleet: Fleet, quiet_minutes: int, after: int = 8) -> None:
    for m in range(2):
        fleet.minute(m, set())
    for m in range(2, 2 + quiet_minutes):
        fleet.minute(m, QUIET)
    for m in range(2 + quiet_minutes, 2 + quiet_minutes + after):
        fleet.minute(m, set())


def test_without_the_gate_a_quiet_third_goes_down():
    fleet = Fleet(gate=False)
    _outage(fleet, 5)
    assert {t.check_id for t in fleet.downs()} == QUIET


def test_with_the_gate_a_quiet_third_gives_unknowns_and_no_downs():
    fleet = Fleet(gate=True)
    _outage(fleet, 5)
    assert fleet.downs() == []
    anomalies = [e for e in fleet.out if isinstance(e, IngestAnomaly)]
    assert anomalies and all(a.project_id == PROJECT and a.volume == N - len(QUIET) for a in anomalies)
    assert all(a.baseline == N for a in anomalies)
    assert sum(a.unknown for a in anomalies) >= len(QUIET)
    # volume is back: every check up again, and the quiet ones were never called down
    assert all(fleet.monitor.states[c].base == "up" for c in IDS)


def test_checks_that_stay_quiet_go_down_once_the_rest_of_the_fleet_is_back():
    fleet = Fleet(gate=True)
    for m in range(2):
        fleet.minute(m, set())
    for m in range(2, 6):
        fleet.minute(m, QUIET)
    gone = {IDS[0]}
    for m in range(6, 12):
        fleet.minute(m, gone)  # the path is back; one check really stopped
    assert {t.check_id for t in fleet.downs()} == gone


def test_without_enough_history_the_gate_does_nothing():
    fleet = Fleet(gate=True, days_of_history=2)
    _outage(fleet, 5)
    assert {t.check_id for t in fleet.downs()} == QUIET
    assert not [e for e in fleet.out if isinstance(e, IngestAnomaly)]


def test_a_long_drop_is_not_held_back_for_ever(monkeypatch):
    monkeypatch.setattr(volume, "MAX_ANOMALY_MINUTES", 3)
    fleet = Fleet(gate=True)
    _outage(fleet, 10, after=1)
    assert {t.check_id for t in fleet.downs()} == QUIET


def test_the_gate_replays_to_the_same_events():
    a, b = Fleet(gate=True), Fleet(gate=True)
    _outage(a, 4)
    _outage(b, 4)
    assert a.out == b.out
