"""The three kinds of channel and how one attempt of one alert is sent to each.

Each ``send`` raises on failure: ``Permanent`` (or PrivateTarget) is not retried, anything else
is. Error texts are short and carry neither the target URL nor a secret (they end up in the
deliveries table and in logs): ``describe`` turns an exception into one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import smtplib
import ssl
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from email.message import EmailMessage
from importlib.metadata import PackageNotFoundError, version

import aiohttp
from standardwebhooks import Webhook

from runtime.config import Smtp
from schemas.events import ChannelConfig

from . import alerts, safety

# Apprise logs the services it sends to, URLs and tokens included in some of its messages: the
# notifier says itself what failed (channel id, short error), so Apprise's own lines are kept out.
logging.getLogger("apprise").setLevel(logging.CRITICAL)

try:
    VERSION = version("pingstream")
except PackageNotFoundError:  # running from a tree that was not installed
    VERSION = "0"
USER_AGENT = f"pingstream/{VERSION}"


class Permanent(Exception):
    """Retrying will not help (a refused target, a channel that cannot be sent to)."""


class Refused(Exception):
    """The receiver answered, but not with success."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def describe(exc: BaseException, timeout_s: float) -> str:
    """A short text for a failed attempt, without the URL (which may carry tokens)."""
    if isinstance(exc, (Refused, Permanent, safety.PrivateTarget)):
        return str(exc)[:200]
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return f"timed out after {timeout_s:g} s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.__class__.__name__})"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"SMTP {exc.smtp_code}"
    return exc.__class__.__name__


class Senders:
    """What sends alerts: one HTTP session for webhooks, SMTP settings, and per channel a small
    thread pool for the blocking senders (Apprise, SMTP), so a hanging target holds only its own."""

    def __init__(self, *, smtp: Smtp, allow_private: bool, timeout_s: float) -> None:
        self.smtp = smtp
        self.allow_private = allow_private
        self.timeout_s = timeout_s
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0,  # each channel bounds its own concurrency
                                         resolver=None if allow_private else safety.PublicOnlyResolver())
        self.session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s))
        self._pools: dict[str, ThreadPoolExecutor] = {}

    async def close(self) -> None:
        await self.session.close()
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)

    def _pool(self, channel: ChannelConfig) -> ThreadPoolExecutor:
        pool = self._pools.get(channel.id)
        if pool is None:
            pool = self._pools[channel.id] = ThreadPoolExecutor(4, thread_name_prefix=f"notify-{channel.kind}")
        return pool

    async def _blocking(self, channel: ChannelConfig, fn, *args) -> None:
        future = asyncio.get_running_loop().run_in_executor(self._pool(channel), fn, *args)
        async with asyncio.timeout(self.timeout_s):
            await future

    async def send(self, channel: ChannelConfig, alert: alerts.Alert) -> None:
        if channel.kind == "webhook":
            await self.webhook(channel, alert)
        elif channel.kind == "email":
            await self._blocking(channel, self._email, channel, alert)
        elif channel.kind == "apprise":
            if not self.allow_private:
                await safety.check_resolved(channel.url)
            await self._blocking(channel, self._apprise, channel, alert)
        else:
            raise Permanent(f"unknown channel kind {channel.kind!r}")

    async def webhook(self, channel: ChannelConfig, alert: alerts.Alert) -> None:
        url = channel.url
        if "$" in url:
            url = alerts.render(url, alerts.variables(alert, urlencode=True, template=url))
        if not self.allow_private:
            safety.check_literal(url)
        templates = channel.body + "".join(value for _, value in channel.headers)
        values = alerts.variables(alert, template=templates) if "$" in templates else {}
        headers = {"User-Agent": USER_AGENT, "Idempotency-Key": alert.id}
        if channel.method == "GET":
            payload = ""
        elif channel.body:
            payload = alerts.render(channel.body, values)
            headers["Content-Type"] = "text/plain; charset=utf-8"
        else:
            payload = json.dumps(alerts.document(alert))
            headers["Content-Type"] = "application/json"
        for key, value in channel.headers:
            headers[key] = alerts.render(value, values).encode("latin-1", "xmlcharrefreplace").decode("latin-1")
        if channel.secret:
            # Standard Webhooks: the receiver verifies webhook-signature over id, timestamp and body.
            now = datetime.now(timezone.utc)
            headers["webhook-id"] = alert.id
            headers["webhook-timestamp"] = str(int(now.timestamp()))
            headers["webhook-signature"] = Webhook(channel.secret).sign(alert.id, now, payload)
        async with self.session.request(channel.method, url, data=payload.encode() if payload else None,
                                        headers=headers, allow_redirects=False) as response:
            await response.read()
            if response.status not in (200, 201, 202, 204):
                raise Refused(response.status)

    def _email(self, channel: ChannelConfig, alert: alerts.Alert) -> None:
        smtp = self.smtp
        if not smtp.host:
            raise Permanent("PINGSTREAM_SMTP_HOST is not set")
        message = EmailMessage()
        message["From"] = smtp.sender
        message["To"] = channel.email
        message["Subject"] = alerts.subject(alert)
        message["X-Pingstream-Alert-Id"] = alert.id  # the idempotency key, as webhooks carry it
        message["User-Agent"] = USER_AGENT
        message.set_content(alerts.text(alert))
        cls = smtplib.SMTP_SSL if smtp.ssl else smtplib.SMTP
        with cls(smtp.host, smtp.port, timeout=self.timeout_s) as client:
            if smtp.starttls:
                client.starttls(context=ssl.create_default_context())
            if smtp.user:
                client.login(smtp.user, smtp.password)
            client.send_message(message)

    def _apprise(self, channel: ChannelConfig, alert: alerts.Alert) -> None:
        import apprise

        sender = apprise.Apprise()
        if not sender.add(channel.url):
            raise Permanent("not an Apprise URL")
        kind = {"down": apprise.NotifyType.FAILURE, "failure": apprise.NotifyType.FAILURE,
                "up": apprise.NotifyType.SUCCESS}.get(alert.event, apprise.NotifyType.WARNING)
        if not sender.notify(title=alerts.subject(alert), body=alerts.text(alert), notify_type=kind):
            raise RuntimeError("apprise: not delivered")
