"""The system as real processes (``pingstream up``, or one service per process on Kafka), driven over HTTP."""

from __future__ import annotations

import pytest

from bench.procs import Service, free_port, parse_keys, run_cli, sql  # noqa: F401  (re-exported for tests)


@pytest.fixture
def services():
    """Start services; all are stopped (then killed if stuck) at the end, even on failure."""
    started: list[Service] = []

    def make(command: str, env: dict, port: bool = False) -> Service:
        s = Service(command, {k: str(v) for k, v in env.items()}, free_port() if port else None)
        started.append(s)
        return s.start()

    yield make
    for s in reversed(started):
        s.stop()


@pytest.fixture
def system(tmp_path, services):
    """``pingstream up`` on the embedded log and chdb, on a free port."""

    def make(**env) -> Service:
        env = {"PINGSTREAM_DATA": str(tmp_path / "data"), "PINGSTREAM_KAFKA": "", **env}  # `up` is embedded
        return services("up", env, port=True)

    return make
