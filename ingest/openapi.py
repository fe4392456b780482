"""The API described as OpenAPI 3.1, served at ``/api/openapi.json``."""

from __future__ import annotations

from aiohttp import web

from reads.durations import BUCKETS

from .keys import CONFIG

_UUID = {"type": "string", "format": "uuid"}
_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}}
_TEXT = {"text/plain": {"schema": {"type": "string"}}}


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _param(name: str, where: str = "path", schema: dict | None = None, required: bool | None = None) -> dict:
    return {"name": name, "in": where, "required": where == "path" if required is None else required,
            "schema": schema or {"type": "string"}}


_CHECK_SPEC = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 100},
        "slug": {"type": "string", "maxLength": 100, "pattern": "^[a-z0-9-_]*$"},
        "tags": {"type": "string"},
        "desc": {"type": "string"},
        "timeout": {"type": "integer", "maximum": 31536000},
        "grace": {"type": "integer", "maximum": 31536000},
        "schedule": {"type": "string", "maxLength": 100},
        "tz": {"type": "string"},
        "manual_resume": {"type": "boolean"},
        "methods": {"enum": ["", "POST"]},
        "channels": {"type": "string"},
        "success_kw": {"type": "string", "maxLength": 200},
        "failure_kw": {"type": "string", "maxLength": 200},
        "start_kw": {"type": "string", "maxLength": 200},
        "filter_subject": {"type": "boolean"},
        "filter_body": {"type": "boolean"},
        "filter_http_body": {"type": "boolean"},
        "filter_default_fail": {"type": "boolean"},
        "unique": {"type": "array", "items": {"enum": ["name", "slug", "tags", "timeout", "grace"]}},
        **{name: {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1, "description": text}
           for name, text in (
               ("failure_threshold", "pingstream extension: consecutive failures (fail pings, missed periods, "
                                     "runs over max_runtime or under min_runtime) before the check goes down"),
               ("recovery_threshold", "pingstream extension: consecutive successes before a down check is up"))},
        "flapping_threshold": {"type": ["integer", "null"], "minimum": 1, "maximum": 1000, "default": None,
                               "description": "pingstream extension: more up/down changes than this within a day "
                                              "are announced once (a flapping event), the flips held until it calms"},
        "broken_after": {"type": ["integer", "null"], "minimum": 1, "maximum": 31536000, "default": None,
                         "description": "pingstream extension: seconds down before one broken event"},
        "depends_on": {"type": "array", "maxItems": 20, "items": _UUID, "default": [],
                       "description": "pingstream extension: parent checks of the same project; while one is down, "
                                      "this check's transitions are held (dependency:<uuid>)"},
        **{name: {"oneOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": 31536000}, {"const": "auto"},
                            {"type": "null"}], "default": None, "description": text}
           for name, text in (
               ("min_runtime", "pingstream extension: seconds; a run (start to success) shorter than this is a "
                               "failure; auto: the 1st percentile of the check's recent runs"),
               ("max_runtime", "pingstream extension: seconds; a run still going this long after its start is "
                               "a failure, before its finish arrives; auto: the 99th percentile of its recent runs"))},
    },
}
_CHECK = {"type": "object", "properties": {
    "name": {"type": "string"}, "slug": {"type": "string"}, "status": {"type": "string"},
    "n_pings": {"type": "integer"}, "last_ping": {"type": ["string", "null"]}, "uuid": _UUID,
    "filter_http_body": {"type": "boolean"}, "filter_default_fail": {"type": "boolean"}, "badge_url": {"type": "string"},
    # pingstream's extension: present only when set to something other than the default
    "failure_threshold": {"type": "integer"}, "recovery_threshold": {"type": "integer"},
    "min_runtime": {"type": ["number", "string"]}, "max_runtime": {"type": ["number", "string"]},
    "flapping_threshold": {"type": "integer"}, "broken_after": {"type": "integer"},
    "depends_on": {"type": "array", "items": _UUID}}}
_AUTH = [{"apiKey": []}]


# pingstream's extension: a retry with the same key, within 24 h, is stored once (checks/idempotency.py).
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "Names this ping: a retry with the same key to the same check within 24 h is answered "
                   "as the first and stored once. 1-255 printable ASCII characters (a quoted value is unquoted).",
    "schema": {"type": "string", "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"},
}


def _ping_op(summary: str, extra_params: list) -> dict:
    responses = {
        "200": {"description": "OK", "content": _TEXT},
        "400": {"description": "invalid url format / invalid uuid format / invalid idempotency key / "
                               "idempotency key too long", "content": _TEXT},
        "404": {"description": "not found", "content": _TEXT},
        "503": {"description": "the event log could not acknowledge the ping; it may have been stored all "
                               "the same: retry with an Idempotency-Key to store it once", "content": _TEXT},
    }
    params = extra_params + [_param("rid", "query", _UUID), _IDEMPOTENCY_KEY]
    return {m: {"summary": summary, "parameters": params, "responses": responses} for m in ("get", "post", "head")}


def build(public_url: str) -> dict:
    api = "/api/v3/checks"
    check_path = [_param("uuid", schema=_UUID)]
    slug_params = [_param("ping_key"), _param("slug", schema={"type": "string", "pattern": "^[-a-zA-Z0-9_]+$"}),
                   _param("create", "query", {"enum": ["0", "1"]})]
    ok = lambda schema: {"description": "OK", "content": _json(schema)}  # noqa: E731
    err = {"description": "error", "content": _json(_ERROR)}
    # Another project's check (403), an unknown one (404), bad flips bounds (400): empty, as upstream.
    forbidden, missing, bad = ({"description": d} for d in ("another project's check", "not found", "bad query"))
    paths = {
        "/ping/{uuid}": _ping_op("Success signal", check_path),
        "/ping/{uuid}/start": _ping_op("Start signal", check_path),
        "/ping/{uuid}/fail": _ping_op("Failure signal", check_path),
        "/ping/{uuid}/log": _ping_op("Log signal", check_path),
        "/ping/{uuid}/{exit_status}": _ping_op("Exit status", check_path + [_param("exit_status", schema={"type": "integer", "minimum": 0, "maximum": 255})]),
        "/ping/{ping_key}/{slug}": _ping_op("Success signal by slug", slug_params),
        "/ping/{ping_key}/{slug}/start": _ping_op("Start signal by slug", slug_params),
        "/ping/{ping_key}/{slug}/fail": _ping_op("Failure signal by slug", slug_params),
        "/ping/{ping_key}/{slug}/log": _ping_op("Log signal by slug", slug_params),
        api + "/": {
            "get": {"summary": "List checks", "security": _AUTH,
                    "parameters": [_param("slug", "query"), _param("tag", "query")],
                    "responses": {"200": ok({"type": "object", "properties": {"checks": {"type": "array", "items": _CHECK}}}), "401": err}},
            "post": {"summary": "Create (or upsert with unique) a check", "security": _AUTH,
                     "requestBody": {"content": _json(_CHECK_SPEC)},
                     "responses": {"201": ok(_CHECK), "200": ok(_CHECK), "400": err, "401": err}},
        },
        api + "/{uuid}": {
            "get": {"summary": "Get a check", "security": _AUTH, "parameters": check_path,
                    "responses": {"200": ok(_CHECK), "401": err, "403": forbidden, "404": missing}},
            "post": {"summary": "Update a check", "security": _AUTH, "parameters": check_path,
                     "requestBody": {"content": _json(_CHECK_SPEC)},
                     "responses": {"200": ok(_CHECK), "400": err, "401": err, "403": forbidden, "404": missing}},
            "delete": {"summary": "Delete a check", "security": _AUTH, "parameters": check_path,
                       "responses": {"200": ok(_CHECK), "401": err, "403": forbidden, "404": missing}},
        },
        api + "/{uuid}/pause": {"post": {"summary": "Pause", "security": _AUTH, "parameters": check_path,
                                         "responses": {"200": ok(_CHECK), "401": err, "403": forbidden, "404": missing}}},
        api + "/{uuid}/resume": {"post": {"summary": "Resume", "security": _AUTH, "parameters": check_path,
                                          "responses": {"200": ok(_CHECK), "409": {"description": "check is not paused"}, "401": err}}},
        api + "/{uuid}/pings/": {"get": {"summary": "List logged pings", "security": _AUTH, "parameters": check_path,
                                         "responses": {"200": ok({"type": "object"}), "401": err, "403": forbidden, "404": missing}}},
        api + "/{uuid}/pings/{n}/body": {"get": {"summary": "A ping's body", "security": _AUTH,
                                                 "parameters": check_path + [_param("n", schema={"type": "integer", "minimum": 1})],
                                                 "responses": {"200": {"description": "body", "content": _TEXT}, "404": missing}}},
        api + "/{uuid}/flips/": {"get": {"summary": "List status changes", "security": _AUTH,
                                         "parameters": check_path + [_param(n, "query", {"type": "integer", "minimum": 0}) for n in ("seconds", "start", "end")],
                                         "responses": {"200": ok({"type": "object"}), "400": bad, "401": err}}},
        api + "/{uuid}/notifications/": {"get": {
            "summary": "The check's alert deliveries, newest first (pingstream's extension)", "security": _AUTH,
            "parameters": check_path, "responses": {"200": ok({"type": "object"}), "401": err, "403": forbidden, "404": missing}}},
        "/api/v3/channels/": {
            "get": {"summary": "List integrations", "security": _AUTH,
                    "responses": {"200": ok({"type": "object"}), "401": err}},
            "post": {"summary": "Create a channel (pingstream's extension; a webhook's secret is in this answer only)",
                     "security": _AUTH,
                     "requestBody": {"content": _json({"type": "object", "required": ["kind"], "properties": {
                         "name": {"type": "string"}, "kind": {"enum": ["webhook", "email", "apprise"]},
                         "url": {"type": "string"}, "email": {"type": "string"},
                         "events": {"type": "array", "items": {"enum": ["down", "up", "started", "grace", "failure",
                                                                         "paused", "ingest_gap", "flapping", "broken",
                                                                         "ingest_anomaly"]}},
                         "method": {"enum": ["GET", "POST", "PUT"]}, "headers": {"type": "object"},
                         "body": {"type": "string"}}})},
                     "responses": {"201": ok({"type": "object"}), "400": bad, "401": err}}},
        "/api/v3/channels/{channel}": {"delete": {
            "summary": "Remove a channel (pingstream's extension)", "security": _AUTH,
            "parameters": [_param("channel", schema={"type": "string", "format": "uuid"})],
            "responses": {"200": ok({"type": "object"}), "401": err, "403": forbidden, "404": missing}}},
        "/api/v3/badges/": {"get": {"summary": "Badge URLs per tag", "security": _AUTH,
                                    "responses": {"200": ok({"type": "object"}), "401": err}}},
        "/api/v3/status/": {"get": {"summary": "Liveness (any method, no key)", "responses": {"200": {"description": "OK", "content": _TEXT}}}},
        "/badge/{badge_key}/{signature}/{tag}.{fmt}": {"get": {
            "summary": "A tag's badge (a signature ending in -2: up/down only)",
            "parameters": [_param("badge_key"), _param("signature"), _param("tag"), _param("fmt", schema={"enum": ["svg", "json", "shields"]})],
            "responses": {"200": {"description": "badge"}, "404": missing}}},
        "/projects/{project}/metrics/{key}": {"get": {
            "summary": "The project's checks for Prometheus, in Healthchecks' format (also at /projects/{project}/metrics/ "
                       "with Authorization: Bearer <read-only key>)",
            "parameters": [_param("project", schema={"type": "string", "format": "uuid"}), _param("key")],
            "responses": {"200": {"description": "Prometheus text", "content": _TEXT}, "400": {"description": "key is not 32 characters"},
                          "403": {"description": "not a read-only key"}}}},
        "/b/{states}/{badge_key}.{fmt}": {"get": {
            "summary": "A check's badge (its badge_url; states 3 shows late)",
            "parameters": [_param("states", schema={"enum": [2, 3]}), _param("badge_key"), _param("fmt", schema={"enum": ["svg", "json", "shields"]})],
            "responses": {"200": {"description": "badge"}, "404": missing}}},
        "/api/v1/monitors": {"post": {"summary": "Create a SCHEDULED monitor", "security": [{"bearer": []}],
                                      "requestBody": {"content": _json({"type": "object", "required": ["type"], "properties": {
                                          "type": {"enum": ["SCHEDULED"]}, "name": {"type": "string"}, "interval": {"type": "integer"},
                                          "gracePeriod": {"type": "integer"}, "schedule": {"type": "string"}, "timezone": {"type": "string"}}})},
                                      "responses": {"201": ok({"type": "object"}), "400": err, "401": err}},
                             "get": {"summary": "List the project's monitors (every check is a SCHEDULED monitor)",
                                     "security": [{"bearer": []}],
                                     "responses": {"200": ok({"type": "object", "properties": {"data": {"type": "array"}}}),
                                                   "401": err}}},
        "/api/v1/monitors/{id}": {"get": {"summary": "Get a monitor", "security": [{"bearer": []}], "parameters": [_param("id")],
                                          "responses": {"200": ok({"type": "object"}), "401": err, "404": err}}},
        "/api/v1/monitors/{id}/checkin": {m: {"summary": "Record a checkin", "parameters": [_param("id"), _param("status", "query", {"enum": ["ok", "fail"]}), _IDEMPOTENCY_KEY],
                                              "responses": {"200": ok({"type": "object", "properties": {"recorded": {"enum": ["ok", "failure"]}, "monitor": {"type": "string"}}}),
                                                            "400": err, "404": err}} for m in ("get", "post")},
    }
    paths.update(_analytics_paths())
    paths.update(_window_paths())
    return {
        "openapi": "3.1.0",
        "info": {"title": "pingstream", "version": "0.1.0",
                 "description": "Healthchecks-compatible Pinging and Management API, and the Overwatch checkin endpoint."},
        "servers": [{"url": public_url}],
        "components": {"securitySchemes": {
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
            "bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }


def _analytics_paths() -> dict:
    """The Analyst API's entries (ingest/analytics.py)."""
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
    bucket = q("bucket", {"enum": list(BUCKETS)})

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
        "/api/v3/checks/{code}/chart": {"get": {"summary": "The check's page on the status board", "parameters": [code],
                                                "responses": {"302": {"description": "to /board/checks/{code}"}}}},
        "/api/v3/checks/{code}/ping-log": op("Recent pings, without bodies, addresses or user agents (any key)",
                                             [code, q("limit", {"type": "integer", "minimum": 1, "maximum": 100})]),
        "/api/v3/analytics/slowest": op("Checks by p95 duration", [*span, limit, fmt]),
        "/api/v3/analytics/failure-rate": op("Failure rate per check", [*span, limit, fmt]),
        "/api/v3/analytics/p95-growth": op("Week-over-week p95 growth", [
            q("until", time), q("weeks_ago", {"type": "integer", "minimum": 0}), limit, fmt]),
    }


def _window_paths() -> dict:
    """Maintenance windows and snooze (pingstream's extension, ingest/windows.py)."""
    err = {"description": "error", "content": _json(_ERROR)}
    window = {"type": "object", "properties": {
        "id": _UUID, "kind": {"enum": ["maintenance", "snooze"]},
        "start": {"type": "string", "format": "date-time"}, "end": {"type": "string", "format": "date-time"},
        "cron": {"type": "string"}, "duration": {"type": "integer"}, "tz": {"type": "string"}}}
    new_window = {"oneOf": [
        {"type": "object", "required": ["start", "end"], "properties": {
            "start": {"type": "string", "format": "date-time"}, "end": {"type": "string", "format": "date-time"}}},
        {"type": "object", "required": ["cron", "duration"], "properties": {
            "cron": {"type": "string"}, "duration": {"type": "integer", "minimum": 1, "maximum": 366 * 86400},
            "tz": {"type": "string", "default": "UTC"}}}]}
    listing = {"description": "OK", "content": _json({"type": "object", "properties": {
        "windows": {"type": "array", "items": window}}})}
    one = {"description": "OK", "content": _json(window)}
    errors = {s: err for s in ("400", "401", "403", "404")}

    def op(summary: str, params: list, responses: dict, body: dict | None = None) -> dict:
        out = {"summary": summary + " (pingstream extension)", "security": _AUTH, "parameters": params,
               "responses": {**responses, **errors}}
        if body is not None:
            out["requestBody"] = {"content": _json(body)}
        return out

    uuid, wid = _param("uuid"), _param("id")
    return {
        "/api/v3/checks/{uuid}/windows/": {
            "get": op("A check's maintenance windows", [uuid], {"200": listing}),
            "post": op("Add a maintenance window to a check: notifications inside it are held", [uuid],
                       {"201": one}, new_window)},
        "/api/v3/checks/{uuid}/windows/{id}": {"delete": op("Remove a check's window", [uuid, wid], {"200": one})},
        "/api/v3/checks/{uuid}/snooze": {"post": op("Snooze a check: a window from now", [uuid], {"201": one}, {
            "type": "object", "required": ["duration"], "properties": {"duration": {"type": "integer", "minimum": 1}}})},
        "/api/v3/windows/": {
            "get": op("The project's maintenance windows (every check's)", [], {"200": listing}),
            "post": op("Add a maintenance window to the project", [], {"201": one}, new_window)},
        "/api/v3/windows/{id}": {"delete": op("Remove a project window", [wid], {"200": one})},
    }


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(build(request.app[CONFIG].public_url))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/openapi.json", openapi_json)
