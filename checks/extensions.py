"""pingstream's extension fields of a check (issue #19), beside Healthchecks' own.

- ``failure_threshold``: consecutive failures (fail pings, missed periods, runs over
  time or too short) before the check goes down; ``recovery_threshold``: consecutive
  successes before a down check comes back up. Integers from 1 (Healthchecks) to 1000.
- ``flapping_threshold``: more up/down changes than this within a day are announced once
  (a ``flapping`` event) and the flips held until it calms; ``broken_after``: seconds down
  before one ``broken`` event. ``null`` (the default) turns either off.
- ``depends_on``: parent check uuids of the same project (at most 20, no cycle);
  while a parent is down, the check's transitions are held (``dependency:<uuid>``).
- ``min_runtime`` / ``max_runtime``: seconds; a run (start ping to success) shorter than
  ``min_runtime`` is a failure at its finish, one longer than ``max_runtime`` is a
  failure as soon as that time has passed since its start. ``"auto"``: the 1st / 99th
  percentile of the check's own recent runs (``monitor.learned``). ``null`` turns a bound off.

Every field defaults to off, and a check document shows a field only when it is set
to something else, so a check that does not use the extension reads exactly as in
Healthchecks. Kept apart from ``checks.spec`` so Healthchecks' own validation stays as it is.
"""

from __future__ import annotations

from schemas.events import CheckConfig

import re

MAX_THRESHOLD = 1000
MAX_PARENTS = 20
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
MAX_RUNTIME_S = 31_536_000


class ExtensionError(ValueError):
    """A bad extension field; ``checks.spec`` reports it like its own (``json validation error: ...``)."""


def _threshold(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ExtensionError(f"{name} is not a number")
    if value < 1:
        raise ExtensionError(f"{name} is too small")
    if value > MAX_THRESHOLD:
        raise ExtensionError(f"{name} is too large")
    return value


def _runtime(name: str, value, whole: bool = False) -> float | str | None:
    if whole:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ExtensionError(f"{name} is not a number")
    elif value is None or value == "auto":
        return value
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ExtensionError(f"{name} is neither a number nor auto")
    if not value > 0:  # (NaN too)
        raise ExtensionError(f"{name} is too small")
    if value > MAX_RUNTIME_S:
        raise ExtensionError(f"{name} is too large")
    return float(value)


def _parents(value) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ExtensionError("depends_on is not an array")
    if len(value) > MAX_PARENTS:
        raise ExtensionError(f"depends_on has more than {MAX_PARENTS} checks")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not _UUID.match(item):
            raise ExtensionError("an item in depends_on is not a check uuid")
        if item not in out:
            out.append(item)
    return tuple(out)


def validate_extension(data: dict) -> dict:
    """The extension fields of a request body, validated (first bad one raises ExtensionError)."""
    out: dict = {}
    for name in ("failure_threshold", "recovery_threshold"):
        if name in data:
            out[name] = _threshold(name, data[name])
    for name in ("min_runtime", "max_runtime"):
        if name in data:
            out[name] = _runtime(name, data[name])
    if "flapping_threshold" in data:
        value = data["flapping_threshold"]
        out["flapping_threshold"] = None if value is None else _threshold("flapping_threshold", value)
    if "broken_after" in data:
        value = data["broken_after"]
        out["broken_after"] = None if value is None else int(_runtime("broken_after", value, whole=True))
    if "depends_on" in data:
        out["depends_on"] = _parents(data["depends_on"])
    problem = _crossed(out.get("min_runtime"), out.get("max_runtime"))
    if problem is not None:
        raise ExtensionError(problem)
    return out


def _crossed(low, high) -> str | None:
    if isinstance(low, float) and isinstance(high, float) and low >= high:
        return "min_runtime is not less than max_runtime"
    return None


_FIELDS = (("failure_threshold", "failure_threshold"), ("recovery_threshold", "recovery_threshold"),
           ("min_runtime", "min_runtime_s"), ("max_runtime", "max_runtime_s"), ("depends_on", "depends_on"),
           ("flapping_threshold", "flapping_threshold"), ("broken_after", "broken_after_s"))


def extension_changes(spec: dict) -> dict:
    """CheckConfig changes for the extension fields a validated spec names."""
    return {field: spec[key] for key, field in _FIELDS if key in spec}


def extension_document(check: CheckConfig) -> dict:
    """The extension fields of a check document: only those set to something other than the default."""
    out: dict = {}
    if check.failure_threshold != 1:
        out["failure_threshold"] = check.failure_threshold
    if check.recovery_threshold != 1:
        out["recovery_threshold"] = check.recovery_threshold
    for key, field in (("min_runtime", "min_runtime_s"), ("max_runtime", "max_runtime_s")):
        value = getattr(check, field)
        if value is not None:
            out[key] = int(value) if isinstance(value, float) and value == int(value) else value
    if check.flapping_threshold is not None:
        out["flapping_threshold"] = check.flapping_threshold
    if check.broken_after_s is not None:
        out["broken_after"] = check.broken_after_s
    if check.depends_on:
        out["depends_on"] = list(check.depends_on)
    return out


def uses_rules(check: CheckConfig) -> bool:
    """Whether the check's status is decided by pingstream's rules (then the monitor's word is its status)."""
    return (check.failure_threshold != 1 or check.recovery_threshold != 1
            or check.min_runtime_s is not None or check.max_runtime_s is not None)


def bounds_error(check: CheckConfig) -> str | None:
    """Why the check's run time bounds cannot hold together (after an update named only one), or None."""
    return _crossed(check.min_runtime_s, check.max_runtime_s)


def dependency_error(check: CheckConfig, project_checks: dict[str, CheckConfig]) -> str | None:
    """Why the check's parents cannot be (another project's or unknown check, itself, a cycle), or None.

    ``project_checks``: the project's checks by uuid, as they will be with ``check`` saved."""
    for parent in check.depends_on:
        if parent == check.id:
            return "depends_on names the check itself"
        if parent not in project_checks:
            return f"depends_on names an unknown check: {parent}"
    # A cycle would let two checks hold each other's alerts: walk up from the check's parents.
    seen: set[str] = set()
    todo = list(check.depends_on)
    while todo:
        current = todo.pop()
        if current == check.id:
            return "depends_on would make a cycle"
        if current in seen:
            continue
        seen.add(current)
        parent = project_checks.get(current)
        if parent is not None:
            todo.extend(parent.depends_on)
    return None
