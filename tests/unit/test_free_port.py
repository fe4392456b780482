"""``free_port``: with PINGSTREAM_FREE_PORTS, a free loopback port of that range (make test's workers each have
one of their own, tests/conftest.py); a port something listens on is never given."""

from __future__ import annotations

import os
import socket

import pytest

from runtime import kafkabroker


def test_a_port_of_the_range_and_never_one_taken(monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    monkeypatch.setenv(kafkabroker.FREE_PORTS, f"{free}-{free}")
    assert kafkabroker.free_port() == free
    with pytest.raises(RuntimeError, match="no free loopback port"):
        kafkabroker.free_port(avoid=free)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv(kafkabroker.FREE_PORTS, f"{port}-{port}")
        with pytest.raises(RuntimeError, match="no free loopback port"):
            kafkabroker.free_port()


def test_a_worker_takes_its_ports_from_its_own_range():
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        pytest.skip("not under make test's workers (pytest-xdist)")
    low, high = map(int, os.environ[kafkabroker.FREE_PORTS].split("-"))
    assert high < 32768 and low == 10_000 + 2_500 * (int(worker[2:]) % 9)
    assert low <= kafkabroker.free_port() <= high
