"""Run time bounds learned from a check's own history (``min_runtime`` / ``max_runtime`` = ``"auto"``).

Pure and bounded: the fold keeps the check's most recent successful runs as
``(finished_at, duration_s)`` pairs, at most ``KEPT`` of them and none older than
``WINDOW_S`` (30 days), in its state. With at least ``MIN_RUNS`` of them, a run
shorter than their 1st percentile or longer than their 99th is outside what the
check usually does. Percentiles are nearest-rank on the sorted durations (no
interpolation: the same runs give the same bounds on every replay).
"""

from __future__ import annotations

import math

KEPT = 128
WINDOW_S = 30 * 86400.0
MIN_RUNS = 20
LOW_Q, HIGH_Q = 0.01, 0.99

Runs = tuple[tuple[float, float], ...]


def remember(runs: Runs | None, finished_at: float, duration_s: float) -> Runs:
    """``runs`` with this run added, and those past the window or beyond ``KEPT`` dropped."""
    since = finished_at - WINDOW_S
    kept = [r for r in (runs or ()) if r[0] >= since]
    kept.append((finished_at, duration_s))
    return tuple(kept[-KEPT:])


def _rank(durations: list[float], q: float, up: bool) -> float:
    at = q * (len(durations) - 1)
    return durations[math.ceil(at) if up else math.floor(at)]


def bounds(runs: Runs | None, now: float) -> tuple[float | None, float | None]:
    """(p1, p99) of the runs within the window at ``now``; (None, None) while there are too few."""
    durations = sorted(d for at, d in (runs or ()) if at >= now - WINDOW_S)
    if len(durations) < MIN_RUNS:
        return None, None
    return _rank(durations, LOW_Q, False), _rank(durations, HIGH_Q, True)
