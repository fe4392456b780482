"""The volume gate (issue #19): a project's partial outage gives unknowns and an ingest_anomaly, not downs.

Driven through ``monitor.state.Monitor`` with real records; the earlier days' volume (the
baseline) is counted into the gate directly, as the monitor would have counted those pings."""

from __future__ import annotations

from datetime import datetime, timezone

from monitor import store, volume
from monitor.clock import StreamClock
from monitor.plans import PlanBook
from monitor.state import Monitor
from runtime.eventlog.base import Record
from runtime.eventlog.sqlite import SqliteEventLog
from schemas.events import TOPIC_PINGS, CheckConfig, CheckUpserted, IngestAnomaly, PingEvent, Tick, Transition, encode

PROJECT = "019ab7ef-0000-7000-8000-000000000001"
T0 = 1_767_225_600.0  # a midnight (UTC)
N = 90  # three networks of 30 (the gate judges a scope from 30 pings a minute)
IDS = [f"00000000-0000-4000-8000-{i:012d}" for i in range(N)]


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


def _addr(i: int, family: int | None) -> str:
    """Check i's source address: three networks, a third of the fleet each (None: unknown)."""
    if family is None:
        return ""
    return f"10.0.{i % 3}.{i + 1}" if family == 4 else f"2001:db8:{i % 3}:{i}::1"


class Fleet:
    def __init__(self, gate: bool, days_of_history: int = 3, family: int | None = None) -> None:
        self.family = family
        plans = PlanBook()
        for check_id in IDS:
            plans.apply(CheckUpserted(event_id="c", check=CheckConfig(
                id=check_id, project_id=PROJECT, created=_dt(T0 - 10 * 86400), timeout_s=60, grace_s=60)))
        self.gate = volume.VolumeGate() if gate else None
        if self.gate is not None:
            for day in range(1, days_of_history + 1):
                for minute in range(-10, 120):
                    for i in range(N):  # every check once a minute
                        self.gate.count(PROJECT, T0 - day * 86400 + minute * 60 + 1,
                                        network=volume.network_of(_addr(i, family)))
        self.monitor = Monitor(plans, StreamClock([0], gap_threshold_s=1e9), self.gate)
        self.offset = 0
        self.out: list = []
        self.state: list[tuple[bytes, bytes]] = []

    def feed(self, event, at: float) -> None:
        self.monitor.fold(Record(TOPIC_PINGS, 0, self.offset, None, encode(event), int(at * 1000)))
        self.offset += 1
        self.monitor.reconfigure()
        self.monitor.advance()
        out, state = self.monitor.take()
        self.out += out
        self.state += state  # what the service writes to the compacted state topic

    def minute(self, m: int, quiet: set[str]) -> None:
        """Minute ``m`` (from T0): every check not in ``quiet`` pings once, ticks every 10 s."""
        start = T0 + 60 * m
        for i, check_id in enumerate(IDS):
            if check_id not in quiet:
                at = start + 0.5 * i / N * 10
                self.feed(PingEvent(event_id=f"p{m}-{i}", check_id=check_id, project_id=PROJECT, kind="success",
                                    received_at=_dt(at), remote_addr=_addr(i, self.family)), at)
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


async def _restarted(fleet: Fleet, tmp_path) -> Monitor:
    """A new monitor on the state the old one wrote (through a real log's state topic and ``store.load``)."""
    log = SqliteEventLog(tmp_path / "log.sqlite3", default_partitions=1)
    await log.start()
    try:
        for key, value in dict(fleet.state).items():  # as compaction leaves it: the last value per key
            await log.produce(store.TOPIC_MONITOR_STATE, value, key=key, partition=0)
        loaded = await store.load(log, {0})
    finally:
        await log.close()
    restarted = Monitor(fleet.monitor.plans, StreamClock([0], gap_threshold_s=1e9), volume.VolumeGate())
    restarted.restore(loaded.states, loaded.clocks, loaded.seen, (loaded.hours, loaded.gates))
    return restarted


async def test_a_restarted_gate_decides_as_the_one_never_stopped(tmp_path):
    steady = Fleet(gate=True)
    _outage(steady, 5)
    fleet = Fleet(gate=True)
    fleet.gate.owned = {0}  # as the service's assignment sets it
    for m in range(3):
        fleet.minute(m, set() if m < 2 else QUIET)  # the drop has begun
    fleet.monitor = await _restarted(fleet, tmp_path)
    fleet.offset -= N - len(QUIET) + 5  # the last minute's records are read again (offsets not committed):
    fleet.minute(2, QUIET)  # counted once
    for m in range(3, 7):
        fleet.minute(m, QUIET)
    for m in range(7, 15):
        fleet.minute(m, set())
    assert fleet.downs() == []
    assert fleet.monitor.gate.counts[PROJECT] == steady.gate.counts[PROJECT]
    anomalies = sorted((e.event_id, e.volume, e.unknown) for e in fleet.out if isinstance(e, IngestAnomaly))
    assert anomalies == sorted((e.event_id, e.volume, e.unknown) for e in steady.out if isinstance(e, IngestAnomaly))
    assert sum(n for _, _, n in anomalies) >= len(QUIET)


async def test_a_fresh_gate_is_blind_and_forgotten_hours_are_deleted(tmp_path):
    """What the persisted history prevents (a gate without it lets the quiet third go down), and the
    hours older than the days compared leave the state topic."""
    fleet = Fleet(gate=True)
    fleet.gate.owned = {0}
    old = T0 - (volume.DAYS + 1) * 86400
    fleet.gate.count(PROJECT, old)  # a ping older than the days compared: forgotten at the next hour
    fleet.minute(0, set())
    blind = Fleet(gate=True)
    blind.monitor = Monitor(blind.monitor.plans, StreamClock([0], gap_threshold_s=1e9), volume.VolumeGate())
    _outage(blind, 5)
    assert {t.check_id for t in blind.downs()} == QUIET
    for m in range(1, 62):  # past the hour: counts older than the days compared are forgotten
        fleet.minute(m, set())
    loaded = await _restarted(fleet, tmp_path)
    hours = {h for (_, _, h) in loaded.gate.hours}
    assert hours and int(old // 3600) not in hours and min(hours) == int((T0 - 3 * 86400) // 3600) - 1
    assert (store.volume_record((0, PROJECT, int(old // 3600)), None)) in fleet.state  # its tombstone
    assert loaded.gate.counts[PROJECT] == fleet.gate.counts[PROJECT]


# --- per source network ----------------------------------------------------------------

NET0 = {IDS[i] for i in range(N) if i % 3 == 0}  # the checks of the first network
DEAD = IDS[1]  # of the second network: it really stops, with the outage


def _network_outage(fleet: Fleet, quiet_minutes: int = 5, after: int = 8) -> None:
    for m in range(2):
        fleet.minute(m, set())
    for m in range(2, 2 + quiet_minutes):
        fleet.minute(m, NET0 | {DEAD})
    for m in range(2 + quiet_minutes, 2 + quiet_minutes + after):
        fleet.minute(m, {DEAD})


def test_network_of_groups_ipv4_by_24_and_ipv6_by_48():
    assert volume.network_of("10.1.2.3") == "10.1.2.0/24"
    assert volume.network_of("::ffff:10.1.2.3") == "10.1.2.0/24"
    assert volume.network_of("2001:db8:1:2::7") == "2001:db8:1::/48"
    assert volume.network_of("[2001:db8:1:2::7]") == "2001:db8:1::/48"
    assert volume.network_of("") is None and volume.network_of("not an address") is None


def test_one_quiet_network_gives_unknowns_for_its_checks_and_the_others_alert_as_usual():
    fleet = Fleet(gate=True, family=4)
    _network_outage(fleet)
    downs = fleet.downs()
    assert [t.check_id for t in downs] == [DEAD]
    assert downs[0].at.timestamp() <= T0 + 7 * 60  # on time, inside the outage
    anomalies = [e for e in fleet.out if isinstance(e, IngestAnomaly)]
    assert anomalies and {a.network for a in anomalies} == {"10.0.0.0/24"}  # the project was not held whole
    assert all(a.volume == 0 and a.baseline == N // 3 for a in anomalies)
    assert sum(a.unknown for a in anomalies) >= len(NET0)
    assert all(fleet.monitor.states[c].base == "up" for c in NET0)


def test_without_addresses_the_whole_project_is_held_and_a_real_stop_waits():
    fleet = Fleet(gate=True)
    _network_outage(fleet)
    downs = fleet.downs()
    assert [t.check_id for t in downs] == [DEAD] and downs[0].at.timestamp() > T0 + 7 * 60
    assert {a.network for a in fleet.out if isinstance(a, IngestAnomaly)} == {None}


def test_every_network_falling_holds_the_whole_project():
    fleet = Fleet(gate=True, family=4)
    for m in range(2):
        fleet.minute(m, set())
    everyone_but = set(IDS[3:])  # each network keeps one check: all three fall
    for m in range(2, 6):
        fleet.minute(m, everyone_but)
    for m in range(6, 14):
        fleet.minute(m, set())
    assert fleet.downs() == []
    assert None in {a.network for a in fleet.out if isinstance(a, IngestAnomaly)}


def test_the_networks_kept_per_project_are_bounded_and_quiet_ones_forgotten():
    gate = volume.VolumeGate()
    for k in range(3 * volume.NETWORKS_KEPT):
        gate.count(PROJECT, T0 + k, network=volume.network_of(f"10.{k}.0.1"))
    assert len(gate.networks[PROJECT]) == volume.NETWORKS_KEPT
    assert len([s for s in gate.counts if s != PROJECT]) == volume.NETWORKS_KEPT
    gate.judge(T0)
    gate.judge(T0 + (volume.DAYS + 1) * 86400)  # days later: every network's pings are older than compared
    assert gate.networks[PROJECT] == set() and list(gate.counts) == [PROJECT]
    gate.count(PROJECT, T0 + (volume.DAYS + 1) * 86400, network="10.99.0.0/24")
    assert gate.networks[PROJECT] == {"10.99.0.0/24"}


async def test_a_restarted_gate_keeps_its_networks_ipv6_too(tmp_path):
    steady = Fleet(gate=True, family=6)
    _network_outage(steady)
    fleet = Fleet(gate=True, family=6)
    fleet.gate.owned = {0}
    for m in range(3):
        fleet.minute(m, set() if m < 2 else NET0 | {DEAD})
    fleet.monitor = await _restarted(fleet, tmp_path)
    assert fleet.monitor.gate.networks == steady.gate.networks == {PROJECT: {
        "2001:db8::/48", "2001:db8:1::/48", "2001:db8:2::/48"}}
    assert fleet.monitor.states[IDS[0]].network == "2001:db8::/48"
    for m in range(3, 7):
        fleet.minute(m, NET0 | {DEAD})
    for m in range(7, 15):
        fleet.minute(m, {DEAD})
    assert [t.check_id for t in fleet.downs()] == [DEAD]
    anomalies = sorted((e.event_id, e.network, e.unknown) for e in fleet.out if isinstance(e, IngestAnomaly))
    assert anomalies == sorted((e.event_id, e.network, e.unknown) for e in steady.out if isinstance(e, IngestAnomaly))
