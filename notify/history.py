"""What the notifier knows about checks at a moment in the log: the registry with each check's
recent configurations (by their records' timestamps), and each check's last few pings.

Why the notifier folds these itself instead of the transition carrying them: the registry is
compacted and small, every service folds it already, and the pings it needs (the last one before
a transition, its first KB) are in the log it reads anyway; the transition stays the monitor's
small, stable contract. The cost, stated: the last pings are kept in memory (``MAX_CHECKS``
checks, ``PINGS_KEPT`` pings each, ``BODY_HEAD`` bytes of body) and, after a restart, are known
again from where the notifier resumes reading (its committed offsets are held back so that every
transition still to be delivered finds its causing ping again).
"""

from __future__ import annotations

from collections import OrderedDict, deque

from runtime.registry import Registry
from schemas.events import CheckConfig, CheckDeleted, CheckUpserted, PingEvent

from .alerts import BODY_HEAD, LastPing

VERSIONS_KEPT = 16  # configurations kept per check
PINGS_KEPT = 3  # pings kept per check (a transition's cause may be followed by later pings)
MAX_CHECKS = 100_000  # checks whose last pings are kept (least recently pinged dropped first): at most ~300 MB of bodies


class History(Registry):
    def __init__(self) -> None:
        super().__init__()
        self.versions: dict[str, deque[tuple[int, CheckConfig | None]]] = {}

    def apply(self, event, timestamp_ms: int | None = None) -> None:
        super().apply(event)
        if isinstance(event, CheckUpserted):
            self._version(event.check.id, timestamp_ms, event.check)
        elif isinstance(event, CheckDeleted):
            self._version(event.check_id, timestamp_ms, None)

    def _version(self, check_id: str, timestamp_ms: int | None, check: CheckConfig | None) -> None:
        kept = self.versions.get(check_id)
        if kept is None:
            kept = self.versions[check_id] = deque(maxlen=VERSIONS_KEPT)
        kept.append((timestamp_ms or 0, check))

    def check_at(self, check_id: str, timestamp_ms: int) -> CheckConfig | None:
        """The check's configuration as of ``timestamp_ms`` (None: it did not exist or was deleted).
        When every kept version is later (compaction removed older ones), the oldest kept one."""
        kept = self.versions.get(check_id)
        if not kept:
            return self.checks.get(check_id)
        found = kept[0][1]
        for ts, check in kept:
            if ts > timestamp_ms:
                break
            found = check
        return found


class LastPings:
    """Each check's last ``PINGS_KEPT`` pings (first ``BODY_HEAD`` bytes of their bodies)."""

    def __init__(self, max_checks: int = MAX_CHECKS) -> None:
        self.max_checks = max_checks
        self._by_check: OrderedDict[str, deque[LastPing]] = OrderedDict()

    def add(self, ping: PingEvent) -> None:
        kept = self._by_check.pop(ping.check_id, None)
        if kept is None:
            kept = deque(maxlen=PINGS_KEPT)
            if len(self._by_check) >= self.max_checks:
                self._by_check.popitem(last=False)
        elif any(p.event_id == ping.event_id for p in kept):  # read again after a restart
            self._by_check[ping.check_id] = kept
            return
        kept.append(LastPing(ping.event_id, ping.received_at, ping.kind, ping.exit_status, ping.body[:BODY_HEAD]))
        self._by_check[ping.check_id] = kept

    def seen(self, check_id: str, event_id: str) -> bool:
        return any(p.event_id == event_id for p in self._by_check.get(check_id, ()))

    def at(self, check_id: str, when, cause_event_id: str = "") -> LastPing | None:
        """The cause, if known; else the last ping received at or before ``when``."""
        kept = self._by_check.get(check_id, ())
        for p in kept:
            if cause_event_id and p.event_id == cause_event_id:
                return p
        before = [p for p in kept if p.at <= when]
        return before[-1] if before else None
