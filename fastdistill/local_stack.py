"""Every service of a pipeline as a local process: what `fastdistill up`, the end-to-end tests
and the chaos harness run where no Docker engine is available."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastdistill.supervision import RestartPolicy
from shared.pipeline import PipelineSpec

SIM_NAME = "teacher-sim"


#: Listening ports come from below Linux's ephemeral range (32768+): a port the kernel handed out
#: there can be taken by one of the many outgoing Kafka connections before the child binds it.
_LISTEN_PORTS = range(20_000, 32_000)
_handed_out: set[int] = set()


def free_port() -> int:
    """A port nobody listens on, not handed out before by this process."""
    for _ in range(1000):
        port = random.choice(_LISTEN_PORTS)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {_LISTEN_PORTS}")


def free_port_pair() -> int:
    """A port p with p and p + 1 both free and not handed out before (a local broker listens on
    p, its controller on p + 1)."""
    for _ in range(1000):
        port = free_port()
        if port + 1 in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        _handed_out.add(port + 1)
        return port
    raise RuntimeError(f"no two adjacent free ports in {_LISTEN_PORTS}")


@dataclass
class ServiceProcess:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    #: monotonic time of its last start, and its log's size then (what it wrote since)
    started_at: float = 0.0
    log_offset: int = 0

    @property
    def is_simulator(self) -> bool:
        """A teacher simulator: started on its own, answers HTTP, has no /healthz."""
        return "teacher-sim" in self.argv

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed with it
        self.started_at, self.log_offset = time.monotonic(), log.tell()
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        """What its log holds past `offset` (a `log_size()` taken earlier)."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def log_since_start(self) -> str:
        """What this process wrote to its log since its last start."""
        return self.log_since(self.log_offset)

    def lost_its_port(self) -> bool:
        """Exited because another process (another stack, a test's broker) bound its metrics
        port between `free_port()` and its own bind."""
        return not self.alive() and "address already in use" in self.log_since_start().lower()

    def move_port(self) -> None:
        """A new metrics port for its next start (not for a simulator: its URL is the port)."""
        self.port = free_port()
        self.env["FD_METRICS_PORT"] = str(self.port)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def health(self) -> dict[str, Any] | None:
        """Its /healthz as it says it (200 or 503), None when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=0.5) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
        except OSError:
            return None
        try:
            data = json.loads(body)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None


@dataclass
class LocalStack:
    pipeline_path: Path
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    #: `fastdistill up`'s: exited processes are started again (None: an exit is final)
    restart_policy: RestartPolicy | None = None

    @property
    def spec(self) -> PipelineSpec:
        return PipelineSpec.load(self.pipeline_path)

    def base_env(self) -> dict[str, str]:
        env = dict(os.environ) | self.env
        env["FD_PIPELINE"] = str(self.pipeline_path)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "fastdistill.cli", *args]

    def produce(self, seeds: Path, run_id: str, *options: str, timeout_s: float = 300) -> str:
        """`fastdistill produce` to the end against this stack; its summary (stdout)."""
        argv = self.cli("produce", str(seeds), "--run-id", run_id, *options)
        done = subprocess.run(argv, env=self.base_env(), capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            raise RuntimeError(f"fastdistill produce exited {done.returncode}: {done.stderr}")
        return done.stdout

    def add(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> ServiceProcess:
        port = free_port()
        env = self.base_env() | {"FD_METRICS_PORT": str(port), "FD_INSTANCE_ID": name} | (extra_env or {})
        svc = ServiceProcess(name, argv, env, self.workdir / "logs" / f"{name}.log", port)
        self.services[name] = svc
        return svc

    def start_teacher_sim(
        self, seeds: Path, latency: str = "fixed:0", fault_rate: float = 0.0, name: str = SIM_NAME
    ) -> str:
        """A simulator process; its base URL. The first (named SIM_NAME) is the stack's default
        teacher (OPENAI_BASE_URL); others serve steps that name them by `base_url`."""
        args = ["--seeds", str(seeds), "--latency", latency, "--fault-rate", str(fault_rate)]
        svc = self.add(name, self.cli("teacher-sim", *args))
        svc.argv += ["--port", str(svc.port)]
        svc.start()
        url = f"http://127.0.0.1:{svc.port}/v1"
        _wait_http(f"{url}/models", 30, svc)
        if name == SIM_NAME:
            self.env["OPENAI_BASE_URL"] = url
        return url

    def add_pipeline_services(self, with_coordinator: bool = True) -> list[str]:
        """Every step service (one per chain of steps when the pipeline chains them), the sink
        and the coordinator."""
        from fastdistill.plan import PipelinePlan

        spec = self.spec
        names = []
        for service in PipelinePlan.build(spec).services:
            instances = spec.step(service).instances
            for i in range(instances):
                name = service if instances == 1 else f"{service}-{i}"
                self.add(name, self.cli("serve", service))
                names.append(name)
        names.append(self.add("sink", self.cli("serve", "sink")).name)
        if with_coordinator:
            names.append(self.add("coordinator", self.cli("serve", "coordinator")).name)
        return names

    def start(self, names: list[str] | None = None, wait_healthy_s: float = 180) -> None:
        chosen = [s for n in (names or list(self.services)) if not (s := self.services[n]).is_simulator]
        for svc in chosen:
            if not svc.alive():
                svc.env |= self.env
                svc.start()
        deadline = time.monotonic() + wait_healthy_s
        for svc in chosen:
            while not svc.healthy():
                if svc.lost_its_port():
                    svc.move_port()
                    svc.start()
                elif not svc.alive():
                    raise RuntimeError(f"{svc.name} exited: {_tail(svc.log_path)}")
                if time.monotonic() > deadline:
                    tail = _tail(svc.log_path)
                    raise TimeoutError(f"{svc.name} not healthy after {wait_healthy_s}s: {tail}")
                time.sleep(0.1)

    def kill(self, name: str) -> None:
        svc = self.services[name]
        svc.signal(signal.SIGKILL)
        svc.wait(10)

    def restart(self, name: str) -> None:
        svc = self.services[name]
        svc.restarts += 1
        self.start([name])

    def retire(self, name: str, timeout: float = 30) -> int | None:
        """Ask one service to end (SIGTERM) and forget it; its exit code, None if it did not end."""
        svc = self.services.pop(name)
        svc.signal(signal.SIGTERM)
        return svc.wait(timeout)

    def stop(self, timeout: float = 20) -> None:
        for svc in self.services.values():
            svc.signal(signal.SIGTERM)
        for svc in self.services.values():
            if svc.wait(timeout) is None:
                svc.signal(signal.SIGKILL)
                svc.wait(5)

    def service_notes(self) -> dict[str, str]:
        """What a person watching a run should know of each step service: an input held (an
        endpoint unreachable) and rows in flight; nothing for a service with nothing to say."""
        notes = {}
        for name, svc in self.services.items():
            health = None if svc.is_simulator or not svc.alive() else svc.health()
            if health is None:
                continue
            said = [f"waiting: {health['held']}"] if health.get("held") else []
            if health.get("in_flight"):
                said.append(f"{health['in_flight']} rows in flight")
            if said:
                notes[name] = "; ".join(said)
        return notes

    def dead(self) -> list[str]:
        return [n for n, s in self.services.items() if s.proc is not None and not s.alive()]

    def lost(self) -> list[str]:
        """The processes gone for good: every exited one, or, with a restart policy, those in a
        crash loop (the policy starts the others again here)."""
        if self.restart_policy is None:
            return self.dead()
        self.restart_policy.revive(self)
        return list(self.restart_policy.given_up)


def _wait_http(url: str, timeout_s: float, svc: ServiceProcess) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if not svc.alive():
                raise RuntimeError(f"{svc.name} exited: {_tail(svc.log_path)}") from None
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer in {timeout_s}s")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
