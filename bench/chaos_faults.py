"""The faults of the chaos run, each fired when the run has reached a given fraction of its rows at
the last stage (so every fault lands mid-run, however slow the faults make the run):

- `kill`: SIGKILL of a random service instance (any step, the sink, the coordinator), started again
  at once;
- `broker_kill`: SIGKILL of the broker's JVM, started again on the same data folder 2-6 s later;
  the time from the broker answering to rows flowing again at the last stage is recorded;
- `broker_restart`: the same with a controlled shutdown (SIGTERM);
- `stop_backpressured`: SIGSTOP of a step kept full (once its /healthz shows paused partitions)
  for longer than its session timeout, then SIGCONT: it must go on by itself;
- `zombie`: SIGSTOP of an instance, a replacement started with the same FD_INSTANCE_ID (its
  transactional id fences the stopped one, its group.instance.id takes the partitions), then
  SIGCONT: the woken zombie must end by itself, fenced, having written nothing;
- `burst`: three more instances of a step join while it has input and are SIGKILLed within
  seconds each.

Nothing here kills a live process to get a run going again: a zombie that does not end by
itself is counted as needing a hand (and only then killed).
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import measure
from bench.chaos_flow import FlowWatcher
from bench.chaos_supervisor import Supervisor, pipeline_services
from fastdistill.dev import local_broker
from fastdistill.local_stack import LocalStack, ServiceProcess, free_port
from fastdistill.supervision import exit_reason


@dataclass(frozen=True, order=True)
class Fault:
    #: fraction of the run's rows at the last stage when it fires
    at: float
    kind: str
    target: str | None = None


@dataclass
class FaultRecord:
    kind: str
    target: str
    at: float
    #: epoch seconds
    started: float
    ended: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FaultSettings:
    session_timeout_s: float
    #: how long the broker stays down after its SIGKILL (drawn in this range)
    broker_down_s: tuple[float, float] = (2.0, 6.0)
    #: how long rows may take to flow again after the broker answers before the director moves on
    #: (the harness's own no-progress bound decides whether the run needs a hand)
    recovery_bound_s: float = 300.0
    #: a woken zombie that has not ended by itself within this needs a hand
    zombie_bound_s: float = 120.0
    #: a step that never shows paused partitions within this is not stopped (recorded as such)
    pause_wait_s: float = 180.0
    burst_size: int = 3


def plan_faults(
    rng: random.Random,
    kills: int,
    broker_kills: int,
    backpressure_target: str | None,
    zombie_target: str | None,
    burst_target: str | None,
    broker_restarts: int = 0,
) -> list[Fault]:
    """When each fault fires, as fractions of the last stage's rows. The backpressured stop comes
    first, while the stopped step still has a backlog larger than its buffer; the zombie and the
    burst before the broker faults, whose recovery may take long enough for the run to pass
    their moment; random kills anywhere before 90%."""
    faults = [Fault(rng.uniform(0.0, 0.9), "kill") for _ in range(kills)]
    if backpressure_target:
        faults.append(Fault(rng.uniform(0.08, 0.15), "stop_backpressured", backpressure_target))
    if zombie_target:
        faults.append(Fault(rng.uniform(0.2, 0.28), "zombie", zombie_target))
    if burst_target:
        faults.append(Fault(rng.uniform(0.32, 0.38), "burst", burst_target))
    for _ in range(broker_restarts):
        faults.append(Fault(rng.uniform(0.42, 0.46), "broker_restart"))
    for k in range(broker_kills):
        lo = 0.5 + 0.2 * k
        faults.append(Fault(rng.uniform(lo, lo + 0.05), "broker_kill"))
    return sorted(faults)


def health(port: int) -> dict[str, Any]:
    """A service's /healthz (503 carries the same JSON); {} when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        try:
            return dict(json.loads(exc.read()))
        except ValueError:
            return {}
    except (OSError, ValueError):
        return {}


def committed_transactions(port: int) -> float:
    """fd_transactions_total{outcome="committed"} of a step service (0 if it does not answer)."""
    try:
        text = measure.scrape(port, timeout_s=3)
    except OSError:
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[-1])
        for line in text.splitlines()
        if line.startswith("fd_transactions_total{") and 'outcome="committed"' in line
    )


def rows_in(port: int) -> float:
    try:
        return measure.counter(measure.scrape(port, timeout_s=3), "fd_rows_in_total")
    except OSError:
        return -1.0


class Director(threading.Thread):
    def __init__(
        self,
        stack: LocalStack,
        supervisor: Supervisor,
        flow: FlowWatcher,
        faults: list[Fault],
        expected_rows: int,
        rng: random.Random,
        broker: tuple[int, Path],
        settings: FaultSettings,
        done: threading.Event,
        say: Callable[[str], None] = print,
    ) -> None:
        super().__init__(daemon=True, name="chaos-director")
        self.stack, self.supervisor, self.flow = stack, supervisor, flow
        self.faults, self.expected_rows, self.rng = faults, expected_rows, rng
        self.port, self.data_dir = broker
        self.settings, self.done, self.say = settings, done, say
        self.records: list[FaultRecord] = []
        #: when (monotonic) the last fault's own disruption ended (the broker answering again, a
        #: stopped process continued): the harness's no-progress clock does not run before it
        self.settled_at = 0.0
        #: faults whose moment never came (the run finished first)
        self.skipped: list[Fault] = []
        #: why the run needed a hand (a live process had to be killed)
        self.needs_hand: list[str] = []
        #: processes taken out of the stack (zombies): stopped at the end if still there
        self.outside: list[ServiceProcess] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for fault in self.faults:
                if not self._wait_for(fault.at):
                    self.skipped.append(fault)
                    continue
                record = FaultRecord(fault.kind, fault.target or "", round(fault.at, 3), time.time())
                self.records.append(record)
                getattr(self, f"_{fault.kind}")(record)
                record.ended = time.time()
        except BaseException as exc:  # reported by the harness, which owns the outcome
            self.error = exc

    def cleanup(self) -> None:
        for svc in self.outside:
            if svc.alive():
                svc.signal(signal.SIGCONT)
                svc.signal(signal.SIGKILL)
                svc.wait(10)

    # -- waiting -----------------------------------------------------------------------------------
    def _wait_for(self, fraction: float) -> bool:
        while self.flow.rows < fraction * self.expected_rows:
            if self.done.wait(0.2):
                return False
        return True

    def _until(self, condition: Callable[[], bool], timeout_s: float, every_s: float = 0.2) -> float | None:
        """Seconds until `condition()` held; None after `timeout_s` or once the run is over."""
        started = time.monotonic()
        while not condition():
            if time.monotonic() - started > timeout_s or self.done.wait(every_s):
                return None
        return time.monotonic() - started

    # -- the faults --------------------------------------------------------------------------------
    def _kill(self, record: FaultRecord) -> None:
        names = sorted(pipeline_services(self.stack))
        name = self.rng.choice(names)
        record.target = name
        self.say(f"  SIGKILL {name}")
        with self.supervisor.lock:
            self.stack.kill(name)
            self.supervisor.spawn(name)
        self.settled_at = time.monotonic()

    def _broker_kill(self, record: FaultRecord) -> None:
        self._broker(record, hard=True)

    def _broker_restart(self, record: FaultRecord) -> None:
        self._broker(record, hard=False)

    def _broker(self, record: FaultRecord, hard: bool) -> None:
        record.target = "broker"
        rows_before = self.flow.rows
        killed = time.time()
        self.say(f"  broker {'SIGKILL' if hard else 'SIGTERM'}")
        if hard:
            local_broker.stop_hard(self.port, self.data_dir)
        else:
            local_broker.down(self.port, data_dir=self.data_dir)
        down = self.rng.uniform(*self.settings.broker_down_s)
        time.sleep(down)
        local_broker.up(self.port, self.data_dir, wait_s=120)
        answered = self.settled_at = time.monotonic()
        record.detail |= {
            "rows_before": rows_before,
            "down_s": round(down, 1),
            "answered_after_kill_s": round(time.time() - killed, 1),
        }
        self.say("  broker answers again")
        waited = self._until(
            lambda: self.flow.first_since(killed) is not None, self.settings.recovery_bound_s
        )
        first = self.flow.first_since(killed)
        recovery = None if first is None else round(first - answered, 1)
        record.detail["recovery_s"] = recovery
        if waited is None and first is None:
            record.detail["note"] = f"no row at the last stage {self.settings.recovery_bound_s:.0f} s after"
        self.say(f"  rows flow again at the last stage {recovery} s after the broker answered")

    def _stop_backpressured(self, record: FaultRecord) -> None:
        svc = self.stack.services[record.target]
        paused: list[int] = []

        def is_paused() -> bool:
            nonlocal paused
            paused = list(health(svc.port).get("paused") or [])
            return bool(paused)

        waited = self._until(is_paused, self.settings.pause_wait_s)
        if waited is None:
            record.detail["note"] = f"never showed paused partitions in {self.settings.pause_wait_s:.0f} s"
            return
        stop_s = self.settings.session_timeout_s + 10
        before = health(svc.port)
        record.detail |= {
            "paused": paused,
            "buffered_rows": before.get("buffered_rows"),
            "stopped_s": stop_s,
        }
        self.say(f"  SIGSTOP {svc.name} (paused {paused}) for {stop_s:.0f} s")
        consumed = rows_in(svc.port)
        svc.signal(signal.SIGSTOP)
        time.sleep(stop_s)
        svc.signal(signal.SIGCONT)
        self.settled_at = time.monotonic()
        self.say(f"  SIGCONT {svc.name}")
        # It goes on by itself: it takes input again (rows_in grows) without anyone's help.
        again = self._until(lambda: rows_in(svc.port) > consumed, self.settings.recovery_bound_s, 0.5)
        after = health(svc.port)
        record.detail |= {
            "consumed_again_after_s": None if again is None else round(again, 1),
            "alive_after": svc.alive(),
            "assigned_after": after.get("assigned"),
        }

    def _zombie(self, record: FaultRecord) -> None:
        old = self.stack.services[record.target]
        if self._until(lambda: bool(health(old.port).get("assigned")), 60) is None:
            record.detail["note"] = "the instance held no partition"
            return
        port = free_port()
        new = ServiceProcess(
            old.name,
            list(old.argv),
            dict(old.env) | {"FD_METRICS_PORT": str(port)},  # FD_INSTANCE_ID stays the same
            old.log_path.with_name(f"{old.name}.replacement.log"),
            port,
        )
        self.say(f"  SIGSTOP {old.name}; a replacement with the same FD_INSTANCE_ID starts")
        with self.supervisor.lock:
            old.signal(signal.SIGSTOP)
            self.outside.append(old)
            self.stack.services[old.name] = new
            self.supervisor.spawn(old.name)
        # The replacement has taken over once it holds partitions and committed a transaction.
        took_over = self._until(
            lambda: bool(health(new.port).get("assigned")) and committed_transactions(new.port) > 0, 120, 0.5
        )
        record.detail["replacement_took_over_after_s"] = None if took_over is None else round(took_over, 1)
        zombie_from, new_from = old.log_size(), new.log_size()
        woke = self.settled_at = time.monotonic()
        exits_before = len(self.supervisor.exits)
        old.signal(signal.SIGCONT)
        self.say(f"  SIGCONT the zombie {old.name}")
        code = old.wait(self.settings.zombie_bound_s)
        if code is None:
            self.needs_hand.append(
                f"zombie {old.name} still running {self.settings.zombie_bound_s:.0f} s after SIGCONT"
            )
            old.signal(signal.SIGKILL)
            old.wait(10)
        zombie_log, new_log = old.log_since(zombie_from), new.log_since(new_from)
        if "fenced by a newer instance" in zombie_log:
            ended_by = "its producer fenced (transactional id taken over)"
        elif "times in a minute" in zombie_log:
            ended_by = "its consumer fenced again and again (group.instance.id taken over)"
        else:
            ended_by = "something else"
        record.detail |= {
            "zombie_exit_code": code,
            "zombie_ended_after_s": None if code is None else round(time.monotonic() - woke, 1),
            "zombie_reason": exit_reason(zombie_log),
            "zombie_ended_by": ended_by,
            "zombie_fenced": "fenced" in zombie_log,
            # A zombie that rebuilt its producer fenced the replacement's and could write again.
            "zombie_rebuilt_producer": "rebuilding the transactional producer" in zombie_log,
            "zombie_rejoined_group": zombie_log.count("rebuilding the consumer"),
            "replacement_alive": new.alive(),
            "replacement_exits": [
                f"exit {e.code}: {e.reason}"
                for e in self.supervisor.exits[exits_before:]
                if e.name == old.name
            ],
            "replacement_fenced": "fenced by a newer instance" in new_log,
            "replacement_rejoined_group": new_log.count("rebuilding the consumer"),
        }
        self.say(f"  zombie ended: exit {code}, {record.detail['zombie_reason']}")

    def _burst(self, record: FaultRecord) -> None:
        base = self.stack.services[record.target]
        names = []
        for i in range(1, self.settings.burst_size + 1):
            name = f"{record.target}-burst{i}"
            with self.supervisor.lock:
                self.stack.add(name, list(base.argv))
                self.supervisor.spawn(name)
            names.append(name)
            time.sleep(1)
        self.say(f"  {len(names)} instances of {record.target} join: {', '.join(names)}")
        joined: dict[str, Any] = {}
        for name in names:
            svc = self.stack.services[name]
            held: list[int] = []

            def holds(svc: ServiceProcess = svc) -> bool:
                nonlocal held
                held = list(health(svc.port).get("assigned") or [])
                return bool(held) or not svc.alive()

            waited = self._until(holds, 60)
            time.sleep(self.rng.uniform(0.5, 3))
            with self.supervisor.lock:
                self.stack.kill(name)
                del self.stack.services[name]
            joined[name] = {"held": held, "joined_after_s": None if waited is None else round(waited, 1)}
            self.say(f"  SIGKILL {name} (held {held})")
        self.settled_at = time.monotonic()
        record.detail["instances"] = joined
