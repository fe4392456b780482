"""The Analyst API over a real edge and a real ClickHouse (chdb): runs are inserted into ``runs``
directly and the materialized views fill the hourly and daily rollups, as the projector's inserts do."""

from __future__ import annotations

import csv
import io
import uuid
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

import pytest

from checks.spec import unique_key
from runtime.registry import create_project
from schemas.events import CheckDeleted, uuid7


T0 = datetime(2024, 3, 4, tzinfo=timezone.utc)  # a Monday
DAY = timedelta(days=1)
RUN_COLUMNS = ["event_id", "start_event_id", "check_id", "project_id", "rid", "started_at", "finished_at",
               "duration_s", "outcome", "exit_status"]


@pytest.fixture
async def ana(projected):
    return projected


async def insert_runs(ch, check, runs) -> None:
    """``runs``: (finished_at, duration_s, outcome) triples; one insert, as a projector batch."""
    rows = []
    for finished_at, duration_s, outcome in runs:
        finished = finished_at.replace(tzinfo=None)
        rows.append([uuid.uuid4(), uuid.uuid4(), check.id, check.project_id, None,
                     finished - timedelta(seconds=duration_s), finished, float(duration_s), outcome,
                     1 if outcome == "fail" else 0])
    await ch.run(lambda c: c.insert("runs", rows, column_names=RUN_COLUMNS))


def key(edge, readonly: bool = False) -> dict:
    return {"X-Api-Key": edge.project.api_key_readonly if readonly else edge.project.api_key}


async def get_json(edge, path: str, readonly: bool = False, status: int = 200):
    r = await edge.client.get(path, headers=key(edge, readonly))
    assert r.status == status, await r.text()
    return await r.json()


async def fleet(edge):
    """Project A: 'backup' (slow, growing per hour, 1 failure in 24) and 'report' (fast, half failing);
    project B: 'theirs', slower than both."""
    backup = await edge.add_check(name="backup", slug="backup")
    report = await edge.add_check(name="report", slug="report")
    other = await create_project(edge.log, "other", edge.registry)
    theirs = await edge.add_check(project_id=other.id, name="theirs", slug="theirs")
    runs = []
    for hour in range(6):
        for i in range(4):
            outcome = "fail" if (hour, i) == (2, 0) else "success"
            runs.append((T0 + timedelta(hours=hour, minutes=10 * i + 5), 10 * (hour + 1), outcome))
    await insert_runs(edge.ch, backup, runs)
    await insert_runs(edge.ch, report, [(T0 + timedelta(hours=h, minutes=m), 5, "fail" if m else "success")
                                        for h in range(3) for m in (0, 30)])
    await insert_runs(edge.ch, theirs, [(T0 + timedelta(hours=1), 1000, "fail")])
    return backup, report, theirs, other


RANGE = f"since={T0.isoformat()}&until={(T0 + DAY).isoformat()}".replace("+", "%2B")


# --- per check -----------------------------------------------------------------


async def test_it_lists_runs_in_a_range_newest_first(ana):
    backup, *_ = await fleet(ana)
    body = await get_json(ana, f"/api/v3/checks/{backup.id}/runs?since=2024-03-04T01:00:00Z&until=2024-03-04T03:00:00Z")
    runs = body["runs"]
    assert [r["duration_s"] for r in runs] == [30.0] * 4 + [20.0] * 4
    assert runs[0]["finished_at"] > runs[-1]["finished_at"]
    assert sum(r["outcome"] == "fail" for r in runs) == 1
    assert body["check"]["name"] == "backup"
    limited = await get_json(ana, f"/api/v3/checks/{backup.id}/runs?{RANGE}&limit=3")
    assert [r["duration_s"] for r in limited["runs"]] == [60.0] * 3


async def test_it_buckets_durations_hourly_from_the_rollups(ana):
    backup, *_ = await fleet(ana)
    body = await get_json(ana, f"/api/v3/checks/{backup.id}/durations?bucket=1h&{RANGE}")
    buckets = body["buckets"]
    assert [b["runs"] for b in buckets] == [4] * 6
    assert [b["failures"] for b in buckets] == [0, 0, 1, 0, 0, 0]
    # every run in an hour took the same time, so every quantile is exact
    assert [(b["p50"], b["p95"], b["p99"]) for b in buckets] == [(10.0 * h,) * 3 for h in range(1, 7)]
    assert buckets[0]["bucket"].startswith("2024-03-04T00:00:00")
    assert body["quantiles"] == [0.5, 0.95, 0.99]


async def test_it_buckets_durations_daily(ana):
    backup, *_ = await fleet(ana)
    body = await get_json(ana, f"/api/v3/checks/{backup.id}/durations?bucket=1d&since=2024-03-01&until=2024-03-10")
    [day] = body["buckets"]
    assert (day["runs"], day["failures"]) == (24, 1)
    assert day["bucket"].startswith("2024-03-04T00:00:00")
    assert 30 <= day["p50"] <= 40 and 55 <= day["p95"] <= 60 and day["p99"] <= 60


async def test_it_computes_other_quantiles_from_runs(ana):
    check = await ana.add_check(name="spread")
    await insert_runs(ana.ch, check, [(T0 + timedelta(seconds=30 * i), i, "success") for i in range(1, 101)])
    body = await get_json(ana, f"/api/v3/checks/{check.id}/durations?q=0.25,0.5,0.999&{RANGE}")
    [hour] = body["buckets"]
    assert hour["runs"] == 100
    assert abs(hour["p25"] - 25) <= 3 and abs(hour["p50"] - 50) <= 3 and hour["p99.9"] >= 97
    # the rollup path agrees on the same data
    rollup = (await get_json(ana, f"/api/v3/checks/{check.id}/durations?q=0.5&{RANGE}"))["buckets"][0]
    assert abs(rollup["p50"] - hour["p50"]) <= 3 and "p95" not in rollup


async def test_it_answers_csv(ana):
    backup, *_ = await fleet(ana)
    r = await ana.client.get(f"/api/v3/checks/{backup.id}/durations?format=csv&{RANGE}", headers=key(ana))
    assert r.status == 200 and r.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(await r.text())))
    assert len(rows) == 6 and list(rows[0]) == ["bucket", "runs", "failures", "p50", "p95", "p99"]
    assert float(rows[5]["p95"]) == 60.0 and rows[2]["failures"] == "1"
    r = await ana.client.get(f"/api/v3/checks/{backup.id}/runs?{RANGE}", headers={**key(ana), "Accept": "text/csv"})
    runs = list(csv.DictReader(io.StringIO(await r.text())))
    assert len(runs) == 24 and {r["outcome"] for r in runs} == {"success", "fail"}
    r = await ana.client.get(f"/api/v3/analytics/slowest?format=csv&{RANGE}", headers=key(ana))
    assert [row["name"] for row in csv.DictReader(io.StringIO(await r.text()))] == ["backup", "report"]


# --- fleet ---------------------------------------------------------------------


async def test_it_ranks_the_projects_slowest_checks(ana):
    backup, report, *_ = await fleet(ana)
    body = await get_json(ana, f"/api/v3/analytics/slowest?{RANGE}")
    assert [c["name"] for c in body["checks"]] == ["backup", "report"]  # project B's slower check is not ours
    assert body["checks"][0]["uuid"] == backup.id and body["checks"][0]["runs"] == 24
    assert 55 <= body["checks"][0]["p95"] <= 60 and body["checks"][1]["p95"] == 5.0
    assert [c["name"] for c in (await get_json(ana, f"/api/v3/analytics/slowest?{RANGE}&limit=1"))["checks"]] == ["backup"]


async def test_it_ranks_failure_rates(ana):
    await fleet(ana)
    checks = (await get_json(ana, f"/api/v3/analytics/failure-rate?{RANGE}"))["checks"]
    assert [(c["slug"], c["runs"], c["failures"]) for c in checks] == [("report", 6, 3), ("backup", 24, 1)]
    assert checks[0]["failure_rate"] == 0.5 and checks[1]["failure_rate"] == pytest.approx(1 / 24)


async def test_it_ranks_week_over_week_p95_growth(ana):
    doubled = await ana.add_check(name="doubled")
    steady = await ana.add_check(name="steady")
    faster = await ana.add_check(name="faster")
    new = await ana.add_check(name="new")
    before, now = T0 + timedelta(days=2), T0 + timedelta(days=9)
    await insert_runs(ana.ch, doubled, [(before, 10, "success"), (now, 20, "success")])
    await insert_runs(ana.ch, steady, [(before, 10, "success"), (now, 12, "success")])
    await insert_runs(ana.ch, faster, [(before, 10, "success"), (now, 5, "success")])
    await insert_runs(ana.ch, new, [(now, 100, "success")])
    until = (T0 + timedelta(days=14)).isoformat().replace("+", "%2B")
    body = await get_json(ana, f"/api/v3/analytics/p95-growth?until={until}")
    assert [(c["name"], c["growth"]) for c in body["checks"]] == [("doubled", 1.0), ("steady", 0.2), ("faster", -0.5)]
    assert body["since"].startswith("2024-03-11") and body["previous_since"].startswith("2024-03-04")
    # a week later, "now" is the previous week and nothing ran since
    later = (T0 + timedelta(days=21)).isoformat().replace("+", "%2B")
    assert (await get_json(ana, f"/api/v3/analytics/p95-growth?until={later}"))["checks"] == []
    assert len((await get_json(ana, f"/api/v3/analytics/p95-growth?until={later}&weeks_ago=1"))["checks"]) == 3


# --- keys and isolation ------------------------------------------------------------


async def test_a_read_only_key_reads_without_seeing_uuids(ana):
    backup, *_ = await fleet(ana)
    body = await get_json(ana, f"/api/v3/analytics/slowest?{RANGE}", readonly=True)
    assert "uuid" not in body["checks"][0] and body["checks"][0]["unique_key"] == unique_key(backup.id)
    body = await get_json(ana, f"/api/v3/checks/{unique_key(backup.id)}/durations?{RANGE}", readonly=True)
    assert len(body["buckets"]) == 6
    assert len((await get_json(ana, f"/api/v3/checks/{backup.id}/runs?{RANGE}", readonly=True))["runs"]) == 24


async def test_it_rejects_another_projects_check(ana):
    _, _, theirs, other = await fleet(ana)
    for suffix in ("runs", "durations", "durations.svg"):
        r = await ana.client.get(f"/api/v3/checks/{theirs.id}/{suffix}?{RANGE}", headers=key(ana))
        assert r.status == 403, suffix
        r = await ana.client.get(f"/api/v3/checks/{unique_key(theirs.id)}/{suffix}", headers=key(ana, True))
        assert r.status == 404, suffix
        assert (await ana.client.get(f"/api/v3/checks/{uuid.uuid4()}/{suffix}", headers=key(ana))).status == 404
    # and their key sees only their check
    r = await ana.client.get(f"/api/v3/analytics/slowest?{RANGE}", headers={"X-Api-Key": other.api_key_readonly})
    assert [c["name"] for c in (await r.json())["checks"]] == ["theirs"]


async def test_it_rejects_missing_and_wrong_keys(ana):
    backup, *_ = await fleet(ana)
    for path in (f"/api/v3/checks/{backup.id}/runs", "/api/v3/analytics/slowest", f"/api/v3/checks/{backup.id}/durations.svg"):
        assert (await ana.client.get(path)).status == 401
        assert (await ana.client.get(path, headers={"X-Api-Key": ana.project.ping_key})).status == 401


@pytest.mark.parametrize(("query", "name"), [
    ("since=yesterday", "since"),
    ("until=2024-13-01", "until"),
    ("since=2024-03-05&until=2024-03-04", "since"),
    ("since=0", "since"),
    ("q=1.5", "q"),
    ("q=abc", "q"),
    ("q=nan", "q"),
    ("q=0.5,,0.9", "q"),
    ("q=1e-1", "q"),
    ("q=" + ",".join(["0.1"] * 11), "q"),
    ("bucket=2h", "bucket"),
    ("bucket=1h&since=1990-01-01", "since"),
    ("format=xml", "format"),
])
async def test_it_rejects_bad_duration_parameters(ana, query, name):
    check = await ana.add_check(name="x")
    r = await ana.client.get(f"/api/v3/checks/{check.id}/durations?{query}", headers=key(ana))
    assert r.status == 400
    assert (await r.json())["error"].startswith(f"invalid {name}")


@pytest.mark.parametrize(("path", "name"), [
    ("/api/v3/analytics/slowest?limit=0", "limit"),
    ("/api/v3/analytics/slowest?limit=-1", "limit"),
    ("/api/v3/analytics/failure-rate?limit=abc", "limit"),
    ("/api/v3/analytics/failure-rate?since=%00", "since"),
    ("/api/v3/analytics/p95-growth?weeks_ago=x", "weeks_ago"),
    ("/api/v3/analytics/p95-growth?weeks_ago=100000", "weeks_ago"),
    ("/api/v3/analytics/p95-growth?until=1970-01-10", "until"),
    ("/api/v3/analytics/p95-growth?until=1975-01-01&weeks_ago=520", "weeks_ago"),
])
async def test_it_rejects_bad_fleet_parameters(ana, path, name):
    r = await ana.client.get(path, headers=key(ana))
    assert r.status == 400
    assert (await r.json())["error"].startswith(f"invalid {name}")


async def test_it_rejects_bad_run_parameters(ana):
    check = await ana.add_check(name="x")
    for query, name in (("limit=10001", "limit"), ("since=2024-03-04T25:00", "since"), ("until=99999999999999", "until")):
        r = await ana.client.get(f"/api/v3/checks/{check.id}/runs?{query}", headers=key(ana))
        assert r.status == 400 and (await r.json())["error"].startswith(f"invalid {name}"), query


async def test_it_needs_clickhouse(edge_without_read_model):
    edge = edge_without_read_model
    check = await edge.add_check(name="x")
    r = await edge.client.get(f"/api/v3/checks/{check.id}/durations", headers=key(edge))
    assert r.status == 503 and (await r.json())["error"] == "read model unavailable: PINGSTREAM_CLICKHOUSE=off"


async def test_a_failing_clickhouse_is_a_503_not_a_500(ana):
    await fleet(ana)
    await ana.ch.run(lambda c: c.command("DROP TABLE durations_hourly"))
    r = await ana.client.get("/api/v3/analytics/slowest", headers=key(ana))
    assert r.status == 503


# --- the chart -----------------------------------------------------------------


async def test_it_draws_an_svg_line_per_quantile(ana):
    backup, *_ = await fleet(ana)
    r = await ana.client.get(f"/api/v3/checks/{backup.id}/durations.svg?{RANGE}", headers=key(ana, True))
    assert r.status == 200 and r.content_type == "image/svg+xml"
    root = ET.fromstring(await r.text())
    ns = {"svg": "http://www.w3.org/2000/svg"}
    paths = {p.get("id"): p.get("d") for p in root.iterfind(".//svg:path", ns)}
    assert set(paths) == {"series-p50", "series-p95", "series-p99"}
    for d in paths.values():
        assert d.startswith("M") and d.count("L") == 5  # six consecutive hours, one line
    labels = {t.text for t in root.iterfind(".//svg:text", ns)}
    assert {"p50", "p95", "p99"} <= labels  # the legend


async def test_the_svg_escapes_names_and_breaks_lines_at_gaps(ana):
    check = await ana.add_check(name="<b>&'\"")
    await insert_runs(ana.ch, check, [(T0, 1, "success"), (T0 + timedelta(hours=1), 2, "success"),
                                      (T0 + timedelta(hours=5), 3, "success")])
    r = await ana.client.get(f"/api/v3/checks/{check.id}/durations.svg?{RANGE}", headers=key(ana))
    root = ET.fromstring(await r.text())
    d = root.find(".//{http://www.w3.org/2000/svg}path").get("d")
    assert d.count("M") == 2 and d.count("L") == 1
    empty = await ana.add_check(name="idle")
    r = await ana.client.get(f"/api/v3/checks/{empty.id}/durations.svg?bucket=1d", headers=key(ana))
    assert r.status == 200 and "no runs in this range" in await r.text()
    ET.fromstring(await r.text())


async def test_the_chart_page_is_the_boards_check_page(ana):
    check = await ana.add_check(name="x")
    r = await ana.client.get(f"/api/v3/checks/{check.id}/chart", allow_redirects=False)
    assert r.status == 302 and r.headers["Location"] == f"/board/checks/{check.id}"
    assert (await ana.client.get("/api/v3/checks/not-a-check/chart")).status == 404


async def test_defaults_cover_the_recent_past(ana):
    check = await ana.add_check(name="recent")
    now = datetime.now(timezone.utc)
    await insert_runs(ana.ch, check, [(now - timedelta(hours=2), 4, "success"), (now - timedelta(days=8), 2, "success")])
    assert len((await get_json(ana, f"/api/v3/checks/{check.id}/runs"))["runs"]) == 1
    assert [b["p50"] for b in (await get_json(ana, f"/api/v3/checks/{check.id}/durations"))["buckets"]] == [4.0]
    assert len((await get_json(ana, f"/api/v3/checks/{check.id}/durations?bucket=1d"))["buckets"]) == 2
    [growth] = (await get_json(ana, "/api/v3/analytics/p95-growth"))["checks"]
    assert growth["growth"] == 1.0 and growth["name"] == "recent"
    r = await ana.client.get(f"/api/v3/checks/{check.id}/durations.svg", headers=key(ana))
    assert r.status == 200
    ET.fromstring(await r.text())


async def test_the_openapi_document_lists_the_analytics_paths(ana):
    paths = (await (await ana.client.get("/api/openapi.json")).json())["paths"]
    assert {"/api/v3/checks/{code}/durations", "/api/v3/analytics/p95-growth", "/api/v3/checks/{code}/ping-log"} <= set(paths)


@pytest.mark.parametrize("max_id_filter", [2000, 1])
async def test_fleet_views_leave_out_deleted_checks(ana, monkeypatch, max_id_filter):
    from reads import durations as analytics

    monkeypatch.setattr(analytics, "MAX_ID_FILTER", max_id_filter)  # 1: filtered by project only
    backup, report, *_ = await fleet(ana)
    ana.registry.apply(CheckDeleted(event_id=str(uuid7()), check_id=report.id, project_id=report.project_id))
    assert [c["name"] for c in (await get_json(ana, f"/api/v3/analytics/slowest?{RANGE}"))["checks"]] == ["backup"]
    assert [c["name"] for c in (await get_json(ana, f"/api/v3/analytics/failure-rate?{RANGE}&limit=1"))["checks"]] == ["backup"]


@pytest.mark.parametrize(("largest_s", "unit", "top"), [
    (0, "s", 1), (0.4, "ms", 400), (7, "s", 8), (60, "s", 60), (166, "m", 3), (7300, "h", 3), (259200, "h", 80)])
def test_the_y_axis_has_round_steps_in_a_readable_unit(largest_s, unit, top):
    from ingest.chart import y_axis

    got_unit, factor, levels = y_axis(largest_s)
    assert (got_unit, levels[-1]) == (unit, top) and 3 <= len(levels) <= 6 and levels[-1] * factor >= largest_s


def test_x_ticks_fall_on_whole_hours_and_days():
    from ingest.chart import x_ticks

    ticks = x_ticks(T0, T0 + timedelta(hours=48), "1h")
    assert ticks[0] == T0 and ticks[1] - ticks[0] == timedelta(hours=12) and len(ticks) == 5
    days = x_ticks(T0, T0 + timedelta(days=90), "1d")
    assert 2 <= len(days) <= 7 and all(t.hour == 0 and t.minute == 0 for t in days)


def test_csv_cells_cannot_become_spreadsheet_formulas():
    from ingest.respond import cell

    assert cell("=HYPERLINK(\"http://x\")") == "'=HYPERLINK(\"http://x\")"
    assert cell("+1") == "'+1" and cell("@sum") == "'@sum" and cell("nightly") == "nightly"
    assert cell(-1.5) == "-1.5"  # numbers stay numbers
