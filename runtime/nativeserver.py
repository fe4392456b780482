"""ClickHouse's native TCP protocol, served beside the HTTP interface by the process that holds the engine.

Grafana's ClickHouse data source (clickhouse-go) uses it by default, and so do clickhouse-driver and other
native clients. What a connection may do is what the HTTP interface allows (runtime/sqlserver.py): user
``pingstream`` with the admin key, read-only queries on the endpoint's engine session, its limits and error
codes; the queries run there, on the engine's thread.

The protocol, as this server speaks it (revision ``REVISION``, 54460, or the client's if older; every field
of a newer revision is left out, as ClickHouse leaves it out for an older client):

- the client's Hello (name, version, revision, database, user, password), the server's Hello (name, version,
  revision, time zone, display name, patch), then the client's addendum (its quota key). The connection is a
  session, as ClickHouse's: a ``USE`` that succeeds (of pingstream's database or ``system``) lasts for it;
- then packets, each opening with a varint type. Query: the query id, the client's info, settings (name,
  flags, value as text) and parameters (name, flags, a quoted value), the stage, whether blocks are
  compressed, the query text; then Data packets, the external tables, of which only the empty one that ends
  them is taken. Ping is answered Pong. Cancel is ignored: a query is cut by the endpoint's time limit.
- the answer to a query: a Data packet with the result's columns and no rows (the header), one Data packet
  per block of the result (Native laid out for the revision, runtime/native.py; in ClickHouse's compressed
  blocks when the client asked, runtime/chcompress.py), Progress, then EndOfStream; or an Exception.

Strings are a varint length then bytes; integers little-endian. The same is served over TLS on a port of its
own when the server is given a TLS context (ClickHouse's tcp_port_secure; pingstream/cli.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import struct

from . import adminkey, chcompress, logthrottle, native
from .sqlserver import MAX_QUERY_BYTES, TRAILING_FORMAT, ClickHouseError, SqlServer, unquote_field

log = logging.getLogger(__name__)
logthrottle.throttle(__name__)

REVISION = 54460  # DBMS_MIN_PROTOCOL_VERSION_WITH_SERVER_QUERY_TIME_IN_PROGRESS: what clickhouse-go speaks
SERVER_NAME = "ClickHouse"  # the engine is ClickHouse's; clients check features by its version
MAX_STRING = MAX_QUERY_BYTES  # a query, a setting, a name: as long as the HTTP interface takes a query
HANDSHAKE_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 256  # more at once are closed unanswered: the engine's process keeps its file descriptors
IDLE_TIMEOUT_S = 3600.0  # a pooled connection of Grafana's waits between queries

# Packet types
CLIENT_HELLO, CLIENT_QUERY, CLIENT_DATA, CLIENT_CANCEL, CLIENT_PING = 0, 1, 2, 3, 4
SERVER_HELLO, SERVER_DATA, SERVER_EXCEPTION, SERVER_PROGRESS, SERVER_PONG, SERVER_END_OF_STREAM = 0, 1, 2, 3, 4, 5

# Revisions at which the protocol gained a field (ClickHouse's ProtocolDefines.h)
WITH_SERVER_TIMEZONE, WITH_DISPLAY_NAME, WITH_VERSION_PATCH = 54058, 54372, 54401
WITH_QUOTA_KEY_IN_CLIENT_INFO, WITH_CLIENT_WRITE_INFO, WITH_SETTINGS_AS_STRINGS = 54060, 54420, 54429
WITH_INTERSERVER_SECRET, WITH_OPENTELEMETRY, WITH_DISTRIBUTED_DEPTH = 54441, 54442, 54448
WITH_INITIAL_QUERY_START_TIME, WITH_PARALLEL_REPLICAS, WITH_ADDENDUM = 54449, 54453, 54458
WITH_PARAMETERS, WITH_QUERY_TIME_IN_PROGRESS = 54459, 54460
MIN_REVISION = WITH_SETTINGS_AS_STRINGS  # older clients send settings as binary values: not taken


class ProtocolError(Exception):
    """The client sent what this server cannot read: the connection ends."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _varint(len(data)) + data


class _Wire:
    """Reads the protocol's values from a stream."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader

    async def bytes(self, n: int) -> bytes:
        return await self.reader.readexactly(n)

    async def varint(self) -> int:
        value = shift = 0
        while True:
            byte = (await self.reader.readexactly(1))[0]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
            if shift > 63:
                raise ProtocolError("a varint longer than 64 bits")

    async def string(self) -> str:
        n = await self.varint()
        if n > MAX_STRING:
            raise ProtocolError(f"a string of {n} bytes")
        try:
            return (await self.reader.readexactly(n)).decode()
        except UnicodeDecodeError:
            raise ProtocolError("a string that is not UTF-8") from None

    async def uint8(self) -> int:
        return (await self.reader.readexactly(1))[0]


def _exception(exc: ClickHouseError) -> bytes:
    """An Exception packet: code, name, message (as ClickHouse's displayText), stack trace, no nested one."""
    text = str(exc.args[0]) if exc.args else ""
    message = text.split(". ", 1)[1] if text.startswith("Code: ") and ". " in text else text
    return (bytes([SERVER_EXCEPTION]) + struct.pack("<i", exc.code) + _string("DB::Exception") + _string(message)
            + _string("") + b"\x00")


class NativeServer:
    """The native protocol on ``host:port`` for ``sql``'s engine session (``await start()``, ``port``, ``await
    stop()``); ``sql`` must be started first."""

    def __init__(self, sql: SqlServer, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        self.sql = sql
        self.host = host
        self.port = port
        self.tls = tls  # over TLS (ClickHouse's tcp_port_secure)
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=1 << 20, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("SQL (ClickHouse native protocol%s) on %s, user %s", ", TLS" if self.tls else "", self.address,
                 adminkey.USER)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= MAX_CONNECTIONS:
            log.warning("native protocol: %d connections open already, one more closed", MAX_CONNECTIONS)
            writer.close()
            return
        task = asyncio.current_task()
        self._connections.add(task)
        try:
            await _Connection(self.sql, _Wire(reader), writer).run()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, ssl.SSLError):
            pass  # the client went away, said nothing in time, or broke its TLS
        except ProtocolError as exc:
            log.info("native client %s: %s", writer.get_extra_info("peername"), exc)
        except Exception:  # ours: loud, and the connection ends
            log.exception("native client %s: the connection failed", writer.get_extra_info("peername"))
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)
            writer.close()


class _Connection:
    def __init__(self, sql: SqlServer, wire: _Wire, writer: asyncio.StreamWriter) -> None:
        self.sql = sql
        self.wire = wire
        self.writer = writer
        self.revision = REVISION
        self.database = sql.database

    async def _send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def run(self) -> None:
        if not await asyncio.wait_for(self._hello(), HANDSHAKE_TIMEOUT_S):
            return
        while True:
            packet = await asyncio.wait_for(self.wire.varint(), IDLE_TIMEOUT_S)
            if packet == CLIENT_PING:
                await self._send(bytes([SERVER_PONG]))
            elif packet == CLIENT_QUERY:
                if not await self._query():
                    return
            elif packet == CLIENT_CANCEL:
                continue
            elif packet == CLIENT_DATA:  # outside a query: nothing to take it for
                raise ProtocolError("a Data packet outside a query")
            else:
                raise ProtocolError(f"packet type {packet}")

    async def _hello(self) -> bool:
        """The handshake; False when the client is refused (told why in an Exception)."""
        if await self.wire.varint() != CLIENT_HELLO:
            raise ProtocolError("the first packet is not Hello")
        await self.wire.string()  # the client's name
        await self.wire.varint(), await self.wire.varint()  # its version
        self.revision = min(await self.wire.varint(), REVISION)
        database, user, password = await self.wire.string(), await self.wire.string(), await self.wire.string()
        try:
            self.sql.authenticate(user, password)
        except ClickHouseError as exc:
            await self._send(_exception(exc))
            return False
        if self.revision < MIN_REVISION:
            await self._send(_exception(ClickHouseError(36, "BAD_ARGUMENTS", f"protocol revision {self.revision} is "
                                                        f"older than this server takes ({MIN_REVISION})")))
            return False
        if database not in ("", "default", self.sql.database, "system"):
            await self._send(_exception(ClickHouseError(81, "UNKNOWN_DATABASE", f"Database {database} does not exist")))
            return False
        self.database = database if database == "system" else self.sql.database
        major, minor, patch = ([int(p) for p in self.sql.version.split(".")[:3] if p.isdigit()] + [0, 0, 0])[:3]
        hello = bytes([SERVER_HELLO]) + _string(SERVER_NAME) + _varint(major) + _varint(minor) + _varint(self.revision)
        if self.revision >= WITH_SERVER_TIMEZONE:
            hello += _string(self.sql.timezone)
        if self.revision >= WITH_DISPLAY_NAME:
            hello += _string(self.sql.display_name)
        if self.revision >= WITH_VERSION_PATCH:
            hello += _varint(patch)
        await self._send(hello)
        if self.revision >= WITH_ADDENDUM:
            await self.wire.string()  # the quota key
        return True

    async def _query(self) -> bool:
        """One query, read, run and answered; False when the connection cannot go on."""
        wire, revision = self.wire, self.revision
        await wire.string()  # the query id: the answer carries none
        await self._client_info()
        settings = {}
        while name := await wire.string():
            await wire.varint()  # flags: important, custom
            settings[name] = await wire.string()
        if revision >= WITH_INTERSERVER_SECRET:
            await wire.string()
        await wire.varint()  # the stage: the whole query is run
        compressed = await wire.varint() != 0
        query = await wire.string()
        parameters = {}
        if revision >= WITH_PARAMETERS:
            while name := await wire.string():
                await wire.varint()
                parameters[name] = await wire.string()
        if not await self._external_tables(compressed):
            await self._send(_exception(ClickHouseError(36, "BAD_ARGUMENTS", "external tables are not taken here")))
            return False
        try:
            bound = {name: unquote_field(value) for name, value in parameters.items()}
            blocks, header, summary = await self._run(query, settings, bound)
            if used := _USE.match(query):  # a connection is a session: its database stays until the next USE
                self.database = used.group(1) or used.group(2)
        except ClickHouseError as exc:
            await self._send(_exception(exc))
            return True
        pack = chcompress.compress if compressed else bytes
        data = bytes([SERVER_DATA]) + _string("")
        out = [data + pack(header)]
        out += [data + pack(block) for block in blocks]
        progress = _varint(int(summary["read_rows"])) + _varint(int(summary["read_bytes"])) + _varint(0)
        if revision >= WITH_CLIENT_WRITE_INFO:
            progress += _varint(0) + _varint(0)
        if revision >= WITH_QUERY_TIME_IN_PROGRESS:
            progress += _varint(int(summary["elapsed_ns"]))
        out += [bytes([SERVER_PROGRESS]) + progress, bytes([SERVER_END_OF_STREAM])]
        await self._send(b"".join(out))
        return True

    async def _client_info(self) -> None:
        wire, revision = self.wire, self.revision
        if await wire.uint8() == 0:  # query kind: none, and nothing more
            return
        await wire.string(), await wire.string(), await wire.string()  # initial user, query id, address
        if revision >= WITH_INITIAL_QUERY_START_TIME:
            await wire.bytes(8)
        interface = await wire.uint8()
        if interface == 1:  # TCP
            await wire.string(), await wire.string(), await wire.string()  # OS user, host name, client name
            await wire.varint(), await wire.varint(), await wire.varint()  # version, revision
        else:
            raise ProtocolError(f"client interface {interface} over the native protocol")
        if revision >= WITH_QUOTA_KEY_IN_CLIENT_INFO:
            await wire.string()
        if revision >= WITH_DISTRIBUTED_DEPTH:
            await wire.varint()
        if revision >= WITH_VERSION_PATCH:
            await wire.varint()
        if revision >= WITH_OPENTELEMETRY and await wire.uint8():
            await wire.bytes(24)  # trace and span ids
            await wire.string(), await wire.uint8()  # trace state, flags
        if revision >= WITH_PARALLEL_REPLICAS:
            await wire.varint(), await wire.varint(), await wire.varint()

    async def _external_tables(self, compressed: bool) -> bool:
        """The Data packets after a query: True at the empty block that ends them, False for a table."""
        if await self.wire.varint() != CLIENT_DATA:
            raise ProtocolError("a query not followed by its (empty) external data")
        await self.wire.string()  # the table's name
        if compressed:
            head = await self.wire.bytes(16 + chcompress.HEADER.size)
            _, size, _ = chcompress.HEADER.unpack_from(head, 16)
            if not chcompress.HEADER.size <= size <= MAX_STRING:
                raise ProtocolError("a compressed block of a wrong size")
            try:
                block = chcompress.decompress(head + await self.wire.bytes(size - chcompress.HEADER.size), MAX_STRING)
            except chcompress.BadBlock as exc:
                raise ProtocolError(f"external data: {exc}") from None
            return _empty_block(block)
        while field := await self.wire.varint():  # BlockInfo: field 1 a byte, field 2 four bytes, 0 the end
            await self.wire.bytes({1: 1, 2: 4}.get(field, 0) or _bad_field(field))
        return await self.wire.varint() == 0 and await self.wire.varint() == 0

    async def _run(self, query: str, settings: dict, bound: dict) -> tuple[list[bytes], bytes, dict]:
        sql = self.sql
        if _INSERT.match(query):  # refused before its data, which the client would send once told the table's columns
            raise ClickHouseError(164, "READONLY", "pingstream: Cannot execute query in readonly mode")
        # Over this protocol the server sends blocks, whatever the query's FORMAT: the client formats them.
        query = TRAILING_FORMAT.sub("", query)
        body, summary = await sql.clickhouse.run_raw(sql.execute, query, self.database, "Native",
                                                     sql.asked(settings), bound, "native")
        columns = None if body else await sql.clickhouse.run_raw(sql.describe, query, self.database, bound)
        try:
            return await asyncio.to_thread(_blocks, body, columns, self.revision) + (summary,)
        except native.Unsupported as exc:
            raise ClickHouseError(36, "BAD_ARGUMENTS", f"{exc} is not sent by this endpoint (CAST it)") from None


_INSERT = re.compile(r"^\s*INSERT\b", re.IGNORECASE)
_USE = re.compile(r"^\s*USE\s+(?:`([^`]+)`|([A-Za-z_][A-Za-z0-9_]*))\s*;?\s*$", re.IGNORECASE)


def _empty_block(block: bytes) -> bool:
    """Whether a (decompressed) block has no columns and no rows."""
    at = 0
    try:
        while field := block[at]:  # BlockInfo's fields, each a one-byte number here
            at += 1 + ({1: 1, 2: 4}.get(field) or _bad_field(field))
        return block[at + 1:] == b"\x00\x00"
    except IndexError:
        raise ProtocolError("a block cut short") from None


def _bad_field(field: int) -> int:
    raise ProtocolError(f"BlockInfo field {field}")


def _blocks(body: bytes, columns: list[tuple[str, str]] | None, revision: int) -> tuple[list[bytes], bytes]:
    """The result's blocks laid out for ``revision``, and its header: its columns with no rows."""
    blocks, named = native.blocks_for_revision(body, revision)
    if columns is None:
        columns = named
    custom = b"\x00" if revision >= native.CUSTOM_SERIALIZATION else b""
    header = native.BLOCK_INFO + _varint(len(columns)) + _varint(0)
    header += b"".join(_string(name) + _string(kind) + custom for name, kind in columns)
    return blocks, header
