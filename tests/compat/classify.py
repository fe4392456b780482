"""Names the cause of a remaining difference (used to write known_differences.json reasons and
DIFFERENCES.md). Heuristic and only for reporting: the test compares answers, not causes."""

from __future__ import annotations

import re

# (cause id, test on (scenario id, step request, diff)) in priority order
CAUSES: list[tuple[str, str, callable]] = [
    ("cors-preflight", "OPTIONS preflight on the Management API answers 401/404/405 instead of 204 (hc/api/decorators.py:cors)",
     lambda sid, req, d: req.get("method") == "OPTIONS" and "/api/" in req.get("url", "")),
    ("status-endpoint", "GET /api/v3/status/ is missing (404; Healthchecks: 200 OK) (hc/api/views.py:status)",
     lambda sid, req, d: "/status/" in req.get("url", "")),
    ("badges", "badges are missing: /api/v3/badges/, /badge/<key>/<sig>/<tag>.<fmt>, /b/<states>/<badge_key>.<fmt> (hc/api/views.py:badges, badge, check_badge)",
     lambda sid, req, d: "badge" in sid),
    ("slug-case", "upper-case slug or action word in /ping/<key>/<slug>[/...] or /ping/<uuid>/<WORD>: Healthchecks 400 'invalid url format', ping not counted (hc/api/views.py:ping_by_slug)",
     lambda sid, req, d: "uppercase" in sid and "/ping/" in req.get("url", "") and d["where"] in ("status", "body") or sid == "ping/slug/uppercase-slug-create"),
    ("trailing-slash", "/ping/<uuid>/ (trailing slash) is a success ping in Healthchecks (hc/api/urls.py: uuid_urls path('')); pingstream 404",
     lambda sid, req, d: sid == "ping/uuid/trailing-slash"),
    ("channels-validation", "unknown channel identifiers are refused with 400 'invalid channel identifier: X' (hc/api/views.py:_update, BadChannelException)",
     lambda sid, req, d: sid.startswith("validation/channels")),
    ("tz-legacy", "legacy time zone names are converted (Europe/Kiev -> Europe/Kyiv, Asia/Calcutta -> Asia/Kolkata) (hc/api/views.py:Spec.check_tz)",
     lambda sid, req, d: "tz-legacy" in sid),
    ("validation", "request validation differs (hc/api/views.py:Spec, format_first_error)",
     lambda sid, req, d: sid.startswith("validation/") or d["where"] == "body.error"),
    ("methods-routing", "routing, methods and query validation of the Management API (405 with CORS headers and an empty body, DELETE on the collection, APPEND_SLASH 301, /api/v3/metrics/ 403, empty ?start= is 400) (hc/api/decorators.py:cors, hc/api/views.py:metrics, hc/api/forms.py:FlipsFiltersForm, django CommonMiddleware)",
     lambda sid, req, d: sid.startswith(("api/put", "api/patch", "api/delete-collection", "api/no-trailing", "api/channels-post", "api/metrics", "api/flips-invalid"))),
    ("filters", "filter_http_body / start_kw / success_kw / failure_kw / filter_default_fail are not applied to ping bodies: action ign/start/success/fail by keywords, precedence fail > success > start, log and exit-status pings overridden (hc/api/views.py:ping, hc/lib/string.py:match_keywords)",
     lambda sid, req, d: sid.startswith(("filter/", "methods/post-only-with")) and d["where"] != "body.flips[len]"),
    ("duration-rounding", "ping durations are not rounded to 2 decimals (round(duration.total_seconds(), 2)) (hc/api/models.py:Ping.to_dict)",
     lambda sid, req, d: d["where"].endswith(".duration") and isinstance(d["expected"], str) and isinstance(d["actual"], str)
     and d["expected"].startswith("<dur") and d["actual"].startswith("<dur") and d["expected"].split(",")[0] == d["actual"].split(",")[0]),
    ("flips-order", "/flips/ are oldest first; Healthchecks newest first (order_by('-id')) (hc/api/views.py:flips)",
     lambda sid, req, d: re.fullmatch(r"body\.flips\[\d+\]\.(up|timestamp)", d["where"]) is not None),
    ("pause-flips", "pausing and resuming record no flip (Healthchecks: create_flip('paused') / create_flip('new'), shown as up: 0) (hc/api/views.py:pause, resume)",
     lambda sid, req, d: d["where"] == "body.flips[len]" and ("pause" in sid or "resume" in str(req))),
    ("flips", "flips differ in number (hc/api/models.py:Check.ping create_flip on every status change incl. new -> up; pause/resume flips)",
     lambda sid, req, d: d["where"].startswith("body.flips")),
    ("started-status", "after a start ping v3 reports status 'started' (Healthchecks keeps new/up/down/paused and says started: true; 'started' only in v1) and next_ping is not last_start (hc/api/models.py:Check.get_status(with_started=v==1), get_grace_start)",
     lambda sid, req, d: d["where"].endswith("status") and "started" in (d["expected"], d["actual"])),
    ("next-ping", "next_ping differs: Healthchecks has null for down/new/paused checks and the last start time while a run is open (hc/api/models.py:Check.get_grace_start)",
     lambda sid, req, d: d["where"].endswith("next_ping")),
    ("runs", "run bookkeeping: started / last_duration after start, success, fail with or without rid (hc/api/models.py:Check.ping)",
     lambda sid, req, d: d["where"].endswith(("started", "last_duration")) or d["where"].endswith(".duration")),
    ("pause", "pings on paused checks (start must not resume, manual_resume ignores pings), pause/resume answers (hc/api/models.py:Check.ping, hc/api/views.py:pause, resume)",
     lambda sid, req, d: "pause" in sid or "resume" in str(req) or "paused" in (d["expected"], d["actual"])),
    ("ua", "user agents are cut to 200 characters (hc/api/models.py:Check.ping: ua[:200])",
     lambda sid, req, d: d["where"].endswith(".ua")),
    ("state", "check state differs (status / n_pings / last_ping / pings) (hc/api/models.py:Check.ping)",
     lambda sid, req, d: True),
]


def cause(sid: str, req: dict | None, d: dict) -> str:
    for cid, _, test in CAUSES:
        try:
            if test(sid, req or {}, d):
                return cid
        except Exception:
            continue
    return "state"


DESCRIPTIONS = {cid: text for cid, text, _ in CAUSES}
