"""Quality gates: `min_<metric>` / `max_<metric>` thresholds on the final stage's quality report.

`metric` is any numeric field of the quality report (`QUALITY_METRICS`) or an alias the design
uses for one (`judge_score_mean` is the report's `teacher_score_mean`). A failure reads
`exec_pass_rate 0.1190 < min_exec_pass_rate 0.5000` (`>` for a max gate), with the metric
under the name the gate used and both numbers to 4 decimals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from services.coordinator.quality import QUALITY_METRICS

#: Names the design gives metrics under a different name in the report.
ALIASES = {"judge_score_mean": "teacher_score_mean"}
KNOWN_METRICS = tuple(sorted({*QUALITY_METRICS, *ALIASES}))


class GateConfigError(ValueError):
    pass


class GateVerdict(TypedDict):
    """The verdict as published on the gates topic and read back by the sink."""

    passed: bool
    failures: list[str]  # in GateConfig.gates() order


Bound = Literal["min", "max"]


def split_gate_name(name: str) -> tuple[Bound, str] | None:
    """("min", "total") for "min_total"; None for a key that names no gate."""
    bound, _, metric = name.partition("_")
    if metric not in KNOWN_METRICS:
        return None
    if bound == "min":
        return "min", metric
    if bound == "max":
        return "max", metric
    return None


@dataclass(frozen=True)
class Gate:
    name: str  # as configured, e.g. min_exec_pass_rate
    metric: str  # as named in the gate, e.g. exec_pass_rate or judge_score_mean
    bound: Bound
    threshold: float

    def failure(self, report: Mapping[str, object]) -> str | None:
        """A readable reason this gate fails on `report`, or None when it passes."""
        value = report.get(ALIASES.get(self.metric, self.metric))
        if not isinstance(value, int | float):
            # A metric the stage cannot compute cannot vouch for the data: fail, and say why.
            return f"{self.metric} missing ({self.name} {self.threshold:.4f})"
        if self.bound == "min" and value < self.threshold:
            return f"{self.metric} {value:.4f} < {self.name} {self.threshold:.4f}"
        if self.bound == "max" and value > self.threshold:
            return f"{self.metric} {value:.4f} > {self.name} {self.threshold:.4f}"
        return None


class GateConfig(BaseModel):
    """The `gates:` mapping of the pipeline YAML. Every threshold is optional; keys besides the
    four named ones must be `min_<metric>` or `max_<metric>` of a known metric."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)
    __pydantic_extra__: dict[str, float] = Field(init=False)

    min_total: float | None = None
    min_exec_pass_rate: float | None = None
    min_gold_match_rate: float | None = None
    min_judge_score_mean: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _only_gate_names(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = [str(name) for name in data if split_gate_name(str(name)) is None]
            if unknown:
                raise ValueError(
                    f"unknown quality gate(s) {', '.join(unknown)}: a gate is min_<metric> or "
                    f"max_<metric>, metric one of {', '.join(KNOWN_METRICS)}"
                )
        return data

    @classmethod
    def parse(cls, gates: Mapping[str, Any]) -> GateConfig:
        """Validate a plain mapping; errors raise GateConfigError with pydantic's noise removed."""
        try:
            return cls.model_validate(dict(gates))
        except ValidationError as exc:
            raise GateConfigError("; ".join(_error_text(e) for e in exc.errors())) from exc

    def gates(self) -> list[Gate]:
        """Configured gates: the four named fields first, then the others in configuration order."""
        gates: list[Gate] = []
        # Iterating a model yields declared fields, then extras in input order.
        for name, value in self:
            parts = split_gate_name(name)
            if value is not None and parts is not None:
                gates.append(Gate(name, parts[1], parts[0], value))
        return gates


def _error_text(error: ErrorDetails) -> str:
    cause = (error.get("ctx") or {}).get("error")
    if error["type"] == "value_error" and cause is not None:
        return str(cause)
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]


def parse_gates(gates: Mapping[str, Any]) -> list[Gate]:
    """The gates of a plain mapping (the pipeline YAML's `gates:`); raises GateConfigError."""
    return GateConfig.parse(gates).gates()


def evaluate_gates(config: GateConfig | Mapping[str, Any], report: Mapping[str, object]) -> GateVerdict:
    """The verdict of `config` on a quality report (or its `metrics()`).

    A plain mapping is validated first, so a bad configuration raises GateConfigError.
    """
    gate_config = config if isinstance(config, GateConfig) else GateConfig.parse(config)
    failures = [f for gate in gate_config.gates() if (f := gate.failure(report)) is not None]
    return GateVerdict(passed=not failures, failures=failures)
