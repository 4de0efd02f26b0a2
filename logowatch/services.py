"""Real Kafka and PostgreSQL on this machine, without Docker.

Kafka is the official Apache broker (KRaft, one node that is broker and controller), its jars
resolved from Maven Central once into a cache folder; PostgreSQL is a private cluster made with
the machine's own ``initdb`` / ``pg_ctl``. The same runners serve ``logowatch services`` (a
persistent demo stack under ``.logowatch/``) and the test fixtures (throw-away data dirs, free
ports), so what the tests exercise is what a user runs.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from workers.errors import WorkerError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
KAFKA_POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
KAFKA_LOG4J = REPO_ROOT / "deploy" / "kafka" / "log4j2.yaml"
KAFKA_VERSION = "4.4.0"


class ServiceError(WorkerError):
    """A local service could not be installed, started or reached."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def stop_pid(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM, wait for a clean exit, SIGKILL if it does not come."""
    if not pid_alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    log.warning("pid %d did not stop in %.0fs; killing it", pid, timeout)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def default_cache_dir() -> Path:
    base = os.environ.get("LOGOWATCH_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return Path(base) / "logowatch" if base else Path.home() / ".cache" / "logowatch"


def kafka_jars(cache_dir: Path | None = None) -> Path:
    """The folder of broker jars, resolved with Maven on first use (a few seconds warm)."""
    target = (cache_dir or default_cache_dir()) / f"kafka-{KAFKA_VERSION}"
    if (target / ".complete").exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError("Maven (mvn) is needed once to fetch the Kafka broker jars")
    if shutil.which("java") is None:
        raise ServiceError("Java 17+ is needed to run the Kafka broker")
    staging = Path(tempfile.mkdtemp(prefix="kafka-jars-", dir=target.parent.mkdir(
        parents=True, exist_ok=True) or target.parent))
    log.info("resolving Kafka %s jars from Maven Central into %s", KAFKA_VERSION, target)
    result = subprocess.run(
        [mvn, "-B", "-q", "-f", str(KAFKA_POM), "dependency:copy-dependencies",
         f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
        raise ServiceError("Maven could not resolve the Kafka broker: " + " | ".join(tail))
    (staging / ".complete").write_text(KAFKA_VERSION)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


@dataclass
class KafkaBroker:
    """One KRaft node on 127.0.0.1. ``start`` returns once the broker answers metadata."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    partitions: int = 4
    heap: str = "512m"
    cache_dir: Path | None = None
    pid: int | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "broker.log"

    def _properties(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / "server.properties"
        path.write_text(
            "\n".join([
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                f"CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={self.data_dir / 'logs'}",
                f"num.partitions={self.partitions}",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=8",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=true",
                "",
            ])
        )
        return path

    def _java(self, jars: Path, *args: str) -> list[str]:
        return [
            "java", f"-Xmx{self.heap}", "-Xms128m", "-XX:+UseG1GC",
            "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={KAFKA_LOG4J}",
            "-cp", f"{jars}/*", *args,
        ]

    def start(self, timeout: float = 90.0) -> None:
        jars = kafka_jars(self.cache_dir)
        props = self._properties()
        if not (self.data_dir / "logs" / "meta.properties").exists():
            cluster_id = uuid.uuid4().hex[:22]
            fmt = subprocess.run(
                self._java(jars, "kafka.tools.StorageTool", "format",
                           "-t", cluster_id, "-c", str(props)),
                capture_output=True, text=True, check=False,
            )
            if fmt.returncode != 0:
                raise ServiceError(f"formatting Kafka storage failed: {fmt.stderr.strip()[-400:]}")
        for port in (self.port, self.controller_port):
            if port_open(port):
                raise ServiceError(f"port {port} is already in use; pick another")
        with open(self.log_path, "ab") as out:
            proc = subprocess.Popen(
                self._java(jars, "kafka.Kafka", str(props)),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid = proc.pid
        self._wait_ready(proc, timeout)

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-800:]
                raise ServiceError(f"Kafka exited with {proc.returncode}: {tail}")
            if port_open(self.port):
                try:
                    admin = KafkaAdminClient(
                        bootstrap_servers=self.bootstrap, request_timeout_ms=3000
                    )
                    try:
                        if admin.describe_cluster().get("brokers"):
                            return
                    finally:
                        admin.close()
                except (KafkaError, OSError) as exc:
                    log.debug("broker not ready yet: %s", exc)
            time.sleep(0.3)
        self.stop()
        raise ServiceError(f"Kafka did not answer metadata within {timeout:.0f}s")

    def stop(self, timeout: float = 30.0) -> None:
        if self.pid is not None:
            stop_pid(self.pid, timeout)
            self.pid = None


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise ServiceError(
            f"PostgreSQL's {name} was not found; install the server "
            "(Debian: apt-get install postgresql) or set DATABASE_URL to an existing server"
        )
    return candidates[-1]


@dataclass
class PostgresCluster:
    """A private PostgreSQL cluster on 127.0.0.1 with trust auth for loopback only.

    As root, the cluster runs as the ``postgres`` system user (``initdb`` refuses root).
    """

    data_dir: Path
    port: int = field(default_factory=free_port)
    superuser: str = "postgres"

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg2://{self.superuser}@127.0.0.1:{self.port}/postgres"

    def url(self, database: str, user: str | None = None) -> str:
        return f"postgresql+psycopg2://{user or self.superuser}@127.0.0.1:{self.port}/{database}"

    def _run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise ServiceError(
                f"{Path(argv[0 if os.geteuid() else 4]).name} failed: "
                f"{(result.stderr or result.stdout).strip()[-600:]}"
            )
        return result

    def _prepare_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.data_dir, "postgres", "postgres")
            os.chmod(self.data_dir, 0o700)

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def start(self, timeout: float = 60.0) -> None:
        self._prepare_dir()
        if not self.initialised:
            self._run([
                _pg_bin("initdb"), "-D", str(self.data_dir), "-U", self.superuser,
                "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
            ])
        if port_open(self.port):
            raise ServiceError(f"port {self.port} is already in use; pick another")
        options = (
            f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_connections=200"
        )
        self._run([
            _pg_bin("pg_ctl"), "-D", str(self.data_dir), "-o", options,
            "-l", str(self.data_dir / "server.log"), "-w", "-t", str(int(timeout)), "start",
        ])

    def stop(self) -> None:
        if self.initialised and (self.data_dir / "postmaster.pid").exists():
            self._run([_pg_bin("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w",
                       "stop"], check=False)

    def create_database(self, name: str, owner: str | None = None) -> str:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.superuser,
                                dbname="postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                if owner:
                    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (owner,))
                    if cur.fetchone() is None:
                        cur.execute(f'CREATE ROLE "{owner}" LOGIN CREATEROLE')
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"'
                                + (f' OWNER "{owner}"' if owner else ""))
        finally:
            conn.close()
        return self.url(name, owner)

    def drop_database(self, name: str) -> None:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.superuser,
                                dbname="postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            conn.close()


def make_private_tmpdir(prefix: str) -> Path:
    """A temp dir the ``postgres`` user can own and reach (pytest's tmp_path is 0700 root's)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if os.path.isdir("/tmp") else None))


def ensure_topics(bootstrap: str, topics: list[str], partitions: int = 4) -> None:
    """Create missing topics with ``partitions`` partitions (the broker's auto-creation would
    race the first producer and log leader errors)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(t, num_partitions=partitions, replication_factor=1)
                   for t in topics if t not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing)
    finally:
        admin.close()
