"""The Analyst API's views: run durations of a check, fleet rankings, and the duration chart.

Reads only, from ClickHouse (reads/durations.py); any API key of the project may read, and a
check of another project answers 403/404 as in the Management API. JSON by default, CSV with
``?format=csv`` or ``Accept: text/csv`` (ingest/respond.py). Every bad parameter is a 400 naming
it (ingest/params.py); the SVG is drawn by ingest/chart.py and shown on the status board's
check page (ingest/board.py).
"""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web

from checks.rules import UUID
from checks.spec import UNIQUE_KEY, unique_key
from reads import durations as queries
from schemas.events import CheckConfig, utcnow

from . import params, state
from .chart import render_svg
from .keys import REGISTRY
from .params import BadParam
from .respond import respond
from .views import ApiRequest, api_view, error, own_check

RUN_COLUMNS = ["started_at", "finished_at", "duration_s", "outcome", "exit_status", "rid", "event_id"]

# Any key of the project reads; an edge without a reachable read model answers 503 (ingest/state.py).
analyst_view = api_view(write=False)


def label(q: float) -> str:
    """0.5 → p50, 0.95 → p95, 0.999 → p99.9."""
    return f"p{round(q * 100, 6):g}"


def _wants_csv(request: web.Request) -> bool:
    return params.wants_csv(request.query, request.headers.get("Accept", ""))


def _check_ref(check: CheckConfig, readonly: bool) -> dict:
    ref = {"name": check.name, "slug": check.slug, "unique_key": unique_key(check.id)}
    if not readonly:
        ref["uuid"] = check.id
    return ref


# --- per check ----------------------------------------------------------------


@analyst_view
async def check_runs(request: web.Request, api: ApiRequest) -> web.Response:
    check = own_check(request, api, by_unique_key=True)
    since, until = params.time_range(request.query, timedelta(days=7))
    limit = params.int_param(request.query, "limit", 100, 1, 10000)
    csv_out = _wants_csv(request)
    rows = await state.read(request, queries.runs, check.id, since, until, limit)
    rows = [{c: r[c] for c in RUN_COLUMNS} for r in rows]
    body = {"check": _check_ref(check, api.readonly), "since": since, "until": until, "runs": rows}
    return respond(csv_out, body, rows, RUN_COLUMNS)


async def _duration_buckets(request: web.Request, api: ApiRequest, check: CheckConfig,
                            quantiles: list[float]) -> tuple[dict, list[dict]]:
    bucket = params.bucket_param(request.query)
    since, until = params.duration_range(request.query, bucket)
    rows = await state.read(request, queries.durations, check.id, quantiles, bucket, since, until)
    names = [label(q) for q in quantiles]
    buckets = [{"bucket": r["bucket"], "runs": r["runs"], "failures": r["failures"], **dict(zip(names, r["quantiles"]))}
               for r in rows]
    meta = {"check": _check_ref(check, api.readonly), "bucket": bucket,
            "since": queries.align(since, bucket), "until": until, "quantiles": quantiles}
    return meta, buckets


@analyst_view
async def check_durations(request: web.Request, api: ApiRequest) -> web.Response:
    check = own_check(request, api, by_unique_key=True)
    quantiles = params.quantiles_param(request.query)
    csv_out = _wants_csv(request)
    meta, buckets = await _duration_buckets(request, api, check, quantiles)
    columns = ["bucket", "runs", "failures"] + [label(q) for q in quantiles]
    return respond(csv_out, {**meta, "buckets": buckets}, buckets, columns)


@analyst_view
async def check_durations_svg(request: web.Request, api: ApiRequest) -> web.Response:
    check = own_check(request, api, by_unique_key=True)
    meta, buckets = await _duration_buckets(request, api, check, list(queries.ROLLUP_QUANTILES))
    svg = render_svg(meta["check"]["name"] or meta["check"]["slug"] or "check", meta["bucket"],
                     meta["since"], meta["until"], buckets)
    return web.Response(text=svg, content_type="image/svg+xml",
                        headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})


# --- fleet --------------------------------------------------------------------


def _fleet_rows(request: web.Request, api: ApiRequest, rows: list[dict]) -> list[dict]:
    checks = request.app[REGISTRY].checks
    out = []
    for r in rows:
        check = checks.get(r.pop("check_id"))
        if check is not None:
            out.append({**_check_ref(check, api.readonly), **r})
    return out


def _fleet_columns(api: ApiRequest, metrics: list[str]) -> list[str]:
    return ["name", "slug", "unique_key"] + ([] if api.readonly else ["uuid"]) + metrics


def _project_check_ids(request: web.Request, api: ApiRequest) -> list[str]:
    return [c.id for c in request.app[REGISTRY].project_checks(api.project.id)]


@analyst_view
async def slowest(request: web.Request, api: ApiRequest) -> web.Response:
    since, until = params.time_range(request.query, timedelta(days=7))
    limit = params.int_param(request.query, "limit", 20, 1, 1000)
    csv_out = _wants_csv(request)
    rows = await state.read(request, queries.slowest, api.project.id, _project_check_ids(request, api),
                            since, until, limit)
    rows = _fleet_rows(request, api, rows)
    columns = _fleet_columns(api, ["runs", "failures", "p50", "p95", "p99"])
    return respond(csv_out, {"since": since, "until": until, "checks": rows}, rows, columns)


@analyst_view
async def failure_rate(request: web.Request, api: ApiRequest) -> web.Response:
    since, until = params.time_range(request.query, timedelta(days=7))
    limit = params.int_param(request.query, "limit", 100, 1, 1000)
    csv_out = _wants_csv(request)
    rows = await state.read(request, queries.failure_rates, api.project.id,
                            _project_check_ids(request, api), since, until, limit)
    rows = _fleet_rows(request, api, rows)
    columns = _fleet_columns(api, ["runs", "failures", "failure_rate"])
    return respond(csv_out, {"since": since, "until": until, "checks": rows}, rows, columns)


@analyst_view
async def p95_growth(request: web.Request, api: ApiRequest) -> web.Response:
    until = params.time_param(request.query, "until", utcnow())
    weeks_ago = params.int_param(request.query, "weeks_ago", 0, 0, 520)
    until -= timedelta(weeks=weeks_ago)
    if until - 2 * queries.WEEK < params.EARLIEST:
        raise BadParam(f"invalid {'weeks_ago' if weeks_ago else 'until'}: out of range")
    limit = params.int_param(request.query, "limit", 20, 1, 1000)
    csv_out = _wants_csv(request)
    rows = await state.read(request, queries.p95_growth, api.project.id,
                            _project_check_ids(request, api), until, limit)
    rows = _fleet_rows(request, api, rows)
    start, middle, end = queries.window(until)
    body = {"previous_since": start, "since": middle, "until": end, "checks": rows}
    columns = _fleet_columns(api, ["runs", "runs_before", "p95", "p95_before", "growth"])
    return respond(csv_out, body, rows, columns)


async def chart_page(request: web.Request) -> web.Response:
    """The chart lives on the status board's check page now; the browser carries a ``#key=`` over."""
    code = request.match_info["code"]
    if not (UUID.match(code) or UNIQUE_KEY.match(code)):
        return error("not found", 404)
    raise web.HTTPFound(f"/board/checks/{code}")


def add_routes(app: web.Application) -> None:
    checks = "/api/v3/checks/{code}"
    app.router.add_get(checks + "/runs", check_runs)
    app.router.add_get(checks + "/durations", check_durations)
    app.router.add_get(checks + "/durations.svg", check_durations_svg)
    app.router.add_get(checks + "/chart", chart_page)
    app.router.add_get("/api/v3/analytics/slowest", slowest)
    app.router.add_get("/api/v3/analytics/failure-rate", failure_rate)
    app.router.add_get("/api/v3/analytics/p95-growth", p95_growth)
