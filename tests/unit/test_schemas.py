"""The topic documents' example payloads decode; the codec is forward compatible."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import events

TOPICS = Path(events.__file__).parent / "topics"
EXPECTED = {
    events.TOPIC_PINGS: {"ping", "paused", "resumed", "tick"},
    events.TOPIC_CHECKS: {"project_upserted", "project_deleted", "check_upserted", "check_deleted",
                          "channel_upserted", "channel_deleted"},
    events.TOPIC_TRANSITIONS: {"transition", "flapping", "broken", "ingest_gap", "ingest_anomaly"},
    events.TOPIC_DELIVERIES: {"delivery"},
}


def _examples(topic: str) -> list[bytes]:
    text = (TOPICS / f"{topic}.md").read_text()
    return [block.encode() for block in re.findall(r"```json\n(.*?)\n```", text, re.S)]


@pytest.mark.parametrize("topic", sorted(EXPECTED))
def test_every_example_decodes_and_every_type_has_one(topic):
    examples = _examples(topic)
    decoded = [events.decode(raw) for raw in examples]
    assert all(e is not None for e in decoded)
    assert {type(e).__struct_config__.tag for e in decoded} == EXPECTED[topic]
    for event in decoded:
        assert events.decode(events.encode(event)) == event


def test_it_skips_unknown_event_types():
    assert events.decode(b'{"type":"from_the_future","event_id":"x","anything":1}') is None


def test_it_rejects_garbage():
    with pytest.raises(msgspec.DecodeError):
        events.decode(b"\xff not json")
    with pytest.raises(msgspec.ValidationError):
        events.decode(b'{"type":"ping","event_id":"x"}')


def test_uuid7_is_time_ordered_and_versioned():
    import uuid

    a = events.uuid7(now_ns=1_000_000_000_000)
    b = events.uuid7(now_ns=2_000_000_000_000)
    assert a < b
    assert uuid.UUID(a).version == 7
    for _ in range(2000):  # RFC 9562's layout: the ms timestamp, version 7, the variant's two bits 10
        ns = time.time_ns()
        u = uuid.UUID(events.uuid7(now_ns=ns))
        assert (u.version, u.variant, u.int >> 80) == (7, uuid.RFC_4122, ns // 1_000_000)


def test_stable_id_is_deterministic():
    assert events.stable_id("check", "p", "slug") == events.stable_id("check", "p", "slug")
    assert events.stable_id("check", "p", "slug") != events.stable_id("check", "p", "slug2")


@settings(max_examples=500, deadline=None)
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",))), min_size=1, max_size=5))
def test_stable_id_is_uuid5_of_the_parts(parts):
    """The ids stored so far are ``uuid.uuid5``'s: the formatting done by hand must give the same string."""
    assert events.stable_id(*parts) == str(uuid.uuid5(events._NAMESPACE, "\x1f".join(parts)))


def test_uuid7_random_bits_are_never_shared_by_threads_or_a_forked_child():
    import os
    import threading
    import uuid

    from schemas.events import uuid7

    ids: list[str] = []
    threads = [threading.Thread(target=lambda: ids.extend(uuid7() for _ in range(5000))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == len(ids) == 20_000
    assert {uuid.UUID(i).version for i in ids} == {7}
    uuid7()  # the pool is in use when the process forks
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child's next ids must not be the parent's next ids
        os.write(write, "".join(uuid7()[-17:] for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 100_000).decode()
    os.waitpid(pid, 0)
    parent = "".join(uuid7()[-17:] for _ in range(50))
    assert {child[i : i + 17] for i in range(0, len(child), 17)}.isdisjoint(
        parent[i : i + 17] for i in range(0, len(parent), 17)
    )
