"""What the notifier knows about checks at a moment in the log: the registry with each check's
recent configurations (by their records' timestamps), and each check's last few pings.

Why the notifier folds these itself instead of the transition carrying them: the registry is
compacted and small, every service folds it already, and the pings it needs (the last one before
a transition, its first KB) are in the log it reads anyway; the transition stays the monitor's
small, stable contract. The cost, stated: the last pings are kept in memory (``MAX_CHECKS``
checks, ``PINGS_KEPT`` pings each, ``BODY_HEAD`` bytes of body), and written to the compacted topic
``pingstream.notifier-pings`` (key: the check's uuid; value: its kept pings; empty: forgotten)
before the pings' offsets are committed: a restarted notifier reads them back first, so a check
that went down long after its last ping still has that ping in its alert ($BODY, "Last ping")
however often the notifier restarted in between. Its committed offsets are held back too, so that
every transition still to be delivered finds its causing ping again. The cost of the topic: one record
per check per commit that read pings of it (commits come at most every ``COMMIT_EVERY_S``), so at most
one per ping of a check that has channels, none for the others; compaction keeps one per check.
"""

from __future__ import annotations

from collections import OrderedDict, deque

import msgspec

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
        self.heard: set[bytes] = set()  # the pings' record keys (check ids) of the checks that have channels

    def _put_check(self, check: CheckConfig) -> None:
        super()._put_check(check)
        if check.channels:
            self.heard.add(check.id.encode())

    def _drop_check(self, check_id: str) -> None:
        super()._drop_check(check_id)
        self.heard.discard(check_id.encode())

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
        """The check's configuration as of ``timestamp_ms`` (None: it did not exist or was deleted): the last
        version published before that millisecond. One published in the same millisecond is taken as after it:
        records of two topics cannot be ordered within a millisecond, and an edit made as the transition was
        published did not make it (a check renamed and stripped of its channels right after going down still
        alerts, under its old name). When every kept version is that late (compaction removed older ones, or
        the check is that new), the oldest kept one."""
        kept = self.versions.get(check_id)
        if not kept:
            return self.checks.get(check_id)
        found = kept[0][1]
        for ts, check in kept:
            if ts >= timestamp_ms:
                break
            found = check
        return found


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[LastPing]).decode


class LastPings:
    """Each check's last ``PINGS_KEPT`` pings (first ``BODY_HEAD`` bytes of their bodies); ``changes`` and
    ``restore`` carry them across restarts (the records of ``pingstream.notifier-pings``)."""

    def __init__(self, max_checks: int = MAX_CHECKS) -> None:
        self.max_checks = max_checks
        self._by_check: OrderedDict[str, deque[LastPing]] = OrderedDict()
        self.changed: set[str] = set()  # checks whose kept pings changed (or were dropped) since ``changes``

    def add(self, ping: PingEvent) -> None:
        kept = self._by_check.pop(ping.check_id, None)
        if kept is None:
            kept = deque(maxlen=PINGS_KEPT)
            self._make_room()
        elif any(p.event_id == ping.event_id for p in kept):  # read again after a restart
            self._by_check[ping.check_id] = kept
            return
        kept.append(LastPing(ping.event_id, ping.received_at, ping.kind, ping.exit_status, ping.body[:BODY_HEAD]))
        self._by_check[ping.check_id] = kept
        self.changed.add(ping.check_id)

    def _make_room(self) -> None:
        if len(self._by_check) >= self.max_checks:
            dropped, _ = self._by_check.popitem(last=False)
            self.changed.add(dropped)

    def changes(self) -> list[tuple[bytes, bytes]]:
        """(key, value) records of the checks changed since the last call: their kept pings, or an empty
        value for a check no longer kept. The caller writes them before committing the pings they come from
        (and gives them back with ``unsent`` if that write failed)."""
        changed, self.changed = self.changed, set()
        out = []
        for check_id in changed:
            kept = self._by_check.get(check_id)
            out.append((check_id.encode(), _encode(list(kept)) if kept else b""))
        return out

    def __len__(self) -> int:
        return len(self._by_check)

    def unsent(self, records: list[tuple[bytes, bytes]]) -> None:
        self.changed.update(key.decode() for key, _ in records)

    def restore(self, key: bytes, value: bytes) -> None:
        """One record of ``pingstream.notifier-pings``, read back at start (a later one of a check replaces it)."""
        check_id = key.decode()
        self._by_check.pop(check_id, None)
        if value:
            self._make_room()
            self.changed.discard(check_id)
            self._by_check[check_id] = deque(_decode(value), maxlen=PINGS_KEPT)

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
