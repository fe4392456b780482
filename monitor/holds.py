"""Which notifications to hold: a pure function of a transition and the configuration it meets.

A held transition is emitted and recorded like any other (the status changed); ``held`` only
tells alerting consumers not to notify, and why. Reasons, first match wins:
``maintenance`` / ``snooze`` (a window of the check or its project covers the moment), then
``dependency:<uuid>`` (a parent the check depends on was down at that moment), then
``flapping`` (set by the fold itself, ``monitor.transitions``). A check's own
transitions are held only by its own windows and parents, never by its children, so a
parent's alert is never hidden by the checks that depend on it.

A down held by a window is not forgotten: when the window ends (overlapping and back-to-back
windows count as one) and the check is still down, ``released`` announces it, a transition of the
status it has to the same one, ``rule="window_end"``, ``released_from`` the window's kind. Its id
is a function of the check and the moment it went down, so a replay gives the same. A check that
came back up inside the window gets none (its up was held too: nobody was told it was down).
"""

from __future__ import annotations

import msgspec

from checks.schedule import to_datetime
from checks.windows import held_by
from schemas.events import Transition, Window, stable_id


Down = dict[str, tuple[float, float | None]]  # check -> (down since, up again at or None): its last time down


def hold(t: Transition, windows: tuple[Window, ...], parents: tuple[str, ...] = (), down: Down | None = None
         ) -> Transition:
    """``t`` with ``held`` set when one of ``windows`` (the check's and its project's) covers it,
    or one of ``parents`` was down at its moment."""
    if not isinstance(t, Transition) or not (windows or parents):
        return t
    at = t.at.timestamp()
    reason = held_by(windows, at) if windows else None
    if reason is None and parents and down:
        for parent in parents:
            span = down.get(parent)
            if span is not None and span[0] <= at and (span[1] is None or at < span[1]):
                reason = f"dependency:{parent}"
                break
    return t if reason is None else msgspec.structs.replace(t, held=reason)


def note_down(down: Down, t: Transition) -> None:
    """Follow a check's own base status: when it went down, and when it came back."""
    if not isinstance(t, Transition):
        return
    if t.to_base == "down" and t.from_base != "down":
        down[t.check_id] = (t.at.timestamp(), None)
    elif t.from_base == "down" and t.to_base != "down":
        since = down.get(t.check_id, (float("-inf"), None))[0]
        down[t.check_id] = (since, t.at.timestamp())


WINDOW_KINDS = frozenset({"maintenance", "snooze"})


def window_held_down(mark: str | None, transitions) -> str | None:
    """Follow, through a check's transitions, whether its current time down was held by a window:
    the window's kind, or None (not down, or its down was notified or held for another reason)."""
    for t in transitions:
        if not isinstance(t, Transition):
            continue
        if t.to_base == "down" and t.from_base != "down":
            mark = t.held if t.held in WINDOW_KINDS else None
        elif t.from_base == "down" and t.to_base != "down":
            mark = None
    return mark


def released(check_id: str, project_id: str, status: str, down_since: float, at: float, kind: str) -> Transition:
    """The announcement, at ``at`` (the window's end), that the check held down since ``down_since`` still is."""
    since = to_datetime(down_since)
    return Transition(
        event_id=stable_id(check_id, "window_end", str(round(down_since * 1_000_000))),
        check_id=check_id, project_id=project_id, from_status=status, to_status=status, at=to_datetime(at),
        reason=f"still down when the {kind} window ended (down since {since.isoformat().replace('+00:00', 'Z')})",
        from_base="down", to_base="down", rule="window_end", released_from=kind,
    )
