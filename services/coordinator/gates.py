"""Quality gates: `min_<metric>` / `max_<metric>` thresholds on the final stage's quality report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.coordinator.quality import QUALITY_METRICS

#: Names the design gives metrics under a different name in the report.
ALIASES = {"judge_score_mean": "teacher_score_mean"}
KNOWN_METRICS = tuple(sorted({*QUALITY_METRICS, *ALIASES}))


class GateConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Gate:
    name: str  # as configured, e.g. min_exec_pass_rate
    metric: str  # as named in the gate, e.g. exec_pass_rate or judge_score_mean
    bound: str  # "min" or "max"
    threshold: float

    def failure(self, metrics: dict[str, float | None]) -> str | None:
        """A readable reason this gate fails on `metrics`, or None when it passes."""
        value = metrics.get(ALIASES.get(self.metric, self.metric))
        if value is None:
            # A metric the stage cannot compute cannot vouch for the data: fail, and say why.
            return f"{self.metric} missing ({self.name} {self.threshold:.4f})"
        if self.bound == "min" and value < self.threshold:
            return f"{self.metric} {value:.4f} < {self.name} {self.threshold:.4f}"
        if self.bound == "max" and value > self.threshold:
            return f"{self.metric} {value:.4f} > {self.name} {self.threshold:.4f}"
        return None


def parse_gates(gates: dict[str, Any]) -> list[Gate]:
    """Check a gate configuration; unknown names raise with the metrics that exist."""
    parsed: list[Gate] = []
    unknown: list[str] = []
    for name, threshold in gates.items():
        bound, _, metric = name.partition("_")
        if bound not in ("min", "max") or metric not in KNOWN_METRICS:
            unknown.append(name)
            continue
        parsed.append(Gate(name, metric, bound, float(threshold)))
    if unknown:
        raise GateConfigError(
            f"unknown quality gate(s) {', '.join(unknown)}: a gate is min_<metric> or max_<metric>, "
            f"metric one of {', '.join(KNOWN_METRICS)}"
        )
    return parsed


def evaluate_gates(gates: dict[str, Any], metrics: dict[str, float | None]) -> dict[str, Any]:
    """The verdict {"passed", "failures"}; failures in configuration order."""
    failures = [f for gate in parse_gates(gates) if (f := gate.failure(metrics)) is not None]
    return {"passed": not failures, "failures": failures}
