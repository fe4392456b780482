"""Replays every scenario recorded from the real Healthchecks against a `pingstream up` started
here, and compares the answers (tests/compat/README.md).

Each recorded scenario is one test. A scenario passes when every difference from
Healthchecks' answer is either deliberate (allowlist.json) or known (known_differences.json:
a rule for a difference that shows in many scenarios, or the scenario's id with a reason).
Both directions are enforced: an unlisted difference fails, and so does a listed scenario or
rule that no longer differs ("remove it from the list"), so the list stays the work list.
"""

from __future__ import annotations


import asyncio
import threading
from concurrent.futures import Future

import pytest

from . import core, normalise
from .__main__ import replay_scenarios, replay_scenarios_async

_META, _RECORDED = core.load_recordings()
_FAST = [s for s in _RECORDED if not s.get("slow")]
_SLOW = [s for s in _RECORDED if s.get("slow")]
_used_rules: set[str] = set()
_checked = {"fast": False, "slow": False}


@pytest.fixture(scope="session")
def pingstream_target():
    from .pingstream_server import pingstream

    with pingstream() as target:
        yield target


@pytest.fixture(scope="session")
def slow_replay(request, pingstream_target):
    """The slow scenarios' replay, about two minutes of waiting on the clock, started in a thread as soon as the
    target is up when their tests were collected: it runs beside the fast replay and, since their tests run last
    (tests/conftest.py), beside the rest of the suite. Its scenarios have checks of their own, as every
    scenario has, and seconds of slack around each deadline they wait for."""
    if not any(item.originalname == "test_replay_slow" for item in request.session.items):
        yield None
        return
    results: Future = Future()
    loop = asyncio.new_event_loop()
    replay = loop.create_task(replay_scenarios_async(pingstream_target, _SLOW, progress=False))

    def run() -> None:
        try:
            results.set_result(loop.run_until_complete(replay))
        except BaseException as exc:  # noqa: BLE001 - the tests' fixture raises it (or nobody waits: cancelled)
            results.set_exception(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="slow-replay", daemon=True)
    thread.start()
    try:
        yield results
    finally:
        if not results.done():  # a session cut short does not wait out the scenarios' clocks
            loop.call_soon_threadsafe(replay.cancel)
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def fast_results(pingstream_target, slow_replay):
    return replay_scenarios(pingstream_target, _FAST)


@pytest.fixture(scope="session")
def slow_results(slow_replay):
    return slow_replay.result()


def _known():
    import json

    data = json.loads(core.KNOWN.read_text()) if core.KNOWN.exists() else {}
    return data.get("rules", []), data.get("scenarios", {})


def _check(sid: str, diffs: list[dict]) -> None:
    rules, listed = _known()
    remaining = []
    for step in diffs:
        left = []
        for d in step["diffs"]:
            hit = [r for r in rules if core._allowed(r, sid, d)]
            if hit:
                _used_rules.update(r["id"] for r in hit)
            else:
                left.append(d)
        if left:
            remaining.append(dict(step, diffs=left))
    if remaining and sid not in listed:
        pytest.fail("pingstream answers differently from Healthchecks "
                    f"{_META.get('healthchecks_commit', '?')[:10]} (fix it, or list it in known_differences.json):\n"
                    + core.format_differences(sid, remaining), pytrace=False)
    if not remaining and sid in listed:
        pytest.fail(f"{sid} now answers like Healthchecks: remove it from tests/compat/known_differences.json "
                    f"(listed as: {listed[sid]})", pytrace=False)


def test_recording_present():
    assert _RECORDED, "no recording in tests/compat/recorded/: run `python -m tests.compat record` where Healthchecks runs"


def test_recording_matches_scenarios():
    """The scenarios in the code and the recording must be the same set: re-record after changing them."""
    from .harness import prepare
    from .scenarios import all_scenarios

    code = {s["id"]: s["steps"] for s in prepare(all_scenarios())}
    recorded = {s["id"]: s["steps"] for s in _RECORDED}
    missing = sorted(set(code) - set(recorded))
    stale = sorted(set(recorded) - set(code))
    changed = sorted(i for i in set(code) & set(recorded) if code[i] != recorded[i])
    assert not (missing or stale or changed), (
        f"re-record (python -m tests.compat record): not recorded {missing[:10]}, no longer defined {stale[:10]}, "
        f"changed {changed[:10]}")


@pytest.mark.parametrize("sid", [s["id"] for s in _FAST])
def test_replay(sid, fast_results):
    _checked["fast"] = True
    _check(sid, fast_results[sid])


@pytest.mark.last
@pytest.mark.slow  # about two minutes of real time (Healthchecks' smallest timeout and grace are 60 s), in the background
@pytest.mark.parametrize("sid", [s["id"] for s in _SLOW])
def test_replay_slow(sid, slow_results):
    _checked["slow"] = True
    _check(sid, slow_results[sid])


def test_known_rules_still_needed(request):
    """Runs last in this module: every rule of known_differences.json must still match a difference, and
    timestamps that matched only as a whole second against microseconds were no more than chance makes."""
    if not _checked["fast"] or request.config.getoption("-k", default=None):
        pytest.skip("needs the whole replay in this session")
    rules, listed = _known()
    unused = [r["id"] for r in rules if r["id"] not in _used_rules and not r.get("slow_only")]
    assert not unused, f"these rules of known_differences.json match no difference any more, remove them: {unused}"
    unknown = sorted(set(listed) - {s["id"] for s in _RECORDED})
    assert not unknown, f"known_differences.json lists scenarios that are not recorded: {unknown}"
    whole = normalise.WHOLE_SECONDS
    assert len(whole) <= normalise.WHOLE_SECONDS_BY_CHANCE, (
        f"{len(whole)} timestamps had microseconds on one side and none on the other, more than chance gives "
        f"(a time lands on a whole second once in a million): one side drops the fraction. "
        f"{sorted(set(whole.values()))[:5]}")
