"""Which notifications to hold: a pure function of a transition and the configuration it meets.

A held transition is emitted and recorded like any other (the status changed); ``held`` only
tells alerting consumers not to notify, and why. Reasons, first match wins:
``maintenance`` / ``snooze`` (a window of the check or its project covers the moment).
"""

from __future__ import annotations

import msgspec

from checks.windows import held_by
from schemas.events import Transition, Window


def hold(t: Transition, windows: tuple[Window, ...]) -> Transition:
    """``t`` with ``held`` set when one of ``windows`` (the check's and its project's) covers it."""
    if not windows or t.held is not None:
        return t
    reason = held_by(windows, t.at.timestamp())
    return t if reason is None else msgspec.structs.replace(t, held=reason)
