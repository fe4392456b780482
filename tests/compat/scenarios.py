"""Hand-written compatibility scenarios: every form of the Pinging API (seeds 001 and 004) and
the whole Management API v3 (Healthchecks' hc/api/urls.py at the recorded commit).

Each function returns scenarios (see harness.py for the format). Names, slugs and tags
carry ``{T}``, the scenario token, so that scenarios running concurrently on one server (and
runs repeated on the same server) never see each other's checks.
"""

from __future__ import annotations

RID1 = "6f1b3a5e-0c4e-4c8e-9d0a-1b2c3d4e5f60"
RID2 = "0a9b8c7d-6e5f-4a3b-8c1d-2e3f4a5b6c7d"
RID_UPPER = "6F1B3A5E-0C4E-4C8E-9D0A-1B2C3D4E5F60"
UNKNOWN_UUID = "2b1e7c9a-4d3f-4e8b-a6c5-9f0e1d2c3b4a"
LONG_UA = "ua-" + "x" * 297
NON_UTF8_HEX = "ff fe 00 61 62 80".replace(" ", "")


def api(method: str, path: str, key: str | None = "API_KEY", **kw) -> dict:
    step = {"method": method, "path": path, **kw}
    if key:
        step["key"] = key
    return step


def create(var: str = "C", key: str = "API_KEY", v: int = 3, **spec) -> dict:
    spec.setdefault("name", "{T}")
    return api("POST", f"/api/v{v}/checks/", key, json=spec, save={var: "uuid"})


def get(var: str = "C", key: str = "API_KEY", v: int = 3) -> dict:
    return api("GET", f"/api/v{v}/checks/{{{var}}}", key)


def pings(var: str = "C", key: str = "API_KEY") -> dict:
    return api("GET", f"/api/v3/checks/{{{var}}}/pings/", key)


def flips(var: str = "C", key: str = "API_KEY", query: str = "") -> dict:
    return api("GET", f"/api/v3/checks/{{{var}}}/flips/{query}", key)


def ping(path: str, method: str = "GET", **kw) -> dict:
    return {"method": method, "path": path, **kw}


def pause(var: str = "C", key: str = "API_KEY") -> dict:
    return api("POST", f"/api/v3/checks/{{{var}}}/pause", key)


def resume(var: str = "C", key: str = "API_KEY") -> dict:
    return api("POST", f"/api/v3/checks/{{{var}}}/resume", key)


def update(var: str = "C", key: str = "API_KEY", **spec) -> dict:
    return api("POST", f"/api/v3/checks/{{{var}}}", key, json=spec)


def sc(id: str, area: str, *steps, slow: bool = False) -> dict:
    return {"id": id, "area": area, "slow": slow, "steps": list(steps)}


READ = [get(), pings(), flips()]

ACTIONS = ["", "/start", "/fail", "/log", "/0", "/1", "/255", "/256", "/00"]


def ping_forms() -> list[dict]:
    out = []
    for method in ("HEAD", "GET", "POST"):
        for action in ACTIONS:
            body = {"body": "hello from " + method} if method == "POST" else {}
            name = action.strip("/") or "success"
            out.append(sc(f"ping/uuid/{method.lower()}/{name}", "ping",
                          create(), ping("/ping/{C}" + action, method, **body), *READ))
            out.append(sc(f"ping/slug/{method.lower()}/{name}", "ping",
                          create(slug="{T}"), ping("/ping/{PING_KEY}/{T}" + action, method, **body), *READ))
    for action in ACTIONS:
        name = action.strip("/") or "success"
        out.append(sc(f"ping/slug/create1/{name}", "create", ping("/ping/{PING_KEY}/{T}" + action + "?create=1"),
                      api("GET", "/api/v3/checks/?slug={T}", save={"C": "checks.0.uuid"}), *READ))
    return out


def ping_edges() -> list[dict]:
    return [
        sc("ping/uuid/unknown", "ping", ping(f"/ping/{UNKNOWN_UUID}")),
        sc("ping/uuid/unknown-fail", "ping", ping(f"/ping/{UNKNOWN_UUID}/fail")),
        sc("ping/uuid/unknown-exit-999", "ping", ping(f"/ping/{UNKNOWN_UUID}/999")),
        sc("ping/uuid/uppercase", "ping", create(), ping("/ping/{C|upper}"),
           api("GET", "/api/v3/checks/{C}")),
        sc("ping/uuid/not-a-uuid", "ping", ping("/ping/not-a-uuid")),
        sc("ping/uuid/trailing-slash", "ping", create(), ping("/ping/{C}/"), *READ),
        sc("ping/uuid/start-trailing-slash", "ping", create(), ping("/ping/{C}/start/"), get()),
        sc("ping/uuid/action-uppercase-START", "ping", create(), ping("/ping/{C}/START"), get()),
        sc("ping/uuid/action-uppercase-Fail", "ping", create(), ping("/ping/{C}/Fail"), get()),
        sc("ping/uuid/action-unknown", "ping", create(), ping("/ping/{C}/finish"), get()),
        sc("ping/uuid/exit-negative", "ping", create(), ping("/ping/{C}/-1"), get()),
        sc("ping/uuid/exit-999", "ping", create(), ping("/ping/{C}/999"), get()),
        sc("ping/uuid/exit-256-post", "ping", create(), ping("/ping/{C}/256", "POST", body="x"), get()),
        sc("ping/uuid/double-slash", "ping", create(), ping("/ping/{C}//fail"), get()),
        sc("ping/uuid/extra-segment", "ping", create(), ping("/ping/{C}/fail/extra"), get()),
        sc("ping/uuid/put", "ping", create(), ping("/ping/{C}", "PUT"), get()),
        sc("ping/uuid/delete", "ping", create(), ping("/ping/{C}", "DELETE"), get()),
        sc("ping/uuid/options", "ping", create(), ping("/ping/{C}", "OPTIONS"), get()),
        sc("ping/uuid/other-project-check", "ping", create(key="OTHER_KEY"), ping("/ping/{C}"),
           get(key="OTHER_KEY")),
        sc("ping/slug/uppercase-slug", "ping", create(slug="{T}"), ping("/ping/{PING_KEY}/{T|upper}"),
           ping("/ping/{PING_KEY}/Upper-{T}"), get()),
        sc("ping/slug/uppercase-action", "ping", create(slug="{T}"), ping("/ping/{PING_KEY}/{T}/START"), get()),
        sc("ping/slug/uppercase-slug-create", "create", ping("/ping/{PING_KEY}/Up-{T}?create=1"),
           api("GET", "/api/v3/checks/?slug=up-{T}")),
        sc("ping/slug/unknown", "ping", ping("/ping/{PING_KEY}/{T}-nope")),
        sc("ping/slug/unknown-create0", "ping", ping("/ping/{PING_KEY}/{T}-nope?create=0")),
        sc("ping/slug/wrong-ping-key", "ping", create(slug="{T}"), ping("/ping/wrongpingkey0000000000/{T}"), get()),
        sc("ping/slug/wrong-ping-key-create", "create", ping("/ping/wrongpingkey0000000000/{T}?create=1")),
        sc("ping/slug/other-project-key", "ping", create(slug="{T}"), ping("/ping/{OTHER_PING_KEY}/{T}"), get()),
        sc("ping/slug/ambiguous", "ping", create("C1", slug="{T}"), create("C2", name="{T}-2", slug="{T}"),
           ping("/ping/{PING_KEY}/{T}"), ping("/ping/{PING_KEY}/{T}?create=1"), get("C1"), get("C2")),
        sc("ping/slug/create1-existing", "create", create(slug="{T}"), ping("/ping/{PING_KEY}/{T}?create=1"), *READ),
        sc("ping/slug/create1-twice", "create", ping("/ping/{PING_KEY}/{T}?create=1"), ping("/ping/{PING_KEY}/{T}?create=1"),
           api("GET", "/api/v3/checks/?slug={T}", save={"C": "checks.0.uuid"}), *READ),
        sc("ping/slug/create1-head", "create", ping("/ping/{PING_KEY}/{T}?create=1", "HEAD"),
           api("GET", "/api/v3/checks/?slug={T}")),
        sc("ping/slug/create1-post-body", "create", ping("/ping/{PING_KEY}/{T}/fail?create=1", "POST", body="boom"),
           api("GET", "/api/v3/checks/?slug={T}", save={"C": "checks.0.uuid"}), *READ),
        sc("ping/slug/create1-bad-exit", "create", ping("/ping/{PING_KEY}/{T}/300?create=1"),
           api("GET", "/api/v3/checks/?slug={T}")),
        sc("ping/slug/create1-bad-rid", "create", ping("/ping/{PING_KEY}/{T}?create=1&rid=nope"),
           api("GET", "/api/v3/checks/?slug={T}")),
        sc("ping/slug/create-true", "create", ping("/ping/{PING_KEY}/{T}?create=true")),
        sc("ping/slug/slug-with-underscore", "ping", create(slug="{T}_a"), ping("/ping/{PING_KEY}/{T}_a"), get()),
        sc("ping/slug/slug-after-rename", "ping", create(slug="{T}"), update(slug="{T}-new"),
           ping("/ping/{PING_KEY}/{T}"), ping("/ping/{PING_KEY}/{T}-new"), get()),
        sc("ping/slug/key-only", "ping", ping("/ping/{PING_KEY}")),
        sc("ping/slug/key-trailing-slash", "ping", create(slug="{T}"), ping("/ping/{PING_KEY}/{T}/"), get()),
        sc("ping/root", "ping", ping("/ping/")),
        sc("ping/ua-truncated", "ping", create(), ping("/ping/{C}", headers={"User-Agent": LONG_UA}), pings()),
        sc("ping/ua-empty", "ping", create(), ping("/ping/{C}", headers={"User-Agent": ""}), pings()),
        sc("ping/x-forwarded-for", "ping", create(), ping("/ping/{C}", headers={"X-Forwarded-For": "203.0.113.9, 10.0.0.1"}), pings()),
        sc("ping/x-forwarded-proto", "ping", create(), ping("/ping/{C}", headers={"X-Forwarded-Proto": "https"}), pings()),
        sc("ping/query-ignored", "ping", create(), ping("/ping/{C}?foo=bar"), pings()),
    ]


def rid_scenarios() -> list[dict]:
    return [
        sc("rid/valid-success", "rid", create(), ping(f"/ping/{{C}}?rid={RID1}"), *READ),
        sc("rid/invalid", "rid", create(), ping("/ping/{C}?rid=not-a-uuid"), *READ),
        sc("rid/invalid-empty", "rid", create(), ping("/ping/{C}?rid="), *READ),
        sc("rid/uppercase", "rid", create(), ping(f"/ping/{{C}}/start?rid={RID_UPPER}"), ping(f"/ping/{{C}}?rid={RID1}"), *READ),
        sc("rid/no-hyphens", "rid", create(), ping("/ping/{C}?rid=" + RID1.replace("-", "")), get()),
        sc("rid/braces", "rid", create(), ping("/ping/{C}?rid=%7B" + RID1 + "%7D"), get()),
        sc("rid/start-success-match", "rid", create(), ping(f"/ping/{{C}}/start?rid={RID1}"), {"wait": 1.3},
           ping(f"/ping/{{C}}?rid={RID1}"), *READ),
        sc("rid/start-success-mismatch", "rid", create(), ping(f"/ping/{{C}}/start?rid={RID1}"),
           ping(f"/ping/{{C}}?rid={RID2}"), *READ),
        sc("rid/start-fail-other-rid", "rid", create(), ping(f"/ping/{{C}}/start?rid={RID1}"),
           ping(f"/ping/{{C}}/fail?rid={RID2}"), *READ),
        sc("rid/start-success-no-rid", "rid", create(), ping(f"/ping/{{C}}/start?rid={RID1}"), ping("/ping/{C}"), *READ),
        sc("rid/start-no-rid-success-rid", "rid", create(), ping("/ping/{C}/start"), ping(f"/ping/{{C}}?rid={RID1}"), *READ),
        sc("rid/two-runs-interleaved", "rid", create(), ping(f"/ping/{{C}}/start?rid={RID1}"),
           ping(f"/ping/{{C}}/start?rid={RID2}"), ping(f"/ping/{{C}}?rid={RID1}"), ping(f"/ping/{{C}}?rid={RID2}"), *READ),
        sc("rid/log-with-rid", "rid", create(), ping(f"/ping/{{C}}/start?rid={RID1}"), ping(f"/ping/{{C}}/log?rid={RID1}"),
           ping(f"/ping/{{C}}?rid={RID1}"), *READ),
        sc("rid/exit-status-with-rid", "rid", create(), ping(f"/ping/{{C}}/start?rid={RID1}"),
           ping(f"/ping/{{C}}/3?rid={RID1}"), *READ),
        sc("rid/slug-with-rid", "rid", create(slug="{T}"), ping(f"/ping/{{PING_KEY}}/{{T}}/start?rid={RID1}"),
           ping(f"/ping/{{PING_KEY}}/{{T}}?rid={RID1}"), *READ),
    ]


def run_scenarios() -> list[dict]:
    return [
        sc("run/start-then-success", "runs", create(), ping("/ping/{C}/start"), {"wait": 1.2}, ping("/ping/{C}"), *READ),
        sc("run/start-then-fail", "runs", create(), ping("/ping/{C}/start"), {"wait": 0.6}, ping("/ping/{C}/fail"), *READ),
        sc("run/start-then-exit-0", "runs", create(), ping("/ping/{C}/start"), ping("/ping/{C}/0"), *READ),
        sc("run/start-then-exit-7", "runs", create(), ping("/ping/{C}/start"), ping("/ping/{C}/7"), *READ),
        sc("run/start-start-success", "runs", create(), ping("/ping/{C}/start"), {"wait": 0.5}, ping("/ping/{C}/start"),
           ping("/ping/{C}"), *READ),
        sc("run/start-log-success", "runs", create(), ping("/ping/{C}/start"), ping("/ping/{C}/log", "POST", body="progress"),
           ping("/ping/{C}"), *READ),
        sc("run/success-success", "runs", create(), ping("/ping/{C}"), ping("/ping/{C}"), *READ),
        sc("run/start-only", "status", create(), ping("/ping/{C}/start"), *READ),
        sc("run/start-only-v1", "status", create(), ping("/ping/{C}/start"), get(v=1), get(v=2)),
        sc("run/up-then-start", "status", create(), ping("/ping/{C}"), ping("/ping/{C}/start"), *READ, get(v=1)),
        sc("run/down-then-start", "status", create(), ping("/ping/{C}/fail"), ping("/ping/{C}/start"), *READ, get(v=1)),
        sc("run/duration-rounding", "runs", create(), ping("/ping/{C}/start"), {"wait": 2.345}, ping("/ping/{C}"), *READ),
        sc("run/fail-no-start", "runs", create(), ping("/ping/{C}/fail"), *READ),
        sc("run/fail-then-success", "flips", create(), ping("/ping/{C}/fail"), ping("/ping/{C}"), *READ),
        sc("run/success-fail-success", "flips", create(), ping("/ping/{C}"), ping("/ping/{C}/fail"), ping("/ping/{C}"), *READ),
        sc("run/log-only", "status", create(), ping("/ping/{C}/log", "POST", body="hi"), *READ),
        sc("run/log-after-down", "status", create(), ping("/ping/{C}/fail"), ping("/ping/{C}/log"), *READ),
        sc("run/fail-next-ping", "status", create(timeout=600, grace=120), ping("/ping/{C}"), ping("/ping/{C}/fail"), get()),
        sc("run/success-next-ping", "status", create(timeout=600, grace=120), ping("/ping/{C}"), get()),
        sc("run/cron-success", "status", create(schedule="*/5 * * * *", tz="UTC"), ping("/ping/{C}"), get()),
        sc("run/oncalendar-success", "status", create(schedule="*-*-* 02:00:00", tz="Europe/Riga"), ping("/ping/{C}"), get()),
    ]


def body_scenarios() -> list[dict]:
    big = "a" * 10005
    return [
        sc("body/post-text", "body", create(), ping("/ping/{C}", "POST", body="line1\nline2"), pings(),
           api("GET", "/api/v3/checks/{C}/pings/1/body")),
        sc("body/empty-post", "body", create(), ping("/ping/{C}", "POST", body=""), pings(),
           api("GET", "/api/v3/checks/{C}/pings/1/body")),
        sc("body/get-no-body", "body", create(), ping("/ping/{C}"), api("GET", "/api/v3/checks/{C}/pings/1/body")),
        sc("body/over-limit", "body", create(), ping("/ping/{C}", "POST", body=big), pings(),
           api("GET", "/api/v3/checks/{C}/pings/1/body")),
        sc("body/non-utf8", "body", create(), ping("/ping/{C}", "POST", body_hex=NON_UTF8_HEX), pings(),
           api("GET", "/api/v3/checks/{C}/pings/1/body")),
        sc("body/non-utf8-filter", "filters", create(filter_http_body=True, success_kw="ok"),
           ping("/ping/{C}", "POST", body_hex=NON_UTF8_HEX), *READ),
        sc("body/json-body", "body", create(), ping("/ping/{C}/fail", "POST", body='{"a": 1}',
                                                     headers={"Content-Type": "application/json"}), pings(),
           api("GET", "/api/v3/checks/{C}/pings/1/body")),
        sc("body/form-body", "body", create(), ping("/ping/{C}", "POST", body="a=1&b=2",
                                                     headers={"Content-Type": "application/x-www-form-urlencoded"}),
           api("GET", "/api/v3/checks/{C}/pings/1/body")),
        sc("body/unknown-n", "body", create(), ping("/ping/{C}", "POST", body="x"),
           api("GET", "/api/v3/checks/{C}/pings/2/body"), api("GET", "/api/v3/checks/{C}/pings/0/body")),
        sc("body/readonly-key", "auth", create(), ping("/ping/{C}", "POST", body="x"),
           api("GET", "/api/v3/checks/{C}/pings/1/body", "RO_KEY")),
        sc("body/other-project", "auth", create(), ping("/ping/{C}", "POST", body="x"),
           api("GET", "/api/v3/checks/{C}/pings/1/body", "OTHER_KEY")),
        sc("body/confirm-link", "body", create(), ping("/ping/{C}", "POST", body="Please CONFIRM your address"), pings()),
        sc("body/limit-header-head", "body", create(), ping("/ping/{C}", "HEAD")),
        sc("body/log-with-body", "body", create(), ping("/ping/{C}/log", "POST", body="just a log line"), *READ,
           api("GET", "/api/v3/checks/{C}/pings/1/body")),
        sc("body/many-pings-order", "pings", create(), *[ping("/ping/{C}" + a, "POST", body=f"#{i}")
                                                         for i, a in enumerate(["/start", "", "/log", "/fail", "/3", "/start", "/0"])],
           *READ),
    ]


def filter_scenarios() -> list[dict]:
    F = dict(filter_http_body=True)
    out = [
        sc("filter/success-kw", "filters", create(**F, success_kw="SUCCESS"), ping("/ping/{C}/fail", "POST", body="job SUCCESS"), *READ),
        sc("filter/failure-kw", "filters", create(**F, failure_kw="ERROR"), ping("/ping/{C}", "POST", body="an ERROR happened"), *READ),
        sc("filter/start-kw", "filters", create(**F, start_kw="BEGIN"), ping("/ping/{C}", "POST", body="BEGIN run"), *READ),
        sc("filter/precedence-fail-over-success", "filters", create(**F, success_kw="ok", failure_kw="bad"),
           ping("/ping/{C}", "POST", body="ok but bad"), *READ),
        sc("filter/precedence-success-over-start", "filters", create(**F, success_kw="done", start_kw="go"),
           ping("/ping/{C}/start", "POST", body="go done"), *READ),
        sc("filter/no-match-ignored", "filters", create(**F, success_kw="ok"), ping("/ping/{C}", "POST", body="nothing"), *READ),
        sc("filter/no-match-default-fail", "filters", create(**F, success_kw="ok", filter_default_fail=True),
           ping("/ping/{C}", "POST", body="nothing"), *READ),
        sc("filter/default-fail-without-filter", "filters", create(success_kw="ok", filter_default_fail=True),
           ping("/ping/{C}", "POST", body="nothing"), *READ),
        sc("filter/case-sensitive", "filters", create(**F, failure_kw="FAIL"), ping("/ping/{C}", "POST", body="fail"), *READ),
        sc("filter/comma-list", "filters", create(**F, failure_kw="x, boom ,y"), ping("/ping/{C}", "POST", body="it went boom"), *READ),
        sc("filter/empty-items", "filters", create(**F, failure_kw=" , ,"), ping("/ping/{C}", "POST", body="anything"), *READ),
        sc("filter/disabled-kw-unused", "filters", create(failure_kw="boom"), ping("/ping/{C}", "POST", body="boom"), *READ),
        sc("filter/get-no-body", "filters", create(**F, success_kw="ok"), ping("/ping/{C}"), *READ),
        sc("filter/head-no-body", "filters", create(**F, success_kw="ok"), ping("/ping/{C}", "HEAD"), *READ),
        sc("filter/log-overridden", "filters", create(**F, failure_kw="boom"), ping("/ping/{C}/log", "POST", body="boom"), *READ),
        sc("filter/log-no-match", "filters", create(**F, failure_kw="boom"), ping("/ping/{C}/log", "POST", body="quiet"), *READ),
        sc("filter/exit-status-overridden", "filters", create(**F, success_kw="fine"), ping("/ping/{C}/4", "POST", body="all fine"), *READ),
        sc("filter/fail-url-overridden-by-success", "filters", create(**F, success_kw="fine"),
           ping("/ping/{C}/fail", "POST", body="fine"), *READ),
        sc("filter/start-url-no-match", "filters", create(**F, success_kw="fine"), ping("/ping/{C}/start", "POST", body="x"), *READ),
        sc("filter/slug-form", "filters", create(**F, slug="{T}", failure_kw="boom"),
           ping("/ping/{PING_KEY}/{T}", "POST", body="boom"), *READ),
        sc("filter/keywords-after-limit", "filters", create(**F, failure_kw="TAIL"),
           ping("/ping/{C}", "POST", body="a" * 10000 + "TAIL"), *READ),
        sc("filter/enable-by-update", "filters", create(failure_kw="boom"), update(filter_http_body=True),
           ping("/ping/{C}", "POST", body="boom"), *READ),
        sc("filter/subject-legacy", "filters", create(subject="ok", subject_fail="bad"), get()),
        sc("filter/filter-body-email-only", "filters", create(filter_body=True, failure_kw="bad"),
           ping("/ping/{C}", "POST", body="bad"), *READ),
        sc("methods/post-only-get", "methods", create(methods="POST"), ping("/ping/{C}"), *READ),
        sc("methods/post-only-post", "methods", create(methods="POST"), ping("/ping/{C}", "POST", body="x"), *READ),
        sc("methods/post-only-head", "methods", create(methods="POST"), ping("/ping/{C}/fail", "HEAD"), *READ),
        sc("methods/post-only-with-filter", "methods", create(methods="POST", **F, failure_kw="x"),
           ping("/ping/{C}", "GET"), *READ),
    ]
    return out


def pause_scenarios() -> list[dict]:
    return [
        sc("pause/new-check", "pause", create(), pause(), *READ),
        sc("pause/twice", "pause", create(), ping("/ping/{C}"), pause(), pause(), *READ),
        sc("pause/up-check", "pause", create(), ping("/ping/{C}"), pause(), *READ),
        sc("pause/down-check", "pause", create(), ping("/ping/{C}/fail"), pause(), *READ),
        sc("pause/started-check", "pause", create(), ping("/ping/{C}/start"), pause(), *READ),
        sc("pause/then-success", "pause", create(), pause(), ping("/ping/{C}"), *READ),
        sc("pause/then-fail", "pause", create(), pause(), ping("/ping/{C}/fail"), *READ),
        sc("pause/then-start", "pause", create(), pause(), ping("/ping/{C}/start"), *READ),
        sc("pause/then-log", "pause", create(), pause(), ping("/ping/{C}/log"), *READ),
        sc("pause/manual-resume-success", "pause", create(manual_resume=True), ping("/ping/{C}"), pause(),
           ping("/ping/{C}"), *READ),
        sc("pause/manual-resume-fail", "pause", create(manual_resume=True), pause(), ping("/ping/{C}/fail"), *READ),
        sc("pause/resume", "pause", create(), ping("/ping/{C}"), pause(), resume(), *READ),
        sc("pause/resume-not-paused", "pause", create(), resume(), get()),
        sc("pause/resume-then-ping", "pause", create(), pause(), resume(), ping("/ping/{C}"), *READ),
        sc("pause/readonly-key", "auth", create(), pause(key="RO_KEY"), resume(key="RO_KEY"), get()),
        sc("pause/other-project", "auth", create(), pause(key="OTHER_KEY"), resume(key="OTHER_KEY"), get()),
        sc("pause/unknown", "pause", api("POST", f"/api/v3/checks/{UNKNOWN_UUID}/pause"),
           api("POST", f"/api/v3/checks/{UNKNOWN_UUID}/resume")),
        sc("pause/get-method", "cors", create(), api("GET", "/api/v3/checks/{C}/pause"), api("GET", "/api/v3/checks/{C}/resume")),
        sc("pause/api-key-in-body", "auth", create(), api("POST", "/api/v3/checks/{C}/pause", None, json={"api_key": "{API_KEY}"}), get()),
        sc("pause/v1", "pause", create(), api("POST", "/api/v1/checks/{C}/pause"), get(v=1)),
        sc("pause/update-while-paused", "pause", create(), pause(), update(timeout=7200), get()),
    ]


def api_scenarios() -> list[dict]:
    out = [
        sc("api/create-minimal", "api", api("POST", "/api/v3/checks/", json={}, save={"C": "uuid"}), get(),
           api("DELETE", "/api/v3/checks/{C}")),
        sc("api/create-named", "api", create(), get()),
        sc("api/create-full", "api", create(slug="{T}-full", tags="{T} prod db", desc="a description", timeout=86400, grace=7200,
                                            manual_resume=True, methods="POST", start_kw="s", success_kw="ok", failure_kw="err",
                                            filter_http_body=True, filter_default_fail=True, filter_body=True, filter_subject=True,
                                            channels=""), get()),
        sc("api/create-cron", "api", create(schedule="0 3 * * 1-5", tz="Europe/Riga", grace=600), get()),
        sc("api/create-oncalendar", "api", create(schedule="Mon..Fri *-*-* 03:00:00\nSat *-*-* 05:00:00", tz="UTC"), get()),
        sc("api/create-timeout-and-schedule", "api", create(timeout=300, schedule="* * * * *"), get()),
        sc("api/create-v1-slug", "api", create(v=1, name="{T} My Job!"), get(v=1)),
        sc("api/create-v2-slug", "api", create(v=2, name="{T} Über Job"), get(v=2)),
        sc("api/create-v3-no-slug", "api", create(name="{T} My Job"), get()),
        sc("api/create-readonly-key", "auth", api("POST", "/api/v3/checks/", "RO_KEY", json={"name": "{T}"})),
        sc("api/create-no-key", "auth", api("POST", "/api/v3/checks/", None, json={"name": "{T}"})),
        sc("api/create-wrong-key", "auth", api("POST", "/api/v3/checks/", None, json={"name": "{T}"},
                                                headers={"X-Api-Key": "wrongkey0000000000000000000000aa"})),
        sc("api/create-short-key", "auth", api("POST", "/api/v3/checks/", None, json={"name": "{T}"}, headers={"X-Api-Key": "short"})),
        sc("api/create-key-in-body", "auth", api("POST", "/api/v3/checks/", None, json={"api_key": "{API_KEY}", "name": "{T}"}, save={"C": "uuid"}), get()),
        sc("api/create-key-in-body-int", "auth", api("POST", "/api/v3/checks/", None, raw_json='{"api_key": 12345}')),
        sc("api/create-invalid-json", "validation", api("POST", "/api/v3/checks/", raw_json="{not json")),
        sc("api/create-json-array", "validation", api("POST", "/api/v3/checks/", raw_json="[1, 2]")),
        sc("api/create-json-string", "validation", api("POST", "/api/v3/checks/", raw_json='"x"')),
        sc("api/create-empty-body", "validation", api("POST", "/api/v3/checks/", body="")),
        sc("api/create-unknown-field", "validation", create(foo="bar"), get()),
        sc("api/list-by-tag", "api", create("A", tags="{T} alpha"), create("B", name="{T}-b", tags="{T} beta"),
           create("C", name="{T}-c", tags="{T} alpha beta"),
           api("GET", "/api/v3/checks/?tag={T}&tag=alpha"), api("GET", "/api/v3/checks/?tag={T}&tag=beta&tag=alpha"),
           api("GET", "/api/v3/checks/?tag={T}", "RO_KEY")),
        sc("api/list-by-slug", "api", create("A", slug="{T}"), create("B", name="{T}-b", slug="{T}-b"),
           api("GET", "/api/v3/checks/?slug={T}-b"), api("GET", "/api/v3/checks/?slug={T}-none")),
        sc("api/list-by-tag-substring", "api", create("A", tags="{T}xyz"), api("GET", "/api/v3/checks/?tag={T}")),
        sc("api/list-no-key", "auth", api("GET", "/api/v3/checks/", None)),
        sc("api/list-other-project", "auth", create(tags="{T}"), api("GET", "/api/v3/checks/?tag={T}", "OTHER_KEY")),
        sc("api/list-key-in-query", "auth", api("GET", "/api/v3/checks/?api_key={API_KEY}&tag={T}", None)),
        sc("api/list-v1", "api", create(tags="{T}"), ping("/ping/{C}/start"), api("GET", "/api/v1/checks/?tag={T}")),
        sc("api/get-readonly", "api", create(), api("GET", "/api/v3/checks/{C}", "RO_KEY", save={"K": "unique_key"}),
           api("GET", "/api/v3/checks/{K}", "RO_KEY"), api("GET", "/api/v3/checks/{K}"), api("GET", "/api/v3/checks/{K}/flips/", "RO_KEY")),
        sc("api/get-unique-key-unknown", "api", api("GET", "/api/v3/checks/" + "0" * 40, "RO_KEY")),
        sc("api/get-unknown", "api", api("GET", f"/api/v3/checks/{UNKNOWN_UUID}")),
        sc("api/get-other-project", "auth", create(), get(key="OTHER_KEY")),
        sc("api/get-uppercase-uuid", "api", create(), api("GET", "/api/v3/checks/{C|upper}")),
        sc("api/get-not-uuid", "api", api("GET", "/api/v3/checks/not-a-uuid")),
        sc("api/get-no-key", "auth", create(), get(key=None)),
        sc("api/update-fields", "api", create(), update(name="{T}-renamed", tags="{T} x", desc="d", timeout=120, grace=60), get()),
        sc("api/update-v1-name-slug", "api", create(slug="keep-{T}"), api("POST", "/api/v1/checks/{C}", json={"name": "{T} New Name"}), get()),
        sc("api/update-v3-name-keeps-slug", "api", create(slug="keep-{T}"), update(name="{T} New Name"), get()),
        sc("api/update-to-cron", "api", create(), update(schedule="0 * * * *", tz="Asia/Tokyo"), get()),
        sc("api/update-cron-to-simple", "api", create(schedule="0 * * * *"), update(timeout=600), get()),
        sc("api/update-empty", "api", create(), api("POST", "/api/v3/checks/{C}", body=""), get()),
        sc("api/update-readonly", "auth", create(), update("C", "RO_KEY", name="x")),
        sc("api/update-other-project", "auth", create(), update("C", "OTHER_KEY", name="x"), get()),
        sc("api/update-unknown", "api", api("POST", f"/api/v3/checks/{UNKNOWN_UUID}", json={"name": "x"})),
        sc("api/update-invalid", "validation", create(), update(timeout=1), get()),
        sc("api/update-after-pings", "api", create(), ping("/ping/{C}"), update(timeout=120), get()),
        sc("api/delete", "api", create(), ping("/ping/{C}"), api("DELETE", "/api/v3/checks/{C}"), get(),
           api("DELETE", "/api/v3/checks/{C}"), ping("/ping/{C}")),
        sc("api/delete-readonly", "auth", create(), api("DELETE", "/api/v3/checks/{C}", "RO_KEY"), get()),
        sc("api/delete-other-project", "auth", create(), api("DELETE", "/api/v3/checks/{C}", "OTHER_KEY"), get()),
        sc("api/delete-slug-reusable", "api", create(slug="{T}"), api("DELETE", "/api/v3/checks/{C}"),
           ping("/ping/{PING_KEY}/{T}"), ping("/ping/{PING_KEY}/{T}?create=1")),
        sc("api/put-method", "cors", create(), api("PUT", "/api/v3/checks/{C}", json={"name": "x"})),
        sc("api/patch-method", "cors", create(), api("PATCH", "/api/v3/checks/{C}", json={"name": "x"})),
        sc("api/delete-collection", "cors", api("DELETE", "/api/v3/checks/")),
        sc("api/no-trailing-slash", "api", api("GET", "/api/v3/checks")),
        sc("api/v4", "api", api("GET", "/api/v4/checks/")),
        sc("api/channels", "channels", api("GET", "/api/v3/channels/")),
        sc("api/channels-readonly", "channels", api("GET", "/api/v3/channels/", "RO_KEY")),
        sc("api/channels-no-key", "channels", api("GET", "/api/v3/channels/", None)),
        sc("api/channels-post", "channels", api("POST", "/api/v3/channels/")),
        sc("api/status", "status-endpoint", api("GET", "/api/v3/status/", None)),
        sc("api/status-v1", "status-endpoint", api("GET", "/api/v1/status/", None)),
        sc("api/status-head", "status-endpoint", api("HEAD", "/api/v3/status/", None)),
        sc("api/metrics-no-key", "api", api("GET", "/api/v3/metrics/", None)),
        sc("api/pings-readonly", "auth", create(), ping("/ping/{C}"), pings(key="RO_KEY")),
        sc("api/pings-other-project", "auth", create(), pings(key="OTHER_KEY")),
        sc("api/pings-unknown", "api", api("GET", f"/api/v3/checks/{UNKNOWN_UUID}/pings/")),
        sc("api/pings-empty", "pings", create(), pings()),
        sc("api/pings-v1-body-url", "pings", create(), ping("/ping/{C}", "POST", body="b"), api("GET", "/api/v1/checks/{C}/pings/")),
        sc("api/flips-empty", "flips", create(), flips()),
        sc("api/flips-readonly", "flips", create(), ping("/ping/{C}"), flips(key="RO_KEY")),
        sc("api/flips-other-project", "auth", create(), flips(key="OTHER_KEY")),
        sc("api/flips-unknown", "flips", api("GET", f"/api/v3/checks/{UNKNOWN_UUID}/flips/")),
        sc("api/flips-seconds", "flips", create(), ping("/ping/{C}"), flips(query="?seconds=3600"), flips(query="?seconds=0")),
        sc("api/flips-start-end", "flips", create(), ping("/ping/{C}"), flips(query="?start={NOW-3600}"),
           flips(query="?end={NOW-3600}"), flips(query="?start={NOW-3600}&end={NOW+3600}")),
        sc("api/flips-invalid-start", "flips", create(), flips(query="?start=abc"), flips(query="?seconds=-1"),
           flips(query="?seconds=31536001"), flips(query="?end=10000000001"), flips(query="?start=")),
        sc("api/flips-order", "flips", create(), ping("/ping/{C}"), ping("/ping/{C}/fail"), ping("/ping/{C}"),
           ping("/ping/{C}/fail"), flips()),
        sc("api/badges", "badges", create(tags="{T}"), api("GET", "/api/v3/badges/", "RO_KEY", scope="badges",
                                                          save={"B": "badges.{T}.json", "S": "badges.{T}.svg", "H": "badges.{T}.shields3"}),
           api("GET", "{B}", None), api("GET", "{S}", None), api("GET", "{H}", None),
           ping("/ping/{C}/fail"), api("GET", "{B}", None)),
        sc("api/badges-no-key", "badges", api("GET", "/api/v3/badges/", None)),
        sc("api/badge-url-of-check", "badges", create(), ping("/ping/{C}"), api("GET", "/api/v3/checks/{C}", save={"U": "badge_url"}),
           api("GET", "{U}", None)),
    ]
    return out


def validation_scenarios() -> list[dict]:
    cases = {
        "timeout-too-small": {"timeout": 59},
        "timeout-min": {"timeout": 60},
        "timeout-too-large": {"timeout": 31536001},
        "timeout-max": {"timeout": 31536000},
        "timeout-string": {"timeout": "3600"},
        "timeout-float": {"timeout": 3600.5},
        "timeout-bool": {"timeout": True},
        "timeout-null": {"timeout": None},
        "grace-too-small": {"grace": 30},
        "grace-string": {"grace": "60"},
        "name-too-long": {"name": "n" * 101},
        "name-int": {"name": 5},
        "name-null": {"name": None},
        "slug-invalid": {"slug": "Bad Slug"},
        "slug-uppercase": {"slug": "ABC"},
        "slug-too-long": {"slug": "s" * 101},
        "slug-empty": {"slug": ""},
        "tags-list": {"tags": ["a", "b"]},
        "desc-int": {"desc": 1},
        "manual-resume-string": {"manual_resume": "true"},
        "manual-resume-int": {"manual_resume": 1},
        "methods-get": {"methods": "GET"},
        "methods-empty": {"methods": ""},
        "methods-lower": {"methods": "post"},
        "schedule-invalid": {"schedule": "not a cron"},
        "schedule-61-minutes": {"schedule": "61 * * * *"},
        "schedule-too-long": {"schedule": "* " * 60},
        "schedule-int": {"schedule": 5},
        "tz-invalid": {"tz": "Mars/Base"},
        "tz-legacy-kiev": {"tz": "Europe/Kiev", "schedule": "0 0 * * *"},
        "tz-legacy-calcutta": {"tz": "Asia/Calcutta", "schedule": "0 0 * * *"},
        "tz-utc-lower": {"tz": "utc"},
        "tz-int": {"tz": 1},
        "channels-unknown": {"channels": UNKNOWN_UUID},
        "channels-name-unknown": {"channels": "my-slack"},
        "channels-empty-item": {"channels": "a,,b"},
        "channels-star": {"channels": "*"},
        "channels-empty": {"channels": ""},
        "channels-list": {"channels": []},
        "filter-http-body-string": {"filter_http_body": "yes"},
        "filter-default-fail-int": {"filter_default_fail": 1},
        "filter-body-null": {"filter_body": None},
        "filter-subject-string": {"filter_subject": "true"},
        "success-kw-too-long": {"success_kw": "k" * 201},
        "failure-kw-int": {"failure_kw": 3},
        "start-kw-list": {"start_kw": ["a"]},
        "subject-too-long": {"subject": "s" * 201},
        "unique-invalid": {"unique": ["desc"]},
        "unique-string": {"unique": "name"},
        "unique-name": {"unique": ["name"]},
        "first-error-order": {"timeout": 1, "name": 5},
        "float-grace": {"grace": 60.0},
    }
    out = []
    for name, spec in cases.items():
        body = {"name": "{T}", **spec} if "name" not in spec else dict(spec)
        out.append(sc(f"validation/{name}", "validation",
                      api("POST", "/api/v3/checks/", json=body, save={"C": "uuid"}), get()))
    out.append(sc("validation/update-tz-legacy", "validation", create(schedule="0 0 * * *"), update(tz="Europe/Kiev"), get()))
    return out


def unique_scenarios() -> list[dict]:
    return [
        sc("unique/name-existing", "api", create(), api("POST", "/api/v3/checks/", json={"name": "{T}", "unique": ["name"], "tags": "{T} new"})),
        sc("unique/name-missing-field", "api", create(), api("POST", "/api/v3/checks/", json={"tags": "{T}", "unique": ["name"]}, save={"D": "uuid"}),
           api("DELETE", "/api/v3/checks/{D}")),
        sc("unique/slug", "api", create(slug="{T}"), api("POST", "/api/v3/checks/", json={"name": "{T}-2", "slug": "{T}", "unique": ["slug"]})),
        sc("unique/tags-timeout", "api", create(tags="{T}", timeout=600),
           api("POST", "/api/v3/checks/", json={"name": "{T}", "tags": "{T}", "timeout": 600, "unique": ["tags", "timeout"]}),
           api("POST", "/api/v3/checks/", json={"name": "{T}-b", "tags": "{T}", "timeout": 700, "unique": ["tags", "timeout"]})),
        sc("unique/grace", "api", create(grace=120), api("POST", "/api/v3/checks/", json={"name": "{T}", "grace": 120, "unique": ["name", "grace"]})),
        sc("unique/no-change-returns-200", "api", create(),
           api("POST", "/api/v3/checks/", json={"name": "{T}", "unique": ["name"]}),
           api("GET", "/api/v3/checks/?slug=&tag={T}")),
        sc("unique/other-project", "api", create(key="OTHER_KEY"),
           api("POST", "/api/v3/checks/", json={"name": "{T}", "unique": ["name"]}, save={"D": "uuid"}), get("D")),
    ]


def cors_scenarios() -> list[dict]:
    paths = {
        "checks": "/api/v3/checks/",
        "check": "/api/v3/checks/{C}",
        "pause": "/api/v3/checks/{C}/pause",
        "resume": "/api/v3/checks/{C}/resume",
        "pings": "/api/v3/checks/{C}/pings/",
        "flips": "/api/v3/checks/{C}/flips/",
        "channels": "/api/v3/channels/",
        "badges": "/api/v3/badges/",
        "body": "/api/v3/checks/{C}/pings/1/body",
        "v1-checks": "/api/v1/checks/",
        "status": "/api/v3/status/",
    }
    out = []
    pre = {"Origin": "https://example.org", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "X-Api-Key"}
    for name, path in paths.items():
        out.append(sc(f"cors/preflight-{name}", "cors", create(), ping("/ping/{C}", "POST", body="x"),
                      api("OPTIONS", path, None, headers=pre)))
    out += [
        sc("cors/list-headers", "cors", api("GET", "/api/v3/checks/?tag={T}", headers={"Origin": "https://example.org"})),
        sc("cors/get-check-headers", "cors", create(), api("GET", "/api/v3/checks/{C}", headers={"Origin": "https://example.org"})),
        sc("cors/error-headers", "cors", api("GET", "/api/v3/checks/", None, headers={"Origin": "https://example.org"})),
        sc("cors/create-headers", "cors", create(), api("DELETE", "/api/v3/checks/{C}")),
        sc("cors/ping-preflight", "cors", create(), api("OPTIONS", "/ping/{C}", None, headers=pre), get()),
        sc("cors/ping-headers", "cors", create(), ping("/ping/{C}", headers={"Origin": "https://example.org"})),
    ]
    return out


def slow_scenarios() -> list[dict]:
    return [
        sc("slow/start-exceeds-grace", "timing", create(timeout=60, grace=60), ping("/ping/{C}/start"), {"wait": 66},
           *READ, get(v=1), slow=True),
        sc("slow/down-after-timeout", "timing", create(timeout=60, grace=60), ping("/ping/{C}"), {"wait": 130},
           *READ, ping("/ping/{C}"), *READ, slow=True),
        sc("slow/grace-period", "timing", create(timeout=60, grace=60), ping("/ping/{C}"), {"wait": 75}, get(), slow=True),
    ]


def all_scenarios() -> list[dict]:
    from .generated import generated

    out = (ping_forms() + ping_edges() + rid_scenarios() + run_scenarios() + body_scenarios() + filter_scenarios()
           + pause_scenarios() + api_scenarios() + validation_scenarios() + unique_scenarios() + cors_scenarios()
           + slow_scenarios() + generated())
    ids = [s["id"] for s in out]
    dup = {i for i in ids if ids.count(i) > 1}
    assert not dup, f"duplicate scenario ids: {sorted(dup)}"
    return out
