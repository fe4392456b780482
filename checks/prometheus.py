"""A project's checks as Prometheus text, in Healthchecks' format (its per-project metrics endpoint).

Pure: the project's checks, their projected states and the time go in, the exposition text comes
out. The series, their HELP and TYPE lines, the label set (``name``, ``tags``, ``unique_key``,
never the uuid: a uuid is all a ping needs) and the escaping are upstream's
(hc/integrations/prometheus/views.py), so a scrape config or alert rule written for Healthchecks
works unchanged. One series is pingstream's own, after upstream's:
``pingstream_check_last_duration_seconds``, for checks whose last run has a duration.
"""

from __future__ import annotations

from datetime import datetime
from typing import Iterator

from schemas.events import CheckConfig

from .document import status, with_registry
from .spec import unique_key

# (series, HELP text) in upstream's order; each is a gauge over the checks.
_CHECK_SERIES = (
    ("hc_check_up", "Whether the check is currently up (1 for yes, 0 for no)."),
    ("hc_check_started", "Whether the check is currently started (1 for yes, 0 for no)."),
    ("hc_check_grace", "Whether the check is currently in the grace period (1 for yes, 0 for no)."),
    ("hc_check_paused", "Whether the check is currently paused (1 for yes, 0 for no)."),
)


def escape(text: str) -> str:
    """A label value as upstream escapes it: backslash, double quote and line feed."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def tags_list(tags: str) -> list[str]:
    """Upstream's ``Check.tags_list``: the space-separated tags, empty ones dropped."""
    return [t.strip() for t in tags.split(" ") if t.strip()]


def _lines(checks: list[CheckConfig], states: dict[str, dict], now: datetime) -> Iterator[str]:
    rows = []  # (labels, status, started, last duration) per check
    for check in checks:
        state = with_registry(check, states.get(check.id))
        labels = f'{{name="{escape(check.name)}", tags="{escape(check.tags)}", unique_key="{unique_key(check.id)}"}}'
        started = 1 if state and state.get("last_start") is not None else 0
        duration = state.get("last_duration_s") if state else None
        rows.append((labels, status(check, state, now), started, duration))

    for i, (series, help_text) in enumerate(_CHECK_SERIES):
        if i:
            yield ""
        yield f"# HELP {series} {help_text}"
        yield f"# TYPE {series} gauge"
        for labels, st, started, _ in rows:
            value = {
                "hc_check_up": 0 if st == "down" else 1,
                "hc_check_started": started,
                "hc_check_grace": 1 if st == "grace" else 0,
                "hc_check_paused": 1 if st == "paused" else 0,
            }[series]
            yield f"{series}{labels} {value}"

    all_tags: set[str] = set()
    down_tags: set[str] = set()
    num_down = 0
    for check, (_, st, _, _) in zip(checks, rows):
        tags = tags_list(check.tags)
        all_tags.update(tags)
        if st == "down":
            num_down += 1
            down_tags.update(tags)
    yield ""
    yield "# HELP hc_tag_up Whether all checks with this tag are up (1 for yes, 0 for no)."
    yield "# TYPE hc_tag_up gauge"
    for tag in sorted(all_tags):
        yield f'hc_tag_up{{tag="{escape(tag)}"}} {0 if tag in down_tags else 1}'
    yield ""
    yield "# HELP hc_checks_total The total number of checks."
    yield "# TYPE hc_checks_total gauge"
    yield f"hc_checks_total {len(checks)}"
    yield ""
    yield "# HELP hc_checks_down_total The number of checks currently down."
    yield "# TYPE hc_checks_down_total gauge"
    yield f"hc_checks_down_total {num_down}"

    # pingstream's extension
    yield ""
    yield "# HELP pingstream_check_last_duration_seconds Duration of the check's last completed run, in seconds."
    yield "# TYPE pingstream_check_last_duration_seconds gauge"
    for labels, _, _, duration in rows:
        if duration is not None:
            yield f"pingstream_check_last_duration_seconds{labels} {float(duration)!r}"


def exposition(checks: list[CheckConfig], states: dict[str, dict], now: datetime) -> str:
    """The text of the endpoint for ``checks`` (in the order given) and their projected ``states``."""
    return "".join(line + "\n" for line in _lines(checks, states, now))
