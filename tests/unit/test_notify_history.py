"""The check as it was when a transition was published (notify/history.py): versions by their records' timestamps."""

from __future__ import annotations

from datetime import datetime, timezone

from notify.history import History
from schemas.events import CheckConfig, CheckDeleted, CheckUpserted

CREATED = datetime(2026, 12, 1, tzinfo=timezone.utc)
CHECK = CheckConfig(id="c1", project_id="p1", name="v1", channels=("ch",), created=CREATED)


def _upsert(check: CheckConfig) -> CheckUpserted:
    return CheckUpserted(event_id=f"e-{check.name}", check=check)


def test_the_version_published_before_the_transition_s_millisecond_is_the_one():
    history = History()
    history.apply(_upsert(CHECK), 1000)
    history.apply(_upsert(CheckConfig(id="c1", project_id="p1", name="v2", created=CREATED)), 2000)
    assert history.check_at("c1", 1500).name == "v1"
    assert history.check_at("c1", 2500).name == "v2"
    # An edit in the same millisecond as the transition is taken as after it: records of two topics have no
    # order within a millisecond (tests/notify/test_notifier.py renames a check just after it went down).
    assert history.check_at("c1", 2000).name == "v1"
    history.apply(CheckDeleted(event_id="e-deleted", check_id="c1", project_id="p1"), 3000)
    assert history.check_at("c1", 3500) is None and history.check_at("c1", 3000).name == "v2"


def test_a_check_as_new_as_its_transition_is_its_first_version():
    history = History()
    history.apply(_upsert(CHECK), 1000)
    assert history.check_at("c1", 1000).name == "v1" and history.check_at("c1", 10).name == "v1"
    assert history.check_at("unknown", 1000) is None
