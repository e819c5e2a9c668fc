"""Per-endpoint fault injection, switchable at run time: rate limit, error rate, latency, drops, fail-next."""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FaultSpec:
    rate_limit_per_minute: int | None = None
    error_rate: float = 0.0
    error_status: int = 503
    retry_after: int | None = None
    latency_ms: int = 0
    drop_rate: float = 0.0
    # Deterministic: each entry is one future call's fate: {"status": 429, "retry_after": 1}, {"drop": true},
    # or {"latency_ms": 1500} (this one call is slow, then served normally).
    fail_next: deque[dict[str, Any]] = field(default_factory=deque)
    window: deque[float] = field(default_factory=deque)


@dataclass(frozen=True)
class Fault:
    """What to do instead of serving a call."""

    kind: str  # "rate_limit" | "error" | "drop" | "delay"
    status: int = 0
    retry_after: int | None = None
    code: str | None = None
    message: str | None = None
    details: list[dict[str, Any]] | None = None


class FaultInjector:
    """Faults keyed by endpoint name; the key "*" applies to every endpoint."""

    def __init__(self, rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._specs: dict[str, FaultSpec] = {}
        self._lock = threading.Lock()
        self._rng = rng or random.Random(7)
        self._clock = clock

    def configure(self, endpoint: str, **options: Any) -> None:
        allowed = {"rate_limit_per_minute", "error_rate", "error_status", "retry_after", "latency_ms", "drop_rate"}
        unknown = set(options) - allowed - {"fail_next"}
        if unknown:
            raise ValueError(f"unknown fault options: {sorted(unknown)}")
        with self._lock:
            spec = self._specs.setdefault(endpoint, FaultSpec())
            for name in allowed & set(options):
                setattr(spec, name, options[name])
            for entry in options.get("fail_next", []):
                count = int(entry.get("count", 1))
                for _ in range(count):
                    spec.fail_next.append({k: v for k, v in entry.items() if k != "count"})

    def reset(self) -> None:
        with self._lock:
            self._specs.clear()

    def latency(self, endpoint: str) -> float:
        with self._lock:
            return sum(s.latency_ms for k, s in self._specs.items() if k in (endpoint, "*")) / 1000.0

    def decide(self, endpoint: str) -> Fault | None:
        """Called once per request; returns the fault to inject, if any."""
        with self._lock:
            for key in (endpoint, "*"):
                spec = self._specs.get(key)
                if spec is None:
                    continue
                if spec.fail_next:
                    entry = spec.fail_next.popleft()
                    if entry.get("drop"):
                        return Fault("drop")
                    if "status" not in entry and entry.get("latency_ms"):
                        return Fault("delay", retry_after=int(entry["latency_ms"]))
                    return Fault(
                        "error",
                        int(entry.get("status", 500)),
                        entry.get("retry_after"),
                        entry.get("code"),
                        entry.get("message"),
                        entry.get("details"),
                    )
                if spec.rate_limit_per_minute is not None:
                    now = self._clock()
                    while spec.window and now - spec.window[0] >= 60.0:
                        spec.window.popleft()
                    if len(spec.window) >= spec.rate_limit_per_minute:
                        wait = max(1, math.ceil(60.0 - (now - spec.window[0])))
                        return Fault("rate_limit", 429, wait)
                    spec.window.append(now)
                if spec.drop_rate and self._rng.random() < spec.drop_rate:
                    return Fault("drop")
                if spec.error_rate and self._rng.random() < spec.error_rate:
                    return Fault("error", spec.error_status, spec.retry_after)
        return None
