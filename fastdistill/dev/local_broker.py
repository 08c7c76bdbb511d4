"""A real single-node Apache Kafka (KRaft) from Maven Central jars, for machines without Docker.

Jars land in `<cache>/kafka/lib` (fetched once by Maven from `broker/pom.xml` beside this
module, package data like the log4j config and the server template); each port has its own
data folder `<cache>/kafka/data-<port>`, so stopping and starting keeps topics. `<cache>` is
`FD_CACHE_DIR` if set, else `.cache` of the source checkout, else (installed from a wheel)
`$XDG_CACHE_HOME/fastdistill` (`~/.cache/fastdistill`): per user, not per working directory,
because a port's broker and its lock file are one per machine whichever folder started it.
Several processes (parallel test sessions, the CLI) may call `up()` at once: a lock file per
port makes them share one broker instead of racing to start two.

A broker is this checkout's when the pid file in its data folder names a live kafka.Kafka JVM
started on that folder's server.properties (checked in the process's command line). Status and
down speak only of that broker, never of whatever Kafka listens on the port: another checkout's
broker on the same port is reported as such and left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
from confluent_kafka.admin import AdminClient

BROKER_DIR = Path(__file__).resolve().parent / "broker"


def _cache_root() -> Path:
    if os.environ.get("FD_CACHE_DIR"):
        return Path(os.environ["FD_CACHE_DIR"])
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file():
        return checkout / ".cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fastdistill"


# Absolute: the path is part of a broker's identity (its command line names its data folder).
CACHE = _cache_root().absolute() / "kafka"
LIB = CACHE / "lib"
DEFAULT_PORT = 19092
# A small heap and C1-only JIT: a test broker starts in ~3 s and idles near 200 MB RSS.
JVM_FLAGS = [
    "-Xms64m",
    "-Xmx768m",
    "-XX:+UseG1GC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
]
PID_FILE = "broker.pid"
LOG_FILE = "broker.log"
PROPERTIES = "server.properties"


@dataclass(frozen=True)
class BrokerInfo:
    bootstrap: str
    pid: int
    data_dir: Path
    port: int
    #: the SASL_PLAINTEXT (mechanism PLAIN) listener, when the broker was started with users
    sasl_bootstrap: str | None = None
    #: True when this `up()` call started it (False: it was already running)
    started: bool = False


def _expected_jars() -> list[str]:
    pom = (BROKER_DIR / "pom.xml").read_text()
    versions = dict(re.findall(r"<(kafka\.version|log4j\.version)>([^<]+)<", pom))
    return [
        f"kafka_2.13-{versions['kafka.version']}.jar",
        f"log4j-core-{versions['log4j.version']}.jar",
        f"log4j-slf4j-impl-{versions['log4j.version']}.jar",
    ]


def ensure_jars() -> Path:
    """The folder of the broker's jars, fetched by Maven unless the pom's versions are already there."""
    if all((LIB / jar).exists() for jar in _expected_jars()):
        return LIB
    CACHE.mkdir(parents=True, exist_ok=True)
    with _locked(CACHE / "jars.lock"):
        if all((LIB / jar).exists() for jar in _expected_jars()):
            return LIB
        # A fresh folder swapped in whole: an interrupted fetch or a version bump never
        # leaves a half-filled classpath or two Kafka versions side by side.
        staging = Path(tempfile.mkdtemp(prefix="lib.", dir=CACHE))
        try:
            cmd = [
                "mvn",
                "-B",
                "-q",
                "-f",
                str(BROKER_DIR / "pom.xml"),
                "dependency:copy-dependencies",
                f"-Dfd.lib={staging}",
            ]
            # Captured: even -q prints terminal escape codes; the output matters only on failure.
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{(done.stdout + done.stderr)[-4000:]}")
            if LIB.exists():
                shutil.rmtree(LIB)
            staging.rename(LIB)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return LIB


def data_dir_for(port: int = DEFAULT_PORT) -> Path:
    return CACHE / f"data-{port}"


def bootstrap(port: int = DEFAULT_PORT) -> str:
    return f"127.0.0.1:{port}"


def answers(port: int = DEFAULT_PORT, timeout_s: float = 2.0) -> bool:
    """Whether a Kafka broker on `port` answers a metadata request."""
    try:
        # log_level 0: "connection refused" while the broker boots is expected, not worth printing.
        AdminClient(
            {"bootstrap.servers": bootstrap(port), "socket.timeout.ms": 1000, "log_level": 0}
        ).list_topics(timeout=timeout_s)
        return True
    except Exception:  # KafkaException or a timeout: not (yet) a broker there
        return False


def is_running(port: int = DEFAULT_PORT, data_dir: Path | None = None) -> bool:
    """Whether this checkout's broker (of `data_dir`) runs on `port` and answers."""
    return _pid(port, data_dir or data_dir_for(port)) is not None and answers(port)


def pid(port: int = DEFAULT_PORT, data_dir: Path | None = None) -> int | None:
    """The pid of this checkout's broker (of `data_dir`), None when it is not running."""
    return _pid(port, data_dir or data_dir_for(port))


def foreign_listener(port: int = DEFAULT_PORT) -> str | None:
    """What else listens on `port` (pid and command), when it is not this checkout's broker."""
    listener = _listener(port)
    if listener is None or listener == pid(port):
        return None
    try:
        what = " ".join(psutil.Process(listener).cmdline())[:120]
    except psutil.Error:
        what = "?"
    return f"pid {listener} ({what})"


def up(
    port: int = DEFAULT_PORT,
    data_dir: Path | None = None,
    wait_s: float = 60,
    sasl_users: dict[str, str] | None = None,
) -> BrokerInfo:
    """Start the broker (formatting storage the first time) and wait until it answers.

    A broker already running on `port` (still booting, or started by another process) is
    waited for and returned, not started twice. `sasl_users` (name -> password) adds a
    SASL_PLAINTEXT listener with mechanism PLAIN on `port + 2`, beside the PLAINTEXT one.
    """
    data_dir = data_dir or data_dir_for(port)
    data_dir.mkdir(parents=True, exist_ok=True)
    sasl = bootstrap(port + 2) if sasl_users else None
    with _locked(_lock_path(port)):
        running = _pid(port, data_dir)
        if running is not None:
            if _wait_until_answers(port, running, wait_s):
                return BrokerInfo(bootstrap(port), running, data_dir, port, sasl)
            if _alive(running):
                raise TimeoutError(f"broker pid {running} on port {port} did not answer in {wait_s}s")
        _refuse_foreign_listener(port)
        ensure_jars()
        props = _configure(port, data_dir, sasl_users)
        with open(data_dir / LOG_FILE, "ab") as log:
            proc = subprocess.Popen(
                _java("kafka.Kafka", str(props)),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: Ctrl-C in the terminal that ran `up()` does not stop the broker.
                start_new_session=True,
            )
        (data_dir / PID_FILE).write_text(str(proc.pid))
        if not _wait_until_answers(port, proc.pid, wait_s):
            alive = _alive(proc.pid)
            if alive:
                _signal_and_wait(proc.pid, signal.SIGKILL, 10)
            (data_dir / PID_FILE).unlink(missing_ok=True)
            state = f"did not answer in {wait_s}s" if alive else "exited"
            raise RuntimeError(f"broker on port {port} {state}; see {data_dir / LOG_FILE}")
        return BrokerInfo(bootstrap(port), proc.pid, data_dir, port, sasl, started=True)


def down(port: int = DEFAULT_PORT, timeout_s: float = 30, data_dir: Path | None = None) -> int | None:
    """SIGTERM (a controlled shutdown), then SIGKILL if the broker is still there after `timeout_s`.
    The pid stopped; None when this checkout's broker was not running (nothing else is touched)."""
    return _stop(port, data_dir or data_dir_for(port), signal.SIGTERM, timeout_s)


def stop_hard(port: int = DEFAULT_PORT, data_dir: Path | None = None) -> None:
    """SIGKILL: a crash, for fault-injection tests."""
    _stop(port, data_dir or data_dir_for(port), signal.SIGKILL, 10)


def restart(
    port: int = DEFAULT_PORT, hard: bool = False, data_dir: Path | None = None, wait_s: float = 60
) -> BrokerInfo:
    if hard:
        stop_hard(port, data_dir)
    else:
        down(port, data_dir=data_dir)
    return up(port, data_dir, wait_s)


# -- internals ---------------------------------------------------------------------------------
@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _lock_path(port: int) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    return CACHE / f"broker-{port}.lock"


def _java(*args: str) -> list[str]:
    return [
        "java",
        *JVM_FLAGS,
        "-cp",
        f"{LIB}/*",
        f"-Dlog4j2.configurationFile={BROKER_DIR / 'log4j2.properties'}",
        *args,
    ]


def _configure(port: int, data_dir: Path, sasl_users: dict[str, str] | None = None) -> Path:
    template = (BROKER_DIR / "server.properties.template").read_text()
    props = data_dir / PROPERTIES
    log_dir = data_dir / "log"
    props.write_text(
        template.format(
            port=port, controller_port=port + 1, log_dir=log_dir, **_sasl_properties(port, sasl_users)
        )
    )
    if not (log_dir / "meta.properties").exists():
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


def _sasl_properties(port: int, users: dict[str, str] | None) -> dict[str, str]:
    """Template values for an optional SASL/PLAIN listener (brokers still talk PLAINTEXT to each other)."""
    if not users:
        return {"sasl_listener": "", "sasl_protocol": "", "sasl_properties": ""}
    if any(re.search(r'["\\\s;]', text) for pair in users.items() for text in pair):
        raise ValueError("SASL user names and passwords must not hold quotes, backslashes, blanks or ';'")
    entries = " ".join(f'user_{name}="{password}"' for name, password in users.items())
    return {
        "sasl_listener": f",SASL_PLAINTEXT://127.0.0.1:{port + 2}",
        "sasl_protocol": ",SASL_PLAINTEXT:SASL_PLAINTEXT",
        "sasl_properties": "sasl.enabled.mechanisms=PLAIN\n"
        "listener.name.sasl_plaintext.plain.sasl.jaas.config="
        f"org.apache.kafka.common.security.plain.PlainLoginModule required {entries};\n",
    }


def _is_broker_of(pid: int, data_dir: Path) -> bool:
    """A kafka.Kafka JVM started on `data_dir`'s server.properties (a stale pid file may name a
    recycled pid, or a copied data folder another broker's)."""
    props = data_dir / PROPERTIES
    try:
        proc = psutil.Process(pid)
        cmdline = proc.cmdline()
        cwd = proc.cwd()
    except psutil.Error:
        return False
    if "kafka.Kafka" not in cmdline:
        return False
    for arg in cmdline:
        if arg.endswith(PROPERTIES):
            with contextlib.suppress(OSError):
                # samefile: one folder reached through a symlink (a shared .cache) is one broker.
                if os.path.samefile(Path(cwd) / arg, props):
                    return True
    return False


def _listener(port: int) -> int | None:
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:  # some systems hide other users' sockets: then only pid files count
        return None
    for conn in conns:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            return conn.pid
    return None


def _pid(port: int, data_dir: Path) -> int | None:
    """This checkout's broker: the pid of `data_dir`'s pid file, if that is its broker. Never any
    other Kafka JVM on `port`: that one is another checkout's, not ours to report or stop."""
    with contextlib.suppress(OSError, ValueError):
        found = int((data_dir / PID_FILE).read_text())
        if _alive(found) and _is_broker_of(found, data_dir):
            return found
    return None


def _refuse_foreign_listener(port: int) -> None:
    for p in (port, port + 1):
        pid = _listener(p)
        if pid is not None:
            try:
                what = " ".join(psutil.Process(pid).cmdline())[:200]
            except psutil.Error:
                what = "?"
            raise RuntimeError(f"port {p} is taken by pid {pid} ({what}), not by a broker of ours")


def _wait_until_answers(port: int, pid: int, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while not answers(port):
        if not _alive(pid) or time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _stop(port: int, data_dir: Path, sig: int, timeout_s: float) -> int | None:
    with _locked(_lock_path(port)):
        found = _pid(port, data_dir)
        if found is not None:
            _signal_and_wait(found, sig, timeout_s)
        (data_dir / PID_FILE).unlink(missing_ok=True)
        return found


def _signal_and_wait(pid: int, sig: int, timeout_s: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline += 10
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    # Reap it if it is our child, so a zombie does not count as alive.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    # A zombie whose parent is another, still running process would otherwise stay "alive".
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
