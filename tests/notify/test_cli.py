"""``pingstream channel add|list|rm`` as a user runs it (the real command line, on an embedded log)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from bench.procs import ROOT, parse_keys, run_cli


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pingstream.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_it_adds_lists_and_removes_channels(tmp_path):
    env = dict(os.environ, PINGSTREAM_DATA=str(tmp_path), PINGSTREAM_KAFKA="", PINGSTREAM_CLICKHOUSE="off")
    keys = parse_keys(run_cli("project", "create", "acme", env=env))
    hook = json.loads(run_cli("channel", "add", "--project", "acme", "--kind", "webhook", "--name", "ops",
                              "--url", "https://hooks.example.com/x", "--events", "down,up,failure",
                              "--header", "X-Team: ops", env=env))
    assert hook["kind"] == "webhook" and hook["events"] == ["down", "up", "failure"]
    assert hook["secret"].startswith("whsec_")
    mail = json.loads(run_cli("channel", "add", "--project", keys["project_id"], "--kind", "email",
                              "--email", "oncall@example.com", env=env))
    listed = [json.loads(line) for line in run_cli("channel", "list", "--project", "acme", env=env).splitlines()]
    assert [(c["id"], c["kind"]) for c in listed] == [(hook["id"], "webhook"), (mail["id"], "email")]
    assert "whsec_" not in json.dumps(listed) and "hooks.example.com" not in json.dumps(listed)
    assert "removed" in run_cli("channel", "rm", hook["id"], env=env)
    listed = run_cli("channel", "list", "--project", "acme", env=env)
    assert hook["id"] not in listed and mail["id"] in listed


def test_it_refuses_bad_channels_with_one_line(tmp_path):
    env = dict(os.environ, PINGSTREAM_DATA=str(tmp_path), PINGSTREAM_KAFKA="", PINGSTREAM_CLICKHOUSE="off")
    run_cli("project", "create", "acme", env=env)
    bad = _cli("channel", "add", "--project", "acme", "--kind", "webhook", "--url", "http://10.0.0.1/x", env=env)
    assert (bad.returncode, bad.stderr.strip()) == (2, "pingstream: url points to a private address")
    bad = _cli("channel", "add", "--project", "nope", "--kind", "email", "--email", "a@example.com", env=env)
    assert (bad.returncode, bad.stderr.strip()) == (1, "pingstream: no project 'nope'")
    bad = _cli("channel", "rm", "0190a000-0000-7000-8000-000000000000", env=env)
    assert bad.returncode == 1 and "no channel" in bad.stderr
