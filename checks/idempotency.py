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
from array import array
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

    Packed, because a fleet may key every ping: each id is its 16 bytes in one ``bytearray``, its time
    8 bytes and 4 bytes of its hash in ``array``s, in the order applied, found through an open-addressed
    table of 4-byte positions (linear probing, at most two thirds full): 45 to 55 bytes an id, where a dict
    of the ids' strings held 120 (``bench/keys.py``). An entry dropped, or whose id was applied again (a key
    reused after the window: it is newest again), is only marked dead (a NaN time); the arrays and the
    table are made again without the dead once they are as many as the living.
    """

    __slots__ = ("_ids", "_at", "_hashes", "_index", "_mask", "_live", "pruned_at")

    def __init__(self) -> None:
        self._ids = bytearray()  # 16 bytes per entry, in the order applied
        self._at = array("d")  # each entry's time; NaN for a dead entry
        self._hashes = array("I")  # each entry's hash (its low 32 bits): the table is made again without the ids
        self._index = array("i", _EMPTY_INDEX)  # a position in _at, or -1 for a free slot
        self._mask = len(_EMPTY_INDEX) - 1
        self._live = 0
        self.pruned_at = 0.0

    def __len__(self) -> int:
        return self._live

    def _slot(self, event_id: str, h: int) -> int:
        """The slot of ``event_id`` (whose hash is ``h``) in the table: where it is, or the free slot where it
        would go. Its bytes are made only when an entry has its hash (an id not there, the usual case, is
        found missing from the hashes alone)."""
        index, hashes, mask = self._index, self._hashes, self._mask
        slot = h & mask
        key = None
        while True:
            pos = index[slot]
            if pos < 0:
                return slot
            if hashes[pos] == h:
                if key is None:
                    key = _packed(event_id)
                if self._ids[pos * 16:pos * 16 + 16] == key:
                    return slot
            slot = (slot + 1) & mask

    def repeat(self, event_id: str, at: float) -> bool:
        """Whether ``event_id`` at ``at`` repeats one applied within the window (either side: edges' clocks differ).
        (A dead entry's NaN time compares false.)"""
        if not self._live:
            return False
        pos = self._index[self._slot(event_id, hash(event_id) & 0xFFFFFFFF)]
        return pos >= 0 and abs(at - self._at[pos]) <= WINDOW_S

    def add(self, event_id: str, at: float) -> list[str]:
        """Remember ``event_id`` applied at ``at``; returns the ids forgotten to make room or past the window."""
        h = hash(event_id) & 0xFFFFFFFF  # siphash, seeded per process: ids chosen to collide cannot be found
        slot = self._slot(event_id, h)
        times = self._at
        pos = self._index[slot]
        if pos >= 0 and times[pos] == times[pos]:
            times[pos] = _DEAD  # applied again: newest again
        else:
            self._live += 1
        self._index[slot] = len(times)
        self._ids += _packed(event_id)
        times.append(at)
        self._hashes.append(h)
        if at - self.pruned_at < _PRUNE_EVERY_S and self._live <= MAX_KEYS_PER_CHECK:
            self._tidy()
            return []
        return self._drop(at)

    def _drop(self, at: float) -> list[str]:
        """Forget what is past the window (at most once per ``_PRUNE_EVERY_S``) and over the bound."""
        times = self._at
        dropped: list[int] = []
        if at - self.pruned_at >= _PRUNE_EVERY_S:
            self.pruned_at = at
            horizon = at - WINDOW_S
            dropped = [i for i, t in enumerate(times) if t < horizon]
        excess = self._live - len(dropped) - MAX_KEYS_PER_CHECK
        if excess > 0:
            excess += MAX_KEYS_PER_CHECK // 10
            gone = set(dropped)
            dropped += islice((i for i, t in enumerate(times) if t == t and i not in gone), excess)
        ids = self._ids
        forgotten = [_text(ids[i * 16:i * 16 + 16]) for i in sorted(dropped)]
        for i in dropped:
            times[i] = _DEAD
        self._live -= len(dropped)
        self._tidy()
        return forgotten

    def _tidy(self) -> None:
        """Made again once the table is two thirds full, or the dead are as many as the living."""
        total = len(self._at)
        if total * 3 > self._mask * 2 or total - self._live > max(self._live, 64):
            self._rebuild()

    def ids(self) -> list[str]:
        """The ids remembered, oldest first."""
        ids = self._ids
        return [_text(ids[i * 16:i * 16 + 16]) for i, t in enumerate(self._at) if t == t]

    def _rebuild(self) -> None:
        """The arrays without the dead entries, and a table at most half full for them."""
        old_at = self._at
        if self._live < len(old_at):  # drop the dead
            old_ids, old_hashes = self._ids, self._hashes
            keep = [i for i, t in enumerate(old_at) if t == t]
            self._ids = bytearray().join([old_ids[i * 16:i * 16 + 16] for i in keep])
            self._at = array("d", [old_at[i] for i in keep])
            self._hashes = array("I", [old_hashes[i] for i in keep])
        size = len(_EMPTY_INDEX)
        while size < 2 * self._live:
            size *= 2
        index = self._index = array("i", [-1]) * size
        mask = self._mask = size - 1
        for pos, h in enumerate(self._hashes):
            slot = h & mask
            while index[slot] >= 0:
                slot = (slot + 1) & mask
            index[slot] = pos


_EMPTY_INDEX = array("i", [-1]) * 8
_DEAD = float("nan")


def _packed(event_id: str) -> bytes:
    """A UUID's text as its 16 bytes."""
    return bytes.fromhex(event_id.replace("-", ""))


def _text(key: bytes | bytearray) -> str:
    """The inverse of ``_packed``: the UUID's canonical (lowercase) text."""
    h = key.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
