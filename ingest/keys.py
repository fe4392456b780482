"""Typed application keys shared by the edge's handlers."""

from __future__ import annotations

from aiohttp import web

from pingstream.clickhouse import ClickHouse
from pingstream.config import Config
from pingstream.eventlog.base import EventLog
from pingstream.registry import Registry

CONFIG = web.AppKey("config", Config)
EVENT_LOG = web.AppKey("event_log", EventLog)
REGISTRY = web.AppKey("registry", Registry)
CLICKHOUSE = web.AppKey("clickhouse", ClickHouse)
