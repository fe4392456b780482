"""Shared fixtures. Nothing here mocks Kafka or ClickHouse: tests get the real thing."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from runtime.clickhouse import ClickHouse
from runtime.kafkabroker import FREE_PORTS

pytest_plugins = ["tests.kafka_fixture"]

# Every `pingstream up` / projector a test starts serves live SQL on free ports, never the fixed
# defaults (8124, 9001, 8444, 9441), so test processes never collide with each other or with a running system.
os.environ.setdefault("PINGSTREAM_SQL_PORT", "0")
os.environ.setdefault("PINGSTREAM_SQL_NATIVE_PORT", "0")
os.environ.setdefault("PINGSTREAM_SQL_HTTPS_PORT", "0")  # served only with a certificate
os.environ.setdefault("PINGSTREAM_SQL_NATIVE_TLS_PORT", "0")


@pytest.fixture(scope="session", autouse=True)
def _temporary_files_under_basetemp(tmp_path_factory):
    """The processes the tests start write their temporary files under pytest's base directory (kept for the last
    three runs), not in the machine's /tmp: a chdb process killed with -9 leaves its own behind."""
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp_path_factory.mktemp("tmpdir"))
    yield
    if before is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = before


@pytest.fixture(scope="session")
def chdb_dsn(tmp_path_factory) -> str:
    """One chdb data path for the whole test process (chdb allows one process per path),
    or the ClickHouse server named by PINGSTREAM_CLICKHOUSE."""
    server = os.environ.get("PINGSTREAM_CLICKHOUSE")
    if server:
        return server
    return f"chdb:///{tmp_path_factory.mktemp('chdb').resolve()}"


@pytest.fixture
async def clickhouse(chdb_dsn):
    """A ClickHouse client on a fresh, randomly named database (dropped afterwards)."""
    database = f"test_{uuid.uuid4().hex[:12]}"
    ch = ClickHouse(chdb_dsn, database)
    await ch.start()
    try:
        yield ch
    finally:
        await ch.run(lambda c: c.command(f"DROP DATABASE IF EXISTS {database}"))
        await ch.close()


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


# Tests that need a real backend, recognised by the fixtures they use (or a parametrised backend
# named so): each is counted, and one that was skipped fails the run, so CI cannot pass without them.
_BACKENDS = {
    "kafka": {"kafka_bootstrap", "kafka_broker", "kafka_log", "own_kafka_broker", "launched_broker"},
    "clickhouse": {"clickhouse", "chdb_dsn"},
}
_ran: dict[str, int] = {name: 0 for name in _BACKENDS}
_skipped: dict[str, list[str]] = {name: [] for name in _BACKENDS}
# Any other test may skip only for one of these reasons, each a condition of the machine or of the run that a test
# names itself. A skip for another reason (a test of the end-to-end suite whose own processes run Kafka or chdb,
# a library missing) fails the run too.
_ALLOWED_SKIPS = (
    "cannot mount a tmpfs here",  # tests/edge/test_disk_mount.py: test_disk_full.py covers a full disk
    "cannot attach a debugger here",  # tests/e2e/test_kill.py (gdb): test_projector.py covers the repair it shows
    "fuzzing switched off",  # PINGSTREAM_FUZZ_CASES=0
    "/proc/self/smaps and madvise: Linux",
    "not under make test's workers",
    "no CPU affinity on this platform",
    "needs the whole replay in this session",  # a compat replay test run alone
)
_skipped_otherwise: list[str] = []


def pytest_configure(config):
    """Under make test's workers (pytest-xdist), each worker's tests take their loopback ports from a range of
    their own (``runtime.kafkabroker.free_port``), below the system's ephemeral ports."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        n = int(worker[2:]) % 9
        os.environ.setdefault(FREE_PORTS, f"{10_000 + 2_500 * n}-{10_000 + 2_500 * n + 2_499}")


def pytest_collection_modifyitems(config, items):
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        params = set(map(str, getattr(getattr(item, "callspec", None), "params", {}).values()))
        for name, needs in _BACKENDS.items():
            if fixtures & needs or any(name in p for p in params):  # "librdkafka" is a Kafka backend too
                item.add_marker(name)
    # Tests marked ``last`` wait for work their fixture does in the background meanwhile (the compat
    # replay's scenarios that wait on the clock): the rest of the suite runs first (with make test's
    # workers, the rest of their file; the other worker goes on with other files).
    items[:] = [i for i in items if not i.get_closest_marker("last")] + [i for i in items if i.get_closest_marker("last")]


def pytest_runtest_logreport(report):
    backend = False
    for name in _BACKENDS:
        if name in report.keywords:
            backend = True
            if report.skipped:
                _skipped[name].append(report.nodeid)
            elif report.when == "call" and report.passed:
                _ran[name] += 1
    if report.skipped and not backend and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not any(allowed in reason for allowed in _ALLOWED_SKIPS):
            _skipped_otherwise.append(f"{report.nodeid} ({reason})")


def pytest_sessionfinish(session, exitstatus):
    if (any(_skipped.values()) or _skipped_otherwise) and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    """Say how many tests ran on the real backends (and fail loudly on any skipped), and which
    ClickHouse they ran on: the server path is only exercised when one is given."""
    for name, skipped in _skipped.items():
        if skipped:
            terminalreporter.write_line(
                f"FAILED: {len(skipped)} {name} test(s) were skipped; they must run (first: {skipped[0]})", red=True
            )
    if _skipped_otherwise:
        terminalreporter.write_line(
            f"FAILED: {len(_skipped_otherwise)} test(s) were skipped for a reason not allowed in tests/conftest.py "
            f"(first: {_skipped_otherwise[0]})", red=True)
    terminalreporter.write_line(
        f"Real backends: {_ran['kafka']} Kafka tests passed against a real broker, {_ran['clickhouse']} "
        "ClickHouse tests passed (the end-to-end tests' own processes use them too, uncounted)"
    )
    if os.environ.get("PINGSTREAM_CLICKHOUSE", "").startswith("http"):
        terminalreporter.write_line("ClickHouse: tests ran against the server named by PINGSTREAM_CLICKHOUSE")
    else:
        terminalreporter.write_line(
            "ClickHouse: tests ran on embedded chdb only; the http:// server path was NOT exercised "
            "(set PINGSTREAM_CLICKHOUSE=http://user:password@host:8123 to run them against a server)"
        )
