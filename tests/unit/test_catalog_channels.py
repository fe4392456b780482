"""The checks table's ``channels`` column holds the check's channel ids as its API document does."""

from __future__ import annotations

from datetime import datetime, timezone

from projector.catalog import COLUMNS, upsert_row
from schemas.events import CheckConfig


def test_a_checks_channels_are_comma_separated_ids():
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    check = CheckConfig(id="c", project_id="p", channels=("a-id", "b-id"), created=at)
    row = dict(zip(COLUMNS, upsert_row(check, 1, at)))
    assert row["channels"] == "a-id,b-id"
    assert dict(zip(COLUMNS, upsert_row(CheckConfig(id="c", project_id="p", created=at), 1, at)))["channels"] == ""
