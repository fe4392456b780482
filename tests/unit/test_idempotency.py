"""Idempotency-Key: the key's rules, derived ids, and a retry folded once by the projector and the monitor."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from checks import idempotency
from checks.idempotency import BadKey, RecentIds, is_derived, parse_key, ping_event_id
from monitor import store
from monitor.clock import StreamClock
from monitor.plans import PlanBook
from monitor.state import Monitor
from projector.fold import fold
from runtime.eventlog.base import Record
from schemas.events import TOPIC_PINGS, PingEvent, encode, uuid7

CHECK = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
OTHER = "5bf66975-d4c7-4bf5-bcc8-b8d8a82ea278"
PROJECT = "019ab7ef-0000-7000-8000-000000000001"
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
DAY_S = 24 * 3600


def ping(kind: str, seconds: float, key: str | None = None, check: str = CHECK) -> PingEvent:
    return PingEvent(
        event_id=uuid7() if key is None else ping_event_id(check, key), check_id=check, project_id=PROJECT,
        kind=kind, received_at=T0 + timedelta(seconds=seconds),
    )


# --- the key ------------------------------------------------------------------------------


def test_it_takes_a_printable_key_and_unquotes_a_structured_field_string():
    assert parse_key("8e03978e-40d5-43e8-bc93-6894a57f9324") == "8e03978e-40d5-43e8-bc93-6894a57f9324"
    assert parse_key(' "job 42/run 7" ') == "job 42/run 7"
    assert parse_key("x" * 255) == "x" * 255


@pytest.mark.parametrize("value, message", [
    ("x" * 256, "idempotency key too long"),
    ("", "invalid idempotency key"),
    ('""', "invalid idempotency key"),
    ("a\x01b", "invalid idempotency key"),
    ("a\x7fb", "invalid idempotency key"),
    ("caf\u00e9", "invalid idempotency key"),
])
def test_it_rejects_long_empty_and_control_character_keys(value, message):
    with pytest.raises(BadKey, match=message):
        parse_key(value)


def test_the_event_id_is_derived_from_check_and_key_only():
    first = ping_event_id(CHECK, "k1")
    assert first == ping_event_id(CHECK, "k1") and is_derived(first)
    assert len({first, ping_event_id(CHECK, "k2"), ping_event_id(OTHER, "k1")}) == 3
    assert not is_derived(uuid7())


def key_id(name: str) -> str:
    return ping_event_id(CHECK, name)


def test_recent_ids_hold_a_day_and_a_bounded_number(monkeypatch):
    a, b = key_id("a"), key_id("b")
    recent = RecentIds()
    recent.add(a, 0.0)
    assert recent.repeat(a, DAY_S) and recent.repeat(a, -60.0)  # either side: edges' clocks differ
    assert not recent.repeat(a, DAY_S + 1) and not recent.repeat(b, 1.0)
    assert recent.add(b, 2 * DAY_S) == [a]  # past the window: forgotten
    monkeypatch.setattr(idempotency, "MAX_KEYS_PER_CHECK", 100)
    dropped = []
    for i in range(101):
        dropped += recent.add(key_id(f"k{i}"), 2 * DAY_S + i)
    assert dropped == [b] + [key_id(f"k{i}") for i in range(10)]  # over the bound: the oldest tenth goes
    assert len(recent) == 91 and recent.repeat(key_id("k100"), 2 * DAY_S + 100)
    assert recent.ids() == [key_id(f"k{i}") for i in range(10, 101)]


def test_a_key_applied_again_is_newest_again():
    recent = RecentIds()
    recent.add(key_id("k0"), 0.0)
    for i in range(1, 5):
        recent.add(key_id(f"k{i}"), DAY_S + i)
    recent.add(key_id("k0"), DAY_S + 10.0)  # reused after the window
    assert len(recent) == 5 and recent.ids() == [key_id(f"k{i}") for i in (1, 2, 3, 4, 0)]
    assert recent.repeat(key_id("k0"), DAY_S + 20.0)
    assert recent.add(key_id("k5"), 2 * DAY_S + 5) == [key_id(f"k{i}") for i in (1, 2, 3, 4)]
    assert recent.ids() == [key_id("k0"), key_id("k5")]


def test_recent_ids_agree_with_a_dict_of_them(monkeypatch):
    """Random adds and lookups over a small id space, checked against the plain dict the class once was."""
    import random

    monkeypatch.setattr(idempotency, "MAX_KEYS_PER_CHECK", 300)
    rng = random.Random(5)
    recent, model, at = RecentIds(), {}, 0.0
    pool = [key_id(f"p{i}") for i in range(600)]
    for _ in range(20_000):
        at += rng.choice((1.0, 30.0, 600.0, 3600.0))
        event_id = rng.choice(pool)
        first = model.get(event_id)
        assert recent.repeat(event_id, at) == (first is not None and abs(at - first) <= DAY_S)
        if rng.random() < 0.5:
            dropped = recent.add(event_id, at)
            model.pop(event_id, None)
            model[event_id] = at
            for gone in dropped:
                del model[gone]
            assert recent.ids() == list(model) and len(recent) == len(model) <= 300


def test_recent_ids_take_under_48_bytes_an_id():
    import tracemalloc

    ids = [key_id(f"m{i}") for i in range(10_000)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    recent = RecentIds()
    for i, event_id in enumerate(ids):
        recent.add(event_id, float(i))
    size = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(recent) == 10_000 and size / 10_000 < 48, size / 10_000


# --- the projector's fold -----------------------------------------------------------------


def fold_all(events, states=None):
    states = {} if states is None else states
    return states, fold(states, [(e, i) for i, e in enumerate(events)])


def test_the_fold_stores_a_retried_ping_once():
    first, retry = ping("success", 0, "k1"), ping("success", 3600, "k1")
    states, rows = fold_all([first, retry])
    assert [r[0] for r in rows.pings] == [first.event_id]
    assert states[CHECK].n_pings == 1 and states[CHECK].last_ping == T0
    assert rows.ping_keys == [(first.event_id, CHECK, T0, 1)]


def test_the_fold_counts_pings_with_different_keys_and_without_a_key():
    states, rows = fold_all([ping("success", 0, "k1"), ping("success", 1, "k2"), ping("success", 2),
                             ping("success", 3)])
    assert len(rows.pings) == 4 and states[CHECK].n_pings == 4 and len(rows.ping_keys) == 2


def test_a_retried_start_does_not_open_the_run_again():
    states, rows = fold_all([ping("start", 0, "s"), ping("success", 10, "ok"), ping("start", 20, "s")])
    assert [r[4] for r in rows.pings] == ["start", "success"]
    assert len(rows.runs) == 1 and states[CHECK].run_start is None and states[CHECK].last_duration_s == 10.0


def test_a_key_reused_after_a_day_is_a_new_ping():
    states, rows = fold_all([ping("success", 0, "k1"), ping("success", DAY_S + 1, "k1")])
    assert len(rows.pings) == 2 and states[CHECK].n_pings == 2


def test_the_fold_remembers_keys_across_batches_and_per_check():
    states, _ = fold_all([ping("success", 0, "k1")])
    rows = fold(states, [(ping("success", 7200, "k1"), 1), (ping("success", 7200, "k1", check=OTHER), 2)])
    assert [r[1] for r in rows.pings] == [OTHER]
    assert states[CHECK].n_pings == 1 and states[OTHER].n_pings == 1


# --- the monitor --------------------------------------------------------------------------


def record(event: PingEvent, offset: int, partition: int = 0) -> Record:
    return Record(TOPIC_PINGS, partition, offset, event.check_id.encode(), encode(event), 0)


def new_monitor() -> Monitor:
    return Monitor(PlanBook(), StreamClock([0], 5.0))


def statuses(monitor: Monitor) -> list[tuple[str, str]]:
    out, _ = monitor.take()
    return [(t.from_status, t.to_status) for t in out if hasattr(t, "to_status")]


def test_the_monitor_applies_a_retried_ping_once():
    monitor = new_monitor()
    for offset, event in enumerate([ping("start", 0, "s"), ping("success", 10, "ok"), ping("start", 20, "s"),
                                    ping("success", 30, "ok")]):
        monitor.fold(record(event, offset))
    assert statuses(monitor) == [("new", "started"), ("started", "up")]
    state = monitor.states[CHECK]
    assert state.last_start is None and state.offset == 1
    assert state.last_ping == (T0 + timedelta(seconds=10)).timestamp()  # the retry did not move it


def test_the_monitor_writes_what_it_remembers_and_restores_it():
    monitor = new_monitor()
    first = ping("success", 0, "k1")
    monitor.fold(record(first, 0))
    _, records = monitor.take()
    seen = {k: v for k, v in records if k.startswith(b"seen:")}
    assert list(seen) == [store.seen_key(first.event_id)]

    # A restart: the seen record is kept because the state written holds its offset.
    restarted = new_monitor()
    state = monitor.states[CHECK]
    restarted.restore({CHECK: state}, {}, {first.event_id: store._seen_decoder.decode(seen[store.seen_key(first.event_id)])})
    restarted.fold(record(ping("success", 3600, "k1"), 5))
    assert restarted.states[CHECK] is state


def test_a_seen_record_ahead_of_the_state_is_not_trusted():
    # Crash after the seen record was written but before the check's state: the ping is read again.
    monitor = new_monitor()
    first = ping("success", 0, "k1")
    seen = {first.event_id: store.SeenRecord(CHECK, first.received_at.timestamp(), 0, 3)}
    monitor.restore({}, {}, seen)
    monitor.fold(record(first, 3))
    assert statuses(monitor) == [("new", "up")]


async def test_the_monitor_loads_seen_records_with_one_check_id_string_per_check():
    other = "1f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
    ids = [ping_event_id(check, f"k{i}") for i in range(6) for check in (CHECK, other)]
    values = [store.encode_seen(store.SeenRecord(CHECK if i % 2 == 0 else other, 100.0 + i, i % 3, i))
              for i in range(len(ids))]
    records = [Record(store.TOPIC_MONITOR_STATE, 0, i, store.seen_key(e), v, 0) for i, (e, v) in enumerate(zip(ids, values))]
    records.append(Record(store.TOPIC_MONITOR_STATE, 0, 99, store.seen_key(ids[0]), b"", 0))  # forgotten since

    class Log:
        async def read_to_end(self, topic, apply, max_records=50_000):
            apply(records)
            return len(records)

    loaded = await store.load(Log(), {0, 1})  # partition 2 is another monitor's
    kept = [i for i in range(1, len(ids)) if i % 3 != 2]
    assert sorted(loaded.seen) == sorted(ids[i] for i in kept)
    for i in kept:
        s = loaded.seen[ids[i]]
        assert (s.check_id, s.at, s.partition, s.offset) == (CHECK if i % 2 == 0 else other, 100.0 + i, i % 3, i)
    assert len({id(s.check_id) for s in loaded.seen.values()}) == 2


def test_the_monitor_restores_keys_in_the_order_they_were_applied():
    monitor = new_monitor()
    first = ping("success", 0)
    monitor.fold(record(first, 10))
    state = monitor.states[CHECK]
    at = first.received_at.timestamp()
    keys = [ping_event_id(CHECK, f"k{i}") for i in range(5)]
    seen = {k: store.SeenRecord(CHECK, at - 10 * i, 0, i) for i, k in enumerate(keys)}  # newest first
    restarted = new_monitor()
    restarted.restore({CHECK: state}, {}, seen)
    assert restarted.recent[CHECK].ids() == keys[::-1]
