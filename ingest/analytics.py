"""The Analyst API: run durations of a check, fleet rankings, and a duration chart (SVG + a tiny page).

Reads only, from ClickHouse (projector/analytics.py); any API key of the project may read, and a
check of another project answers 403/404 as in the Management API. JSON by default, CSV with
``?format=csv`` or ``Accept: text/csv``. Every bad parameter is a 400 naming it.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import math
import re
from datetime import datetime, timedelta, timezone
from xml.sax.saxutils import escape

from aiohttp import web

from reads import durations as queries
from schemas.events import CheckConfig, utcnow

from .keys import CLICKHOUSE, REGISTRY
from checks.rules import UUID
from checks.spec import UNIQUE_KEY, unique_key

from .management import ApiRequest, _own_check, authorize, error

log = logging.getLogger(__name__)

DEFAULT_RANGE = {"1h": timedelta(days=7), "1d": timedelta(days=90)}
MAX_BUCKETS = 10000
_EARLIEST, _LATEST = datetime(1970, 1, 2, tzinfo=timezone.utc), datetime(2200, 1, 1, tzinfo=timezone.utc)
# A quantile level: 0..1 with at most six decimals (no exponents, signs, underscores or NaN).
_LEVEL = re.compile(r"(0(\.\d{1,6})?|1(\.0{1,6})?|\.\d{1,6})\Z")


class BadParam(ValueError):
    """A query parameter that cannot be served: a 400 whose message names it."""


class QueryFailed(RuntimeError):
    """ClickHouse did not answer: a 503, retry later."""


# --- parameters ---------------------------------------------------------------


def _time(request: web.Request, name: str, default: datetime) -> datetime:
    raw = request.query.get(name, "")
    if raw == "":
        return default
    try:
        if raw.isascii() and raw.isdigit() and len(raw) <= 12:
            value = datetime.fromtimestamp(int(raw), timezone.utc)
        else:
            value = datetime.fromisoformat(raw)
            value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    except (ValueError, OverflowError, OSError):
        raise BadParam(f"invalid {name}: expected an ISO 8601 time") from None
    if not _EARLIEST <= value < _LATEST:
        raise BadParam(f"invalid {name}: out of range")
    return value


def _range(request: web.Request, default: timedelta) -> tuple[datetime, datetime]:
    until = _time(request, "until", utcnow())
    since = _time(request, "since", until - default)
    if since >= until:
        raise BadParam("invalid since: must be before until")
    return since, until


def _int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name, "")
    if raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9 or not low <= int(raw) <= high:
        raise BadParam(f"invalid {name}: expected an integer {low}..{high}")
    return int(raw)


def _bucket(request: web.Request) -> str:
    bucket = request.query.get("bucket", "1h")
    if bucket not in queries.BUCKETS:
        raise BadParam("invalid bucket: expected 1h or 1d")
    return bucket


def _quantiles(request: web.Request) -> list[float]:
    raw = request.query.get("q", "")
    if raw == "":
        return list(queries.ROLLUP_QUANTILES)
    parts = raw.split(",")
    if len(parts) > queries.MAX_QUANTILES or not all(_LEVEL.match(p.strip()) for p in parts):
        raise BadParam(f"invalid q: expected 1..{queries.MAX_QUANTILES} comma-separated values in 0..1")
    return list(dict.fromkeys(float(p) for p in parts))  # duplicates once, order kept


def _duration_range(request: web.Request, bucket: str) -> tuple[datetime, datetime]:
    since, until = _range(request, DEFAULT_RANGE[bucket])
    if (until - queries.align(since, bucket)) / queries.BUCKETS[bucket][1] > MAX_BUCKETS:
        raise BadParam(f"invalid since: more than {MAX_BUCKETS} buckets")
    return since, until


def label(q: float) -> str:
    """0.5 → p50, 0.95 → p95, 0.999 → p99.9."""
    return f"p{round(q * 100, 6):g}"


# --- responses ----------------------------------------------------------------


def _wants_csv(request: web.Request) -> bool:
    fmt = request.query.get("format", "")
    if fmt not in ("", "json", "csv"):
        raise BadParam("invalid format: expected json or csv")
    return fmt == "csv" or (fmt == "" and "text/csv" in request.headers.get("Accept", ""))


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value  # a check named "=HYPERLINK(...)" stays text in a spreadsheet
    return str(value)


def _respond(csv_out: bool, body: dict, rows: list[dict], columns: list[str]) -> web.Response:
    if csv_out:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_cell(r.get(c)) for c in columns] for r in rows)
        return web.Response(text=out.getvalue(), content_type="text/csv")
    return web.json_response(body, dumps=_dumps)


def _dumps(obj) -> str:
    return json.dumps(obj, default=_cell)


# --- the shell every handler goes through -------------------------------------


async def _project(request: web.Request) -> ApiRequest | web.Response:
    api = await authorize(request, write=False)
    if isinstance(api, web.Response):
        return api
    if request.app.get(CLICKHOUSE) is None:
        return error("analytics need ClickHouse", 503)
    return api


def _check(request: web.Request, api: ApiRequest) -> CheckConfig | web.Response:
    """The check named by uuid or (for read-only keys, which never see uuids) by unique key."""
    code = request.match_info["code"]
    if UNIQUE_KEY.match(code):
        found = next((c for c in request.app[REGISTRY].project_checks(api.project.id) if unique_key(c.id) == code), None)
        return found if found is not None else error("not found", 404)
    return _own_check(request, api, code)


def _check_ref(check: CheckConfig, readonly: bool) -> dict:
    ref = {"name": check.name, "slug": check.slug, "unique_key": unique_key(check.id)}
    if not readonly:
        ref["uuid"] = check.id
    return ref


async def _query(coro):
    """A failing ClickHouse answers 503 (retry later), never a 500 with a traceback."""
    try:
        return await coro
    except Exception as exc:
        log.exception("analytics query failed")
        raise QueryFailed() from exc


def handler(fn):
    """Auth, ClickHouse present, and parameter errors as 400s, around ``fn(request, api)``."""

    @functools.wraps(fn)
    async def wrapped(request: web.Request) -> web.Response:
        api = await _project(request)
        if isinstance(api, web.Response):
            return api
        try:
            return await fn(request, api)
        except BadParam as exc:
            return error(str(exc))
        except QueryFailed:
            return error("analytics query failed", 503)

    return wrapped


# --- per check ----------------------------------------------------------------

RUN_COLUMNS = ["started_at", "finished_at", "duration_s", "outcome", "exit_status", "rid", "event_id"]


@handler
async def check_runs(request: web.Request, api: ApiRequest) -> web.Response:
    check = _check(request, api)
    if isinstance(check, web.Response):
        return check
    since, until = _range(request, timedelta(days=7))
    limit = _int(request, "limit", 100, 1, 10000)
    csv_out = _wants_csv(request)
    rows = await _query(queries.runs(request.app[CLICKHOUSE], check.id, since, until, limit))
    rows = [{c: r[c] for c in RUN_COLUMNS} for r in rows]
    body = {"check": _check_ref(check, api.readonly), "since": since, "until": until, "runs": rows}
    return _respond(csv_out, body, rows, RUN_COLUMNS)


async def _duration_buckets(request: web.Request, api: ApiRequest, check: CheckConfig,
                            quantiles: list[float]) -> tuple[dict, list[dict]]:
    bucket = _bucket(request)
    since, until = _duration_range(request, bucket)
    rows = await _query(queries.durations(request.app[CLICKHOUSE], check.id, quantiles, bucket, since, until))
    names = [label(q) for q in quantiles]
    buckets = [{"bucket": r["bucket"], "runs": r["runs"], "failures": r["failures"], **dict(zip(names, r["quantiles"]))}
               for r in rows]
    meta = {"check": _check_ref(check, api.readonly), "bucket": bucket,
            "since": queries.align(since, bucket), "until": until, "quantiles": quantiles}
    return meta, buckets


@handler
async def check_durations(request: web.Request, api: ApiRequest) -> web.Response:
    check = _check(request, api)
    if isinstance(check, web.Response):
        return check
    quantiles = _quantiles(request)
    csv_out = _wants_csv(request)
    meta, buckets = await _duration_buckets(request, api, check, quantiles)
    columns = ["bucket", "runs", "failures"] + [label(q) for q in quantiles]
    return _respond(csv_out, {**meta, "buckets": buckets}, buckets, columns)


@handler
async def check_durations_svg(request: web.Request, api: ApiRequest) -> web.Response:
    check = _check(request, api)
    if isinstance(check, web.Response):
        return check
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


@handler
async def slowest(request: web.Request, api: ApiRequest) -> web.Response:
    since, until = _range(request, timedelta(days=7))
    limit = _int(request, "limit", 20, 1, 1000)
    csv_out = _wants_csv(request)
    rows = await _query(queries.slowest(request.app[CLICKHOUSE], api.project.id, _project_check_ids(request, api),
                                        since, until, limit))
    rows = _fleet_rows(request, api, rows)
    columns = _fleet_columns(api, ["runs", "failures", "p50", "p95", "p99"])
    return _respond(csv_out, {"since": since, "until": until, "checks": rows}, rows, columns)


@handler
async def failure_rate(request: web.Request, api: ApiRequest) -> web.Response:
    since, until = _range(request, timedelta(days=7))
    limit = _int(request, "limit", 100, 1, 1000)
    csv_out = _wants_csv(request)
    rows = await _query(queries.failure_rates(request.app[CLICKHOUSE], api.project.id,
                                              _project_check_ids(request, api), since, until, limit))
    rows = _fleet_rows(request, api, rows)
    columns = _fleet_columns(api, ["runs", "failures", "failure_rate"])
    return _respond(csv_out, {"since": since, "until": until, "checks": rows}, rows, columns)


@handler
async def p95_growth(request: web.Request, api: ApiRequest) -> web.Response:
    until = _time(request, "until", utcnow())
    weeks_ago = _int(request, "weeks_ago", 0, 0, 520)
    until -= timedelta(weeks=weeks_ago)
    if until - 2 * queries.WEEK < _EARLIEST:
        raise BadParam(f"invalid {'weeks_ago' if weeks_ago else 'until'}: out of range")
    limit = _int(request, "limit", 20, 1, 1000)
    csv_out = _wants_csv(request)
    rows = await _query(queries.p95_growth(request.app[CLICKHOUSE], api.project.id,
                                           _project_check_ids(request, api), until, limit))
    rows = _fleet_rows(request, api, rows)
    start, middle, end = queries.window(until)
    body = {"previous_since": start, "since": middle, "until": end, "checks": rows}
    columns = _fleet_columns(api, ["runs", "runs_before", "p95", "p95_before", "growth"])
    return _respond(csv_out, body, rows, columns)


# --- the chart ----------------------------------------------------------------

_SERIES = (("p50", "#2b83ba"), ("p95", "#fdae61"), ("p99", "#d7191c"))
_W, _H, _LEFT, _RIGHT, _TOP, _BOTTOM = 840, 340, 70, 40, 40, 50


def y_axis(largest_s: float) -> tuple[str, float, list[float]]:
    """(unit, seconds per unit, ticks in units): 3 to 5 round steps covering ``largest_s``."""
    largest_s = largest_s if largest_s > 0 else 1.0  # no data, or only instant runs: a 1 s scale
    unit, factor = next((u, f) for u, f, at_least in (("h", 3600.0, 7200), ("m", 60.0, 120), ("s", 1.0, 1), ("ms", 0.001, 0))
                        if largest_s >= at_least)
    largest = largest_s / factor
    power = 10 ** math.floor(math.log10(largest / 4))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= largest / 4)
    return unit, factor, [round(step * i, 9) for i in range(math.ceil(largest / step - 1e-9) + 1)]


def x_ticks(since: datetime, until: datetime, bucket: str) -> list[datetime]:
    """At most 7 ticks on whole hours (1h) or days (1d), at round multiples since the epoch."""
    size = queries.BUCKETS[bucket][1]
    multiples = (1, 2, 3, 6, 12, 24, 48, 72, 168, 336, 720) if bucket == "1h" else (1, 2, 7, 14, 28, 91, 182, 364)
    span = (until - since) / size
    every = next((m for m in multiples if span / m <= 6), multiples[-1] * math.ceil(span / multiples[-1] / 6))
    step_s = every * size.total_seconds()
    first = math.ceil(since.timestamp() / step_s) * step_s
    ticks, t = [], first
    while t <= until.timestamp():
        ticks.append(datetime.fromtimestamp(t, timezone.utc))
        t += step_s
    return ticks


def render_svg(title: str, bucket: str, since: datetime, until: datetime, buckets: list[dict]) -> str:
    """p50/p95/p99 per bucket as lines over time; a gap in the data is a gap in the line."""
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    span = max((until - since).total_seconds(), 1.0)
    step = queries.BUCKETS[bucket][1]
    unit, factor, levels = y_axis(max((b[n] for b in buckets for n, _ in _SERIES if b.get(n) is not None), default=0.0))
    top = levels[-1] * factor

    def x(t: datetime) -> float:
        return _LEFT + plot_w * min(max((t - since).total_seconds() / span, 0.0), 1.0)

    def y(v: float) -> float:
        return _TOP + plot_h * (1 - v / top)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" '
        'font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}: run duration per {bucket}</title>",
        f'<rect width="{_W}" height="{_H}" fill="white"/>',
        # Cut so the heading stays clear of the legend on the same line.
        f'<text x="{_LEFT}" y="20" font-size="13" font-weight="bold">{escape(title[:40] + "…" * (len(title) > 40))}'
        f' — run duration per {bucket} (UTC)</text>',
    ]
    for level in levels:  # y grid and labels
        v = level * factor
        out.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{_LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{level:g}{unit}</text>')
    time_format = "%m-%d %H:%M" if bucket == "1h" else "%Y-%m-%d"
    for t in x_ticks(since, until, bucket):  # x labels
        out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{_H - _BOTTOM}" y2="{_H - _BOTTOM + 4}" stroke="#333"/>')
        out.append(f'<text x="{x(t):.1f}" y="{_H - _BOTTOM + 18}" text-anchor="middle">{t.strftime(time_format)}</text>')
    out.append(f'<line x1="{_LEFT}" x2="{_LEFT}" y1="{_TOP}" y2="{_H - _BOTTOM}" stroke="#333"/>')
    out.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{_H - _BOTTOM}" y2="{_H - _BOTTOM}" stroke="#333"/>')
    out.append(f'<text x="16" y="{_TOP + plot_h / 2:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 16 {_TOP + plot_h / 2:.1f})">duration</text>')
    if not buckets:
        out.append(f'<text x="{_LEFT + plot_w / 2:.1f}" y="{_TOP + plot_h / 2:.1f}" text-anchor="middle" '
                   'fill="#888">no runs in this range</text>')
    for name, colour in _SERIES:
        commands, previous = [], None
        for b in buckets:
            if b.get(name) is None:
                previous = None
                continue
            # Buckets are consecutive or the line breaks: a missing hour is not a straight trend.
            move = previous is None or b["bucket"] - previous > step
            commands.append(f'{"M" if move else "L"}{x(b["bucket"] + step / 2):.1f},{y(b[name]):.1f}')
            previous = b["bucket"]
        out.append(f'<path id="series-{name}" d="{" ".join(commands)}" fill="none" stroke="{colour}" '
                   'stroke-width="2" stroke-linejoin="round"/>')
        if len(buckets) <= 60:
            out.extend(f'<circle cx="{x(b["bucket"] + step / 2):.1f}" cy="{y(b[name]):.1f}" r="2.5" fill="{colour}"/>'
                       for b in buckets if b.get(name) is not None)
    for i, (name, colour) in enumerate(_SERIES):  # legend
        lx = _W - _RIGHT - 70 * (len(_SERIES) - i)
        out.append(f'<line x1="{lx}" x2="{lx + 18}" y1="16" y2="16" stroke="{colour}" stroke-width="3"/>')
        out.append(f'<text x="{lx + 22}" y="20">{name}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pingstream: run durations</title>
<style>body{font-family:sans-serif;margin:2em} img{display:block;margin-top:1em;max-width:100%} #msg{color:#b00}</style>
</head><body>
<h1>Run durations</h1>
<form id="f">
  <label>API key <input id="key" type="password" size="34" autocomplete="off" required></label>
  <label>bucket <select id="bucket"><option>1h</option><option>1d</option></select></label>
  <button>Show</button>
</form>
<p id="msg"></p>
<img id="chart" alt="">
<script>
document.getElementById("f").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const msg = document.getElementById("msg"), img = document.getElementById("chart");
  msg.textContent = "";
  const bucket = document.getElementById("bucket").value;
  const r = await fetch("durations.svg?bucket=" + encodeURIComponent(bucket),
                        {headers: {"X-Api-Key": document.getElementById("key").value}});
  if (!r.ok) {
    let text = r.statusText;
    try { text = (await r.json()).error; } catch (e) {}
    msg.textContent = r.status + " " + text;
    return;
  }
  if (img.src) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(await r.blob());
  img.alt = "p50/p95/p99 run duration per " + bucket;
});
</script>
</body></html>
"""


async def chart_page(request: web.Request) -> web.Response:
    # Static: it names no check and holds no data; the chart itself is fetched with the key typed in.
    code = request.match_info["code"]
    if not (UUID.match(code) or UNIQUE_KEY.match(code)):
        return error("not found", 404)
    return web.Response(text=_PAGE, content_type="text/html", headers={
        "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                   "img-src blob:; connect-src 'self'"})


def add_routes(app: web.Application) -> None:
    checks = "/api/v3/checks/{code}"
    app.router.add_get(checks + "/runs", check_runs)
    app.router.add_get(checks + "/durations", check_durations)
    app.router.add_get(checks + "/durations.svg", check_durations_svg)
    app.router.add_get(checks + "/chart", chart_page)
    app.router.add_get("/api/v3/analytics/slowest", slowest)
    app.router.add_get("/api/v3/analytics/failure-rate", failure_rate)
    app.router.add_get("/api/v3/analytics/p95-growth", p95_growth)


def openapi_paths() -> dict:
    """This API's entries for ``/api/openapi.json`` (appended by ingest/openapi.py)."""
    err = {"description": "error", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"error": {"type": "string"}}}}}}
    errors = {s: err for s in ("400", "401", "403", "404", "503")}
    ok = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}},
                                           "text/csv": {"schema": {"type": "string"}}}}

    def q(name: str, schema: dict | None = None) -> dict:
        return {"name": name, "in": "query", "required": False, "schema": schema or {"type": "string"}}

    code = {"name": "code", "in": "path", "required": True,
            "schema": {"type": "string"}, "description": "check uuid, or its unique_key"}
    time = {"type": "string", "description": "ISO 8601 time or unix seconds"}
    span = [q("since", time), q("until", time)]
    fmt = q("format", {"enum": ["json", "csv"]})
    bucket = q("bucket", {"enum": list(queries.BUCKETS)})

    def op(summary: str, params: list, responses: dict | None = None) -> dict:
        return {"get": {"summary": summary, "security": [{"apiKey": []}], "parameters": params,
                        "responses": {"200": ok, **errors, **(responses or {})}}}

    limit = q("limit", {"type": "integer", "minimum": 1})
    svg = {"200": {"description": "chart", "content": {"image/svg+xml": {"schema": {"type": "string"}}}}}
    return {
        "/api/v3/checks/{code}/runs": op("Runs of a check", [code, *span, limit, fmt]),
        "/api/v3/checks/{code}/durations": op("Duration quantiles per bucket", [
            code, q("q", {"type": "string", "description": "1..10 comma-separated levels in 0..1"}),
            bucket, *span, fmt]),
        "/api/v3/checks/{code}/durations.svg": op("p50/p95/p99 duration chart", [code, bucket, *span], svg),
        "/api/v3/checks/{code}/chart": {"get": {"summary": "A page showing the duration chart", "parameters": [code],
                                                "responses": {"200": {"description": "HTML page"}}}},
        "/api/v3/analytics/slowest": op("Checks by p95 duration", [*span, limit, fmt]),
        "/api/v3/analytics/failure-rate": op("Failure rate per check", [*span, limit, fmt]),
        "/api/v3/analytics/p95-growth": op("Week-over-week p95 growth", [
            q("until", time), q("weeks_ago", {"type": "integer", "minimum": 0}), limit, fmt]),
    }
