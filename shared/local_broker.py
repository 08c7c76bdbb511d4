"""A real single-node Apache Kafka (KRaft) from Maven Central jars, for machines without Docker.

Jars land in `.cache/kafka/lib` (fetched once by Maven from `broker/pom.xml`); each port has
its own data folder `.cache/kafka/data-<port>`, so stopping and starting keeps topics.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

REPO = Path(__file__).resolve().parents[1]
BROKER_DIR = REPO / "broker"
CACHE = Path(os.environ.get("FD_CACHE_DIR", REPO / ".cache")) / "kafka"
LIB = CACHE / "lib"
JVM_FLAGS = ["-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true"]


@dataclass(frozen=True)
class BrokerInfo:
    bootstrap: str
    pid: int
    data_dir: Path


def ensure_jars() -> Path:
    """Fetch the broker's jars with Maven unless they are already cached."""
    if not any(LIB.glob("kafka_2.13-*.jar")):
        LIB.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "mvn",
                "-B",
                "-q",
                "-f",
                str(BROKER_DIR / "pom.xml"),
                "dependency:copy-dependencies",
                f"-Dfd.lib={LIB}",
            ],
            check=True,
        )
    return LIB


def data_dir_for(port: int) -> Path:
    return CACHE / f"data-{port}"


def _java(*args: str) -> list[str]:
    return [
        "java",
        *JVM_FLAGS,
        "-cp",
        f"{LIB}/*",
        f"-Dlog4j2.configurationFile={BROKER_DIR / 'log4j2.properties'}",
        *args,
    ]


def _configure(port: int, data_dir: Path) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    template = (BROKER_DIR / "server.properties.template").read_text()
    props = data_dir / "server.properties"
    props.write_text(template.format(port=port, controller_port=port + 1, log_dir=data_dir / "log"))
    if not (data_dir / "log" / "meta.properties").exists():
        cluster_id = subprocess.run(
            _java("kafka.tools.StorageTool", "random-uuid"), check=True, capture_output=True, text=True
        ).stdout.split()[-1]
        subprocess.run(
            _java(
                "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props), "--ignore-formatted"
            ),
            check=True,
            capture_output=True,
        )
    return props


def bootstrap(port: int = 19092) -> str:
    return f"127.0.0.1:{port}"


def answers(port: int = 19092, timeout_s: float = 2.0) -> bool:
    try:
        # log_level 0: "connection refused" while the broker boots is expected, not worth printing.
        AdminClient(
            {"bootstrap.servers": bootstrap(port), "socket.timeout.ms": 1000, "log_level": 0}
        ).list_topics(timeout=timeout_s)
        return True
    except Exception:  # KafkaException or a timeout: not (yet) a broker there
        return False


def _pid(data_dir: Path) -> int | None:
    try:
        pid = int((data_dir / "broker.pid").read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def is_running(port: int = 19092) -> bool:
    return _pid(data_dir_for(port)) is not None and answers(port)


def up(port: int = 19092, data_dir: Path | None = None, wait_s: float = 90) -> BrokerInfo:
    """Start the broker (formatting storage the first time) and wait until it answers."""
    data_dir = data_dir or data_dir_for(port)
    pid = _pid(data_dir)
    if pid is not None and answers(port):
        return BrokerInfo(bootstrap(port), pid, data_dir)
    ensure_jars()
    props = _configure(port, data_dir)
    with open(data_dir / "broker.log", "ab") as log:
        proc = subprocess.Popen(
            _java("kafka.Kafka", str(props)), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    (data_dir / "broker.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + wait_s
    while not answers(port):
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode}; see {data_dir / 'broker.log'}")
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"broker on port {port} did not answer in {wait_s}s; see {data_dir / 'broker.log'}"
            )
        time.sleep(0.2)
    return BrokerInfo(bootstrap(port), proc.pid, data_dir)


def down(port: int = 19092, timeout_s: float = 30, data_dir: Path | None = None) -> None:
    """SIGTERM (a clean shutdown), then SIGKILL if the broker is still there after `timeout_s`."""
    _stop(data_dir or data_dir_for(port), signal.SIGTERM, timeout_s)


def stop_hard(port: int = 19092, data_dir: Path | None = None) -> None:
    """SIGKILL: a crash, for fault-injection tests."""
    _stop(data_dir or data_dir_for(port), signal.SIGKILL, 10)


def restart(port: int = 19092, hard: bool = False) -> BrokerInfo:
    (stop_hard if hard else down)(port)
    return up(port)


def _stop(data_dir: Path, sig: int, timeout_s: float) -> None:
    pid = _pid(data_dir)
    if pid is None:
        return
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline += 10
        time.sleep(0.1)
    (data_dir / "broker.pid").unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    # Reap it if it is our child, so a zombie does not count as alive.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False
