"""The ClickHouse client factory: embedded chdb or a server, one code path.

clickhouse-connect's client is synchronous (and chdb allows one process per
data path), so async callers go through ``ClickHouse.run`` which executes on a
single dedicated thread, keeping the event loop free.

A server that cannot be reached is not fatal to a reader (an edge): ``start``
leaves it unconnected, each use tries again, and until it answers every use
raises ``Unavailable`` naming it, which the APIs answer with 503.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Sequence
from urllib.parse import urlsplit

# Arrow's buffers (the inserts' tables) from Arrow's jemalloc pool, whose freed pages ``release_memory`` purges:
# its default pool (mimalloc) kept about 9 MB after a minute of 5,000 pings/s, and its ``release_unused`` gave
# none of it back (bench/memory.py); the drain is as fast (bench/projector.py). Arrow reads this once, when its
# default pool is first used (a build without jemalloc keeps its default); a user's setting stands.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")

import clickhouse_connect
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError, ProgrammingError

from runtime.memory import trim_heap, unmap_unread_library_pages
from schemas import ddl
from schemas.events import as_utc

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)


# The libraries whose pages not run are unmapped (runtime.memory.unmap_unread_library_pages): every shared object
# of the process, chiefly chdb's (``_chdb.abi3.so``, 530 MB) and Arrow's (the inserts' tables, 70 MB).
ENGINE_LIBRARIES = ".so"


class Unavailable(Exception):
    """The read model cannot be reached; the message names what is missing."""


class Unreachable(Unavailable):
    """A ClickHouse server that does not answer (yet): waiting may mend it."""


class Held(Unavailable):
    """The embedded engine's data path is held by another process (one stopping, a ``pingstream sql``)."""


def _first_line(exc: Exception, limit: int = 300) -> str:
    """An error's message, its first line and at most ``limit`` characters (clickhouse-connect's run long)."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else exc.__class__.__name__)[:limit]


def describe(dsn: str) -> str:
    """A DSN as it may be shown: scheme, host and port, or the engine's path; never a password."""
    if dsn == "off":
        return "PINGSTREAM_CLICKHOUSE=off"
    parts = urlsplit(dsn)
    if parts.scheme == "chdb":
        return f"embedded ClickHouse at {parts.path}"
    return f"ClickHouse at {parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"


# The embedded engine's MergeTree defaults. A table's outdated parts (merged away) are removed on up to
# 128 threads at once when there are more than concurrent_part_removal_threshold (100) of them, as after
# a minute of pings at 5,000/s; the threads come from ClickHouse's global pool, which keeps up to 1,000
# idle threads, each with its stack and allocator caches, for the life of the process: the engine went
# from 18 threads to 146 for one such removal, and stayed there. Removed one after another, local files
# take milliseconds. chdb reads MergeTree defaults only from a configuration file (not from its
# connection string), written beside the engine's data.
EMBEDDED_CONFIG = """<clickhouse>
  <merge_tree>
    <concurrent_part_removal_threshold>1000000000</concurrent_part_removal_threshold>
  </merge_tree>
</clickhouse>
"""


def embedded_config_file(engine_path: str) -> str:
    """The embedded engine's configuration file, (re)written when it differs from ``EMBEDDED_CONFIG``."""
    path = os.path.realpath(engine_path)
    os.makedirs(path, exist_ok=True)
    config = os.path.join(path, "pingstream-engine.xml")
    try:
        with open(config) as f:
            if f.read() == EMBEDDED_CONFIG:
                return config
    except FileNotFoundError:
        pass
    with open(config + ".tmp", "w") as f:
        f.write(EMBEDDED_CONFIG)
    os.replace(config + ".tmp", config)
    return config


def connect(dsn: str, database: str, migrate: bool = True):
    """A client bound to ``database``; with ``migrate`` (the writer) the database is created if missing and
    the DDL applied. A reader does not migrate: it may read through a read-only endpoint."""
    if dsn.startswith("chdb:"):
        config = embedded_config_file(urlsplit(dsn).path)
        client = clickhouse_connect.get_client(dsn=dsn, chdb_options={"config-file": config})
    else:
        client = clickhouse_connect.get_client(dsn=dsn)
    if migrate:
        ddl.migrate(client, database)
    client.database = database
    return client


# Engine paths this process opened: chdb lets a process open more clients on its own engine.
_opened_here: set[str] = set()


def held_by_another_process(dsn: str) -> bool:
    """Whether another running engine holds an embedded DSN's data path: ClickHouse keeps an exclusive
    lock on its ``status`` file while it runs."""
    import fcntl

    if not dsn.startswith("chdb:"):
        return False
    path = os.path.realpath(urlsplit(dsn).path)
    if path in _opened_here:
        return False
    try:
        fd = os.open(os.path.join(path, "status"), os.O_RDONLY)
    except OSError:
        return False  # no engine has run there yet
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


# pyarrow is imported by the writer only, when it first inserts: the edges and the supervisor, which
# import this module to read, would each carry its library and its ~10 MB of start-up heap for nothing.
_PLAIN_TYPES = {
    "String": "binary",  # bytes kept as received; str is sent as its UTF-8
    "UUID": "string",  # ClickHouse parses the text form on insert
    "UInt8": "uint8", "UInt16": "uint16", "UInt32": "uint32", "UInt64": "uint64",
    "Int8": "int8", "Int16": "int16", "Int32": "int32", "Int64": "int64",
    "Float32": "float32", "Float64": "float64", "Bool": "bool_",
}
_DATETIME64 = re.compile(r"DateTime64\(([0369])(?:, *'([^']+)')?\)")
_UNITS = {"0": "s", "3": "ms", "6": "us", "9": "ns"}


def arrow_type(declared: str) -> pa.DataType | None:
    """The Arrow type a column of ClickHouse type ``declared`` is sent as; None when there is none here."""
    import pyarrow as pa

    for wrapper in ("Nullable(", "LowCardinality("):
        if declared.startswith(wrapper):
            declared = declared[len(wrapper):-1]
    if declared in _PLAIN_TYPES:
        return getattr(pa, _PLAIN_TYPES[declared])()
    if m := _DATETIME64.fullmatch(declared):
        return pa.timestamp(_UNITS[m.group(1)], tz=m.group(2) or "UTC")
    if declared.startswith("DateTime"):  # DateTime or DateTime('tz'): seconds
        return pa.timestamp("s", tz="UTC")
    return None


def arrow_table(names: Sequence[str], types: Sequence[pa.DataType], columns: Sequence[Sequence]) -> pa.Table:
    """``columns`` (Python values or Arrow arrays, one per column) as an Arrow table; each column of
    Python values is converted by Arrow in C, not value by value in Python."""
    import pyarrow as pa

    return pa.Table.from_arrays(
        [c if isinstance(c, (pa.Array, pa.ChunkedArray)) else pa.array(c, type=t) for c, t in zip(columns, types)],
        names=list(names))


def arrow_stream(names: Sequence[str], types: Sequence[pa.DataType], columns: Sequence[Sequence]) -> bytes:
    """One Arrow IPC stream of ``columns`` (see ``arrow_table``): the body of an ``INSERT ... FORMAT ArrowStream``."""
    return _ipc(arrow_table(names, types, columns))


def _ipc(table: pa.Table) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


# A few rows go in as a literal VALUES clause rather than an Arrow table read by ``INSERT ... SELECT``: the
# SELECT's analysis and the casts of each column cost about as much as writing the part, whatever the row count
# (one check_state row: 10 ms of CPU through Arrow, 5 ms as VALUES; the journal's row through
# clickhouse-connect's insert 6.5 ms, as VALUES 3.8). Above this many rows Arrow wins: Python formats each value.
SMALL_INSERT_ROWS = 200

_ESCAPES = str.maketrans({"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"})
# Bytes as latin-1 text, every byte but printable ASCII (quote and backslash too) as \xHH: ClickHouse stores the bytes.
_BYTE_ESCAPES = {b: f"\\x{b:02x}" for b in range(256) if not 32 <= b < 127 or b in (39, 92)}
_UNSAFE_BYTE = re.compile(rb"[^\x20-\x26\x28-\x5b\x5d-\x7e]")  # what _BYTE_ESCAPES escapes


def _float(value: float) -> str:
    return repr(value) if math.isfinite(value) else ("nan" if value != value else ("inf" if value > 0 else "-inf"))


def _datetime(value: datetime) -> str:
    # ISO 8601 with its offset when aware, read as such (VALUES_SETTINGS) whatever the column's time zone.
    return "'" + value.isoformat(" ") + "'"


_LITERALS: dict[type, Callable[[Any], str]] = {
    type(None): lambda _: "NULL",
    bool: lambda v: "1" if v else "0",
    int: str,
    float: _float,
    str: lambda v: "'" + (v if v.isprintable() and "'" not in v and "\\" not in v else v.translate(_ESCAPES)) + "'",
    bytes: lambda v: "'" + (v.decode("latin-1").translate(_BYTE_ESCAPES) if _UNSAFE_BYTE.search(v)
                            else v.decode()) + "'",
    datetime: _datetime,
    uuid.UUID: lambda v: f"'{v}'",
    list: lambda v: "[" + ",".join(map(sql_literal, v)) + "]",
    tuple: lambda v: "(" + ",".join(map(sql_literal, v)) + ")",
}


def sql_literal(value: Any) -> str:
    """``value`` as a ClickHouse literal of the VALUES format: None, bool, int, float, str, bytes, UUID,
    datetime (with its microseconds and, when aware, its offset: right for a column of any time zone) and
    lists or tuples of those (Array, Tuple). The insert reads it with ``VALUES_SETTINGS``."""
    literal = _LITERALS.get(type(value))
    if literal is None:  # a subclass (an IntEnum, a NamedTuple...), or a bytearray
        kind = next((t for t in _LITERALS if isinstance(value, t)), None)
        if kind is None and isinstance(value, (bytearray, memoryview)):
            return _LITERALS[bytes](bytes(value))
        if kind is None:
            raise TypeError(f"no VALUES literal for {type(value).__name__}")
        literal = _LITERALS[kind]
    return literal(value)


# Datetimes with an offset are read at it whatever the column's time zone (the basic parser reads them in it).
VALUES_SETTINGS = {"date_time_input_format": "best_effort"}

# ClickHouse caps one parameter's value at ``http_max_field_value_size`` (128 KiB by default), in the URL and
# in a form alike: an array of ids is bound this many at a time (2,000 UUIDs are about 80 KB).
IDS_PER_QUERY = 2_000


def id_chunks(ids) -> list[list | ArrayText]:
    """``ids`` cut into chunks that each fit one array parameter (``IDS_PER_QUERY``): lists, or, where every id of
    one is a UUID's text, that array's text (``uuid_array``)."""
    ids = list(ids)
    return [uuid_array(ids[i:i + IDS_PER_QUERY]) for i in range(0, len(ids), IDS_PER_QUERY)]


class ArrayText:
    """An array parameter's value as ClickHouse reads it, sent as it is (clickhouse-connect sends ``str()`` of a
    value of a type it does not know). Iterable as the ids it holds."""

    __slots__ = ("ids", "text")

    def __init__(self, ids: list[str], text: str) -> None:
        self.ids, self.text = ids, text

    def __str__(self) -> str:
        return self.text

    def __iter__(self):
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)


_UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def uuid_array(ids: list) -> list | ArrayText:
    """``ids`` as the value of an ``Array(UUID)`` parameter: written at once when each is a UUID's text, which needs
    no escaping (clickhouse-connect escapes a string character by character: 13 ms for 2,500 ids, half of a
    projector's load of their states); as they are otherwise."""
    if not ids or not all(type(i) is str and _UUID_TEXT.fullmatch(i) for i in ids):
        return ids
    return ArrayText(ids, "['" + "','".join(ids) + "']")


def values_clause(rows: Sequence[Sequence]) -> str:
    return "VALUES " + ",".join("(" + ",".join(map(sql_literal, row)) + ")" for row in rows)


def _identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


class ClickHouse:
    """A client plus the one thread that may use it."""

    def __init__(self, dsn: str, database: str, migrate: bool = True) -> None:
        self.dsn = dsn
        self.database = database
        self.migrate = migrate
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="clickhouse")
        self.client = None
        self.unreachable: str | None = None  # why the last probe (``watch``) failed; None: it answered
        # Embedded: chdb handles of this engine of our own, for Arrow inserts: the ClickHouse thread's
        # (``insert_arrow``) and one per inserting thread (``insert_columns``).
        self._engine = None
        self._inserters = ThreadPoolExecutor(2, thread_name_prefix="clickhouse-insert")
        self._local = threading.local()
        self._handles: list = []
        self._handles_lock = threading.Lock()
        self.bulk_inserts = 0  # Arrow inserts begun: the engine's work, for ``runtime.memory.release_when_idle``

    @property
    def embedded(self) -> bool:
        return self.dsn.startswith("chdb:")

    def describe(self) -> str:
        return describe(self.dsn)

    async def start(self) -> None:
        """Connect. A server that does not answer leaves a reader unconnected (each use tries again);
        a writer, and an embedded engine that cannot be opened, raise."""
        if held_by_another_process(self.dsn):
            # Asked before opening: chdb would print its own error lines and raise a vague one.
            raise Held(
                f"{self.describe()} is held by another process (one process per data path); read it through "
                "that process's SQL endpoint: PINGSTREAM_CLICKHOUSE=http://pingstream:<admin key>@127.0.0.1:<sql port>")
        try:
            self.client = await self.run_raw(connect, self.dsn, self.database, self.migrate)
            if self.embedded:
                _opened_here.add(os.path.realpath(urlsplit(self.dsn).path))
                unmapped = unmap_unread_library_pages(ENGINE_LIBRARIES)
                log.debug("embedded engine open: %.0f MB of its libraries unmapped (pages not run yet)", unmapped)
        except ProgrammingError as exc:
            if self.embedded:
                raise Unavailable(f"{self.describe()} could not be opened: {exc}") from None
            raise
        except OperationalError as exc:
            if self.embedded:
                raise
            if self.migrate:  # a writer needs it: its service waits for it (pingstream.cli)
                raise Unreachable(f"{self.describe()} does not answer: {_first_line(exc)}") from None
            log.warning("%s is unreachable (%s); reads answer 503 until it answers", self.describe(), exc)
        except DatabaseError as exc:  # it answers, and refuses (a wrong password, no such database...)
            if self.embedded:
                raise
            raise Unavailable(f"{self.describe()} refused: {_first_line(exc)}") from None

    async def watch(self, stop: asyncio.Event, interval_s: float = 1.0) -> None:
        """Until ``stop``: ask a server whether it answers (ClickHouse's ``GET /ping``) every ``interval_s``,
        keeping ``unreachable`` true to it, for a reader's readiness (an edge whose read model is away is
        not ready for reads). Over a connection of its own: the client's thread stays the queries'."""
        import aiohttp

        parts = urlsplit(self.dsn)
        url = f"{parts.scheme}://{parts.hostname}:{parts.port or (8443 if parts.scheme == 'https' else 8123)}/ping"
        first = True
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=max(interval_s, 2.0))) as http:
            while not stop.is_set():
                try:
                    async with http.get(url) as answer:
                        answered = answer.status == 200
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    answered = False
                if answered and self.unreachable is not None and not first:
                    log.info("%s answers again", self.describe())
                elif not answered and (self.unreachable is None or first):
                    log.warning("%s does not answer; reads answer 503 until it does", self.describe())
                first = False
                self.unreachable = None if answered else f"{self.describe()} does not answer"
                try:
                    await asyncio.wait_for(stop.wait(), interval_s)
                except asyncio.TimeoutError:
                    pass

    async def run_raw(self, fn: Callable, *args) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _connected(self):
        """On the ClickHouse thread: the client, connecting first if the server was away."""
        if self.client is None:
            try:
                self.client = connect(self.dsn, self.database, self.migrate)
            except OperationalError as exc:
                raise Unavailable(f"{self.describe()} is unreachable") from exc
        return self.client

    async def run(self, fn: Callable, *args) -> Any:
        """Run ``fn(client, *args)`` on the ClickHouse thread. A server that cannot be reached raises ``Unavailable``."""

        def call():
            try:
                return fn(self._connected(), *args)
            except OperationalError as exc:
                raise Unavailable(f"{self.describe()} is unreachable") from exc

        return await self.run_raw(call)

    def engine_path(self, client) -> str:
        """The embedded engine's data path, spelled as the client opened it (chdb compares paths literally)."""
        if not self.embedded:
            raise ValueError(f"{self.describe()} is not an embedded engine")
        return os.path.realpath(client.path)

    async def rows(self, sql: str, parameters: dict | None = None, column_formats: dict | None = None) -> list[dict]:
        """A parameterised query's rows as dicts by column name; datetimes aware, in UTC."""

        def run(client) -> list[dict]:
            result = client.query(sql, parameters=parameters or {}, column_formats=column_formats or {})
            return [{k: as_utc(v) if isinstance(v, datetime) else v for k, v in row.items()}
                    for row in result.named_results()]

        return await self.run(run)

    async def rows_by_ids(self, sql: str, ids, parameters: dict | None = None) -> list[dict]:
        """``rows`` of a query whose every row belongs to one of ``ids`` (bound as ``{ids:Array(...)}``),
        asked ``IDS_PER_QUERY`` ids at a time; no query for no ids."""
        rows = []
        for chunk in id_chunks(ids):
            rows += await self.rows(sql, {**(parameters or {}), "ids": chunk})
        return rows

    async def query(self, sql: str, parameters: dict | None = None) -> list[tuple]:
        """Rows as tuples, for ad-hoc queries (the CLI, tests, benchmarks)."""
        return await self.run(lambda c: c.query(sql, parameters=parameters or {}).result_rows)

    def insert_arrow(self, client, table: str, data: pa.Table, settings: dict[str, Any] | None = None) -> None:
        """On the ClickHouse thread: insert an Arrow table into ``table`` (its column names are the table's).

        Embedded, ClickHouse reads the Arrow buffers in place (``INSERT ... SELECT * FROM Python(data)``, chdb's
        table function over a Python object) on a handle of its own: no IPC stream written, no temporary file
        read back (clickhouse-connect's raw insert on chdb goes through a file), about half the insert's time.
        A server gets the Arrow IPC stream (``FORMAT ArrowStream``). Settings (a deduplication token...) apply
        to the one block either way: chdb squashes what it reads into one block, so a retried batch forms the
        same block under the same token."""
        if not self.embedded:
            client.raw_insert(table, data.column_names, _ipc(data), settings=settings, fmt="ArrowStream")
            return
        if self._engine is None:
            self._engine = self._open_handle()
        self._chdb_insert(self._engine, table, data, settings)

    async def insert_columns(self, table: str, names: Sequence[str], types: Sequence[pa.DataType],
                             columns: Callable[[], Sequence[Sequence]], settings: dict[str, Any] | None = None) -> None:
        """Insert the columns ``columns()`` makes (Python values, one sequence per column; called off the event
        loop) as Arrow arrays of ``types``. Embedded, on one of two inserting threads with a chdb handle each:
        chdb leaves the GIL while it executes, so the inserts of one batch's tables overlap (one is executed
        while the next one's Arrow arrays are built). A server: on the ClickHouse thread, as every use."""
        self.bulk_inserts += 1
        if not self.embedded:
            await self.run(lambda c: self.insert_arrow(c, table, arrow_table(names, types, columns()), settings))
            return

        def insert() -> None:
            self._chdb_insert(self._inserter_handle(), table, arrow_table(names, types, columns()), settings)

        await asyncio.get_running_loop().run_in_executor(self._inserters, insert)

    async def insert_select(self, table: str, names: Sequence[str], select: str, source: Sequence[tuple[str, str]],
                            columns: Callable[[], Sequence[Sequence]], settings: dict[str, Any] | None = None) -> None:
        """Insert into ``table`` (columns ``names``) the rows ``select`` makes of the columns ``columns()`` makes.

        ``select`` is a SELECT whose ``{source}`` is a table of ``source`` ((name, ClickHouse type) pairs) holding
        those columns: ClickHouse computes the rows (see ``insert_columns`` for the threads). Embedded, the source
        is the Arrow table read in place (chdb's ``Python()``); a server gets the Arrow IPC stream as the body of
        ``INSERT ... SELECT ... FROM input(...) FORMAT ArrowStream``. Either way one block, one token."""
        self.bulk_inserts += 1
        arrow_names = [name for name, _ in source]
        arrow_types = [arrow_type(declared) for _, declared in source]
        if not self.embedded:
            structure = ", ".join(f"{_identifier(name)} {declared}" for name, declared in source)
            into = f"{_identifier(self.database)}.{_identifier(table)} ({', '.join(map(_identifier, names))})"
            sql = (f"INSERT INTO {into} "
                   + select.format(source=f"input({sql_literal(structure)})") + " FORMAT ArrowStream")

            def send(client) -> None:
                client.command(sql, data=arrow_stream(arrow_names, arrow_types, columns()), settings=settings)

            await self.run(send)
            return

        def insert() -> None:
            self._chdb_insert(self._inserter_handle(), table, arrow_table(arrow_names, arrow_types, columns()),
                              settings, names=names, select=select)

        await asyncio.get_running_loop().run_in_executor(self._inserters, insert)

    def _open_handle(self):
        import chdb

        if self.client is None:
            raise Unavailable(f"{self.describe()} is not open")
        handle = chdb.connect(os.path.realpath(self.client.path))
        with self._handles_lock:
            self._handles.append(handle)
        return handle

    def _insert_sql(self, table: str, names: Sequence[str], settings: dict[str, Any] | None, body: str) -> str:
        clause = ", ".join(f"{k} = {sql_literal(v)}" for k, v in (settings or {}).items())
        return (f"INSERT INTO {_identifier(self.database)}.{_identifier(table)} ({', '.join(map(_identifier, names))}) "
                + (f"SETTINGS {clause} " if clause else "") + body)

    def _chdb_insert(self, handle, table: str, data: pa.Table, settings: dict[str, Any] | None,
                     names: Sequence[str] | None = None, select: str = "SELECT * FROM {source}") -> None:
        # max_insert_block_size: the table stays one block (one token) however large the batch is.
        settings = {**(settings or {}), "max_insert_block_size": max(data.num_rows, 1)}
        self._chdb_query(handle, table, self._insert_sql(table, names or data.column_names, settings,
                                                         select.format(source="Python(data)")), data)

    @staticmethod
    def _chdb_query(handle, table: str, sql: str, data: pa.Table | None = None) -> None:
        """Run an insert on a chdb handle; ``data`` is the Arrow table its ``Python(data)`` reads."""
        try:
            handle.query(sql)
        except Exception as exc:
            raise DatabaseError(f"insert into {table} failed: {str(exc)[:2000]}") from None

    async def insert_values(self, table: str, names: Sequence[str], rows: Sequence[Sequence],
                            settings: dict[str, Any] | None = None) -> None:
        """Insert a few rows (``SMALL_INSERT_ROWS`` or fewer) as a literal VALUES clause: one block, as the
        Arrow paths make. Embedded, on an inserting thread (see ``insert_columns``); a server, on the
        ClickHouse thread."""
        settings = {**(settings or {}), **VALUES_SETTINGS}
        sql = self._insert_sql(table, names, None if not self.embedded else settings, values_clause(rows))
        if not self.embedded:
            await self.run(lambda client: client.command(sql, settings=settings))
            return

        def insert() -> None:
            self._chdb_query(self._inserter_handle(), table, sql)

        await asyncio.get_running_loop().run_in_executor(self._inserters, insert)

    def _inserter_handle(self):
        """On an inserting thread: its chdb handle, opened at its first insert."""
        handle = getattr(self._local, "engine", None)
        if handle is None:
            handle = self._local.engine = self._open_handle()
        return handle

    def release_memory(self, client) -> None:
        """On the ClickHouse thread, once a load has ended (``runtime.memory``): the allocators give back the
        pages of what the load freed: embedded, chdb's (its jemalloc), then Arrow's pool (the inserts' tables)
        and the C heap."""
        import pyarrow as pa

        if self.embedded:
            client.command("SYSTEM JEMALLOC PURGE")
            unmap_unread_library_pages(ENGINE_LIBRARIES)  # what the load's code brought in beside what it ran
        pa.default_memory_pool().release_unused()
        trim_heap()

    async def close(self) -> None:
        self._inserters.shutdown(wait=True)  # inserts under way end first
        with self._handles_lock:
            handles, self._handles, self._engine = self._handles, [], None
        for handle in handles:
            await self.run_raw(handle.close)
        if self.client is not None:
            client, self.client = self.client, None
            await self.run_raw(client.close)
        self._executor.shutdown(wait=True)
