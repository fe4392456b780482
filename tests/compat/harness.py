"""Runs compatibility scenarios against one HTTP target (Healthchecks or pingstream).

A scenario is a dict (JSON-serialisable, so the recording carries the exact requests):

    {"id": "ping/uuid/get", "area": "ping", "slow": False,
     "steps": [
        {"method": "POST", "path": "/api/v3/checks/", "key": "API_KEY",
         "json": {"name": "{T}-a", "timeout": 3600}, "save": {"C": "uuid"}},
        {"method": "GET", "path": "/ping/{C}"},
        {"wait": 1.0},
        {"method": "GET", "path": "/api/v3/checks/{C}", "key": "API_KEY"},
     ]}

Request steps: ``method``, ``path`` (template; an absolute ``http://`` result is used as is),
``key`` (symbolic API key sent as X-Api-Key), ``headers`` (values are templates; a value of
``{API_KEY}`` etc. is filled in), ``json`` (templates in strings, recursively), ``body`` (text)
or ``body_hex`` (raw bytes), ``save`` ({VAR: "dotted.path"} from the JSON answer).

Templates: ``{T}`` scenario token (unique per run and scenario: isolates scenarios from each
other and from earlier runs on the same server), ``{PING_KEY}``, ``{OTHER_PING_KEY}``,
``{API_KEY}``, ``{RO_KEY}``, ``{OTHER_KEY}``, saved variables, ``{NOW}`` / ``{NOW-3600}``
(unix seconds). Keys differ between servers, so scenarios use only the symbols.

Eventual consistency of the target (pingstream's reads come from ClickHouse after the projector
folded the log): a target with ``settle_s > 0`` repeats a read (a GET outside /ping/: idempotent)
whose normalised answer differs from the recorded one in state that a lagging read model shows
late (normalise.stale_sensitive: n_pings, status, last_ping, pings, flips, ...), until it matches,
or its answer has not changed for ``stable_s`` (1 s: the projector folds within ~0.5 s), or
``settle_s`` (4 s) passed; the last answer is kept and compared. Differences of shape (absent
fields, headers) are never waited for. A difference that outlives this is reported; the method
cannot turn a persistent difference into a match, only wait out a transient one.
Before every write to an existing check that follows pings, ``expand()`` inserts a GET of that
check (``"auto": "settle"``), recorded like any step, so the state a write answers with (pause,
update, delete) is read only once the read model caught up with the pings before it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import secrets
import time
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from .normalise import Normaliser, compare, stale_sensitive

USER_AGENT = "pingstream-compat/1"
KEY_SYMBOLS = ("API_KEY", "RO_KEY", "OTHER_KEY", "PING_KEY", "OTHER_PING_KEY")
_TEMPLATE = re.compile(r"\{([A-Z][A-Z0-9_]*)(\|upper)?([+-]\d+)?\}")
_CHECK_PATH = re.compile(r"^/api/v[123]/checks/(\{[A-Z][A-Z0-9_]*\})(/pause|/resume)?$")


# An answer slower than this (a busy machine: two test workers on two cores) counts, beyond it, as time a
# measured duration may include, as the settling reads' time does: gen/195 read a 0 s run as 8 s once in a
# suite, its start and finish a GET apart.
SLOW_ANSWER_S = 0.5


@dataclass
class Target:
    name: str
    base_url: str
    keys: dict[str, str]
    settle_s: float = 0.0  # > 0: repeat reads until they match the expectation (eventual consistency)
    stable_s: float = 1.0  # ... or until the answer has not changed for this long
    concurrency: int = 8


@dataclass
class StepResult:
    request: dict
    response: dict  # normalised: status, headers, body
    attempts: int = 1
    settled_s: float = 0.0  # time this scenario has spent repeating reads, or on slow answers, so far (durations may
    # include it)
    late_s: float = 0.0  # time it has run so far, less the waits it asks for (times of its steps may be as old)


@dataclass
class ScenarioResult:
    id: str
    steps: list[StepResult] = field(default_factory=list)
    error: str | None = None


def run_token() -> str:
    return secrets.token_hex(3)  # [0-9a-f]: valid in slugs, names and tags


def scenario_token(run: str, index: int) -> str:
    return f"x{run}{index:04d}"


def expand(scenario: dict) -> dict:
    """Insert the settle GETs (see module docstring)."""
    out = []
    pinged = False
    for step in scenario["steps"]:
        if "method" in step:
            path = step["path"]
            if path.startswith("/ping/"):
                pinged = True
            m = _CHECK_PATH.match(path)
            if pinged and m and step["method"] in ("POST", "DELETE"):
                out.append({"method": "GET", "path": f"/api/v3/checks/{m.group(1)}", "key": "API_KEY", "auto": "settle"})
                pinged = False
            elif path.startswith("/api/") and step["method"] == "GET":
                pinged = False
        out.append(step)
    s = dict(scenario)
    s["steps"] = out
    return s


def _fill(value, env: dict):
    if isinstance(value, str):
        def sub(m: re.Match) -> str:
            name, upper, delta = m.group(1), m.group(2), m.group(3)
            if name == "NOW":
                return str(int(time.time()) + int(delta or 0))
            if name not in env:
                return m.group(0)
            return str(env[name]).upper() if upper else str(env[name])
        return _TEMPLATE.sub(sub, value)
    if isinstance(value, dict):
        return {_fill(k, env): _fill(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, env) for v in value]
    return value


def _dig(doc, path: str):
    for part in path.split("."):
        if isinstance(doc, list):
            doc = doc[int(part)]
        elif isinstance(doc, dict):
            doc = doc[part]
        else:
            raise KeyError(path)
    return doc


class Runner:
    def __init__(self, target: Target, run: str | None = None) -> None:
        self.target = target
        self.run = run or run_token()

    async def run_all(self, scenarios: list[dict], expected: dict[str, list[dict]] | None = None,
                      progress=None) -> list[ScenarioResult]:
        """Runs the scenarios concurrently (each uses its own checks) in a bounded pool."""
        sem = asyncio.Semaphore(self.target.concurrency)
        conn = aiohttp.TCPConnector(limit=self.target.concurrency * 2, force_close=False)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=conn, timeout=timeout, auto_decompress=True,
                                         cookie_jar=aiohttp.DummyCookieJar()) as session:
            async def one(i: int, sc: dict) -> ScenarioResult:
                async with sem:
                    try:
                        res = await self.run_one(session, i, sc, (expected or {}).get(sc["id"]))
                    except Exception as exc:  # a broken scenario is a result, not a crash of the run
                        res = ScenarioResult(sc["id"], error=f"{exc.__class__.__name__}: {exc}")
                    if progress:
                        progress(res)
                    return res
            return await asyncio.gather(*(one(i, sc) for i, sc in enumerate(scenarios)))

    async def run_one(self, session: aiohttp.ClientSession, index: int, scenario: dict,
                      expected: list[dict] | None = None) -> ScenarioResult:
        token = scenario_token(self.run, index)
        env = dict(self.target.keys)
        env["T"] = token
        norm = Normaliser(base_url=self.target.base_url, token=token, keys=self.target.keys,
                          literal_uuids=_literal_uuids(scenario))
        result = ScenarioResult(scenario["id"])
        n = 0
        settled_s = 0.0
        begun, waited_s = time.monotonic(), 0.0
        for step in scenario["steps"]:
            if "wait" in step:
                await asyncio.sleep(step["wait"])
                waited_s += step["wait"]
                continue
            exp = expected[n] if expected is not None and n < len(expected) else None
            n += 1
            req = self._build(step, env)
            started = time.monotonic()
            deadline = started + self.target.settle_s
            attempts = 0
            last, since = None, time.monotonic()
            while True:
                attempts += 1
                snapshot = norm.snapshot()
                if attempts == 1:  # a repeated read is judged as of the first: when Healthchecks answered it
                    t_req = time.time()
                    late_s = time.monotonic() - begun - waited_s
                status, headers, body = await self._send(session, req)
                resp = _scope(step, norm.response(status, headers, body, t_req))
                now = time.monotonic()
                if resp != last:
                    last, since = resp, now
                if (step["method"] != "GET" or "/ping/" in req["url"] or exp is None or self.target.settle_s <= 0
                        or not stale_sensitive(compare(exp, resp)) or now >= deadline
                        or now - since >= self.target.stable_s):
                    break
                norm.restore(snapshot)  # placeholders of a stale answer must not stick
                await asyncio.sleep(min(0.05 * attempts, 0.25))
            if attempts > 1:
                settled_s += time.monotonic() - started
            elif time.monotonic() - started > SLOW_ANSWER_S:  # a loaded machine: a run measured across it is longer
                settled_s += time.monotonic() - started - SLOW_ANSWER_S
            result.steps.append(StepResult(request=_describe(req), response=resp, attempts=attempts,
                                           settled_s=settled_s, late_s=late_s))
            for var, path in (step.get("save") or {}).items():
                try:
                    env[var] = _dig(json.loads(body), _fill(path, env))
                except Exception:
                    env[var] = f"unsaved-{var.lower()}"
        return result

    def _build(self, step: dict, env: dict) -> dict:
        path = _fill(step["path"], env)
        if not path.startswith(("http://", "https://", "/")):
            path = "/" + path
        url = path if path.startswith("http") else self.target.base_url + path
        headers = {"User-Agent": USER_AGENT}
        if step.get("key"):
            headers["X-Api-Key"] = self.target.keys.get(step["key"], step["key"])
        for k, v in (step.get("headers") or {}).items():
            headers[k] = _fill(v, env)
        data = None
        if "json" in step:
            data = json.dumps(_fill(step["json"], env)).encode()
            headers.setdefault("Content-Type", "application/json")
        elif "raw_json" in step:  # a JSON text used verbatim (after templates): invalid JSON, odd types
            data = _fill(step["raw_json"], env).encode()
            headers.setdefault("Content-Type", "application/json")
        elif "body" in step:
            data = _fill(step["body"], env).encode()
        elif "body_hex" in step:
            data = bytes.fromhex(step["body_hex"])
        return {"method": step["method"], "url": url, "headers": headers, "data": data}

    async def _send(self, session: aiohttp.ClientSession, req: dict) -> tuple[int, dict, bytes]:
        async with session.request(req["method"], URL(req["url"], encoded=True), headers=req["headers"],
                                   data=req["data"], allow_redirects=False) as r:
            body = await r.read()
            return r.status, {k.lower(): v for k, v in r.headers.items()}, body


def _scope(step: dict, resp: dict) -> dict:
    """``"scope": "badges"``: the project-wide badge list keeps "*" and this scenario's tags only."""
    if step.get("scope") == "badges" and isinstance(resp.get("json"), dict) and isinstance(resp["json"].get("badges"), dict):
        kept = {k: v for k, v in resp["json"]["badges"].items() if k == "*" or "<T>" in k}
        # Signatures were numbered over the whole list (other scenarios' tags too, in the server's
        # order): number them again over what is kept, this scenario's tags first, "*" last.
        kept = dict(sorted(kept.items(), key=lambda kv: kv[0] == "*"))
        numbers: dict[str, str] = {}
        text = re.sub(r"<sig:\d+>", lambda m: numbers.setdefault(m.group(0), f"<sig:{len(numbers) + 1}>"),
                      json.dumps(kept))
        resp["json"]["badges"] = json.loads(text)
    return resp


def _describe(req: dict) -> dict:
    d = {"method": req["method"], "url": req["url"]}
    if req["data"] is not None:
        d["body"] = req["data"][:300].decode("utf-8", "replace")
    return d


def _literal_uuids(scenario: dict) -> set[str]:
    text = json.dumps(scenario["steps"])
    return set(re.findall(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", text))


def prepare(scenarios: list[dict]) -> list[dict]:
    return [expand(copy.deepcopy(s)) for s in scenarios]
