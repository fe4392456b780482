"""The notifier's last pings per check (notify.history.LastPings) and their records in
pingstream.notifier-pings: what is written is what a restarted notifier reads back."""

from __future__ import annotations

from datetime import timedelta

from notify.alerts import BODY_HEAD
from notify.history import PINGS_KEPT, LastPings
from schemas.events import PingEvent, utcnow


def _ping(check: str, n: int, **fields) -> PingEvent:
    return PingEvent(event_id=f"{check}-{n}", check_id=check, project_id="p", kind=fields.pop("kind", "success"),
                     received_at=utcnow() + timedelta(seconds=n), **fields)


def test_the_records_of_changed_checks_restore_the_same_last_pings():
    kept = LastPings()
    for n in range(PINGS_KEPT + 2):
        kept.add(_ping("a", n, body=b"x" * 5000))
    kept.add(_ping("b", 0, kind="fail", exit_status=2, body=b"boom"))
    records = kept.changes()
    assert sorted(key for key, _ in records) == [b"a", b"b"]
    assert kept.changes() == []  # nothing changed since

    again = LastPings()
    for key, value in records:
        again.restore(key, value)
    assert len(again) == 2 and not again.changed
    last = again.at("a", utcnow() + timedelta(days=1))
    assert last.event_id == f"a-{PINGS_KEPT + 1}" and last.body == b"x" * BODY_HEAD
    assert not again.seen("a", "a-1") and again.seen("a", "a-2")  # the oldest of the PINGS_KEPT kept
    b = again.at("b", utcnow() + timedelta(days=1))
    assert (b.kind, b.exit_status, b.body) == ("fail", 2, b"boom")


def test_a_check_dropped_for_room_is_forgotten_in_its_record_too():
    kept = LastPings(max_checks=2)
    for check in ("a", "b", "c"):
        kept.add(_ping(check, 0))
    records = dict(kept.changes())
    assert records[b"a"] == b"" and records[b"b"] and records[b"c"]
    again = LastPings()
    again.restore(b"a", _ping_record("a"))
    for key, value in records.items():  # in log order: a's empty record comes after its older one
        again.restore(key, value)
    assert again.at("a", utcnow()) is None and len(again) == 2


def test_records_not_written_are_given_back_for_the_next_write():
    kept = LastPings()
    kept.add(_ping("a", 0))
    records = kept.changes()
    kept.unsent(records)
    assert [key for key, _ in kept.changes()] == [b"a"]


def test_a_ping_read_again_after_a_restart_changes_nothing():
    kept = LastPings()
    ping = _ping("a", 0)
    kept.add(ping)
    kept.changes()
    kept.add(ping)
    assert kept.changes() == []


def _ping_record(check: str) -> bytes:
    one = LastPings()
    one.add(_ping(check, 0))
    return dict(one.changes())[check.encode()]
