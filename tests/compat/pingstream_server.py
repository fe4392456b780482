"""Starts `pingstream up` as a subprocess on a free loopback port, with two projects.

Only the CLI is used (never pingstream's modules: their paths move). Stopped by its PID, also
when start-up fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from runtime.kafkabroker import free_port

from .harness import Target

_KEY_LINES = {
    "ping key": "PING_KEY",
    "API key": "API_KEY",
    "read-only API key": "RO_KEY",
}


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("pingstream")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "pingstream.cli"]


def _keys(output: str) -> dict[str, str]:
    keys = {}
    for label, name in _KEY_LINES.items():
        m = re.search(rf"^\s*{re.escape(label)}:\s+(\S+)\s*$", output, re.M)
        if not m:
            raise RuntimeError(f"no {label!r} in `pingstream project create` output:\n{output}")
        keys[name] = m.group(1)
    return keys


@contextlib.contextmanager
def pingstream(data_dir: str | None = None, min_timeout_s: int = 60):
    """Yields a Target for a running `pingstream up` (projects 'compat' and 'compat-other')."""
    own_dir = data_dir is None
    data_dir = data_dir or tempfile.mkdtemp(prefix="pingstream-compat-")
    port = free_port()
    env = dict(os.environ, PINGSTREAM_DATA=data_dir, PINGSTREAM_PORT=str(port), PINGSTREAM_HOST="127.0.0.1",
               PINGSTREAM_MIN_TIMEOUT_S=str(min_timeout_s), PINGSTREAM_LOG_LEVEL="WARNING", PINGSTREAM_SQL_PORT=os.environ.get("COMPAT_SQL_PORT", "0"),
               PINGSTREAM_SQL_NATIVE_PORT="0")
    for var in ("PINGSTREAM_KAFKA", "PINGSTREAM_CLICKHOUSE", "PINGSTREAM_PUBLIC_URL", "PINGSTREAM_WEBHOOKS",
                "PINGSTREAM_RATE_LIMIT_CHECK", "PINGSTREAM_RATE_LIMIT_CLIENT", "PINGSTREAM_PING_BODY_LIMIT"):
        env.pop(var, None)
    proc = None
    log = open(Path(data_dir) / "up.log", "wb")
    try:
        main = subprocess.run(_cli() + ["project", "create", "compat"], env=env, capture_output=True, text=True, check=True, timeout=120)
        other = subprocess.run(_cli() + ["project", "create", "compat-other"], env=env, capture_output=True, text=True, check=True, timeout=120)
        keys = _keys(main.stdout)
        other_keys = _keys(other.stdout)
        keys["OTHER_KEY"] = other_keys["API_KEY"]
        keys["OTHER_PING_KEY"] = other_keys["PING_KEY"]
        proc = subprocess.Popen(_cli() + ["up"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"pingstream up exited with {proc.returncode}; see {data_dir}/up.log:\n"
                                   + (Path(data_dir) / "up.log").read_text(errors="replace")[-3000:])
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("pingstream up did not answer /healthz within 90 s")
            time.sleep(0.2)
        yield Target(name="pingstream", base_url=base, keys=keys, settle_s=float(os.environ.get("COMPAT_SETTLE_S", "15")),
                     stable_s=float(os.environ.get("COMPAT_STABLE_S", "5")),
                     concurrency=int(os.environ.get("COMPAT_CONCURRENCY", "24")))
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()
        if own_dir and not os.environ.get("COMPAT_KEEP_DATA"):
            shutil.rmtree(data_dir, ignore_errors=True)
