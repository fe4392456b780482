"""Normalising answers so two servers' answers can be compared, and comparing them.

What differs between any two servers and is not behaviour is replaced:

- uuids -> ``<uuid:N>`` by order of first appearance in the scenario (uuids written in the
  scenario itself, e.g. rids, stay as they are); 40-hex keys (``unique_key``) -> ``<hex:N>``;
- the server's base URL -> ``<base>``; the scenario token -> ``<T>``; API / ping keys ->
  ``<API_KEY>`` etc.; badge URL signatures -> ``<sig:N>``;
- timestamps -> their distance from when the request was sent: ``<ts:now>`` (within 15 s)
  or ``<ts:now+60m>`` (minutes, rounded), with the format (``s``: no fraction, ``us``: with
  microseconds, ``z``: ``Z`` suffix) in the placeholder; ``next_ping`` of a cron/OnCalendar
  check -> ``<ts:schedule>`` (its distance depends on the wall clock);
- measured durations (``duration``, ``last_duration``) -> ``<dur:~Ns,Pdp>``: nearest second and
  precision (``2dp`` = at most 2 decimals, ``3dp`` = more); pingstream's may be longer by the time
  the harness spent waiting for its read model in that scenario so far (that wait can fall inside
  a run), plus a second;
- HTML error pages -> ``<html page>`` (Django's 404 page: only the status is compared).

Headers compared: content-type (media type, with ``charset=utf-8`` dropped for JSON where the
parameter means nothing), every ``access-control-*`` (allow-methods as a sorted set, since
Healthchecks builds it from a Python set), ``ping-body-limit``, ``allow``, ``location``,
``cache-control`` (sorted directives). Bodies: JSON field by field, text exactly.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX40 = re.compile(r"\b[0-9a-f]{40}\b")
_TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?$")
_BADGE = re.compile(r"/badge/([^/]+)/([^/.]+)")
_CHECK_BADGE = re.compile(r"/b/([23])/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Fields whose value is state that a lagging read model shows late; only differences in these
# make a replayed read be repeated (see harness.py). Keys absent on one side are not lag.
STATE_FIELDS = {"n_pings", "status", "started", "last_ping", "next_ping", "last_duration", "checks"}
HEADERS = ("content-type", "access-control-allow-origin", "access-control-allow-headers",
           "access-control-allow-methods", "access-control-max-age", "access-control-expose-headers",
           "ping-body-limit", "allow", "location", "cache-control")


class Normaliser:
    def __init__(self, base_url: str, token: str, keys: dict[str, str], literal_uuids: set[str] = frozenset()) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.keys = {v: k for k, v in keys.items() if v}
        self.literal = {u.lower() for u in literal_uuids}
        self.uuids: dict[str, str] = {}
        self.hexes: dict[str, str] = {}
        self.sigs: dict[str, str] = {}

    def snapshot(self):
        return dict(self.uuids), dict(self.hexes), dict(self.sigs)

    def restore(self, snap) -> None:
        self.uuids, self.hexes, self.sigs = (dict(x) for x in snap)

    # --- pieces -------------------------------------------------------------------

    def _uuid(self, m: re.Match) -> str:
        u = m.group(0).lower()
        if u in self.literal:
            return m.group(0)
        return self.uuids.setdefault(u, f"<uuid:{len(self.uuids) + 1}>")

    def _hex(self, m: re.Match) -> str:
        return self.hexes.setdefault(m.group(0), f"<hex:{len(self.hexes) + 1}>")

    def _badge(self, m: re.Match) -> str:
        sig = m.group(2)
        suffix = "-2" if sig.endswith("-2") else ""
        core = sig[:-2] if suffix else sig
        return f"/badge/<badge_key>/{self.sigs.setdefault(core, f'<sig:{len(self.sigs) + 1}>')}{suffix}"

    def text(self, s: str) -> str:
        if self.base_url:
            s = s.replace(self.base_url, "<base>")
        if self.token:
            s = s.replace(self.token, "<T>")
        for value, name in self.keys.items():
            if len(value) >= 8:
                s = s.replace(value, f"<{name}>")
        s = _BADGE.sub(self._badge, s)
        s = _CHECK_BADGE.sub(r"/b/\1/<check_badge_key>", s)
        s = _UUID.sub(self._uuid, s)
        s = _HEX40.sub(self._hex, s)
        return s

    @staticmethod
    def timestamp(s: str, t_req: float) -> str:
        m = _TS.match(s)
        fmt = "us" if m.group(1) else "s"
        if m.group(2) == "Z":
            fmt += "z"
        elif m.group(2) is None:
            fmt += "naive"
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        delta = dt.timestamp() - t_req
        if abs(delta) <= 15:
            rel = "now"
        else:
            rel = f"now{round(delta / 60):+d}m"
        return f"<ts[{fmt}]:{rel}>"

    def _register_check_uuids(self, v) -> None:
        """Check uuids ("uuid" fields) get their placeholders first, whatever the key order."""
        if isinstance(v, dict):
            u = v.get("uuid")
            if isinstance(u, str) and _UUID.fullmatch(u):
                _UUID.sub(self._uuid, u)
            for x in v.values():
                self._register_check_uuids(x)
        elif isinstance(v, list):
            for x in v:
                self._register_check_uuids(x)

    def value(self, v, t_req: float, key: str | None = None, parent: dict | None = None):
        if key in ("duration", "last_duration") and isinstance(v, (int, float)) and not isinstance(v, bool):
            # Measured run times: compared to the nearest second (scenario waits keep clear of .5),
            # with their precision (Healthchecks: ping durations rounded to 2 decimals, last_duration int).
            text = repr(v)
            places = len(text.split(".")[1]) if "." in text else 0
            # 1 or 2 places are one class: 2 decimals of a rounded value may print as 1 (0.3)
            return f"<dur:~{round(v)}s{'' if isinstance(v, int) else (',2dp' if places <= 2 else ',3dp')}>"
        if isinstance(v, dict):
            return {self.text(k): self.value(x, t_req, k, v) for k, x in v.items()}
        if isinstance(v, list):
            return [self.value(x, t_req) for x in v]
        if isinstance(v, str):
            if _TS.match(v):
                if key == "next_ping" and parent is not None and "schedule" in parent:
                    return "<ts:schedule>"
                return self.timestamp(v, t_req)
            return self.text(v)
        return v

    # --- a whole answer -----------------------------------------------------------

    def response(self, status: int, headers: dict[str, str], body: bytes, t_req: float) -> dict:
        h = {}
        for name in HEADERS:
            if name in headers:
                h[name] = self.header(name, headers[name])
        ctype = h.get("content-type", "")
        out: dict = {"status": status, "headers": h}
        if ctype.startswith("application/json"):
            try:
                doc = json.loads(body)
                self._register_check_uuids(doc)
                out["json"] = self.value(doc, t_req)
                return out
            except ValueError:
                pass
        text = body.decode("utf-8", "replace")
        low = text.lstrip()[:200].lower()
        if low.startswith("<!doctype html") or low.startswith("<html"):
            out["body"] = "<html page>"
        elif ctype.startswith("image/svg"):
            # the badge's texts (labels are check names and tags: the scenario token -> <T>)
            out["body"] = self.text("<svg " + " | ".join(t.strip() for t in re.findall(r">([^<>]+)<", text) if t.strip()) + ">")
        else:
            out["body"] = self.text(text)
        return out

    def header(self, name: str, value: str) -> str:
        value = value.strip()
        if name == "content-type":
            parts = [p.strip().lower() for p in value.split(";") if p.strip()]
            if parts and parts[0] == "application/json":
                parts = [p for p in parts if p.replace(" ", "") != "charset=utf-8"]
            return "; ".join(parts)
        if name in ("access-control-allow-methods", "access-control-allow-headers", "allow",
                    "access-control-expose-headers"):
            return ", ".join(sorted(p.strip().upper() if name != "access-control-allow-headers" else p.strip().lower()
                                    for p in value.split(",") if p.strip()))
        if name == "cache-control":
            return ", ".join(sorted(p.strip().lower() for p in value.split(",") if p.strip()))
        return self.text(value)


def compare(expected: dict, actual: dict, settled_s: float = 0.0, late_s: float = 0.0) -> list[dict]:
    """Differences between two normalised answers: [{"where", "expected", "actual"}]. ``settled_s``: the time
    the scenario spent so far waiting for pingstream's read model; ``late_s``: the time it has run so far,
    less the waits it asks for (see ``_near_now``)."""
    out: list[dict] = []
    if expected.get("status") != actual.get("status"):
        out.append({"where": "status", "expected": expected.get("status"), "actual": actual.get("status")})
    if expected.get("body") == "<html page>":
        return out  # Django's HTML error page (no route matched, Http404): only the status means something
    eh, ah = expected.get("headers", {}), actual.get("headers", {})
    for name in sorted(set(eh) | set(ah)):
        if eh.get(name) != ah.get(name):
            out.append({"where": f"header {name}", "expected": eh.get(name), "actual": ah.get(name)})
    if "json" in expected or "json" in actual:
        if "json" not in expected or "json" not in actual:
            out.append({"where": "body", "expected": expected.get("json", expected.get("body")),
                        "actual": actual.get("json", actual.get("body"))})
        else:
            _diff(expected["json"], actual["json"], "body", out, 1 + int(settled_s + 0.999), id(expected), late_s)
    elif expected.get("body") != actual.get("body"):
        out.append({"where": "body", "expected": expected.get("body"), "actual": actual.get("body")})
    return out


_MISSING = "<absent>"


def _diff(e, a, where: str, out: list, slack_s: int = 1, answer: int = 0, late_s: float = 0.0) -> None:
    """``answer``: which recorded answer this is (for WHOLE_SECONDS)."""
    if isinstance(e, dict) and isinstance(a, dict):
        for k in list(e) + [k for k in a if k not in e]:
            _diff(e.get(k, _MISSING), a.get(k, _MISSING), f"{where}.{k}", out, slack_s, answer, late_s)
    elif isinstance(e, list) and isinstance(a, list):
        if len(e) != len(a):
            out.append({"where": f"{where}[len]", "expected": len(e), "actual": len(a)})
        for i in range(min(len(e), len(a))):
            _diff(e[i], a[i], f"{where}[{i}]", out, slack_s, answer, late_s)
    elif (e != a or type(e) is not type(a)) and not _same_duration(e, a, slack_s) \
            and not _whole_second(e, a, where, answer) and not _near_now(e, a, late_s):
        out.append({"where": where, "expected": e, "actual": a})


_DURATION = re.compile(r"<dur:~(\d+)s(,\w+)?>\Z")


def _same_duration(expected, actual, slack_s: int = 1) -> bool:
    """A measured duration may come out longer on pingstream by the time the harness spent so far
    waiting for pingstream's read model to catch up (before a write that follows pings, see README),
    or on its answers beyond half a second each (a busy machine; harness.SLOW_ANSWER_S), since that
    time can fall between a run's start and its finish; plus a second of rounding."""
    if not (isinstance(expected, str) and isinstance(actual, str)):
        return False
    me, ma = _DURATION.match(expected), _DURATION.match(actual)
    return bool(me and ma and me.group(2) == ma.group(2) and 0 <= int(ma.group(1)) - int(me.group(1)) <= slack_s)


_TIMESTAMP = re.compile(r"<ts\[(us|s)(z|naive)?\]:([^>]+)>\Z")
_NOW = {"now", "now+0m"}  # "now-0m" is never written: round() gives 0, and 0 prints "+0"
_MINUTES_AGO = re.compile(r"now-(\d+)m\Z")


def _near_now(expected, actual, late_s: float = 0.0) -> bool:
    """``now`` (within 15 s of the request) against ``now+0m`` (within 30 s, either side): both are the time
    of a step of the same scenario, 15 s apart only when a loaded machine slowed one side's reads (each
    scenario's later times are a minute or more away, and keep their own labels). Healthchecks' ``now``
    against pingstream's ``now-Nm`` likewise, when pingstream's run of the scenario so far (``late_s``: its
    time less the waits it asks for, which Healthchecks' run had too) is long enough for a step of it to
    be that old: N minutes ago, rounded, is at least (N - 0.5) minutes."""
    if not (isinstance(expected, str) and isinstance(actual, str)):
        return False
    me, ma = _TIMESTAMP.match(expected), _TIMESTAMP.match(actual)
    if not (me and ma and me.group(1, 2) == ma.group(1, 2) and me.group(3) in _NOW):
        return False
    if ma.group(3) in _NOW:
        return True
    ago = _MINUTES_AGO.match(ma.group(3))
    return bool(ago and (int(ago.group(1)) - 0.5) * 60 <= late_s + 15)

# Where a timestamp with microseconds on one side had none on the other (see _whole_second), in this
# process's replays so far, once per recorded answer and place (a read the harness repeats, and the final
# comparison, compare the same answer again); test_replay.py fails the replay if there are more than
# chance makes. The final comparison may count an answer a second time.
WHOLE_SECONDS: dict[tuple[int, str], str] = {}
WHOLE_SECONDS_BY_CHANCE = 2


def _whole_second(expected, actual, where: str, answer: int) -> bool:
    """Both servers print a time as Python's ``isoformat`` does, which leaves the fraction out when the
    microseconds are 0: a time taken with microseconds lands on a whole second once in a million. So a
    ``<ts[s]>`` against a ``<ts[us]>`` (same suffix, same distance) is the same here. It is counted,
    because a server that drops the fraction every time makes it every time (WHOLE_SECONDS)."""
    if not (isinstance(expected, str) and isinstance(actual, str)):
        return False
    me, ma = _TIMESTAMP.match(expected), _TIMESTAMP.match(actual)
    if not (me and ma and {me.group(1), ma.group(1)} == {"us", "s"} and me.group(2, 3) == ma.group(2, 3)):
        return False
    WHOLE_SECONDS[answer, where] = f"{where}: healthchecks {expected}, pingstream {actual}"
    return True


def stale_sensitive(diffs: list[dict]) -> bool:
    """Whether some difference may be a read model that has not caught up yet."""
    for d in diffs:
        w = d["where"]
        if w.startswith("header") or _MISSING in (d["expected"], d["actual"]):
            continue
        if w in ("status", "body") or w.startswith(("body.pings", "body.flips")):
            return True
        leaf = re.sub(r"\[.*?\]", "", w).split(".")
        if any(part in STATE_FIELDS for part in leaf):
            return True
    return False
