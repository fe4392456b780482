"""``Idempotency-Key``: a ping retried with the same key is stored once (our extension).

A client that got no answer, or a ``503`` (the log may have stored the ping all
the same), retries with the key it sent the first time. The edge derives the
ping's event id from the check and the key (``ping_event_id``, a UUIDv5) instead
of drawing a random UUIDv7, so every attempt of one ping carries the same id,
whichever edge took it and whenever. The consumers that count pings (the
projector's fold, the monitor) remember the derived ids they applied for
``WINDOW_S`` of the check's own time (the pings' ``received_at``) and skip a
repeat: one row, one run, one effect on the status. A key reused after the
window is a new ping (as Stripe's keys, and the IETF draft's, expire).

Random ids never repeat, so only derived ids (version 5) are remembered.
"""

from __future__ import annotations

import re
from itertools import islice

from schemas.events import stable_id

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
WINDOW_S = 24 * 3600.0
# Keys one check remembers at most: 24 h of a keyed ping every ~9 s. A check keyed more often than
# that forgets its oldest keys first (its window is then shorter than 24 h).
MAX_KEYS_PER_CHECK = 10_000
_PRUNE_EVERY_S = 3600.0

_PRINTABLE = re.compile(r"[\x20-\x7e]+\Z")


class BadKey(ValueError):
    """An ``Idempotency-Key`` the edge refuses (400, with this message)."""


def parse_key(value: str) -> str:
    """The key of an ``Idempotency-Key`` header value, or ``BadKey`` with the 400's message.

    Printable ASCII, 1 to ``MAX_KEY_LENGTH`` characters; surrounding blanks are
    dropped and a quoted value (the IETF draft's structured-field string) is unquoted,
    so ``"abc"`` and ``abc`` are the same key.
    """
    key = value.strip(" \t")
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if len(key) > MAX_KEY_LENGTH:
        raise BadKey("idempotency key too long")
    if not key or not _PRINTABLE.match(key):
        raise BadKey("invalid idempotency key")
    return key


def ping_event_id(check_id: str, key: str) -> str:
    """The event id of every attempt of the ping ``key`` names on this check."""
    return stable_id("ping", check_id, key)


def is_derived(event_id: str) -> bool:
    """Whether an event id was derived (UUIDv5, may repeat) rather than drawn (UUIDv7, never repeats)."""
    return len(event_id) == 36 and event_id[14] == "5"


class RecentIds:
    """The derived ping ids one check applied, with their times (POSIX seconds), for ``WINDOW_S``.

    Pure and in memory; the projector and the monitor each persist what they need
    to rebuild it after a restart. Entries past the window are dropped in bulk,
    at most once per ``_PRUNE_EVERY_S`` of the check's time, or when the check
    holds more than ``MAX_KEYS_PER_CHECK`` (then its oldest tenth goes).
    """

    __slots__ = ("seen", "pruned_at")

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}  # insertion order = order applied
        self.pruned_at = 0.0

    def __len__(self) -> int:
        return len(self.seen)

    def repeat(self, event_id: str, at: float) -> bool:
        """Whether ``event_id`` at ``at`` repeats one applied within the window (either side: edges' clocks differ)."""
        first = self.seen.get(event_id)
        return first is not None and abs(at - first) <= WINDOW_S

    def add(self, event_id: str, at: float) -> list[str]:
        """Remember ``event_id`` applied at ``at``; returns the ids forgotten to make room or past the window."""
        seen = self.seen
        seen.pop(event_id, None)  # a key reused after the window: newest again
        seen[event_id] = at
        dropped: list[str] = []
        if at - self.pruned_at >= _PRUNE_EVERY_S:
            self.pruned_at = at
            horizon = at - WINDOW_S
            dropped = [i for i, t in seen.items() if t < horizon]
        if len(seen) - len(dropped) > MAX_KEYS_PER_CHECK:
            gone = set(dropped)
            excess = len(seen) - len(gone) - MAX_KEYS_PER_CHECK + MAX_KEYS_PER_CHECK // 10
            dropped += list(islice((i for i in seen if i not in gone), excess))
        if dropped:
            for i in dropped:
                del seen[i]
            self.seen = dict(seen)  # a fresh table: deleted slots are not carried along
        return dropped
