"""Checks with webhook channels on an embedded log, and whether a notifier process has joined its group:
what the notifier's kill test and its benchmark (bench/notify.py) start from."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from checks.channels import channel_from_spec
from notify.service import GROUP
from runtime.registry import Registry, add_channel, create_project, save_check
from schemas.events import CheckConfig, utcnow, uuid7


async def seed_fleet(log, urls: list[str], checks: int, project: str = "acme") -> tuple[object, list[CheckConfig]]:
    """A project with one webhook channel per URL and ``checks`` checks, each notifying all of them."""
    registry = Registry()
    owner = await create_project(log, project, registry)
    for url in urls:
        channel = channel_from_spec({"kind": "webhook", "url": url}, id=str(uuid7()), project_id=owner.id,
                                    created=utcnow(), allow_private=True)
        await add_channel(log, registry, channel)
    channels = tuple(sorted(registry.channels))
    made = []
    for i in range(checks):
        check = CheckConfig(id=str(uuid7()), project_id=owner.id, name=f"job-{i}", channels=channels, created=utcnow())
        await save_check(log, registry, check)
        made.append(check)
    return owner, made


def notifier_started(path: Path) -> bool:
    """Whether the notifier's consumer group has committed its start in the embedded log at ``path``."""
    with sqlite3.connect(path) as conn:
        (n,) = conn.execute("SELECT COUNT(*) FROM group_offsets WHERE grp=?", (GROUP,)).fetchone()
    return n > 0
