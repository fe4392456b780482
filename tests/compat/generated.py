"""Generated scenarios: a seeded generator over sequences of pings (uuid and slug forms, every
action, methods, bodies, rids), pauses, resumes, API edits (timeouts, filters, keywords,
methods, manual_resume) and short waits, each ending with reads of the check, its pings and
its flips. Seeded, so the same list comes out every time; the recording keeps the exact
requests anyway (replay runs what was recorded).
"""

from __future__ import annotations

import random

from .scenarios import READ, RID1, RID2, create, pause, ping, resume, sc, update, get

SEED = 14
COUNT = 260
ACTIONS = ["", "", "/start", "/start", "/fail", "/log", "/0", "/1", "/42"]
BODIES = ["", "ok", "boom", "start job", "all ok but boom", "nothing to see", "OK", "go"]
KEYWORDS = ["ok", "boom", "start", "go", "OK", "fail"]


def _spec(rng: random.Random) -> dict:
    spec = {"slug": "{T}", "timeout": rng.choice([60, 3600, 86400]), "grace": rng.choice([60, 600, 3600])}
    if rng.random() < 0.5:
        spec["filter_http_body"] = True
        for kw in ("success_kw", "failure_kw", "start_kw"):
            if rng.random() < 0.6:
                spec[kw] = ",".join(rng.sample(KEYWORDS, rng.randint(1, 2)))
        if rng.random() < 0.3:
            spec["filter_default_fail"] = True
    if rng.random() < 0.15:
        spec["methods"] = "POST"
    if rng.random() < 0.25:
        spec["manual_resume"] = True
    return spec


def _ping(rng: random.Random) -> dict:
    base = "/ping/{C}" if rng.random() < 0.7 else "/ping/{PING_KEY}/{T}"
    action = rng.choice(ACTIONS)
    method = rng.choices(["GET", "POST", "HEAD"], [5, 4, 1])[0]
    query = ""
    r = rng.random()
    if r < 0.2:
        query = f"?rid={RID1}"
    elif r < 0.3:
        query = f"?rid={RID2}"
    kw = {"body": rng.choice(BODIES)} if method == "POST" else {}
    return ping(base + action + query, method, **kw)


def _edit(rng: random.Random) -> dict:
    choice = rng.randrange(6)
    if choice == 0:
        return update(timeout=rng.choice([60, 120, 7200]))
    if choice == 1:
        return update(filter_http_body=rng.random() < 0.5)
    if choice == 2:
        return update(manual_resume=rng.random() < 0.5)
    if choice == 3:
        return update(methods=rng.choice(["", "POST"]))
    if choice == 4:
        return update(success_kw=rng.choice(KEYWORDS), failure_kw=rng.choice(["", "boom"]))
    return update(filter_default_fail=rng.random() < 0.5, grace=rng.choice([60, 300]))


def generated(count: int = COUNT, seed: int = SEED) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        steps = [create(**_spec(rng))]
        for _ in range(rng.randint(2, 8)):
            r = rng.random()
            if r < 0.68:
                steps.append(_ping(rng))
            elif r < 0.78:
                steps.append(pause())
            elif r < 0.84:
                steps.append(resume())
            elif r < 0.93:
                steps.append(_edit(rng))
            elif r < 0.97:
                steps.append(get())
            else:
                steps.append({"wait": round(rng.uniform(0.3, 1.2), 2)})
        out.append(sc(f"gen/{i:03d}", "generated", *steps, *READ))
    return out
