"""The monitor's compact view of the registry: check id -> Plan.

It is folded by ``runtime.registry.follow`` (which only calls ``apply``), but
keeps just what the state machine needs, interned, instead of whole
CheckConfigs: with a million checks that is the difference between a few
tens of megabytes and most of a gigabyte.
"""

from __future__ import annotations

import sys

from schemas.events import CheckConfig, CheckDeleted, CheckUpserted, ProjectDeleted, ProjectUpserted, Window

from .transitions import Plan


def plan_of(check: CheckConfig) -> Plan:
    return Plan(
        project_id=check.project_id,
        kind=check.kind,
        timeout_s=float(check.timeout_s),
        grace_s=float(check.grace_s),
        schedule=check.schedule,
        tz=check.tz,
        manual_resume=check.manual_resume,
        failure_threshold=check.failure_threshold,
        recovery_threshold=check.recovery_threshold,
        min_runtime_s=check.min_runtime_s,
        max_runtime_s=check.max_runtime_s,
        flapping_threshold=check.flapping_threshold,
        broken_after_s=None if check.broken_after_s is None else float(check.broken_after_s),
    )


class PlanBook:
    def __init__(self) -> None:
        self.plans: dict[str, Plan] = {}
        self.changed: set[str] = set()  # plans that differ from before: the service reconfigures those checks
        self.previous: dict[str, Plan] = {}  # of the changed ones, the plan before (the periods it counted)
        self.deleted: set[str] = set()
        self._interned: dict[Plan, Plan] = {}
        # Maintenance windows, kept apart from the plans: they hold notifications, they move no deadline.
        self.check_windows: dict[str, tuple[Window, ...]] = {}
        self.project_windows: dict[str, tuple[Window, ...]] = {}
        self.parents: dict[str, tuple[str, ...]] = {}  # depends_on, for checks that have it
        self.parent_ids: dict[str, int] = {}  # every check some check depends on -> how many do
        # Whose windows changed (checks, projects): a down held by a window may now end at another time.
        self.windows_changed: set[str] = set()

    def apply(self, event) -> None:
        if isinstance(event, CheckUpserted):
            plan = plan_of(event.check)
            plan = self._interned.setdefault(plan, plan)
            check_id = sys.intern(event.check.id)
            if self.plans.get(check_id) != plan:
                if check_id in self.plans and check_id not in self.changed:
                    self.previous[check_id] = self.plans[check_id]
                self.plans[check_id] = plan
                self.changed.add(check_id)
            self.deleted.discard(check_id)
            if self.check_windows.get(check_id, ()) != event.check.windows:
                self.windows_changed.add(check_id)
            if event.check.windows:
                self.check_windows[check_id] = event.check.windows
            else:
                self.check_windows.pop(check_id, None)
            self._set_parents(check_id, tuple(sys.intern(p) for p in event.check.depends_on))
        elif isinstance(event, ProjectUpserted):
            if self.project_windows.get(event.project.id, ()) != event.project.windows:
                self.windows_changed.add(event.project.id)
            if event.project.windows:
                self.project_windows[event.project.id] = event.project.windows
            else:
                self.project_windows.pop(event.project.id, None)
        elif isinstance(event, CheckDeleted):
            self.check_windows.pop(event.check_id, None)
            self._set_parents(event.check_id, ())
            if self.plans.pop(event.check_id, None) is not None:
                self.deleted.add(event.check_id)
            self.changed.discard(event.check_id)
            self.previous.pop(event.check_id, None)
        elif isinstance(event, ProjectDeleted):
            if self.project_windows.pop(event.project_id, None) is not None:
                self.windows_changed.add(event.project_id)
            for check_id in [c for c, p in self.plans.items() if p.project_id == event.project_id]:
                del self.plans[check_id]
                self.deleted.add(check_id)
                self.changed.discard(check_id)
                self.previous.pop(check_id, None)

    def _set_parents(self, check_id: str, parents: tuple[str, ...]) -> None:
        for p in self.parents.pop(check_id, ()):
            n = self.parent_ids.get(p, 0) - 1
            if n > 0:
                self.parent_ids[p] = n
            else:
                self.parent_ids.pop(p, None)
        if parents:
            self.parents[check_id] = parents
            for p in parents:
                self.parent_ids[p] = self.parent_ids.get(p, 0) + 1

    def windows(self, check_id: str, project_id: str) -> tuple[Window, ...]:
        """The windows that may hold the check's notifications: its own and its project's."""
        own, shared = self.check_windows.get(check_id, ()), self.project_windows.get(project_id, ())
        return own + shared if own and shared else own or shared

    def get(self, check_id: str, project_id: str) -> Plan:
        """The check's plan; Healthchecks' defaults (1 day + 1 hour) while the registry has not caught up.

        The default is remembered, so the real configuration arriving later counts as a change
        and moves the check's deadline."""
        plan = self.plans.get(check_id)
        if plan is None:
            plan = Plan(project_id=project_id)
            plan = self._interned.setdefault(plan, plan)
            self.plans[check_id] = plan
        return plan
