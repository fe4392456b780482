"""``pingstream channel add|list|rm``: a project's alert channels, written to the log as the API
writes them (the registry is read first, to find the project and its checks)."""

from __future__ import annotations

import asyncio
import json
import sys

from checks.channels import channel_document, channel_from_spec
from checks.spec import SpecError
from runtime.config import Config
from runtime.eventlog import open_eventlog
from runtime.registry import Registry, add_channel, follow, remove_channel
from schemas.events import utcnow, uuid7


async def _registry(event_log) -> Registry:
    registry, ready, stop = Registry(), asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(follow(registry, event_log, ready, stop, name="cli registry"))
    try:
        done, _ = await asyncio.wait([task, asyncio.ensure_future(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
    finally:
        stop.set()
        await task
    return registry


def _project(registry: Registry, wanted: str):
    found = [p for p in registry.projects.values() if wanted in (p.id, p.name)]
    if len(found) != 1:
        print(f"pingstream: {'no' if not found else 'more than one'} project {wanted!r}", file=sys.stderr)
        return None
    return found[0]


async def command(config: Config, args) -> int:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    async with open_eventlog(config) as event_log:
        registry = await _registry(event_log)
        if args.action == "rm":
            channel = registry.channels.get(args.channel_id)
            if channel is None:
                print(f"pingstream: no channel {args.channel_id!r}", file=sys.stderr)
                return 1
            await remove_channel(event_log, registry, channel)
            print(f"removed {channel.kind} channel {channel.id} ({channel.name!r})")
            return 0
        project = _project(registry, args.project)
        if project is None:
            return 1
        if args.action == "list":
            for channel in registry.project_channels(project.id):
                print(json.dumps(dict(channel_document(channel), events=list(channel.events))))
            return 0
        spec: dict = {"kind": args.kind, "name": args.name, "events": [e for e in args.events.split(",") if e],
                      "method": args.method}
        for key in ("url", "email", "body"):
            if getattr(args, key) is not None:
                spec[key] = getattr(args, key)
        if args.header:
            pairs = [h.partition(":") for h in args.header]
            spec["headers"] = {name.strip(): value.strip() for name, _, value in pairs}
        try:
            channel = channel_from_spec(spec, id=str(uuid7()), project_id=project.id, created=utcnow(),
                                        allow_private=config.webhook_allow_private)
        except SpecError as exc:
            print(f"pingstream: {str(exc).removeprefix('json validation error: ')}", file=sys.stderr)
            return 2
        await add_channel(event_log, registry, channel)
        doc = dict(channel_document(channel), events=list(channel.events))
        if channel.secret:
            doc["secret"] = channel.secret  # shown once: keep it where the receiver verifies signatures
        print(json.dumps(doc))
        return 0
