"""Settings, read once from the environment at start-up and parsed strictly.

A bad value stops the process with a message naming the variable, instead of
surfacing later as a strange failure. Every variable is listed in README.md.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
from pathlib import Path


class ConfigError(ValueError):
    pass


# The ClickHouse HTTP interface of the process holding embedded chdb: one above ClickHouse's own 8123,
# so a ClickHouse server on the same machine does not collide with it.
DEFAULT_SQL_PORT = 8124
DEFAULT_SQL_NATIVE_PORT = 9001  # ClickHouse's native protocol is on 9000, as its HTTP interface is on 8123
# The same over TLS, given a certificate: ClickHouse serves them on 8443 (https_port) and 9440 (tcp_port_secure).
DEFAULT_SQL_HTTPS_PORT = 8444
DEFAULT_SQL_NATIVE_TLS_PORT = 9441


def _number(env: dict, name: str, default, lo, hi, parse, what: str):
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: not {what}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value}: must be between {lo} and {hi}")
    return value


def _limit(value: int) -> int | None:
    """Kafka's convention: -1 means no limit."""
    return None if value < 0 else value


def _int(env: dict, name: str, default: int, lo: int, hi: int) -> int:
    return _number(env, name, default, lo, hi, int, "an integer")


def _float(env: dict, name: str, default: float, lo: float, hi: float) -> float:
    return _number(env, name, default, lo, hi, float, "a number")


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (``taskset``, a container's cpuset), not the
    machine's count."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # no affinity on this platform
        return os.cpu_count() or 1


def default_edge_processes(cores: int | None = None) -> int:
    """One edge per core but the one the engine needs (it projects every ping, and its work delays the
    edges' commits when they share its core); on one core, everything in one process."""
    return max((cores or usable_cores()) - 1, 0)


def _webhooks(value: str) -> tuple[tuple[str, str], ...]:
    """``<project id>=<url>[,<project id>=<url>...]``."""
    out = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        project, sep, url = item.partition("=")
        if not sep or not project or not url.startswith(("http://", "https://")):
            raise ConfigError(f"PINGSTREAM_WEBHOOKS: {item!r}: expected <project id>=http(s)://...")
        out.append((project.strip(), url.strip()))
    return tuple(out)


KAFKA_CLIENTS = ("aiokafka", "librdkafka")


def _kafka_client(env: dict, name: str, default: str) -> str:
    """A Kafka client of ``KAFKA_CLIENTS`` named by ``name``: ``PINGSTREAM_KAFKA_CLIENT``, what sends records
    (runtime/eventlog/kafka.py, rdkafka.py), or ``PINGSTREAM_KAFKA_CONSUMER``, what reads them
    (runtime/eventlog/rdkafka_consumer.py, kafka_consumer.py)."""
    raw = (env.get(name) or default).strip().lower()
    if raw not in KAFKA_CLIENTS:
        raise ConfigError(f"{name}={raw!r}: expected one of {', '.join(KAFKA_CLIENTS)}")
    return raw


def _sql_port(env: dict, name: str = "PINGSTREAM_SQL_PORT", default: int = DEFAULT_SQL_PORT) -> int | None:
    """``PINGSTREAM_SQL_PORT`` (or ``PINGSTREAM_SQL_NATIVE_PORT``): a port (0 = any free one), or ``off``."""
    raw = (env.get(name) or "").strip()
    if raw.lower() == "off":
        return None
    return _int(env, name, default, 0, 65535)


def _sql_tls(env: dict) -> tuple[Path | None, Path | None]:
    """``PINGSTREAM_SQL_TLS_CERT`` and ``PINGSTREAM_SQL_TLS_KEY``: both or neither, and a pair the SQL endpoint's
    TLS ports can serve (``tls_server_context``), so a wrong one stops the start with its reason."""
    cert, key = (env.get(name) or None for name in ("PINGSTREAM_SQL_TLS_CERT", "PINGSTREAM_SQL_TLS_KEY"))
    if cert is None and key is None:
        return None, None
    if cert is None or key is None:
        missing = "PINGSTREAM_SQL_TLS_CERT" if cert is None else "PINGSTREAM_SQL_TLS_KEY"
        raise ConfigError(f"{missing}: not set (TLS for the SQL endpoint needs a certificate and its key)")
    tls_server_context(Path(cert), Path(key))
    return Path(cert), Path(key)


def tls_server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server's TLS context (TLS 1.2 or later) for the certificate chain ``cert`` and its private key ``key``, PEM
    files; ``ConfigError`` saying which and why when they cannot be served."""
    for name, path in (("PINGSTREAM_SQL_TLS_CERT", cert), ("PINGSTREAM_SQL_TLS_KEY", key)):
        if not path.is_file():
            raise ConfigError(f"{name}={path}: no such file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except OSError as exc:  # ssl.SSLError among them: not PEM, or a key of another certificate
        reason = getattr(exc, "reason", None) or "not a PEM certificate chain and its private key"
        raise ConfigError(f"PINGSTREAM_SQL_TLS_CERT={cert} / _KEY={key}: cannot be served: {reason}") from None
    return context


def _flag(env: dict, name: str) -> bool:
    raw = (env.get(name) or "0").strip().lower()
    if raw not in ("0", "1", "true", "false", "yes", "no"):
        raise ConfigError(f"{name}={raw!r}: expected 1 or 0")
    return raw in ("1", "true", "yes")


@dataclasses.dataclass(frozen=True)
class Smtp:
    """Where e-mail alerts are sent from (``PINGSTREAM_SMTP_*``); host "" = e-mail channels fail."""

    host: str = ""
    port: int = 25
    user: str = ""
    password: str = ""
    sender: str = "pingstream@localhost"
    starttls: bool = False
    ssl: bool = False


def _smtp(env: dict) -> Smtp:
    return Smtp(
        host=env.get("PINGSTREAM_SMTP_HOST") or "",
        port=_int(env, "PINGSTREAM_SMTP_PORT", 25, 1, 65535),
        user=env.get("PINGSTREAM_SMTP_USER") or "",
        password=env.get("PINGSTREAM_SMTP_PASSWORD") or "",
        sender=env.get("PINGSTREAM_SMTP_FROM") or "pingstream@localhost",
        starttls=_flag(env, "PINGSTREAM_SMTP_STARTTLS"),
        ssl=_flag(env, "PINGSTREAM_SMTP_SSL"),
    )


def _topic_prefix(value: str) -> str:
    if value and not all(c.isalnum() or c in "._-" for c in value):
        raise ConfigError(f"PINGSTREAM_KAFKA_PREFIX={value!r}: letters, digits, '.', '_' and '-' only")
    return value


@dataclasses.dataclass(frozen=True)
class Config:
    data_dir: Path
    kafka: str | None  # bootstrap servers; None = embedded SQLite log
    clickhouse: str  # DSN: chdb:///path or http(s)://host:8123
    clickhouse_database: str
    host: str
    port: int
    public_url: str
    ping_body_limit: int
    partitions: int
    min_timeout_s: int
    tick_interval_s: float
    rate_limit_check_per_s: float = 0.0  # 0 = no limit
    rate_limit_client_per_s: float = 0.0
    rate_limit_burst: float = 20.0
    kafka_prefix: str = ""  # namespaces topic names on a shared cluster
    kafka_ack_timeout_s: float = 10.0  # a produce not acknowledged by then answers 503
    kafka_producers: int = 2  # producers per process, each with its share of the partitions (runtime/eventlog/kafka.py)
    kafka_client: str = "aiokafka"  # or librdkafka: what sends the records (runtime/eventlog/rdkafka.py)
    kafka_consumer: str = "librdkafka"  # or aiokafka: what reads them (runtime/eventlog/rdkafka_consumer.py)
    webhooks: tuple[tuple[str, str], ...] = ()  # (project id, URL): where transitions are POSTed
    metrics_port: int = 0  # /metrics of a projector or monitor process (the edge serves it on its own port)
    idle_timeout_s: float = 15.0  # a connection with no complete request head by then is closed (slowloris)
    max_connections_per_client: int = 128  # connections one client address may hold open on the edge; 0 = no limit
    # Retention of the embedded log's event topics, as Kafka's retention.ms / retention.bytes: None = keep.
    retention_ms: int | None = 7 * 24 * 3600 * 1000
    retention_bytes: int | None = None  # per partition
    retention_interval_s: float = 60.0  # how often the embedded log is trimmed and compacted
    check_limit: int = 10_000  # checks per project (?create=1 may go to twice this, as upstream)
    volume_gate: bool = False  # the monitor's volume gate (monitor/volume.py): PINGSTREAM_VOLUME_GATE=1
    # The ClickHouse HTTP interface served by the process holding embedded chdb (runtime/sqlserver.py).
    sql_host: str = "127.0.0.1"
    sql_port: int | None = DEFAULT_SQL_PORT  # None = off; 0 = any free port
    sql_native_port: int | None = DEFAULT_SQL_NATIVE_PORT  # ClickHouse's native protocol (runtime/nativeserver.py)
    # Both, over TLS too, on ports of their own, when a certificate and its key are given (PEM files).
    sql_tls_cert: Path | None = None
    sql_tls_key: Path | None = None
    sql_https_port: int | None = DEFAULT_SQL_HTTPS_PORT
    sql_native_tls_port: int | None = DEFAULT_SQL_NATIVE_TLS_PORT
    sql_max_execution_time_s: float = 10.0  # a query running longer is cut (it holds the engine's thread)
    sql_max_result_rows: int = 1_000_000
    webhook_allow_private: bool = False  # alerts may go to loopback, link-local and private addresses
    smtp: Smtp = Smtp()
    notify_timeout_s: float = 10.0  # one delivery attempt
    notify_retry_s: float = 600.0  # a delivery still failing this long after its first attempt is "failed"
    # `pingstream up`: edge processes sharing the port beside the engine process (0 = everything in one process).
    edge_processes: int = 0
    reuse_port: bool = False  # the edge binds with SO_REUSEPORT (several edges on one port)
    # `pingstream ingest`: the same variable, but one process unless it is set (replicas of a distributed
    # edge are usually counted by whatever runs them).
    ingest_processes: int = 1
    edge_metrics_dir: Path | None = None  # `up`'s edges (and its engine) share /metrics through sockets here

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "eventlog.sqlite3"

    @property
    def embedded_clickhouse(self) -> bool:
        return self.clickhouse.startswith("chdb://")

    @classmethod
    def from_env(cls, env: dict | None = None, **overrides) -> "Config":
        env = dict(os.environ if env is None else env)
        data_dir = Path(env.get("PINGSTREAM_DATA") or "pingstream-data")
        host = env.get("PINGSTREAM_HOST") or "127.0.0.1"
        port = _int(env, "PINGSTREAM_PORT", 8000, 0, 65535)
        clickhouse = env.get("PINGSTREAM_CLICKHOUSE") or f"chdb:///{(data_dir / 'clickhouse').resolve()}"
        if clickhouse != "off" and not clickhouse.startswith(("chdb://", "http://", "https://")):
            raise ConfigError(
                f"PINGSTREAM_CLICKHOUSE={clickhouse!r}: expected chdb:///path, http(s)://host:port or off"
            )
        database = env.get("PINGSTREAM_CLICKHOUSE_DATABASE") or "pingstream"
        if not database.replace("_", "").isalnum():
            raise ConfigError(f"PINGSTREAM_CLICKHOUSE_DATABASE={database!r}: letters, digits and _ only")
        sql_tls_cert, sql_tls_key = _sql_tls(env)
        config = cls(
            data_dir=data_dir,
            sql_tls_cert=sql_tls_cert,
            sql_tls_key=sql_tls_key,
            kafka=env.get("PINGSTREAM_KAFKA") or None,
            clickhouse=clickhouse,
            clickhouse_database=database,
            host=host,
            port=port,
            public_url=(env.get("PINGSTREAM_PUBLIC_URL") or f"http://{host}:{port}").rstrip("/"),
            ping_body_limit=_int(env, "PINGSTREAM_PING_BODY_LIMIT", 10_000, 0, 100_000_000),
            partitions=_int(env, "PINGSTREAM_PARTITIONS", 4, 1, 1024),
            min_timeout_s=_int(env, "PINGSTREAM_MIN_TIMEOUT_S", 60, 1, 86400),
            tick_interval_s=_float(env, "PINGSTREAM_TICK_INTERVAL_S", 1.0, 0.01, 60.0),
            rate_limit_check_per_s=_float(env, "PINGSTREAM_RATE_LIMIT_CHECK", 0.0, 0.0, 1e6),
            rate_limit_client_per_s=_float(env, "PINGSTREAM_RATE_LIMIT_CLIENT", 0.0, 0.0, 1e6),
            rate_limit_burst=_float(env, "PINGSTREAM_RATE_LIMIT_BURST", 20.0, 1.0, 1e6),
            kafka_ack_timeout_s=_float(env, "PINGSTREAM_KAFKA_ACK_TIMEOUT_S", 10.0, 0.5, 300.0),
            kafka_producers=_int(env, "PINGSTREAM_KAFKA_PRODUCERS", 2, 1, 64),
            kafka_client=_kafka_client(env, "PINGSTREAM_KAFKA_CLIENT", "aiokafka"),
            kafka_consumer=_kafka_client(env, "PINGSTREAM_KAFKA_CONSUMER", "librdkafka"),
            webhooks=_webhooks(env.get("PINGSTREAM_WEBHOOKS") or ""),
            metrics_port=_int(env, "PINGSTREAM_METRICS_PORT", 0, 0, 65535),
            idle_timeout_s=_float(env, "PINGSTREAM_IDLE_TIMEOUT_S", 15.0, 0.5, 3600.0),
            max_connections_per_client=_int(env, "PINGSTREAM_MAX_CONNECTIONS_PER_CLIENT", 128, 0, 1_000_000),
            kafka_prefix=_topic_prefix(env.get("PINGSTREAM_KAFKA_PREFIX") or ""),
            retention_ms=_limit(_int(env, "PINGSTREAM_RETENTION_MS", 7 * 24 * 3600 * 1000, -1, 2**62)),
            retention_bytes=_limit(_int(env, "PINGSTREAM_RETENTION_BYTES", -1, -1, 2**62)),
            retention_interval_s=_float(env, "PINGSTREAM_RETENTION_INTERVAL_S", 60.0, 0.1, 86400.0),
            check_limit=_int(env, "PINGSTREAM_CHECK_LIMIT", 10_000, 0, 100_000_000),
            volume_gate=_int(env, "PINGSTREAM_VOLUME_GATE", 0, 0, 1) == 1,
            sql_host=env.get("PINGSTREAM_SQL_HOST") or "127.0.0.1",
            sql_port=_sql_port(env),
            sql_native_port=_sql_port(env, "PINGSTREAM_SQL_NATIVE_PORT", DEFAULT_SQL_NATIVE_PORT),
            sql_https_port=_sql_port(env, "PINGSTREAM_SQL_HTTPS_PORT", DEFAULT_SQL_HTTPS_PORT),
            sql_native_tls_port=_sql_port(env, "PINGSTREAM_SQL_NATIVE_TLS_PORT", DEFAULT_SQL_NATIVE_TLS_PORT),
            sql_max_execution_time_s=_float(env, "PINGSTREAM_SQL_MAX_EXECUTION_TIME_S", 10.0, 0.1, 3600.0),
            # Not below 10,000: clients read system.settings (~1,900 rows) when they connect.
            sql_max_result_rows=_int(env, "PINGSTREAM_SQL_MAX_RESULT_ROWS", 1_000_000, 10_000, 10**12),
            webhook_allow_private=_flag(env, "PINGSTREAM_WEBHOOK_ALLOW_PRIVATE"),
            smtp=_smtp(env),
            notify_timeout_s=_float(env, "PINGSTREAM_NOTIFY_TIMEOUT_S", 10.0, 0.1, 300.0),
            notify_retry_s=_float(env, "PINGSTREAM_NOTIFY_RETRY_S", 600.0, 0.0, 7 * 86400.0),
            edge_processes=_int(env, "PINGSTREAM_EDGE_PROCESSES", default_edge_processes(), 0, 256),
            reuse_port=_int(env, "PINGSTREAM_REUSE_PORT", 0, 0, 1) == 1,
            ingest_processes=max(_int(env, "PINGSTREAM_EDGE_PROCESSES", 1, 0, 256), 1),  # 0 (up's "one process"): 1
            edge_metrics_dir=Path(env["PINGSTREAM_EDGE_METRICS_DIR"]) if env.get("PINGSTREAM_EDGE_METRICS_DIR")
            else None,
        )
        return dataclasses.replace(config, **overrides) if overrides else config
