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
"""

from __future__ import annotations

from statistics import median

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


class VolumeGate:
    def __init__(self) -> None:
        self.counts: dict[str, dict[int, int]] = {}  # project -> minute number -> pings
        self.first: dict[str, int] = {}  # project -> first minute it had a ping
        self.spans: dict[str, tuple[tuple[float, float], ...]] = {}  # project -> recent anomalous minutes
        self.decided: int | None = None  # every minute before this one has been judged
        self.running: dict[str, int] = {}  # project -> consecutive anomalous minutes so far

    def count(self, project_id: str, at: float) -> None:
        minute = int(at // MINUTE_S)
        counts = self.counts.get(project_id)
        if counts is None:
            counts = self.counts[project_id] = {}
            self.first[project_id] = minute
        elif minute < self.first[project_id]:
            self.first[project_id] = minute  # (events slightly out of order)
        counts[minute] = counts.get(minute, 0) + 1

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

    def judge(self, now: float) -> list[tuple[str, int, int, float]]:
        """Judge the minutes the clock completed since the last call: the anomalies found,
        ``(project_id, minute, volume, baseline)``; their spans are kept (``spans_of``)."""
        complete = int(now // MINUTE_S)
        if self.decided is None:
            self.decided = complete  # judge from the first complete minute on
            return []
        if complete <= self.decided:
            return []
        found = []
        for minute in range(max(self.decided, complete - MAX_JUDGED), complete):
            for project_id, counts in self.counts.items():
                base = self.baseline(project_id, minute)
                if base is None:
                    continue
                volume = counts.get(minute, 0)
                if volume >= (1.0 - DROP) * base:
                    self.running.pop(project_id, None)
                    continue
                run = self.running[project_id] = self.running.get(project_id, 0) + 1
                if run <= MAX_ANOMALY_MINUTES:
                    self._mark(project_id, minute)
                    found.append((project_id, minute, volume, base))
        if complete // 60 != self.decided // 60:  # hourly: counts older than the days compared
            self._forget(complete - DAYS * DAY_MINUTES - 1)
        self.decided = complete
        return found

    def _mark(self, project_id: str, minute: int) -> None:
        # One span per minute, also for consecutive ones: a deadline postponed out of one minute
        # into the next anomalous one is postponed again by that minute, not by the whole run.
        span = (minute * MINUTE_S - _EDGE, (minute + 1) * MINUTE_S - _EDGE)
        self.spans[project_id] = (self.spans.get(project_id, ()) + (span,))[-SPANS_KEPT:]

    def _forget(self, before: int) -> None:
        for counts in self.counts.values():
            if counts and min(counts) < before:
                for m in [m for m in counts if m < before]:
                    del counts[m]

    def spans_of(self, project_id: str) -> tuple[tuple[float, float], ...]:
        return self.spans.get(project_id, ())

    def covers(self, project_id: str, at: float) -> tuple[float, float] | None:
        for span in self.spans.get(project_id, ()):
            if span[0] < at <= span[1]:
                return span
        return None
