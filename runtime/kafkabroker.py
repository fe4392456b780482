"""A real single-node Apache Kafka broker (KRaft, no ZooKeeper) for tests, benches and laptops.

    python -m runtime.kafkabroker fetch                    # resolve the broker jars once into the cache
    python -m runtime.kafkabroker run [--dir D] [--port P]  # start a broker on loopback, wait for Ctrl-C

The jars come from Maven Central through ``deploy/kafka/pom.xml`` (Java 17 +
Maven) and are kept in ``$PINGSTREAM_CACHE/kafka/<version>/libs`` (default
``.cache`` at the project root, ignored by git). ``start_broker`` starts
``kafka.Kafka`` as combined broker+controller on loopback.

A broker's directory keeps everything it needs to start again on the same
data: ``data/`` (the log, formatted once), ``cluster.id`` (the id it was
formatted with) and ``ports`` (client and controller port). Starting on a
directory that has them reuses all three, so clients find the broker where
they left it and Kafka accepts its own storage; a new directory gets a new
cluster id and free ports (``--port`` picks the client port).
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from runtime.config import usable_cores

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
POM = ROOT / "deploy" / "kafka" / "pom.xml"


def kafka_version() -> str:
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    if not match:
        raise RuntimeError(f"{POM.name}: no <kafka.version> property")
    return match.group(1)


def cache_dir() -> Path:
    return Path(os.environ.get("PINGSTREAM_CACHE") or ROOT / ".cache")


def libs_dir() -> Path:
    return cache_dir() / "kafka" / kafka_version() / "libs"


def fetch() -> Path:
    """Resolve the broker and its dependencies into the cache (once); returns the libs directory."""
    return fetch_jars(POM, libs_dir(), "kafka_2.13-*.jar", f"Apache Kafka {kafka_version()} broker jars",
                      "install it or set PINGSTREAM_KAFKA")


def fetch_jars(pom: Path, libs: Path, marker: str, what: str, instead: str = "install it") -> Path:
    """``pom``'s runtime dependencies copied from Maven Central into ``libs`` once (a jar named like ``marker``
    shows they are there); returns ``libs``."""
    if libs.is_dir() and any(libs.glob(marker)):
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError(f"Maven (mvn) is needed to fetch the {what}; {instead}")
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
    started = time.monotonic()
    print(f"fetching the {what} from Maven Central ...", file=sys.stderr, flush=True)
    try:
        subprocess.run(
            [mvn, "--batch-mode", "--no-transfer-progress", "-q", "-f", str(pom),
             "dependency:copy-dependencies", f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
            check=True,
        )
        if not any(staging.glob(marker)):
            raise RuntimeError(f"Maven finished but no {marker} was copied")
        staging.rename(libs)  # atomic: a half-fetched cache is never taken for a whole one
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    jars = list(libs.glob("*.jar"))
    print(f"fetched {len(jars)} jars in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    return libs


FREE_PORTS = "PINGSTREAM_FREE_PORTS"


def free_port(avoid: int | None = None) -> int:
    """A loopback port nothing listens on now (another than ``avoid``): one the system picks, or with
    ``PINGSTREAM_FREE_PORTS=<low>-<high>`` one of that range. The tests' workers each get a range of their
    own, below the system's ephemeral ports: a port a test picked, then left free while it restarts what
    listens there, is then neither picked by the other worker nor taken by a client's connection."""
    bounds = os.environ.get(FREE_PORTS)
    low, high = (int(b) for b in bounds.split("-")) if bounds else (0, 0)  # 0: the system picks
    for _ in range(1000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", random.randint(low, high)))
            except OSError:  # taken (in a range)
                continue
            port = s.getsockname()[1]
        if port != avoid:
            return port
    raise RuntimeError("no free loopback port" + (f" in {FREE_PORTS}={bounds}" if bounds else ""))


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


_LOG4J = """\
status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = {path}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.server.name = org.apache.kafka
logger.server.level = WARN
"""


_STARTED = "Kafka Server started"  # what the broker logs (INFO, logger kafka) once it serves


def new_cluster_id() -> str:
    """A random cluster id as Kafka's own Uuid.randomUuid makes them: 16 bytes, URL-safe base64,
    never starting with "-", which the storage tool's argument parser would take for an option
    (one id in 64 did: the format step failed and every Kafka test of that run errored at setup)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode()[:22]
        if not cluster_id.startswith("-"):
            return cluster_id


def _die_with_parent():
    """A pre-exec hook that has Linux send the broker SIGTERM when the thread that started it ends,
    so a test run or bench killed outright leaves no broker behind. Only for the main thread (a
    worker thread can end long before the process) and where prctl exists; libc is loaded here,
    before the fork, so the child only makes one call."""
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _ExitedEarly(RuntimeError):
    """The broker process ended before it had started."""


def stop_process(process: subprocess.Popen | None, timeout_s: float) -> None:
    """Stop a child we started: SIGTERM, then SIGKILL if it has not exited within ``timeout_s``."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _cores() -> int:
    """The cores this process may run on (at least 2)."""
    return max(2, usable_cores())


class Broker:
    """One broker+controller process. ``stop()`` then ``start()`` restarts it on the same ports and data."""

    def __init__(self, workdir: Path, port: int | None = None, partitions: int = 4) -> None:
        self.workdir = Path(workdir)
        self._formatted = (self.workdir / "data" / "meta.properties").exists()
        stored = self._stored_ports() if self._formatted else None
        self._auto_ports = port is None and stored is None
        self.port = port or (stored[0] if stored else free_port())
        self.controller_port = stored[1] if stored and stored[1] != self.port else free_port(avoid=self.port)
        self.partitions = partitions
        self.process: subprocess.Popen | None = None
        self.libs = fetch()

    def _stored_ports(self) -> tuple[int, int] | None:
        try:
            port, controller = (int(p) for p in (self.workdir / "ports").read_text().split())
        except (OSError, ValueError):
            return None
        return port, controller

    def cluster_id(self) -> str:
        """The id this directory's storage is (or will be) formatted with, kept in ``cluster.id``."""
        path = self.workdir / "cluster.id"
        try:
            cluster_id = path.read_text().strip()
        except OSError:
            cluster_id = ""
        if not cluster_id:
            cluster_id = new_cluster_id()
            path.write_text(cluster_id + "\n")
        return cluster_id

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _properties(self) -> Path:
        path = self.workdir / "server.properties"
        cores = _cores()
        path.write_text(
            "\n".join([
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={self.workdir / 'data'}",
                f"num.partitions={self.partitions}",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=4",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=true",
                "log.flush.interval.messages=1",  # a single node has no replica to lose: fsync what it acks
                "log.cleaner.backoff.ms=1000",
                # Threads for this machine, not a server's: Kafka's 8 request handlers and 3 network threads,
                # on 2 cores shared with the services, kept about two broker threads waiting for a core on
                # average at 10,000 pings/s (bench/results/e2e.md, 2026-12-02: with 2 and 2, p99 under 1 s
                # in 6 rounds of 6 against 4 of 6).
                f"num.io.threads={min(8, cores)}",
                f"num.network.threads={min(3, max(2, cores // 2))}",
                "",
            ])
        )
        return path

    def _java(self, main: str, *args: str, **popen) -> list[str]:
        log4j = self.workdir / "log4j2.properties"
        log4j.write_text(_LOG4J.format(path=self.workdir / "broker.log"))
        return [
            shutil.which("java") or "java",
            "-Xms256m", "-Xmx768m", "-XX:+UseSerialGC",
            # The client compiler only: a broker of tests and benches lives for seconds to minutes, in which
            # the server compiler's threads take as much CPU as serving does, from the services sharing the
            # cores; C1's code serves at no more CPU. (Durability is untouched: see log.flush below.)
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp", str(self.libs / "*"), main, *args,
        ]

    def _format(self, properties: Path) -> None:
        cluster_id = self.cluster_id()
        subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties), "--ignore-formatted"),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self._formatted = True

    def start(self, timeout_s: float = 90.0, retries: int = 3) -> "Broker":
        """Start and wait until it serves. A first start with ports of our choosing that exits early
        is retried on fresh ports and fresh storage (a free port picked here can be taken by another
        process before the broker binds it); a restart keeps its ports and data: clients know them."""
        for _ in range(retries if self._auto_ports and not self._formatted else 0):
            try:
                return self._start(timeout_s)
            except _ExitedEarly as exc:
                log.warning("%s\nretrying on fresh ports", exc)
                self.port = free_port()
                self.controller_port = free_port(avoid=self.port)
                shutil.rmtree(self.workdir / "data", ignore_errors=True)
                (self.workdir / "cluster.id").unlink(missing_ok=True)
                self._formatted = False
        return self._start(timeout_s)

    def _start(self, timeout_s: float) -> "Broker":
        self.workdir.mkdir(parents=True, exist_ok=True)
        properties = self._properties()
        if not self._formatted:
            self._format(properties)
        (self.workdir / "ports").write_text(f"{self.port} {self.controller_port}\n")
        outputs = [self.workdir / "broker.out", self.workdir / "broker.log"]  # stdout/stderr, log4j
        offsets = [path.stat().st_size if path.exists() else 0 for path in outputs]

        def printed() -> str:
            """What this start printed so far, not an earlier run's."""
            text = ""
            for path, offset in zip(outputs, offsets):
                if path.exists():
                    with open(path, "rb") as f:
                        f.seek(offset)
                        text += f.read().decode(errors="replace")
            return text

        with open(outputs[0], "ab") as out:
            self.process = subprocess.Popen(
                self._java("kafka.Kafka", str(properties)), stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop it in order
                preexec_fn=_die_with_parent(),
            )
        deadline = time.monotonic() + timeout_s
        # Up when it says so and listens: a listening port alone could be another process's.
        while not (_STARTED in printed() and _port_open(self.port)):
            if self.process.poll() is not None:
                raise _ExitedEarly(f"Kafka broker exited with {self.process.returncode}:\n{printed()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Kafka broker did not start on {self.bootstrap} within {timeout_s:.0f} s")
            time.sleep(0.1)
        log.info("Kafka broker %s up on %s (pid %d)", kafka_version(), self.bootstrap, self.process.pid)
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        process, self.process = self.process, None
        stop_process(process, timeout_s)

    def kill(self) -> None:
        """kill -9: the broker gets no chance to flush or say goodbye."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def start_broker(workdir: str | Path, port: int | None = None, partitions: int = 4) -> Broker:
    return Broker(Path(workdir), port=port, partitions=partitions).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.kafkabroker",
        description="A local single-node Kafka broker (KRaft) for pingstream's distributed mode.",
        epilog="Stop it with Ctrl-C or SIGTERM (it shuts down cleanly); run it again with the same --dir "
               "to restart it on the same data, cluster id and ports.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="fetch the broker jars into the cache")
    run = sub.add_parser("run", help="start a single-node broker and wait until stopped")
    run.add_argument("--dir", help="data directory; reused on the next run with the same --dir "
                                   "(default: a new temporary directory)")
    run.add_argument("--port", type=int, default=None,
                     help="client port on 127.0.0.1 (default: the port this --dir had, else a free one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "fetch":
        libs = fetch()
        print(libs.relative_to(ROOT) if libs.is_relative_to(ROOT) else libs)
        return 0
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="pingstream-kafka-"))
    broker = Broker(workdir.resolve(), port=args.port)
    restarting = broker._formatted
    broker.start()
    print(f"PINGSTREAM_KAFKA={broker.bootstrap}", flush=True)
    print(f"{'restarted on' if restarting else 'data directory:'} {broker.workdir} (cluster id {broker.cluster_id()}); "
          f"stop with Ctrl-C, start again with: python -m runtime.kafkabroker run --dir {broker.workdir}", flush=True)
    try:
        # Blocked only now (a child inherits the mask), so that sigwait, not the default action, takes them.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
