"""CPU time from Linux ``/proc`` for the benchmarks: of a process (all its threads), or of one of its threads.

Only the standard library: ``bench/projector.py`` imports it before a pass puts another checkout's packages
first on the path."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_seconds(pid: int | str = "self", tid: int | str | None = None) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads), or of its thread ``tid``; None where
    ``/proc`` has no such entry (it ended, or this is not Linux)."""
    stat = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
