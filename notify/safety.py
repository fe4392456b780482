"""Alert targets on loopback, link-local and private addresses are refused unless the operator
allows them (``PINGSTREAM_WEBHOOK_ALLOW_PRIVATE=1``): a project's webhook must not reach into the
network pingstream runs in (cloud metadata, internal admin pages).

The check is on the address a connection is made to, not on the hostname's text: webhooks go
through an aiohttp resolver that drops private answers (a name that resolves to 10.0.0.1, or
that is re-bound between two lookups, gets no connection); literal addresses, which aiohttp
does not resolve, are checked before the request. Apprise makes its own connections, so its
target's name is resolved and checked just before sending.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from checks.channels import is_private, literal_private_host


class PrivateTarget(Exception):
    """The target is (or resolves only to) a private address. Permanent: not retried."""

    def __init__(self) -> None:
        super().__init__("target is a private address (PINGSTREAM_WEBHOOK_ALLOW_PRIVATE is off)")


class PublicOnlyResolver(AbstractResolver):
    """aiohttp's threaded resolver, keeping only public addresses."""

    def __init__(self) -> None:
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        public = [a for a in answers if not is_private(ipaddress.ip_address(a["host"]))]
        if not public:
            raise PrivateTarget()
        return public

    async def close(self) -> None:
        await self._inner.close()


def check_literal(url: str) -> None:
    """Raise PrivateTarget for a URL naming a private address (or localhost) literally."""
    host = urlsplit(url).hostname or ""
    if literal_private_host(host):
        raise PrivateTarget()


async def check_resolved(url: str) -> None:
    """Raise PrivateTarget when the URL's host is, or resolves only to, private addresses."""
    check_literal(url)
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return  # the sender will fail to connect, and say so
    addresses = {ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos}
    if addresses and all(is_private(a) for a in addresses):
        raise PrivateTarget()
