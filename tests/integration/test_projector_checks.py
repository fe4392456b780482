"""The ``checks`` table: the registry projected into ClickHouse by the projector (real SQLite log, real chdb)."""

from __future__ import annotations

from datetime import timedelta

from projector.service import Projector
from projector.replay import batch_token
from runtime.consumer import ranges_of
from runtime.registry import event_key
from schemas.events import TOPIC_CHECKS, CheckConfig, CheckDeleted, CheckUpserted, ProjectUpserted, Project, encode, utcnow, uuid7

from .test_projector import CHECK, PROJECT, Running, count, log, ping, wait_until  # noqa: F401 (fixture)


async def register(log, event) -> None:
    await log.produce(TOPIC_CHECKS, encode(event), key=event_key(event))


def config(**fields) -> CheckConfig:
    base = dict(id=CHECK, project_id=PROJECT, name="Database Backup", slug="database-backup", tags="prod db",
                kind="cron", schedule="0 2 * * *", tz="Europe/Riga", timeout_s=86400, grace_s=3600,
                created=utcnow() - timedelta(days=1))
    return CheckConfig(**{**base, **fields})


async def named(clickhouse, sql: str) -> list[dict]:
    return await clickhouse.rows(sql)


async def test_a_renamed_check_shows_its_new_name_by_sql(log, clickhouse, tmp_path):
    projector = Running(log, clickhouse, tmp_path)
    await register(log, CheckUpserted(event_id=uuid7(), check=config()))
    await register(log, CheckUpserted(event_id=uuid7(), check=config(name="Nightly DB backup", tags="prod")))
    await ping(log, "start")
    await ping(log, "success", utcnow() + timedelta(seconds=5))

    async def renamed():
        rows = await named(clickhouse, "SELECT name FROM checks FINAL")
        return rows if rows and rows[0]["name"] == "Nightly DB backup" else None

    assert await wait_until(renamed)
    # The documented join: runs by check name.
    assert await wait_until(lambda: count(clickhouse, "SELECT count() FROM runs FINAL"))
    await projector.halt()
    [row] = await named(clickhouse, "SELECT c.name AS name, c.tags AS tags, c.schedule AS schedule, c.tz AS tz, "
                                    "c.deleted AS deleted, count() AS runs FROM runs AS r FINAL "
                                    "JOIN checks AS c FINAL ON c.id = r.check_id GROUP BY name, tags, schedule, tz, deleted")
    assert row == {"name": "Nightly DB backup", "tags": ["prod"], "schedule": "0 2 * * *", "tz": "Europe/Riga",
                   "deleted": None, "runs": 1}
    assert await count(clickhouse, "SELECT count() FROM checks FINAL") == 1


async def test_a_deleted_check_is_marked_and_keeps_its_name(log, clickhouse, tmp_path):
    projector = Running(log, clickhouse, tmp_path)
    await register(log, CheckUpserted(event_id=uuid7(), check=config(name="Weekly report")))

    async def projected():
        return await count(clickhouse, "SELECT count() FROM checks FINAL")

    assert await wait_until(projected)  # the upsert in one batch, the deletion in a later one
    await register(log, CheckDeleted(event_id=uuid7(), check_id=CHECK, project_id=PROJECT))

    async def deleted():
        rows = await named(clickhouse, "SELECT name, deleted FROM checks FINAL")
        return rows if rows and rows[0]["deleted"] is not None else None

    [row] = await wait_until(deleted)
    await projector.halt()
    assert row["name"] == "Weekly report"
    assert abs((row["deleted"] - utcnow()).total_seconds()) < 30


async def test_projects_and_their_keys_never_reach_clickhouse(log, clickhouse, tmp_path):
    project = Project(id=PROJECT, name="p", ping_key="pk", api_key="secret-key", api_key_readonly="ro",
                      created=utcnow())
    await register(log, ProjectUpserted(event_id=uuid7(), project=project))
    await register(log, CheckUpserted(event_id=uuid7(), check=config()))
    projector = Running(log, clickhouse, tmp_path)
    assert await wait_until(lambda: count(clickhouse, "SELECT count() FROM checks FINAL"))
    await projector.halt()
    tables = [t for (t,) in await clickhouse.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine LIKE '%MergeTree'")]
    assert "checks" in tables
    for table in tables:
        assert await count(clickhouse, f"SELECT count() FROM {table} "
                                       "WHERE position(formatRow('TabSeparated', *), 'secret-key') > 0") == 0, table


async def test_registry_records_read_again_add_no_row(log, clickhouse):
    await register(log, CheckUpserted(event_id=uuid7(), check=config()))
    await register(log, CheckDeleted(event_id=uuid7(), check_id=CHECK, project_id=PROJECT))
    consumer = log.consumer([TOPIC_CHECKS], group=None)
    await consumer.start()
    records = await consumer.getmany(timeout_ms=500)
    await consumer.close()
    token = batch_token(ranges_of(records))
    for _ in range(3):
        await Projector(clickhouse, log).process(records, token)
    await Projector(clickhouse, log).process(records, "another-token")
    assert await count(clickhouse, "SELECT count() FROM checks") == 2  # same token: dropped blocks
    [row] = await named(clickhouse, "SELECT name, deleted IS NOT NULL AS gone FROM checks FINAL")
    assert row == {"name": "Database Backup", "gone": True}
