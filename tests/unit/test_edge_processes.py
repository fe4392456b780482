"""How many edge processes `pingstream up` runs beside its engine."""

from __future__ import annotations

import os

import pytest

from runtime import config
from runtime.config import Config, ConfigError, default_edge_processes


def test_it_keeps_a_core_for_the_engine_by_default():
    assert default_edge_processes(2) == 1
    assert default_edge_processes(8) == 7


def test_it_runs_everything_in_one_process_on_one_core_by_default():
    assert default_edge_processes(1) == 0


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this platform")
def test_it_counts_the_cores_this_process_may_run_on(monkeypatch):
    # Under `taskset -c 0` (or a container's cpuset of one core) the machine's count is not what the processes get.
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: {0})
    monkeypatch.setattr(config.os, "cpu_count", lambda: 8)
    assert config.usable_cores() == 1
    assert default_edge_processes() == 0
    assert Config.from_env({}).edge_processes == 0
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert default_edge_processes() == 2


def test_it_takes_the_number_given():
    assert Config.from_env({"PINGSTREAM_EDGE_PROCESSES": "0"}).edge_processes == 0
    assert Config.from_env({"PINGSTREAM_EDGE_PROCESSES": "3"}).edge_processes == 3


def test_zero_keeps_a_distributed_edge_one_process():
    assert Config.from_env({"PINGSTREAM_EDGE_PROCESSES": "0"}).ingest_processes == 1


@pytest.mark.parametrize("value", ["-1", "257", "two"])
def test_it_rejects_a_number_it_cannot_run(value):
    with pytest.raises(ConfigError, match="PINGSTREAM_EDGE_PROCESSES"):
        Config.from_env({"PINGSTREAM_EDGE_PROCESSES": value})
