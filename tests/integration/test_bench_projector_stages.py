"""bench/projector.py --stages (each stage of the projector measured apart) and --no-write (drains that insert
nothing), on a small SQLite log, in a process of its own with its own embedded ClickHouse, as the benchmark runs
them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("read", "decode", "load", "fold", "write", "journal and commit")


def _bench(tmp_path: Path, mode: str, summary: str) -> str:
    """The summary line (it starts with ``summary``) of one pass of ``bench.projector <mode>`` over 3,000 pings."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.projector", "--pings", "3000", "--checks", "50", "--logs", "sqlite",
         "--rounds", "1", mode, "--no-save"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    [line] = [line for line in out.stdout.splitlines() if line.startswith(summary)]
    return line


def test_the_stages_are_measured_one_after_the_other_and_every_ping_is_written(tmp_path):
    # The pass asserts that pings holds every ping it read (stage_costs); its summary line names each stage.
    line = _bench(tmp_path, "--stages", "projector stages, sqlite")
    figures = dict(re.findall(r"(read|decode|load|fold|write|journal and commit) ([0-9.]+)", line))
    assert set(figures) == set(STAGES), line
    assert all(float(figures[stage]) > 0 for stage in ("read", "decode", "fold", "write")), line
    one_core = int(re.search(r"one core (\d+) events/s", line).group(1))
    # The events/s of one core is the inverse of the stages' sum (to the rounding of the figures shown).
    total_us = sum(float(v) for v in figures.values())
    assert abs(one_core - 1e6 / total_us) <= 0.02 * one_core, line


def test_a_drain_without_writes_reads_decodes_and_folds_every_ping_and_inserts_none(tmp_path):
    # The pass asserts that pings holds no row once the projector counted every record (drain).
    line = _bench(tmp_path, "--no-write", "projector, sqlite -> nowhere")
    assert int(re.search(r"this (\d+) events/s", line).group(1)) > 0, line
