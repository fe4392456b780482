"""The ``checks`` table's pure fold: registry records (``pingstream.checks``) into versioned rows.

A row is a check's whole configuration at one registry record; its ``version`` is that
record's offset. A check's records all carry its uuid as key, so they share one partition
and their offsets grow with each change: ``ReplacingMergeTree(version)`` keeps the latest,
and a record read again after a crash yields the very same row (exactly once in effect).

A deletion (``check_deleted``) carries no configuration, so its row repeats the check's
last known one (``known``: the rows of this batch, else what the shell read from
``checks``) with ``deleted`` set to the time the registry recorded it: joins from
``runs`` or ``pings`` still name a deleted check. Projects (and their keys) never enter
ClickHouse.
"""

from __future__ import annotations

from datetime import datetime, timezone

from schemas.events import CheckConfig, CheckDeleted, CheckUpserted

COLUMNS = ["id", "project_id", "name", "slug", "tags", "description", "kind", "schedule", "timeout_s", "grace_s",
           "tz", "channels", "manual_resume", "monitor_type", "created", "deleted", "updated_at", "version"]

_DELETED = COLUMNS.index("deleted")


REGISTRY_TYPES = (CheckUpserted, CheckDeleted)


def is_registry_event(event: object) -> bool:
    return isinstance(event, REGISTRY_TYPES)


def deleted_ids(events: list[tuple[object, int, int]]) -> set[str]:
    """Checks deleted in a batch: whose last known row the shell must read first."""
    return {e.check_id for e, _, _ in events if isinstance(e, CheckDeleted)}


def _at(timestamp_ms: int) -> datetime:
    return datetime.fromtimestamp(timestamp_ms / 1000, timezone.utc)


def upsert_row(check: CheckConfig, version: int, updated_at: datetime) -> tuple:
    return (
        check.id, check.project_id, check.name, check.slug, check.tags.split(), check.desc, check.kind,
        # A simple check has no schedule of its own (its period is timeout_s): empty, as in its API document.
        check.schedule if check.kind != "simple" else "", check.timeout_s, check.grace_s, check.tz,
        # The check's channel ids, comma-separated as in its API document.
        ",".join(check.channels), check.manual_resume, check.monitor_type, check.created, None,
        updated_at, version,
    )


def deletion_row(event: CheckDeleted, prior: tuple | None, version: int, at: datetime) -> tuple:
    if prior is None:  # never projected (compacted away before this table existed): only the id is known
        prior = (event.check_id, event.project_id, "", "", [], "", "", "", 0, 0, "", "", False, "", at, None, at, 0)
    row = list(prior)
    row[_DELETED], row[-2], row[-1] = at, at, version
    return tuple(row)


def check_rows(events: list[tuple[object, int, int]], known: dict[str, tuple]) -> list[tuple]:
    """Rows of ``checks`` for ``(event, offset, timestamp_ms)`` triples, in order.

    ``known`` maps check ids to their last row (those deleted in this batch, at least);
    it is updated in place with the rows made here.
    """
    rows = []
    for event, offset, timestamp_ms in events:
        if isinstance(event, CheckUpserted):
            row = upsert_row(event.check, offset, _at(timestamp_ms))
            key = event.check.id
        elif isinstance(event, CheckDeleted):
            row = deletion_row(event, known.get(event.check_id), offset, _at(timestamp_ms))
            key = event.check_id
        else:
            continue
        known[key] = row
        rows.append(row)
    return rows
