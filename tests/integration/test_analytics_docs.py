"""docs/analytics.md and deploy/grafana/ cannot rot: every ```sql block of the doc and every panel query
of the Grafana dashboard runs against a ClickHouse (chdb) the real projector filled from a log holding
checks, pings and transitions, and each answers rows."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from projector.replay import batch_token
from runtime.consumer import ranges_of
from projector.service import Projector
from runtime.eventlog.sqlite import SqliteEventLog
from runtime.registry import event_key
from schemas.events import (
    TOPIC_CHECKS, TOPIC_PINGS, TOPIC_TRANSITIONS, CheckConfig, CheckUpserted, PingEvent, Transition, encode, uuid7,
)

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "analytics.md"
DASHBOARD = ROOT / "deploy" / "grafana" / "pingstream.json"
PROJECT = "019ab7ef-0000-7000-8000-000000000001"
BACKUP, REPORT, FLAPPY = ("0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f%d" % i for i in range(3))


def sql_blocks(text: str) -> list[str]:
    return re.findall(r"```sql\n(.*?)```", text, flags=re.S)


def dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    variables = [(f"variable {v['name']}", v["query"]) for v in board["templating"]["list"] if v["type"] == "query"]
    return variables + [(p["title"], t["rawSql"]) for p in board["panels"] for t in p.get("targets", []) if t.get("rawSql")]


def grafana_to_sql(query: str, start: datetime, end: datetime) -> str:
    """The grafana-clickhouse-datasource macros and the dashboard's variable, as the plugin expands them."""
    frm, to = int(start.timestamp()), int(end.timestamp())
    query = re.sub(r"\$__timeFilter\((\w+(?:\.\w+)?)\)",
                   lambda m: f"{m[1]} >= toDateTime({frm}) AND {m[1]} <= toDateTime({to})", query)
    query = re.sub(r"\$__timeInterval\((\w+(?:\.\w+)?)\)",
                   lambda m: f"toStartOfInterval(toDateTime({m[1]}), INTERVAL 3600 second)", query)
    query = query.replace("$__fromTime", f"toDateTime({frm})").replace("$__toTime", f"toDateTime({to})")
    query = query.replace("${project}", PROJECT)  # a single value goes in as it is (the SQL quotes it)
    assert "$" not in query, query
    return query


@pytest.fixture
async def populated(tmp_path, clickhouse):
    """Three checks through the real projector: 'nightly-backup' (simple, hourly, runs 10 and 2 days ago,
    slower lately, late now), 'report' (cron, a failed run today), 'flappy' (up and down six times yesterday)."""
    log = SqliteEventLog(tmp_path / "log.sqlite3", default_partitions=2)
    await log.start()
    now = datetime.now(timezone.utc)
    created = now - timedelta(days=20)

    async def put(topic, event, key):
        await log.produce(topic, encode(event), key=key.encode())

    for check in (
        CheckConfig(id=BACKUP, project_id=PROJECT, name="nightly-backup", slug="nightly-backup", tags="prod db",
                    timeout_s=3600, grace_s=600, created=created),
        CheckConfig(id=REPORT, project_id=PROJECT, name="report", kind="cron", schedule="0 6 * * *", tz="Europe/Riga",
                    created=created),
        CheckConfig(id=FLAPPY, project_id=PROJECT, name="flappy", tags="prod", created=created),
    ):
        event = CheckUpserted(event_id=uuid7(), check=check)
        await put(TOPIC_CHECKS, event, event_key(event).decode())

    async def run(check_id, finished, seconds, kind="success"):
        for k, at in (("start", finished - timedelta(seconds=seconds)), (kind, finished)):
            await put(TOPIC_PINGS, PingEvent(event_id=uuid7(), check_id=check_id, project_id=PROJECT, kind=k,
                                             received_at=at, body=b"ok", body_size=2), check_id)

    for i in range(5):
        await run(BACKUP, now - timedelta(days=10, minutes=10 * i), 10 + i)
    for i in range(5):
        await run(BACKUP, now - timedelta(days=2, minutes=10 * i), 20 + i)
    await run(REPORT, now - timedelta(hours=3), 5)
    await run(REPORT, now - timedelta(hours=2), 7, "fail")

    async def transition(check_id, at, frm, to, base_from, base_to, reason, **extra):
        await put(TOPIC_TRANSITIONS, Transition(event_id=uuid7(), check_id=check_id, project_id=PROJECT,
                                                from_status=frm, to_status=to, at=at, reason=reason,
                                                from_base=base_from, to_base=base_to, **extra), check_id)

    await transition(BACKUP, now - timedelta(days=1), "up", "grace", "up", "up", "ping overdue, grace period started")
    # Six flips within one UTC day (the doc counts them per day): yesterday from noon, whatever the time now.
    flips_from = (now - timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
    for i in range(6):
        up = i % 2 == 0
        await transition(FLAPPY, flips_from + timedelta(minutes=5 * i), "down" if up else "up", "up" if up else "down",
                         "down" if up else "up", "up" if up else "down", "success ping" if up else "fail ping")

    await transition(REPORT, now - timedelta(hours=2), "started", "down", "up", "down", "run did not finish within 60 s",
                     rule="max_runtime", held="maintenance")

    consumer = log.consumer([TOPIC_CHECKS, TOPIC_PINGS, TOPIC_TRANSITIONS], group=None)
    await consumer.start()
    records = []
    while batch := await consumer.getmany(timeout_ms=200):
        records.extend(batch)
    await consumer.close()
    await Projector(clickhouse, log).process(records, batch_token(ranges_of(records)))
    await log.close()
    yield clickhouse, now


def test_the_doc_has_the_promised_queries():
    text = DOC.read_text()
    for table in ("checks", "pings", "runs", "durations_hourly", "durations_daily", "transitions", "check_state"):
        assert f"### `{table}`" in text or f"`{table}`" in text, table
    assert len(sql_blocks(text)) >= 12


async def test_every_sql_block_of_the_doc_answers_rows(populated):
    clickhouse, now = populated
    parameters = {"project": PROJECT, "check": BACKUP, "since": (now - timedelta(days=14)).replace(tzinfo=None),
                  "until": now.replace(tzinfo=None)}
    for sql in sql_blocks(DOC.read_text()):
        used = {name: value for name, value in parameters.items() if "{" + name + ":" in sql}
        rows = await clickhouse.rows(sql.strip().rstrip(";"), used)
        assert rows, f"no rows from:\n{sql}"


async def test_the_doc_queries_name_checks_and_find_what_the_data_holds(populated):
    clickhouse, now = populated
    blocks = {b.splitlines()[0]: b for b in sql_blocks(DOC.read_text())}
    flapping = next(b for b in blocks.values() if "AS flips" in b)
    [top, *_] = await clickhouse.rows(flapping.strip().rstrip(";"))
    assert (top["name"], top["flips"]) == ("flappy", 6)
    late = next(b for b in blocks.values() if "late_by_s" in b)
    assert [r["name"] for r in await clickhouse.rows(late.strip().rstrip(";"))] == ["nightly-backup"]
    ruled = next(b for b in blocks.values() if "t.rule" in b)
    assert [(r["name"], r["rule"], r["held"], r["transitions"]) for r in await clickhouse.rows(
        ruled.strip().rstrip(";"))] == [("report", "max_runtime", "maintenance", 1)]
    growth = next(b for b in blocks.values() if "AS growth" in b)
    [grew] = await clickhouse.rows(growth.strip().rstrip(";"))
    assert str(grew["check_id"]) == BACKUP and grew["growth"] > 0.5


async def test_every_grafana_panel_query_answers_rows(populated):
    clickhouse, now = populated
    queries = dashboard_queries()
    assert len(queries) >= 6
    for title, query in queries:
        rows = await clickhouse.rows(grafana_to_sql(query, now - timedelta(days=14), now + timedelta(minutes=1)))
        assert rows, f"panel {title!r} answered no rows"


def test_the_dashboard_uses_the_clickhouse_plugin():
    board = json.loads(DASHBOARD.read_text())
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["type"] == "grafana-clickhouse-datasource"
    assert any(v["name"] == "project" for v in board["templating"]["list"])
