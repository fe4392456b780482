"""Repeated log lines, once per interval with a count.

A broker outage makes every client loop log the same error many times a second
(aiokafka's reconnects, one warning per refused ping): thousands of lines that
say one thing and bury the rest. ``throttle(names)`` puts a filter on those
loggers: the first record of each (logger, message template) in an interval
passes; the others are counted, and the next one to pass after the interval
says how many were held back ("... [and 4,711 more like it in the last 10 s]").
"""

from __future__ import annotations

import logging
import time

INTERVAL_S = 10.0


class Throttle(logging.Filter):
    def __init__(self, interval_s: float = INTERVAL_S) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._seen: dict[tuple[str, object], list] = {}  # (logger, template) -> [passed_at, held back]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.msg)
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.interval_s:
            seen[1] += 1
            return False
        held = seen[1] if seen is not None else 0
        if len(self._seen) > 1000:  # templates are few; variable messages must not grow this forever
            self._seen.clear()
        self._seen[key] = [now, 0]
        if held:
            record.msg = f"{record.msg} [and {held} more like it in the last {now - seen[0]:.0f} s]"
        return True


_THROTTLE = Throttle()


def throttle(*names: str, prefix: bool = False) -> None:
    """Throttle the loggers ``names`` (with ``prefix``: every logger existing now whose name starts
    with one of them; a logger's filter sees only records logged on it, not its children's)."""
    manager = logging.root.manager
    targets = set(names)
    if prefix:
        targets |= {n for n in list(manager.loggerDict) if n.startswith(names)}
    for name in targets:
        logger = logging.getLogger(name)
        if _THROTTLE not in logger.filters:
            logger.addFilter(_THROTTLE)
