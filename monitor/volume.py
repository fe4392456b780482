"""The volume gate: no false downs when part of the fleet goes quiet.

The stream clock stops false downs when pingstream itself was deaf; a partial outage is
different (a network path from one region breaks, a share of the pings stops, the clock keeps
moving). Like Sentry's volume anomaly detection, the gate counts each project's pings per
minute of stream time and compares a minute, once the clock has passed it, with the same
minute on earlier days: the median of up to ``DAYS`` earlier days, with at least
``MIN_DAYS`` of them and a median of at least ``MIN_BASELINE`` pings. A minute whose volume
fell by more than ``DROP`` of that is an anomaly: the project's deadlines in it have an
unknown outcome instead of firing (``monitor.transitions._unknown``: a check whose ping was
due moves on to its next period, a run's outcome is forgotten), counted in the
``IngestAnomaly`` event. Nothing goes down for a ping that may have been lost on the way;
a check that really stopped misses its next period too, after volume has returned, and goes
down then. A drop lasting longer than ``MAX_ANOMALY_MINUTES`` is not held back any further:
from then on its deadlines fire (a lasting change of the fleet is not an outage to wait
out; the baseline follows it after a few days).

Pure bookkeeping, no I/O; the monitor holds it when ``PINGSTREAM_VOLUME_GATE`` is on. With
the gate on, deadlines fire once their minute is complete (up to a minute later than without).

Per source network, where the pings carry the client's address (``PingEvent.remote_addr``): the
gate also counts each project's pings per network (``network_of``: the /24 of an IPv4 address,
the /48 of an IPv6 one, a site's usual allocation; a /64 is one LAN, too fine to see a region's
path break), for at most ``NETWORKS_KEPT`` networks per project (the first seen; a network without
pings in the days compared is forgotten and frees its place; pings of networks beyond the cap
count for the project only). Each tracked network is judged like a project, against its own
same minute on earlier days. When some of a project's networks fall abnormally while others
stay, the drop is theirs: only checks whose latest ping came from such a network
(``CheckState.network``) have unknown outcomes, each network named in its own ``IngestAnomaly``;
the project's other checks are judged (and go down) as usual. When the project falls and no
network explains it (addresses unknown, or every network fell), the whole project is unknown,
as before. Memory: a tracked network costs what a project costs (its minute counts for the days
compared).

A restart gives the same decisions: the gate's history is kept with the monitor's state
(``monitor.store``, the compacted state topic), per pings partition, so whoever owns a partition
next takes over its counts: one ``HourRecord`` per partition, project and hour (the minute counts,
and the project's first minute), and one ``GateRecord`` per partition (the last offset counted, so
a batch read again is not counted twice; the minutes judged; the running drops and their spans).
Hours older than the days compared are deleted (tombstones) as they are forgotten.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from statistics import median

import msgspec

MINUTE_S = 60.0
DAY_MINUTES = 1440
DAYS = 7
MIN_DAYS = 3
MIN_BASELINE = 30
DROP = 0.25
SPANS_KEPT = 32  # per project: the recent anomalous minutes (a postponed deadline only meets recent ones)
MAX_ANOMALY_MINUTES = 60  # a longer drop is not held back: its deadlines fire (downs) from then on
MAX_JUDGED = DAY_MINUTES  # minutes judged in one step (after a long silence, the rest is not judged)
_EDGE = 1e-6  # spans are (start, end] as ingest gaps are: a minute is (m - ε, m + 60 - ε]
NETWORKS_KEPT = 16  # per project
IPV4_PREFIX = 24
IPV6_PREFIX = 48
_SEP = " "  # a network's scope: "<project id> <network>" (project ids have no space)


@lru_cache(maxsize=65536)
def network_of(addr: str) -> str | None:
    """The source network a client address belongs to (``10.1.2.0/24``, ``2001:db8:1::/48``); None
    for an empty or unparsable address."""
    if not addr:
        return None
    try:
        ip = ipaddress.ip_address(addr.strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = IPV4_PREFIX if ip.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def scope_of(project_id: str, network: str | None) -> str:
    """The key the gate counts under: the project, or one of its networks."""
    return project_id if network is None else f"{project_id}{_SEP}{network}"


def split_scope(scope: str) -> tuple[str, str | None]:
    project_id, _, network = scope.partition(_SEP)
    return project_id, network or None


class HourRecord(msgspec.Struct, frozen=True, array_like=True):
    """One partition's pings of one project in one hour, per minute; ``first``: the project's first minute."""

    first: int
    counts: list[int]


class GateRecord(msgspec.Struct, frozen=True, array_like=True):
    """What the gate had done when a partition's state was written."""

    offset: int  # the last record of the partition counted
    decided: int | None
    running: dict[str, int] = {}
    spans: dict[str, list[tuple[float, float]]] = {}


class VolumeGate:
    def __init__(self) -> None:
        # Keyed by scope (``scope_of``): a project, or one of its networks.
        self.counts: dict[str, dict[int, int]] = {}  # scope -> minute number -> pings
        self.first: dict[str, int] = {}  # scope -> first minute it had a ping
        self.spans: dict[str, tuple[tuple[float, float], ...]] = {}  # scope -> recent anomalous minutes
        self.decided: int | None = None  # every minute before this one has been judged
        self.running: dict[str, int] = {}  # scope -> consecutive anomalous minutes so far
        self.networks: dict[str, set[str]] = {}  # project -> its tracked networks (at most NETWORKS_KEPT)
        # What is persisted: the counts per (partition, project, hour), the last offset counted per
        # partition, and which hours and partitions changed since the last ``records()``.
        self.hours: dict[tuple[int, str, int], list[int]] = {}
        self.offsets: dict[int, int] = {}
        self.dirty: set[tuple[int, str, int]] = set()
        self.gone: set[tuple[int, str, int]] = set()
        self.touched: set[int] = set()
        self.owned: set[int] = set()  # the partitions whose GateRecord this gate writes

    def count(self, project_id: str, at: float, partition: int = 0, offset: int | None = None,
              network: str | None = None) -> None:
        """One ping of the project (from ``network``, if known) at stream time ``at``."""
        if offset is not None:
            if offset <= self.offsets.get(partition, -1):
                return  # read again after a restart: counted before the state was written
            self.offsets[partition] = offset
        self.touched.add(partition)
        minute = int(at // MINUTE_S)
        self._add(project_id, minute, partition)
        if network is not None:
            tracked = self.networks.get(project_id)
            if tracked is None:
                tracked = self.networks[project_id] = set()
            if network in tracked or len(tracked) < NETWORKS_KEPT:
                tracked.add(network)
                self._add(scope_of(project_id, network), minute, partition)

    def _add(self, scope: str, minute: int, partition: int) -> None:
        counts = self.counts.get(scope)
        if counts is None:
            counts = self.counts[scope] = {}
            self.first[scope] = minute
        elif minute < self.first[scope]:
            self.first[scope] = minute  # (events slightly out of order)
        counts[minute] = counts.get(minute, 0) + 1
        key = (partition, scope, minute // 60)
        hour = self.hours.get(key)
        if hour is None:
            hour = self.hours[key] = [0] * 60
            self.gone.discard(key)
        hour[minute % 60] += 1
        self.dirty.add(key)

    # --- persistence ---

    def records(self) -> list[tuple[tuple[int, str, int] | int, HourRecord | GateRecord | None]]:
        """What changed since the last call: ``((partition, project, hour), HourRecord or None: deleted)``
        and ``(partition, GateRecord)``; resets the changes."""
        out: list = [(key, HourRecord(self.first[key[1]], self.hours[key])) for key in self.dirty]
        out += [(key, None) for key in self.gone]
        if self.touched:
            running = dict(self.running)
            spans = {p: list(s) for p, s in self.spans.items()}
            out += [(p, GateRecord(self.offsets.get(p, -1), self.decided, running, spans)) for p in self.touched]
        self.dirty, self.gone, self.touched = set(), set(), set()
        return out

    def restore(self, owned, hours: dict[tuple[int, str, int], HourRecord], gates: dict[int, GateRecord]) -> None:
        """Start again from the history kept for the partitions ``owned`` now (``hours`` and ``gates`` of those)."""
        self.__init__()
        self.owned = set(owned)
        for (partition, project_id, hour), record in hours.items():
            self.hours[(partition, project_id, hour)] = list(record.counts)
            counts = self.counts.setdefault(project_id, {})
            for i, n in enumerate(record.counts):
                if n:
                    counts[hour * 60 + i] = counts.get(hour * 60 + i, 0) + n
            self.first[project_id] = min(self.first.get(project_id, record.first), record.first)
            project, network = split_scope(project_id)
            if network is not None:
                self.networks.setdefault(project, set()).add(network)
        decided = [g.decided for g in gates.values() if g.decided is not None]
        self.decided = min(decided) if decided else None
        for partition, g in gates.items():
            self.offsets[partition] = g.offset
            for project_id, n in g.running.items():
                self.running[project_id] = max(self.running.get(project_id, 0), n)
            for project_id, spans in g.spans.items():
                merged = sorted(set(self.spans.get(project_id, ())) | {tuple(s) for s in spans})
                self.spans[project_id] = tuple(merged[-SPANS_KEPT:])

    def baseline(self, project_id: str, minute: int) -> float | None:
        """The median volume of ``minute`` on the earlier days the project was known; None: too little history."""
        counts, first = self.counts.get(project_id), self.first.get(project_id)
        if counts is None:
            return None
        samples = [counts.get(m, 0) for m in (minute - k * DAY_MINUTES for k in range(1, DAYS + 1)) if m >= first]
        if len(samples) < MIN_DAYS:
            return None
        value = median(samples)
        return value if value >= MIN_BASELINE else None

    def complete_until(self, now: float) -> float:
        """Deadlines before this moment may fire: every minute before it has been judged."""
        return int(now // MINUTE_S) * MINUTE_S

    def judge(self, now: float) -> list[tuple[str, str | None, int, int, float]]:
        """Judge the minutes the clock completed since the last call: the anomalies found,
        ``(project_id, network or None: the whole project, minute, volume, baseline)``; their
        spans are kept (``spans_of``)."""
        complete = int(now // MINUTE_S)
        if self.decided is None:
            self.decided = complete  # judge from the first complete minute on
            self.touched.update(self.owned)
            return []
        if complete <= self.decided:
            return []
        found = []
        for minute in range(max(self.decided, complete - MAX_JUDGED), complete):
            verdicts: dict[str, tuple[int, float, bool]] = {}  # scope -> (volume, baseline, fell)
            for scope, counts in self.counts.items():
                base = self.baseline(scope, minute)
                if base is not None:
                    volume = counts.get(minute, 0)
                    verdicts[scope] = (volume, base, volume < (1.0 - DROP) * base)
            for scope, (volume, base, fell) in verdicts.items():
                project_id, network = split_scope(scope)
                if not fell or (network is None and self._explained(project_id, verdicts)):
                    self.running.pop(scope, None)
                    continue
                run = self.running[scope] = self.running.get(scope, 0) + 1
                if run <= MAX_ANOMALY_MINUTES:
                    self._mark(scope, minute)
                    found.append((project_id, network, minute, volume, base))
        if complete // 60 != self.decided // 60:  # hourly: counts older than the days compared
            self._forget(complete - DAYS * DAY_MINUTES - 1)
        self.decided = complete
        self.touched.update(self.owned)
        return found

    def _explained(self, project_id: str, verdicts: dict[str, tuple[int, float, bool]]) -> bool:
        """Whether the project's drop is some of its networks' (they fell, others stayed): then
        only their checks are unknown, not the whole project's."""
        fell = stayed = False
        for network in self.networks.get(project_id, ()):
            verdict = verdicts.get(scope_of(project_id, network))
            if verdict is not None:
                fell, stayed = fell or verdict[2], stayed or not verdict[2]
        return fell and stayed

    def _mark(self, project_id: str, minute: int) -> None:
        self.touched.update(self.owned)  # the spans are in every owned partition's GateRecord
        # One span per minute, also for consecutive ones: a deadline postponed out of one minute
        # into the next anomalous one is postponed again by that minute, not by the whole run.
        span = (minute * MINUTE_S - _EDGE, (minute + 1) * MINUTE_S - _EDGE)
        self.spans[project_id] = (self.spans.get(project_id, ()) + (span,))[-SPANS_KEPT:]

    def _forget(self, before: int) -> None:
        for counts in self.counts.values():
            if counts and min(counts) < before:
                for m in [m for m in counts if m < before]:
                    del counts[m]
        for scope in [s for s, counts in self.counts.items() if not counts and _SEP in s]:
            # A network without pings in the days compared: forgotten, its place freed.
            project_id, network = split_scope(scope)
            del self.counts[scope]
            self.first.pop(scope, None)
            self.running.pop(scope, None)
            self.spans.pop(scope, None)
            self.networks.get(project_id, set()).discard(network)
        for key in [k for k in self.hours if (k[2] + 1) * 60 <= before]:
            del self.hours[key]
            self.dirty.discard(key)
            self.gone.add(key)

    def spans_of(self, project_id: str, network: str | None = None) -> tuple[tuple[float, float], ...]:
        """The anomalous minutes that hold a check of the project whose latest ping came from ``network``."""
        spans = self.spans.get(project_id, ())
        if network is not None:
            own = self.spans.get(scope_of(project_id, network))
            if own:
                spans = spans + own
        return spans

    def covers(self, project_id: str, at: float, network: str | None = None) -> str | None:
        """The scope whose anomalous minute holds a check's deadline at ``at``: the project's, or its network's."""
        for scope in (project_id,) if network is None else (project_id, scope_of(project_id, network)):
            for span in self.spans.get(scope, ()):
                if span[0] < at <= span[1]:
                    return scope
        return None
