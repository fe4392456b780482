"""Typed application keys shared by the edge's handlers."""

from __future__ import annotations

from aiohttp import web

from runtime.clickhouse import ClickHouse
from runtime.config import Config
from runtime.eventlog.base import EventLog
from runtime.registry import Registry

CONFIG = web.AppKey("config", Config)
EVENT_LOG = web.AppKey("event_log", EventLog)
REGISTRY = web.AppKey("registry", Registry)
CLICKHOUSE = web.AppKey("clickhouse", ClickHouse)


class Limiters:
    """Per-check and per-client-address ping rate limits (see ingest/ratelimit.py)."""

    def __init__(self, config: Config) -> None:
        from .ratelimit import RateLimiter

        self.by_check = RateLimiter(config.rate_limit_check_per_s, config.rate_limit_burst)
        self.by_client = RateLimiter(config.rate_limit_client_per_s, config.rate_limit_burst)


LIMITERS = web.AppKey("limiters", Limiters)
