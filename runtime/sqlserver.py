"""ClickHouse's HTTP interface, served by the process that holds the embedded engine (chdb).

chdb allows one process per data path, so while ``pingstream up`` (or a projector on chdb) runs, no
other process can open the engine. This server lets them, and any ClickHouse client
(clickhouse-connect, ``curl``, Grafana, DBeaver), read it over ClickHouse's own protocol:

- ``GET|POST /?query=...`` (a POST body is the query, after the ``query`` parameter if both are
  given; a ``multipart/form-data`` POST's fields are parameters as the URL's are, its ``query`` field the
  query: clickhouse-connect sends bound parameters longer than 4 KB so), ``add_http_cors_header=1`` and
  ``OPTIONS /`` (a browser's preflight) for browser clients, ``default_format`` / ``X-ClickHouse-Format``, ``database`` / ``X-ClickHouse-Database``,
  ``param_<name>`` bound parameters, settings as URL parameters; ``GET /ping`` answers ``Ok.``; ClickHouse's
  compressed blocks (``compress`` / ``decompress``, runtime/chcompress.py) and HTTP compression
  (``enable_http_compression`` with ``Accept-Encoding``, and ``Content-Encoding``: runtime/httpcompress.py);
- user ``pingstream`` and the installation's admin key (runtime/adminkey.py) as HTTP basic auth, as
  ``X-ClickHouse-User`` / ``X-ClickHouse-Key`` headers, or as ``user`` / ``password`` parameters;
- answers carry ``X-ClickHouse-Query-Id``, ``-Format``, ``-Summary``, ``-Timezone`` and
  ``-Server-Display-Name``; errors are ``Code: N. DB::Exception: ...`` with
  ``X-ClickHouse-Exception-Code``, as ClickHouse sends them (clients turn them into their exceptions);
- the same over TLS on a port of its own (``https_port``: ClickHouse's https_port), given a server context
  (PINGSTREAM_SQL_TLS_CERT / _KEY: runtime/config.py), the plain port served still.

What is enforced, is enforced by the engine: queries run on a chdb session of their own whose
settings are ``readonly=1`` (no INSERT, ALTER, CREATE, DROP, no table functions that reach files or
the network, and no setting can be changed, these limits included, except to the value it has),
``max_execution_time`` and ``max_result_rows`` / ``max_result_bytes`` (``result_overflow_mode=throw``).
The default database is pingstream's; ``database`` may name it or ``system`` (the tables clients
read when they connect), nothing else. The engine's data directory belongs to this installation
and holds no other database with tables.

Queries run on the ClickHouse object's one thread (runtime/clickhouse.py), as the projector's
inserts do, so they never run at the same time: a long query delays the projector by at most
``max_execution_time``. Results are produced by the engine in the format asked for (Native,
RowBinaryWithNamesAndTypes, JSON, TabSeparated, ...) and sent as they are.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import ssl
import uuid
import warnings
from pathlib import Path

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import BadContentDispositionHeader
from multidict import MultiDict, MultiDictProxy

from . import adminkey, chcompress, httpcompress, logthrottle, metrics, native, server_header
from .clickhouse import ClickHouse

log = logging.getLogger(__name__)
logthrottle.throttle(__name__)
# A form part whose Content-Disposition aiohttp cannot parse has no name, and is refused as such (_form_fields):
# no warning printed per request.
warnings.filterwarnings("ignore", category=BadContentDispositionHeader)


class _ClientErrors(logging.Filter):
    """On aiohttp's server logger: a request aiohttp could not parse, or a body it could not read while draining it
    after the answer, is the client's error. It was answered 400 (or the connection closed); it is one short,
    throttled line here instead of an ERROR with a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (HttpProcessingError, web.RequestPayloadError)):
            log.info("bad request to the SQL endpoint: %s", type(exc).__name__)
            return False
        return True


_CLIENT_ERRORS = _ClientErrors()

DISPLAY_NAME = "pingstream"
MAX_RESULT_BYTES = 256 * 1024 * 1024
MAX_QUERY_BYTES = 1024 * 1024
MAX_FORM_BYTES = 16 * 1024 * 1024  # a multipart/form-data request's fields together
MAX_CONNECTIONS = 512  # more at once are closed unanswered: the engine's process keeps its file descriptors

# URL parameters that are the protocol's own, not settings for the engine. ``compress`` / ``decompress``: ClickHouse's
# compressed blocks (runtime/chcompress.py); ``enable_http_compression`` / ``http_zlib_compression_level``: HTTP
# compression of the answer (runtime/httpcompress.py), which ClickHouse's readonly=1 would refuse to turn on.
_TRANSPORT = frozenset({
    "query", "database", "default_format", "user", "password", "query_id", "session_id", "session_timeout",
    "session_check", "compress", "decompress", "enable_http_compression", "http_zlib_compression_level",
    "wait_end_of_query", "buffer_size", "client_protocol_version", "send_progress_in_http_headers",
    "http_headers_progress_interval_ms", "quota_key", "role", "http_response_buffer_size",
    "network_compression_method", "network_zstd_compression_level",  # compress=1 answers in LZ4 blocks whatever these say
    "add_http_cors_header",  # browser clients (Tabix, ch-ui): the answer may be read by any origin
})
# ClickHouse's answer to a browser's preflight (its http_options_response example): the admin key still decides.
_PREFLIGHT = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "origin, x-requested-with, x-clickhouse-format, x-clickhouse-user, "
                                    "x-clickhouse-key, Authorization",
    "Access-Control-Allow-Methods": "POST, GET, OPTIONS",
    "Access-Control-Max-Age": "86400",
}
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
FORMAT_NAME = re.compile(r"[A-Za-z0-9_]+")
TRAILING_FORMAT = re.compile(rf"\bFORMAT\s+({FORMAT_NAME.pattern})\s*;?\s*$", re.IGNORECASE)
_ERROR_CODE = re.compile(r"Code: (\d+)\.")

# Error codes to HTTP statuses as ClickHouse maps them (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp), and a
# few more of a bad request that it leaves at 500: READONLY is 403 here, and a code in neither this table nor
# ``_SERVER_FAULTS`` is a 400 (``_status``): the query is the request, and an error of the engine running it (a
# wrong argument or parameter, throwIf, a string too long to make, a result past the limits) is the request's.
_HTTP_STATUS = {
    194: 401,  # REQUIRED_PASSWORD
    192: 403, 193: 403, 516: 403, 512: 403, 497: 403,  # UNKNOWN_USER, WRONG_PASSWORD, AUTHENTICATION_FAILED, ...
    **dict.fromkeys((  # BAD_ARGUMENTS, the CANNOT_PARSE_* family, SYNTAX_ERROR, TYPE_MISMATCH, ILLEGAL_COLUMN, ...
        36, 427, 6, 25, 26, 38, 41, 72, 441, 675, 676, 27, 376, 15, 44, 37, 123, 8, 167, 168, 223, 62, 117, 53, 321,
    ), 400),
    **dict.fromkeys((60, 46, 47, 50, 56, 81, 115, 152, 63, 73, 336, 78, 511), 404),  # UNKNOWN_TABLE, _FUNCTION, ...
    229: 413,  # QUERY_IS_TOO_LARGE
    48: 501,  # NOT_IMPLEMENTED
    209: 503, 76: 503, 439: 503,  # SOCKET_TIMEOUT, CANNOT_OPEN_FILE, CANNOT_SCHEDULE_TASK
    381: 411, 159: 408, 779: 415,  # HTTP_LENGTH_REQUIRED, TIMEOUT_EXCEEDED, UNSUPPORTED_MEDIA_TYPE
    164: 403,  # READONLY (ClickHouse: 500)
}
_SERVER_FAULTS = frozenset({  # what stays a 500: the server's own trouble, not the query's
    49, 173, 210, 236, 241, 394,  # LOGICAL_ERROR, CANNOT_ALLOCATE_MEMORY, NETWORK_ERROR, ABORTED, MEMORY_LIMIT_EXCEEDED, QUERY_WAS_CANCELLED
    1000, 1001, 1002,  # POCO_EXCEPTION, STD_EXCEPTION, UNKNOWN_EXCEPTION (and an engine message without a code)
})
_CONTENT_TYPES = {
    "TabSeparated": "text/tab-separated-values; charset=UTF-8", "TSV": "text/tab-separated-values; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8", "JSON": "application/json; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8", "JSONEachRow": "application/x-ndjson; charset=UTF-8",
}


class _Closing(asyncio.Protocol):
    """A connection past ``MAX_CONNECTIONS``: closed as soon as it is made."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class _BoundedSite(web.BaseSite):
    """aiohttp's TCP site with at most ``limit`` connections open at once."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, limit: int,
                 tls: ssl.SSLContext | None = None) -> None:
        super().__init__(runner, shutdown_timeout=2.0, ssl_context=tls)
        self._host, self._port, self._limit = host, port, limit

    @property
    def name(self) -> str:
        return f"{'https' if self._ssl_context else 'http'}://{self._host}:{self._port}"

    @property
    def port(self) -> int:
        """The port bound (asked 0: any free one)."""
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        await super().start()
        server = self._runner.server

        def connection():
            if len(server.connections) >= self._limit:
                log.warning("SQL endpoint: %d connections open already, one more closed", self._limit)
                return _Closing()
            return server()

        self._server = await asyncio.get_running_loop().create_server(connection, self._host, self._port,
                                                                      backlog=self._backlog, ssl=self._ssl_context)


class ClickHouseError(Exception):
    """An error answered as ClickHouse answers it."""

    def __init__(self, code: int, name: str, message: str, status: int | None = None) -> None:
        super().__init__(f"Code: {code}. DB::Exception: {message}. ({name})")
        self.code = code
        self.status = status  # the HTTP status, where it is not the code's (_HTTP_STATUS)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _credentials(request: web.Request) -> tuple[str | None, str | None]:
    """User and password as ClickHouse takes them: basic auth, X-ClickHouse-User/-Key, or user/password parameters."""
    auth = request.headers.get("Authorization", "")
    if auth[:6].lower() == "basic ":
        try:
            user, _, password = base64.b64decode(auth[6:].strip(), validate=True).decode().partition(":")
        except ValueError:
            return None, None
        return user, password
    if "X-ClickHouse-User" in request.headers or "X-ClickHouse-Key" in request.headers:
        return request.headers.get("X-ClickHouse-User", "default"), request.headers.get("X-ClickHouse-Key", "")
    return request.query.get("user", "default"), request.query.get("password", "")


class SqlServer:
    """Read-only SQL over ClickHouse's HTTP protocol on ``host:port``, through ``clickhouse``'s engine.

    Any process holding an embedded engine can start one: ``await server.start()``, ``server.port``,
    ``await server.stop()``. ``port_file``, when given, holds the bound port while the server runs
    (``pingstream sql`` finds it there)."""

    def __init__(self, clickhouse: ClickHouse, admin_key: str, host: str, port: int, *,
                 max_execution_time_s: float, max_result_rows: int, port_file: Path | None = None,
                 tls: ssl.SSLContext | None = None, https_port: int | None = None) -> None:
        self.clickhouse = clickhouse
        self.admin_key = admin_key
        self.host = host
        self.port = port
        self.tls = tls
        self.https_port = https_port if tls is not None else None  # served beside ``port`` with ``tls``
        self.port_file = port_file
        self.database = clickhouse.database
        self.settings = {
            "max_execution_time": f"{max_execution_time_s:g}",
            "max_result_rows": str(max_result_rows),
            "max_result_bytes": str(MAX_RESULT_BYTES),
            "result_overflow_mode": "throw",
            "readonly": "1",  # last: after it no setting can be changed
        }
        self._session = None  # the engine session of our own, used on the ClickHouse thread only
        self._timezone = "UTC"
        self._version = ""
        self._runner: web.AppRunner | None = None
        self._on_stop: list = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def https_url(self) -> str | None:
        return f"https://{self.host}:{self.https_port}" if self.https_port is not None else None

    async def start(self) -> None:
        self._session = await self.clickhouse.run(self._open_session)
        app = web.Application(client_max_size=MAX_QUERY_BYTES)
        server_header.install(app)  # "Server: pingstream", as the edge's answers
        if _CLIENT_ERRORS not in logging.getLogger("aiohttp.server").filters:
            logging.getLogger("aiohttp.server").addFilter(_CLIENT_ERRORS)
        app.router.add_route("GET", "/ping", self._ping)
        app.router.add_route("HEAD", "/ping", self._ping)
        app.router.add_route("GET", "/", self._handle)
        app.router.add_route("POST", "/", self._handle)
        app.router.add_route("OPTIONS", "/", self._preflight)
        # aiohttp's keep-alive timeout (75 s) closes a connection idle between requests, or before its first.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        sites = [_BoundedSite(self._runner, self.host, self.port, MAX_CONNECTIONS)]
        if self.https_port is not None:  # the same answers over TLS, on a port of their own (ClickHouse's https_port)
            sites.append(_BoundedSite(self._runner, self.host, self.https_port, MAX_CONNECTIONS, self.tls))
        try:
            for site in sites:
                await site.start()
        except BaseException:
            await self._runner.cleanup()
            raise
        self.port = sites[0].port  # the one bound (PINGSTREAM_SQL_PORT=0: any free port)
        if self.https_port is not None:
            self.https_port = sites[1].port
            log.info("SQL (ClickHouse HTTPS interface) on %s", self.https_url)
        if self.port_file is not None:
            self.port_file.write_text(f"{self.port}\n")
        log.info("SQL (ClickHouse HTTP interface) on %s, user %s", self.url, adminkey.USER)

    def on_stop(self, callback) -> None:
        """``await callback()`` first when the server stops (a server that shares its session: nativeserver)."""
        self._on_stop.append(callback)

    async def stop(self) -> None:
        while self._on_stop:
            await self._on_stop.pop()()
        if self.port_file is not None:
            self.port_file.unlink(missing_ok=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            session, self._session = self._session, None
            await self.clickhouse.run_raw(session.close)

    def _open_session(self, client):
        """A session of our own on the engine ``client`` holds, with the limits set. Settings are per
        session, so the projector's session is not touched."""
        import chdb

        session = chdb.connect(self.clickhouse.engine_path(client))
        for name, value in self.settings.items():
            session.query(f"SET {name} = {_quote(value)}")
        self._version, self._timezone = bytes(session.query("SELECT version(), timezone()", "TabSeparated").bytes()
                                              ).decode().strip().split("\t")
        return session

    async def _ping(self, request: web.Request) -> web.Response:
        return web.Response(text="Ok.\n")

    def _headers(self, query_id: str) -> dict[str, str]:
        return {"X-ClickHouse-Server-Display-Name": DISPLAY_NAME, "X-ClickHouse-Query-Id": query_id,
                "X-ClickHouse-Timezone": self._timezone}

    def _error(self, exc: ClickHouseError, headers: dict[str, str]) -> web.Response:
        text = f"{exc} (version {self._version})\n"
        headers = {**headers, "X-ClickHouse-Exception-Code": str(exc.code)}
        return web.Response(status=exc.status or _status(exc.code), text=text, headers=headers)

    async def _preflight(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers=_PREFLIGHT)

    async def _handle(self, request: web.Request) -> web.Response:
        response = await self._answer(request)
        if request.query.get("add_http_cors_header") == "1":
            response.headers["Access-Control-Allow-Origin"] = "*"
        if request.body_exists and not request.content.is_eof():
            # A body not read to its end (refused before it was read, or unreadable as sent): what is left of it
            # on the socket is no next request, so the connection closes after the answer.
            response.force_close()
        return response

    async def _answer(self, request: web.Request) -> web.Response:
        query_id = request.query.get("query_id") or ""
        headers = self._headers(query_id if query_id and query_id.isprintable() else str(uuid.uuid4()))
        try:
            if not query_id.isprintable():  # it is sent back in a header
                raise ClickHouseError(36, "BAD_ARGUMENTS", "query_id has characters that are not printable")
            self._authenticate(request)
            params, query = await self._params_and_query(request)
            if not query.strip():
                return web.Response(text="Ok.\n", headers=headers)
            database = params.get("database") or request.headers.get("X-ClickHouse-Database") or self.database
            if database not in (self.database, "system"):
                raise ClickHouseError(81, "UNKNOWN_DATABASE", f"Database {database} does not exist")
            default_format = params.get("default_format") or request.headers.get("X-ClickHouse-Format") or "TabSeparated"
            if not FORMAT_NAME.fullmatch(default_format):  # no format is named so, and it is sent back in a header
                raise ClickHouseError(73, "UNKNOWN_FORMAT", f"Unknown format {default_format!r}")
            settings = self.asked({k: v for k, v in params.items() if k not in _TRANSPORT and not k.startswith("param_")})
            blocks = _flag(params, "compress")
            encoding = _http_encoding(request, params)
            bound = {k[len("param_"):]: v for k, v in params.items() if k.startswith("param_")}
            body, summary = await self.clickhouse.run_raw(self.execute, query, database, default_format, settings, bound)
        except ClickHouseError as exc:
            return self._error(exc, headers)
        match = TRAILING_FORMAT.search(query)
        fmt = match.group(1) if match else default_format
        headers["X-ClickHouse-Format"] = fmt
        headers["X-ClickHouse-Summary"] = json.dumps(summary, separators=(",", ":"))
        content_type = _CONTENT_TYPES.get(fmt, "application/octet-stream" if fmt != "Pretty" else "text/plain; charset=UTF-8")
        if fmt == "Native" and params.get("client_protocol_version", "0") != "0":
            try:
                body = await asyncio.to_thread(native.for_revision, body, int(params["client_protocol_version"]))
            except native.Unsupported as exc:
                return self._error(ClickHouseError(36, "BAD_ARGUMENTS", f"Native for client_protocol_version: {exc} is "
                                                   "not sent by this endpoint (CAST it, or ask for another format)"), headers)
            except ValueError as exc:
                return self._error(ClickHouseError(27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
                                                   f"client_protocol_version: {exc}"), headers)
        if blocks:  # ClickHouse's own compressed blocks (the Java client's default)
            body = await asyncio.to_thread(chcompress.compress, body)
        if encoding is not None:  # then HTTP's compression around them, as ClickHouse layers the two
            method, at = encoding
            body = await asyncio.to_thread(httpcompress.encode, method, body, at)
            headers["Content-Encoding"] = method
        return web.Response(body=body, headers={**headers, "Content-Type": content_type})

    @property
    def version(self) -> str:
        return self._version

    @property
    def timezone(self) -> str:
        return self._timezone

    display_name = DISPLAY_NAME

    def asked(self, settings: dict[str, str]) -> dict[str, str]:
        """The settings of a request less the limits it asks for that the endpoint's own already keep, which
        the read-only session would refuse to change. clickhouse-go (Grafana's ClickHouse data source) sends
        ``max_execution_time`` = its deadline + 5 s with every query: the endpoint's time limit cuts a query
        sooner or the client's deadline does. A result limit at or above the endpoint's (or 0, none) is kept
        by the endpoint's; a stricter one is passed on and refused, as it cannot be applied."""
        asked = {}
        for name, value in settings.items():
            if not _SETTING_NAME.match(name):  # a name goes into a SET statement
                raise ClickHouseError(115, "UNKNOWN_SETTING", f"Setting {name} is neither a builtin setting nor started with a prefix")
            if name == "max_execution_time" or (name in ("max_result_rows", "max_result_bytes")
                                                and _not_stricter(value, self.settings[name])):
                continue
            asked[name] = value
        return asked

    def _authenticate(self, request: web.Request) -> None:
        self.authenticate(*_credentials(request))

    def authenticate(self, user: str | None, password: str | None) -> None:
        """``ClickHouseError`` AUTHENTICATION_FAILED unless ``user`` is pingstream's and ``password`` the admin key."""
        if user != adminkey.USER or not adminkey.matches(self.admin_key, password):
            raise ClickHouseError(516, "AUTHENTICATION_FAILED", f"{user}: Authentication failed: password is "
                                  "incorrect, or there is no user with such name")

    async def _params_and_query(self, request: web.Request) -> tuple[MultiDictProxy | MultiDict, str]:
        """The request's parameters and its query, from the URL and the body; for a multipart/form-data POST,
        from the URL and the form's fields, as ClickHouse reads them."""
        if request.method == "POST" and request.content_type == "multipart/form-data":
            params = MultiDict(request.query)
            params.extend(await self._form_fields(request))
            query = params.getone("query", "")
        else:
            params, query = request.query, await self._query_text(request)
        if len(query.encode()) > MAX_QUERY_BYTES:
            raise ClickHouseError(229, "QUERY_IS_TOO_LARGE", "Query is too large")
        return params, query

    async def _form_fields(self, request: web.Request) -> list[tuple[str, str]]:
        """The (name, value) fields of a multipart/form-data body. A file in it would be an external table,
        which this server does not take; the fields together may hold ``MAX_FORM_BYTES``."""
        fields, size = [], 0
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader) or part.filename is not None or not part.name:
                    raise ClickHouseError(36, "BAD_ARGUMENTS",
                                          "External data (a file or a nested form in multipart/form-data) is not supported here")
                size += len(part.name) + 64  # the part's boundary and headers: no flood of empty fields
                chunks = []
                while chunk := await part.read_chunk():
                    size += len(chunk)
                    if size > MAX_FORM_BYTES:
                        raise ClickHouseError(229, "QUERY_IS_TOO_LARGE",
                                              f"multipart/form-data fields over {MAX_FORM_BYTES} bytes")
                    chunks.append(chunk)
                fields.append((part.name, part.decode(b"".join(chunks)).decode()))
        except UnicodeDecodeError:
            raise ClickHouseError(27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED", "a form field is not UTF-8") from None
        except web.RequestPayloadError as exc:
            raise _undecodable(exc) from None
        except (ValueError, AssertionError, HttpProcessingError) as exc:  # aiohttp's word on a malformed form
            message = " ".join(str(getattr(exc, "message", exc)).split())
            raise ClickHouseError(27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED", f"malformed multipart/form-data: {message}") from None
        return fields

    async def _query_text(self, request: web.Request) -> str:
        query = request.query.get("query", "")
        if request.method == "POST":
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:  # past client_max_size (MAX_QUERY_BYTES)
                raise ClickHouseError(229, "QUERY_IS_TOO_LARGE", "Query is too large") from None
            except web.RequestPayloadError as exc:  # a gzip, deflate, br or zstd body aiohttp could not decode
                raise _undecodable(exc) from None
            if body and (encoding := request.headers.get("Content-Encoding")):
                try:
                    body = httpcompress.decode(encoding, body, MAX_QUERY_BYTES)
                except httpcompress.Refused as exc:
                    raise ClickHouseError(exc.code, exc.name, str(exc), 415 if exc.code == 48 else None) from None
            if body and _flag(request.query, "decompress"):
                try:
                    body = chcompress.decompress(body, MAX_QUERY_BYTES)
                except chcompress.BadBlock as exc:
                    raise ClickHouseError(exc.code, exc.name, str(exc)) from None
            if body:
                try:
                    text = body.decode()
                except UnicodeDecodeError:
                    raise ClickHouseError(27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED", "query is not UTF-8") from None
                query = f"{query}\n{text}" if query else text
        return query

    def describe(self, query: str, database: str, bound: dict[str, str]) -> list[tuple[str, str]] | None:
        """On the ClickHouse thread: the (name, type) of each column ``query`` gives, or None when that cannot
        be told (it is no SELECT): what a native client is sent as the header of a result with no rows."""
        session = self._session
        if session is None:
            return None
        try:
            session.query(f"USE `{database}`")
            result = session.query(f"DESCRIBE TABLE ({query.strip().rstrip(';')})", "TabSeparated", params=bound or None)
        except RuntimeError:
            return None
        return [tuple(line.split("\t")[:2]) for line in bytes(result.bytes() or b"").decode().splitlines()]

    def execute(self, query: str, database: str, fmt: str, settings: dict[str, str],
                 bound: dict[str, str], protocol: str = "http") -> tuple[bytes, dict]:
        """On the ClickHouse thread: the query's output in ``fmt`` (unless it names its own) and its summary,
        counted and timed in ``pingstream_sql_queries`` / ``pingstream_sql_query_seconds`` by ``protocol``."""
        session = self._session
        if session is None:
            raise ClickHouseError(210, "NETWORK_ERROR", "the SQL endpoint is stopping")
        outcome = "error"
        try:
            with metrics.Timer(metrics.child(metrics.SQL_SECONDS, protocol)):
                body, summary = self._execute(session, query, database, fmt, settings, bound)
            outcome = "ok"
            return body, summary
        finally:
            metrics.child(metrics.SQL_QUERIES, protocol, outcome).inc()

    @staticmethod
    def _execute(session, query: str, database: str, fmt: str, settings: dict[str, str],
                 bound: dict[str, str]) -> tuple[bytes, dict]:
        try:
            # Every time: a query may have said USE, and the session outlives the request.
            session.query(f"USE `{database}`")
            # Read-only: a setting may only be "set" to the value it has, so nothing lingers in the session.
            for name, value in settings.items():
                session.query(f"SET {name} = {_quote(value)}")
            result = session.query(query, fmt, params=bound or None)
        except RuntimeError as exc:  # chdb's ChdbError: "Code: N. DB::Exception: ... (NAME)"
            raise _from_engine(str(exc)) from None
        body = bytes(result.bytes() or b"")
        summary = {"read_rows": str(result.rows_read()), "read_bytes": str(result.bytes_read()),
                   "written_rows": "0", "written_bytes": "0", "result_bytes": str(len(body)),
                   "elapsed_ns": str(int(result.elapsed() * 1e9))}
        return body, summary


def _status(code: int) -> int:
    """The HTTP status of an error ``code`` (see ``_HTTP_STATUS``)."""
    return _HTTP_STATUS.get(code) or (500 if code in _SERVER_FAULTS else 400)


def _undecodable(exc: web.RequestPayloadError) -> ClickHouseError:
    """aiohttp's word on a body it could not read (a Content-Encoding that does not decode, a body cut short)."""
    cause = exc.__cause__
    message = getattr(cause, "message", None) or str(cause or exc)
    return ClickHouseError(271, "CANNOT_DECOMPRESS", f"the body cannot be read: {' '.join(message.split())}")


def _flag(params, name: str) -> bool:
    """A boolean parameter as ClickHouse parses one: 1 or true, 0 or false (or absent)."""
    value = params.get(name, "0").strip().lower()
    if value in ("1", "true"):
        return True
    if value in ("0", "false", ""):
        return False
    raise ClickHouseError(467, "CANNOT_PARSE_BOOL", f"Cannot parse boolean value here: {name}={value!r}")


def _http_encoding(request: web.Request, params) -> tuple[str, int] | None:
    """The HTTP compression an answer is sent in, and its level: with ``enable_http_compression``, the method
    ``Accept-Encoding`` names first in ClickHouse's order (runtime/httpcompress.py)."""
    if not _flag(params, "enable_http_compression"):
        return None
    method = httpcompress.choose(request.headers.get("Accept-Encoding", ""))
    if method is None:
        return None
    try:
        return method, httpcompress.level(method, params.get("http_zlib_compression_level"))
    except httpcompress.Refused as exc:
        raise ClickHouseError(exc.code, exc.name, str(exc)) from None


_FIELD_ESCAPES = {"0": "\0", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def unquote_field(value: str) -> str:
    """A query parameter as a native client sends it, a quoted string (``'it\\'s'``), as the text it quotes;
    a value that is not quoted is taken as it is."""
    if len(value) < 2 or value[0] != "'" or value[-1] != "'":
        return value
    return re.sub(r"\\(.)", lambda m: _FIELD_ESCAPES.get(m.group(1), m.group(1)), value[1:-1])


def _not_stricter(value: str, ours: str) -> bool:
    """A numeric limit ``value`` that allows at least what ``ours`` does (0: no limit)."""
    try:
        number = float(value)
    except ValueError:
        return False
    return number == 0 or number >= float(ours)


def _from_engine(message: str) -> ClickHouseError:
    """The engine's own error, as it wrote it."""
    match = _ERROR_CODE.search(message)
    exc = ClickHouseError(int(match.group(1)) if match else 1001, "", "")
    text = message[match.start():] if match else f"Code: 1001. DB::Exception: {message}"
    text = re.sub(r"\s*\(version [^)]*\)", "", text.strip())
    # An error the engine rethrew says its code and name once per throw: once is what ClickHouse's server says.
    text = re.sub(r"^(Code: (\d+)\. DB::Exception: )(?:Code: \2\. DB::Exception: )+", r"\1", text)
    text = re.sub(r"( \((\w+)\))(?:\. \(\2\))+$", r"\1", text)
    exc.args = (text.removesuffix("."),)
    return exc


async def serve_until(server: SqlServer, stop: asyncio.Event) -> None:
    """Run ``server`` (already started) until ``stop``."""
    try:
        await stop.wait()
    finally:
        await server.stop()
