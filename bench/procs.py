"""Service processes for end-to-end tests and benchmarks: start, stop (SIGTERM), kill -9, read their keys."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from runtime import kafkabroker
from runtime.kafkabroker import _port_open, free_port  # noqa: F401 (free_port: for bench/e2e.py)

ROOT = Path(__file__).resolve().parents[1]


def scratch_broker(partitions: int = 4) -> kafkabroker.Broker:
    """A broker from the cached jars on a temporary directory of its own, for one benchmark: its ``stop()``
    also removes the directory (a run's topics take about 100 MB there)."""
    workdir = tempfile.mkdtemp(prefix="bench-kafka-")
    try:
        broker = kafkabroker.start_broker(workdir, partitions=partitions)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    stop = broker.stop

    def stop_and_remove(*args, **kwargs):
        try:
            return stop(*args, **kwargs)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    broker.stop = stop_and_remove
    return broker


_KEY_PATTERNS = (
    ("ping_key", r"ping key:\s+(\S+)"),
    ("api_key", r"  API key:\s+(\S+)"),
    ("api_key_readonly", r"read-only API key:\s+(\S+)"),
    ("project_id", r"^project '.*' \((\S+)\)"),
    ("admin_key", r"^admin key:\s+(\S+)"),
    ("sql_url", r"^SQL \(ClickHouse HTTP interface\):\s+(\S+)"),
    ("sql_native", r"^SQL \(ClickHouse native protocol\):\s+(\S+)"),
    ("sql_https", r"^SQL \(ClickHouse HTTPS interface\):\s+(\S+)"),
    ("sql_native_tls", r"^SQL \(ClickHouse native protocol, TLS\):\s+(\S+)"),
)


def parse_keys(text: str) -> dict[str, str]:
    keys = {}
    for name, pattern in _KEY_PATTERNS:
        if m := re.search(pattern, text):
            keys[name] = m.group(1)
    return keys


class Sampling:
    """Calls ``sample()`` on a thread every ``interval_s`` while its ``with`` block runs (a benchmark's
    reading of /proc beside the load it generates)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()


class Service:
    """One ``pingstream <command>`` process; start / stop (SIGTERM) / kill (-9), keeping its data."""

    def __init__(self, command: str, env: dict[str, str], port: int | None = None, root: Path = ROOT) -> None:
        """``root``: the checkout whose code runs (another one's, for a benchmark's baseline)."""
        self.command = command
        self.root = root
        self.env = env
        self.port = port
        self.url = f"http://127.0.0.1:{port}" if port else None
        self.proc: subprocess.Popen | None = None
        self.output: list[str] = []
        self.keys: dict[str, str] = {}

    def start(self, timeout_s: float = 90) -> "Service":
        # The SQL endpoint of a process holding chdb on any free port (not the default 8124), so that
        # several systems can run side by side; `pingstream sql` finds it in the data directory.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PINGSTREAM_HOST": "127.0.0.1", "PINGSTREAM_SQL_PORT": "0",
               "PINGSTREAM_SQL_NATIVE_PORT": "0", **self.env}
        if self.port:
            env["PINGSTREAM_PORT"] = str(self.port)
        # A restart is ready when this process has said its keys, not when the last one had: something else may
        # listen on the port meanwhile (it was left free while the system was down).
        self.keys = {}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pingstream.cli", *self.command.split()], cwd=self.root, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()
        if self.port:
            deadline = time.monotonic() + timeout_s
            while not (_port_open(self.port) and (self.command != "up" or "api_key" in self.keys)):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"pingstream {self.command} exited:\n" + self.tail())
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pingstream {self.command} did not start:\n" + self.tail())
                time.sleep(0.05)
        return self

    def tail(self, n: int = 40) -> str:
        return "".join(self.output[-n:])

    def _drain(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.output.append(line)
            self.keys.update(parse_keys(line))

    def wait_output(self, pattern: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(re.search(pattern, line) for line in list(self.output)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"no {pattern!r} from pingstream {self.command}:\n" + self.tail())
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def run_cli(*args: str, env: dict[str, str], timeout_s: float = 120) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "pingstream.cli", *args], cwd=ROOT, env=dict(os.environ, **env),
        capture_output=True, text=True, timeout=timeout_s,
    )
    if result.returncode != 0:
        raise RuntimeError(f"pingstream {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


def sql(env: dict[str, str], query: str) -> list[dict]:
    """Rows of a query on that ClickHouse, from a child process (chdb allows one data path per process)."""
    return [json.loads(line) for line in run_cli("sql", query, "--format", "json", env=env).splitlines() if line]
