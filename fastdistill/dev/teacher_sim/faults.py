"""Latency and fault decisions of the simulator: pure functions of (seed, prompt, attempt).

Keying on the attempt number (how many times the server has seen this prompt) is what lets a
retried request succeed while keeping every run reproducible.
"""

from __future__ import annotations

import math
import random
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fastdistill.dev.teacher_sim.answers import unit


class LatencySpec(BaseModel):
    """`fixed:MS` or `lognormal:MEDIAN_MS:SIGMA`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["fixed", "lognormal"] = "fixed"
    median_ms: float = Field(0.0, ge=0)
    sigma: float = Field(0.0, ge=0)

    @classmethod
    def parse(cls, text: str) -> LatencySpec:
        parts = text.strip().split(":")
        try:
            if parts[0] == "fixed" and len(parts) == 2:
                return cls(kind="fixed", median_ms=float(parts[1]))
            if parts[0] == "lognormal" and len(parts) == 3:
                return cls(kind="lognormal", median_ms=float(parts[1]), sigma=float(parts[2]))
        except ValueError as exc:
            raise ValueError(f"bad latency {text!r}: {exc}") from exc
        raise ValueError(f"bad latency {text!r}: expected fixed:MS or lognormal:MEDIAN_MS:SIGMA")

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"fixed:{self.median_ms:g}"
        return f"lognormal:{self.median_ms:g}:{self.sigma:g}"

    def sample_ms(self, seed: int, prompt: str, attempt: int) -> float:
        if self.kind == "fixed" or self.median_ms == 0:
            return self.median_ms
        # A private Random per request: concurrent requests cannot perturb each other's draws.
        rng = random.Random(unit(seed, "latency", prompt, attempt))
        return self.median_ms * math.exp(rng.gauss(0.0, self.sigma))


class Fault(StrEnum):
    NONE = "none"
    RATE_LIMIT = "rate_limit"  # 429 with Retry-After
    SERVER_ERROR = "server_error"  # 500
    TIMEOUT = "timeout"  # answers only after the client has given up
    MALFORMED = "malformed"  # 200 with a truncated JSON body
    EMPTY = "empty"  # 200 with `choices: []`


DEFAULT_FAULT_WEIGHTS: dict[Fault, float] = {
    Fault.RATE_LIMIT: 0.30,
    Fault.SERVER_ERROR: 0.25,
    Fault.TIMEOUT: 0.15,
    Fault.MALFORMED: 0.15,
    Fault.EMPTY: 0.15,
}


class FaultPlan(BaseModel):
    """How often a request fails (`rate`) and how the failures split across kinds (`weights`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate: float = Field(0.0, ge=0, le=1)
    weights: dict[Fault, float] = Field(default_factory=lambda: dict(DEFAULT_FAULT_WEIGHTS))
    retry_after_s: tuple[float, float] = (0.2, 1.0)

    @model_validator(mode="after")
    def _check(self) -> FaultPlan:
        if Fault.NONE in self.weights:
            raise ValueError("fault weights name failure kinds; 'none' is implied by the rate")
        if any(w < 0 for w in self.weights.values()) or (self.rate > 0 and sum(self.weights.values()) <= 0):
            raise ValueError("fault weights must be non-negative with a positive sum")
        lo, hi = self.retry_after_s
        if not 0 <= lo <= hi:
            raise ValueError("retry_after_s must be (low, high) with 0 <= low <= high")
        return self

    def decide(self, seed: int, prompt: str, attempt: int) -> Fault:
        if unit(seed, "fault", prompt, attempt) >= self.rate:
            return Fault.NONE
        kinds = [(k, w) for k, w in self.weights.items() if w > 0]
        total = sum(w for _, w in kinds)
        u = unit(seed, "fault-kind", prompt, attempt) * total
        for kind, weight in kinds:
            if u < weight:
                return kind
            u -= weight
        return kinds[-1][0]

    def retry_after(self, seed: int, prompt: str, attempt: int) -> float:
        lo, hi = self.retry_after_s
        return round(lo + (hi - lo) * unit(seed, "retry-after", prompt, attempt), 3)
